"""`detect` on real photos: every face found with the checkpoint's detector, any common format, JSON lines + CSV."""

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import maskclf
from maskclf.cli import main
from maskclf.faces.detect import load_rgb
from maskclf.inference.detect import CSV_COLUMNS, detect, load_pipeline
from maskclf.labels import class_names


@pytest.fixture(scope="module")
def pipe(face_model):
    return load_pipeline(face_model, "cpu")


def _one_face(result):
    assert len(result.images) == 1
    return result.images[0]["faces"]


def test_two_faces_side_by_side_are_both_found_and_labelled(pipe, photos):
    image = detect(pipe, [photos["two"]], progress=False).images[0]
    faces = image["faces"]
    assert len(faces) == 2
    centres = sorted((f["box"][0] + f["box"][2]) / 2 for f in faces)
    assert centres[0] < photos["left_width"] < centres[1]  # one face in each half
    for f in faces:
        x0, y0, x1, y1 = f["box"]
        assert 0 <= x0 < x1 <= image["width"] and 0 <= y0 < y1 <= image["height"]
        assert 0.5 <= f["score"] <= 1.0
        assert f["label"] == class_names()[f["class"]] == f"{f['mask']['label']}/{f['gender']['label']}/{f['age']['label']}"
        assert 0 < f["prob"] <= f["mask"]["prob"] <= 1


def test_no_face_is_an_empty_list_and_limits_apply(pipe, photos):
    assert _one_face(detect(pipe, [photos["none"]], progress=False)) == []
    assert len(_one_face(detect(pipe, [photos["two"]], max_faces=1, progress=False))) == 1
    assert _one_face(detect(pipe, [photos["two"]], min_face=10_000, progress=False)) == []


def test_exif_rotation_and_other_formats_give_the_same_face(pipe, photos, tmp_path):
    img = load_rgb(photos["one"])
    (ref,) = _one_face(detect(pipe, [photos["one"]], progress=False))
    im = Image.fromarray(img)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned; viewers rotate it 90 degrees clockwise back upright
    im.transpose(Image.Transpose.ROTATE_90).save(tmp_path / "phone.jpg", quality=95, exif=exif)
    rgba = im.convert("RGBA")
    rgba.putalpha(255)
    rgba.save(tmp_path / "alpha.png")
    im.save(tmp_path / "photo.webp", quality=95)
    im.save(tmp_path / "photo.bmp")
    im.convert("CMYK").save(tmp_path / "print.jpg", quality=95)
    grey16 = np.asarray(im.convert("L"), dtype=np.uint16) * 257
    Image.fromarray(grey16).save(tmp_path / "deep.png")
    result = detect(pipe, [tmp_path], progress=False)
    assert sorted(r["path"].rsplit("/", 1)[1] for r in result.images) == \
        ["alpha.png", "deep.png", "phone.jpg", "photo.bmp", "photo.webp", "print.jpg"]
    for r in result.images:
        assert (r["height"], r["width"]) == img.shape[:2], r["path"]
        (face,) = r["faces"]
        assert np.abs(np.subtract(face["box"], ref["box"])).max() <= 6, r["path"]


def test_unreadable_files_are_skipped_and_outputs_written(pipe, photos, tmp_path, capsys):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "notes.jpg").write_text("not an image")
    (tmp_path / "in" / "two.jpg").write_bytes(photos["two"].read_bytes())
    (tmp_path / "in" / "none.jpg").write_bytes(photos["none"].read_bytes())
    out = tmp_path / "out" / "faces.jsonl"
    result = detect(pipe, [tmp_path / "in"], out, draw=True, progress=False)
    assert list(result.skipped) == [str(tmp_path / "in" / "notes.jpg")]
    assert "cannot read image" in capsys.readouterr().err
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert lines == result.images and [len(r["faces"]) for r in lines] == [0, 2]
    with (tmp_path / "out" / "faces.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == CSV_COLUMNS and [r["face"] for r in rows] == ["", "0", "1"]
    assert [float(rows[1][k]) for k in ("x0", "y0", "x1", "y1")] == lines[1]["faces"][0]["box"]
    drawn = load_rgb(tmp_path / "out" / "faces_drawn" / "two.jpg")
    assert drawn.shape == load_rgb(photos["two"]).shape
    assert np.abs(drawn.astype(int) - load_rgb(photos["two"])).mean() > 1  # boxes and captions were drawn


def test_cli_detect_and_the_lazy_top_level_function(face_model, photos, tmp_path, capsys):
    assert maskclf.detect is detect
    rc = main(["detect", str(face_model), str(photos["two"]), str(tmp_path / "missing.jpg"), "-o",
               str(tmp_path / "d.jsonl"), "--quiet"])
    assert rc == 0 and "1 images, 2 faces, 1 skipped" in capsys.readouterr().out
    code = "import sys, maskclf; assert 'torch' not in sys.modules; maskclf.detect; assert 'torch' in sys.modules"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
