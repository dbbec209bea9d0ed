"""A small, seeded demo dataset of procedural (clearly synthetic) faces in the competition layout."""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from maskclf.labels import GENDER_NAMES, MASK_BY_STEM, MASK_NAMES, AgeBounds, encode
from maskclf.faces.synthmasks import RACES, person_images

SKIN = {"White": (232, 196, 172), "Black": (118, 80, 60), "Asian": (226, 190, 152), "Indian": (178, 126, 96),
        "Others": (196, 150, 116)}
HAIR = [(30, 24, 20), (70, 45, 28), (120, 84, 50), (196, 160, 100), (140, 60, 30)]
STEMS = tuple(MASK_BY_STEM)
AGE_RANGES = ((18, 29), (30, 59), (60, 80))  # one per default age group, so all groups appear
README = """SYNTHETIC DEMO DATA - not real people.

Every face here is drawn procedurally (ellipses and lines) and every mask is drawn synthetically.
The folder uses the competition layout (train/train.csv, train/images/<id>_<gender>_<race>_<age>/,
eval/info.csv, eval/images/, plus eval/gt.csv with the true classes and eval/eval_people.csv saying
whose image each one is) so the whole pipeline can be
tried end to end in seconds. Scores on it say nothing about real photos.
Generated with seed {seed}: {n_train} train people, {n_eval} eval people, {w}x{h} px.
"""


@dataclass(frozen=True)
class Person:
    """One synthetic person: id, gender, age and race."""

    id: str
    gender: int
    age: int
    race: str

    @property
    def folder(self) -> str:
        """The person's folder name in the competition layout."""
        return f"{self.id}_{GENDER_NAMES[self.gender]}_{self.race}_{self.age}"


def _pt(p) -> tuple[int, int]:
    return int(round(p[0] * 16)), int(round(p[1] * 16))


def _ellipse(img, centre, axes, color, thickness=-1, angle=0.0, arc=(0, 360)) -> None:
    ax = (max(1, int(round(axes[0] * 16))), max(1, int(round(axes[1] * 16))))
    cv2.ellipse(img, _pt(centre), ax, angle, arc[0], arc[1], color, thickness, cv2.LINE_AA, 4)


def _line(img, a, b, color, thickness=1) -> None:
    cv2.line(img, _pt(a), _pt(b), color, thickness, cv2.LINE_AA, 4)


def _mix(a, b, t: float) -> tuple[int, int, int]:
    return tuple(int(round(x + (y - x) * t)) for x, y in zip(a, b))


def _tone(c, rng, spread: float = 0.1) -> tuple[int, int, int]:
    """A lighter or darker shade of colour c (one gain for all channels, so the hue stays put)."""
    gain = 1 + rng.normal(0, spread)
    return tuple(int(np.clip(v * gain + rng.normal(0, 4), 0, 255)) for v in c)


