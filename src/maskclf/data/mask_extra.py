"""Extra training photos that carry only a mask label (`data.mask_extra`): scan, and a seeded hold-out per source.

A source is a folder with `wear/`, `incorrect/` and `normal/` subfolders, a folder with a `labels.csv`
(columns file or path, mask, optionally source), or such a CSV itself; image paths are relative to the CSV's
folder and must stay inside it. Gender and age of these photos are unknown (-1): in training they feed the mask
head only. A share of every source x mask status is held out (never trained on) so that the same photos can
test the model, e.g. the real photos of mask-real.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from maskclf.data.scan import read_csv
from maskclf.labels import MASK_NAMES
from maskclf.layout import IMAGE_EXTS, DataError, Record, inside

LABELS_CSV = "labels.csv"
PERSON_PREFIX = "mask-extra:"  # each photo is its own person; never a competition id


@dataclass
class MaskExtra:
    """The mask-only photos of one source folder or CSV; `sources[i]` names the origin of `records[i]`."""

    root: Path  # image paths (and face-cache keys) are relative to this folder
    records: list[Record]
    sources: list[str]


def _record(root: Path, path: Path, mask: int) -> Record:
    key = path.relative_to(root).as_posix()
    return Record(path=path, key=key, person=PERSON_PREFIX + key, mask=mask)


def _mask_index(text: str, where: str) -> int:
    if text not in MASK_NAMES:
        raise DataError(f"{where}: mask '{text}' is not one of {list(MASK_NAMES)}")
    return MASK_NAMES.index(text)


def _from_csv(csv_path: Path) -> MaskExtra:
    rows = read_csv(csv_path, ("mask",))
    column = "path" if rows and "path" in rows[0] else "file"
    if rows and column not in rows[0]:
        raise DataError(f"{csv_path}: needs a 'path' (or 'file') column of image paths; found {sorted(rows[0])}")
    root, records, sources = csv_path.parent, [], []
    for line, row in enumerate(rows, start=2):
        where = f"{csv_path}:{line}"
        path = inside(root, row[column])
        if path is None:
            raise DataError(f"{where}: image path '{row[column]}' must be relative and stay inside {root}")
        records.append(_record(root, path, _mask_index(row["mask"], where)))
        sources.append(row.get("source", ""))
    return MaskExtra(root, records, sources)


def _from_folders(root: Path) -> MaskExtra:
    found = [m for m in MASK_NAMES if (root / m).is_dir()]
    if not found:
        raise DataError(f"{root}: expected {LABELS_CSV} or subfolders {list(MASK_NAMES)} of mask-labelled photos")
    records = []
    for name in found:
        files = sorted(p for p in (root / name).rglob("*") if p.suffix.lower() in IMAGE_EXTS
                       and not p.name.startswith(".") and p.is_file())
        records += [_record(root, p, MASK_NAMES.index(name)) for p in files]
    return MaskExtra(root, records, [""] * len(records))


def scan_mask_extra(path: Path) -> MaskExtra:
    """The mask-only photos of a folder (labels.csv, or wear/ incorrect/ normal/ subfolders) or of a CSV file."""
    path = Path(path)
    if path.is_file():
        return _from_csv(path)
    if not path.is_dir():
        raise DataError(f"data.mask_extra: {path} is neither a folder nor a CSV file")
    extra = _from_csv(path / LABELS_CSV) if (path / LABELS_CSV).is_file() else _from_folders(path)
    if not extra.records:
        raise DataError(f"data.mask_extra: {path} holds no images")
    return extra


def holdout_split(extra: MaskExtra, fraction: float, seed: int) -> tuple[list[Record], list[Record]]:
    """(trained on, held out): round(fraction * n) photos of every source x mask status held out, seeded."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"data.mask_extra_holdout must be in [0, 1), got {fraction}")
    strata: dict[tuple[str, int], list[int]] = {}
    for i, (r, s) in enumerate(zip(extra.records, extra.sources)):
        strata.setdefault((s, r.mask), []).append(i)
    rng = np.random.default_rng(seed)
    held = set()
    for key in sorted(strata):
        members = sorted(strata[key], key=lambda i: extra.records[i].key)
        held.update(rng.permutation(members)[: int(round(fraction * len(members)))].tolist())
    return ([r for i, r in enumerate(extra.records) if i not in held],
            [r for i, r in enumerate(extra.records) if i in held])


def mask_extra_draw(n_available: int, n_main: int, ratio: float | None, seed: int) -> np.ndarray:
    """Indices of the mask-only photos a run trains on: all once (ratio None), else round(ratio * n_main) of them
    (a seeded subset, or whole copies plus a subset when more are asked for than there are)."""
    if ratio is None or n_available == 0:
        return np.arange(n_available)
    want = int(round(ratio * n_main))
    copies, rest = divmod(want, n_available)
    rng = np.random.default_rng([seed, n_available])
    return np.sort(np.concatenate([np.tile(np.arange(n_available), copies), rng.permutation(n_available)[:rest]]))
