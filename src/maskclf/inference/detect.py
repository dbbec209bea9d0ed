"""`detect(model, photos)`: find every face in any photo with the checkpoint's own detector and crop settings,
classify each, and write JSON lines + CSV (+ annotated copies)."""

from __future__ import annotations

import csv
import io
import json
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from maskclf.config import PrepareCfg
from maskclf.faces.detect import DETECT_MAX_SIDE, Detector, Face, crop_box, crop_face, detector_for, find_faces, load_rgb
from maskclf.inference.draw import draw_faces
from maskclf.inference.onnx_model import OnnxModel
from maskclf.inference.predict import LoadedModel, load_any, predict_probs
from maskclf.labels import NUM_CLASSES, attribute_names, class_names, split_probs
from maskclf.layout import IMAGE_EXTS
from maskclf.utils.atomic import write_atomic
from maskclf.utils.runtime import resolve_device

IMAGE_SUFFIXES = IMAGE_EXTS | {".gif"}  # the dataset image types, plus GIF for photos people bring
BATCH_IMAGES = 32  # photos whose faces are classified together
CSV_COLUMNS = ["path", "width", "height", "face", "x0", "y0", "x1", "y1", "score", "mask", "mask_prob", "gender",
               "gender_prob", "age", "age_prob", "class", "label", "prob"]


@dataclass
class FacePipeline:
    """A model plus the detector and crop settings it was trained with; safe to share between threads."""

    model: LoadedModel | OnnxModel
    detector: Detector | None
    prepare: PrepareCfg
    device: torch.device
    tta: str = "none"
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def locate(self, img: np.ndarray, min_face: float = 0.0, max_faces: int | None = None
               ) -> tuple[list[Face | None], np.ndarray]:
        """The faces of an RGB image (largest first, at most `max_faces`) and their crops for the model."""
        if self.detector is None:  # trained on a fixed box per image: that box is the one "face"
            found: list[Face | None] = [None]
        else:
            # Same detector, padding and threshold as training, but detection on at least DETECT_MAX_SIDE pixels:
            # training photos are single faces (a small detect_side finds them), a group photo's faces are small.
            side = max(self.prepare.detect_side, DETECT_MAX_SIDE)
            with self._lock:  # detectors keep native state (and set torch's thread count): one call at a time
                found = find_faces(self.detector, img, self.prepare.pad, self.prepare.min_confidence, min_face, side)
        found = found[:max_faces] if max_faces is not None else found
        size = self.prepare.size
        crops = np.stack([crop_face(img, f, self.prepare)[0] for f in found]) if found else \
            np.empty((0, size, size, 3), np.uint8)
        return found, crops

    def classify(self, crops: np.ndarray) -> np.ndarray:
        """(N, 18) class probabilities of face crops (class offsets applied)."""
        if len(crops) == 0:
            return np.empty((0, NUM_CLASSES), np.float32)
        return predict_probs(self.model, crops, self.device, self.tta, progress=False)

    def describe(self, shape: tuple[int, ...], found: list[Face | None], probs: np.ndarray) -> list[dict]:
        return [face_record(shape, f, p, self.prepare, self.model.spec.bounds) for f, p in zip(found, probs)]

    def faces(self, img: np.ndarray, min_face: float = 0.0, max_faces: int | None = None) -> list[dict]:
        """Every face of an RGB image (largest first, at most `max_faces`), each with its box and labels."""
        found, crops = self.locate(img, min_face, max_faces)
        return self.describe(img.shape, found, self.classify(crops)) if found else []


def face_record(shape: tuple[int, ...], face: Face | None, probs: np.ndarray, cfg: PrepareCfg, bounds) -> dict:
    """One face as JSON-ready data: box in image pixels, detector score, attribute and 18-class labels."""
    h, w = shape[:2]
    if face is None:
        cx, cy, side = crop_box(shape, None, cfg)
        box, score = (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2), None
    else:
        box, score = face.box, round(face.score, 4)
    x0, y0, x1, y1 = (float(np.clip(v, 0, lim)) for v, lim in zip(box, (w, h, w, h)))
    record = {"box": [round(x0, 1), round(y0, 1), round(x1, 1), round(y1, 1)], "score": score}
    for name, p in split_probs(probs[None]).items():
        k = int(p[0].argmax())
        record[name] = {"label": attribute_names(bounds)[name][k], "prob": round(float(p[0, k]), 4)}
    c = int(probs.argmax())
    record.update({"class": c, "label": class_names(bounds)[c], "prob": round(float(probs[c]), 4)})
    return record


def load_pipeline(model_path: Path, device: str = "auto", tta: str = "none", threads: int | None = 1) -> FacePipeline:
    """A checkpoint (.pt / run folder) or an exported .onnx model with its own detector and crop settings.

    `threads` sets this process's torch (and so ONNX Runtime) intra-op threads; None keeps torch's. One is the
    default: a photo's few faces are a small batch, and on a shared 2-core machine two threads that wait for
    each other made it 10x slower (19 crops: 7 s with two, 0.5 s with one); the server runs requests in
    parallel instead.
    """
    if threads is not None:
        torch.set_num_threads(threads)
    dev = resolve_device(device)
    model = load_any(model_path, dev)
    return FacePipeline(model, detector_for(model.cfg.prepare, str(dev)), model.cfg.prepare, dev, tta)


