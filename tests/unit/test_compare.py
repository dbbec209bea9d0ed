import csv

import pytest

import maskclf.toolkit.compare as compare
from maskclf.toolkit.compare import compare_submissions, format_comparison
from maskclf.layout import DataError


def _write(path, rows):
    path.write_text("ImageID,ans\n" + "".join(f"{i},{c}\n" for i, c in rows))
    return path


@pytest.fixture
def subs(tiny_data, tmp_path):
    """A = the truth; B changes image 0's mask, 1's gender, 2's age, 3's mask and age."""
    gt_csv = tiny_data / "eval" / "gt.csv"
    with gt_csv.open() as fh:
        truth = [(r["ImageID"], int(r["ans"])) for r in csv.DictReader(fh)]
    b = list(truth)
    changes = {0: lambda c: (c + 6) % 18, 1: lambda c: (c + 3) % 18 if c % 6 < 3 else c - 3,
               2: lambda c: c - c % 3 + (c % 3 + 1) % 3, 3: lambda c: (c + 6) % 18 - c % 3 + (c % 3 + 1) % 3}
    for k, change in changes.items():
        b[k] = (truth[k][0], change(truth[k][1]))
    a_csv = _write(tmp_path / "a.csv", truth)
    b_csv = _write(tmp_path / "b.csv", reversed(b))  # row order must not matter
    return a_csv, b_csv, gt_csv, truth, b


def test_counts_by_attribute_and_pair(subs):
    a_csv, b_csv, _, truth, b = subs
    out = compare_submissions(a_csv, b_csv)
    assert out["n_images"] == 56 and out["n_disagree"] == 4
    assert {h: c["disagree"] for h, c in out["by_attribute"].items()} == {"mask": 2, "gender": 1, "age": 2}
    assert sorted((p["a"], p["b"], p["count"]) for p in out["pairs"]) == sorted(
        (truth[k][1], b[k][1], 1) for k in range(4))
    assert [it["image_id"] for it in out["items"]] == [truth[k][0] for k in range(4)]
    assert out["html"] is None and "scores" not in out


def test_ground_truth_says_who_was_right(subs):
    a_csv, b_csv, gt_csv, *_ = subs
    out = compare_submissions(a_csv, b_csv, gt_csv)
    assert (out["a_right"], out["b_right"]) == (4, 0)
    assert out["by_attribute"]["age"] == {"disagree": 2, "a_right": 2, "b_right": 0}
    assert out["scores"]["a"]["accuracy"] == 1.0
    assert out["scores"]["b"]["accuracy"] == pytest.approx(52 / 56)
    text = format_comparison(out)
    assert "disagree on 4 of 56 images" in text and "A was right 4, B was right 0, neither 0" in text


def test_html_gallery_embeds_one_thumbnail_per_disagreement(subs, tiny_data, tmp_path):
    a_csv, b_csv, gt_csv, truth, _ = subs
    out = compare_submissions(a_csv, b_csv, gt_csv, images_dir=tiny_data / "eval" / "images")
    page = (tmp_path / "a_vs_b.html").read_text()
    assert out["html"] == str(tmp_path / "a_vs_b.html") and out["missing_images"] == []
    assert page.count("<figure") == 4 and page.count("data:image/jpeg;base64,") == 4
    assert page.count("data-attrs='mask age'") == 1 and page.count("data-attrs='gender'") == 1
    assert "Showing all 4 disagreements" in page and truth[0][0][:12] in page


def test_gallery_is_capped(subs, tiny_data, tmp_path, monkeypatch):
    a_csv, b_csv, *_ = subs
    monkeypatch.setattr(compare, "MAX_THUMBNAILS", 2)
    out = compare_submissions(a_csv, b_csv, images_dir=tiny_data / "eval" / "images", out_html=tmp_path / "g.html")
    page = (tmp_path / "g.html").read_text()
    assert page.count("<figure") == 2 and "first 2 of 4 disagreements" in page
    assert len(out["items"]) == 4


def test_mismatched_image_ids_raise(subs, tmp_path):
    a_csv, _, gt_csv, truth, _ = subs
    short = _write(tmp_path / "short.csv", truth[:50])
    with pytest.raises(DataError, match=r"6 ImageID\(s\) of .*a.csv are missing from .*short.csv"):
        compare_submissions(a_csv, short)
    with pytest.raises(DataError, match=r"6 ImageID\(s\) in .*gt.csv are not in .*short.csv"):
        compare_submissions(short, short, gt_csv)


def test_html_without_images_dir_is_an_error(subs, tmp_path):
    a_csv, b_csv, *_ = subs
    with pytest.raises(ValueError, match="needs images_dir"):
        compare_submissions(a_csv, b_csv, out_html=tmp_path / "x.html")
    with pytest.raises(DataError, match="not found"):
        compare_submissions(a_csv, b_csv, images_dir=tmp_path / "nope")


def test_gallery_never_embeds_files_outside_images_and_survives_unreadable_ones(subs, tiny_data, tmp_path):
    a_csv, b_csv, gt_csv, truth, b = subs
    images = tmp_path / "images"
    images.mkdir()
    for image_id, _ in truth:
        (images / image_id).write_bytes((tiny_data / "eval" / "images" / image_id).read_bytes())
    (images / truth[0][0]).write_bytes(b"not an image")  # unreadable
    secret = tmp_path / "secret.jpg"
    secret.write_bytes((tiny_data / "eval" / "images" / truth[1][0]).read_bytes())
    hostile = [("../secret.jpg", 0), (str(secret), 0)]
    a_csv = _write(tmp_path / "a.csv", truth + hostile)
    b_csv = _write(tmp_path / "b.csv", b + [(i, 1) for i, _ in hostile])
    out = compare_submissions(a_csv, b_csv, images_dir=images)
    page = (tmp_path / "a_vs_b.html").read_text()
    assert page.count("<figure") == 6 and page.count("data:image/jpeg;base64,") == 3
    assert page.count("outside the images folder") == 2 and page.count("unreadable image") == 1
    assert sorted(out["outside_images"]) == sorted(i for i, _ in hostile)
    assert out["unreadable_images"] == [truth[0][0]]
    assert "2 ImageID(s) outside" in format_comparison(out)
