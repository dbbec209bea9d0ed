"""The epoch loop of one model ("member"): train, validate, early-stop, checkpoint. It takes built objects only."""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from sklearn.metrics import f1_score

from maskclf.data.loader import CropSet, epoch_order
from maskclf.inference.forward import predict_outputs
from maskclf.labels import HEADS, decode
from maskclf.metrics import score_probs
from maskclf.models.heads import HeadSpec, attribute_probs, make_targets, member_probs, probs18, to_probs18
from maskclf.training.engine import StepParts, train_one_epoch
from maskclf.training.resize import fit_epochs, mean_cost
from maskclf.training.state import MemberState, RunProgress, save_last, training_state
from maskclf.utils.plots import confusion_figure, image_grid_figure
from maskclf.utils.runtime import Dist, shard
from maskclf.utils.tracking import metrics_row


@dataclass
class MemberSpec:
    """One model of the run: "main", or "mask"/"gender"/"age" for the separate layout, with its heads."""

    name: str
    spec: HeadSpec

    @property
    def prefix(self) -> str:
        """Metric-key prefix: none for "main", "<name>/" for a separate model."""
        return "" if self.name == "main" else f"{self.name}/"


@dataclass
class MemberParts:
    """One member's built objects: the model and everything its training steps and validation need."""

    spec: MemberSpec
    model: torch.nn.Module
    train_model: torch.nn.Module  # `model`, compiled and/or DDP-wrapped for the training steps
    step: StepParts
    sampler: object | None
    eval_transform: Callable

    @property
    def eval_model(self) -> torch.nn.Module:
        """The weights validation scores: the EMA copy when there is one."""
        return self.step.ema.module if self.step.ema is not None else self.model


@dataclass(frozen=True)
class LoopPlan:
    """The epoch loop's settings."""

    epochs: int
    seed: int
    patience: int
    budget_s: float | None = None  # this member's share of train.time_budget_min, in seconds
    fit_budget: bool = True


@dataclass
class RunContext:
    """Where a member's epochs go: the run folder, its tracker and last.pt, and the caller's hooks."""

    run_dir: Path
    device: torch.device
    tracker: object
    progress: RunProgress  # updated and written to last.pt after every epoch
    describe: Callable[[MemberParts], dict]  # the self-describing part of a checkpoint for one member
    wall: Callable[[], float]  # wall seconds of the whole run so far (every session)
    dist: Dist = field(default_factory=Dist)
    show: bool = True  # progress bars and one line per epoch
    on_epoch: Callable | None = None  # on_epoch(member, epoch, score) after each validation, e.g. tuning's pruning
    clock: Callable[[], float] = time.monotonic  # times the first epoch for train.fit_budget
    step_clock: Callable[[], float] = time.monotonic  # times the first steps: a budget shorter than an epoch


@dataclass
class Validation:
    """One validation pass: raw outputs, the member's score, its report and the validation loss."""

    outputs: dict
    score: float
    report: dict
    loss: float


def member_outputs(m: MemberParts, model: torch.nn.Module, data: CropSet, device, progress: bool,
                   desc: str) -> dict[str, torch.Tensor]:
    """Head outputs of `model` over `data`, with the member's eval transform, AMP and memory format."""
    return predict_outputs(model, data, m.eval_transform, device, amp=m.step.amp, memory_format=m.step.memory_format,
                           desc=desc if progress else None)


def member_score(outputs: dict, spec: HeadSpec, labels: np.ndarray, name: str) -> tuple[float, dict]:
    """Validation score of one member: 18-class macro F1, or its attribute's macro F1 in the separate layout."""
    if name == "main":
        report = score_probs(labels, probs18(outputs, spec).numpy(), spec.bounds)
        return report["f1"], report
    idx = list(HEADS).index(name)
    truth = np.asarray(decode(labels))[idx]
    pred = attribute_probs(outputs, spec)[name].argmax(1).numpy()
    f1 = f1_score(truth, pred, labels=list(range(HEADS[name])), average="macro", zero_division=0)
    return float(f1), {"f1": float(f1), "accuracy": float((truth == pred).mean())}


