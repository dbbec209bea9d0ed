import json

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score

from maskclf.config import load_config
from maskclf.toolkit.crossval import cross_validate
from maskclf.utils.formats import fold_dirs, read_oof, write_probs
from maskclf.labels import NUM_CLASSES, decode
from maskclf.data.train_data import load_train
from maskclf.data.splits import kfold


def cfg_for(tiny_data, tmp_path, *sets):
    return load_config([], [f"data.root={tiny_data}", f"data.cache_dir={tmp_path}/cache", *sets])


def fake_finished_folds(cfg, cv_dir, k, seed=0):
    """Fold folders that look trained: val.probs.csv with random probabilities, best.pt and a summary."""
    records = load_train(cfg.data).records
    rng = np.random.default_rng(seed)
    for i, split in enumerate(kfold(records, k, cfg.data.split_seed)):
        d = cv_dir / f"fold{i}"
        d.mkdir(parents=True)
        keys = [r.key for r in split.partition(records)[1]]
        write_probs(d / "val.probs.csv", keys, rng.dirichlet(np.ones(NUM_CLASSES), len(keys)), id_column="key")
        (d / "best.pt").write_bytes(b"")
        (d / "summary.json").write_text(json.dumps({"val_f1": 0.1 * i, "wall_seconds": 30}))
    return records


def test_finished_folds_are_stitched_into_oof_without_training(tiny_data, tmp_path, capsys):
    cfg = cfg_for(tiny_data, tmp_path)
    cv_dir = tmp_path / "cv"
    records = fake_finished_folds(cfg, cv_dir, 3)
    r = cross_validate(cfg, 3, cv_dir, progress=False)
    assert capsys.readouterr().out.count("done already") == 3
    meta, probs = read_oof(cv_dir)
    assert sorted(m["key"] for m in meta) == sorted(x.key for x in records)  # every image exactly once
    labels = np.array([m["label"] for m in meta])
    pred = probs.argmax(1)
    report = json.loads((cv_dir / "oof_report.json").read_text())
    assert report["f1"] == pytest.approx(f1_score(labels, pred, average="macro", labels=range(18), zero_division=0))
    assert report["accuracy"] == pytest.approx(accuracy_score(labels, pred))
    for head, t, p in zip(("mask", "gender", "age"), decode(labels), decode(pred)):
        assert report["attributes"][head]["f1"] == pytest.approx(f1_score(t, p, average="macro"))
    summary = json.loads((cv_dir / "summary.json").read_text())
    assert summary["oof_f1"] == r.oof_f1 == report["f1"] and summary["fold_f1"] == r.fold_f1 == [0, 0.1, 0.2]
    assert summary["images"] == len(records) and summary["wall_seconds"] == 90
    assert r.fold_checkpoints == [cv_dir / f"fold{i}" / "best.pt" for i in range(3)]
    assert fold_dirs(cv_dir) == [cv_dir / f"fold{i}" for i in range(3)]


def test_resuming_with_another_k_or_config_is_refused(tiny_data, tmp_path):
    cfg = cfg_for(tiny_data, tmp_path)
    cv_dir = tmp_path / "cv"
    fake_finished_folds(cfg, cv_dir, 3)
    cross_validate(cfg, 3, cv_dir, progress=False)
    with pytest.raises(ValueError, match="holds a 3-fold run; asked for k=4"):
        cross_validate(cfg, 4, cv_dir, progress=False)
    with pytest.raises(ValueError, match=r"different config \(train.epochs: 10 -> 3\)"):
        cross_validate(cfg_for(tiny_data, tmp_path, "train.epochs=3"), 3, cv_dir, progress=False)
    # where the cache and the runs live is not a difference
    moved = cfg_for(tiny_data, tmp_path / "elsewhere", "run.out_dir=other")
    assert cross_validate(moved, 3, cv_dir, progress=False).cv_dir == cv_dir


def test_read_oof_rejects_other_csv_files(tmp_path):
    (tmp_path / "oof.csv").write_text("ImageID,ans\nx,1\n")
    with pytest.raises(ValueError, match=r"oof.csv: expected columns \['key', 'person'"):
        read_oof(tmp_path)


@pytest.mark.parametrize("k", [1, 0])
def test_fewer_than_two_folds_is_a_clear_error_leaving_no_folder(tiny_data, tmp_path, k):
    cfg = cfg_for(tiny_data, tmp_path, f"run.out_dir={tmp_path}/runs")
    with pytest.raises(ValueError, match=f"at least 2 folds, got -k {k}.*maskclf train"):
        cross_validate(cfg, k, progress=False)
    with pytest.raises(ValueError, match="at least 2 folds"):
        cross_validate(cfg, k, tmp_path / "given", progress=False)
    assert not (tmp_path / "runs").exists() and not (tmp_path / "given").exists()
