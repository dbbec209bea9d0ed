"""Mixup and CutMix of an image batch and its per-head targets, with one lambda shared by every head."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

MODES = ("box", "vertical")


@dataclass(frozen=True)
class MixInfo:
    """What mix_batch did: kind is "none", "mixup" or "cutmix"; lam is the weight of each sample's own target."""

    kind: str
    lam: float
    box: tuple[int, int, int, int] | None = None  # y0, y1, x0, x1 of the pasted region (CutMix only)


def _numpy_rng(generator: torch.Generator | None) -> np.random.Generator:
    """A NumPy generator seeded from `generator` (or torch's global RNG): torch has no seeded Beta sampler."""
    where = generator.device if generator is not None else "cpu"
    seed = torch.randint(0, 2**62, (1,), generator=generator, device=where).item()
    return np.random.default_rng(seed)


def _cutmix_box(h: int, w: int, lam: float, mode: str, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """Region to paste: timm's rand_bbox drawn from `rng`, or a full-height strip on the left or right edge."""
    if mode == "vertical":
        cut = int(round(w * (1 - lam)))
        return (0, h, 0, cut) if rng.random() < 0.5 else (0, h, w - cut, w)
    # timm.data.mixup.rand_bbox, which draws from NumPy's global RNG and so cannot follow `generator`.
    ratio = math.sqrt(1 - lam)
    cut_h, cut_w = int(h * ratio), int(w * ratio)
    cy, cx = int(rng.integers(0, h)), int(rng.integers(0, w))
    y0, y1 = np.clip([cy - cut_h // 2, cy + (cut_h + 1) // 2], 0, h)
    x0, x1 = np.clip([cx - cut_w // 2, cx + (cut_w + 1) // 2], 0, w)
    return int(y0), int(y1), int(x0), int(x1)


def _check(x: torch.Tensor, targets: dict[str, torch.Tensor], mixup_p: float, cutmix_p: float,
           alpha: float, mode: str) -> None:
    if x.ndim != 4 or not x.is_floating_point():
        raise ValueError(f"mix_batch expects a float image batch (B, C, H, W), got {x.dtype} {tuple(x.shape)}")
    if mode not in MODES:
        raise ValueError(f"unknown CutMix mode '{mode}'; valid modes: {list(MODES)}")
    if min(mixup_p, cutmix_p) < 0 or mixup_p + cutmix_p > 1:
        raise ValueError(f"need mixup_p, cutmix_p >= 0 with sum <= 1, got {mixup_p} and {cutmix_p}")
    if alpha <= 0:
        raise ValueError(f"mix alpha must be > 0, got {alpha}")
    for key, t in targets.items():
        if not t.is_floating_point() or t.ndim not in (1, 2) or t.shape[0] != x.shape[0]:
            raise ValueError(f"target '{key}' must be float (B,) values or (B, C) probability rows with "
                             f"B={x.shape[0]}, got {t.dtype} {tuple(t.shape)}; one-hot encode class indices first")


def mix_batch(x: torch.Tensor, targets: dict[str, torch.Tensor], mixup_p: float, cutmix_p: float,
              alpha: float = 1.0, mode: str = "box", generator: torch.Generator | None = None,
              ) -> tuple[torch.Tensor, dict[str, torch.Tensor], MixInfo]:
    """Mixup (prob. mixup_p) or CutMix (prob. cutmix_p) of each sample with its mirror x.flip(0), as timm pairs them.

    Every target, probability rows and regression values alike, becomes lam * own + (1 - lam) * partner's,
    with CutMix's lam set to the fraction of pixels actually left unpasted.
    """
    _check(x, targets, mixup_p, cutmix_p, alpha, mode)
    rng = _numpy_rng(generator)
    u, lam = rng.random(), float(rng.beta(alpha, alpha))
    if u < mixup_p:
        info = MixInfo("mixup", lam)
        x = x * lam + x.flip(0) * (1 - lam)
    elif u < mixup_p + cutmix_p:
        h, w = x.shape[-2:]
        y0, y1, x0, x1 = _cutmix_box(h, w, lam, mode, rng)
        info = MixInfo("cutmix", 1 - (y1 - y0) * (x1 - x0) / (h * w), (y0, y1, x0, x1))
        x = x.clone()
        x[:, :, y0:y1, x0:x1] = x[:, :, y0:y1, x0:x1].flip(0)
    else:
        return x, targets, MixInfo("none", 1.0)
    mixed = {k: t * info.lam + t.flip(0) * (1 - info.lam) for k, t in targets.items()}
    return x, mixed, info
