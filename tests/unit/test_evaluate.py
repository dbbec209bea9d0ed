import json

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score

from maskclf.layout import DataError
from maskclf.toolkit.evaluate import evaluate_submission, format_report
from maskclf.utils.plots import confusion_figure, history_figure, image_grid_figure

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _write(path, ids, classes):
    path.write_text("ImageID,ans\n" + "".join(f"{i},{c}\n" for i, c in zip(ids, classes)))
    return path


@pytest.fixture
def pair(tmp_path):
    rng = np.random.default_rng(0)
    ids = [f"{k:040x}.jpg" for k in range(60)]
    y_true = np.arange(60) % 18
    y_pred = np.where(rng.random(60) < 0.7, y_true, rng.integers(0, 18, 60))
    order = rng.permutation(60)  # the submission lists the images in another order
    gt = _write(tmp_path / "gt.csv", ids, y_true)
    sub = _write(tmp_path / "sub.csv", [ids[i] for i in order], y_pred[order])
    return gt, sub, ids, y_true, y_pred


def test_evaluate_matches_sklearn_and_writes_files(pair, tmp_path):
    gt, sub, _, y_true, y_pred = pair
    report = evaluate_submission(sub, gt)
    assert report["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred))
    assert report["f1"] == pytest.approx(f1_score(y_true, y_pred, average="macro"))  # all 18 classes present
    out_dir = tmp_path / "sub_eval"
    assert report["report_json"] == str(out_dir / "report.json")
    assert json.loads((out_dir / "report.json").read_text()) == report
    png = (out_dir / "confusion.png").read_bytes()
    assert png.startswith(PNG_MAGIC) and len(png) > 10_000


def test_evaluate_into_a_given_folder(pair, tmp_path):
    gt, sub, *_ = pair
    report = evaluate_submission(sub, gt, out_dir=tmp_path / "deep" / "out")
    assert (tmp_path / "deep" / "out" / "confusion.png").stat().st_size > 0
    assert report["submission"] == str(sub) and report["ground_truth"] == str(gt)


def test_format_report_fits_one_screen(pair):
    gt, sub, *_ = pair
    report = evaluate_submission(sub, gt)
    text = format_report(report)
    assert f"accuracy {report['accuracy']:.4f}" in text
    assert f"macro F1 (18 classes) {report['f1']:.4f}" in text
    assert "normal/female/>=60" in text and "gender" in text
    assert len(text.splitlines()) < 40


def test_missing_image_ids_raise_naming_both_files(pair, tmp_path):
    gt, _, ids, y_true, _ = pair
    sub = _write(tmp_path / "short.csv", ids[3:], y_true[3:])
    with pytest.raises(DataError) as err:
        evaluate_submission(sub, gt)
    msg = str(err.value)
    assert "3 ImageID(s)" in msg and str(gt) in msg and str(sub) in msg and ids[0] in msg


def test_extra_image_ids_raise_with_a_count(pair, tmp_path):
    gt, _, ids, y_true, _ = pair
    sub = _write(tmp_path / "long.csv", ids + ["x.jpg", "y.jpg"], list(y_true) + [0, 0])
    with pytest.raises(DataError, match=r"2 ImageID\(s\) in .*long.csv are not in .*gt.csv \(e.g. x.jpg, y.jpg\)"):
        evaluate_submission(sub, gt)


def test_out_of_range_answer_names_the_row(pair, tmp_path):
    gt, _, ids, _, _ = pair
    sub = _write(tmp_path / "bad.csv", ids, [18] * len(ids))
    with pytest.raises(DataError, match=r"bad.csv:2: ans 18 is outside 0-17"):
        evaluate_submission(sub, gt)


def test_confusion_figure_renders(tmp_path):
    fig = confusion_figure([[3, 1], [0, 2]], ["a", "b"])
    fig.savefig(tmp_path / "cm.png")
    texts = sorted(t.get_text() for t in fig.axes[0].texts)
    assert texts == ["1", "2", "3"]  # zero cells are left blank


def test_image_grid_has_one_titled_panel_per_image(tmp_path):
    images = np.zeros((5, 32, 32, 3), dtype=np.uint8)
    fig = image_grid_figure(images, [f"true wear\npred normal {i}" for i in range(5)], ncols=3)
    assert len(fig.axes) == 6  # 2 rows x 3 columns, the last one blank
    assert fig.axes[4].get_title() == "true wear\npred normal 4"
    fig.savefig(tmp_path / "grid.png")
    with pytest.raises(ValueError, match="4 titles"):
        image_grid_figure(images, ["t"] * 4)


def test_history_figure_plots_train_and_val_per_key():
    rows = [{"epoch": 1, "train/loss": 2.0, "val/loss": 2.5, "val/f1": 0.1},
            {"epoch": 2, "train/loss": 1.0, "val/loss": 1.5, "val/f1": 0.4}]
    fig = history_figure(rows, ["loss", "f1"])
    loss_lines = {line.get_label(): line.get_ydata().tolist() for line in fig.axes[0].lines}
    assert loss_lines == {"train/loss": [2.0, 1.0], "val/loss": [2.5, 1.5]}
    assert fig.axes[1].lines[0].get_xdata().tolist() == [1, 2]
    with pytest.raises(ValueError, match="'acc' matches no column"):
        history_figure(rows, ["acc"])
