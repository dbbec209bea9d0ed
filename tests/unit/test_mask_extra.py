"""data.mask_extra: photos with a mask label only, scanned from folders or CSVs, split per source, trained on."""

import shutil
from collections import Counter

import numpy as np
import pytest

from maskclf.config import ConfigError, load_config
from maskclf.data.crops import crops_for, load_split
from maskclf.data.mask_extra import holdout_split, mask_extra_draw, scan_mask_extra
from maskclf.data.train_data import load_train
from maskclf.labels import MASK_ONLY
from maskclf.layout import DataError


@pytest.fixture
def mask_folder(tiny_data, tmp_path):
    """wear/ incorrect/ normal/ subfolders with four tiny photos each."""
    root = tmp_path / "masks"
    people = sorted((tiny_data / "train" / "images").iterdir())[:4]
    for sub, stem in (("wear", "mask1"), ("incorrect", "incorrect_mask"), ("normal", "normal")):
        (root / sub).mkdir(parents=True)
        for i, person in enumerate(people):
            shutil.copy(person / f"{stem}.jpg", root / sub / f"{i}.jpg")
    (root / "normal" / ".DS_Store").write_text("litter")
    return root


def test_folder_layout_gives_mask_only_records(mask_folder):
    extra = scan_mask_extra(mask_folder)
    assert Counter(r.mask for r in extra.records) == {0: 4, 1: 4, 2: 4}
    assert all(r.gender == r.age == r.age_group == -1 and r.label == -1 for r in extra.records)
    assert len({r.person for r in extra.records}) == 12  # each photo is its own person


def test_csv_paths_must_stay_inside_their_folder(mask_folder):
    csv = mask_folder / "extra.csv"
    csv.write_text("path,mask\nwear/0.jpg,wear\nnormal/1.jpg,normal\n")
    extra = scan_mask_extra(csv)
    assert [(r.key, r.mask) for r in extra.records] == [("wear/0.jpg", 0), ("normal/1.jpg", 2)]
    csv.write_text("path,mask\n../outside.jpg,wear\n")
    with pytest.raises(DataError, match="extra.csv:2.*inside"):
        scan_mask_extra(csv)
    csv.write_text("path,mask\nwear/0.jpg,masked\n")
    with pytest.raises(DataError, match="'masked' is not one of"):
        scan_mask_extra(csv)
    with pytest.raises(DataError, match="neither a folder nor a CSV"):
        scan_mask_extra(mask_folder / "missing")


def test_mask_real_holdout_is_seeded_and_per_source(shared_data):
    extra = scan_mask_extra(shared_data / "mask-real")
    assert len(extra.records) > 2000 and len(set(extra.sources)) >= 4
    train, held = holdout_split(extra, 0.3, seed=42)
    assert len(train) + len(held) == len(extra.records) and not {r.key for r in train} & {r.key for r in held}
    source = dict(zip((r.key for r in extra.records), extra.sources))
    per_stratum = Counter((source[r.key], r.mask) for r in extra.records)
    held_stratum = Counter((source[r.key], r.mask) for r in held)
    for key, n in per_stratum.items():
        assert held_stratum[key] == round(0.3 * n)
    assert [r.key for r in holdout_split(extra, 0.3, seed=42)[1]] == [r.key for r in held]
    assert [r.key for r in holdout_split(extra, 0.3, seed=7)[1]] != [r.key for r in held]


def test_ratio_draws_a_seeded_share():
    assert mask_extra_draw(10, 100, None, 0).tolist() == list(range(10))
    assert len(mask_extra_draw(10, 100, 0.05, 0)) == 5
    many = mask_extra_draw(10, 100, 0.25, 0)
    assert len(many) == 25 and np.bincount(many).min() >= 2
    np.testing.assert_array_equal(mask_extra_draw(10, 100, 0.05, 0), mask_extra_draw(10, 100, 0.05, 0))


def test_training_set_gains_mask_only_photos_validation_does_not(tiny_data, mask_folder, tmp_path):
    sets = {}
    for name, extra in (("plain", "[]"), ("extra", f"[{mask_folder}]")):
        cfg = load_config([], [f"data.root={tiny_data}", "prepare.detector=none", "prepare.size=32",
                               f"data.cache_dir={tmp_path / 'cache'}", f"data.mask_extra={extra}",
                               "data.mask_extra_holdout=0.25"])
        data = load_train(cfg.data)
        sets[name] = crops_for(cfg, data, load_split(cfg.data, data.records), progress=False)
    (plain_train, plain_val, _), (train, val, _) = sets["plain"], sets["extra"]
    np.testing.assert_array_equal(val.labels, plain_val.labels)
    added = train.labels[len(plain_train):]
    assert len(added) == 9 and (added >= MASK_ONLY).all()  # 3 of 4 per mask status; one of each held out
    assert Counter((added - MASK_ONLY).tolist()) == {0: 3, 1: 3, 2: 3}
    assert np.isnan(train.ages[len(plain_train):]).all()


def test_single_head_refuses_mask_only_photos(mask_folder):
    with pytest.raises(ConfigError, match="multihead or separate"):
        load_config([], [f"data.mask_extra=[{mask_folder}]", "model.head=single"])
