"""Masks painted on bare training crops from the landmarks in the face cache, relabelled, reproducible."""

import numpy as np
import pytest

from maskclf.config import PrepareCfg
from maskclf.data.crops import cached_crops, cached_landmarks, to_cropset
from maskclf.data.loader import iterate
from maskclf.data.paint_masks import MaskPainter, paintable
from maskclf.data.scan import scan_train
from maskclf.labels import MASK_ONLY, decode, mask_of, with_mask


@pytest.fixture(scope="module")
def tiny_train(tiny_data, tmp_path_factory):
    """The tiny train crops (yuface, 64 px) with their cached landmarks."""
    cfg, cache = PrepareCfg(detector="yuface", size=64), tmp_path_factory.mktemp("paint-cache")
    images, kept, _ = cached_crops(scan_train(tiny_data).records, tiny_data, cfg, cache, progress=False)
    return to_cropset(images, kept, cached_landmarks(kept, tiny_data, cfg, cache))


def test_cache_landmarks_sit_on_the_face_in_crop_pixels(tiny_train):
    marks = tiny_train.landmarks
    found = np.isfinite(marks).all(axis=(1, 2))
    assert found.mean() > 0.8
    m = marks[found]
    assert (m > 0).all() and (m < 64).all()
    assert (m[:, 0, 0] < m[:, 1, 0]).all() and (m[:, 2, 1] > m[:, :2, 1].max(1)).all()  # eyes left-right, nose lower
    assert paintable(marks, 64).sum() > 0.7 * len(marks)


def test_painter_masks_and_relabels_bare_crops_only(tiny_train):
    idx = np.arange(len(tiny_train))
    bare = (mask_of(tiny_train.labels) == 2) & paintable(tiny_train.landmarks, 64)
    images, labels = MaskPainter(1.0, seed=3)(tiny_train.images[idx], tiny_train.labels[idx],
                                              tiny_train.landmarks[idx], idx)
    changed = np.abs(images.astype(int) - tiny_train.images.astype(int)).max(axis=(1, 2, 3)) > 0
    np.testing.assert_array_equal(changed, bare)
    np.testing.assert_array_equal(labels[~bare], tiny_train.labels[~bare])
    assert set(mask_of(labels[bare]).tolist()) <= {0, 1} and len(set(mask_of(labels[bare]).tolist())) == 2
    for part in (1, 2):  # gender and age group stay
        np.testing.assert_array_equal(decode(labels)[part], decode(tiny_train.labels)[part])
    diff = np.abs(images[bare].astype(int) - tiny_train.images[bare].astype(int)).mean(axis=(0, 2, 3))
    assert diff[:16].mean() < 0.2 * diff[40:].mean()  # the paint lands on the lower face, not on the forehead


def test_painting_is_reproducible_and_off_at_zero(tiny_train):
    idx = np.arange(0, len(tiny_train), 2)

    def args():
        return tiny_train.images[idx], tiny_train.labels[idx], tiny_train.landmarks[idx], idx

    a, la = MaskPainter(0.7, seed=1)(*args())
    b, lb = MaskPainter(0.7, seed=1)(*args())
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(la, lb)
    off, loff = MaskPainter(0.0)(*args())
    np.testing.assert_array_equal(off, tiny_train.images[idx])
    np.testing.assert_array_equal(loff, tiny_train.labels[idx])
    with pytest.raises(ValueError, match="paint_masks"):
        MaskPainter(1.5)


def test_loader_runs_the_paint_hook_on_training_batches(tiny_train):
    data = tiny_train.subset(np.arange(len(tiny_train)))
    data.paint = MaskPainter(1.0, seed=0)
    order = np.arange(len(data))
    labels = np.concatenate([b[1].numpy() for b in iterate(data, order, 32)])
    assert (mask_of(labels) == 2).sum() < (mask_of(data.labels) == 2).sum() * 0.3
    assert (labels != data.labels).sum() == (mask_of(labels) != mask_of(data.labels)).sum()


def test_mask_only_codes_keep_their_kind():
    labels = np.array([0, 14, 17, MASK_ONLY + 2])
    np.testing.assert_array_equal(mask_of(labels), [0, 2, 2, 2])
    np.testing.assert_array_equal(with_mask(labels, 1), [6, 8, 11, MASK_ONLY + 1])
