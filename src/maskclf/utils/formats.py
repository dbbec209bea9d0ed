"""File formats shared by commands: cross-validation folders, fold probabilities and out-of-fold CSVs."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np

from maskclf.labels import NUM_CLASSES
from maskclf.utils.atomic import write_atomic

OOF_COLUMNS = ["key", "person", "label", "path"] + [f"p{c}" for c in range(NUM_CLASSES)]
VAL_PROBS = "val_probs.csv"  # a run's validation probabilities from its best weights, in the oof.csv columns


def fold_dirs(cv_dir: Path) -> list[Path]:
    """The fold run folders of a cv run, in fold order."""
    k = json.loads((Path(cv_dir) / "cv.json").read_text())["k"]
    return [Path(cv_dir) / f"fold{i}" for i in range(k)]


def write_fold_probs(path: Path, keys: list[str], probs: np.ndarray) -> None:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["key"] + [f"p{c}" for c in range(NUM_CLASSES)])
        w.writerows([k] + [f"{p:.6g}" for p in row] for k, row in zip(keys, probs))


def read_fold_probs(path: Path) -> dict[str, np.ndarray]:
    with path.open(newline="") as fh:
        rows = list(csv.reader(fh))[1:]
    return {r[0]: np.array([float(x) for x in r[1:]]) for r in rows}


def write_oof(path: Path, records, probs: np.ndarray) -> None:
    """Records (key, person, label, absolute path) with their 18 probabilities, written atomically."""
    def write(fh) -> None:
        text = io.TextIOWrapper(fh, encoding="utf-8", newline="")
        w = csv.writer(text)
        w.writerow(OOF_COLUMNS)
        for r, row in zip(records, probs):
            w.writerow([r.key, r.person, r.label, str(Path(r.path).resolve())] + [f"{p:.6g}" for p in row])
        text.flush()
        text.detach()

    write_atomic(Path(path), write)


def read_oof(path: Path) -> tuple[list[dict], np.ndarray]:
    """Rows (key, person, label, path) and (N, 18) probabilities of an oof.csv."""
    path = Path(path)
    if path.is_dir():
        path = path / "oof.csv"
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames != OOF_COLUMNS:
            raise ValueError(f"{path}: expected columns {OOF_COLUMNS[:5]}..., found {(reader.fieldnames or [])[:5]}...")
        rows = list(reader)
    probs = np.array([[float(r[f"p{c}"]) for c in range(NUM_CLASSES)] for r in rows])
    meta = [{"key": r["key"], "person": r["person"], "label": int(r["label"]), "path": r["path"]} for r in rows]
    return meta, probs
