"""Turn unmasked face photos (UTKFace-style names) into extra training people with drawn masks."""

from __future__ import annotations

import csv
import hashlib
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from maskclf.layout import IMAGE_EXTS, TRAIN_COLUMNS
from maskclf.faces.detect import Detector, find_face, load_rgb
from maskclf.labels import GENDER_NAMES, MASK_BY_STEM
from maskclf.faces.maskdraw import draw_mask, random_style

RACES = ("White", "Black", "Asian", "Indian", "Others")
UTKFACE_NAME = re.compile(r"^(\d+)_([01])_([0-4])_\d+")  # age_gender_race_date...
DETECT_PAD = 0.3  # edge-replicate padding (of the longest side): UTKFace crops are too tight for detectors otherwise
MIN_CONFIDENCE = 0.9
ID_PREFIX = "x"  # competition ids are digits only, so these can never clash with them


@dataclass
class SynthStats:
    """What a synth_masks run did; `skipped` holds (file name, reason) pairs."""

    considered: int = 0
    written: int = 0
    existing: int = 0  # written by an earlier run and left alone
    no_landmarks: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def landmark_rate(self) -> float:
        """Fraction of readable, well-named faces (new this run) where landmarks were found."""
        tried = self.written + self.no_landmarks
        return self.written / tried if tried else 0.0

    def summary(self) -> str:
        """One line describing the synthetic set written."""
        per_face = self.seconds / max(1, self.written + self.no_landmarks)
        return (f"{self.written} people written, {self.existing} already there, {len(self.skipped)} skipped "
                f"(landmarks found for {self.landmark_rate:.1%}; {per_face * 1000:.0f} ms per face)")


def parse_utkface_name(name: str) -> tuple[int, int, str] | None:
    """(age, gender 0/1, race name) from 'age_gender_race_date*.jpg', or None if the name does not fit."""
    m = UTKFACE_NAME.match(name)
    if m is None or not 0 < int(m.group(1)) < 130:
        return None
    return int(m.group(1)), int(m.group(2)), RACES[int(m.group(3))]


def landmark_problem(marks: np.ndarray, shape: tuple[int, ...]) -> str | None:
    """Why 5 landmarks are implausible for drawing a mask (tiny face, profile, upside down), or None."""
    eye = marks[1] - marks[0]
    d = float(np.hypot(*eye))
    if d < 0.08 * min(shape[:2]):
        return f"eye distance {d:.0f} px is too small for a {shape[1]}x{shape[0]} face photo"
    u = eye / d
    v = np.array([-u[1], u[0]])
    rel = (marks[2:] - marks[:2].mean(0)) / d
    nose_x, nose_y = rel[0] @ u, rel[0] @ v
    mouth_y = (rel[1:] @ v).mean()
    if not (0.2 < nose_y < mouth_y - 0.1) or abs(nose_x) > 0.6:
        return f"landmarks look like a profile or a tilted face (nose at {nose_x:.2f},{nose_y:.2f} eye units)"
    return None


def person_images(face: np.ndarray, marks: np.ndarray, rng: np.random.Generator) -> dict[str, bytes]:
    """The 7 competition images of one face as JPEG bytes: 5 worn masks, 1 incorrect (80% nose, 20% chin), 1 bare."""
    images = {f"mask{k}": draw_mask(face, marks, "wear", random_style(rng), rng) for k in range(1, 6)}
    placement = "nose" if rng.random() < 0.8 else "chin"
    images["incorrect_mask"] = draw_mask(face, marks, placement, random_style(rng), rng)
    images["normal"] = face
    out = {}
    for stem in MASK_BY_STEM:
        gain, shift = rng.uniform(0.95, 1.05), rng.uniform(-6, 6)  # small photometric change per image
        img = np.clip(images[stem].astype(np.float32) * gain + shift, 0, 255).astype(np.uint8)
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
        if not ok:
            raise RuntimeError(f"JPEG encoding failed for a {img.shape} image")
        out[stem] = buf.tobytes()
    return out


