"""Batched augmentation of uint8 face crops on the batch's own device: one resampling step, vectorised colour.

Batches are uint8 (B, S, S, 3), the layout of the in-RAM crop cache; outputs are float (B, 3, out, out)
normalised with `mean`/`std` given in 0-1 pixel units (timm's convention).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F

Range = tuple[float, float]
_LUMA = (0.299, 0.587, 0.114)
_PADDING = ("reflection", "border", "zeros")


@dataclass(frozen=True)
class AugmentParams:
    """Probability and parameters of every op; the defaults switch every op off."""

    crop_p: float = 0.0  # random resized crop
    crop_scale: Range = (0.7, 1.0)  # fraction of the area kept
    crop_ratio: Range = (3 / 4, 4 / 3)  # width / height of the crop
    ssr_p: float = 0.0  # shift-scale-rotate
    ssr_shift: float = 0.0625  # max shift, fraction of the side
    ssr_scale: float = 0.1  # max zoom change: zoom is drawn from 1 +- this
    ssr_rotate: float = 15.0  # max rotation, degrees
    hflip_p: float = 0.0
    jitter_p: float = 0.0  # colour jitter: brightness, contrast, saturation and hue together
    brightness: Range = (0.8, 1.2)  # factor
    contrast: Range = (0.8, 1.2)  # factor
    saturation: Range = (0.8, 1.2)  # factor
    hue: Range = (-0.1, 0.1)  # turns of the colour wheel; (-0.5, 0.5) is any hue
    gray_p: float = 0.0
    shuffle_p: float = 0.0  # random permutation of R, G, B
    clahe_p: float = 0.0
    clahe_clip: Range = (1.0, 4.0)
    clahe_grid: int = 8
    blur_p: float = 0.0
    blur_sigma: Range = (0.1, 1.5)  # pixels of the output image
    noise_p: float = 0.0
    noise_std: Range = (0.01, 0.05)  # 0-1 pixel units
    padding: str = "reflection"  # grid_sample padding where the affine looks outside the crop

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name.endswith("_p") and not 0.0 <= v <= 1.0:
                raise ValueError(f"augment '{f.name}' must be a probability in [0, 1], got {v!r}")
            if f.type == "Range":
                if len(v) != 2 or v[0] > v[1]:
                    raise ValueError(f"augment '{f.name}' must be a [low, high] pair with low <= high, got {v!r}")
                object.__setattr__(self, f.name, (float(v[0]), float(v[1])))
        if self.padding not in _PADDING:
            raise ValueError(f"augment 'padding' must be one of {list(_PADDING)}, got {self.padding!r}")
        if not 0.0 <= self.ssr_scale < 1.0 or self.crop_scale[0] <= 0 or self.crop_ratio[0] <= 0:
            raise ValueError("augment 'ssr_scale' must be in [0, 1); 'crop_scale' and 'crop_ratio' must be > 0")
        if self.clahe_grid < 1:
            raise ValueError(f"augment 'clahe_grid' must be >= 1, got {self.clahe_grid}")


_CUSTOM = dict(
    crop_p=1.0, ssr_p=0.5, hflip_p=0.5,
    jitter_p=0.8, brightness=(0.7, 1.3), contrast=(0.7, 1.3), saturation=(0.6, 1.4), hue=(-0.5, 0.5),
    gray_p=0.2, shuffle_p=0.3, clahe_p=0.2, blur_p=0.2, noise_p=0.2,
)
PRESETS: dict[str, dict] = {
    "base": {},
    "light": dict(crop_p=0.5, crop_scale=(0.85, 1.0), hflip_p=0.5, jitter_p=0.5, brightness=(0.9, 1.1),
                  contrast=(0.9, 1.1), saturation=(0.9, 1.1), hue=(-0.05, 0.05)),
    "custom": _CUSTOM,
    "strong": {**_CUSTOM, "crop_scale": (0.5, 1.0), "ssr_p": 0.7, "ssr_rotate": 25.0, "saturation": (0.3, 1.7),
               "gray_p": 0.3, "shuffle_p": 0.5, "clahe_p": 0.3, "blur_p": 0.3, "noise_p": 0.3},
}

# One uniform column per coin and parameter, always drawn in this order, so changing one op's
# probability never changes the values another op draws.
_COINS = ("crop", "ssr", "hflip", "jitter", "gray", "shuffle", "clahe", "blur", "noise")
_COLUMNS = _COINS + ("crop_area", "crop_ratio", "crop_x", "crop_y", "zoom", "shift_x", "shift_y", "angle",
                     "brightness", "contrast", "saturation", "hue", "clahe_clip", "blur_sigma", "noise_std",
                     "perm0", "perm1", "perm2")


def _lerp(u: torch.Tensor, rng: Sequence[float]) -> torch.Tensor:
    return rng[0] + u * (rng[1] - rng[0])


def _check_batch(batch: torch.Tensor) -> None:
    if batch.dtype != torch.uint8 or batch.ndim != 4 or batch.shape[-1] != 3:
        raise ValueError(f"expected a uint8 batch shaped (B, S, S, 3), got {batch.dtype} {tuple(batch.shape)}")


def _theta(sx, sy, angle, tx, ty) -> torch.Tensor:
    """(B, 2, 3) affine_grid matrices: input point = (tx, ty) + R(angle) @ diag(sx, sy) @ output point."""
    cos, sin = angle.cos(), angle.sin()
    row0 = torch.stack([cos * sx, -sin * sy, tx], 1)
    row1 = torch.stack([sin * sx, cos * sy, ty], 1)
    return torch.stack([row0, row1], 1)


def _affine_grid(theta: torch.Tensor, out: int) -> torch.Tensor:
    """F.affine_grid(theta, (B, C, out, out), align_corners=False) by broadcasting: same grid, ~5x faster on CPU."""
    c = (torch.arange(out, dtype=theta.dtype, device=theta.device) * 2 + 1) / out - 1
    t = theta[:, :, None, None, :]
    return (t[..., 0] * c + t[..., 1] * c[:, None] + t[..., 2]).permute(0, 2, 3, 1).contiguous()


def _resample(batch: torch.Tensor, theta: torch.Tensor, out: int, padding: str) -> torch.Tensor:
    """uint8 (B, S, S, 3) -> float (B, 3, out, out) in 0-255 units, sampled bilinearly through `theta`."""
    x = torch.empty(batch.shape[0], 3, *batch.shape[1:3], device=batch.device)
    x.copy_(batch.permute(0, 3, 1, 2))  # layout and dtype change in one pass
    grid = _affine_grid(theta.to(x), out)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode=padding, align_corners=False)


class _Normalise:
    """Per-channel (x / 255 - mean) / std as one multiply-add, and the image of the 0-1 pixel range under it."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], device: torch.device):
        m = torch.tensor(mean, dtype=torch.float32, device=device)
        s = torch.tensor(std, dtype=torch.float32, device=device)
        self.std, self.mean = s, m
        self.scale, self.shift = (1 / (255 * s)).view(1, 3, 1, 1), (-m / s).view(1, 3, 1, 1)
        self.low, self.high = self.shift, ((1 - m) / s).view(1, 3, 1, 1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.shift, x, self.scale)


