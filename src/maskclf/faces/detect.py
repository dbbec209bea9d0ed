"""Face detectors (5-point landmarks), face selection and square face crops."""

from __future__ import annotations

import importlib
import math
import multiprocessing
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

import cv2
import numpy as np
from PIL import Image, ImageOps

from maskclf.config import PrepareCfg

# Larger images are shrunk before detection: the detectors are tuned for faces of a few hundred pixels
# and their cost grows with the image area.
DETECT_MAX_SIDE = 640
# JPEGs are decoded at the smallest of their 1/2, 1/4, 1/8 scales that keeps this long side: a 12000x12000 photo
# then costs 1500x1500 pixels of memory, and detection (at 640) and the crop (a fraction of the face) lose nothing.
DRAFT_SIDE = 2 * DETECT_MAX_SIDE
# Smaller images hold no usable face; `check` and `prepare` both skip them (one rule, here).
MIN_SIDE = 8


@dataclass(frozen=True)
class Face:
    """A detected face in image pixel coordinates."""

    box: tuple[float, float, float, float]  # x0, y0, x1, y1
    score: float  # 0..1 (Haar has no score: always 1.0)
    landmarks: np.ndarray | None  # (5, 2) x,y: left eye, right eye, nose, left mouth corner, right mouth corner

    @property
    def area(self) -> float:
        """Box area in pixels."""
        return max(0.0, self.box[2] - self.box[0]) * max(0.0, self.box[3] - self.box[1])

    def moved(self, scale: float, shift: float) -> Face:
        """This face in the coordinates x' = x * scale - shift."""
        box = tuple(float(v * scale - shift) for v in self.box)
        marks = None if self.landmarks is None else self.landmarks * scale - shift
        return Face(box, self.score, marks)


class Detector(Protocol):
    """Anything that finds faces in an RGB image."""

    def detect(self, img_rgb: np.ndarray) -> list[Face]: ...


def _import_single_threaded(module: str):
    """Import a module whose bundled OpenMP runtime must start with one thread."""
    saved = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"  # read once, when the runtime loads
    try:
        return importlib.import_module(module)
    finally:
        if saved is None:
            del os.environ["OMP_NUM_THREADS"]
        else:
            os.environ["OMP_NUM_THREADS"] = saved


@contextmanager
def _one_torch_thread():
    """Run a block with torch's OpenMP pool at one thread (when torch is loaded)."""
    torch = sys.modules.get("torch")
    if torch is None:
        yield
        return
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


class YuFaceDetector:
    """libfacedetection (yuface wheel, weights compiled in); ~20 ms per image on one CPU core."""

    def __init__(self, device: str = "cpu"):
        yuface = _import_single_threaded("yuface")
        self._detect = yuface.c_detect  # raw rows: score(0-100), x, y, w, h, 10 landmark coords, (unused)

    def detect(self, img_rgb: np.ndarray) -> list[Face]:
        # yuface's OpenMP threads spin-wait: one thread is 4-10x faster than all cores when other processes
        # share the CPU. Once torch is loaded (it exports its OpenMP runtime globally) yuface uses torch's pool.
        with _one_torch_thread():
            rows = self._detect(np.ascontiguousarray(img_rgb[..., ::-1]))
        # Coordinates are 16-bit; boxes reaching past the top/left edge are negative (wrapped if unsigned).
        rows = np.asarray(rows).astype(np.int16).astype(np.float64)
        faces = []
        for r in rows:
            x, y, w, h = r[1:5]
            faces.append(Face((x, y, x + w, y + h), float(r[0]) / 100.0, r[5:15].reshape(5, 2).copy()))
        return faces


class MtcnnDetector:
    """MTCNN from facenet-pytorch (weights ship in the wheel); ~60 ms per image on CPU."""

    def __init__(self, device: str = "cpu"):
        from facenet_pytorch import MTCNN

        self._mtcnn = MTCNN(keep_all=True, device=device)

    def detect(self, img_rgb: np.ndarray) -> list[Face]:
        # Small networks on one image: extra torch threads only add contention (see YuFaceDetector).
        with _one_torch_thread():
            boxes, probs, points = self._mtcnn.detect(img_rgb, landmarks=True)
        if boxes is None:
            return []
        # Under numpy 2 these can come back as object arrays.
        boxes, probs = np.asarray(boxes, np.float64), np.asarray(probs, np.float64)
        points = np.asarray(points, np.float64)
        return [Face(tuple(b), float(p), m.copy()) for b, p, m in zip(boxes, probs, points)]


