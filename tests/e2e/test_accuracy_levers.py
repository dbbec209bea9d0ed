"""The accuracy levers end to end on tiny data: refit, mask-only photos, boundary ages, painted masks."""

import json
import shutil

import numpy as np
import pytest
import torch

from maskclf.config import ConfigError, load_config
from maskclf.inference.predict import predict
from maskclf.training.fit import fit
from maskclf.utils.checkpoint import load_checkpoint



@pytest.fixture
def mask_folder(tiny_data, tmp_path):
    root = tmp_path / "masks"
    for sub, stem in (("wear", "mask2"), ("incorrect", "incorrect_mask"), ("normal", "normal")):
        (root / sub).mkdir(parents=True)
        for i, person in enumerate(sorted((tiny_data / "train" / "images").iterdir())[:6]):
            shutil.copy(person / f"{stem}.jpg", root / sub / f"{i}.jpg")
    return root


@pytest.mark.slow
def test_refit_trains_on_everyone_for_the_picked_epochs(tiny_cfg, tiny_data, tmp_path):
    r = fit(tiny_cfg(tmp_path, "train.epochs=2", "train.refit=true"), progress=False)
    best, holdout = load_checkpoint(r.run_dir / "best.pt"), load_checkpoint(r.run_dir / "holdout.pt")
    picked = r.summary["members"]["main"]["best_epoch"] + 1
    assert best["score"] is None and best["refit"]["epochs"] == {"main": picked}
    assert holdout["score"] == pytest.approx(r.summary["val_f1"])
    assert r.summary["refit"]["train_images"] == r.summary["train_images"] + r.summary["val_images"]
    key = "heads.mask.weight"
    assert not torch.equal(best["models"]["main"][key], holdout["models"]["main"][key])
    assert json.loads((r.run_dir / "summary.json").read_text())["refit"]["epochs"] == {"main": picked}
    sub = predict(r.run_dir, tiny_data / "eval", out=tmp_path / "sub.csv", progress=False)
    assert np.allclose(sub.probs.sum(1), 1)


def test_refit_refuses_a_plateau_schedule():
    with pytest.raises(ConfigError, match="plateau"):
        load_config([], ["train.refit=true", "train.scheduler.name=plateau"])


def test_mask_only_photos_and_dropped_ages_train(tiny_cfg, tmp_path, mask_folder):
    r = fit(tiny_cfg(tmp_path, "train.epochs=1", "model.age=regression",
                 f"data.mask_extra=[{mask_folder}]", "data.mask_extra_holdout=0.5", "data.drop_ages=[60,63,65]"),
            progress=False)
    rows = [json.loads(line) for line in (r.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(v) for k, v in rows[0].items() if "loss" in k)
    assert r.summary["mask_only_images"] == 9  # half of each 6-photo mask status held out
    assert r.summary["dropped_people"]["ages"] == [60, 63, 65] and 1 <= r.summary["dropped_people"]["people"] <= 3
    assert r.summary["val_images"] + r.summary["train_images"] == 168 + 9 - 7 * r.summary["dropped_people"]["people"]


@pytest.mark.slow
def test_painted_masks_train_from_cached_landmarks(tiny_cfg, tmp_path):
    r = fit(tiny_cfg(tmp_path, f"data.cache_dir={tmp_path / 'cache'}", "train.epochs=1", "prepare.detector=yuface",
                 "train.augment.paint_masks=1.0"), progress=False)
    assert r.summary["techniques"]["paint_masks"] == 1.0 and r.summary["epochs_run"] == 1
    with pytest.raises(ConfigError, match="landmarks"):
        load_config([], ["train.augment.paint_masks=0.5", "prepare.detector=none"])


def test_paint_masks_auto_paints_only_where_it_can():
    from maskclf.config import PAINT_MASKS_AUTO
    from maskclf.training.build import descriptor_reuse_problem, paint_probability

    assert load_config().train.augment.paint_masks == "auto"
    assert paint_probability(load_config()) == PAINT_MASKS_AUTO > 0  # the default detector keeps landmarks
    assert paint_probability(load_config([], ["prepare.detector=mtcnn"])) == PAINT_MASKS_AUTO
    assert paint_probability(load_config([], ["prepare.detector=none"])) == 0.0  # no landmarks: nothing to paint
    assert paint_probability(load_config([], ["prepare.detector=haar"])) == 0.0
    frozen = load_config([], ["model.backbone=dlib_face", "train.augment.preset=base"])
    assert paint_probability(frozen) == 0.0 and descriptor_reuse_problem(frozen) is None
    painted = load_config([], ["model.backbone=dlib_face", "train.augment.preset=base", "train.augment.paint_masks=0.3"])
    assert paint_probability(painted) == 0.3 and "paint_masks" in descriptor_reuse_problem(painted)
    assert paint_probability(load_config([], ["train.augment.paint_masks=0"])) == 0.0
    with pytest.raises(ConfigError, match="'auto' or a probability"):
        load_config([], ["train.augment.paint_masks=1.5"])
    with pytest.raises(ConfigError, match="auto"):
        load_config([], ["train.augment.paint_masks=sometimes"])
