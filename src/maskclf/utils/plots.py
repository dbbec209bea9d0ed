"""Small matplotlib figures shared by TensorBoard logging and reports: confusion matrices, image grids, curves.

Figures are built with ``matplotlib.figure.Figure`` (Agg canvas) rather than pyplot, so no global figure
state builds up during a long training run and no display is ever needed.
"""

from __future__ import annotations

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def draw_confusion(ax: Axes, cm, names, normalize: bool = True, title: str = "") -> None:
    """Counts as text; colour is the row-normalised rate (recall per true class) or the raw count."""
    cm = np.asarray(cm, dtype=np.float64)
    rows = cm.sum(axis=1, keepdims=True)
    rate = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    colour = rate if normalize else cm
    vmax = 1.0 if normalize else max(cm.max(), 1.0)
    ax.imshow(colour, cmap="Blues", vmin=0.0, vmax=vmax)
    k = len(names)
    small = 6 if k > 6 else 8
    for i in range(k):
        for j in range(k):
            if cm[i, j]:
                ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center", fontsize=small,
                        color="white" if colour[i, j] > 0.6 * vmax else "black")
    ax.set_xticks(range(k), names, rotation=90, fontsize=small)
    ax.set_yticks(range(k), names, fontsize=small)
    ax.set_xlabel("predicted", fontsize=8)
    ax.set_ylabel("true", fontsize=8)
    if title:
        ax.set_title(title, fontsize=9)


def confusion_figure(cm, class_names, normalize: bool = True) -> Figure:
    """One labelled confusion matrix (counts written in the cells)."""
    side = 2.0 + 0.35 * len(class_names)
    fig = _figure(side, side)
    draw_confusion(fig.add_subplot(), cm, class_names, normalize)
    return fig


def evaluation_figure(cm, class_names, attributes: dict[str, tuple]) -> Figure:
    """The 18x18 confusion matrix with a row of small per-attribute panels ({head: (cm, names)}) beneath it."""
    fig = _figure(9.0, 12.0)
    top, bottom = fig.subfigures(2, 1, height_ratios=[3, 1])
    draw_confusion(top.add_subplot(), cm, class_names, title="18 classes (colour: row-normalised)")
    axes = bottom.subplots(1, len(attributes), squeeze=False).ravel()
    for ax, (head, (head_cm, names)) in zip(axes, attributes.items()):
        draw_confusion(ax, head_cm, names, title=head)
    return fig


