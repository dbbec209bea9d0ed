"""The competition layout's vocabulary: an image record, a scan's problems, its CSV columns and image types."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from maskclf.labels import encode

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
TRAIN_COLUMNS = ("id", "gender", "race", "age", "path")
EVAL_COLUMNS = ("ImageID", "ans")


class DataError(ValueError):
    """A dataset problem that makes the folder unusable (missing CSV, missing columns, ...)."""


def inside(folder: Path, name: str) -> Path | None:
    """`folder / name` when `name` (a path read from a CSV) is relative and stays inside `folder`, else None.

    Checked on the text, as the path is written: `..` cannot climb out and absolute paths are refused. Symlinks
    inside the folder are the dataset owner's choice and are followed as usual.
    """
    if not name or os.path.isabs(name):
        return None
    rel = os.path.normpath(name)
    if rel in (".", "..") or rel.startswith(".." + os.sep):
        return None
    return Path(folder) / rel


def is_within(path: Path, folder: Path) -> bool:
    """Whether `path` (absolute, or relative to the working folder) lies inside `folder`, `..` resolved on the text."""
    path, folder = os.path.normpath(os.path.abspath(path)), os.path.normpath(os.path.abspath(folder))
    return os.path.commonpath([path, folder]) == folder


@dataclass(frozen=True)
class Record:
    """One image. Labels are -1 where unknown (eval images)."""

    path: Path
    key: str  # stable id: '<person folder>/<file name>' for train, the ImageID for eval
    person: str = ""
    mask: int = -1
    gender: int = -1
    age: int = -1
    age_group: int = -1
    race: str = ""

    @property
    def label(self) -> int:
        """The 18-class label, or -1 when any part is unknown."""
        if min(self.mask, self.gender, self.age_group) < 0:
            return -1
        return int(encode(self.mask, self.gender, self.age_group))


@dataclass
class Problem:
    """One thing wrong with a dataset folder (fatal or a warning)."""

    path: str
    message: str
    fatal: bool = False

    def __str__(self) -> str:
        return f"{'ERROR' if self.fatal else 'warning'}: {self.path}: {self.message}"


@dataclass
class Scan:
    """Records found in a folder and the problems met on the way."""

    records: list[Record] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    @property
    def fatal(self) -> bool:
        """Whether any problem makes the folder unusable."""
        return any(p.fatal for p in self.problems)

    def warn(self, path, message: str) -> None:
        """Record a warning about `path`."""
        self.problems.append(Problem(str(path), message))

    def error(self, path, message: str) -> None:
        """Record a fatal problem about `path`."""
        self.problems.append(Problem(str(path), message, fatal=True))
