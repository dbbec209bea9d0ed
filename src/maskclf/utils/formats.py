"""File formats shared by commands, one reader and one writer each: probabilities CSVs, out-of-fold CSVs, cv folders."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np

from maskclf.labels import NUM_CLASSES
from maskclf.utils.atomic import write_atomic

PROB_COLUMNS = [f"p{c}" for c in range(NUM_CLASSES)]
OOF_COLUMNS = ["key", "person", "label", "path"] + PROB_COLUMNS
VAL_PROBS = "val_probs.csv"  # a run's validation probabilities from its best weights, in the oof.csv columns


def fold_dirs(cv_dir: Path) -> list[Path]:
    """The fold run folders of a cv run, in fold order."""
    k = json.loads((Path(cv_dir) / "cv.json").read_text())["k"]
    return [Path(cv_dir) / f"fold{i}" for i in range(k)]


def write_csv(path: Path, header: list[str], rows) -> None:
    """A CSV file written atomically (readers never see half of it)."""
    def write(fh) -> None:
        text = io.TextIOWrapper(fh, encoding="utf-8", newline="")
        w = csv.writer(text)
        w.writerow(header)
        w.writerows(rows)
        text.flush()
        text.detach()

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_atomic(Path(path), write)


def _numbers(values: list[str]) -> list[float]:
    return [float(x) for x in values]


def write_probs(path: Path, ids: list[str], probs: np.ndarray, id_column: str = "ImageID",
                faces: list[str] | None = None) -> None:
    """A probabilities CSV: one id column (ImageID for eval images, key for validation crops), then p0..p17, then
    with `faces` a `face` column saying how each image's face was found (see FaceCache.face_status)."""
    extra = [[f] for f in faces] if faces is not None else [[] for _ in ids]
    write_csv(path, [id_column] + PROB_COLUMNS + (["face"] if faces is not None else []),
              ([i] + [f"{p:.6g}" for p in row] + e for i, row, e in zip(ids, probs, extra)))


def read_probs(path: Path, id_column: str = "ImageID") -> tuple[list[str], np.ndarray]:
    """Ids and (N, 18) probabilities of a probabilities CSV (`write_probs`; a face column is allowed)."""
    with Path(path).open(newline="") as fh:
        rows = list(csv.reader(fh))
    header = rows[0] if rows else []
    if header not in ([id_column] + PROB_COLUMNS, [id_column] + PROB_COLUMNS + ["face"]):
        raise ValueError(f"{path}: expected columns {id_column},p0..p17 (and optionally face), found {header[:4]}...")
    try:
        probs = np.array([_numbers(r[1:NUM_CLASSES + 1]) for r in rows[1:]]).reshape(len(rows) - 1, NUM_CLASSES)
    except ValueError:
        raise ValueError(f"{path}: every row needs {NUM_CLASSES} numbers after its {id_column}") from None
    return [r[0] for r in rows[1:]], probs


def write_oof(path: Path, records, probs: np.ndarray) -> None:
    """Records (key, person, label, absolute path) with their 18 probabilities, written atomically."""
    write_csv(path, OOF_COLUMNS, ([r.key, r.person, r.label, str(Path(r.path).resolve())] + [f"{p:.6g}" for p in row]
                                   for r, row in zip(records, probs)))


def read_oof(path: Path) -> tuple[list[dict], np.ndarray]:
    """Rows (key, person, label, path) and (N, 18) probabilities of an oof.csv (or a cv folder holding one)."""
    path = Path(path)
    if path.is_dir():
        path = path / "oof.csv"
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in OOF_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: expected columns {OOF_COLUMNS[:5]}...p17; missing column(s) {missing[:5]}")
        meta, probs = [], []
        for i, r in enumerate(reader, start=2):
            try:
                probs.append(_numbers([r[c] for c in PROB_COLUMNS]))
                meta.append({"key": r["key"], "person": r["person"], "label": int(r["label"]), "path": r["path"]})
            except (TypeError, ValueError):
                raise ValueError(f"{path}:{i}: label and p0..p17 must be numbers (row for '{r['key']}')") from None
    return meta, np.array(probs).reshape(len(meta), NUM_CLASSES)
