"""Test-time person grouping: finds one person's photos, never merges different people, averages gender/age."""

import csv

import numpy as np
import pytest

from maskclf.config import PrepareCfg
from maskclf.data.crops import cached_crops
from maskclf.data.scan import scan_eval
from maskclf.inference.grouping import group_probs, person_groups, upper_face_descriptors
from maskclf.labels import split_probs


@pytest.fixture(scope="module")
def tiny_eval(tiny_data, tmp_path_factory):
    scan = scan_eval(tiny_data)
    cfg = PrepareCfg(detector="none", size=64)
    images, kept, _ = cached_crops(scan.records, tiny_data, cfg, tmp_path_factory.mktemp("crops"), progress=False)
    with (tiny_data / "eval" / "eval_people.csv").open() as fh:
        person = {r["ImageID"]: r["id"] for r in csv.DictReader(fh)}
    return images, np.array([person[r.key] for r in kept])


def test_descriptors_ignore_brightness_and_the_lower_face(tiny_eval):
    images, _ = tiny_eval
    img = images[:1].astype(np.float64)
    brighter = np.clip(img * 1.05 + 3, 0, 255).astype(np.uint8)
    masked = images[:1].copy()
    masked[:, images.shape[1] // 2 + 2:] = 0  # anything below the upper half (a drawn mask) must not matter
    d = upper_face_descriptors(np.concatenate([images[:1], brighter, masked]))
    assert d @ d[0] == pytest.approx([1.0, 1.0, 1.0], abs=2e-3)


def test_groups_never_mix_people_and_find_many_pairs(tiny_eval):
    images, person = tiny_eval
    groups = person_groups(images, threshold=0.9)
    same_pred = groups[:, None] == groups[None, :]
    same_true = person[:, None] == person[None, :]
    off = ~np.eye(len(groups), dtype=bool)
    assert not (same_pred & ~same_true).any(), "two different people were grouped"
    recall = (same_pred & same_true & off).sum() / (same_true & off).sum()
    assert recall > 0.3
    assert np.bincount(groups).max() <= 7


def test_group_probs_shares_gender_and_age_but_keeps_mask():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(18), size=5)
    groups = np.array([0, 0, 0, 1, 2])
    out = group_probs(probs, groups, "equal")
    before, after = split_probs(probs), split_probs(out)
    assert np.allclose(out.sum(1), 1)
    np.testing.assert_allclose(after["mask"], before["mask"], atol=1e-12)
    for attr in ("gender", "age"):
        np.testing.assert_allclose(after[attr][0], after[attr][1])
        np.testing.assert_allclose(after[attr][0], after[attr][2])
        # a group's shared answer is the normalised geometric mean of its members' probabilities
        geo = np.exp(np.log(before[attr][:3]).mean(0))
        np.testing.assert_allclose(after[attr][0], geo / geo.sum(), rtol=1e-6)
    np.testing.assert_array_equal(out[3:], probs[3:])  # photos with no group keep their own prediction


def test_face_weighting_lets_the_unmasked_confident_photo_lead():
    """Two photos of one person: a worn-mask photo unsure about age and an unmasked photo sure about it."""
    def photo(mask, age):
        m, a = np.eye(3)[mask] * 0.98 + 0.01 / 1.5, np.asarray(age)
        return (m[:, None, None] * np.array([0.5, 0.5])[None, :, None] * a[None, None, :]).reshape(18)

    masked = photo(0, [0.2, 0.45, 0.35])
    bare = photo(2, [0.05, 0.1, 0.85])
    probs = np.stack([masked, bare])
    groups = np.array([0, 0])
    equal = split_probs(group_probs(probs, groups, "equal"))["age"][0]
    face = split_probs(group_probs(probs, groups, "face"))["age"][0]
    assert face[2] > equal[2]  # the bare photo's answer weighs more
    np.testing.assert_allclose(split_probs(group_probs(probs, groups, "face"))["mask"], split_probs(probs)["mask"])
    with pytest.raises(ValueError, match="equal"):
        group_probs(probs, groups, "loud")