def validate(m: MemberParts, val_set: CropSet, device, progress: bool) -> Validation:
    """Score the member's eval weights on the validation set (outputs, score, report, loss)."""
    outputs = member_outputs(m, m.eval_model, val_set, device, progress, "validate")
    score, report = member_score(outputs, m.spec.spec, val_set.labels, m.spec.name)
    with torch.no_grad():
        targets = make_targets(torch.from_numpy(val_set.labels), torch.from_numpy(val_set.ages), m.spec.spec)
        loss = float(m.step.criterion({k: v.to(device) for k, v in outputs.items()},
                                      {k: v.to(device) for k, v in targets.items()})[0])
    return Validation(outputs, score, report, loss)


def train_member(m: MemberParts, sets: tuple[CropSet, CropSet], plan: LoopPlan, state: MemberState,
                 run: RunContext) -> MemberState:
    """Train `m` on from `state` (fresh, or restored from last.pt) until early stop, budget or the last epoch.

    Under torchrun each rank trains on its slice of the epoch's order; all ranks validate on the whole
    validation set (identical replicas reach identical decisions) and only rank 0 writes. Ends with the
    member's best weights loaded.
    """
    train_set, val_set = sets
    state.epochs_planned = state.epochs_planned or plan.epochs
    for epoch in range(state.epochs_run, plan.epochs):
        began = run.clock()
        probe = _FirstEpochProbe(m, state, plan, run, len(val_set)) if _probe_due(state, plan, run) else None
        stats, seen = _train_epoch(m, train_set, plan, epoch, run, state.epochs_planned, probe=probe)
        val = validate(m, val_set, run.device, run.show)
        m.step.schedule.step_epoch(val.score)
        improved = _record(state, m, epoch, seen, stats["seconds"], val.score)
        epoch_s = run.clock() - began
        state.budget_seconds += epoch_s
        pace = _full_size_pace(epoch_s, seen, len(val_set), m.step, epoch, state.epochs_planned)
        if plan.budget_s is not None and plan.fit_budget and _replan_due(state, epoch, pace):
            _plan_budget(state, m.step, plan, (epoch_s, seen, len(val_set), pace), m.spec.prefix, run.dist.main)
        finished = _settle_stop(state, plan, epoch)
        row = _epoch_row(m.spec.prefix, epoch, {**stats, "images": seen}, val)
        if run.dist.main:  # checkpoint first, then log: a resume re-logs a missing row from last.pt (repair_log)
            _save(m, state, row, finished, run)
        _log(run.tracker, m, epoch, row, val, val_set, improved)
        if run.show:
            print(f"{m.spec.prefix}epoch {epoch + 1}/{state.epochs_planned:g}  loss {stats['loss']:.4f}  "
                  f"val_loss {val.loss:.4f}  val_f1 {val.score:.4f}{'  *best*' if improved else ''}  "
                  f"{stats['images_per_s']:.0f} img/s")
        if run.on_epoch is not None:
            run.on_epoch(m.spec.name, epoch, val.score)
        if finished:
            break
    m.model.load_state_dict(state.best_state)
    return state


def refit_member(m: MemberParts, train_set: CropSet, plan: LoopPlan, run: RunContext) -> MemberState:
    """Train `m` for exactly `plan.epochs` on `train_set` with no validation (train.refit); its eval weights are
    the state's best_state. Not checkpointed per epoch: a killed refit starts again."""
    state = MemberState(epochs_planned=plan.epochs, stop_reason=f"refit: {plan.epochs} epochs on train + validation")
    for epoch in range(plan.epochs):
        stats, seen = _train_epoch(m, train_set, plan, epoch, run, plan.epochs, "refit ")
        m.step.schedule.step_epoch()
        state.epochs_run, state.best_epoch = epoch + 1, epoch
        state.images_trained += seen
        state.train_seconds += stats["seconds"]
        if run.show:
            print(f"{m.spec.prefix}refit epoch {epoch + 1}/{plan.epochs}  loss {stats['loss']:.4f}  "
                  f"{stats['images_per_s']:.0f} img/s")
    state.best_state = copy.deepcopy({k: v.detach().cpu() for k, v in m.eval_model.state_dict().items()})
    return state


