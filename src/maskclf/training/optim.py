"""Optimisers from timm (no weight decay on 1-D params) and lr schedules behind one Schedule interface."""

from __future__ import annotations

import bisect
import math
from typing import Callable

import torch
from timm.optim import create_optimizer_v2, get_optimizer_class
from torch import nn

from maskclf.config import NamedCfg
from maskclf.utils.named import Choices

# Our defaults on top of each optimiser's own, explicit so they do not move with timm versions.
OPTIMIZERS = {
    "sgd": {"momentum": 0.9, "nesterov": True},
    "adam": {},
    "adamw": {},
    "adamp": {},
    "madgrad": {},
}


OPTIMIZER_CHOICES = Choices("optimizer", dict.fromkeys(OPTIMIZERS, create_optimizer_v2), filled=("params",),
                            defaults=OPTIMIZERS,
                            signature_of=lambda name: get_optimizer_class(name, bind_defaults=False).__init__)


def optimizer_params(name: str) -> list[str]:
    """The params the named optimiser accepts (its constructor's keyword arguments)."""
    OPTIMIZER_CHOICES.entry(name)
    return OPTIMIZER_CHOICES.valid_params(name)


def build_optimizer(model: nn.Module, cfg: NamedCfg) -> torch.optim.Optimizer:
    """Optimiser over the model's trainable parameters; weight decay skips 1-D params (biases, norms)."""
    OPTIMIZER_CHOICES.entry(cfg.name)
    params = OPTIMIZER_CHOICES.params(cfg)
    if isinstance(params.get("betas"), list):
        params["betas"] = tuple(params["betas"])
    return OPTIMIZER_CHOICES.call(cfg, create_optimizer_v2, model, opt=cfg.name, filter_bias_and_bn=True,
                                  errors=(TypeError, ValueError), **params)


# ---- learning-rate schedules -------------------------------------------------------------------------------
# lr(group) = initial_lr(group) * warm-up(e) * shape(e), with e = optimiser steps / steps_per_epoch (fractional
# epochs). Warm-up ramps linearly from warmup_lr_ratio to 1 over warmup_epochs; step and multistep count epochs
# from the start of training, cosine/cyclic/onecycle run over the epochs after the warm-up.


