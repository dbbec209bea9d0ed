"""Draw a synthetic face mask on an RGB photo from 5 facial landmarks (eyes, nose, mouth corners)."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

KINDS = ("surgical", "kf94", "cloth")
PATTERNS = ("plain", "stripes", "dots", "checks", "blocks")
PLACEMENTS = ("wear", "nose", "chin")
PALETTE = {
    "white": (236, 238, 240), "light blue": (146, 194, 222), "black": (34, 34, 38), "gray": (128, 131, 136),
    "navy": (34, 44, 84), "pink": (232, 168, 188), "beige": (212, 194, 168),
}
_PALETTE_P = np.array([0.2, 0.22, 0.15, 0.1, 0.1, 0.1, 0.13])
_PATTERN_P = {"surgical": 0.06, "kf94": 0.04, "cloth": 0.45}  # chance of a printed pattern, by kind


@dataclass(frozen=True)
class MaskStyle:
    """How a mask looks: kind, fabric colour, optional printed pattern and strap colour (RGB 0-255)."""

    kind: str = "surgical"
    color: tuple[int, int, int] = PALETTE["light blue"]
    pattern: str = "plain"
    pattern_color: tuple[int, int, int] = (255, 255, 255)
    pattern_scale: float = 0.25  # pattern period as a fraction of the eye distance
    pattern_angle: float = 0.0  # degrees
    pattern_seed: int = 0  # colour layout of the "blocks" pattern
    strap_color: tuple[int, int, int] = (235, 235, 235)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"mask kind '{self.kind}' is not one of {list(KINDS)}")
        if self.pattern not in PATTERNS:
            raise ValueError(f"mask pattern '{self.pattern}' is not one of {list(PATTERNS)}")


def _random_color(rng: np.random.Generator) -> tuple[int, int, int]:
    if rng.random() < 0.7:
        return PALETTE[list(PALETTE)[rng.choice(len(PALETTE), p=_PALETTE_P)]]
    hsv = np.uint8([[[rng.integers(0, 180), rng.integers(60, 230), rng.integers(70, 245)]]])
    return tuple(int(c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0])


def _luma(c) -> float:
    return 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]


def random_style(rng: np.random.Generator) -> MaskStyle:
    """A random mask style: 45% surgical, 25% KF94, 30% cloth; palette colours, random hues and patterns."""
    kind = KINDS[rng.choice(3, p=[0.45, 0.25, 0.3])]
    color = _random_color(rng)
    pattern = "plain"
    pattern_color = (255, 255, 255)
    if rng.random() < _PATTERN_P[kind]:
        pattern = PATTERNS[rng.integers(1, len(PATTERNS))]
        for _ in range(20):  # a pattern colour that stands out from the fabric
            pattern_color = _random_color(rng)
            if abs(_luma(pattern_color) - _luma(color)) > 50:
                break
    strap = color if kind == "cloth" else tuple(int(v) for v in rng.integers(200, 250) + rng.integers(-8, 8, 3))
    angle = float(rng.choice([0.0, 90.0, 45.0, -45.0, rng.uniform(-90, 90)]))
    return MaskStyle(kind, color, pattern, pattern_color, float(rng.uniform(0.15, 0.4)), angle,
                     int(rng.integers(1 << 30)), strap)


@dataclass
class _Shape:
    """Mask outline in face units (eye distance = 1, x along the eye line, y down from the eye centre)."""

    cx: float  # horizontal centre; sides are scaled by sl / sr to follow the head turn
    sl: float
    sr: float
    hw: float  # half width, cheek to cheek
    top: float  # top edge height at the centre
    arch: float  # how far the top edge drops towards the cheeks (curved)
    peak: float  # how far the top edge drops towards the cheeks (straight, KF94 beak)
    side: float  # where the sides start to curve in towards the chin
    bottom: float
    square: float  # superellipse exponent of the lower outline (2 = ellipse, larger = boxier)

    def top_y(self, xm):
        r = np.abs(xm) / self.hw
        return self.top + self.arch * r**2 + self.peak * r

    def outline(self) -> np.ndarray:
        xs = np.linspace(-self.hw, self.hw, 25)
        top = np.stack([xs, self.top_y(xs)], 1)
        t = np.linspace(0, np.pi / 2, 25)
        e = 2.0 / self.square
        low = np.stack([self.hw * np.cos(t) ** e, self.side + (self.bottom - self.side) * np.sin(t) ** e], 1)
        right = np.vstack([[self.hw, self.side - 0.01], low])
        left = (right * [-1, 1])[::-1]
        return np.vstack([top, right, left[1:]])

    def to_face(self, pts: np.ndarray) -> np.ndarray:
        x = pts[:, 0]
        return np.stack([self.cx + x * np.where(x > 0, self.sr, self.sl), pts[:, 1]], 1)

    def from_face(self, fx: np.ndarray) -> np.ndarray:
        return np.where(fx > self.cx, (fx - self.cx) / self.sr, (fx - self.cx) / self.sl)


class _Frame:
    """Face coordinate frame from the landmarks: origin at the eye centre, eye distance as the unit."""

    def __init__(self, landmarks: np.ndarray):
        lm = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
        self.origin = lm[:2].mean(0)
        eye = lm[1] - lm[0]
        self.d = float(np.hypot(*eye))
        if self.d < 2:
            raise ValueError(f"eye landmarks are {self.d:.1f} px apart; expected a visible face (>= 2 px)")
        self.u = eye / self.d
        self.v = np.array([-self.u[1], self.u[0]])
        self.face = self.to_face(lm)

    def to_face(self, pts: np.ndarray) -> np.ndarray:
        q = np.asarray(pts, dtype=np.float64) - self.origin
        return np.stack([q @ self.u, q @ self.v], -1) / self.d

    def to_image(self, pts: np.ndarray) -> np.ndarray:
        pts = np.asarray(pts, dtype=np.float64)
        return self.origin + self.d * (pts[..., :1] * self.u + pts[..., 1:] * self.v)


def _jit(rng: np.random.Generator, scale: float) -> float:
    return float(rng.normal(0, scale))


def _shape(face: np.ndarray, placement: str, kind: str, rng: np.random.Generator) -> _Shape:
    nx, ny = face[2]
    mx, my = (face[3] + face[4]) / 2
    mw = abs(face[4, 0] - face[3, 0]) / 2
    ny, my = max(ny, 0.3), max(my, ny + 0.2)
    turn = nx
    s = _Shape(cx=0.6 * nx + 0.4 * mx, sl=float(np.clip(1 + 0.9 * turn, 0.55, 1.4)),
               sr=float(np.clip(1 - 0.9 * turn, 0.55, 1.4)), hw=max(1.0, mw + 0.6) * (1 + _jit(rng, 0.03)),
               top=0.42 * ny + _jit(rng, 0.03), arch=0.1, peak=0.0, side=my + 0.05,
               bottom=1.62 * my + _jit(rng, 0.04), square=3.5)
    if kind == "kf94":
        s.top, s.arch, s.peak, s.side, s.square = s.top - 0.04, 0.0, 0.16, ny + 0.15, 2.0
    elif kind == "cloth":
        s.arch, s.side, s.square, s.hw = 0.14, ny + 0.25, 2.3, s.hw * 0.96
    if placement == "nose":
        s.top, s.arch, s.peak, s.bottom = ny + 0.17 + abs(_jit(rng, 0.03)), 0.05, s.peak / 2, s.bottom + 0.12
    elif placement == "chin":
        s.top, s.arch, s.peak, s.bottom, s.hw = my + 0.2 + abs(_jit(rng, 0.03)), 0.05, 0.0, s.bottom + 0.28, s.hw * 0.9
    s.side = max(s.side, s.top_y(s.hw) + 0.15)
    return s


def _band(p: np.ndarray, duty: float, aa: float) -> np.ndarray:
    """Anti-aliased stripes: 1 within `duty` of each period centre, 0 elsewhere."""
    dist = np.abs(p - np.floor(p) - 0.5)
    return np.clip((duty / 2 - dist) / aa + 0.5, 0, 1)


def _fabric(style: MaskStyle, xa: np.ndarray, fy: np.ndarray, px_size: float) -> np.ndarray:
    """The mask's colour layer (h, w, 3) with its printed pattern, in fabric coordinates."""
    base = np.empty(xa.shape + (3,), np.float32)
    base[:] = style.color
    if style.pattern == "plain":
        return base
    a = np.deg2rad(style.pattern_angle)
    px = (np.cos(a) * xa + np.sin(a) * fy) / style.pattern_scale
    py = (-np.sin(a) * xa + np.cos(a) * fy) / style.pattern_scale
    aa = px_size / style.pattern_scale
    if style.pattern == "stripes":
        w = _band(px, 0.45, aa)
    elif style.pattern == "checks":
        w = 0.5 * _band(px, 0.5, aa) + 0.5 * _band(py, 0.5, aa)
    elif style.pattern == "dots":
        row = np.floor(py)
        dx = px + 0.5 * (row % 2) - np.floor(px + 0.5 * (row % 2)) - 0.5
        w = np.clip((0.22 - np.hypot(dx, py - row - 0.5)) / aa + 0.5, 0, 1)
    else:  # blocks: a repeating grid of cells in three colours
        prng = np.random.default_rng(style.pattern_seed)
        colours = np.array([style.color, style.pattern_color, _random_color(prng)], np.float32)
        table = prng.integers(0, 3, (7, 7))
        idx = table[np.floor(py * 0.6).astype(int) % 7, np.floor(px * 0.6).astype(int) % 7]
        return colours[idx]
    return base + (np.asarray(style.pattern_color, np.float32) - base) * w[..., None]


