"""Every example config in configs/ loads and builds its components (typos in examples are bugs)."""

from pathlib import Path

import numpy as np
import pytest
import torch

from maskclf.config import load_config
from maskclf.labels import AgeBounds
from maskclf.losses import build_criterion
from maskclf.optim import build_optimizer, build_scheduler
from maskclf.sampling import build_sampler
from maskclf.targets import class_counts, head_spec
from maskclf.transforms import build_augment

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
