"""`maskclf report`: one HTML page per run (or two runs side by side) for error analysis.

Reads what training leaves in the run folder: config.yaml, metrics.jsonl, summary.json, val_probs.csv (the best
weights' validation probabilities) and best.pt (for Grad-CAM on a sample of validation crops).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from maskclf.config import diff
from maskclf.data.crops import cached_crops
from maskclf.data.train_data import truth_bounds_of
from maskclf.inference.predict import load_model
from maskclf.inference.saliency import explain_crops, panels
from maskclf.labels import HEADS, attribute_names, class_names, decode, split_probs
from maskclf.layout import Record
from maskclf.metrics import score_probs
from maskclf.toolkit.html_page import Page, esc, table, thumbnail
from maskclf.utils.formats import VAL_PROBS, read_oof
from maskclf.utils.plots import class_scores_figure, evaluation_figure, history_figure, mosaic, reliability_figure
from maskclf.utils.rundir import IGNORED_KEYS, load_run_config, read_summary
from maskclf.utils.tracking import read_metrics

WORST_ERRORS = 24
SALIENCY_PER_MASK = 2  # validation crops explained per mask status
GRADCAM_PX = 128  # side of each crop and overlay in the Grad-CAM picture


@dataclass
class RunReport:
    """The run report page and the figure files it embeds."""

    html: Path
    figures: list[Path]


def build_run_report(run_dir: Path, out_html: Path | None = None, compare: Path | None = None,
                     device: str = "cpu") -> RunReport:
    """Write the report of `run_dir` (default `<run_dir>/report.html`); with `compare`, both runs side by side."""
    run_dir = Path(run_dir)
    out_html = Path(out_html) if out_html is not None else run_dir / "report.html"
    runs = [run_dir] + ([Path(compare)] if compare is not None else [])
    title = f"Run report: {run_dir.name}" + (f" vs {Path(compare).name}" if compare is not None else "")
    page = Page(title, out_html.parent / f"{out_html.stem}_figures")
    columns = [_sections(page, r, f"run{i + 1}_" if compare is not None else "", torch.device(device))
               for i, r in enumerate(runs)]
    for heading in columns[0]:
        cells = [col.get(heading, "<p class='note'>not available</p>") for col in columns]
        body = cells[0] if len(cells) == 1 else "<div class='pair'>" + "".join(
            f"<div><h3>{esc(r.name)}</h3>{c}</div>" for r, c in zip(runs, cells)) + "</div>"
        page.add(heading, body)
    if compare is not None:
        page.add("Config differences", _config_diff(runs[0], runs[1]))
    page.write(out_html, f"<p class='note'>{' | '.join(esc(r.resolve()) for r in runs)}</p>")
    return RunReport(out_html, page.figures)


def _sections(page: Page, run_dir: Path, tag: str, device: torch.device) -> dict[str, str]:
    """Section heading -> HTML for one run, in page order."""
    cfg = load_run_config(run_dir)
    summary = read_summary(run_dir)
    bounds = truth_bounds_of(cfg.data)
    out = {"Summary": _summary_html(summary)}
    rows = read_metrics(run_dir)
    if rows:
        keys = [k for k in ("loss", "f1", "lr") if any(c == k or c.endswith("/" + k) for r in rows for c in r)]
        out["Training curves"] = page.figure(f"{tag}curves", history_figure(rows, keys))
    if not (run_dir / VAL_PROBS).is_file():
        out["Validation"] = f"<p class='note'>{esc(run_dir / VAL_PROBS)} not found (the run did not finish)</p>"
        return out | {"Config and techniques": _config_html(run_dir, summary)}
    meta, probs = read_oof(run_dir / VAL_PROBS)
    labels = np.array([m["label"] for m in meta])
    report = score_probs(labels, probs, bounds)
    attrs = {h: (np.asarray(report["attributes"][h]["confusion"]), report["attributes"][h]["names"]) for h in HEADS}
    out["Confusion matrices"] = page.figure(
        f"{tag}confusion", evaluation_figure(np.asarray(report["confusion"]), report["class_names"], attrs))
    out["Per-class precision, recall, F1"] = page.figure(f"{tag}per_class", class_scores_figure(report["per_class"]))
    out["Calibration"] = page.figure(f"{tag}reliability", reliability_figure(_confidences(probs, labels)))
    out["Worst validation errors"] = _worst_errors(meta, probs, labels, class_names(bounds))
    out["Where the model looks (Grad-CAM)"] = _saliency_html(page, run_dir, cfg, meta, labels, tag, device)
    out["Config and techniques"] = _config_html(run_dir, summary)
    return out


def _summary_html(s: dict) -> str:
    if not s:
        return "<p class='note'>no summary.json (the run did not finish)</p>"
    rows = [["backbone", s["backbone"]], ["heads", f"{s['head']} (age {s['age']})"],
            ["best epoch", f"{s['best_epoch'] + 1} of {s['epochs_run']}"],
            ["val macro F1", f"{s['val_f1']:.4f}"], ["val accuracy", f"{s['val_accuracy']:.4f}"]]
    rows += [[f"{k} accuracy / F1", f"{v['accuracy']:.3f} / {v['f1']:.3f}"] for k, v in s["val_attributes"].items()]
    rows += [["stopped", "; ".join(f"{n}: {m['stopped']}" for n, m in s["members"].items())],
             ["train / val images", f"{s['train_images']} / {s['val_images']}"],
             ["wall time", f"{s['wall_seconds'] / 60:.1f} min ({s['images_per_s']:.0f} img/s on {s['device']})"]]
    return table(["", "value"], rows)


def _confidences(probs: np.ndarray, labels: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(confidence, correct) of the 18-class argmax and of each attribute's marginal argmax."""
    out = {"18 classes": (probs.max(1), probs.argmax(1) == labels)}
    for (head, p), truth in zip(split_probs(probs).items(), decode(labels)):
        out[head] = (p.max(1), p.argmax(1) == truth)
    return out


