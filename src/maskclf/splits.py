"""Person-level train/validation splits, stratified by each person's gender x age group."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from sklearn.model_selection import StratifiedKFold, train_test_split

from maskclf.dataset import Record


@dataclass
class Split:
    train: list[str]  # person ids
    val: list[str]
    method: str
    seed: int

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, path: Path) -> "Split":
        return cls(**json.loads(Path(path).read_text()))

    def partition(self, records: list[Record]) -> tuple[list[Record], list[Record]]:
        """(train records, val records); records of people in neither list are dropped."""
        tr, va = set(self.train), set(self.val)
        return [r for r in records if r.person in tr], [r for r in records if r.person in va]


def people(records: list[Record]) -> tuple[list[str], list[int]]:
    """Sorted person ids and each person's stratum (gender*3 + age group)."""
    strata: dict[str, int] = {}
    for r in records:
        strata.setdefault(r.person, r.gender * 3 + r.age_group)
    ids = sorted(strata)
    return ids, [strata[p] for p in ids]


def _safe_strata(strata: list[int], min_count: int) -> np.ndarray:
    """Fold strata too small to split (fewer than min_count people) into one shared 'rare' stratum."""
    counts = Counter(strata)
    out = np.array([s if counts[s] >= min_count else -1 for s in strata])
    if 0 < (out == -1).sum() < min_count:  # the rare pool itself is too small: give it to the largest stratum
        out[out == -1] = Counter(out.tolist()).most_common(1)[0][0]
    return out


def holdout(records: list[Record], val_fraction: float, seed: int) -> Split:
    """Hold out `val_fraction` of the people (not images), stratified by gender x age group."""
    ids, strata = people(records)
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    n_val = int(round(len(ids) * val_fraction))
    if n_val < 1 or n_val >= len(ids):
        raise ValueError(f"val_fraction {val_fraction} of {len(ids)} people leaves an empty side")
    y = _safe_strata(strata, 2)
    n_classes = len(set(y.tolist()))
    stratify = y if n_classes <= n_val and n_classes <= len(ids) - n_val else None
    tr, va = train_test_split(ids, test_size=n_val, random_state=seed, shuffle=True, stratify=stratify)
    return Split(train=sorted(tr), val=sorted(va), method=f"holdout:{val_fraction}", seed=seed)


def kfold(records: list[Record], k: int, seed: int) -> list[Split]:
    """k person-grouped folds stratified by gender x age group; every person is validated exactly once."""
    ids, strata = people(records)
    if not 2 <= k <= len(ids):
        raise ValueError(f"k must be between 2 and the number of people ({len(ids)}), got {k}")
    y = _safe_strata(strata, k)
    skf = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    arr = np.array(ids)
    return [
        Split(train=sorted(arr[tr].tolist()), val=sorted(arr[va].tolist()), method=f"kfold:{k}:{i}", seed=seed)
        for i, (tr, va) in enumerate(skf.split(arr, y))
    ]
