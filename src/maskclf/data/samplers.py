"""Samplers against class imbalance: weighted draws, over- and under-sampling of the 18 classes.

Every sampler is reproducible: epoch k's order depends only on (seed, k). The epoch counter advances on each
pass; call `set_epoch(k)` before an epoch to pin it (e.g. after resuming).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.utils.data import Sampler, WeightedRandomSampler

from maskclf.config import NamedCfg
from maskclf.utils.named import Choices
from maskclf.labels import NUM_CLASSES, decode

ATTRIBUTES = ("mask", "gender", "age")


def _generator(seed: int, epoch: int) -> torch.Generator:
    state = np.random.SeedSequence([seed, epoch]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


class EpochWeightedSampler(WeightedRandomSampler):
    """torch's WeightedRandomSampler (with replacement) whose generator is re-seeded from (seed, epoch)."""

    def __init__(self, weights: np.ndarray, num_samples: int, seed: int):
        super().__init__(torch.as_tensor(weights, dtype=torch.double), num_samples, replacement=True)
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        self.generator = _generator(self.seed, self.epoch)
        self.epoch += 1
        return super().__iter__()


class ResampledSampler(Sampler[int]):
    """Each epoch takes `quota[c]` indices of every class c (whole copies, then a fresh random subset), shuffled."""

    def __init__(self, labels: np.ndarray, quota: np.ndarray, seed: int):
        self.by_class = [np.flatnonzero(labels == c) for c in range(len(quota))]
        self.quota = [int(q) if len(idx) else 0 for q, idx in zip(quota, self.by_class)]
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return sum(self.quota)

    def __iter__(self):
        g = _generator(self.seed, self.epoch)
        self.epoch += 1
        chosen = []
        for idx, quota in zip(self.by_class, self.quota):
            copies, rest = divmod(quota, len(idx)) if len(idx) else (0, 0)
            pick = torch.randperm(len(idx), generator=g)[:rest].numpy() if rest else np.empty(0, dtype=np.int64)
            chosen.append(np.concatenate([np.tile(idx, copies), idx[pick]]))
        order = np.concatenate(chosen)[torch.randperm(len(self), generator=g).numpy()]
        return iter(order.tolist())


def _inverse_frequency(values: np.ndarray, size: int) -> np.ndarray:
    """Per-sample weight 1 / count(value of that sample)."""
    counts = np.bincount(values, minlength=size)
    return 1.0 / counts[values]


def _weighted_class(labels, seed, num_samples: int | None = None):
    """Draws with replacement, P(sample) ~ 1 / its class count: classes come out about uniform."""
    weights = _inverse_frequency(labels, NUM_CLASSES)
    return EpochWeightedSampler(weights, _length(num_samples, labels), seed)


def _weighted_attribute(labels, seed, attribute: str | list[str], num_samples: int | None = None):
    """Draws with replacement, P(sample) ~ product over the named attributes of 1 / attribute-value count."""
    names = [attribute] if isinstance(attribute, str) else list(attribute)
    bad = sorted(set(names) - set(ATTRIBUTES))
    if bad or not names:
        raise ValueError(f"sampler param 'attribute' must be one or more of {list(ATTRIBUTES)}, got {attribute!r}")
    parts = dict(zip(ATTRIBUTES, decode(labels)))
    weights = np.ones(len(labels))
    for name in dict.fromkeys(names):
        weights *= _inverse_frequency(parts[name], 3)
    return EpochWeightedSampler(weights, _length(num_samples, labels), seed)


def _oversample(labels, seed, ratio: float = 0.5):
    """Every present class gets at least ceil(ratio * largest class count) samples per epoch."""
    counts = np.bincount(labels, minlength=NUM_CLASSES)
    target = math.ceil(_ratio(ratio) * counts.max())
    return ResampledSampler(labels, np.maximum(counts, target), seed)


def _undersample(labels, seed, ratio: float = 0.5):
    """Every class gets at most ceil(ratio * largest class count) samples per epoch (a new subset each epoch)."""
    counts = np.bincount(labels, minlength=NUM_CLASSES)
    cap = math.ceil(_ratio(ratio) * counts.max())
    return ResampledSampler(labels, np.minimum(counts, cap), seed)


def _ratio(value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise ValueError(f"sampler param 'ratio' must be a number in (0, 1], got {value!r}")
    return float(value)


def _length(num_samples, labels) -> int:
    if num_samples is None:
        return len(labels)
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"sampler param 'num_samples' must be a positive integer, got {num_samples!r}")
    return num_samples


SAMPLERS = {
    "none": None,
    "weighted_class": _weighted_class,
    "weighted_attribute": _weighted_attribute,
    "oversample": _oversample,
    "undersample": _undersample,
}


SAMPLER_CHOICES = Choices("sampler", SAMPLERS, filled=("labels", "seed"))


def build_sampler(cfg: NamedCfg, labels: np.ndarray, seed: int) -> Sampler | None:
    """A training sampler from `{name, params}` (None for "none": the loader shuffles as usual).

    Epoch length: num_samples (default len(labels)) for the weighted samplers; sum over classes of
    max(count, ceil(ratio * largest)) for oversample and of min(count, ceil(ratio * largest)) for undersample.
    """
    factory = SAMPLER_CHOICES.entry(cfg.name)
    SAMPLER_CHOICES.params(cfg)
    if factory is None:
        return None
    labels = np.asarray(labels, dtype=np.int64)
    if labels.ndim != 1 or len(labels) == 0 or labels.min() < 0 or labels.max() >= NUM_CLASSES:
        raise ValueError(f"labels must be a non-empty 1-D array of classes 0..{NUM_CLASSES - 1}")
    return SAMPLER_CHOICES.build(cfg, labels, seed)
