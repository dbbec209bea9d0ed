"""What `fit` builds from the config for each member: model, loss, optimiser, schedule, sampler, augmentation."""

from __future__ import annotations

import math
import warnings
from functools import partial

import torch

from maskclf.config import LANDMARK_DETECTORS, PAINT_MASKS_AUTO, Config, NamedCfg, TrainCfg
from maskclf.data.loader import CropSet, epoch_order
from maskclf.data.mixing import mix_batch
from maskclf.data.samplers import build_sampler
from maskclf.data.transforms import build_augment, build_eval_transform
from maskclf.models.frozen_backbones import FROZEN_BACKBONES
from maskclf.models.heads import HeadSpec, class_counts, make_targets
from maskclf.models.network import build_model
from maskclf.training.engine import StepParts, batches_per_epoch
from maskclf.training.losses import build_criterion
from maskclf.training.member import LoopPlan, MemberParts, MemberSpec
from maskclf.training.optim import build_optimizer, build_scheduler
from maskclf.training.resize import SizeRamp
from maskclf.utils.runtime import Dist, grad_scaler, memory_format, shard, wrap_ddp


def member_plan(spec: HeadSpec, head: str) -> list[MemberSpec]:
    """The models a head layout trains: three single-attribute ones for "separate", else one "main"."""
    if head == "separate":
        return [MemberSpec(n, spec.only(n)) for n in ("mask", "gender", "age")]
    return [MemberSpec("main", spec)]


def loop_plan(cfg: Config) -> LoopPlan:
    """The epoch loop's settings; the separate layout's models share train.time_budget_min equally."""
    t = cfg.train
    n_members = 3 if cfg.model.head == "separate" else 1
    budget_s = t.time_budget_min * 60 / n_members if t.time_budget_min else None
    return LoopPlan(t.epochs, t.seed, t.patience, budget_s, t.fit_budget)


def fitted_schedule(t: TrainCfg) -> NamedCfg:
    """train.scheduler with its warm-up cut to half the run when it would not fit (e.g. train.epochs=1)."""
    warmup = t.scheduler.params.get("warmup_epochs", 0)
    if isinstance(warmup, bool) or not isinstance(warmup, (int, float)) or warmup < t.epochs:
        return t.scheduler
    return NamedCfg(name=t.scheduler.name, params={**t.scheduler.params, "warmup_epochs": t.epochs / 2})


def size_ramp(t: TrainCfg) -> SizeRamp | None:
    """train.resize as a SizeRamp, or None when progressive resizing is off."""
    return None if t.resize.start is None else SizeRamp(t.resize.start, t.input_size, t.resize.until)


def paint_probability(cfg: Config) -> float:
    """train.augment.paint_masks as a probability: "auto" paints where the crops keep landmarks and the backbone
    trains (a frozen feature backbone would re-encode every painted chip), and not otherwise."""
    p = cfg.train.augment.paint_masks
    if p != "auto":
        return float(p)
    paintable = cfg.prepare.detector in LANDMARK_DETECTORS and cfg.model.backbone not in FROZEN_BACKBONES
    return PAINT_MASKS_AUTO if paintable else 0.0


def descriptor_reuse_problem(cfg: Config) -> str | None:
    """Why a frozen-feature backbone (dlib_face, agender_wrn) would re-encode every crop every epoch, or None."""
    name = cfg.model.backbone
    if name not in FROZEN_BACKBONES:
        return None
    a = cfg.train.augment
    changes = [f"augment preset '{a.preset}'"] if a.preset != "base" else []
    changes += [f"augment.params {sorted(a.params)}"] if a.params else []
    changes += ["mixup/cutmix"] if a.mixup > 0 or a.cutmix > 0 else []
    changes += ["train.augment.paint_masks"] if paint_probability(cfg) > 0 else []
    if not changes:
        return None
    return (f"{name} features are remembered per exact input chip, but {', '.join(changes)} changes the chips "
            f"every epoch, so every epoch pays the frozen network's full cost ({FROZEN_BACKBONES[name].cost}); "
            "use train.augment.preset=base to encode each crop once")


def build_member(cfg: Config, ms: MemberSpec, train_set: CropSet, device: torch.device, dist: Dist) -> MemberParts:
    """The model and every training part of one member, on `device`."""
    t = cfg.train
    problem = descriptor_reuse_problem(cfg)
    if problem:
        warnings.warn(problem, stacklevel=2)
    frozen = FROZEN_BACKBONES.get(cfg.model.backbone)
    if frozen and not cfg.model.head_bn:
        warnings.warn(f"{cfg.model.backbone}: {frozen.scale_note}, so linear heads underfit without "
                      f"model.head_bn=true; see {frozen.config}", stacklevel=2)
    model = build_model(cfg.model, ms.spec.heads).to(device)
    model = model.to(memory_format=memory_format(t.channels_last))
    sampler = build_sampler(t.sampler, train_set.labels, t.seed)
    n_per_epoch = len(shard(epoch_order(len(train_set), t.seed, 0, sampler), dist))  # this rank's steps
    steps = max(1, math.ceil(batches_per_epoch(n_per_epoch, t.batch_size) / t.accum_steps))
    dc = model.data_config
    criterion = build_criterion(ms.spec.heads, t.loss, t.head_losses, cfg.model.head_weights,
                                class_counts(train_set.labels, train_set.ages, ms.spec), t.class_weighted,
                                age_regression=ms.spec.age_mode == "regression").to(device)
    optimizer = _optimizer(model, t.optimizer)
    step = StepParts(
        criterion=criterion, optimizer=optimizer,
        schedule=build_scheduler(optimizer, fitted_schedule(t), t.epochs, steps),
        make_targets=lambda labels, ages: make_targets(labels, ages, ms.spec),
        augment=build_augment(t.augment.preset, t.input_size, dc["mean"], dc["std"], **t.augment.params),
        batch_size=t.batch_size, mix=_mixer(t), scaler=grad_scaler(device, t.amp), ema=_ema(model, t.ema),
        accum_steps=t.accum_steps, clip_grad=t.clip_grad, amp=t.amp and device.type == "cuda",
        memory_format=memory_format(t.channels_last), ramp=size_ramp(t))
    train_model = wrap_ddp(torch.compile(model) if t.compile else model, device, dist)
    return MemberParts(ms, model, train_model, step, sampler, build_eval_transform(t.input_size, dc["mean"], dc["std"]))


def _optimizer(model: torch.nn.Module, cfg: NamedCfg) -> torch.optim.Optimizer:
    """The optimiser over every parameter, frozen ones included."""
    # timm leaves out parameters that don't need grad; frozen ones must still be in the optimiser for unfreeze_epoch.
    frozen = [p for p in model.parameters() if not p.requires_grad]
    for p in frozen:
        p.requires_grad_(True)
    optimizer = build_optimizer(model, cfg)
    for p in frozen:
        p.requires_grad_(False)
    return optimizer


def _mixer(t: TrainCfg):
    """(x, targets, generator) -> mixed (x, targets), or None when Mixup and CutMix are off."""
    a = t.augment
    if a.mixup <= 0 and a.cutmix <= 0:
        return None
    mixer = partial(mix_batch, mixup_p=a.mixup, cutmix_p=a.cutmix, alpha=a.mix_alpha, mode=a.cutmix_mode)
    return lambda x, targets, gen: mixer(x, targets, generator=gen)[:2]


def _ema(model: torch.nn.Module, decay: float):
    """timm's ModelEmaV3 of `model`, or None when train.ema is 0."""
    if decay <= 0:
        return None
    from timm.utils import ModelEmaV3

    return ModelEmaV3(model, decay=decay)