@functools.lru_cache(maxsize=64)
def _normaliser(mean: tuple[float, ...], std: tuple[float, ...], device: torch.device) -> _Normalise:
    return _Normalise(mean, std, device)


def _finish(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def _hue_matrix(turns: torch.Tensor) -> torch.Tensor:
    """(B, 3, 3) rotations about the grey axis (Rodrigues); 1/3 turn maps (r, g, b) to (b, r, g)."""
    t = turns * (2 * math.pi)
    cos, sin = t.cos()[:, None, None], t.sin()[:, None, None]
    k = torch.tensor([[0.0, -1.0, 1.0], [1.0, 0.0, -1.0], [-1.0, 1.0, 0.0]], device=t.device) / math.sqrt(3)
    eye = torch.eye(3, device=t.device)
    return cos * eye + sin * k + (1 - cos) * torch.full((3, 3), 1 / 3, device=t.device)


class BatchAugment:
    """Random augmentation of a uint8 (B, S, S, 3) batch into a normalised float (B, 3, out, out) batch."""

    def __init__(self, params: AugmentParams, out_size: int, mean: Sequence[float], std: Sequence[float],
                 channels_last: bool = False):
        self.params, self.out_size, self.channels_last = params, out_size, channels_last
        self.mean, self.std = tuple(mean), tuple(std)

    def __call__(self, batch: torch.Tensor, generator: torch.Generator | None = None,
                 out_size: int | None = None) -> torch.Tensor:
        """`out_size` replaces the built side for this batch (progressive resizing)."""
        _check_batch(batch)
        d = self._draw(batch.shape[0], generator, batch.device)
        if bool(d["clahe"].any()):
            batch = self._clahe(batch, d)
        # Resampling, blur and the colour matrix are linear, so the ops run in normalised units from the colour
        # step on: /255 and the normalisation cost no pass of their own, and the clamps use the normalised range.
        x = _resample(batch, self._geometry(d), out_size or self.out_size, self.params.padding)
        norm = _normaliser(self.mean, self.std, x.device)
        x = self._colour(x, d, norm) if bool((d["jitter"] | d["gray"] | d["shuffle"]).any()) else norm(x)
        if bool(d["blur"].any()):
            x = self._blur(x, d)
        if bool(d["noise"].any()):
            x = self._noise(x, d, generator, norm)
        return _finish(x, self.channels_last)

    def _draw(self, n: int, generator: torch.Generator | None, device: torch.device) -> dict[str, torch.Tensor]:
        """Every random number but the noise pixels, from one draw on the generator's device."""
        where = generator.device if generator is not None else device
        u = torch.rand(n, len(_COLUMNS), generator=generator, device=where).to(device)
        d = dict(zip(_COLUMNS, u.unbind(1)))
        for op in _COINS:
            d[op] = d[op] < getattr(self.params, f"{op}_p")
        return d

    def _geometry(self, d: dict[str, torch.Tensor]) -> torch.Tensor:
        """Crop, shift-scale-rotate and flip folded into one affine matrix per sample."""
        p, one, zero = self.params, torch.ones_like(d["crop_x"]), torch.zeros_like(d["crop_x"])
        area = torch.where(d["crop"], _lerp(d["crop_area"], p.crop_scale), one)
        log_ratio = _lerp(d["crop_ratio"], (math.log(p.crop_ratio[0]), math.log(p.crop_ratio[1])))
        ratio = torch.where(d["crop"], log_ratio.exp(), one)
        w, h = (area * ratio).sqrt().clamp(max=1.0), (area / ratio).sqrt().clamp(max=1.0)
        cx, cy = (2 * d["crop_x"] - 1) * (1 - w), (2 * d["crop_y"] - 1) * (1 - h)
        ssr = d["ssr"]
        zoom = torch.where(ssr, _lerp(d["zoom"], (1 - p.ssr_scale, 1 + p.ssr_scale)), one)
        tx = torch.where(ssr, 2 * _lerp(d["shift_x"], (-p.ssr_shift, p.ssr_shift)), zero)
        ty = torch.where(ssr, 2 * _lerp(d["shift_y"], (-p.ssr_shift, p.ssr_shift)), zero)
        angle = torch.where(ssr, _lerp(d["angle"], (-p.ssr_rotate, p.ssr_rotate)) * (math.pi / 180), zero)
        flip = torch.where(d["hflip"], -one, one)
        return _theta(w * flip / zoom, h / zoom, angle, cx + tx, cy + ty)

    def _colour_matrix(self, d: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Jitter, grayscale and channel shuffle as per-sample (3x3 matrix, contrast weight) on 0-1 pixels:
        y = matrix @ x + weight * mean luma of x."""
        p, jit = self.params, d["jitter"]
        b = torch.where(jit, _lerp(d["brightness"], p.brightness), 1.0)
        c = torch.where(jit, _lerp(d["contrast"], p.contrast), 1.0)
        s = torch.where(jit, _lerp(d["saturation"], p.saturation), 1.0)[:, None, None]
        hue = torch.where(jit, _lerp(d["hue"], p.hue), 0.0)
        device = b.device
        eye, gray = torch.eye(3, device=device), torch.ones(3, 1, device=device) * torch.tensor(_LUMA, device=device)
        keys = torch.stack([d["perm0"], d["perm1"], d["perm2"]], 1).argsort(1)
        perm = torch.where(d["shuffle"][:, None], keys, torch.arange(3, device=device))
        m = F.one_hot(perm, 3).to(b.dtype)
        m = m @ torch.where(d["gray"][:, None, None], gray, eye)
        m = m @ _hue_matrix(hue) @ (s * eye + (1 - s) * gray) * (c * b)[:, None, None]
        # Every factor maps grey to grey (rows sum to 1), so contrast's pull towards the mean grey
        # of the brightened image is the same offset on all three channels.
        return m, (1 - c) * b

    def _colour(self, x: torch.Tensor, d: dict[str, torch.Tensor], norm: _Normalise) -> torch.Tensor:
        """The colour matrix with the normalisation folded in: 0-255 pixels to clamped normalised values."""
        m, weight = self._colour_matrix(d)
        luma = torch.tensor(_LUMA, dtype=x.dtype, device=x.device) / 255
        m = m * norm.scale.view(1, 3, 1)
        shift = ((weight * (x.mean((2, 3)) @ luma))[:, None] - norm.mean) / norm.std
        y = torch.baddbmm(shift[:, :, None], m, x.flatten(2)).view_as(x)
        return torch.clamp(y, norm.low, norm.high, out=y)

    def _clahe(self, batch: torch.Tensor, d: dict[str, torch.Tensor]) -> torch.Tensor:
        """OpenCV CLAHE on the lightness of the selected uint8 crops, done on CPU whatever the batch device."""
        idx = d["clahe"].nonzero().squeeze(1)
        clips = _lerp(d["clahe_clip"][idx], self.params.clahe_clip).tolist()
        crops = np.ascontiguousarray(batch[idx].cpu().numpy())
        grid = (self.params.clahe_grid, self.params.clahe_grid)
        for k, clip in enumerate(clips):
            lab = cv2.cvtColor(crops[k], cv2.COLOR_RGB2LAB)
            lab[..., 0] = cv2.createCLAHE(clipLimit=clip, tileGridSize=grid).apply(np.ascontiguousarray(lab[..., 0]))
            crops[k] = cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)
        out = batch.clone()  # never write into the caller's batch: it may be a view of the crop cache
        out[idx] = torch.from_numpy(crops).to(batch.device)
        return out

    def _blur(self, x: torch.Tensor, d: dict[str, torch.Tensor]) -> torch.Tensor:
        """Separable Gaussian blur of the selected samples, each with its own sigma, as grouped convolutions."""
        idx = d["blur"].nonzero().squeeze(1)
        sigma = _lerp(d["blur_sigma"][idx], self.params.blur_sigma).clamp(min=1e-3)
        r = max(1, math.ceil(3 * self.params.blur_sigma[1]))
        t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
        k = torch.exp(-0.5 * (t / sigma[:, None]) ** 2)
        k = (k / k.sum(1, keepdim=True)).repeat_interleave(3, 0)
        n, h, w = len(idx) * 3, x.shape[2], x.shape[3]
        sub = F.pad(x[idx].reshape(1, n, h, w), (r, r, r, r), mode="reflect")
        sub = F.conv2d(F.conv2d(sub, k[:, None, None, :], groups=n), k[:, None, :, None], groups=n)
        x[idx] = sub.view(len(idx), 3, h, w)
        return x

    def _noise(self, x: torch.Tensor, d: dict[str, torch.Tensor], generator: torch.Generator | None,
               norm: _Normalise) -> torch.Tensor:
        """Gaussian pixel noise (std in 0-1 pixel units) on normalised values, clamped to the pixel range."""
        idx = d["noise"].nonzero().squeeze(1)
        std = _lerp(d["noise_std"][idx], self.params.noise_std)[:, None, None, None] / norm.std.view(1, 3, 1, 1)
        where = generator.device if generator is not None else x.device
        eps = torch.randn((len(idx), *x.shape[1:]), generator=generator, device=where).to(x)
        x[idx] = torch.clamp(x[idx] + std * eps, norm.low, norm.high)
        return x


def build_augment(preset: str, out_size: int, mean: Sequence[float], std: Sequence[float], *,
                  channels_last: bool = False, **overrides) -> BatchAugment:
    """A named preset, with single op settings replaced by `overrides` (keys are AugmentParams fields)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown augment preset '{preset}'; valid presets: {sorted(PRESETS)}")
    valid = [f.name for f in dataclasses.fields(AugmentParams)]
    unknown = sorted(set(overrides) - set(valid))
    if unknown:
        raise ValueError(f"unknown augment override(s) {unknown}; valid keys: {valid}")
    params = AugmentParams(**{**PRESETS[preset], **overrides})
    return BatchAugment(params, out_size, mean, std, channels_last=channels_last)


class EvalTransform:
    """Deterministic resize of a crop window (optionally flipped) and normalise, on a uint8 (B, S, S, 3) batch."""

    def __init__(self, out_size: int, mean: Sequence[float], std: Sequence[float], crop: float = 1.0,
                 centre: tuple[float, float] = (0.0, 0.0), flip: bool = False, channels_last: bool = False):
        if not 0.0 < crop <= 1.0:
            raise ValueError(f"crop fraction must be in (0, 1], got {crop}")
        self.out_size, self.mean, self.std, self.channels_last = out_size, tuple(mean), tuple(std), channels_last
        self.crop, self.centre, self.flip = crop, centre, flip

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        _check_batch(batch)
        sx = -self.crop if self.flip else self.crop
        theta = torch.tensor([[sx, 0.0, self.centre[0]], [0.0, self.crop, self.centre[1]]], device=batch.device)
        x = _resample(batch, theta.expand(batch.shape[0], 2, 3), self.out_size, "reflection")
        return _finish(_normaliser(self.mean, self.std, x.device)(x), self.channels_last)


def build_eval_transform(out_size: int, mean: Sequence[float], std: Sequence[float], *,
                         channels_last: bool = False) -> EvalTransform:
    """Resize each crop to `out_size` and normalise."""
    return EvalTransform(out_size, mean, std, channels_last=channels_last)


# View specs (crop, centre, flip) relative to the eval window; corners are 90 % crops touching two edges.
_IDENTITY = (1.0, (0.0, 0.0), False)
_CORNERS = [(0.9, (0.1 * sx, 0.1 * sy), False) for sy in (-1, 1) for sx in (-1, 1)]  # tl, tr, bl, br
TTA_VIEWS: dict[str, list[tuple[float, tuple[float, float], bool]]] = {
    "none": [_IDENTITY],
    "hflip": [_IDENTITY, (1.0, (0.0, 0.0), True)],
    "crops": [_IDENTITY, *_CORNERS],
    "hflip_crops": [_IDENTITY, *_CORNERS] + [(c, centre, True) for c, centre, _ in [_IDENTITY, *_CORNERS]],
}


def tta_views(name: str, out_size: int, mean: Sequence[float], std: Sequence[float], *,
              channels_last: bool = False) -> list[EvalTransform]:
    """The deterministic views of a TTA set; the first is always the plain eval transform."""
    if name not in TTA_VIEWS:
        raise ValueError(f"unknown TTA view set '{name}'; valid names: {sorted(TTA_VIEWS)}")
    return [EvalTransform(out_size, mean, std, crop=c, centre=(x, y), flip=flip, channels_last=channels_last)
            for c, (x, y), flip in TTA_VIEWS[name]]
