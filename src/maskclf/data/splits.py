"""Person-level train/validation splits, stratified by each person's gender x age group."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from sklearn.model_selection import StratifiedKFold

from maskclf.layout import Record


@dataclass
class Split:
    """Which people train and which validate (person-level, saved as split.json)."""

    train: list[str]  # person ids
    val: list[str]
    method: str
    seed: int

    def save(self, path: Path) -> None:
        """Write the split as JSON (kept with the run so it can be reused)."""
        Path(path).write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, path: Path) -> "Split":
        """Read a split written by :meth:`save`."""
        try:
            return cls(**json.loads(Path(path).read_text()))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path}: not a split saved by maskclf ({exc})") from None

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


def _quotas(sizes: dict[int, int], total: int, rng: np.random.Generator) -> dict[int, int]:
    """Split `total` across strata in proportion to their sizes (largest remainder; ties broken at random)."""
    n = sum(sizes.values())
    exact = {s: size * total / n for s, size in sizes.items()}
    quota = {s: int(np.floor(e)) for s, e in exact.items()}
    tiebreak = dict(zip(sizes, rng.permutation(len(sizes))))
    order = sorted(sizes, key=lambda s: (quota[s] - exact[s], tiebreak[s]))
    for s in order[: total - sum(quota.values())]:
        quota[s] += 1
    return quota


def holdout(records: list[Record], val_fraction: float, seed: int) -> Split:
    """Hold out `val_fraction` of the people (not images), stratified by gender x age group."""
    ids, strata = people(records)
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    n_val = int(round(len(ids) * val_fraction))
    if n_val < 1 or n_val >= len(ids):
        raise ValueError(f"val_fraction {val_fraction} of {len(ids)} people leaves an empty side")
    rng = np.random.default_rng(seed)
    by_stratum: dict[int, list[str]] = {}
    for pid, s in zip(ids, strata):
        by_stratum.setdefault(s, []).append(pid)
    quota = _quotas({s: len(v) for s, v in sorted(by_stratum.items())}, n_val, rng)
    val = set()
    for s, members in sorted(by_stratum.items()):
        val.update(rng.choice(members, size=quota[s], replace=False).tolist())
    return Split(train=[p for p in ids if p not in val], val=sorted(val), method=f"holdout:{val_fraction}", seed=seed)


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
