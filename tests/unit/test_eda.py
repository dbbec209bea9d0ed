import shutil

import numpy as np
import pytest
from PIL import Image

from maskclf.config import load_config
from maskclf.data.scan import scan_train
from maskclf.faces.cache import FaceCache, cache_dir_for
from maskclf.toolkit.eda import build_eda

FIGURES = {"class_counts", "mask_counts", "gender_counts", "age_group_counts", "gender_age_people", "age_histogram",
           "race_counts", "samples"}
FACELESS = "train/images/000008_male_Black_26/normal.jpg"


@pytest.fixture(scope="module")
def report(tiny_data, tmp_path_factory):
    """EDA of a copy of tiny with a stray file, a faceless photo in a prepared cache and a one-person gender fix."""
    root = tmp_path_factory.mktemp("eda") / "tiny"
    shutil.copytree(tiny_data, root)
    (root / "train/images/000060_female_Black_26/notes.txt").write_text("not a photo")
    Image.new("RGB", (200, 200), (128, 128, 128)).save(root / FACELESS)
    fixes = root.parent / "fixes.yaml"
    fixes.write_text("gender:\n  '000008': female\n")
    cfg = load_config([], [f"data.label_fixes={fixes}", "prepare.size=48"])
    cache_root = root.parent / "cache"
    person = [r for r in scan_train(root).records if r.person == "000008"]
    FaceCache(cache_dir_for(root, cfg.prepare, cache_root)).update(person, root, cfg.prepare, progress=False)
    result = build_eda(root, cfg.data, cfg.prepare, root.parent / "out" / "eda.html", cache_root)
    return result, result.html.read_text()


def test_counts_follow_the_csv_after_label_fixes(report):
    result, page = report
    c = result.counts
    assert c["people"] == 24 and sum(c["images_per_class"]) == 168
    # tiny has 4 people per gender x age cell; the fix moves person 000008 (male, 26) to female <30
    assert c["people_per_cell"] == [[3, 4, 4], [5, 4, 4]]
    assert c["images_per_class"][0] == 15 and c["images_per_class"][3] == 25
    assert "<td>000008</td><td>gender</td><td>female</td>" in page
    assert "gender: 1" in page


def test_every_figure_is_written_beside_the_page_and_inlined(report):
    result, page = report
    assert {p.stem for p in result.figures} == FIGURES
    for path in result.figures:
        assert path.parent == result.html.parent / "eda_figures"
        with Image.open(path) as im:
            assert im.width > 200 and im.height > 100
            assert np.asarray(im.convert("L")).std() > 5  # something is drawn
    assert page.count("src='data:image/png;base64,") == len(FIGURES)
    assert "http://" not in page and "https://" not in page  # nothing fetched from a CDN


def test_face_cache_statistics_and_the_fallback_gallery(report):
    _, page = report
    assert "fallback box (no face found)" in page
    assert "000008_male_Black_26/normal.jpg" in page  # the faceless photo is in the gallery
    assert "data:image/jpeg;base64," in page


def test_problems_found_by_the_scan_are_listed(report):
    _, page = report
    assert "notes.txt" in page and "unexpected file name ignored" in page


def test_a_folder_without_a_cache_says_how_to_build_one(tiny_data, tmp_path):
    cfg = load_config([], ["prepare.size=48"])
    result = build_eda(tiny_data, cfg.data, cfg.prepare, tmp_path / "r.html", tmp_path / "no-cache")
    page = result.html.read_text()
    assert "no face-crop cache for these settings" in page and "maskclf prepare" in page
    assert (tmp_path / "r_figures" / "samples.png").is_file()
