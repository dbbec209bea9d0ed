"""The 18-class label space: encode/decode, age groups and the image-name -> mask mapping."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NUM_CLASSES = 18
MASK_NAMES = ("wear", "incorrect", "normal")
GENDER_NAMES = ("male", "female")
HEADS = {"mask": 3, "gender": 2, "age": 3}

# Competition file stems -> mask status. mask1..mask5 are worn masks.
MASK_BY_STEM = {
    "mask1": 0, "mask2": 0, "mask3": 0, "mask4": 0, "mask5": 0,
    "incorrect_mask": 1,
    "normal": 2,
}
GENDER_BY_NAME = {"male": 0, "female": 1}


@dataclass(frozen=True)
class AgeBounds:
    """Age-group bounds: group 0 is age < young, group 1 is young <= age < old, group 2 is age >= old."""

    young: int = 30
    old: int = 60

    def __post_init__(self) -> None:
        if not 0 < self.young < self.old:
            raise ValueError(f"age bounds must satisfy 0 < young < old, got young={self.young}, old={self.old}")

    def group(self, age: float) -> int:
        """Age group (0, 1 or 2) of one age."""
        return 0 if age < self.young else (1 if age < self.old else 2)

    def groups(self, ages: np.ndarray) -> np.ndarray:
        """Age groups of an array of ages (same rule as :meth:`group`)."""
        ages = np.asarray(ages, dtype=np.float64)
        return (ages >= self.young).astype(np.int64) + (ages >= self.old).astype(np.int64)

    def names(self) -> tuple[str, str, str]:
        """Display names of the three groups, e.g. ('<30', '30-59', '>=60')."""
        return (f"<{self.young}", f"{self.young}-{self.old - 1}", f">={self.old}")


def encode(mask, gender, age_group):
    """class = mask*6 + gender*3 + age_group (works on ints and numpy arrays)."""
    return mask * 6 + gender * 3 + age_group


def decode(cls):
    """Inverse of :func:`encode`: returns (mask, gender, age_group)."""
    return cls // 6, (cls // 3) % 2, cls % 3


# Training photos labelled with a mask status only (data.mask_extra) carry code MASK_ONLY + mask (18, 19, 20):
# never a class, only ever a training target whose gender and age are unknown.
MASK_ONLY = NUM_CLASSES


def mask_of(labels):
    """Mask status of 18-class labels and mask-only codes alike (ints or numpy/torch arrays)."""
    return (labels < MASK_ONLY) * (labels // 6) + (labels >= MASK_ONLY) * (labels - MASK_ONLY)


def with_mask(labels, mask):
    """The same labels with mask status `mask` (gender and age kept; mask-only codes stay mask-only)."""
    return (labels < MASK_ONLY) * (mask * 6 + labels % 6) + (labels >= MASK_ONLY) * (MASK_ONLY + mask)


def class_names(bounds: AgeBounds = AgeBounds()) -> list[str]:
    """The 18 class names in class order, e.g. 'wear/male/<30'."""
    ages = bounds.names()
    return [f"{MASK_NAMES[m]}/{GENDER_NAMES[g]}/{ages[a]}" for m in range(3) for g in range(2) for a in range(3)]


def attribute_names(bounds: AgeBounds = AgeBounds()) -> dict[str, tuple[str, ...]]:
    """Value names of each attribute head."""
    return {"mask": MASK_NAMES, "gender": GENDER_NAMES, "age": bounds.names()}


def split_probs(probs18: np.ndarray) -> dict[str, np.ndarray]:
    """Marginalise (N, 18) class probabilities (numpy or torch) into per-attribute (N, k) probabilities."""
    p = (probs18 if hasattr(probs18, "reshape") else np.asarray(probs18)).reshape(-1, 3, 2, 3)
    return {"mask": p.sum(axis=(2, 3)), "gender": p.sum(axis=(1, 3)), "age": p.sum(axis=(1, 2))}


def combine_probs(mask: np.ndarray, gender: np.ndarray, age: np.ndarray) -> np.ndarray:
    """Outer product of independent per-attribute probabilities (numpy or torch) into (N, 18) class probabilities."""
    p = mask[:, :, None, None] * gender[:, None, :, None] * age[:, None, None, :]
    return p.reshape(-1, NUM_CLASSES)  # not len(mask): a traced (ONNX) graph would fix the batch size
