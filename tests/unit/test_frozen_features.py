"""The frozen-feature base every frozen face backbone shares: chips from normalised batches, the descriptor store."""

import csv
import shutil

import numpy as np
import pytest
import torch

from maskclf.config import load_config
from maskclf.data.transforms import build_eval_transform
from maskclf.inference.predict import load_model, predict
from maskclf.models import frozen_features
from maskclf.models.frozen_backbones import FROZEN_BACKBONES
from maskclf.models.frozen_features import MEAN, STD, DescriptorStore, store_for, to_chips
from maskclf.training.fit import fit
from maskclf.utils.checkpoint import load_checkpoint

CHIP = 150


def normalise(chips: np.ndarray, size: int = CHIP, mean=MEAN, std=STD) -> torch.Tensor:
    return build_eval_transform(size, mean, std)(torch.from_numpy(chips))


@pytest.mark.parametrize("mean,std", [(MEAN, STD), ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
def test_denormalisation_round_trips(mean, std):
    chips = np.random.default_rng(0).integers(0, 256, (3, CHIP, CHIP, 3), dtype=np.uint8)
    back = to_chips(normalise(chips, CHIP, mean, std), CHIP, mean, std)
    assert back.dtype == np.uint8 and back.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(back, chips)


def test_other_input_sizes_are_resized_to_the_chip():
    flat = np.full((2, 112, 112, 3), (10, 120, 250), dtype=np.uint8)
    chips = to_chips(normalise(flat, 112), CHIP)
    assert chips.shape == (2, CHIP, CHIP, 3)
    assert (chips == np.array([10, 120, 250], np.uint8)).all()  # a flat image stays flat and keeps its colour


def fake_compute(calls: list):
    """Stands in for a frozen network: a descriptor that depends on the chip's mean colour; records every batch."""
    def compute(batch):
        calls.append(len(batch))
        return [np.full(128, c.mean() / 255, np.float32) for c in batch]
    return compute


def test_store_computes_each_distinct_chip_once_and_persists(tmp_path):
    chips = np.stack([np.full((CHIP, CHIP, 3), v, np.uint8) for v in (0, 50, 50, 200)])
    calls = []
    store = DescriptorStore(tmp_path, 128)
    first = store.lookup(chips, fake_compute(calls))
    assert calls == [3] and (store.misses, store.hits) == (3, 1)  # the duplicate is computed once
    again = store.lookup(chips[::-1], fake_compute(calls))
    assert calls == [3] and store.hits == 5
    np.testing.assert_array_equal(again, first[::-1])
    reopened = DescriptorStore(tmp_path, 128)  # a later run: everything comes from disk
    np.testing.assert_array_equal(reopened.lookup(chips, fake_compute(calls)), first)
    assert calls == [3] and reopened.misses == 0


def test_store_ignores_a_corrupt_shard_and_merges_many(tmp_path, monkeypatch, caplog):
    calls = []
    store = DescriptorStore(tmp_path, 128)
    for v in range(5):
        store.lookup(np.full((1, CHIP, CHIP, 3), v, np.uint8), fake_compute(calls))
    (tmp_path / "part-0-broken.npz").write_bytes(b"not a zip")
    monkeypatch.setattr(frozen_features, "MAX_SHARDS", 3)
    reopened = DescriptorStore(tmp_path, 128)
    assert len(reopened.memo) == 5 and "unreadable descriptor shard" in caplog.text
    assert len([p for p in tmp_path.glob("part-*.npz") if "broken" not in p.name]) == 1
    assert len(DescriptorStore(tmp_path, 128).memo) == 5


def test_a_store_folder_keeps_one_vector_size(tmp_path):
    store_for(tmp_path, 128)
    with pytest.raises(ValueError, match="holds vectors of 128 floats, not 514"):
        store_for(tmp_path, 514)


def _tiny_subset(tiny_data, dest, people=6, eval_images=6):
    """A copy of the tiny dataset with a few people (the frozen networks cost ~0.1 s per face)."""
    with (tiny_data / "train" / "train.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    rows = rows[::max(1, len(rows) // people)][:people]
    (dest / "train" / "images").mkdir(parents=True)
    with (dest / "train" / "train.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    for r in rows:
        shutil.copytree(tiny_data / "train" / "images" / r["path"], dest / "train" / "images" / r["path"])
    with (tiny_data / "eval" / "info.csv").open() as fh:
        info = list(csv.DictReader(fh))[:eval_images]
    (dest / "eval" / "images").mkdir(parents=True)
    with (dest / "eval" / "info.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["ImageID", "ans"])
        w.writeheader()
        w.writerows(info)
    for r in info:
        shutil.copy(tiny_data / "eval" / "images" / r["ImageID"], dest / "eval" / "images" / r["ImageID"])
    return dest


@pytest.mark.slow
@pytest.mark.parametrize("backbone", sorted(FROZEN_BACKBONES))
def test_fit_checkpoint_holds_only_heads_and_predicts(backbone, tiny_data, tmp_path):
    try:
        store = FROZEN_BACKBONES[backbone]().store  # the process-wide store every model of the run uses
    except ModuleNotFoundError as exc:  # an optional extra; the message names its pip command
        pytest.skip(str(exc))
    root = _tiny_subset(tiny_data, tmp_path / "data")
    cfg = load_config([], [f"data.root={root}", f"run.out_dir={tmp_path / 'runs'}", f"model.backbone={backbone}",
                           "model.pretrained=wheel", "model.head=multihead", "prepare.detector=none",
                           "prepare.size=96", "train.input_size=96", "train.augment.preset=base", "train.epochs=2",
                           "train.batch_size=8", "train.ema=0.9", "train.device=cpu", "run.tensorboard=false",
                           "train.scheduler.params.warmup_epochs=0"])
    misses, hits = store.misses, store.hits
    result = fit(cfg, progress=False)
    ckpt = load_checkpoint(result.checkpoint)
    keys = set(ckpt["models"]["main"])
    assert keys and all(k.startswith(("heads.", "head_bn.")) for k in keys)
    assert result.checkpoint.stat().st_size < 100_000  # heads only: the frozen network is not inside
    crops = result.summary["train_images"] + result.summary["val_images"]
    assert store.misses - misses == crops  # every crop encoded once: epoch 2 and validation reused the memo
    assert store.hits - hits >= crops
    loaded = load_model(result.checkpoint, torch.device("cpu"))
    assert isinstance(loaded.members["main"][0].backbone, FROZEN_BACKBONES[backbone])
    r = predict(result.checkpoint, root / "eval", out=tmp_path / "sub.csv", progress=False)
    assert r.probs.shape == (6, 18) and np.allclose(r.probs.sum(1), 1.0, atol=1e-4)
