"""Class-prior offsets tuned for macro F1 on validation, saved in the checkpoint and applied by predict."""

import json

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score

from maskclf.inference.calibrate import apply_offsets, class_offsets, search_offsets
from maskclf.utils.checkpoint import load_checkpoint, save_checkpoint
from maskclf.cli import main
from maskclf.config import load_config
from maskclf.data.crops import crops_for, load_split
from maskclf.labels import NUM_CLASSES, decode, encode
from maskclf.metrics import macro_f1
from maskclf.inference.predict import PredictOptions, load_model, predict
from maskclf.utils.formats import read_probs
from maskclf.data.train_data import load_train
from maskclf.utils.rundir import load_run_config
from maskclf.training.fit import fit

LABELS = list(range(NUM_CLASSES))


def test_macro_f1_matches_sklearn_including_absent_classes():
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 12, 300)  # classes 12-17 never occur
    y_pred = np.where(rng.random(300) < 0.5, y_true, rng.integers(0, 15, 300))
    assert macro_f1(y_true, y_pred) == pytest.approx(
        f1_score(y_true, y_pred, labels=LABELS, average="macro", zero_division=0), abs=1e-12)


def test_class_offsets_follow_the_class_encoding():
    off = class_offsets([0.0, 0.5, 2.0], [0.0, -1.0])
    for m in range(3):
        for g in range(2):
            for a in range(3):
                assert off[encode(m, g, a)] == [0.0, 0.5, 2.0][a] + [0.0, -1.0][g]


def under_predicted_elderly():
    """Every mask x gender: 10 people <30, 10 aged 30-59, 3 aged >=60 whom the model calls 30-59 (0.5 vs 0.4).

    The 30-59 people give the >=60 class 0.2 against their own 0.7, so any age-2 offset between
    log(0.5/0.4) = 0.22 and log(0.7/0.2) = 1.25 gets every row right.
    """
    rows, labels = [], []
    for m in range(3):
        for g in range(2):
            for age, n, own, other, other_age in [(0, 10, 0.8, 0.1, 1), (1, 10, 0.7, 0.2, 2), (2, 3, 0.4, 0.5, 1)]:
                p = np.full(NUM_CLASSES, (1 - own - other) / (NUM_CLASSES - 2))
                p[encode(m, g, age)], p[encode(m, g, other_age)] = own, other
                rows += [p] * n
                labels += [encode(m, g, age)] * n
    return np.array(rows, dtype=np.float32), np.array(labels)


def test_search_finds_the_offset_that_recovers_the_rare_age_group():
    probs, labels = under_predicted_elderly()
    assert not (decode(probs.argmax(1))[2] == 2).any()  # the model never says >=60
    cal = search_offsets(probs, labels)
    assert cal.f1_before == pytest.approx(macro_f1(labels, probs.argmax(1)))
    assert cal.f1_before < 0.7 and cal.f1_after == 1.0
    assert cal.age[0] == 0.0 and cal.gender == [0.0, 0.0]  # genders were never confused: nothing to move
    assert np.log(0.5 / 0.4) < cal.age[2] - cal.age[1] < np.log(0.7 / 0.2)
    assert all(-2.0 <= v <= 4.0 for v in cal.age + cal.gender)
    fixed = apply_offsets(probs, cal.offsets)
    assert fixed.dtype == probs.dtype and fixed.shape == probs.shape
    np.testing.assert_allclose(fixed.sum(1), 1.0, atol=1e-6)
    assert (fixed.argmax(1) == labels).all()


def test_search_moves_gender_when_one_gender_is_under_predicted():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, NUM_CLASSES, 400)
    probs = np.full((400, NUM_CLASSES), 0.02)
    probs[np.arange(400), labels] = 0.5
    female = decode(labels)[1] == 1
    sibling = labels - 3  # same mask and age, male
    probs[np.flatnonzero(female), sibling[female]] = 0.6  # every woman is called a man
    probs /= probs.sum(1, keepdims=True)
    cal = search_offsets(probs, labels)
    assert cal.gender[0] == 0.0 and np.log(0.6 / 0.5) < cal.gender[1] <= 4.0
    assert cal.f1_after == 1.0 > cal.f1_before


def test_predictions_that_are_already_best_get_zero_offsets_and_stay_untouched():
    labels = np.arange(NUM_CLASSES).repeat(3)
    probs = np.full((len(labels), NUM_CLASSES), 0.01, dtype=np.float32)
    probs[np.arange(len(labels)), labels] = 0.83
    cal = search_offsets(probs, labels)
    assert cal.offsets == [0.0] * NUM_CLASSES and cal.f1_before == cal.f1_after == 1.0
    assert apply_offsets(probs, cal.offsets) is probs
    assert apply_offsets(probs, None) is probs


# ---- end to end: fit stores the offsets, predict applies them ---------------------------------------------------




@pytest.fixture(scope="module")
def trained(tiny_cfg, tmp_path_factory):
    return fit(tiny_cfg(tmp_path_factory.mktemp("runs"), "train.epochs=1", "train.calibrate=true"), progress=False)


