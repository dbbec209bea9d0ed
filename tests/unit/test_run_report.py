import shutil

import numpy as np
import pytest
from PIL import Image

from maskclf.toolkit.run_report import WORST_ERRORS, build_run_report
from maskclf.training.fit import fit
from maskclf.utils.formats import VAL_PROBS, read_oof

FIGURES = {"curves", "confusion", "per_class", "reliability", "gradcam"}
SECTIONS = ["Summary", "Training curves", "Confusion matrices", "Per-class precision, recall, F1", "Calibration",
            "Worst validation errors", "Where the model looks (Grad-CAM)", "Config and techniques"]


@pytest.fixture(scope="module")
def runs(tiny_cfg, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    multi = fit(tiny_cfg(out, "train.epochs=2", "run.name=multi"), progress=False)
    single = fit(tiny_cfg(out, "train.epochs=2", "run.name=single", "model.head=single"), progress=False)
    return multi.run_dir, single.run_dir


@pytest.fixture(scope="module")
def report(runs):
    return build_run_report(runs[0])


def assert_png(path):
    with Image.open(path) as im:
        assert im.width > 200 and im.height > 150
        assert np.asarray(im.convert("L")).std() > 5


def test_report_has_every_section_and_writes_each_figure_beside_it(runs, report):
    assert report.html == runs[0] / "report.html"
    page = report.html.read_text()
    positions = [page.index(f"<h2>{s}</h2>") for s in SECTIONS]
    assert positions == sorted(positions)
    assert {p.stem for p in report.figures} == FIGURES
    for path in report.figures:
        assert path.parent == runs[0] / "report_figures"
        assert_png(path)
    assert page.count("src='data:image/png;base64,") == len(FIGURES)
    assert "https://" not in page and "http://" not in page
    assert "model.backbone" not in page and "backbone: test_resnet" in page  # the config.yaml itself


def test_worst_errors_are_the_most_confident_wrong_predictions(runs, report):
    page = report.html.read_text()
    meta, probs = read_oof(runs[0] / VAL_PROBS)
    labels = np.array([m["label"] for m in meta])
    pred = probs.argmax(1)
    wrong = np.flatnonzero(pred != labels)
    shown = min(WORST_ERRORS, len(wrong))
    assert f"{len(wrong)} of {len(labels)} validation photos are wrong" in page
    assert page.count("<b class='bad'>pred</b>") == shown
    most_sure = wrong[np.argmax(probs[wrong, pred[wrong]])]
    first = page.index("<b class='bad'>pred</b>")
    assert page.rfind(meta[most_sure]["key"], 0, first) > page.index("<h2>Worst validation errors</h2>")


@pytest.mark.slow
def test_compare_puts_both_runs_side_by_side_with_their_config_differences(runs, tmp_path):
    report = build_run_report(runs[0], tmp_path / "cmp.html", compare=runs[1])
    page = report.html.read_text()
    assert {p.name for p in report.figures} == {f"run{i}_{f}.png" for i in (1, 2) for f in FIGURES}
    assert page.count("<div class='pair'>") == len(SECTIONS)
    assert "<h3>multi</h3>" in page and "<h3>single</h3>" in page
    assert "<td>model.head</td><td>multihead</td><td>single</td>" in page


def test_a_run_without_validation_probabilities_still_gets_its_curves(runs, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(runs[0], old, ignore=shutil.ignore_patterns(VAL_PROBS, "report*"))
    report = build_run_report(old)
    page = report.html.read_text()
    assert f"{VAL_PROBS} not found" in page
    assert {p.stem for p in report.figures} == {"curves"}