def _train_epoch(m: MemberParts, train_set: CropSet, plan: LoopPlan, epoch: int, run: RunContext, planned: float,
                 what: str = "", probe: _FirstEpochProbe | None = None):
    """One epoch over this rank's slice of the epoch order (the planned part of it when the plan ends inside
    this epoch, or where `probe` ends it): (engine stats, images seen)."""
    m.model.set_epoch(epoch)
    order = shard(epoch_order(len(train_set), plan.seed, epoch, m.sampler), run.dist)
    if planned < epoch + 1:  # a budget plan in optimiser steps ends part-way through this epoch
        steps = round((planned - epoch) * m.step.schedule.steps_per_epoch)
        order = order[:max(1, steps) * m.step.batch_size]
    # Each rank draws its own augmentations; a single process keeps the seeds it always had.
    gen = torch.Generator(device=run.device).manual_seed((plan.seed * 100_003 + epoch) * run.dist.world + run.dist.rank)
    desc = f"{m.spec.prefix}{what}epoch {epoch + 1}/{planned:g}"
    if probe is not None:
        probe.begin(len(order))
    stats = train_one_epoch(m.train_model, train_set, order, m.step, run.device, gen, desc if run.show else None,
                            after_batch=probe)
    return stats, (probe.stopped_at if probe is not None and probe.stopped_at else len(order))


def _probe_due(state: MemberState, plan: LoopPlan, run: RunContext) -> bool:
    """Time the first steps of a fresh run with a fitted budget: the budget may not hold one whole epoch.
    Single process only: under torchrun the ranks' clocks would disagree on where to stop."""
    return (plan.budget_s is not None and plan.fit_budget and state.epochs_run == 0 and state.pace_s is None
            and run.dist.world == 1)


PROBE_FRACTION = 0.05  # the first epoch is timed over its first 5 % of steps (at least PROBE_MIN_STEPS)
PROBE_MIN_STEPS = 2
EVAL_COST = 1 / 3  # a validation image costs about a third of a training one (forward only, no augmentation)


class _FirstEpochProbe:
    """Called after every batch of a fresh run's first epoch: after the first few steps it estimates whether the
    budget holds the whole epoch (plus its validation) and, when it does not, ends the lr schedule and the epoch
    at the steps it holds, so a 2-minute budget trains 2 minutes, not one whole epoch."""

    def __init__(self, m: MemberParts, state: MemberState, plan: LoopPlan, run: RunContext, val_images: int):
        self.m, self.state, self.plan, self.run, self.val_images = m, state, plan, run, val_images
        steps = m.step.schedule.steps_per_epoch
        self.probe_steps = min(max(PROBE_MIN_STEPS, math.ceil(PROBE_FRACTION * steps)), steps - 1)
        self.images, self.start, self.limit, self.stopped_at = 0, 0.0, None, None

    def begin(self, images: int) -> None:
        """The epoch of `images` starts now."""
        self.images, self.start = images, self.run.step_clock()

    def __call__(self, seen: int) -> bool:
        """Whether the epoch ends after these `seen` images."""
        if self.limit is None and self.probe_steps > 0 and seen >= self.probe_steps * self.m.step.batch_size:
            self.limit = self._plan(self.run.step_clock() - self.start, seen)
        if self.limit is not None and seen >= self.limit < self.images:
            self.stopped_at = seen
            return True
        return False

    def _plan(self, seconds: float, seen: int) -> int:
        """The images this epoch may train on (all of them when the budget holds the epoch)."""
        schedule, state, plan, ramp = self.m.step.schedule, self.state, self.plan, self.m.step.ramp
        steps, done = schedule.steps_per_epoch, self.probe_steps
        planned = schedule.epochs * steps  # the plan the timed steps ran under
        pace = seconds / max(seen, 1) / mean_cost(ramp, 0.0, done / planned)  # per full-size image
        left = plan.budget_s - state.budget_seconds - self.val_images * pace * EVAL_COST
        if pace <= 0 or left >= pace * self.images * mean_cost(ramp, 0.0, steps / planned):
            return self.images
        fit_steps = max(done + 1, round(fit_epochs(left, pace * self.m.step.batch_size, steps, 0.0, 1, ramp) * steps))
        fits = fit_steps / steps
        if fits >= 1:
            return self.images
        warmup = _end_schedule(schedule, fits, done / steps, plan.epochs)
        state.epochs_planned = fits
        if self.run.dist.main:
            print(f"{self.m.spec.prefix}budget: {plan.budget_s / 60:g} min holds {fits:g} of the first epoch "
                  f"(timed on its first {done} steps, {seconds:.1f} s); schedule ends there (warm-up {warmup:g})",
                  flush=True)
        return fit_steps * self.m.step.batch_size