def _ridge(dy: np.ndarray, width: float, dark: float, light: float) -> np.ndarray:
    """Shading of a fold at dy = 0: a highlight just above it and a shadow just below."""
    return (1 + light * np.exp(-(((dy + width) / width) ** 2))) * (1 - dark * np.exp(-(((dy - width) / width) ** 2)))


def _shading(s: _Shape, kind: str, xm: np.ndarray, fy: np.ndarray, placement: str, rng) -> np.ndarray:
    """Multiplicative shading: wrap-around falloff, light direction, style details and fabric grain."""
    r = np.clip(xm / s.hw, -1.2, 1.2)
    top = s.top_y(xm)
    shade = (1 - 0.22 * r**2) * (1 + rng.uniform(-0.1, 0.1) * r)
    shade *= 1 - 0.18 * np.clip((fy - s.bottom + 0.35) / 0.35, 0, 1) ** 2  # the part curving under the chin
    if kind == "surgical":
        for k in range(3):
            shade *= _ridge(fy - top - (0.24 + 0.19 * k) * (s.side + 0.25 - s.top), 0.03, 0.14, 0.06)
        if placement == "wear":  # the nose wire: a raised strip along the centre of the top edge
            wire = (np.abs(xm) < 0.35 * s.hw) * np.clip((fy - top) / 0.02, 0, 1)
            shade *= 1 + 0.05 * wire * _ridge(fy - top - 0.07, 0.02, 0.6, 0.0)
    elif kind == "kf94":
        fold = s.top + 0.38 * (s.bottom - s.top) + 0.08 * r**2
        shade *= _ridge(fy - fold, 0.02, 0.25, 0.12) * np.where(fy > fold, 0.94, 1.0)
    else:
        shade *= _ridge(xm * np.sign(rng.uniform(-1, 1)), 0.018, 0.3, 0.1) * np.where(xm > 0, 1.04, 0.97)
    grain = cv2.resize(rng.normal(0, 1, (xm.shape[0] // 3 + 1, xm.shape[1] // 3 + 1)).astype(np.float32),
                       xm.shape[::-1], interpolation=cv2.INTER_LINEAR)
    return (shade * (1 + 0.02 * grain)).astype(np.float32)


def _scene_light(region: np.ndarray, alpha: np.ndarray, d: float) -> np.ndarray:
    """The photo's own lighting under the mask (low-frequency luminance), as a (h, w) multiplier."""
    lum = cv2.cvtColor(region, cv2.COLOR_RGB2GRAY).astype(np.float32) + 1
    lum = cv2.GaussianBlur(lum, (0, 0), max(1.0, 0.3 * d))
    inside = alpha > 0.5
    mean = float(lum[inside].mean()) if inside.any() else float(lum.mean())
    overall = np.clip((mean / 140) ** 0.35, 0.7, 1.1)
    return (np.clip((lum / mean) ** 0.5, 0.75, 1.25) * overall).astype(np.float32)


def _straps(canvas: np.ndarray, frame: _Frame, s: _Shape, offset: np.ndarray) -> None:
    """Thin ear straps from the mask corners towards the ears."""
    ear_top, ear_low = 1.38, 1.32
    pts = []
    for sign in (-1, 1):
        pts.append(([sign * (s.hw - 0.03), s.top_y(s.hw) + 0.05], [sign * ear_top * s.hw, 0.12]))
        pts.append(([sign * s.hw * 0.98, s.side + 0.05], [sign * ear_low * s.hw, 0.5]))
    thick = max(1, int(round(frame.d / 55)))
    for a, b in pts:
        ab = frame.to_image(s.to_face(np.array([a, b]))) - offset
        p, q = (np.round(ab * 16).astype(np.int32))
        cv2.line(canvas, tuple(int(v) for v in p), tuple(int(v) for v in q), 255, thick, cv2.LINE_AA, shift=4)


def _sharpness_sigma(img: np.ndarray, d: float) -> float:
    """Edge blur (px) that matches the photo: blurrier photos and bigger faces get softer mask edges."""
    gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    lap = float(cv2.Laplacian(gray, cv2.CV_32F).var())
    return float(np.clip(0.5 * np.sqrt(200.0 / max(lap, 1.0)), 0.4, 1.6) * np.clip(d / 60, 0.7, 2.5))


def draw_mask(img: np.ndarray, landmarks: np.ndarray, placement: str, style: MaskStyle,
              rng: np.random.Generator) -> np.ndarray:
    """Return a copy of RGB uint8 `img` with a mask drawn from 5 landmarks (eyes, nose, mouth corners)."""
    if placement not in PLACEMENTS:
        raise ValueError(f"placement '{placement}' is not one of {list(PLACEMENTS)}")
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected an RGB uint8 image (H, W, 3), found {img.dtype} {img.shape}")
    frame = _Frame(landmarks)
    shape = _shape(frame.face, placement, style.kind, rng)
    poly = frame.to_image(shape.to_face(shape.outline()))
    sigma = _sharpness_sigma(img, frame.d)
    pad = int(np.ceil(0.5 * frame.d + 3 * sigma))
    x0, y0 = np.maximum(np.floor(poly.min(0)).astype(int) - pad, 0)
    x1, y1 = np.minimum(np.ceil(poly.max(0)).astype(int) + pad + 1, [img.shape[1], img.shape[0]])
    out = img.copy()
    if x1 <= x0 or y1 <= y0:
        return out
    offset = np.array([x0, y0], np.float64)
    region = out[y0:y1, x0:x1].astype(np.float32)
    fill = np.zeros(region.shape[:2], np.uint8)
    cv2.fillPoly(fill, [np.round((poly - offset) * 16).astype(np.int32)], 255, cv2.LINE_AA, shift=4)
    alpha = cv2.GaussianBlur(fill.astype(np.float32) / 255, (0, 0), sigma)[..., None]
    straps = np.zeros_like(fill)
    _straps(straps, frame, shape, offset)
    strap_alpha = cv2.GaussianBlur(straps.astype(np.float32) / 255, (0, 0), 0.5 * sigma)[..., None] * 0.75

    gx, gy = np.meshgrid(np.arange(x0, x1), np.arange(y0, y1))
    face = frame.to_face(np.stack([gx, gy], -1))
    xm = shape.from_face(face[..., 0])
    wrap = 1.15 * shape.hw
    xa = np.arcsin(np.clip(xm / wrap, -1, 1)) * wrap  # the fabric curves away towards the cheeks
    layer = _fabric(style, xa, face[..., 1], 1.0 / frame.d).astype(np.float32)
    light = _scene_light(img[y0:y1, x0:x1], alpha[..., 0], frame.d)[..., None]
    layer *= _shading(shape, style.kind, xm, face[..., 1], placement, rng)[..., None] * light
    layer = cv2.GaussianBlur(layer, (0, 0), 0.6 * sigma)
    strap_rgb = np.asarray(style.strap_color, np.float32) * light
    if _is_grayscale(img):
        layer = cv2.cvtColor(np.clip(layer, 0, 255), cv2.COLOR_RGB2GRAY)[..., None].repeat(3, -1)
        strap_rgb = strap_rgb.mean(-1, keepdims=True).repeat(3, -1)
    region = region * (1 - strap_alpha) + strap_rgb * strap_alpha
    region = region * (1 - alpha) + layer * alpha
    out[y0:y1, x0:x1] = np.clip(np.round(region), 0, 255).astype(np.uint8)
    return out


def _is_grayscale(img: np.ndarray) -> bool:
    small = img[:: max(1, img.shape[0] // 64), :: max(1, img.shape[1] // 64)].astype(np.int16)
    return float(np.abs(small - small.mean(-1, keepdims=True)).mean()) < 2.0
