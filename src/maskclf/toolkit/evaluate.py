"""Score a submission CSV against a ground-truth CSV: report.json, confusion.png and a text report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from maskclf.data.scan import read_ground_truth
from maskclf.layout import DataError
from maskclf.labels import AgeBounds
from maskclf.metrics import score
from maskclf.utils.plots import evaluation_figure

EXAMPLES = 5


def _examples(ids: list[str]) -> str:
    shown = ", ".join(ids[:EXAMPLES])
    return f"{shown}, ..." if len(ids) > EXAMPLES else shown


def read_aligned(ref_csv: Path, *other_csvs: Path) -> tuple[list[str], list[np.ndarray]]:
    """Read ImageID,ans CSVs and align them on the first file's row order; differing ImageID sets raise."""
    ref = read_ground_truth(Path(ref_csv))
    ids = list(ref)
    if not ids:
        raise DataError(f"{ref_csv}: expected ImageID,ans rows, found none")
    columns = [np.array([ref[i] for i in ids], dtype=np.int64)]
    for other_csv in other_csvs:
        other = read_ground_truth(Path(other_csv))
        missing = [i for i in ids if i not in other]
        extra = [i for i in other if i not in ref]
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"{len(missing)} ImageID(s) of {ref_csv} are missing from {other_csv} "
                             f"(e.g. {_examples(missing)})")
            if extra:
                parts.append(f"{len(extra)} ImageID(s) in {other_csv} are not in {ref_csv} "
                             f"(e.g. {_examples(extra)})")
            raise DataError(f"expected the same {len(ids)} images in both files; found: " + "; ".join(parts))
        columns.append(np.array([other[i] for i in ids], dtype=np.int64))
    return ids, columns


def evaluate_submission(submission_csv: Path, gt_csv: Path, out_dir: Path | None = None,
                        bounds: AgeBounds = AgeBounds()) -> dict:
    """Score a submission; write report.json and confusion.png to out_dir (default '<stem>_eval/' beside it)."""
    submission_csv, gt_csv = Path(submission_csv), Path(gt_csv)
    _, (y_true, y_pred) = read_aligned(gt_csv, submission_csv)
    out_dir = Path(out_dir) if out_dir is not None else submission_csv.with_name(f"{submission_csv.stem}_eval")
    out_dir.mkdir(parents=True, exist_ok=True)
    report = {
        "submission": str(submission_csv),
        "ground_truth": str(gt_csv),
        "age_bounds": [bounds.young, bounds.old],
        **score(y_true, y_pred, bounds),
        "report_json": str(out_dir / "report.json"),
        "confusion_png": str(out_dir / "confusion.png"),
    }
    heads = {h: (a["confusion"], a["names"]) for h, a in report["attributes"].items()}
    fig = evaluation_figure(report["confusion"], report["class_names"], heads)
    fig.savefig(report["confusion_png"], dpi=110)
    Path(report["report_json"]).write_text(json.dumps(report, indent=2) + "\n")
    return report


def format_report(report: dict) -> str:
    """One screen of text: headline scores, per-attribute scores and the per-class table."""
    lines = [
        f"submission   {report['submission']}",
        f"ground truth {report['ground_truth']}  ({report['n']} images)",
        f"accuracy {report['accuracy']:.4f}   macro F1 (18 classes) {report['f1']:.4f}",
        "",
        f"{'attribute':<10} {'accuracy':>8} {'macro F1':>8}",
    ]
    for head, a in report["attributes"].items():
        lines.append(f"{head:<10} {a['accuracy']:>8.4f} {a['f1']:>8.4f}")
    width = max(len(c["name"]) for c in report["per_class"])
    lines += ["", f"{'cls':>3} {'name':<{width}} {'prec':>6} {'recall':>6} {'f1':>6} {'support':>7}"]
    for c in report["per_class"]:
        lines.append(f"{c['class']:>3} {c['name']:<{width}} {c['precision']:>6.3f} {c['recall']:>6.3f} "
                     f"{c['f1']:>6.3f} {c['support']:>7}")
    if report["absent_classes"]:
        lines.append(f"classes with no true images (count as F1 0 in the macro F1): {report['absent_classes']}")
    if "report_json" in report:
        lines.append(f"wrote {report['report_json']} and {report['confusion_png']}")
    return "\n".join(lines)
