"""`maskclf train` ends with its report; `eda`, `report` and `explain` from the command line; both pages in Chromium."""

import contextlib
import io
from pathlib import Path

import pytest
from PIL import Image

from maskclf.cli import main

PHOTOS = ["train/images/000008_male_Black_26/mask1.jpg", "train/images/000060_female_Black_26/normal.jpg"]



def run(capsys, *argv) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(scope="module")
def trained(tiny_args, tiny_data, tmp_path_factory):
    """A finished tiny run and what `maskclf train` printed."""
    out = tmp_path_factory.mktemp("runs")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        rc = main(["train", str(tiny_data), "--quiet", *tiny_args(out, "train.epochs=1", "run.report=true")])
    assert rc == 0
    return out / "exp", printed.getvalue()


def test_train_ends_by_printing_the_report_it_built(trained):
    run_dir, printed = trained
    assert printed.splitlines()[-1] == f"  report {run_dir / 'report.html'}", printed
    assert (run_dir / "report.html").is_file() and (run_dir / "report_figures" / "gradcam.png").is_file()


def test_run_report_false_turns_the_report_off(tiny_args, capsys, tiny_data, tmp_path):
    rc, out, err = run(capsys, "train", tiny_data, "--quiet", *tiny_args(tmp_path, "train.epochs=1", "run.report=false"))
    assert rc == 0, err
    assert not out.splitlines()[-1].startswith("  report") and not (tmp_path / "exp" / "report.html").exists()
    assert (tmp_path / "exp" / "val_probs.csv").is_file()


def test_explain_writes_one_overlay_per_photo_and_skips_broken_ones(capsys, trained, tiny_data, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    photos = [tiny_data / p for p in PHOTOS]
    rc, out, err = run(capsys, "explain", trained[0] / "best.pt", *photos, broken, "-o", tmp_path / "x")
    assert rc == 0, err
    written = [Path(line) for line in out.splitlines()]
    assert written == [tmp_path / "x" / "mask1.gradcam.png", tmp_path / "x" / "normal.gradcam.png"]
    for path in written:
        with Image.open(path) as im:
            assert im.width > 3 * im.height  # the crop and one overlay per head, side by side
    assert f"skipped {broken}" in err


def test_eda_and_report_commands_print_where_they_wrote(capsys, trained, tiny_data, tmp_path):
    rc, out, err = run(capsys, "eda", tiny_data, "-o", tmp_path / "eda.html")
    assert rc == 0, err
    assert out.startswith(f"data report: {tmp_path / 'eda.html'} (8 figures in {tmp_path / 'eda_figures'}")
    rc, out, err = run(capsys, "report", trained[0], "-o", tmp_path / "run.html")
    assert rc == 0, err
    assert out.strip() == f"run report: {tmp_path / 'run.html'} (5 figures in {tmp_path / 'run_figures'})"
    rc, out, err = run(capsys, "report", tmp_path)
    assert rc == 2 and "not a maskclf run folder" in err


@pytest.mark.slow
def test_both_reports_render_in_headless_chromium(chromium, screenshot, artifacts, trained, tiny_data, tmp_path):
    from selenium.webdriver.common.by import By

    eda = main(["eda", str(tiny_data), "-o", str(tmp_path / "eda.html")])
    assert eda == 0
    pages = {"eda": (tmp_path / "eda.html", 8), "run_report": (trained[0] / "report.html", 5)}
    for name, (html, n_figures) in pages.items():
        chromium.get(html.resolve().as_uri())
        assert chromium.title.startswith("Data report" if name == "eda" else "Run report")
        figures = chromium.find_elements(By.CSS_SELECTOR, "img.figure")
        assert len(figures) == n_figures
        for img in figures:  # decoded by the browser and laid out with a size
            assert chromium.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img) > 100
            assert img.size["width"] > 100 and img.size["height"] > 50
        headings = [h.text for h in chromium.find_elements(By.TAG_NAME, "h2")]
        assert len(headings) >= 6
        shot = screenshot(chromium, artifacts / f"{name}.png")
        with Image.open(shot) as im:
            assert im.height > 1000
