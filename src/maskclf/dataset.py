"""Scan a competition-layout folder into typed image records, reporting every problem by file."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field, replace
from pathlib import Path

from maskclf.labels import GENDER_BY_NAME, MASK_BY_STEM, AgeBounds, encode

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
TRAIN_COLUMNS = ("id", "gender", "race", "age", "path")
EVAL_COLUMNS = ("ImageID", "ans")


class DataError(ValueError):
    """A dataset problem that makes the folder unusable (missing CSV, missing columns, ...)."""


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
        if min(self.mask, self.gender, self.age_group) < 0:
            return -1
        return int(encode(self.mask, self.gender, self.age_group))


@dataclass
class Problem:
    path: str
    message: str
    fatal: bool = False

    def __str__(self) -> str:
        return f"{'ERROR' if self.fatal else 'warning'}: {self.path}: {self.message}"


@dataclass
class Scan:
    records: list[Record] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    @property
    def fatal(self) -> bool:
        return any(p.fatal for p in self.problems)

    def warn(self, path, message: str) -> None:
        self.problems.append(Problem(str(path), message))

    def error(self, path, message: str) -> None:
        self.problems.append(Problem(str(path), message, fatal=True))


def _is_hidden(name: str) -> bool:
    return name.startswith(".") or name.startswith("._") or name in {"Thumbs.db", "desktop.ini"}


def _read_csv(path: Path, required: tuple[str, ...]) -> list[dict[str, str]]:
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        cols = [c.strip() for c in (reader.fieldnames or [])]
        missing = [c for c in required if c not in cols]
        if missing:
            raise DataError(f"{path}: missing column(s) {missing}; found {cols}, expected {list(required)}")
        return [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader]


def _parse_age(text: str, where: str, scan: Scan) -> int | None:
    try:
        age = int(float(text))
    except ValueError:
        scan.error(where, f"age '{text}' is not a number")
        return None
    if not 0 < age < 130:
        scan.error(where, f"age {age} is out of range (1-129)")
        return None
    return age


def scan_train(root: Path, bounds: AgeBounds = AgeBounds()) -> Scan:
    """Scan `root/train` (train.csv + images/<path>/<stem>.<ext>) into labelled records."""
    root = Path(root)
    train = root / "train" if (root / "train" / "train.csv").exists() else root
    scan = Scan()
    rows = _read_csv(train / "train.csv", TRAIN_COLUMNS)
    images = train / "images"
    if not images.is_dir():
        raise DataError(f"{images}: folder not found (expected train/images/<id>_<gender>_<race>_<age>/)")
    listed = set()
    for i, row in enumerate(rows, start=2):
        where = f"{train / 'train.csv'}:{i}"
        folder = row["path"]
        listed.add(folder)
        gender = GENDER_BY_NAME.get(row["gender"].lower())
        if gender is None:
            scan.error(where, f"gender '{row['gender']}' is not one of {sorted(GENDER_BY_NAME)}")
            continue
        age = _parse_age(row["age"], where, scan)
        if age is None:
            continue
        _check_folder_name(folder, row, where, scan)
        person_dir = images / folder
        if not person_dir.is_dir():
            scan.error(where, f"image folder {person_dir} does not exist")
            continue
        seen: dict[str, Path] = {}
        for f in sorted(person_dir.iterdir()):
            if _is_hidden(f.name):
                scan.warn(f, "hidden file ignored")
                continue
            stem, ext = f.stem, f.suffix.lower()
            if ext not in IMAGE_EXTS or stem not in MASK_BY_STEM:
                scan.warn(f, f"unexpected file name ignored (expected one of {sorted(MASK_BY_STEM)} with an image extension)")
                continue
            if stem in seen:
                scan.error(f, f"duplicate image for '{stem}' (also {seen[stem].name}); keeping the first")
                continue
            seen[stem] = f
            scan.records.append(
                Record(path=f, key=f"{folder}/{f.name}", person=row["id"], mask=MASK_BY_STEM[stem], gender=gender,
                       age=age, age_group=bounds.group(age), race=row["race"])
            )
        missing = sorted(set(MASK_BY_STEM) - set(seen))
        if missing:
            scan.warn(person_dir, f"missing image(s): {missing}")
    for d in sorted(images.iterdir()):
        if d.is_dir() and d.name not in listed and not _is_hidden(d.name):
            scan.warn(d, "folder is not listed in train.csv; ignored")
    return scan


def _check_folder_name(folder: str, row: dict[str, str], where: str, scan: Scan) -> None:
    parts = folder.split("_")
    if len(parts) != 4:
        scan.warn(where, f"folder name '{folder}' is not <id>_<gender>_<race>_<age>")
        return
    expect = [row["id"], row["gender"], row["race"], row["age"]]
    names = ("id", "gender", "race", "age")
    bad = [f"{n} '{a}' vs CSV '{b}'" for n, a, b in zip(names, parts, expect) if a.lower() != b.lower()]
    if bad:
        scan.warn(where, f"folder name '{folder}' disagrees with the CSV row ({', '.join(bad)}); using the CSV")


def scan_eval(root: Path) -> Scan:
    """Scan `root/eval` (info.csv + images/<ImageID>) into unlabelled records, in info.csv order."""
    root = Path(root)
    ev = root / "eval" if (root / "eval" / "info.csv").exists() else root
    scan = Scan()
    rows = _read_csv(ev / "info.csv", EVAL_COLUMNS)
    seen = set()
    for i, row in enumerate(rows, start=2):
        image_id = row["ImageID"]
        where = f"{ev / 'info.csv'}:{i}"
        if image_id in seen:
            scan.error(where, f"duplicate ImageID {image_id}")
            continue
        seen.add(image_id)
        path = ev / "images" / image_id
        if not path.is_file():
            scan.error(where, f"image {path} does not exist")
            continue
        scan.records.append(Record(path=path, key=image_id))
    return scan


def read_ground_truth(path: Path) -> dict[str, int]:
    """ImageID -> class from a gt/submission CSV (ImageID, ans)."""
    rows = _read_csv(Path(path), EVAL_COLUMNS)
    out: dict[str, int] = {}
    for i, row in enumerate(rows, start=2):
        try:
            ans = int(row["ans"])
        except ValueError:
            raise DataError(f"{path}:{i}: ans '{row['ans']}' is not an integer") from None
        if not 0 <= ans < 18:
            raise DataError(f"{path}:{i}: ans {ans} is outside 0-17")
        if row["ImageID"] in out:
            raise DataError(f"{path}:{i}: duplicate ImageID {row['ImageID']}")
        out[row["ImageID"]] = ans
    return out


def with_labels(records: list[Record], gt: dict[str, int]) -> list[Record]:
    """Attach ground-truth classes (from gt.csv) to eval records."""
    from maskclf.labels import decode

    out = []
    for r in records:
        if r.key in gt:
            m, g, a = decode(gt[r.key])
            r = replace(r, mask=int(m), gender=int(g), age_group=int(a))
        out.append(r)
    return out