def _number(name: str, value, low: float = -math.inf, high: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ValueError(f"scheduler param '{name}' must be a number in [{low}, {high}], got {value!r}")
    return float(value)


def _constant(span: tuple[float, float]) -> Callable[[float], float]:
    return lambda e: 1.0


def _step(span, step_size: float, gamma: float = 0.1):
    step_size, gamma = _number("step_size", step_size, 1e-9), _number("gamma", gamma, 0.0)
    return lambda e: gamma ** math.floor(e / step_size + 1e-9)


def _multistep(span, milestones: list[float], gamma: float = 0.1):
    bounds = sorted(_number("milestones", m, 0.0) for m in milestones)
    gamma = _number("gamma", gamma, 0.0)
    return lambda e: gamma ** bisect.bisect_right(bounds, e + 1e-9)


def _cosine(span, min_lr_ratio: float = 0.0, restart_epochs: float | None = None, restart_mult: float = 1.0):
    """Cosine from 1 to min_lr_ratio; with restart_epochs, restarts after cycles of that length x restart_mult^k."""
    start, end = span
    low = _number("min_lr_ratio", min_lr_ratio, 0.0, 1.0)
    first = end - start if restart_epochs is None else _number("restart_epochs", restart_epochs, 1e-9)
    mult = _number("restart_mult", restart_mult, 1.0)

    def shape(e: float) -> float:
        s, length = max(e - start, 0.0), first
        while s >= length - 1e-9 and restart_epochs is not None:
            s, length = s - length, length * mult
        return low + (1 - low) * 0.5 * (1 + math.cos(math.pi * min(s / length, 1.0)))

    return shape


def _cyclic(span, cycle_epochs: float = 2.0, min_lr_ratio: float = 0.1):
    """Triangle starting at the peak: down to min_lr_ratio at half a cycle, back up at its end."""
    start = span[0]
    cycle, low = _number("cycle_epochs", cycle_epochs, 1e-9), _number("min_lr_ratio", min_lr_ratio, 0.0, 1.0)
    return lambda e: low + (1 - low) * abs(1 - 2 * ((max(e - start, 0.0) / cycle) % 1.0))


def _onecycle(span, pct_start: float = 0.3, div_factor: float = 25.0, final_div_factor: float = 1e4):
    """OneCycleLR-style: cosine from 1/div_factor up to 1 over pct_start, then down to 1/(div*final_div)."""
    start, end = span
    pct = _number("pct_start", pct_start, 1e-9, 1.0)
    first = 1.0 / _number("div_factor", div_factor, 1.0)
    last = first / _number("final_div_factor", final_div_factor, 1.0)

    def anneal(a: float, b: float, x: float) -> float:
        return b + (a - b) * 0.5 * (1 + math.cos(math.pi * x))

    def shape(e: float) -> float:
        x = min(max(e - start, 0.0) / (end - start), 1.0)
        return anneal(first, 1.0, x / pct) if x < pct else anneal(1.0, last, (x - pct) / max(1 - pct, 1e-9))

    return shape


class Plateau:
    """Reduce-on-plateau as a shape (mode max): x factor after more than `patience` epochs without a new best.

    A new best must beat the old one by more than `threshold` (absolute, as metrics like F1 live in [0, 1]).
    """

    def __init__(self, span, factor: float = 0.1, patience: int = 2, threshold: float = 1e-4,
                 min_lr_ratio: float = 0.0):
        self.factor = _number("factor", factor, 0.0, 1.0)
        self.patience = int(_number("patience", patience, 0))
        self.threshold = _number("threshold", threshold, 0.0)
        self.min_lr_ratio = _number("min_lr_ratio", min_lr_ratio, 0.0, 1.0)
        self.scale, self.best, self.bad_epochs = 1.0, -math.inf, 0

    def __call__(self, e: float) -> float:
        return self.scale

    def update(self, metric: float) -> None:
        """Take one epoch's validation metric; cut the scale after `patience` bad epochs."""
        if metric > self.best + self.threshold:
            self.best, self.bad_epochs = metric, 0
            return
        self.bad_epochs += 1
        if self.bad_epochs > self.patience:
            self.scale, self.bad_epochs = max(self.scale * self.factor, self.min_lr_ratio), 0

    def state_dict(self) -> dict:
        return {"scale": self.scale, "best": self.best, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict) -> None:
        self.scale, self.best, self.bad_epochs = state["scale"], state["best"], state["bad_epochs"]


SCHEDULES = {
    "constant": _constant,
    "step": _step,
    "multistep": _multistep,
    "cosine": _cosine,
    "cyclic": _cyclic,
    "onecycle": _onecycle,
    "plateau": Plateau,
}


class Schedule:
    """Sets every param group's lr each optimiser step; the engine never needs to know which schedule it is."""

    def __init__(self, optimizer: torch.optim.Optimizer, shape: Callable[[float], float], steps_per_epoch: int,
                 warmup_epochs: float = 0.0, warmup_lr_ratio: float = 0.01, epochs: int | None = None,
                 make_shape: Callable[[int], Callable[[float], float]] | None = None):
        self.optimizer, self.shape, self.steps_per_epoch = optimizer, shape, steps_per_epoch
        self.warmup_epochs, self.warmup_lr_ratio = warmup_epochs, warmup_lr_ratio
        self.epochs, self.make_shape = epochs, make_shape  # make_shape(end, warm-up) rebuilds it for retarget()
        self.planned_warmup = warmup_epochs  # the configured warm-up, which a shortened plan scales down
        self.iteration, self.epoch = 0, 0
        self._apply()

    @property
    def lr(self) -> float:
        """The current learning rate of the first param group."""
        return self.optimizer.param_groups[0]["lr"]

    @property
    def progress(self) -> float:
        """Optimiser steps taken as a fraction of the planned schedule (1 at its end)."""
        return self.iteration / (self.epochs * self.steps_per_epoch) if self.epochs else 0.0

    def multiplier(self, iteration: int) -> float:
        """The lr factor at optimiser step `iteration` (warm-up times shape)."""
        e = iteration / self.steps_per_epoch
        warm = 1.0
        if e < self.warmup_epochs:
            warm = self.warmup_lr_ratio + (1 - self.warmup_lr_ratio) * e / self.warmup_epochs
        return warm * self.shape(e)

    def step_batch(self) -> None:
        """Call after every optimiser step."""
        self.iteration += 1
        self._apply()

    def step_epoch(self, metric: float | None = None) -> None:
        """Call after each epoch (with the validation metric for plateau); snaps the clock to the epoch boundary."""
        self.epoch += 1
        self.iteration = self.epoch * self.steps_per_epoch
        if isinstance(self.shape, Plateau):
            if metric is None:
                raise ValueError("the plateau schedule needs the validation metric in step_epoch(metric)")
            self.shape.update(metric)
        self._apply()

    def retarget(self, epochs: float, warmup_epochs: float | None = None) -> None:
        """End the schedule at `epochs` (may be fractional) instead, with the warm-up ending at `warmup_epochs`
        (None: unchanged), at the same position: a shortened run still anneals."""
        if self.make_shape is None:
            raise ValueError("this schedule was built without make_shape, so it cannot be retargeted")
        warmup = self.warmup_epochs if warmup_epochs is None else warmup_epochs
        if not warmup < epochs:
            raise ValueError(f"cannot end the schedule at epoch {epochs:g}: the warm-up lasts {warmup:g}")
        plateau = self.shape.state_dict() if isinstance(self.shape, Plateau) else None
        self.warmup_epochs = warmup
        self.shape, self.epochs = self.make_shape(epochs, warmup), epochs
        if plateau is not None:
            self.shape.load_state_dict(plateau)
        self._apply()

    def state_dict(self) -> dict:
        state = {"iteration": self.iteration, "epoch": self.epoch, "epochs": self.epochs, "warmup_epochs": self.warmup_epochs}
        if isinstance(self.shape, Plateau):
            state["plateau"] = self.shape.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        epochs = state.get("epochs")  # absent in checkpoints from before retarget()
        warmup = state.get("warmup_epochs", self.warmup_epochs)
        if epochs is not None and (epochs, warmup) != (self.epochs, self.warmup_epochs):
            self.retarget(epochs, warmup)
        self.iteration, self.epoch = state["iteration"], state["epoch"]
        if isinstance(self.shape, Plateau):
            self.shape.load_state_dict(state["plateau"])
        self._apply()

    def _apply(self) -> None:
        m = self.multiplier(self.iteration)
        for group in self.optimizer.param_groups:
            group["lr"] = group.setdefault("initial_lr", group["lr"]) * m


SCHEDULE_CHOICES = Choices("scheduler", SCHEDULES, filled=("span",), shared=("warmup_epochs", "warmup_lr_ratio"))


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: NamedCfg, epochs: int,
                    steps_per_epoch: int) -> Schedule:
    """A Schedule from `{name, params}`; every schedule also takes warmup_epochs and warmup_lr_ratio."""
    factory = SCHEDULE_CHOICES.entry(cfg.name)
    params = SCHEDULE_CHOICES.params(cfg)
    if steps_per_epoch < 1 or epochs < 1:
        raise ValueError(f"need epochs >= 1 and steps_per_epoch >= 1, got {epochs} and {steps_per_epoch}")
    warmup = _number("warmup_epochs", params.pop("warmup_epochs", 0.0), 0.0)
    if warmup >= epochs:
        raise ValueError(f"scheduler warm-up ({warmup:g} epochs) must be shorter than training ({epochs} epochs): "
                         "lower train.scheduler.params.warmup_epochs or raise train.epochs")
    ratio = _number("warmup_lr_ratio", params.pop("warmup_lr_ratio", 0.01), 0.0, 1.0)

    def make_shape(end: float, start: float = warmup) -> Callable[[float], float]:
        return factory((start, float(end)), **params)

    shape = SCHEDULE_CHOICES.call(cfg, make_shape, epochs)
    return Schedule(optimizer, shape, steps_per_epoch, warmup, ratio, epochs, make_shape)