class HaarDetector:
    """OpenCV frontal-face Haar cascade: weak (misses masked faces), no landmarks, no score."""

    def __init__(self, device: str = "cpu"):
        self._cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
        if self._cascade.empty():
            raise RuntimeError("OpenCV Haar cascade file not found (opencv-python-headless 4.x ships it)")

    def detect(self, img_rgb: np.ndarray) -> list[Face]:
        gray = cv2.cvtColor(img_rgb, cv2.COLOR_RGB2GRAY)
        side = int(0.15 * min(gray.shape))
        found = self._cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(side, side))
        return [Face((float(x), float(y), float(x + w), float(y + h)), 1.0, None) for x, y, w, h in found]


DETECTORS = {"yuface": YuFaceDetector, "mtcnn": MtcnnDetector, "haar": HaarDetector}


def build_detector(name: str, device: str = "cpu") -> Detector:
    """Detector by name (see DETECTORS); `device` matters only for mtcnn."""
    if name not in DETECTORS:
        raise ValueError(f"unknown face detector '{name}'; expected one of {sorted(DETECTORS)}")
    return DETECTORS[name](device=device)


def find_faces(detector: Detector, img_rgb: np.ndarray, pad: float, min_confidence: float,
               min_face: float = 0.0, max_side: int = DETECT_MAX_SIDE) -> list[Face]:
    """Every face scoring >= min_confidence whose box side is >= min_face pixels, largest first, in `img_rgb`
    coordinates.

    `pad` is edge-replicate padding as a fraction of the longest side: it lets detectors find faces that fill a
    tightly cropped photo. Detection runs on a copy shrunk to `max_side` pixels, padding included, so a large
    photo keeps the same proportion of padding as a small one.
    """
    h, w = img_rgb.shape[:2]
    scale = min(1.0, max_side / (max(h, w) * (1.0 + 2.0 * pad)))
    small = img_rgb if scale == 1.0 else cv2.resize(img_rgb, (round(w * scale), round(h * scale)),
                                                    interpolation=cv2.INTER_AREA)
    px = round(pad * max(small.shape[:2]))
    padded = cv2.copyMakeBorder(small, px, px, px, px, cv2.BORDER_REPLICATE) if px else small
    faces = [f.moved(1.0, px).moved(1.0 / scale, 0.0) for f in detector.detect(padded)
             if f.score >= min_confidence and f.area > 0]
    faces = [f for f in faces if max(f.box[2] - f.box[0], f.box[3] - f.box[1]) >= min_face]
    return sorted(faces, key=lambda f: -f.area)


def find_face(detector: Detector, img_rgb: np.ndarray, pad: float, min_confidence: float) -> Face | None:
    """The largest face find_faces finds, or None."""
    faces = find_faces(detector, img_rgb, pad, min_confidence)
    return faces[0] if faces else None


class ImageRefused(ValueError):
    """An image that decodes but is refused: too small to hold a face, or over the pixel limit."""


def _to_rgb(im: Image.Image) -> np.ndarray:
    """HxWx3 uint8: 16-bit and 32-bit integer grey scaled down (PIL's convert would clip it to white), transparency
    laid over white, CMYK and palettes converted."""
    if im.mode.startswith("I"):  # "I;16", "I;16B", ... and "I" (how PIL holds 16-bit PNG/TIFF grey)
        grey = np.asarray(im, dtype=np.float64) / 257.0
        return np.repeat(np.clip(np.round(grey), 0, 255).astype(np.uint8)[..., None], 3, axis=2)
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        im = Image.alpha_composite(Image.new("RGBA", im.size, (255, 255, 255, 255)), im.convert("RGBA"))
    return np.asarray(im.convert("RGB"), dtype=np.uint8)


def read_rgb(source: Path | BinaryIO, max_pixels: int | None = None,
             min_side: int | None = DRAFT_SIDE) -> tuple[np.ndarray, float]:
    """(HxWx3 uint8 RGB image, full / decoded size) of an image file or binary file object, EXIF rotation applied;
    raises on broken files.

    JPEGs decode at the smallest of their 1/2, 1/4, 1/8 scales whose longest side is still >= `min_side` (None:
    full size), a fraction of the cost of a full decode; other formats decode at full size. ImageRefused for
    images under MIN_SIDE pixels a side or, when `max_pixels` is given, over that many decoded pixels (checked
    before decoding).
    """
    with Image.open(source) as im:
        w, h = full = im.size
        if min(w, h) < MIN_SIDE:
            raise ImageRefused(f"image is too small ({w}x{h}); at least {MIN_SIDE}x{MIN_SIDE} is needed")
        if min_side is not None and min_side < max(full):
            im.draft(im.mode, (math.ceil(w * min_side / max(full)), math.ceil(h * min_side / max(full))))
        w, h = im.size
        if max_pixels is not None and w * h > max_pixels:
            raise ImageRefused(f"image is too large to decode: {w * h} pixels ({w}x{h}) over the limit "
                               f"prepare.max_pixels={max_pixels}")
        factor = max(full) / max(w, h)
        im = ImageOps.exif_transpose(im)  # also forces a full decode, so truncated files raise here
        return _to_rgb(im), factor