def _open_ids(csv_path: Path, header: tuple[str, ...]) -> set[str]:
    """Ids already listed in a CSV whose first column is the id; creates the file with `header` if missing."""
    if not csv_path.exists():
        with csv_path.open("w", newline="", encoding="utf-8") as fh:
            csv.writer(fh, lineterminator="\n").writerow(header)
        return set()
    with csv_path.open(newline="", encoding="utf-8") as fh:
        return {row[0] for row in list(csv.reader(fh))[1:] if row}


def _append(csv_path: Path, row: list) -> None:
    with csv_path.open("a", newline="", encoding="utf-8") as fh:
        csv.writer(fh, lineterminator="\n").writerow(row)


def _write_person(images_dir: Path, folder: str, images: dict[str, bytes]) -> None:
    """Write a person's images to a hidden scratch folder, then rename it, so a killed run leaves no half person."""
    final, scratch = images_dir / folder, images_dir / f".partial-{folder}"
    for stale in (final, scratch):
        if stale.exists():
            shutil.rmtree(stale)
    scratch.mkdir()
    for stem, data in images.items():
        (scratch / f"{stem}.jpg").write_bytes(data)
    scratch.rename(final)


def synth_masks(faces_dir: Path, out_dir: Path, detector: Detector, seed: int = 0, limit: int | None = None,
                progress: bool = True) -> SynthStats:
    """Draw masks on UTKFace-named photos in faces_dir and add them as people to out_dir/train (resumable)."""
    faces_dir, train = Path(faces_dir), Path(out_dir) / "train"
    if not faces_dir.is_dir():
        raise FileNotFoundError(f"{faces_dir}: folder of face photos not found")
    files = sorted(p for p in faces_dir.iterdir()
                   if p.is_file() and p.suffix.lower() in IMAGE_EXTS and not p.name.startswith("."))
    files = files[:limit] if limit is not None else files
    (train / "images").mkdir(parents=True, exist_ok=True)
    done = _open_ids(train / "train.csv", TRAIN_COLUMNS)
    _open_ids(train / "sources.csv", ("id", "source"))
    stats, start = SynthStats(), time.perf_counter()
    for path in tqdm(files, desc="synth-masks", unit="face", disable=not progress):
        stats.considered += 1
        _one_face(path, train, detector, seed, done, stats)
    stats.seconds = time.perf_counter() - start
    return stats


def _one_face(path: Path, train: Path, detector: Detector, seed: int, done: set[str], stats: SynthStats) -> None:
    parsed = parse_utkface_name(path.name)
    if parsed is None:
        stats.skipped.append((path.name, "name is not age_gender_race_date*.jpg (gender 0-1, race 0-4, age 1-129)"))
        return
    age, gender, race = parsed
    digest = hashlib.sha1(path.name.encode()).hexdigest()
    pid = ID_PREFIX + digest[:12]
    if pid in done:
        stats.existing += 1
        return
    try:
        img = load_rgb(path)
    except Exception as err:  # PIL raises several types for broken files
        stats.skipped.append((path.name, f"unreadable image ({type(err).__name__}: {err})"))
        return
    face = find_face(detector, img, DETECT_PAD, MIN_CONFIDENCE)
    problem = "no face landmarks found" if face is None or face.landmarks is None else None
    problem = problem or landmark_problem(np.asarray(face.landmarks, np.float64), img.shape)
    if problem:
        stats.no_landmarks += 1
        stats.skipped.append((path.name, problem))
        return
    folder = f"{pid}_{GENDER_NAMES[gender]}_{race}_{age}"
    rng = np.random.default_rng([seed, int(digest[:12], 16)])
    _write_person(train / "images", folder, person_images(img, np.asarray(face.landmarks, np.float64), rng))
    _append(train / "sources.csv", [pid, path.name])
    _append(train / "train.csv", [pid, GENDER_NAMES[gender], race, age, folder])
    done.add(pid)
    stats.written += 1