def _record(state: MemberState, m: MemberParts, epoch: int, seen: int, seconds: float, score: float) -> bool:
    """Count the epoch into `state`; keep a copy of the eval weights when the score improved."""
    state.epochs_run, state.images_trained = epoch + 1, state.images_trained + seen
    state.train_seconds += seconds
    if score > state.best_score:
        state.best_score, state.best_epoch, state.bad_epochs = score, epoch, 0
        state.best_state = copy.deepcopy({k: v.detach().cpu() for k, v in m.eval_model.state_dict().items()})
        return True
    state.bad_epochs += 1
    return False


REPLAN_CHANGE = 0.2  # re-plan the budget when the pace per image moves by more than this fraction


def _replan_due(state: MemberState, epoch: int, pace_s: float) -> bool:
    """Plan after the first epoch, and again after one whose pace differs by > REPLAN_CHANGE from the plan's,
    unless the run ends now (a clock that read no time gives no pace: a resumed run keeps its plan)."""
    if epoch + 1 >= state.epochs_planned:
        return False
    if state.pace_s is None:
        return epoch == 0 or pace_s > 0
    return pace_s > 0 and abs(pace_s - state.pace_s) > REPLAN_CHANGE * state.pace_s


def _full_size_pace(seconds: float, images: int, val_images: int, step: StepParts, epoch: int,
                    planned: float) -> float:
    """Seconds per full-size training image in epoch `epoch`, which took `seconds` with its validation (priced at
    EVAL_COST of a training image): progressive resizing makes the early epochs' steps cheaper than the ones a
    plan still has to run, while validation always runs at full size."""
    end = step.schedule.epochs or planned
    cost = mean_cost(step.ramp, epoch / end, min(epoch + 1, planned) / end)
    return seconds / max(images * cost + val_images * EVAL_COST, 1e-12)


def _plan_budget(state: MemberState, step: StepParts, plan: LoopPlan, timed: tuple[float, int, int, float],
                 prefix: str, main: bool) -> None:
    """Plan the optimiser steps the rest of the budget holds at the last epoch's pace and end the lr schedule
    (and a warm-up still running, scaled with the plan) there; `timed` is (seconds, training images, validation
    images, full-size pace per image) of that epoch."""
    seconds, images, val_images, pace = timed
    schedule = step.schedule
    steps = schedule.steps_per_epoch
    done = min(float(state.epochs_run), state.epochs_planned)  # a partial last epoch counts as its part
    fits = fit_epochs(plan.budget_s - state.budget_seconds, pace * images / steps, steps, done, plan.epochs,
                      step.ramp, pace * val_images * EVAL_COST)
    first = state.pace_s is None
    state.epochs_planned, state.pace_s = fits, pace
    if fits >= plan.epochs:
        note = "keeping the schedule"
    elif fits <= done:
        note = "the budget is spent"
    else:
        warmup = _end_schedule(schedule, fits, done, plan.epochs)
        note = f"schedule ends at epoch {fits:g} (warm-up {warmup:g})"
    if main:
        what = "budget" if first else "budget re-planned (pace moved > 20 %)"
        print(f"{prefix}{what}: {plan.budget_s / 60:g} min, {state.budget_seconds / 60:.2f} min used, fits "
              f"{fits:g} of {plan.epochs} epochs (last epoch {seconds:.1f} s); {note}", flush=True)