def load_rgb(source: Path | BinaryIO, max_pixels: int | None = None, draft: bool = True) -> np.ndarray:
    """read_rgb's image: with `draft`, JPEGs decode at reduced size (see DRAFT_SIDE); without, at their own size."""
    return read_rgb(source, max_pixels, DRAFT_SIDE if draft else None)[0]


def crop_box(shape: tuple[int, ...], face: Face | None, cfg: PrepareCfg) -> tuple[float, float, float]:
    """Square crop (centre x, centre y, side): the face box grown by `margin`, else the fallback box."""
    if face is not None:
        x0, y0, x1, y1 = face.box
        side = max(x1 - x0, y1 - y0) * (1.0 + cfg.margin)
    else:
        h, w = shape[:2]
        fx0, fy0, fx1, fy1 = cfg.fallback_box
        x0, y0, x1, y1 = fx0 * w, fy0 * h, fx1 * w, fy1 * h
        side = max(x1 - x0, y1 - y0)
    return (x0 + x1) / 2.0, (y0 + y1) / 2.0, side


def _window(cx: float, cy: float, side: float) -> tuple[int, int, int]:
    """The whole-pixel square (x0, y0, side) that square_crop cuts around (cx, cy)."""
    side_px = max(1, round(side))
    return round(cx - side_px / 2.0), round(cy - side_px / 2.0), side_px


def square_crop(img: np.ndarray, cx: float, cy: float, side: float, size: int) -> np.ndarray:
    """Crop the square around (cx, cy), replicating edge pixels outside the image, and resize to size x size."""
    x0, y0, side_px = _window(cx, cy, side)
    h, w = img.shape[:2]
    left, top = max(0, -x0), max(0, -y0)
    right, bottom = max(0, x0 + side_px - w), max(0, y0 + side_px - h)
    if left or top or right or bottom:
        img = cv2.copyMakeBorder(img, top, bottom, left, right, cv2.BORDER_REPLICATE)
        x0, y0 = x0 + left, y0 + top
    patch = img[y0:y0 + side_px, x0:x0 + side_px]
    interp = cv2.INTER_AREA if side_px > size else cv2.INTER_LINEAR
    return np.ascontiguousarray(cv2.resize(patch, (size, size), interpolation=interp), dtype=np.uint8)


def crop_landmarks(face: Face | None, cfg: PrepareCfg) -> np.ndarray | None:
    """The face's 5 landmarks in the coordinates of its cached size x size crop, or None (no face or landmarks)."""
    if face is None or face.landmarks is None:
        return None
    cx, cy, side = crop_box((0, 0), face, cfg)
    x0, y0, side_px = _window(cx, cy, side)
    # Pixel centres: resizing side_px pixels to `size` maps x to (x + 0.5) * size / side_px - 0.5.
    return (np.asarray(face.landmarks, np.float64) - [x0, y0] + 0.5) * (cfg.size / side_px) - 0.5


def crop_face(img: np.ndarray, face: Face | None, cfg: PrepareCfg) -> tuple[np.ndarray, bool]:
    """(size x size x 3 uint8 crop, used_fallback) for an image and its detected face (or None)."""
    cx, cy, side = crop_box(img.shape, face, cfg)
    return square_crop(img, cx, cy, side, cfg.size), face is None


@dataclass
class FaceCrop:
    """The outcome for one image file: a crop, or an error message naming the file."""

    crop: np.ndarray | None
    face: Face | None
    fallback: bool
    error: str | None
    faces: int | None = None  # confident faces found (the largest is used); None when no detector ran


