"""`predict(checkpoint, eval folder)`: a submission CSV in info.csv order plus per-image class probabilities."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from maskclf.inference.calibrate import apply_offsets
from maskclf.utils.checkpoint import CheckpointError, checkpoint_config, load_checkpoint, resolve_checkpoint
from maskclf.data.crops import cached_crops, to_cropset
from maskclf.data.scan import scan_eval
from maskclf.faces.cache import FaceCache, cache_dir_for, cache_key
from maskclf.layout import Record
from maskclf.inference.forward import predict_outputs
from maskclf.inference.grouping import check_weighting, group_probs, person_groups
from maskclf.inference.onnx_model import OnnxModel, load_onnx
from maskclf.labels import AgeBounds, NUM_CLASSES
from maskclf.models.network import build_model
from maskclf.utils.formats import write_csv, write_probs
from maskclf.utils.runtime import memory_format, resolve_device
from maskclf.models.heads import HeadSpec, member_probs, to_probs18
from maskclf.data.transforms import tta_views


@dataclass
class LoadedModel:
    """Everything needed to predict, rebuilt from a checkpoint file alone."""

    cfg: object
    spec: HeadSpec
    members: dict[str, tuple[torch.nn.Module, HeadSpec]]
    path: Path
    mean: tuple[float, ...]
    std: tuple[float, ...]
    info: dict = field(default_factory=dict)
    offsets: np.ndarray | None = None  # class-prior offsets tuned on validation (train.calibrate); None: none saved


def load_model(path: Path, device: torch.device) -> LoadedModel:
    """Rebuild the model(s) of a checkpoint on `device`, ready to predict."""
    ckpt = load_checkpoint(path)
    cfg = checkpoint_config(ckpt, path)
    try:
        s = json.loads(ckpt["spec"])
        bounds = AgeBounds(*ckpt["age_bounds"])
        spec = HeadSpec(s["heads"], s["age_mode"], bounds, tuple(s["bin_edges"]))
        member_heads = json.loads(ckpt["member_heads"])
        states = ckpt["models"]
        mean, std = tuple(ckpt["mean"]), tuple(ckpt["std"])
        offsets = None if ckpt.get("class_offsets") is None else np.asarray(ckpt["class_offsets"], dtype=np.float64)
    except (KeyError, TypeError, ValueError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: checkpoint is missing or has a malformed field ({exc})") from None
    if offsets is not None and offsets.shape != (NUM_CLASSES,):
        raise CheckpointError(f"{path}: class_offsets must hold {NUM_CLASSES} numbers, found shape {offsets.shape}")
    missing = {"mask", "gender", "age"} - set(member_heads) if "main" not in member_heads else set()
    if missing:
        raise CheckpointError(f"{path}: a separate-heads checkpoint without the {sorted(missing)} model(s) "
                              "(training was interrupted; resume it to finish)")
    members = {}
    model_cfg = cfg.model.model_copy(update={"pretrained": "", "freeze": "none", "unfreeze_epoch": None})
    for name, heads in member_heads.items():
        model = build_model(model_cfg, heads)
        try:
            model.load_state_dict(states[name])
        except (RuntimeError, KeyError) as exc:
            raise CheckpointError(f"{path}: weights for '{name}' do not fit {cfg.model.backbone} ({exc})") from None
        model = model.to(device, memory_format=memory_format(cfg.train.channels_last))
        members[name] = (model.eval(), HeadSpec(heads, spec.age_mode, bounds, spec.bin_edges))
    info = {"epoch": ckpt.get("epoch"), "score": ckpt.get("score"), "version": ckpt.get("version")}
    return LoadedModel(cfg, spec, members, Path(path), mean, std, info, offsets)


def load_any(path: Path, device: torch.device) -> LoadedModel | OnnxModel:
    """A `.onnx` file exported by maskclf (run by ONNX Runtime on the CPU), else a torch checkpoint or run folder."""
    return load_onnx(path) if Path(path).suffix == ".onnx" else load_model(path, device)


def predict_probs(loaded: LoadedModel | OnnxModel, images: np.ndarray, device: torch.device, tta: str = "none",
                  batch_size: int = 256, progress: bool = True, calibration: bool = True) -> np.ndarray:
    """(N, 18) class probabilities, averaged over the TTA views, then shifted by the checkpoint's class offsets.

    `calibration=False` gives the model's own probabilities (checkpoints without offsets always do).
    """
    if isinstance(loaded, OnnxModel):
        probs = loaded.model_probs(images, tta, batch_size)
    else:
        probs = _model_probs(loaded, images, device, tta, batch_size, progress)
    return apply_offsets(probs, loaded.offsets) if calibration else probs


def _model_probs(loaded: LoadedModel, images: np.ndarray, device: torch.device, tta: str, batch_size: int,
                 progress: bool) -> np.ndarray:
    data = to_cropset(images, [Record(path=Path(), key=str(i)) for i in range(len(images))])
    size = loaded.cfg.train.input_size
    amp = loaded.cfg.train.amp and device.type == "cuda"  # the settings validation used at train time
    layout = memory_format(loaded.cfg.train.channels_last)
    attrs: dict[str, np.ndarray] = {}
    for name, (model, spec) in loaded.members.items():
        views = tta_views(tta, size, loaded.mean, loaded.std)
        acc: dict[str, np.ndarray] = {}
        for i, view in enumerate(views):
            out = predict_outputs(model, data, view, device, batch_size, amp=amp, memory_format=layout,
                                  desc=f"predict {name} view {i + 1}/{len(views)}" if progress else None)
            for k, v in member_probs(out, spec, name).items():
                acc[k] = acc.get(k, 0) + v.numpy() / len(views)
        attrs.update(acc)
    return to_probs18(attrs)


def resolve_eval_root(path: Path) -> tuple[Path, Path]:
    """(dataset root, eval folder) for either DATA_DIR or DATA_DIR/eval."""
    path = Path(path)
    if (path / "info.csv").is_file():
        return path.parent, path
    if (path / "eval" / "info.csv").is_file():
        return path, path / "eval"
    raise FileNotFoundError(f"no info.csv in {path} or {path / 'eval'}")


@dataclass
class PredictResult:
    """The files predict wrote and what they hold."""

    submission: Path
    probs_path: Path
    image_ids: list[str]
    probs: np.ndarray
    skipped: dict[str, str]
    groups: np.ndarray | None = None  # person group of each readable image when grouping was asked for
    faces: list[str] = field(default_factory=list)  # per image: found, multiple:N, fallback, undetected, unreadable


@dataclass(frozen=True)
class PredictOptions:
    """How `predict` predicts: TTA views, batch size, class offsets, person grouping."""

    tta: str = "none"
    batch_size: int = 256
    calibration: bool = True  # False ignores the checkpoint's class offsets (train.calibrate)
    # Group the eval photos of one person (upper-face similarity >= this, see maskclf.inference.grouping) and let
    # each group agree on gender and age, each photo weighted as group_weighting says ("face" or "equal").
    group_similarity: float | None = None
    group_weighting: str = "equal"


def predict(checkpoint: Path, eval_dir: Path, out: Path | None = None, options: PredictOptions = PredictOptions(),
            device: str = "auto", progress: bool = True) -> PredictResult:
    """Write `out` (ImageID,ans in info.csv order) and `<out stem>.probs.csv` (ImageID + 18 probabilities).

    `checkpoint` may also be a `.onnx` file written by `maskclf export`.
    """
    o = options
    check_weighting(o.group_weighting)  # before minutes of prediction
    dev = resolve_device(device)
    if resolve_checkpoint(checkpoint).name == "last.pt" and Path(checkpoint).is_dir():
        print(f"note: {checkpoint} has no best.pt; predicting with last.pt (the last epoch saved, not the best one)",
              file=sys.stderr)
    loaded = load_any(checkpoint, dev)
    root, ev = resolve_eval_root(eval_dir)
    scan = scan_eval(root)
    if scan.fatal:
        raise ValueError(f"{ev}: " + "; ".join(str(p) for p in scan.problems if p.fatal)[:2000])
    images, kept, skipped = cached_crops(scan.records, root, loaded.cfg.prepare, loaded.cfg.data.cache_dir, progress)
    if scan.records and not kept:
        path, reason = next(iter(skipped.items()))
        raise ValueError(f"{ev}: none of the {len(scan.records)} eval images could be read (e.g. {path}: {reason})")
    probs = predict_probs(loaded, images, dev, o.tta, o.batch_size, progress, o.calibration)
    groups = None
    if o.group_similarity is not None:
        groups = person_groups(images, o.group_similarity)
        probs = group_probs(probs, groups, o.group_weighting)
    ids = [r.key for r in scan.records]
    full = _fill_missing(ids, [r.key for r in kept], probs, skipped)
    ckpt_dir = Path(checkpoint).parent if Path(checkpoint).is_file() else Path(checkpoint)
    out = Path(out) if out else ckpt_dir / "submission.csv"
    probs_path = out.with_name(out.stem + ".probs.csv")
    write_submission(out, ids, full.argmax(1))
    cache = FaceCache(cache_dir_for(root, loaded.cfg.prepare, loaded.cfg.data.cache_dir))
    faces = ["unreadable" if str(r.path) in skipped else cache.face_status(cache_key(root, r.path))
             for r in scan.records]
    write_probs(probs_path, ids, full, faces=faces)
    return PredictResult(out, probs_path, ids, full, skipped, groups, faces)


def _fill_missing(ids: list[str], kept_ids: list[str], probs: np.ndarray, skipped: dict) -> np.ndarray:
    """Every ImageID gets a row; unreadable images get the mean prediction (and a warning)."""
    pos = {k: i for i, k in enumerate(kept_ids)}
    prior = probs.mean(0) if len(probs) else np.full(NUM_CLASSES, 1 / NUM_CLASSES)
    if skipped:
        print(f"warning: {len(skipped)} unreadable eval image(s) got the mean prediction: "
              + ", ".join(list(skipped)[:3]), file=sys.stderr)
    return np.stack([probs[pos[k]] if k in pos else prior for k in ids]) if ids else probs


def write_submission(path: Path, ids: list[str], classes: np.ndarray) -> None:
    """The submission CSV: ImageID,ans (class 0..17), written atomically."""
    write_csv(path, ["ImageID", "ans"], zip(ids, (int(c) for c in classes)))
