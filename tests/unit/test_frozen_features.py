"""The frozen-feature base every frozen face backbone shares: chips from normalised batches, the descriptor store."""

import numpy as np
import pytest
import torch

from maskclf.data.transforms import build_eval_transform
from maskclf.models import frozen_features
from maskclf.models.frozen_features import MEAN, STD, DescriptorStore, store_for, to_chips

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
