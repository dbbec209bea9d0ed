"""Samplers move the drawn class distribution as intended and are reproducible from the seed."""

import numpy as np
import pytest

from maskclf.config import NamedCfg
from maskclf.labels import decode, encode
from maskclf.data.samplers import build_sampler

# 18 classes with counts 5, 55, 105, ... (a 1:171 imbalance), in a shuffled order
COUNTS = 5 + 50 * np.arange(18)
LABELS = np.random.default_rng(0).permutation(np.repeat(np.arange(18), COUNTS))


def sampler(name, labels=LABELS, seed=0, **params):
    return build_sampler(NamedCfg(name=name, params=params), labels, seed)


def drawn_classes(s, labels=LABELS):
    return np.bincount(labels[list(s)], minlength=18)


def test_none_means_plain_shuffling():
    assert sampler("none") is None


def test_weighted_class_draws_classes_about_uniformly():
    s = sampler("weighted_class", num_samples=36_000)
    freq = drawn_classes(s) / 36_000
    assert len(s) == 36_000
    np.testing.assert_allclose(freq, 1 / 18, atol=0.008)  # 1 / 18 = 0.056; the source ranges 0.0006..0.11


def test_weighted_class_default_epoch_is_dataset_size():
    assert len(list(sampler("weighted_class"))) == len(LABELS)


def test_weighted_attribute_balances_one_attribute():
    s = sampler("weighted_attribute", attribute="mask", num_samples=30_000)
    mask = decode(LABELS[list(s)])[0]
    np.testing.assert_allclose(np.bincount(mask) / 30_000, 1 / 3, atol=0.01)


def test_weighted_attribute_product_balances_both_attributes():
    # mask and age independent in the data (counts 10x, 3x, 1x and 1x, 2x, 8x), gender always 0
    mask_counts, age_counts = np.array([10, 3, 1]), np.array([1, 2, 8])
    labels = np.concatenate([
        np.full(mask_counts[m] * age_counts[a] * 5, encode(m, 0, a)) for m in range(3) for a in range(3)
    ])
    s = sampler("weighted_attribute", labels=labels, attribute=["mask", "age"], num_samples=45_000)
    mask, _, age = decode(labels[list(s)])
    joint = np.bincount(mask * 3 + age, minlength=9) / 45_000
    np.testing.assert_allclose(joint, 1 / 9, atol=0.01)


def test_oversample_raises_rare_classes_to_the_target():
    labels = np.repeat([0, 1, 2], [100, 10, 60])
    s = sampler("oversample", labels=labels, ratio=0.5)
    order = list(s)
    assert len(s) == len(order) == 100 + 50 + 60
    assert drawn_classes(order, labels)[:3].tolist() == [100, 50, 60]
    assert np.bincount(order)[100:110].tolist() == [5] * 10  # every rare image exactly 5 times


def test_oversample_partial_copies_fill_the_remainder():
    labels = np.repeat([0, 1], [100, 30])
    order = list(sampler("oversample", labels=labels, ratio=0.8))  # class 1: 2 full copies + 20 more
    uses = np.bincount(order)[100:]
    assert uses.sum() == 80 and sorted(set(uses.tolist())) == [2, 3]


def test_undersample_caps_frequent_classes_with_a_new_subset_each_epoch():
    labels = np.repeat([0, 1, 2], [100, 10, 60])
    s = sampler("undersample", labels=labels, ratio=0.2)
    first, second = list(s), list(s)
    assert drawn_classes(first, labels)[:3].tolist() == [20, 10, 20]
    assert len(set(first)) == len(first) == len(s) == 50
    assert set(first) != set(second)


@pytest.mark.parametrize("name, params", [
    ("weighted_class", {}), ("weighted_attribute", {"attribute": "age"}), ("oversample", {}), ("undersample", {}),
])
def test_same_seed_same_order_and_epochs_differ(name, params):
    a, b, c = sampler(name, seed=7, **params), sampler(name, seed=7, **params), sampler(name, seed=8, **params)
    epoch0 = list(a)
    assert epoch0 == list(b)
    assert epoch0 != list(c)
    epoch1 = list(a)
    assert epoch1 != epoch0
    b.set_epoch(1)
    assert list(b) == epoch1


@pytest.mark.parametrize(
    "name, params, message",
    [
        ("balanced", {}, "valid names: ['none', 'oversample', 'undersample', 'weighted_attribute', 'weighted_class']"),
        ("oversample", {"target": 1}, "unknown param(s) ['target']; valid params: ['ratio']"),
        ("none", {"ratio": 1}, "unknown param(s) ['ratio']; valid params: []"),
        ("undersample", {"ratio": 0}, "'ratio' must be a number in (0, 1], got 0"),
        ("weighted_attribute", {"attribute": "hair"}, "'attribute' must be one or more of ['mask', 'gender', 'age']"),
        ("weighted_attribute", {}, "sampler 'weighted_attribute': invalid params {}"),
        ("weighted_class", {"num_samples": 0}, "'num_samples' must be a positive integer, got 0"),
    ],
)
def test_build_sampler_errors(name, params, message):
    with pytest.raises(ValueError) as err:
        sampler(name, **params)
    assert message in str(err.value)


def test_rejects_labels_outside_the_18_classes():
    with pytest.raises(ValueError, match="classes 0..17"):
        sampler("weighted_class", labels=np.array([0, 18]))