def _end_schedule(schedule, fits: float, done: float, epochs: int) -> float:
    """End the lr schedule at epoch `fits` of a plan cut from `epochs`; a warm-up still running is scaled with the
    plan but never ends before `done`, the part already trained. Returns where the warm-up now ends."""
    warmup = min(schedule.warmup_epochs, max(done, schedule.planned_warmup * fits / epochs))
    schedule.retarget(fits, warmup)
    return warmup


def _settle_stop(state: MemberState, plan: LoopPlan, epoch: int) -> bool:
    """Whether the member stops after `epoch`; sets `state.stop_reason` when it does for a reason."""
    stop = ""
    if state.bad_epochs >= plan.patience:
        stop = f"early stop: no val improvement for {plan.patience} epochs"
    elif plan.budget_s is not None and state.train_seconds >= plan.budget_s and epoch + 1 < state.epochs_planned:
        stop = f"time budget reached after epoch {epoch + 1}"
    if stop:
        state.stop_reason = stop
    elif epoch + 1 >= state.epochs_planned and state.epochs_planned < plan.epochs:
        state.stop_reason = f"time budget: fitted {state.epochs_planned:g} of {plan.epochs} epochs"
    return bool(stop) or epoch + 1 >= state.epochs_planned


def _epoch_row(prefix: str, epoch: int, stats: dict, val: Validation) -> dict:
    """The metrics.jsonl row of one epoch."""
    metrics = {f"{prefix}train/{k}": v for k, v in stats.items() if k != "seconds"}
    metrics.update({f"{prefix}val/loss": val.loss, f"{prefix}val/f1": val.score,
                    f"{prefix}val/accuracy": val.report.get("accuracy"), "epoch": epoch + 1})
    for attr, r in val.report.get("attributes", {}).items():
        metrics[f"{prefix}val/{attr}_f1"] = r["f1"]
        metrics[f"{prefix}val/{attr}_accuracy"] = r["accuracy"]
    return metrics_row(metrics, epoch + 1)


def _save(m: MemberParts, state: MemberState, row: dict, finished: bool, run: RunContext) -> None:
    """Record the epoch in the run's progress and write last.pt."""
    p = run.progress
    if finished:
        p.done[m.spec.name] = state
        p.member, p.running = None, None
    else:
        p.member, p.running = m.spec.name, state
    p.training, p.wall_seconds, p.log_row = training_state(m.step), run.wall(), row
    save_last(run.run_dir / "last.pt", run.describe(m), p, state)


def _log(tracker, m: MemberParts, epoch: int, row: dict, val: Validation, val_set: CropSet, improved: bool) -> None:
    """Log the epoch's row; on a new best of a main model, also the confusion matrix and an image grid."""
    tracker.log({k: v for k, v in row.items() if k != "step"}, step=epoch + 1)
    if m.spec.name != "main" or not improved or not tracker.draws_figures:
        return
    preds = probs18(val.outputs, m.spec.spec).argmax(1).numpy()
    names = val.report["class_names"]
    tracker.log_figure("val/confusion", confusion_figure(np.asarray(val.report["confusion"]), names), epoch + 1)
    idx = np.linspace(0, len(val_set) - 1, num=min(16, len(val_set))).astype(int)
    titles = [f"true {names[val_set.labels[i]]}\npred {names[preds[i]]}" for i in idx]
    tracker.log_figure("val/images", image_grid_figure(val_set.images[idx], titles, ncols=4), epoch + 1)


def combined_val_probs(members: dict[str, MemberParts], val_set: CropSet, device, progress: bool = True) -> np.ndarray:
    """18-class validation probabilities from the members' best weights, by the per-epoch validation's code."""
    parts = {}
    for name, m in members.items():
        out = member_outputs(m, m.model, val_set, device, progress, f"validate {name}")
        parts.update({k: v.numpy() for k, v in member_probs(out, m.spec.spec, name).items()})
    return to_probs18(parts)


def write_final_figures(run_dir: Path, report: dict) -> None:
    """val_confusion.png: the final validation confusion matrix."""
    import matplotlib.pyplot as plt

    fig = confusion_figure(np.asarray(report["confusion"]), report["class_names"])
    fig.savefig(Path(run_dir) / "val_confusion.png", dpi=110, bbox_inches="tight")
    plt.close(fig)
