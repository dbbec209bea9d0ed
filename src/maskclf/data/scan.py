"""Scan a competition-layout folder into typed image records, reporting every problem by file."""

from __future__ import annotations

import csv
from dataclasses import replace
from pathlib import Path

from maskclf.labels import GENDER_BY_NAME, MASK_BY_STEM, AgeBounds, decode
from maskclf.layout import EVAL_COLUMNS, IMAGE_EXTS, TRAIN_COLUMNS, DataError, Record, Scan, inside


def _is_hidden(name: str) -> bool:
    """macOS/Windows litter ('._mask1.jpg', '.DS_Store', 'Thumbs.db') and other dot files."""
    return name.startswith(".") or name in {"Thumbs.db", "desktop.ini"}


def read_csv(path: Path, required: tuple[str, ...]) -> list[dict[str, str]]:
    """Rows of a CSV as stripped strings; DataError naming the file for missing columns or ragged rows."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        cols = [c.strip() for c in (reader.fieldnames or [])]
        missing = [c for c in required if c not in cols]
        if missing:
            raise DataError(f"{path}: missing column(s) {missing}; found {cols}, expected {list(required)}")
        rows = []
        for row in reader:
            if None in row:  # DictReader files surplus values under the key None
                raise DataError(f"{path}:{reader.line_num}: {len(cols) + len(row[None])} values but {len(cols)} columns {cols}")
            rows.append({(k or "").strip(): (v or "").strip() for k, v in row.items()})
        return rows


def _locate(root: Path, part: str, csv_name: str) -> Path:
    """`root/<part>` if it holds the CSV, else `root` itself if it does; DataError otherwise."""
    for folder in (root / part, root):
        if (folder / csv_name).is_file():
            return folder
    raise DataError(f"{root / part / csv_name}: file not found (expected the competition layout {part}/{csv_name})")


def _parse_age(text: str, where: str, scan: Scan) -> int | None:
    try:
        age = int(float(text))
    except (ValueError, OverflowError):
        scan.error(where, f"age '{text}' is not a number")
        return None
    if not 0 < age < 130:
        scan.error(where, f"age {age} is out of range (1-129)")
        return None
    return age


def scan_train(root: Path, bounds: AgeBounds = AgeBounds()) -> Scan:
    """Scan `root/train` (train.csv + images/<path>/<stem>.<ext>) into labelled records."""
    train = _locate(Path(root), "train", "train.csv")
    scan = Scan()
    rows = read_csv(train / "train.csv", TRAIN_COLUMNS)
    images = train / "images"
    if not images.is_dir():
        raise DataError(f"{images}: folder not found (expected train/images/<id>_<gender>_<race>_<age>/)")
    first: dict[str, dict[str, int]] = {"id": {}, "path": {}}  # value -> CSV line where it was first listed
    hidden: list[Path] = []
    for i, row in enumerate(rows, start=2):
        where = f"{train / 'train.csv'}:{i}"
        if not row["id"] or not row["path"]:
            scan.error(where, f"empty id or path (id '{row['id']}', path '{row['path']}')")
            continue
        folder = inside(images, row["path"])
        if folder is None:
            scan.error(where, f"path '{row['path']}' is not inside {images}; give the person folder's name")
            continue
        repeated = [f"{k} '{row[k]}' (first at line {first[k][row[k]]})" for k in first if row[k] in first[k]]
        if repeated:
            scan.error(where, f"duplicate {' and '.join(repeated)}")
            continue
        for k in first:
            first[k][row[k]] = i
        gender = GENDER_BY_NAME.get(row["gender"].lower())
        if gender is None:
            scan.error(where, f"gender '{row['gender']}' is not one of {sorted(GENDER_BY_NAME)}")
            continue
        age = _parse_age(row["age"], where, scan)
        if age is None:
            continue
        _check_folder_name(row["path"], row, where, scan)
        person = Record(path=folder, key="", person=row["id"], gender=gender, age=age,
                        age_group=bounds.group(age), race=row["race"])
        if not person.path.is_dir():
            scan.error(where, f"image folder {person.path} does not exist")
            continue
        _scan_person(person, scan, hidden)
    _check_unlisted(images, {r["path"] for r in rows}, scan, hidden)
    if hidden:
        scan.warn(images, f"ignored {len(hidden)} hidden file(s), e.g. {', '.join(str(h) for h in hidden[:3])}")
    return scan


def _scan_person(person: Record, scan: Scan, hidden: list[Path]) -> None:
    """Add one record per image in the person's folder (`person` carries the folder path and the labels)."""
    seen: dict[str, Path] = {}
    for f in sorted(person.path.iterdir()):
        if _is_hidden(f.name):
            hidden.append(f)
            continue
        stem, ext = f.stem.lower(), f.suffix.lower()
        if ext not in IMAGE_EXTS or stem not in MASK_BY_STEM or not f.is_file():
            scan.warn(f, f"unexpected file name ignored (expected one of {sorted(MASK_BY_STEM)} "
                         f"with an image extension {sorted(IMAGE_EXTS)})")
            continue
        if stem in seen:
            scan.error(f, f"two images for '{stem}': {seen[stem].name} and {f.name}; remove one")
            continue
        seen[stem] = f
        scan.records.append(replace(person, path=f, key=f"{person.path.name}/{f.name}", mask=MASK_BY_STEM[stem]))
    missing = sorted(set(MASK_BY_STEM) - set(seen))
    if missing:
        scan.warn(person.path, f"missing image(s): {missing}")