def process_image(path: Path, detector: Detector | None, cfg: PrepareCfg) -> FaceCrop:
    """Decode (JPEGs at reduced size), detect (unless `detector` is None) and crop one file; never raises for a
    bad file. The face comes back in the coordinates of the full-size image."""
    try:
        img, factor = read_rgb(path, cfg.max_pixels, cfg.detect_side)
        faces = None
        if detector is not None:
            try:
                faces = find_faces(detector, img, cfg.pad, cfg.min_confidence, max_side=cfg.detect_side)
                if not faces:
                    img, factor, faces = _second_look(path, img, factor, detector, cfg)
            except Exception as exc:
                return FaceCrop(None, None, False, f"{path}: face detection failed ({type(exc).__name__}: {exc})")
        face = faces[0] if faces else None
        img, face, factor = _decode_for_crop(path, img, face, factor, cfg)
    except ImageRefused as exc:
        return FaceCrop(None, None, False, f"{path}: {exc}")
    except Exception as exc:  # any decoder error: one bad file must not stop the run
        return FaceCrop(None, None, False, f"{path}: cannot read image ({type(exc).__name__}: {exc})")
    crop, fallback = crop_face(img, face, cfg)
    full_face = None if face is None else face.moved(factor, 0.0)
    # Without a detector every image gets the fixed box by design; that is not a fallback.
    return FaceCrop(crop, full_face, fallback and detector is not None, None, None if faces is None else len(faces))


SECOND_LOOK = 2  # a photo with no face at prepare.detect_side is searched again at this many times the side


def _second_look(path: Path, img: np.ndarray, factor: float, detector: Detector,
                 cfg: PrepareCfg) -> tuple[np.ndarray, float, list[Face]]:
    """(image, factor, faces) after one more search at SECOND_LOOK x detect_side, on a larger decode when the
    first was reduced; the first decode and no faces when the photo has no more pixels or still shows no face.
    Small faces vanish in the small copy; a second look at the few photos without a face costs little."""
    side = SECOND_LOOK * cfg.detect_side
    if factor == 1.0 and max(img.shape[:2]) <= cfg.detect_side:
        return img, factor, []  # the first search already saw every pixel
    bigger, new_factor = (img, factor) if factor == 1.0 else read_rgb(path, cfg.max_pixels, side)
    faces = find_faces(detector, bigger, cfg.pad, cfg.min_confidence, max_side=side)
    return (bigger, new_factor, faces) if faces else (img, factor, [])


def _decode_for_crop(path: Path, img: np.ndarray, face: Face | None, factor: float,
                     cfg: PrepareCfg) -> tuple[np.ndarray, Face | None, float]:
    """A decode with at least `cfg.size` pixels across the crop (or DRAFT_SIDE, or the full image), the face in it."""
    side = crop_box(img.shape, face, cfg)[2]
    if factor == 1.0 or side >= cfg.size:
        return img, face, factor
    want = min(math.ceil(max(img.shape[:2]) * cfg.size / side), DRAFT_SIDE)
    if want <= max(img.shape[:2]):
        return img, face, factor
    bigger, new_factor = read_rgb(path, cfg.max_pixels, want)
    return bigger, None if face is None else face.moved(factor / new_factor, 0.0), new_factor


def detector_for(cfg: PrepareCfg, device: str = "cpu") -> Detector | None:
    """The detector `cfg.detector` names, or None for "none" (fixed box for every image)."""
    return None if cfg.detector == "none" else build_detector(cfg.detector, device)


_WORKER: dict = {}


def _init_worker(cfg: PrepareCfg, device: str) -> None:
    cv2.setNumThreads(1)
    if cfg.detector == "mtcnn":
        import torch

        torch.set_num_threads(1)
    _WORKER.update(cfg=cfg, detector=detector_for(cfg, device))


def _work(path: Path) -> FaceCrop:
    return process_image(path, _WORKER["detector"], _WORKER["cfg"])


def crop_images(paths: Sequence[Path], cfg: PrepareCfg, device: str = "cpu", workers: int = 1) -> Iterator[FaceCrop]:
    """process_image for each path, in order, in this process or in `workers` spawned processes."""
    if workers <= 1:
        detector = detector_for(cfg, device)
        for p in paths:
            yield process_image(p, detector, cfg)
        return
    # spawn, not fork: forking a process that already runs torch/OpenMP threads can deadlock.
    with multiprocessing.get_context("spawn").Pool(workers, _init_worker, (cfg, device)) as pool:
        yield from pool.imap(_work, paths, chunksize=4)


def default_workers(n_images: int) -> int:
    """Worker processes for `n_images`: one per core (at most 4) for jobs of 200 images or more, else none."""
    # A spawned worker needs ~1 s to import and build its detector, the time to crop ~150 images in this process;
    # yuface holds the GIL, so threads would not run in parallel.
    return min(os.cpu_count() or 1, 4) if n_images >= 200 else 1
