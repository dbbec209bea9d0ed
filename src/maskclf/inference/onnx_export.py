"""`export_onnx(checkpoint)`: the network (any head layout, any age mode) as one ONNX graph that outputs
probabilities, with the preprocessing constants stored as metadata and a parity check against torch."""

from __future__ import annotations

import io
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from maskclf.faces.detect import detector_for, process_image
from maskclf.inference.detect import image_files
from maskclf.inference.onnx_model import INPUT, OUTPUTS, OnnxModel, load_onnx, metadata
from maskclf.inference.predict import LoadedModel, load_model, predict_probs
from maskclf.labels import combine_probs
from maskclf.models.heads import attribute_probs, probs18
from maskclf.utils.atomic import write_atomic

OPSET = 17
PARITY_TOLERANCE = 1e-4  # max abs difference of probabilities between ONNX Runtime and torch
PARITY_IMAGES = 32


class ParityError(ValueError):
    """ONNX Runtime and torch disagree on the same crops by more than the tolerance."""


class ProbsNet(nn.Module):
    """Every member of a checkpoint in one module: normalised images -> 18-class and attribute probabilities."""

    def __init__(self, loaded: LoadedModel):
        super().__init__()
        self.specs = {name: spec for name, (_, spec) in loaded.members.items()}
        self.members = nn.ModuleDict({name: model for name, (model, _) in loaded.members.items()})

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if "main" in self.members:
            out = self.members["main"](x)
            spec = self.specs["main"]
            attrs = attribute_probs(out, spec)
            return probs18(out, spec), attrs["mask"], attrs["gender"], attrs["age"]
        attrs = {}
        for name, model in self.members.items():
            attrs.update(attribute_probs(model(x), self.specs[name]))
        return combine_probs(attrs["mask"], attrs["gender"], attrs["age"]), attrs["mask"], attrs["gender"], attrs["age"]


@dataclass
class ExportResult:
    """The written .onnx file and its parity against torch."""

    path: Path
    parity: dict  # images, max_abs_diff, argmax_agree, tolerance


def onnx_bytes(loaded: LoadedModel) -> bytes:
    """The traced graph with a dynamic batch axis, as serialised ONNX."""
    size = loaded.cfg.train.input_size
    net = ProbsNet(loaded).eval()
    buf = io.BytesIO()
    with warnings.catch_warnings():  # the TorchScript exporter announces its successor on every call
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(2, 3, size, size),), buf, input_names=[INPUT], output_names=list(OUTPUTS),
                          dynamic_axes={n: {0: "batch"} for n in (INPUT, *OUTPUTS)}, opset_version=OPSET,
                          dynamo=False)
    return buf.getvalue()


def check_crops(loaded: LoadedModel, paths: list[Path], limit: int = PARITY_IMAGES) -> np.ndarray:
    """Face crops of up to `limit` readable images, cut with the checkpoint's own detector and crop settings."""
    detector = detector_for(loaded.cfg.prepare)
    crops = []
    for path in image_files(paths)[0]:
        out = process_image(path, detector, loaded.cfg.prepare)
        if out.crop is not None:
            crops.append(out.crop)
        if len(crops) == limit:
            break
    if not crops:
        raise ValueError(f"no readable image among {[str(p) for p in paths]} for the parity check; give some photos "
                         "(maskclf export --check PATH)")
    return np.stack(crops)


def parity(loaded: LoadedModel, exported: OnnxModel, crops: np.ndarray) -> dict:
    """ONNX Runtime vs torch probabilities (before class offsets) on the same crops."""
    ref = predict_probs(loaded, crops, torch.device("cpu"), progress=False, calibration=False)
    got = exported.model_probs(crops)
    return {"images": len(crops), "max_abs_diff": float(np.abs(ref - got).max()),
            "argmax_agree": bool((ref.argmax(1) == got.argmax(1)).all()), "tolerance": PARITY_TOLERANCE}


def write_onnx(loaded: LoadedModel, out: Path) -> Path:
    """Write the graph of a loaded checkpoint with its metadata (config, heads, preprocessing) to `out`."""
    import onnx

    graph = onnx.load_from_string(onnx_bytes(loaded))
    info = {"source": loaded.path.name, "backbone": loaded.cfg.model.backbone, **loaded.info}
    meta = metadata(json.dumps(loaded.cfg.to_dict()), loaded.spec, "main" not in loaded.members, loaded.mean,
                    loaded.std, loaded.offsets, info)
    for key, value in meta.items():
        graph.metadata_props.add(key=key, value=value)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, lambda fh: fh.write(graph.SerializeToString()))
    return out


def export_onnx(checkpoint: Path, out: Path, check: list[Path] | None = None) -> ExportResult:
    """Write `out` (.onnx) from a checkpoint, then compare ONNX Runtime with torch on real face crops.

    `check` lists images or folders for the parity check (default: the checkpoint's training data). A failed
    check raises ParityError and removes `out`.
    """
    loaded = load_model(checkpoint, torch.device("cpu"))
    crops = check_crops(loaded, check or [Path(loaded.cfg.data.root)])
    out = write_onnx(loaded, out)
    result = parity(loaded, load_onnx(out), crops)
    if result["max_abs_diff"] > PARITY_TOLERANCE or not result["argmax_agree"]:
        out.unlink()
        raise ParityError(f"{out}: ONNX Runtime disagrees with torch ({json.dumps(result)}); file removed")
    return ExportResult(out, result)
