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
