import csv
from pathlib import Path

import cv2
import numpy as np
import pytest

from maskclf.data.scan import scan_train
from maskclf.faces.detect import Face
from maskclf.faces.synthmasks import DETECT_PAD, landmark_problem, parse_utkface_name, synth_masks

# Landmarks as fractions of a face photo's width/height (left eye, right eye, nose, mouth corners).
FRACTIONS = np.array([[0.35, 0.45], [0.65, 0.45], [0.5, 0.62], [0.39, 0.75], [0.61, 0.75]])
GOOD = {"65_0_0_20170101000000001.jpg.chip.jpg": 65, "25_1_2_20170101000000002.jpg.chip.jpg": 25,
        "40_1_4_20170101000000003.jpg.chip.jpg": 40}


class StubDetector:
    """Finds a face with fixed landmarks in any photo except (almost) black ones."""

    def detect(self, img_rgb):
        if img_rgb.mean() < 10:
            return []
        h, w = img_rgb.shape[0] - 2 * DETECT_PAD, img_rgb.shape[1] - 2 * DETECT_PAD
        marks = FRACTIONS * [w, h] + DETECT_PAD
        return [Face((DETECT_PAD, DETECT_PAD, DETECT_PAD + w, DETECT_PAD + h), 0.99, marks)]


def _photo(path: Path, value: int, seed: int) -> None:
    """A smooth, strongly coloured stand-in photo (so any drawn mask shows up against it)."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(-15, 15, 200)[None, :, None]
    img = np.clip(np.array([value, value // 4, value], float) + ramp + rng.normal(0, 2, (200, 200, 3)), 0, 255)
    cv2.imwrite(str(path), img.astype(np.uint8))


@pytest.fixture
def faces(tmp_path) -> Path:
    d = tmp_path / "faces"
    d.mkdir()
    for i, name in enumerate(GOOD):
        _photo(d / name, 150, i)
    _photo(d / "holiday_photo.jpg", 150, 9)  # not a UTKFace name
    _photo(d / "70_0_1_20170101000000004.jpg.chip.jpg", 2, 8)  # black: no face found
    (d / "80_1_3_20170101000000005.jpg.chip.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    return d


def _train_rows(out: Path) -> list[dict[str, str]]:
    with (out / "train" / "train.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_writes_people_in_the_competition_layout_and_reports_skips(faces, tmp_path):
    out = tmp_path / "out"
    stats = synth_masks(faces, out, StubDetector(), progress=False)
    assert (stats.considered, stats.written, stats.existing, stats.no_landmarks) == (6, 3, 0, 1)
    reasons = dict(stats.skipped)
    assert "name is not age_gender_race" in reasons["holiday_photo.jpg"]
    assert "unreadable image" in reasons["80_1_3_20170101000000005.jpg.chip.jpg"]
    assert reasons["70_0_1_20170101000000004.jpg.chip.jpg"] == "no face landmarks found"
    assert stats.landmark_rate == pytest.approx(0.75)
    scan = scan_train(out)
    assert scan.problems == []
    assert len(scan.records) == 21
    rows = _train_rows(out)
    assert sorted(int(r["age"]) for r in rows) == sorted(GOOD.values())
    by_age = {int(r["age"]): r for r in rows}
    assert (by_age[65]["gender"], by_age[65]["race"]) == ("male", "White")
    assert (by_age[25]["gender"], by_age[25]["race"]) == ("female", "Asian")
    assert (by_age[40]["gender"], by_age[40]["race"]) == ("female", "Others")
    assert all(r["id"].startswith("x") and r["path"] == f"{r['id']}_{r['gender']}_{r['race']}_{r['age']}" for r in rows)
    with (out / "train" / "sources.csv").open(newline="") as fh:
        assert {r["source"] for r in csv.DictReader(fh)} == set(GOOD)


def test_masks_are_drawn_where_the_landmarks_are(faces, tmp_path):
    synth_masks(faces, tmp_path / "out", StubDetector(), progress=False)
    folder = next(p for p in (tmp_path / "out" / "train" / "images").iterdir() if p.name.endswith("_65"))
    normal = cv2.imread(str(folder / "normal.jpg")).astype(int)
    for stem in ("mask1", "mask2", "mask3", "mask4", "mask5", "incorrect_mask"):
        diff = np.abs(cv2.imread(str(folder / f"{stem}.jpg")).astype(int) - normal).max(-1)
        chin, eyes = diff[165:180, 80:120].mean(), diff[80:100, 60:140].mean()
        assert chin > 40 and eyes < 20, (stem, chin, eyes)
        nose = diff[116:126, 92:108].mean()
        assert (nose > 40) == stem.startswith("mask"), (stem, nose)


def test_incremental_runs_skip_people_already_written(faces, tmp_path):
    out = tmp_path / "out"
    first = synth_masks(faces, out, StubDetector(), limit=2, progress=False)
    assert (first.considered, first.written) == (2, 2)
    second = synth_masks(faces, out, StubDetector(), progress=False)
    assert (second.written, second.existing) == (1, 2)
    third = synth_masks(faces, out, StubDetector(), progress=False)
    assert (third.written, third.existing) == (0, 3)
    rows = _train_rows(out)
    assert len(rows) == len({r["id"] for r in rows}) == 3
    assert scan_train(out).problems == []
    # Resuming gives the same images as one uninterrupted run.
    synth_masks(faces, tmp_path / "once", StubDetector(), progress=False)
    for folder in (out / "train" / "images").iterdir():
        for img in folder.iterdir():
            assert img.read_bytes() == (tmp_path / "once" / "train" / "images" / folder.name / img.name).read_bytes()


def test_parse_utkface_name():
    assert parse_utkface_name("61_1_3_20170109141000175.jpg.chip.jpg") == (61, 1, "Indian")
    assert parse_utkface_name("39_1_20170116174525125.jpg.chip.jpg") is None  # race missing
    assert parse_utkface_name("30_2_0_20170116174525125.jpg") is None
    assert parse_utkface_name("0_0_0_20170116174525125.jpg") is None


def test_landmark_problem_flags_tiny_and_profile_faces():
    good = FRACTIONS * 200
    assert landmark_problem(good, (200, 200, 3)) is None
    assert "too small" in landmark_problem(good * 0.1, (200, 200, 3))
    profile = good.copy()
    profile[2, 0] += 0.8 * 60
    assert "profile" in landmark_problem(profile, (200, 200, 3))


def test_real_detector_finds_landmarks_on_elderly_faces(shared_data, tmp_path):
    pytest.importorskip("facenet_pytorch")
    from maskclf.faces.detect import build_detector

    src = sorted((shared_data / "external-elderly").glob("6*_*.jpg"))[:3]
    faces = tmp_path / "faces"
    faces.mkdir()
    for p in src:
        (faces / p.name).write_bytes(p.read_bytes())
    stats = synth_masks(faces, tmp_path / "out", build_detector("mtcnn"), progress=False)
    assert stats.written == 3, stats.skipped
    assert scan_train(tmp_path / "out").problems == []