def image_files(paths: list[Path]) -> tuple[list[Path], list[Path], dict[str, str]]:
    """(image files, the name of each relative to the argument it came from, missing arguments -> reason);
    folders are searched recursively for common image suffixes."""
    files, names, problems = [], [], {}
    for arg in map(Path, paths):
        if arg.is_dir():
            found = sorted(p for p in arg.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            files += found
            names += [p.relative_to(arg) for p in found]
        elif arg.is_file():
            files.append(arg)
            names.append(Path(arg.name))
        else:
            problems[str(arg)] = "no such file or folder"
    return files, names, problems


@dataclass
class DetectResult:
    """Faces found in every readable photo, skipped files and the files written."""

    images: list[dict]  # one per readable image: path, width, height, faces (the JSON lines)
    skipped: dict[str, str]  # unreadable file -> reason
    jsonl: Path | None = None
    csv: Path | None = None
    drawn: Path | None = None  # folder of annotated copies


def detect(model: Path | FacePipeline, paths: list[Path], out: Path | None = None, draw: bool = False,
           min_face: float = 0.0, max_faces: int | None = None, progress: bool = True) -> DetectResult:
    """Faces and labels for every image in `paths` (files or folders); with `out`, write `out` (JSON lines),
    `<out stem>.csv` and, with `draw`, annotated copies in `<out stem>_drawn/`. Unreadable files are skipped."""
    pipe = model if isinstance(model, FacePipeline) else load_pipeline(model)
    files, names, skipped = image_files(paths)
    for arg, reason in skipped.items():
        print(f"warning: skipped {arg}: {reason}", file=sys.stderr)
    drawn = Path(out).with_name(Path(out).stem + "_drawn") if out is not None and draw else None
    images, pending = [], []
    for path, name in tqdm(list(zip(files, names)), desc="detect", unit="image", disable=not progress or len(files) < 2):
        try:
            img = load_rgb(path, pipe.prepare.max_pixels, draft=False)  # boxes in the photo's own pixels
        except Exception as exc:  # any decoder error: one bad file must not stop the run
            skipped[str(path)] = f"cannot read image ({type(exc).__name__}: {exc})"
            print(f"warning: skipped {path}: {skipped[str(path)]}", file=sys.stderr)
            continue
        pending.append((path, name, img if drawn else img.shape, *pipe.locate(img, min_face, max_faces)))
        if len(pending) == BATCH_IMAGES:
            images += _classify_batch(pipe, pending, drawn)
            pending = []
    images += _classify_batch(pipe, pending, drawn)
    result = DetectResult(images, skipped)
    if out is not None:
        result.jsonl, result.csv, result.drawn = Path(out), Path(out).with_suffix(".csv"), drawn
        write_jsonl(result.jsonl, images)
        write_csv(result.csv, images)
    return result


def _classify_batch(pipe: FacePipeline, pending: list[tuple], drawn: Path | None) -> list[dict]:
    """The records of located images, their crops classified in one batch (one call per face is slow)."""
    if not pending:
        return []
    probs = pipe.classify(np.concatenate([crops for *_, crops in pending]))
    records, start = [], 0
    for path, name, img, found, crops in pending:
        shape = img.shape if drawn else img
        faces = pipe.describe(shape, found, probs[start:start + len(crops)])
        start += len(crops)
        records.append({"path": str(path), "width": shape[1], "height": shape[0], "faces": faces})
        if drawn is not None:
            save_drawn(draw_faces(img, faces), drawn / name)
    return records


def save_drawn(image, path: Path) -> None:
    """Save a photo with its boxes drawn (JPEG or PNG by suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = "JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else "PNG"
    target = path if fmt == "JPEG" or path.suffix.lower() == ".png" else path.with_suffix(path.suffix + ".png")
    write_atomic(target, lambda fh: image.save(fh, fmt))


def write_jsonl(path: Path, images: list[dict]) -> None:
    """One JSON line per image, written atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda fh: fh.write("".join(json.dumps(r) + "\n" for r in images).encode()))


def csv_rows(images: list[dict]) -> list[list]:
    """One row per face (an image without faces gets one row with empty face columns)."""
    rows = []
    for r in images:
        head = [r["path"], r["width"], r["height"]]
        if not r["faces"]:
            rows.append(head + [""] * (len(CSV_COLUMNS) - 3))
        for i, f in enumerate(r["faces"]):
            rows.append(head + [i, *f["box"], f["score"], f["mask"]["label"], f["mask"]["prob"], f["gender"]["label"],
                                f["gender"]["prob"], f["age"]["label"], f["age"]["prob"], f["class"], f["label"],
                                f["prob"]])
    return rows


def write_csv(path: Path, images: list[dict]) -> None:
    """One CSV row per face, written atomically."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(CSV_COLUMNS)
    writer.writerows(csv_rows(images))
    write_atomic(path, lambda fh: fh.write(buf.getvalue().encode()))
