"""Scores for 18-class predictions: accuracy, macro F1, per-attribute and per-class numbers, confusion matrices.

Macro F1 is always averaged over all 18 classes (``labels=range(18)``, ``zero_division=0``): a class that
is absent from both truth and predictions counts as F1 = 0. scikit-learn's default would silently drop it,
so the same predictions would score differently depending on which classes a split happens to contain.
The full eval set contains every class, so there the two agree; on small splits ours is the stricter one,
and ``absent_classes`` in the result says when it matters.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, log_loss, precision_recall_fscore_support

from maskclf.labels import HEADS, NUM_CLASSES, AgeBounds, attribute_names, class_names, decode


def _check_labels(y: np.ndarray, name: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array of class ids, found shape {y.shape}")
    if y.size and (not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= NUM_CLASSES):
        raise ValueError(f"{name}: expected integer class ids in 0-{NUM_CLASSES - 1}, found "
                         f"dtype {y.dtype}, range {y.min()}-{y.max()}")
    return y.astype(np.int64)


def _attribute_scores(y_true: np.ndarray, y_pred: np.ndarray, k: int) -> dict:
    labels = list(range(k))
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "confusion": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }


def score(y_true: np.ndarray, y_pred: np.ndarray, bounds: AgeBounds = AgeBounds()) -> dict:
    """Accuracy, 18-class macro F1, per-attribute and per-class scores and confusion matrices (JSON-ready)."""
    y_true = _check_labels(y_true, "y_true")
    y_pred = _check_labels(y_pred, "y_pred")
    if len(y_true) != len(y_pred) or len(y_true) == 0:
        raise ValueError(f"expected equally long, non-empty label arrays, found {len(y_true)} true "
                         f"and {len(y_pred)} predicted")
    labels = list(range(NUM_CLASSES))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0)
    names = class_names(bounds)
    per_class = [
        {"class": c, "name": names[c], "precision": float(precision[c]), "recall": float(recall[c]),
         "f1": float(f1[c]), "support": int(support[c])}
        for c in labels
    ]
    true_parts, pred_parts = decode(y_true), decode(y_pred)
    attributes = {
        head: {"names": list(attribute_names(bounds)[head]), **_attribute_scores(t, p, k)}
        for (head, k), t, p in zip(HEADS.items(), true_parts, pred_parts)
    }
    return {
        "n": int(len(y_true)),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "f1": float(np.mean(f1)),
        "absent_classes": [c for c in labels if support[c] == 0],
        "attributes": attributes,
        "per_class": per_class,
        "class_names": names,
        "confusion": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }


def score_probs(y_true: np.ndarray, probs18: np.ndarray, bounds: AgeBounds = AgeBounds()) -> dict:
    """:func:`score` of the argmax class, plus the 18-class log-loss of the probabilities."""
    probs18 = np.asarray(probs18, dtype=np.float64)
    if probs18.ndim != 2 or probs18.shape[1] != NUM_CLASSES:
        raise ValueError(f"probs18: expected shape (N, {NUM_CLASSES}), found {probs18.shape}")
    out = score(y_true, probs18.argmax(axis=1), bounds)
    # float32 softmax rows sum to 1 only within ~1e-7; renormalise so scikit-learn doesn't warn about it.
    rows = np.clip(probs18, 1e-15, None)
    out["log_loss"] = float(log_loss(y_true, rows / rows.sum(axis=1, keepdims=True), labels=list(range(NUM_CLASSES))))
    return out


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """The 18-class macro F1 of :func:`score` without its checks and reports: fast enough to call in a search loop."""
    pred_count = np.bincount(y_pred, minlength=NUM_CLASSES)
    true_count = np.bincount(y_true, minlength=NUM_CLASSES)
    tp = np.bincount(y_true[y_true == y_pred], minlength=NUM_CLASSES)
    denom = pred_count + true_count  # 2tp + fp + fn
    return float(np.mean(np.divide(2 * tp, denom, out=np.zeros(NUM_CLASSES), where=denom > 0)))