def image_grid_figure(images: np.ndarray, titles: list[str], ncols: int = 8) -> Figure:
    """uint8 (N, H, W, 3) images in a grid, each with its (possibly multi-line) title."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or len(titles) != len(images):
        raise ValueError(f"expected uint8 images (N, H, W, 3) and N titles, found shape {images.shape} "
                         f"and {len(titles)} titles")
    n = len(images)
    ncols = max(1, min(ncols, n))
    nrows = max(1, -(-n // ncols))
    lines = max((t.count("\n") + 1 for t in titles), default=1)
    fig = _figure(1.6 * ncols, (1.6 + 0.15 * lines) * nrows)
    for i, ax in enumerate(fig.subplots(nrows, ncols, squeeze=False).ravel()):
        ax.axis("off")
        if i < n:
            ax.imshow(images[i])
            ax.set_title(titles[i], fontsize=6)
    return fig


def history_figure(rows: list[dict], keys=("loss", "f1")) -> Figure:
    """One panel per key, one line per matching column ('train/loss', 'val/loss', ...) against the epoch."""
    columns = sorted({c for r in rows for c in r})
    fig = _figure(4.0 * len(keys), 3.0)
    for ax, key in zip(fig.subplots(1, len(keys), squeeze=False).ravel(), keys):
        series = [c for c in columns if c == key or c.endswith("/" + key)]
        if not series:
            raise ValueError(f"history key '{key}' matches no column; columns found: {columns}")
        for col in series:
            pts = [(r.get("epoch", i + 1), r[col]) for i, r in enumerate(rows) if r.get(col) is not None]
            ax.plot(*zip(*pts), marker="o", markersize=3, label=col)
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return fig


def bar_figure(counts: dict[str, float], title: str, xlabel: str = "", horizontal: bool = False) -> Figure:
    """One bar per key with its value written on it."""
    names, values = list(counts), list(counts.values())
    long = horizontal or len(names) > 8
    fig = _figure(6.0, 0.6 + 0.22 * len(names)) if long else _figure(1.0 + 0.7 * len(names), 2.8)
    ax = fig.add_subplot()
    bars = ax.barh(names, values, color="#4a7ab7") if long else ax.bar(names, values, color="#4a7ab7")
    if long:
        ax.invert_yaxis()
    ax.bar_label(bars, fmt="%g", fontsize=7, padding=2)
    ax.set_title(title, fontsize=9)
    ax.tick_params(labelsize=7)
    if xlabel:
        (ax.set_xlabel if long else ax.set_ylabel)(xlabel, fontsize=8)
    ax.margins(x=0.12) if long else ax.margins(y=0.15)
    return fig


def count_grid_figure(grid, rows, cols, title: str) -> Figure:
    """A small table of counts (e.g. people per gender x age group), shaded by size."""
    grid = np.asarray(grid, dtype=np.float64)
    fig = _figure(1.4 + 0.9 * len(cols), 0.9 + 0.5 * len(rows))
    ax = fig.add_subplot()
    ax.imshow(grid, cmap="Blues", vmin=0, vmax=max(grid.max(), 1.0) * 1.3)
    for i in range(len(rows)):
        for j in range(len(cols)):
            ax.text(j, i, f"{int(grid[i, j])}", ha="center", va="center", fontsize=9)
    ax.set_xticks(range(len(cols)), cols, fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    ax.set_title(title, fontsize=9)
    return fig


def age_histogram_figure(ages, bounds: tuple[int, ...], title: str = "age (one count per person)") -> Figure:
    """Histogram of ages in 1-year bins with the age-group bounds drawn as dashed lines."""
    ages = np.asarray(ages, dtype=np.float64)
    fig = _figure(6.0, 2.8)
    ax = fig.add_subplot()
    lo, hi = (int(ages.min()), int(ages.max()) + 1) if len(ages) else (0, 1)
    ax.hist(ages, bins=np.arange(lo, hi + 1), color="#4a7ab7")
    for b in bounds:
        ax.axvline(b, color="#c0392b", linestyle="--", linewidth=1)
        ax.text(b, ax.get_ylim()[1] * 0.95, f" {b}", color="#c0392b", fontsize=8, va="top")
    ax.set_xlabel("age (years)", fontsize=8)
    ax.set_ylabel("people", fontsize=8)
    ax.set_title(title, fontsize=9)
    ax.tick_params(labelsize=7)
    return fig


def class_scores_figure(per_class: list[dict]) -> Figure:
    """Precision, recall and F1 of each class, classes sorted from the worst F1 to the best."""
    rows = sorted(per_class, key=lambda r: r["f1"])
    fig = _figure(6.5, 0.8 + 0.28 * len(rows))
    ax = fig.add_subplot()
    y = np.arange(len(rows))
    for offset, key, colour in ((-0.27, "precision", "#9ecae1"), (0.0, "recall", "#4a7ab7"), (0.27, "f1", "#08306b")):
        ax.barh(y + offset, [r[key] for r in rows], height=0.26, color=colour, label=key)
    ax.set_yticks(y, [f"{r['name']} (n={r['support']})" for r in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title("per-class scores on validation (sorted by F1)", fontsize=9)
    return fig


def reliability_figure(panels: dict[str, tuple[np.ndarray, np.ndarray]], bins: int = 10) -> Figure:
    """Reliability diagrams: accuracy against confidence per bin, one panel per {name: (confidence, correct)}."""
    fig = _figure(3.0 * len(panels), 3.2)
    edges = np.linspace(0.0, 1.0, bins + 1)
    for ax, (name, (conf, correct)) in zip(fig.subplots(1, len(panels), squeeze=False).ravel(), panels.items()):
        conf, correct = np.asarray(conf, np.float64), np.asarray(correct, np.float64)
        which = np.clip(np.digitize(conf, edges[1:-1]), 0, bins - 1)
        count = np.bincount(which, minlength=bins)
        acc = np.bincount(which, weights=correct, minlength=bins) / np.maximum(count, 1)
        mean_conf = np.bincount(which, weights=conf, minlength=bins) / np.maximum(count, 1)
        ece = float(np.sum(count * np.abs(acc - mean_conf)) / max(len(conf), 1))
        used = count > 0
        ax.bar(edges[:-1][used], acc[used], width=1.0 / bins, align="edge", color="#4a7ab7", edgecolor="white",
               label="accuracy")
        ax.plot([0, 1], [0, 1], "--", color="#888", linewidth=1, label="perfect calibration")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_title(f"{name}  (ECE {ece:.3f}, n={len(conf)})", fontsize=9)
        ax.set_xlabel("confidence", fontsize=8)
        ax.set_ylabel("accuracy", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6, loc="upper left")
    return fig


def mosaic(images: np.ndarray, titles: list[str], ncols: int, px: int | None = None, title_px: int = 14,
           gap: int = 4) -> np.ndarray:
    """uint8 (N, H, W, 3) images (resized to `px` squares if given) tiled into one picture under their titles."""
    from PIL import Image, ImageDraw

    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or len(titles) != len(images):
        raise ValueError(f"expected uint8 images (N, H, W, 3) and N titles, found shape {images.shape} "
                         f"and {len(titles)} titles")
    n, h, w = len(images), px or images.shape[1], px or images.shape[2]
    lines = max((t.count("\n") + 1 for t in titles), default=1)
    cell_h, cell_w = h + title_px * lines + gap, w + gap
    ncols = max(1, min(ncols, n))
    nrows = -(-n // ncols)
    canvas = Image.new("RGB", (ncols * cell_w + gap, nrows * cell_h + gap), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (img, text) in enumerate(zip(images, titles)):
        x, y = gap + (i % ncols) * cell_w, gap + (i // ncols) * cell_h
        draw.multiline_text((x, y), text, fill="black", spacing=2)
        tile = Image.fromarray(img.astype(np.uint8))
        canvas.paste(tile.resize((w, h), Image.BILINEAR) if px else tile, (x, y + title_px * lines))
    return np.asarray(canvas)