def with_offsets(checkpoint, path, offsets):
    """A copy of `checkpoint` with other class offsets (None: an old checkpoint without any)."""
    ckpt = load_checkpoint(checkpoint)
    ckpt.pop("class_offsets", None)
    if offsets is not None:
        ckpt["class_offsets"] = [float(x) for x in offsets]
    save_checkpoint(path, ckpt)
    return path


def test_fit_tunes_offsets_on_validation_and_saves_them(trained):
    s = trained.summary
    cal = s["calibration"]
    assert cal["val_f1_before"] == s["val_f1"] == trained.best_f1  # selection and val_f1 stay uncalibrated
    assert cal["val_f1_after"] >= cal["val_f1_before"]
    assert "optimistic" in cal["note"]
    ckpt = load_checkpoint(trained.checkpoint)
    assert ckpt["class_offsets"] == class_offsets(cal["age_offsets"], cal["gender_offsets"]).tolist()
    assert ckpt["score"] == s["val_f1"]
    assert json.loads((trained.run_dir / "summary.json").read_text())["calibration"] == cal
    cfg = load_run_config(trained.run_dir)
    data = load_train(cfg.data)
    _, val_set, _ = crops_for(cfg, data, load_split(cfg.data, data.records, trained.run_dir), progress=False)
    calibrated = apply_offsets(trained.val_probs, ckpt["class_offsets"])  # val_probs: the model's own
    assert cal["val_f1_after"] == pytest.approx(macro_f1(val_set.labels, calibrated.argmax(1)))


def test_predict_applies_the_saved_offsets_unless_told_not_to(trained, tiny_data, tmp_path, capsys):
    boost = class_offsets([0.0, 0.0, 3.0], [0.0, 0.0])  # strongly towards >=60
    cal_pt = with_offsets(trained.checkpoint, tmp_path / "cal.pt", boost)
    old_pt = with_offsets(trained.checkpoint, tmp_path / "old.pt", None)
    assert load_model(old_pt, torch.device("cpu")).offsets is None
    raw = predict(old_pt, tiny_data, out=tmp_path / "old.csv", progress=False)
    shifted = predict(cal_pt, tiny_data, out=tmp_path / "cal.csv", progress=False)
    np.testing.assert_allclose(shifted.probs, apply_offsets(raw.probs, boost), rtol=1e-6, atol=1e-9)
    assert (decode(shifted.probs.argmax(1))[2] == 2).sum() > (decode(raw.probs.argmax(1))[2] == 2).sum()
    off = predict(cal_pt, tiny_data, out=tmp_path / "off.csv", options=PredictOptions(calibration=False),
                  progress=False)
    assert (tmp_path / "off.probs.csv").read_bytes() == (tmp_path / "old.probs.csv").read_bytes()
    np.testing.assert_array_equal(off.probs, raw.probs)

    assert main(["predict", str(cal_pt), str(tiny_data), "--out", str(tmp_path / "cli.csv"), "--quiet",
                 "--no-calibration"]) == 0
    assert (tmp_path / "cli.probs.csv").read_bytes() == (tmp_path / "old.probs.csv").read_bytes()
    assert main(["predict", str(cal_pt), str(tiny_data), "--out", str(tmp_path / "cli2.csv"), "--quiet"]) == 0
    assert (tmp_path / "cli2.probs.csv").read_bytes() == (tmp_path / "cal.probs.csv").read_bytes()
    capsys.readouterr()


def test_tta_none_and_a_one_model_ensemble_reproduce_the_calibrated_prediction(trained, tiny_data, tmp_path):
    from maskclf.inference.ensemble import ensemble

    cal_pt = with_offsets(trained.checkpoint, tmp_path / "cal.pt", class_offsets([0.0, 0.5, 2.0], [0.0, 0.3]))
    predict(cal_pt, tiny_data, out=tmp_path / "plain.csv", progress=False)
    predict(cal_pt, tiny_data, out=tmp_path / "none.csv", options=PredictOptions(tta="none"), progress=False)
    ensemble([cal_pt], tmp_path / "ens.csv", eval_dir=tiny_data / "eval", progress=False)
    plain = (tmp_path / "plain.probs.csv").read_bytes()
    assert (tmp_path / "none.probs.csv").read_bytes() == plain
    ens_ids, ens_probs = read_probs(tmp_path / "ens.probs.csv")  # an ensemble's file has no face column
    plain_ids, plain_probs = read_probs(tmp_path / "plain.probs.csv")
    assert ens_ids == plain_ids and np.array_equal(ens_probs, plain_probs)
    assert (tmp_path / "ens.csv").read_bytes() == (tmp_path / "plain.csv").read_bytes()


def test_calibrate_false_saves_no_offsets(tiny_cfg, tmp_path):
    assert load_config([]).train.calibrate is False  # off by default: it lowered eval F1 on utkmask
    result = fit(tiny_cfg(tmp_path, "train.epochs=1"), progress=False)
    assert "class_offsets" not in load_checkpoint(result.checkpoint)
    assert result.summary["calibration"] is None
