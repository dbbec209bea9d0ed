"""Losses on soft targets (N, C) for classification heads, age-regression losses, and the per-head Criterion."""

from __future__ import annotations

import inspect
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from maskclf.config import NamedCfg
from maskclf.models.heads import KNOWN
from maskclf.utils.named import Choices


def class_weights(counts: np.ndarray) -> np.ndarray:
    """Inverse-frequency weights w_c = (1/n_c) / mean_k(1/n_k) over classes present; absent classes get 0."""
    counts = np.asarray(counts, dtype=np.float64)
    inv = np.zeros_like(counts)
    present = counts > 0
    if not present.any():
        raise ValueError(f"class counts are all zero: {counts.tolist()}")
    inv[present] = 1.0 / counts[present]
    return inv / inv[present].mean()


def _number(name: str, value, low: float = -math.inf, high: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ValueError(f"loss param '{name}' must be a number in [{low}, {high}], got {value!r}")
    return float(value)


def _smooth(target: torch.Tensor, eps: float) -> torch.Tensor:
    return target * (1.0 - eps) + eps / target.shape[1] if eps else target


def _weighted_mean(per_class: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """sum_ic w_c * per_class_ic / sum_ic w_c * t_ic: the batch mean, weighted like torch's weighted CE."""
    if weight is None:
        return per_class.sum() / target.sum()
    return (per_class * weight).sum() / (target * weight).sum()


def _buffer(module: nn.Module, name: str, values) -> None:
    tensor = None if values is None else torch.as_tensor(np.asarray(values, dtype=np.float32))
    module.register_buffer(name, tensor, persistent=False)


class CrossEntropyLoss(nn.Module):
    """Soft-target cross-entropy with optional label smoothing and class weights."""

    def __init__(self, label_smoothing: float = 0.0, weight=None):
        super().__init__()
        self.label_smoothing = _number("label_smoothing", label_smoothing, 0.0, 1.0)
        _buffer(self, "weight", weight)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = _smooth(target.float(), self.label_smoothing)
        return _weighted_mean(-target * F.log_softmax(logits.float(), dim=1), target, self.weight)


class FocalLoss(nn.Module):
    """Softmax focal loss -sum_c a_c t_c (1 - p_c)^gamma log p_c; alpha is an optional per-class list."""

    def __init__(self, gamma: float = 2.0, alpha: list[float] | None = None, label_smoothing: float = 0.0,
                 weight=None):
        super().__init__()
        self.gamma = _number("gamma", gamma, 0.0)
        self.label_smoothing = _number("label_smoothing", label_smoothing, 0.0, 1.0)
        if alpha is not None:
            alpha = [_number("alpha", a, 0.0) for a in alpha]
        if alpha is not None and weight is not None:
            if len(alpha) != len(weight):
                raise ValueError(f"loss param 'alpha' needs {len(weight)} values (one per class), got {len(alpha)}")
            weight = np.asarray(alpha, dtype=np.float64) * np.asarray(weight, dtype=np.float64)
        _buffer(self, "weight", alpha if weight is None else weight)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = _smooth(target.float(), self.label_smoothing)
        log_p = F.log_softmax(logits.float(), dim=1)
        per_class = -target * (1.0 - log_p.exp()).pow(self.gamma) * log_p
        return _weighted_mean(per_class, target, self.weight)


class SoftF1Loss(nn.Module):
    """1 - macro F1 computed from softmax probabilities (tp = sum p*t, fp = sum p*(1-t), fn = sum (1-p)*t)."""

    def __init__(self, eps: float = 1e-7):
        super().__init__()
        self.eps = _number("eps", eps, 0.0)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        p, t = logits.float().softmax(dim=1), target.float()
        tp = (p * t).sum(0)
        fp = (p * (1 - t)).sum(0)
        fn = ((1 - p) * t).sum(0)
        return 1.0 - (2 * tp / (2 * tp + fp + fn + self.eps)).mean()


class SymmetricCrossEntropyLoss(nn.Module):
    """Wang et al. 2019: alpha * CE(t, p) + beta * CE(p, t), with log t clamped below at `log_clamp` (A)."""

    def __init__(self, alpha: float = 0.1, beta: float = 1.0, log_clamp: float = -4.0):
        super().__init__()
        self.alpha = _number("alpha", alpha, 0.0)
        self.beta = _number("beta", beta, 0.0)
        self.log_clamp = _number("log_clamp", log_clamp, high=0.0)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = target.float()
        log_p = F.log_softmax(logits.float(), dim=1)
        ce = -(target * log_p).sum(1)
        rce = -(log_p.exp() * target.log().clamp(min=self.log_clamp)).sum(1)
        return (self.alpha * ce + self.beta * rce).mean()


class LADELoss(nn.Module):
    """Hong et al. CVPR 2021: PC-softmax CE (logits + log prior) + lade_weight * LADE regulariser.

    Training shifts the logits by the training log-prior, so the raw logits estimate the class posterior under a
    uniform prior: predict with the logits as they are. Soft targets weight each row's contribution to a class.
    """

    def __init__(self, class_counts, lade_weight: float = 0.1, remine_lambda: float = 0.1):
        super().__init__()
        self.lade_weight = _number("lade_weight", lade_weight, 0.0)
        self.remine_lambda = _number("remine_lambda", remine_lambda, 0.0)
        counts = np.asarray(class_counts, dtype=np.float64)
        _buffer(self, "prior", counts / counts.sum())

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits, target = logits.float(), target.float()
        log_prior = torch.log(self.prior + 1e-9)
        ce = _weighted_mean(-target * F.log_softmax(logits + log_prior, dim=1), target, None)
        n, c = logits.shape
        first = (logits * target).sum(0) / (target.sum(0) + 1e-8)
        second = torch.logsumexp(logits - log_prior - math.log(c), dim=0) - math.log(n)
        bound = first - second - self.remine_lambda * second**2
        return ce - self.lade_weight * (bound * self.prior).sum()


class AgeRegressionLoss(nn.Module):
    """Smooth-L1 (beta) or MSE between predicted and true age, both divided by `scale` years."""

    def __init__(self, kind: str, scale: float = 10.0, beta: float = 1.0):
        super().__init__()
        self.kind = kind
        self.scale = _number("scale", scale, 1e-6)
        self.beta = _number("beta", beta, 0.0)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        pred = pred.float().reshape(-1) / self.scale
        target = target.float().reshape(-1) / self.scale
        if self.kind == "mse":
            return F.mse_loss(pred, target)
        return F.smooth_l1_loss(pred, target, beta=self.beta)


def _smooth_l1(scale: float = 10.0, beta: float = 1.0) -> AgeRegressionLoss:
    return AgeRegressionLoss("smooth_l1", scale=scale, beta=beta)


def _mse(scale: float = 10.0) -> AgeRegressionLoss:
    return AgeRegressionLoss("mse", scale=scale)


LOSSES = {
    "ce": CrossEntropyLoss,
    "focal": FocalLoss,
    "soft_f1": SoftF1Loss,
    "sce": SymmetricCrossEntropyLoss,
    "lade": LADELoss,
}
AGE_REGRESSION_LOSSES = {"smooth_l1": _smooth_l1, "mse": _mse}
# The arguments the builder fills in from the training data, never from the config.
LOSS_CHOICES = Choices("loss", LOSSES, filled=("weight", "class_counts"))
AGE_REGRESSION_CHOICES = Choices("age regression loss", AGE_REGRESSION_LOSSES)


def _filled_in(name: str, takes, num_classes: int, class_counts, class_weighted: bool) -> dict:
    """The constructor arguments that come from the training data rather than the config."""
    if class_counts is not None and len(class_counts) != num_classes:
        raise ValueError(f"class_counts has {len(class_counts)} entries, expected {num_classes}")
    needs_counts = "class_counts" in takes or class_weighted
    if needs_counts and class_counts is None:
        raise ValueError(f"loss '{name}' (class_weighted={class_weighted}) needs the training class counts")
    filled = {"class_counts": class_counts} if "class_counts" in takes else {}
    if class_weighted:
        if "weight" not in takes:
            weighted = sorted(n for n, f in LOSSES.items() if "weight" in inspect.signature(f).parameters)
            raise ValueError(f"loss '{name}' does not take class weights (class_weighted=true); "
                             f"losses that do: {weighted}")
        filled["weight"] = class_weights(class_counts)
    return filled


def build_loss(cfg: NamedCfg, num_classes: int, class_counts: np.ndarray | None = None,
               class_weighted: bool = False) -> nn.Module:
    """Classification loss from a `{name, params}` config; class weights come from `class_counts`."""
    takes = inspect.signature(LOSS_CHOICES.entry(cfg.name)).parameters
    filled = _filled_in(cfg.name, takes, num_classes, class_counts, class_weighted)
    loss = LOSS_CHOICES.build(cfg, **filled)
    weight = getattr(loss, "weight", None)
    if weight is not None and weight.shape != (num_classes,):
        raise ValueError(f"loss '{cfg.name}': alpha needs {num_classes} values, got {weight.numel()}")
    return loss


def build_age_regression_loss(cfg: NamedCfg) -> nn.Module:
    """Age-regression loss (on ages in years) from a `{name, params}` config."""
    return AGE_REGRESSION_CHOICES.build(cfg)


HEAD_NAMES = ("cls", "mask", "gender", "age")
_NEED_KNOWN = ("cls", "gender", "age")  # heads whose targets are unknown for mask-only photos


class Criterion(nn.Module):
    """Sum over heads of head_weight * head_loss; also returns each head's unweighted loss as a float.

    When the targets hold KNOWN (a batch with mask-only photos), the gender and age losses use only the rows
    whose gender and age are known (after Mixup/CutMix: rows that mixed in no mask-only photo).
    """

    def __init__(self, losses: dict[str, nn.Module], weights: dict[str, float]):
        super().__init__()
        self.losses = nn.ModuleDict(losses)
        self.weights = dict(weights)

    def forward(self, outputs: dict, targets: dict) -> tuple[torch.Tensor, dict[str, float]]:
        total, parts = None, {}
        known = targets.get(KNOWN)
        for head, loss_fn in self.losses.items():
            if head not in outputs or head not in targets:
                raise KeyError(f"head '{head}' missing from outputs {sorted(outputs)} or targets {sorted(targets)}")
            out, target = outputs[head], targets[head]
            if known is not None and head in _NEED_KNOWN:
                keep = known >= 1.0 - 1e-6
                if not bool(keep.any()):
                    parts[head] = 0.0
                    continue
                out, target = out[keep], target[keep]
            value = loss_fn(out, target)
            parts[head] = float(value.detach())
            total = self.weights[head] * value if total is None else total + self.weights[head] * value
        if total is None:  # every row of every head was unknown: a zero that still back-propagates
            total = sum(o.float().sum() for o in outputs.values()) * 0.0
        return total, parts


def _check_heads(heads: dict[str, int], head_losses: dict, head_weights: dict[str, float]) -> None:
    for what, keys, allowed in (("heads", heads, HEAD_NAMES), ("head_losses", head_losses, heads),
                                ("head_weights", head_weights, HEAD_NAMES)):
        bad = sorted(set(keys) - set(allowed))
        if bad:
            raise ValueError(f"{what} has unknown head(s) {bad}; expected some of {sorted(allowed)}")
    negative = {h: w for h, w in head_weights.items() if w < 0}
    if negative:
        raise ValueError(f"head_weights must be >= 0, got {negative}")


def build_criterion(heads: dict[str, int], loss: NamedCfg, head_losses: dict[str, NamedCfg],
                    head_weights: dict[str, float], class_counts: dict[str, np.ndarray], class_weighted: bool,
                    age_regression: bool) -> Criterion:
    """One loss per head (head_losses override `loss`); a regression age head defaults to smooth_l1."""
    _check_heads(heads, head_losses, head_weights)
    losses = {}
    for head, size in heads.items():
        if head == "age" and age_regression:
            if size != 1:
                raise ValueError(f"a regression age head has 1 output, got {size}")
            cfg = head_losses.get("age") or NamedCfg(name="smooth_l1")
            losses[head] = build_age_regression_loss(cfg)
        else:
            cfg = head_losses.get(head, loss)
            losses[head] = build_loss(cfg, size, class_counts.get(head), class_weighted)
    return Criterion(losses, {h: float(head_weights.get(h, 1.0)) for h in heads})