def _worst_errors(meta: list[dict], probs: np.ndarray, labels: np.ndarray, names: list[str]) -> str:
    """Thumbnails of the misclassified photos the model was most sure about."""
    pred = probs.argmax(1)
    wrong = np.flatnonzero(pred != labels)
    if not len(wrong):
        return "<p class='ok'>no validation errors</p>"
    worst = wrong[np.argsort(-probs[wrong, pred[wrong]], kind="stable")][:WORST_ERRORS]
    cells = []
    for i in worst:
        src = thumbnail(Path(meta[i]["path"]))
        img = f"<img src='{src}'>" if src else "<div class='bad'>image not found</div>"
        cells.append(f"<figure>{img}<figcaption>{esc(meta[i]['key'])}<br><b>true</b> {esc(names[labels[i]])}<br>"
                     f"<b class='bad'>pred</b> {esc(names[pred[i]])} ({probs[i, pred[i]]:.2f})</figcaption></figure>")
    return f"<p class='note'>{len(wrong)} of {len(labels)} validation photos are wrong; the {len(worst)} " \
           f"most confident errors:</p>" + "".join(cells)


def _saliency_sample(labels: np.ndarray, per_mask: int) -> np.ndarray:
    """`per_mask` validation photos of each mask status, spread over the list (a fixed sample of different people)."""
    mask = decode(labels)[0]
    picks = []
    for m in range(3):
        rows = np.flatnonzero(mask == m)
        picks.append(rows[np.unique(np.linspace(0, len(rows) - 1, num=min(per_mask, len(rows))).astype(int))])
    return np.concatenate(picks).astype(int)


def _saliency_html(page: Page, run_dir: Path, cfg, meta, labels, tag: str, device: torch.device) -> str:
    idx = _saliency_sample(labels, SALIENCY_PER_MASK)
    try:
        loaded = load_model(run_dir / "best.pt", device)
        records = [Record(path=Path(meta[i]["path"]), key=meta[i]["key"]) for i in idx]
        crops, kept, _ = cached_crops(records, cfg.data.root, cfg.prepare, cfg.data.cache_dir, progress=False)
        sal = explain_crops(loaded, crops, device)
    except (ValueError, FileNotFoundError, KeyError) as exc:  # a non-CNN backbone, a missing checkpoint or photo
        return f"<p class='note'>Grad-CAM not available: {esc(exc)}</p>"
    names = attribute_names(truth_bounds_of(cfg.data))
    truth = {r.key: decode(labels[i]) for r, i in zip(records, idx)}
    captions = ["true " + "/".join(names[h][int(v)] for h, v in zip(HEADS, truth[r.key])) for r in kept]
    images, titles = panels(crops, sal, loaded.spec.bounds, captions)
    grid = mosaic(images, titles, ncols=1 + len(sal.maps), px=GRADCAM_PX)
    return ("<p class='note'>Grad-CAM of each head's predicted answer on validation crops (red: the regions that "
            "raise that answer's score most)</p>" + page.picture(f"{tag}gradcam", grid))


def _config_html(run_dir: Path, summary: dict) -> str:
    techniques = summary.get("techniques", {})
    rows = [[k, json.dumps(v) if isinstance(v, (dict, list)) else v] for k, v in techniques.items()]
    return (table(["technique", "choice"], rows) if rows else "") + \
        f"<details><summary>config.yaml</summary><pre>{esc((run_dir / 'config.yaml').read_text())}</pre></details>"


def _config_diff(a: Path, b: Path) -> str:
    changed = {k: v for k, v in diff(load_run_config(a).to_dict(), load_run_config(b).to_dict()).items()
               if k not in IGNORED_KEYS}
    if not changed:
        return "<p class='note'>same configuration</p>"
    return table(["key", a.name, b.name], [[k, va, vb] for k, (va, vb) in changed.items()])
