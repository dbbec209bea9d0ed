"""Config checks that need the builders: every `{name, params}`, augmentation and head weights, before any data.

The schema (config.py) knows keys and types; only the builders know which names exist and what params each
takes, so each section is built once here on a stand-in (a 2x2 linear layer, one label per class).
"""

from __future__ import annotations

import numpy as np
import torch

from maskclf.config import Config, ConfigError
from maskclf.data.samplers import build_sampler
from maskclf.data.train_data import bounds_of
from maskclf.data.transforms import build_augment
from maskclf.labels import NUM_CLASSES
from maskclf.models.heads import head_spec
from maskclf.training.build import fitted_schedule, member_plan, size_ramp
from maskclf.training.losses import build_criterion
from maskclf.training.optim import build_optimizer, build_scheduler


def check_config(cfg: Config) -> None:
    """ConfigError naming the section when a name, a param or a value in `cfg` would fail at build time."""
    t = cfg.train
    layer = torch.nn.Linear(2, 2)
    checks = {
        "train.optimizer": lambda: build_optimizer(layer, t.optimizer),
        "train.scheduler": lambda: build_scheduler(torch.optim.SGD(layer.parameters(), lr=0.1), fitted_schedule(t),
                                                   t.epochs, 1),
        "train.sampler": lambda: build_sampler(t.sampler, np.arange(NUM_CLASSES), t.seed),
        "train.augment": lambda: build_augment(t.augment.preset, t.input_size, (0.5,) * 3, (0.5,) * 3,
                                               **t.augment.params),
        "train.resize": lambda: size_ramp(t),
        "model": lambda: head_spec(cfg.model.head, cfg.model.age, bounds_of(cfg.data), cfg.model.age_bin_width),
        "train.loss / train.head_losses": lambda: _check_losses(cfg),
    }
    for key, check in checks.items():
        try:
            check()
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"invalid config: {key}: {exc}") from None


def _check_losses(cfg: Config) -> None:
    """Build every member's criterion with one example per class."""
    t = cfg.train
    spec = head_spec(cfg.model.head, cfg.model.age, bounds_of(cfg.data), cfg.model.age_bin_width)
    for ms in member_plan(spec, cfg.model.head):
        regression = ms.spec.age_mode == "regression"
        counts = {h: np.ones(3 if h == "age" and regression else n, dtype=np.int64) for h, n in ms.spec.heads.items()}
        build_criterion(ms.spec.heads, t.loss, t.head_losses, cfg.model.head_weights, counts, t.class_weighted,
                        age_regression=regression)
