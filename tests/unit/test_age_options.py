"""data.drop_ages and data.age_bounds vs data.truth_age_bounds: training labels move, validation stays in the truth."""

import numpy as np
import pytest

from maskclf.config import ConfigError, load_config
from maskclf.data.crops import crops_for, training_records
from maskclf.data.splits import Split
from maskclf.data.train_data import load_train
from maskclf.labels import decode


def _cfg(tiny_data, tmp_path, *overrides):
    return load_config([], [f"data.root={tiny_data}", "prepare.detector=none", "prepare.size=32",
                            f"data.cache_dir={tmp_path / 'cache'}", "data.label_fixes=none", *overrides])


def _split_by_age(records, val_ages):
    """Every person whose age is in `val_ages` validates; the rest train."""
    people = {r.person: r.age for r in records}
    val = sorted(p for p, a in people.items() if a in val_ages)
    return Split(train=sorted(set(people) - set(val)), val=val, method="test", seed=0)


def _ages(cropset):
    return sorted({int(a) for a in cropset.ages})


def test_drop_ages_leaves_people_out_of_training_only(tiny_data, tmp_path):
    cfg = _cfg(tiny_data, tmp_path, "data.drop_ages=[26,28,60,63]")
    data = load_train(cfg.data)
    split = _split_by_age(data.records, {28, 40, 63})
    train, val, _ = crops_for(cfg, data, split, progress=False)
    assert not {26, 28, 60, 63} & set(_ages(train))
    assert {28, 63} <= set(_ages(val))  # validation keeps every person, dropped ages included
    _, _, dropped = training_records(data, split, cfg.data.drop_ages)
    assert len(dropped) == 3  # two 26-year-olds and the 60-year-old train; 28 and 63 validate
    full = crops_for(_cfg(tiny_data, tmp_path), data, split, progress=False)[0]
    assert len(full) - len(train) == 3 * 7


def test_shifted_bounds_move_training_labels_but_not_validation(tiny_data, tmp_path):
    cfg = _cfg(tiny_data, tmp_path, "data.age_bounds=[30,42]")
    data = load_train(cfg.data)
    aged_42 = sorted({r.person for r in data.records if r.age == 42})
    people = sorted({r.person for r in data.records})
    split = Split(train=[p for p in people if p != aged_42[0]], val=[aged_42[0]], method="test", seed=0)
    train, val, _ = crops_for(cfg, data, split, progress=False)
    train_groups = {int(g) for a, g in zip(train.ages, decode(train.labels)[2]) if a == 42}
    assert train_groups == {2}  # the other 42-year-old trains as "old" under the shifted bound
    assert set(decode(val.labels)[2].tolist()) == {1}  # ... and validates in the 30/60 truth's middle group


def test_drop_ages_config_is_checked():
    assert load_config([], ["data.drop_ages=[59,27,59]"]).data.drop_ages == [27, 59]
    with pytest.raises(ConfigError, match="drop_ages"):
        load_config([], ["data.drop_ages=[0,200]"])
    with pytest.raises(ConfigError, match="truth_age_bounds"):
        load_config([], ["data.truth_age_bounds=[60,30]"])


def test_labels_stay_valid_classes(tiny_data, tmp_path):
    cfg = _cfg(tiny_data, tmp_path, "data.age_bounds=[25,58]", "data.drop_ages=[18]")
    data = load_train(cfg.data)
    train, val, _ = crops_for(cfg, data, _split_by_age(data.records, {19, 66}), progress=False)
    assert np.all((train.labels >= 0) & (train.labels < 18)) and np.all((val.labels >= 0) & (val.labels < 18))
