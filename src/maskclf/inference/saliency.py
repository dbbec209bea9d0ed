"""Grad-CAM per head (mask, gender, age): where a timm CNN backbone looks for each answer.

Hand-written rather than taken from the `grad-cam` package: that package needs a model returning one tensor (ours
returns a dict of heads) and pulls in the GUI build of OpenCV beside our headless one. The method is the paper's
(Selvaraju et al. 2017): weight the last feature map's channels by the mean gradient of the head's score and keep
the positive part.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib import colormaps
from PIL import Image

from maskclf.data.transforms import build_eval_transform
from maskclf.faces.detect import crop_images
from maskclf.inference.predict import LoadedModel, load_model
from maskclf.labels import HEADS, attribute_names
from maskclf.models.heads import HeadSpec, attribute_probs
from maskclf.utils.plots import mosaic

# The heads whose raw logits are the attribute's own scores; any other way of reading an attribute (an 18-way
# head, age bins or a regression) is explained through the log of the attribute probability instead.
DIRECT_HEADS = ("mask", "gender", "age")
EXPLAIN_PX = 224  # side of the crop and of each overlay in an explain PNG


@dataclass
class Saliency:
    """Per head: (N, S, S) maps in [0, 1], the value explained for each image and its probability."""

    maps: dict[str, np.ndarray]
    values: dict[str, np.ndarray]
    probs: dict[str, np.ndarray]


def _feature_map(backbone: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    forward_features = getattr(backbone, "forward_features", None)
    if forward_features is None:
        raise ValueError(f"Grad-CAM needs a timm CNN backbone; {type(backbone).__name__} has no forward_features")
    features = forward_features(x)
    if features.ndim != 4:
        raise ValueError(f"Grad-CAM needs a CNN backbone whose features are (N, C, H, W) maps; "
                         f"{type(backbone).__name__} gives shape {tuple(features.shape)}")
    return features


def _scores(outputs: dict[str, torch.Tensor], spec: HeadSpec, values: dict[str, torch.Tensor]) -> dict:
    """The scalar per image that Grad-CAM explains for each attribute the model answers."""
    probs = attribute_probs(outputs, spec)
    out = {}
    for attr, v in values.items():
        direct = attr in outputs and attr in DIRECT_HEADS and not (attr == "age" and spec.age_mode != "classes")
        row = outputs[attr] if direct else probs[attr].clamp_min(1e-12).log()
        out[attr] = row.gather(1, v[:, None]).squeeze(1)
    return out


def grad_cam(model: torch.nn.Module, spec: HeadSpec, x: torch.Tensor, size: int,
             values: dict[str, torch.Tensor] | None = None) -> Saliency:
    """Grad-CAM maps (resized to `size`) per attribute of a normalised batch `x`; default: of the predicted values."""
    model.eval()
    maps = {}
    with torch.enable_grad():
        features = _feature_map(model.backbone, x.detach())
        outputs = model.forward_map(features)
        probs = {k: v.detach() for k, v in attribute_probs(outputs, spec).items()}
        values = values or {k: p.argmax(1) for k, p in probs.items()}
        scores = _scores(outputs, spec, values)
        for i, (name, score) in enumerate(scores.items()):
            grad = torch.autograd.grad(score.sum(), features, retain_graph=i + 1 < len(scores))[0]
            maps[name] = _cam(features.detach(), grad, size)
    return Saliency(maps, {k: v.cpu().numpy() for k, v in values.items()},
                    {k: probs[k].gather(1, values[k][:, None]).squeeze(1).cpu().numpy() for k in values})


def _cam(features: torch.Tensor, grad: torch.Tensor, size: int) -> np.ndarray:
    """ReLU of the gradient-weighted channel sum, upsampled to `size` and scaled to a maximum of 1 per image."""
    cam = F.relu((grad.mean(dim=(2, 3), keepdim=True) * features).sum(dim=1, keepdim=True))
    cam = F.interpolate(cam, size=(size, size), mode="bilinear", align_corners=False).squeeze(1)
    peak = cam.flatten(1).amax(dim=1).clamp_min(1e-12)[:, None, None]
    return (cam / peak).cpu().numpy()


def explain_crops(loaded: LoadedModel, crops: np.ndarray, device: torch.device) -> Saliency:
    """Grad-CAM of every head of a loaded checkpoint (all members of a separate layout) for uint8 face crops."""
    transform = build_eval_transform(loaded.cfg.train.input_size, loaded.mean, loaded.std)
    x = transform(torch.from_numpy(np.ascontiguousarray(crops)).to(device))
    parts = [grad_cam(model, spec, x, crops.shape[1]) for model, spec in loaded.members.values()]
    merged = Saliency({}, {}, {})
    for part in parts:
        for field in ("maps", "values", "probs"):
            getattr(merged, field).update(getattr(part, field))
    return merged


def overlay(crop: np.ndarray, cam: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """A uint8 crop with its map blended on top in the 'jet' colours (red: where the head looks)."""
    heat = colormaps["jet"](np.clip(cam, 0.0, 1.0))[..., :3] * 255.0
    return np.clip((1 - alpha) * crop.astype(np.float64) + alpha * heat, 0, 255).astype(np.uint8)


def panels(crops: np.ndarray, sal: Saliency, bounds, labels: list[str] | None = None) -> tuple[np.ndarray, list[str]]:
    """Rows of [crop, one overlay per head] with titles naming each head's answer and its probability."""
    names = attribute_names(bounds)
    heads = [h for h in HEADS if h in sal.maps]
    images, titles = [], []
    for i, crop in enumerate(crops):
        images.append(crop)
        titles.append(labels[i] if labels else "face crop")
        for h in heads:
            images.append(overlay(crop, sal.maps[h][i]))
            titles.append(f"{h}: {names[h][int(sal.values[h][i])]} {sal.probs[h][i]:.2f}")
    return np.stack(images), titles


def explain_images(checkpoint: Path, paths: list[Path], out_dir: Path,
                   device: torch.device) -> tuple[list[Path], dict[str, str]]:
    """Crop each photo's face as training did and write `<out_dir>/<stem>.gradcam.png`; unreadable photos are listed."""
    loaded = load_model(checkpoint, device)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written, failed = [], {}
    for path, result in zip(paths, crop_images(list(paths), loaded.cfg.prepare)):
        if result.error is not None:
            failed[str(path)] = result.error
            continue
        crop = result.crop[None]
        label = Path(path).name + (" (no face found: fixed box)" if result.fallback else "")
        images, titles = panels(crop, explain_crops(loaded, crop, device), loaded.spec.bounds, [label])
        out = out_dir / f"{Path(path).stem}.gradcam.png"
        Image.fromarray(mosaic(images, titles, ncols=len(images), px=EXPLAIN_PX)).save(out)
        written.append(out)
    return written, failed
