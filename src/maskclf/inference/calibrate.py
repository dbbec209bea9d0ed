"""Class-prior offsets for macro F1: log-probability shifts per age group and gender, tuned on validation.

Cross-entropy training predicts the rare classes (the oldest age group above all) less often than they occur,
and macro F1 weighs every class equally, so a small push towards them pays. Class c = mask*6 + gender*3 + age
gets log p_c + age_offset[c % 3] + gender_offset[(c // 3) % 2]; the first age group and the first gender stay
at 0 (only differences matter), leaving three numbers to search on the validation predictions.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from maskclf.labels import NUM_CLASSES
from maskclf.metrics import macro_f1

AGE_OF = np.arange(NUM_CLASSES) % 3
GENDER_OF = (np.arange(NUM_CLASSES) // 3) % 2


@dataclass
class Calibration:
    """Offsets tuned for macro F1, with the F1 before and after."""

    age: list[float]  # offsets of the three age groups (the first is 0)
    gender: list[float]  # offsets of the two genders (the first is 0)
    f1_before: float
    f1_after: float  # on the same predictions the offsets were tuned on: optimistic

    @property
    def offsets(self) -> list[float]:
        """The 18 per-class offsets, as plain floats (checkpoints are loaded with weights_only=True)."""
        return [float(x) for x in class_offsets(self.age, self.gender)]


def class_offsets(age, gender) -> np.ndarray:
    """(18,) log-probability offsets from 3 age-group and 2 gender offsets."""
    return np.asarray(age, dtype=np.float64)[AGE_OF] + np.asarray(gender, dtype=np.float64)[GENDER_OF]


def apply_offsets(probs: np.ndarray, offsets) -> np.ndarray:
    """Probabilities re-weighted by exp(offsets) and renormalised; no or all-zero offsets return `probs` itself."""
    if offsets is None or not np.any(offsets):
        return probs
    weighted = np.asarray(probs, dtype=np.float64) * np.exp(np.asarray(offsets, dtype=np.float64))
    return (weighted / weighted.sum(axis=1, keepdims=True)).astype(probs.dtype)


def search_offsets(probs: np.ndarray, labels: np.ndarray, low: float = -2.0, high: float = 4.0,
                   coarse: float = 0.5, fine: float = 0.05, rounds: int = 5) -> Calibration:
    """Offsets maximising macro F1 of `labels` vs argmax: a coarse grid, then coordinate-wise refinement.

    Among equally good offsets the ones closest to 0 win, so predictions that are already the best
    argmax get all-zero offsets (and stay untouched).
    """
    labels = np.asarray(labels, dtype=np.int64)
    logp = np.log(np.clip(np.asarray(probs, dtype=np.float64), 1e-12, None))

    def key(x: tuple[float, float, float]) -> tuple[float, float]:
        pred = (logp + class_offsets((0.0, x[0], x[1]), (0.0, x[2]))).argmax(axis=1)
        return macro_f1(labels, pred), -sum(abs(v) for v in x)

    grid = np.round(np.arange(low, high + 1e-9, coarse), 6)
    best = tuple(float(v) for v in max(itertools.product(grid, repeat=3), key=key))
    best_key = key(best)
    for _ in range(rounds):
        moved = False
        for i in range(3):
            around = np.round(best[i] + fine * np.arange(-round(coarse / fine), round(coarse / fine) + 1), 6)
            for v in around[(around >= low) & (around <= high)]:
                x = best[:i] + (float(v),) + best[i + 1:]
                k = key(x)
                if k > best_key:
                    best, best_key, moved = x, k, True
        if not moved:
            break
    before = macro_f1(labels, logp.argmax(axis=1))
    return Calibration([0.0, float(best[0]), float(best[1])], [0.0, float(best[2])], before, best_key[0])
