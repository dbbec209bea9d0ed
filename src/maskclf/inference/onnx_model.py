"""A network exported to ONNX, run with ONNX Runtime on the CPU: the same probabilities as the torch checkpoint."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from maskclf.config import Config, validate
from maskclf.data.transforms import tta_views
from maskclf.labels import HEADS, NUM_CLASSES, AgeBounds
from maskclf.models.heads import HeadSpec, to_probs18
from maskclf.utils.checkpoint import CheckpointError

INPUT = "image"  # (batch, 3, size, size) float32, normalised with the `mean`/`std` metadata
OUTPUTS = ("probs", "mask", "gender", "age")  # (batch, 18), (batch, 3), (batch, 2), (batch, 3) probabilities
META_PREFIX = "maskclf."


@dataclass
class OnnxModel:
    """An exported network and the metadata that makes it self-describing (config, heads, preprocessing)."""

    session: object  # onnxruntime.InferenceSession
    cfg: Config
    spec: HeadSpec
    separate: bool  # one model per attribute: average attribute probabilities over TTA views, then combine
    path: Path
    mean: tuple[float, ...]
    std: tuple[float, ...]
    info: dict = field(default_factory=dict)
    offsets: np.ndarray | None = None

    def model_probs(self, images: np.ndarray, tta: str = "none", batch_size: int = 256) -> np.ndarray:
        """(N, 18) probabilities of uint8 (N, S, S, 3) crops, averaged over the TTA views like the torch path."""
        views = tta_views(tta, self.cfg.train.input_size, self.mean, self.std)
        acc = {k: 0.0 for k in OUTPUTS}
        for view in views:
            for k, v in self.outputs(images, view, batch_size).items():
                acc[k] = acc[k] + v / len(views)
        if len(images) == 0:
            return np.empty((0, NUM_CLASSES), np.float32)
        return to_probs18({k: acc[k] for k in HEADS} if self.separate else {"cls": acc["probs"]})

    def outputs(self, images: np.ndarray, view, batch_size: int) -> dict[str, np.ndarray]:
        """Every graph output for one TTA view, batch by batch."""
        chunks: dict[str, list[np.ndarray]] = {k: [] for k in OUTPUTS}
        for start in range(0, len(images), batch_size):
            x = view(torch.from_numpy(np.ascontiguousarray(images[start:start + batch_size])))
            for k, v in zip(OUTPUTS, self.session.run(list(OUTPUTS), {INPUT: x.numpy()})):
                chunks[k].append(v)
        return {k: np.concatenate(v) for k, v in chunks.items() if v}


def metadata(cfg_json: str, spec: HeadSpec, separate: bool, mean, std, offsets, info: dict) -> dict[str, str]:
    """The key -> string metadata an exported model carries (read back by `load_onnx`)."""
    fields = {
        "config": cfg_json,
        "spec": json.dumps({"heads": spec.heads, "age_mode": spec.age_mode, "bin_edges": list(spec.bin_edges)}),
        "age_bounds": json.dumps([spec.bounds.young, spec.bounds.old]),
        "separate": json.dumps(separate),
        "mean": json.dumps(list(mean)), "std": json.dumps(list(std)),
        "class_offsets": json.dumps(None if offsets is None else [float(v) for v in offsets]),
        "info": json.dumps(info),
    }
    return {META_PREFIX + k: v for k, v in fields.items()}


def load_onnx(path: Path, threads: int | None = None) -> OnnxModel:
    """An exported model with its metadata; `threads` caps ONNX Runtime's intra-op threads (default: torch's)."""
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"ONNX model not found: {path}")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or torch.get_num_threads()
    try:
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own error types for unreadable or invalid graphs
        raise CheckpointError(f"{path}: not a readable ONNX model ({type(exc).__name__}: {exc})") from None
    meta = session.get_modelmeta().custom_metadata_map
    try:
        m = {k[len(META_PREFIX):]: json.loads(v) for k, v in meta.items() if k.startswith(META_PREFIX)}
        cfg = validate(m["config"], f"config inside {path}")
        s = m["spec"]
        spec = HeadSpec(s["heads"], s["age_mode"], AgeBounds(*m["age_bounds"]), tuple(s["bin_edges"]))
        offsets = None if m["class_offsets"] is None else np.asarray(m["class_offsets"], dtype=np.float64)
        return OnnxModel(session, cfg, spec, bool(m["separate"]), path, tuple(m["mean"]), tuple(m["std"]),
                         m["info"], offsets)
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: not an ONNX model exported by maskclf (metadata: {exc})") from None