def _background(w: int, h: int, rng) -> np.ndarray:
    a, b = rng.integers(40, 236, 3), rng.integers(40, 236, 3)
    t = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    img = np.repeat(a + (b - a) * t, w, axis=1).astype(np.uint8)
    for _ in range(rng.integers(0, 5)):
        c = tuple(int(v) for v in rng.integers(30, 240, 3))
        x, y = rng.integers(0, w), rng.integers(0, h)
        if rng.random() < 0.5:
            x1, y1 = x + rng.integers(10, w // 2), y + rng.integers(10, h // 2)
            cv2.rectangle(img, (int(x), int(y)), (int(x1), int(y1)), c, -1)
        else:
            cv2.circle(img, (int(x), int(y)), int(rng.integers(5, w // 4)), c, -1, cv2.LINE_AA)
    return img


def _hair_colour(age: int, rng) -> tuple[int, int, int]:
    """Natural colour when young, salt-and-pepper from 30 (greyer with age), silver to white from 60."""
    base = HAIR[rng.integers(len(HAIR))]
    grey = 0.0 if age < 30 else (0.3 + 0.3 * (age - 30) / 30 if age < 60 else rng.uniform(0.85, 1.0))
    return _mix(base, _tone((205, 205, 210), rng, 0.05), grey)


def _face_geometry(w: int, h: int, rng) -> dict:
    a = w * 0.27 * (1 + rng.normal(0, 0.05))
    g = {"cx": w / 2 + rng.normal(0, 0.03 * w), "cy": h * 0.46 + rng.normal(0, 0.025 * h), "a": a,
         "b": a * rng.uniform(1.25, 1.38), "yaw": rng.normal(0, 0.04 * a)}
    g["eye_y"] = g["cy"] - 0.1 * g["b"]
    return g


def _draw_head(img, g: dict, person: Person, skin, hair, rng) -> None:
    cx, cy, a, b = g["cx"], g["cy"], g["a"], g["b"]
    female = person.gender == 1
    shirt = tuple(int(v) for v in rng.integers(20, 235, 3))
    _ellipse(img, (cx, cy + 2.25 * b), (2.1 * a, 1.2 * b), shirt)
    cv2.rectangle(img, _pt((cx - 0.42 * a, cy + 0.5 * b)), _pt((cx + 0.42 * a, cy + 1.3 * b)),
                  _mix(skin, (0, 0, 0), 0.15), -1, cv2.LINE_AA, 4)
    if female:  # long hair falls behind the head down to the shoulders
        _ellipse(img, (cx, cy + 0.25 * b), (1.3 * a, 1.35 * b * rng.uniform(0.95, 1.15)), hair)
    jaw = 0.92 if female else 1.0
    _ellipse(img, (cx - 1.0 * a, g["eye_y"] + 0.2 * b), (0.14 * a, 0.22 * b), _mix(skin, (0, 0, 0), 0.1))
    _ellipse(img, (cx + 1.0 * a, g["eye_y"] + 0.2 * b), (0.14 * a, 0.22 * b), _mix(skin, (0, 0, 0), 0.1))
    _ellipse(img, (cx, cy), (a * jaw, b), skin)
    if person.gender == 0 and person.age >= 55 and rng.random() < 0.6:  # receding hairline
        _ellipse(img, (cx, cy - 0.55 * b), (1.04 * a, 0.55 * b), hair, thickness=max(2, int(0.12 * a)), arc=(180, 230))
        _ellipse(img, (cx, cy - 0.55 * b), (1.04 * a, 0.55 * b), hair, thickness=max(2, int(0.12 * a)), arc=(310, 360))
    else:
        top = 0.5 if female else rng.uniform(0.45, 0.6)
        _ellipse(img, (cx, cy - top * b), (1.06 * a, 0.62 * b), hair, arc=(180, 360))
    if female and rng.random() < 0.5:  # fringe
        _ellipse(img, (cx + rng.normal(0, 0.2 * a), cy - 0.45 * b), (0.8 * a, 0.22 * b), hair, arc=(0, 180))


def _draw_features(img, g: dict, person: Person, skin, hair, rng) -> np.ndarray:
    cx, a, b, yaw, ey = g["cx"], g["a"], g["b"], g["yaw"], g["eye_y"]
    dark = _mix(skin, (0, 0, 0), 0.45)
    brow = hair if person.age < 60 else _mix(hair, (90, 90, 90), 0.3)
    eyes = [(cx - 0.44 * a + yaw, ey), (cx + 0.44 * a + yaw, ey)]
    iris = _tone((70, 50, 35), rng, 0.3)
    for sx, (x, y) in zip((-1, 1), eyes):
        _ellipse(img, (x, y), (0.17 * a, 0.075 * b), (240, 240, 236))
        _ellipse(img, (x, y), (0.075 * a, 0.075 * a), iris)
        _ellipse(img, (x, y), (0.035 * a, 0.035 * a), (15, 15, 15))
        _ellipse(img, (x, y), (0.18 * a, 0.085 * b), dark, thickness=1, arc=(180, 360))
        bt = max(1, int(round(a * (0.07 if person.gender == 0 else 0.04))))
        _line(img, (x - 0.2 * a, y - 0.15 * b), (x + 0.2 * a, y - 0.17 * b + sx * 0.01 * b), brow, bt)
    nose = (cx + 1.6 * yaw, g["cy"] + 0.25 * b)
    _line(img, (cx + yaw, ey + 0.05 * b), (nose[0] + 0.04 * a, nose[1]), _mix(skin, (0, 0, 0), 0.25), 1)
    _ellipse(img, (nose[0], nose[1] + 0.02 * b), (0.13 * a, 0.05 * b), _mix(skin, (0, 0, 0), 0.3), 1, arc=(0, 180))
    my = g["cy"] + 0.55 * b
    mouth = [(cx - 0.3 * a + 1.3 * yaw, my), (cx + 0.3 * a + 1.3 * yaw, my)]
    lips = _mix(skin, (190, 40, 60), 0.55 if person.gender == 1 else 0.25)
    _ellipse(img, ((mouth[0][0] + mouth[1][0]) / 2, my), (0.3 * a, 0.06 * b), lips)
    _line(img, mouth[0], mouth[1], _mix(lips, (0, 0, 0), 0.5), 1)
    return np.array([*eyes, nose, *mouth], np.float64)


def _draw_age_and_beard(img, g: dict, person: Person, skin, hair, rng) -> None:
    cx, cy, a, b, ey = g["cx"], g["cy"], g["a"], g["b"], g["eye_y"]
    line = _mix(skin, (0, 0, 0), 0.35)
    lines = 0 if person.age < 30 else (2 if person.age < 60 else 4)
    thick = max(1, int(round(a / 30)))
    for k in range(lines):  # forehead lines
        y = ey - (0.3 + 0.09 * k) * b
        _ellipse(img, (cx, y + 0.3 * a), (0.5 * a, 0.3 * a), line, thick, arc=(215, 325))
    if person.age >= 60:  # crow's feet, eye bags, nasolabial folds
        for sx in (-1, 1):
            x = cx + sx * 0.66 * a
            for dy in (-0.04, 0.0, 0.04):
                _line(img, (x, ey + dy * b), (x + sx * 0.12 * a, ey + 1.6 * dy * b), line, 1)
            _ellipse(img, (cx + sx * 0.44 * a, ey + 0.06 * b), (0.15 * a, 0.06 * b), line, 1, arc=(20, 160))
            _line(img, (cx + sx * 0.24 * a, cy + 0.3 * b), (cx + sx * 0.42 * a, cy + 0.62 * b), line, 1)
    if person.gender == 0 and rng.random() < 0.45:
        beard = _mix(hair, skin, 0.2)
        _ellipse(img, (cx + 1.4 * g["yaw"], cy + 0.46 * b), (0.3 * a, 0.05 * b), beard)
        if rng.random() < 0.6:
            _ellipse(img, (cx, cy + 0.58 * b), (0.85 * a, 0.44 * b), beard, max(2, int(0.15 * a)), arc=(10, 170))


def render_face(person: Person, size: tuple[int, int], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A procedural face (RGB uint8, size = (width, height)) and its 5 landmarks in MTCNN order."""
    w, h = size
    img = _background(w, h, rng)
    g = _face_geometry(w, h, rng)
    skin = _tone(SKIN[person.race], rng)
    hair = _hair_colour(person.age, rng)
    _draw_head(img, g, person, skin, hair, rng)
    marks = _draw_features(img, g, person, skin, hair, rng)
    _draw_age_and_beard(img, g, person, skin, hair, rng)
    rot = cv2.getRotationMatrix2D((g["cx"], g["cy"]), float(rng.normal(0, 5)), 1.0)
    img = cv2.warpAffine(img, rot, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    img = cv2.GaussianBlur(img, (0, 0), 0.6)
    return img, marks @ rot[:, :2].T + rot[:, 2]


def _people(n: int, first_id: int, rng: np.random.Generator) -> list[Person]:
    """n people cycling through gender x age group, so every (gender, group) cell appears once n >= 6."""
    out = []
    for i in range(n):
        gender, group = divmod(i % 6, 3)
        lo, hi = AGE_RANGES[group]
        age, race = int(rng.integers(lo, hi + 1)), RACES[rng.integers(len(RACES))]
        out.append(Person(f"{first_id + i:06d}", gender, age, race))
    return out


def _person_images(person: Person, size: tuple[int, int], rng: np.random.Generator) -> dict[str, bytes]:
    face, marks = render_face(person, size, rng)
    return person_images(face, marks, rng)


def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def _interleave(people: list[Person], rng: np.random.Generator) -> list[tuple[Person, str]]:
    """All (person, stem) pairs in a shuffled order with no two images of one person adjacent (n >= 2)."""
    order: list[tuple[Person, str]] = []
    stems = {p.id: list(rng.permutation(STEMS)) for p in people}
    for _ in STEMS:
        batch = [people[i] for i in rng.permutation(len(people))]
        if order and len(batch) > 1 and batch[0].id == order[-1][0].id:
            batch[0], batch[-1] = batch[-1], batch[0]
        order += [(p, str(stems[p.id].pop())) for p in batch]
    return order


def make_demo_dataset(out_dir: Path, n_train: int = 60, n_eval: int = 20, seed: int = 0,
                      image_size: tuple[int, int] = (192, 256)) -> Path:
    """Write a seeded synthetic dataset (competition layout, image_size = (width, height)) to out_dir."""
    out_dir = Path(out_dir)
    if n_train < 1 or n_eval < 1:
        raise ValueError(f"need at least 1 train and 1 eval person, got n_train={n_train}, n_eval={n_eval}")
    if min(image_size) < 64:
        raise ValueError(f"image_size (width, height) must be at least 64 px each, got {tuple(image_size)}")
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir} is not empty; choose a new or empty folder for the demo dataset")
    rng = np.random.default_rng(seed)
    train, evals = _people(n_train, 1, rng), _people(n_eval, n_train + 1, rng)
    (out_dir / "train" / "images").mkdir(parents=True)
    (out_dir / "eval" / "images").mkdir(parents=True)
    size = (int(image_size[0]), int(image_size[1]))
    for i, p in enumerate(train):
        folder = out_dir / "train" / "images" / p.folder
        folder.mkdir()
        for stem, data in _person_images(p, size, np.random.default_rng([seed, i])).items():
            (folder / f"{stem}.jpg").write_bytes(data)
    _write_csv(out_dir / "train" / "train.csv", ["id", "gender", "race", "age", "path"],
               [[p.id, GENDER_NAMES[p.gender], p.race, p.age, p.folder] for p in train])
    _write_eval(out_dir / "eval", evals, seed, size, n_train)
    (out_dir / "README.txt").write_text(README.format(seed=seed, n_train=n_train, n_eval=n_eval, w=size[0], h=size[1]))
    return out_dir


def _write_eval(ev: Path, people: list[Person], seed: int, size: tuple[int, int], first_index: int) -> None:
    bounds = AgeBounds()
    image_ids = {}
    for i, p in enumerate(people):
        for stem, data in _person_images(p, size, np.random.default_rng([seed, first_index + i])).items():
            image_id = hashlib.sha1(f"demo-{seed}-{p.id}-{stem}".encode()).hexdigest() + ".jpg"
            (ev / "images" / image_id).write_bytes(data)
            image_ids[p.id, stem] = image_id
    order = _interleave(people, np.random.default_rng([seed, 1 << 20]))
    rows = [(image_ids[p.id, s], p, s, int(encode(MASK_BY_STEM[s], p.gender, bounds.group(p.age)))) for p, s in order]
    _write_csv(ev / "info.csv", ["ImageID", "ans"], [[r[0], 0] for r in rows])
    _write_csv(ev / "gt.csv", ["ImageID", "ans"], [[r[0], r[3]] for r in rows])
    _write_csv(ev / "eval_people.csv", ["ImageID", "id", "gender", "race", "age", "mask", "image"],
               [[r[0], r[1].id, GENDER_NAMES[r[1].gender], r[1].race, r[1].age,
                 MASK_NAMES[MASK_BY_STEM[r[2]]], r[2]] for r in rows])
