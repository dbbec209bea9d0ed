"""Assemble the labelled training records a config asks for: scan, label fixes, extra folders."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from maskclf.config import DataCfg
from maskclf.data.mask_extra import MaskExtra, scan_mask_extra
from maskclf.data.scan import scan_train
from maskclf.layout import DataError, Problem, Record, Scan
from maskclf.labels import AgeBounds
from maskclf.data.label_fixes import applies, apply_fixes, load_fixes


@dataclass
class TrainData:
    """The labelled training records a config asks for, with scan problems and label fixes."""

    root: Path
    records: list[Record]  # main folder, label fixes applied
    extra: dict[Path, list[Record]] = field(default_factory=dict)  # extra folders (train-only people, no label fixes)
    problems: list[Problem] = field(default_factory=list)
    fixes: dict[str, int] = field(default_factory=dict)
    fixes_note: str = ""
    mask_extra: list[MaskExtra] = field(default_factory=list)  # photos with a mask label only (data.mask_extra)


def bounds_of(data: DataCfg) -> AgeBounds:
    """The age-group bounds the training labels are cut at (`data.age_bounds`)."""
    return AgeBounds(*data.age_bounds)


def truth_bounds_of(data: DataCfg) -> AgeBounds:
    """The age-group bounds validation and eval are scored in (`data.truth_age_bounds`)."""
    return AgeBounds(*data.truth_age_bounds)


def regroup(records: list[Record], bounds: AgeBounds) -> list[Record]:
    """Records with their age group recomputed from the exact age under `bounds` (no exact age: unchanged)."""
    return [replace(r, age_group=bounds.group(r.age)) if r.age > 0 else r for r in records]


def age_dropped(records: list[Record], ages: list[int]) -> set[str]:
    """People whose exact age is one of `ages` (`data.drop_ages`)."""
    drop = set(ages)
    return {r.person for r in records if r.age in drop}


def fix_labels(records: list[Record], data: DataCfg) -> tuple[list[Record], dict[str, int], str]:
    """Apply `data.label_fixes`: (records, people changed per kind of fix, why the fixes were skipped or '')."""
    fixes = load_fixes(data.label_fixes)
    _, note = applies(fixes, records)
    fixed, touched = apply_fixes(records, fixes, bounds_of(data))
    return fixed, touched, note


def _usable_scan(root: Path, bounds: AgeBounds, what: str) -> Scan:
    """scan_train, refusing a folder with fatal problems (listing the first ten)."""
    scan = scan_train(root, bounds)
    errs = [str(p) for p in scan.problems if p.fatal]
    if errs:
        raise DataError(f"{what} {root}: {len(errs)} fatal problem(s) (see `maskclf check {root}`):\n  " + "\n  ".join(errs[:10]))
    return scan


def load_train(data: DataCfg, root: Path | None = None) -> TrainData:
    """Scan the main train folder (+ `data.extra`, `data.mask_extra`), apply label fixes, refuse fatal problems."""
    root = root if root is not None else data.root
    if root is None:
        raise DataError("no data folder given (pass DATA_DIR or set data.root)")
    root = Path(root)
    if not root.exists():
        raise DataError(f"data folder not found: '{root}' (pass DATA_DIR or set data.root)")
    bounds = bounds_of(data)
    scan = _usable_scan(root, bounds, "data")
    records, touched, note = fix_labels(scan.records, data)
    out = TrainData(root=root, records=records, problems=list(scan.problems), fixes=touched, fixes_note=note)
    for extra_root in map(Path, data.extra):
        extra_scan = _usable_scan(extra_root, bounds, "extra data")
        clash = {r.person for r in extra_scan.records} & {r.person for r in records}
        if clash:
            raise DataError(f"extra data {extra_root}: person ids also in {root}: {sorted(clash)[:5]}")
        out.extra[extra_root] = extra_scan.records
        out.problems += extra_scan.problems
    out.mask_extra = [scan_mask_extra(Path(p)) for p in data.mask_extra]
    return out
