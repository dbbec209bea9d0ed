import csv
from pathlib import Path

import numpy as np
import pytest

from maskclf.data.scan import read_ground_truth, scan_eval, scan_train
from maskclf.labels import GENDER_BY_NAME, MASK_BY_STEM, AgeBounds, encode
from maskclf.faces.demo_faces import Person, make_demo_dataset, render_face


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    return make_demo_dataset(tmp_path_factory.mktemp("demo") / "data")


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_default_demo_scans_cleanly_with_every_class(demo):
    train = scan_train(demo)
    assert train.problems == []
    assert len(train.records) == 60 * 7
    assert {r.label for r in train.records} == set(range(18))
    ev = scan_eval(demo)
    assert ev.problems == []
    assert len(ev.records) == 20 * 7
    assert all(len(r.key) == len("0" * 40 + ".jpg") for r in ev.records)
    assert "SYNTHETIC" in (demo / "README.txt").read_text()


def test_eval_ground_truth_matches_the_people(demo):
    gt = read_ground_truth(demo / "eval" / "gt.csv")
    people = _rows(demo / "eval" / "eval_people.csv")
    bounds = AgeBounds()
    assert len(gt) == len(people) == 140
    for p in people:
        expected = encode(MASK_BY_STEM[p["image"]], GENDER_BY_NAME[p["gender"]], bounds.group(int(p["age"])))
        assert gt[p["ImageID"]] == expected
    assert set(gt.values()) == set(range(18))
    info = _rows(demo / "eval" / "info.csv")
    assert [r["ImageID"] for r in info] == [p["ImageID"] for p in people]
    assert {r["ans"] for r in info} == {"0"}
    ids = [p["id"] for p in people]
    assert all(a != b for a, b in zip(ids, ids[1:]))  # shuffled: no two images of one person adjacent
    train_ids = {r["id"] for r in _rows(demo / "train" / "train.csv")}
    assert not train_ids & set(ids)


def test_same_seed_gives_identical_bytes(tmp_path):
    def files(root):
        return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}

    a = files(make_demo_dataset(tmp_path / "a", n_train=3, n_eval=2, seed=5, image_size=(96, 128)))
    b = files(make_demo_dataset(tmp_path / "b", n_train=3, n_eval=2, seed=5, image_size=(96, 128)))
    c = files(make_demo_dataset(tmp_path / "c", n_train=3, n_eval=2, seed=6, image_size=(96, 128)))
    assert a == b
    assert a.keys() != c.keys() or a != c


def test_refuses_a_non_empty_folder_and_bad_sizes(tmp_path):
    (tmp_path / "x.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not empty"):
        make_demo_dataset(tmp_path)
    with pytest.raises(ValueError, match="n_train"):
        make_demo_dataset(tmp_path / "new", n_train=0)


def test_face_landmarks_sit_on_the_drawn_face():
    img, marks = render_face(Person("000001", 1, 70, "Asian"), (192, 256), np.random.default_rng(0))
    assert img.shape == (256, 192, 3) and img.dtype == np.uint8
    eyes, nose, mouth = marks[:2], marks[2], marks[3:]
    assert eyes[0, 0] < eyes[1, 0]  # image-left eye first, as MTCNN reports
    assert eyes[:, 1].max() < nose[1] < mouth[:, 1].min()
    assert 0.18 < (eyes[1, 0] - eyes[0, 0]) / 192 < 0.32
    for x, y in eyes:  # the pupils are drawn exactly at the eye landmarks, after the head tilt
        assert img[int(round(y)), int(round(x))].max() < 90