def _check_unlisted(images: Path, listed: set[str], scan: Scan, hidden: list[Path]) -> None:
    for d in sorted(images.iterdir()):
        if _is_hidden(d.name):
            hidden.append(d)
        elif not d.is_dir():
            scan.warn(d, "not a person folder; ignored")
        elif d.name not in listed:
            scan.warn(d, "folder is not listed in train.csv; ignored")


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
    ev = _locate(Path(root), "eval", "info.csv")
    scan = Scan()
    rows = read_csv(ev / "info.csv", EVAL_COLUMNS)
    images = ev / "images"
    if not images.is_dir():
        raise DataError(f"{images}: folder not found (expected eval/images/<ImageID>)")
    if not rows:
        scan.error(ev / "info.csv", "lists no images (expected one ImageID,ans row per eval image)")
    first_line: dict[str, int] = {}
    for i, row in enumerate(rows, start=2):
        image_id = row["ImageID"]
        where = f"{ev / 'info.csv'}:{i}"
        if image_id in first_line:
            scan.error(where, f"duplicate ImageID {image_id} (first at line {first_line[image_id]})")
            continue
        first_line[image_id] = i
        path = inside(images, image_id)
        if image_id and path is None:
            scan.error(where, f"ImageID '{image_id}' is not inside {images}; give the image's file name")
            continue
        if not image_id or not path.is_file():
            scan.error(where, f"image {images / image_id} does not exist")
            continue
        scan.records.append(Record(path=path, key=image_id))
    names = sorted(f.name for f in images.iterdir() if f.name not in first_line)
    hidden = [n for n in names if _is_hidden(n)]
    unlisted = [n for n in names if not _is_hidden(n)]
    if hidden:
        scan.warn(images, f"ignored {len(hidden)} hidden file(s), e.g. {hidden[:3]}")
    if unlisted:
        scan.warn(images, f"{len(unlisted)} file(s) not listed in info.csv ignored, e.g. {unlisted[:3]}")
    return scan


def read_ground_truth(path: Path) -> dict[str, int]:
    """ImageID -> class from a gt/submission CSV (ImageID, ans)."""
    rows = read_csv(Path(path), EVAL_COLUMNS)
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
    out = []
    for r in records:
        if r.key in gt:
            m, g, a = decode(gt[r.key])
            r = replace(r, mask=int(m), gender=int(g), age_group=int(a))
        out.append(r)
    return out
