"""`fit(cfg)`: dataset folder -> trained model(s), checkpoints, metrics and a summary in a run folder.

`fit` is the one place that reads the config: it builds every member's parts (training.build) and hands the
built objects to the epoch loop (training.member).
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from maskclf import __version__
from maskclf.config import Config
from maskclf.data.crops import crops_for, load_split, refit_crops, training_records
from maskclf.data.loader import CropSet
from maskclf.data.paint_masks import MaskPainter
from maskclf.data.splits import Split
from maskclf.data.train_data import TrainData, bounds_of, load_train, regroup, truth_bounds_of
from maskclf.inference.calibrate import search_offsets
from maskclf.labels import MASK_ONLY
from maskclf.metrics import score_probs
from maskclf.models.heads import HeadSpec, head_spec
from maskclf.models.pretrained import check_pretrained
from maskclf.training.build import build_member, fitted_schedule, loop_plan, member_plan, paint_probability
from maskclf.training.checks import check_config
from maskclf.training.member import (MemberParts, RunContext, combined_val_probs, refit_member, train_member,
                                     write_final_figures)
from maskclf.training.snapshot import checkpoint_payload
from maskclf.training.state import MemberState, RunProgress, load_last, restore_training
from maskclf.utils.atomic import write_atomic
from maskclf.utils.checkpoint import remove_partial_saves, save_checkpoint
from maskclf.utils.formats import VAL_PROBS, write_oof
from maskclf.utils.rundir import git_commit, load_run_config, new_run_dir, save_config, write_summary
from maskclf.utils.runtime import Dist, barrier, broadcast, init_distributed, resolve_device, seed_everything
from maskclf.utils.tracking import NullTracker, Tracker, repair_log


HOLDOUT = "holdout.pt"  # with train.refit: the model picked on the hold-out, before the refit on everyone


@dataclass
class FitResult:
    """What a training run produced: its folder, best score and epoch, summary and checkpoint."""

    run_dir: Path
    best_f1: float
    best_epoch: int
    summary: dict
    checkpoint: Path
    val_probs: np.ndarray = field(repr=False, default=None)  # the model's own, before the class offsets
    val_keys: list[str] = field(repr=False, default_factory=list)


@dataclass
class _Session:
    """One call of fit: the run, its device and ranks, the data and what it is resumed from."""

    cfg: Config
    run_dir: Path
    device: object
    dist: Dist
    show: bool
    data: TrainData
    split: Split
    sets: tuple[CropSet, CropSet]
    skipped: dict
    progress: RunProgress
    began: float = field(default_factory=time.time)
    earlier: float = 0.0  # wall seconds of the run's earlier sessions (from last.pt)

    def wall(self) -> float:
        """Wall seconds of the whole run: earlier sessions plus this one."""
        return self.earlier + time.time() - self.began


def fit(cfg: Config | None, resume: Path | None = None, progress: bool = True, run_dir: Path | None = None,
        on_epoch=None, clock=time.monotonic, data_root: Path | None = None, step_clock=time.monotonic) -> FitResult:
    """Train as `cfg` says; with `resume`, continue that run from its last checkpoint (`data_root`: data moved).

    `on_epoch(member, epoch, val_score)` is called after every validation (e.g. to prune a tuning trial).
    `clock()` times the first epoch for train.fit_budget; `step_clock()` its first steps, which decide whether a
    budget shorter than one epoch ends inside it.
    """
    began = time.time()
    cfg = resumed_config(Path(resume), data_root) if resume is not None else absolute_paths(cfg)
    check_config(cfg)
    check_pretrained(cfg.model.backbone, cfg.model.pretrained)  # before minutes of data loading and face crops
    device = resolve_device(cfg.train.device)
    dist = init_distributed(device)  # under torchrun: rank 0 writes, every rank trains its share
    seed_everything(cfg.train.seed, cfg.train.deterministic)
    s = _open(cfg, Path(resume) if resume is not None else run_dir, resume is not None, device, dist,
              progress and dist.main)
    s.began = began
    spec = head_spec(cfg.model.head, cfg.model.age, bounds_of(cfg.data), cfg.model.age_bin_width)
    members = _train_all(s, spec, on_epoch, (clock, step_clock))
    result = _finish(s, spec, members)
    if cfg.train.refit:
        result = _refit(s, spec, members, result)
    barrier(dist)
    return result


def absolute_paths(cfg: Config) -> Config:
    """`cfg` with its data, extra and cache paths absolute, so a run resumes from any directory."""
    d = cfg.data
    update = {"root": d.root.resolve() if d.root else None, "extra": [Path(p).resolve() for p in d.extra],
              "cache_dir": d.cache_dir.resolve() if d.cache_dir else None}
    return cfg.model_copy(update={"data": d.model_copy(update=update)})


def resumed_config(run_dir: Path, data_root: Path | None) -> Config:
    """A run's saved config, pointed at `data_root` when the data moved; says how to fix a missing data folder."""
    cfg = load_run_config(run_dir)
    if data_root is not None:
        cfg.data.root = Path(data_root).resolve()
    elif cfg.data.root is not None and not Path(cfg.data.root).exists():
        raise FileNotFoundError(f"data folder {cfg.data.root} (from {run_dir / 'config.yaml'}) not found; if the "
                                f"data moved, give its new place: maskclf train --resume {run_dir} NEW_DATA_DIR")
    return cfg


def _open(cfg: Config, run_dir: Path | None, resuming: bool, device, dist: Dist, show: bool) -> _Session:
    """Read the data and crops, then create (or reopen) the run folder: a run that cannot start leaves none."""
    data = load_train(cfg.data)
    if dist.main:
        report_data(data, cfg.data.label_fixes)
    split = load_split(cfg.data, data.records, run_dir if resuming else None)
    if dist.main:
        sets, skipped = _crops(cfg, data, split, show)
        run_dir = _run_folder(cfg, run_dir, resuming)
        if not resuming:
            split.save(run_dir / "split.json")
    run_dir = broadcast(run_dir, dist)
    barrier(dist)
    if not dist.main:
        split = load_split(cfg.data, data.records, run_dir)  # rank 0's saved split, never a recomputed one
        sets, skipped = _crops(cfg, data, split, show)
    progress = RunProgress()
    if resuming and (run_dir / "last.pt").is_file():
        progress = load_last(run_dir / "last.pt")
        if dist.main:
            repair_log(run_dir, progress.log_row)  # metrics.jsonl ends at the epoch last.pt holds
    return _Session(cfg, run_dir, device, dist, show, data, split, sets, skipped, progress,
                    earlier=progress.wall_seconds)


def report_data(data: TrainData, label_fixes: str, shown: int = 5) -> None:
    """Print the scan's warnings and what the label fixes did, so a train run shows what `check` would."""
    warnings = [p for p in data.problems if not p.fatal]
    if warnings:
        more = f" (and {len(warnings) - shown} more: maskclf check {data.root})" if len(warnings) > shown else ""
        print(f"{len(warnings)} data warning(s){more}:\n" + "\n".join(f"  {p}" for p in warnings[:shown]),
              file=sys.stderr)
    fixed = ", ".join(f"{k} {v}" for k, v in data.fixes.items() if v)
    if fixed or data.fixes_note:
        print(f"label fixes ({label_fixes}): {fixed or 'none applied'}" + (f"; {data.fixes_note}" if data.fixes_note
                                                                             else ""), file=sys.stderr)


def _crops(cfg: Config, data: TrainData, split, show: bool) -> tuple[tuple[CropSet, CropSet], dict]:
    train_set, val_set, skipped = crops_for(cfg, data, split, progress=show)
    _paint(cfg, train_set)
    return (train_set, val_set), skipped


def _paint(cfg: Config, train_set: CropSet) -> None:
    """Let the loader paint masks on the training crops, if train.augment.paint_masks says so."""
    p = paint_probability(cfg)
    if p > 0:
        train_set.paint = MaskPainter(p, cfg.train.seed)


def _run_folder(cfg: Config, run_dir: Path | None, resuming: bool) -> Path:
    """The run folder with the resolved config in it: a new `exp<N>`, the given folder, or the resumed one."""
    if resuming:
        remove_partial_saves(run_dir)
    elif run_dir is None:
        run_dir = new_run_dir(cfg.run.out_dir, cfg.run.name)
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
    save_config(run_dir, cfg)
    return run_dir


def _train_all(s: _Session, spec: HeadSpec, on_epoch, clocks) -> dict[str, tuple[MemberParts, MemberState]]:
    """Build and train every member in turn; finished ones (from last.pt) are restored, not retrained."""
    cfg = s.cfg
    plan = loop_plan(cfg)
    tracker = Tracker(s.run_dir, cfg.run.tensorboard, cfg.run.wandb, cfg.to_dict()) if s.dist.main else NullTracker()
    run = RunContext(s.run_dir, s.device, tracker, s.progress, lambda m: _describe(cfg, m), s.wall, s.dist, s.show,
                     on_epoch, *clocks)
    _announce(s, cfg, member_plan(spec, cfg.model.head))
    members = {}
    try:
        for ms in member_plan(spec, cfg.model.head):
            m = build_member(cfg, ms, s.sets[0], s.device, s.dist)
            state = s.progress.state_for(ms.name)
            if ms.name in s.progress.done:
                m.model.load_state_dict(state.best_state)
            else:
                if state is not None:
                    m.model.load_state_dict(s.progress.weights)
                    restore_training(m.step, s.progress.training)
                state = train_member(m, s.sets, plan, state or MemberState(), run)
            members[ms.name] = (m, state)
    finally:
        tracker.close()
    return members


def _announce(s: _Session, cfg: Config, plan) -> None:
    """Print what is about to happen when it is not a plain fresh run: a resume point, a shortened warm-up."""
    if not s.dist.main:
        return
    fitted = fitted_schedule(cfg.train)
    if fitted is not cfg.train.scheduler:
        print(f"warm-up of {cfg.train.scheduler.params['warmup_epochs']:g} epochs does not fit a "
              f"{cfg.train.epochs}-epoch run: using {fitted.params['warmup_epochs']:g}")
    p = s.progress
    todo = [ms.name for ms in plan if ms.name not in p.done]
    if p.member is not None:
        where = "" if p.member == "main" else f" of the {p.member} model"
        print(f"resuming {s.run_dir} from epoch {p.epoch + 2}{where}", flush=True)
    elif p.done:
        print(f"resuming {s.run_dir}: " + (f"starting the {todo[0]} model" if todo else "training had finished"),
              flush=True)


def _describe(cfg: Config, m: MemberParts) -> dict:
    """The self-describing part of last.pt for one member: its current weights and heads."""
    return checkpoint_payload(cfg, m.spec.spec, {m.spec.name: m.model.state_dict()},
                              {m.spec.name: m.spec.spec.heads}, m.model.data_config)


def _finish(s: _Session, spec: HeadSpec, members: dict[str, tuple[MemberParts, MemberState]]) -> FitResult:
    """Score the best weights on validation, write best.pt, the report, the summary and val_probs.csv."""
    cfg, run_dir, val_set = s.cfg, s.run_dir, s.sets[1]
    probs = combined_val_probs({n: m for n, (m, _) in members.items()}, val_set, s.device, progress=s.show)
    report = score_probs(val_set.labels, probs, truth_bounds_of(cfg.data))
    states = {n: st for n, (_, st) in members.items()}
    best_epoch = max(st.best_epoch for st in states.values())
    payload = checkpoint_payload(cfg, spec, {n: st.best_state for n, st in states.items()},
                                 {n: m.spec.spec.heads for n, (m, _) in members.items()},
                                 next(iter(members.values()))[0].model.data_config)
    payload.update(epoch=best_epoch, score=report["f1"])
    calibration = None
    if cfg.train.calibrate:
        cal = search_offsets(probs, val_set.labels)
        payload["class_offsets"] = cal.offsets
        calibration = {"val_f1_before": report["f1"], "val_f1_after": cal.f1_after, "age_offsets": cal.age,
                       "gender_offsets": cal.gender,
                       "note": "val_f1_after is tuned on this validation set, so it is optimistic"}
    summary = _summary(s, states, report, calibration, best_epoch)
    if s.dist.main:
        save_checkpoint(run_dir / (HOLDOUT if cfg.train.refit else "best.pt"), payload)
        write_final_figures(run_dir, report)
        write_summary(run_dir, summary)
        text = json.dumps(report, indent=1).encode()
        write_atomic(run_dir / "val_report.json", lambda fh: fh.write(text))
        by_key = {r.key: r for r in s.data.records}
        # labels as validation scores them (data.truth_age_bounds), like val_set.labels
        write_oof(run_dir / VAL_PROBS, regroup([by_key[k] for k in val_set.keys], truth_bounds_of(cfg.data)), probs)
    return FitResult(run_dir, report["f1"], best_epoch, summary, run_dir / "best.pt", probs, val_set.keys)


def _refit(s: _Session, spec: HeadSpec, members: dict[str, tuple[MemberParts, MemberState]],
           holdout: FitResult) -> FitResult:
    """train.refit: train every member again on train + validation for the epochs its hold-out run picked.

    best.pt then holds the refit weights (refit=True, no validation score); the hold-out model stays as holdout.pt.
    """
    cfg = s.cfg
    epochs = {name: st.best_epoch + 1 for name, (_, st) in members.items()}
    s.sets = None  # free the hold-out crops before gathering everyone's
    train_set, _ = refit_crops(cfg, s.data, s.split, progress=s.show)
    _paint(cfg, train_set)
    run = RunContext(s.run_dir, s.device, NullTracker(), RunProgress(), lambda m: {}, s.wall, s.dist, s.show)
    states, parts = {}, {}
    for ms in member_plan(spec, cfg.model.head):
        train = cfg.train.model_copy(update={"epochs": epochs[ms.name], "time_budget_min": None})
        member_cfg = cfg.model_copy(update={"train": train})
        seed_everything(cfg.train.seed, cfg.train.deterministic)
        parts[ms.name] = build_member(member_cfg, ms, train_set, s.device, s.dist)
        states[ms.name] = refit_member(parts[ms.name], train_set, loop_plan(member_cfg), run)
    payload = checkpoint_payload(cfg, spec, {n: st.best_state for n, st in states.items()},
                                 {n: m.spec.spec.heads for n, m in parts.items()},
                                 next(iter(parts.values())).model.data_config)
    payload.update(epoch=max(epochs.values()) - 1, score=None, refit={"epochs": epochs, "holdout": HOLDOUT})
    summary = dict(holdout.summary, refit={
        "epochs": epochs, "train_images": len(train_set), "checkpoint": "best.pt", "holdout_checkpoint": HOLDOUT,
        "train_seconds": sum(st.train_seconds for st in states.values()),
        "note": "val_* are the hold-out model's scores (holdout.pt); the refit model in best.pt has none"})
    summary["wall_seconds"] = s.wall()
    if s.dist.main:
        save_checkpoint(s.run_dir / "best.pt", payload)
        write_summary(s.run_dir, summary)
    return FitResult(s.run_dir, holdout.best_f1, holdout.best_epoch, summary, s.run_dir / "best.pt",
                     holdout.val_probs, holdout.val_keys)


def _summary(s: _Session, states: dict[str, MemberState], report: dict, calibration, best_epoch: int) -> dict:
    """summary.json: what ran, how well, how long (wall time over every session of the run)."""
    cfg, (train_set, val_set) = s.cfg, s.sets
    images = sum(st.images_trained for st in states.values())
    train_seconds = sum(st.train_seconds for st in states.values())
    return {
        "name": s.run_dir.name, "run_dir": str(s.run_dir), "version": __version__, "git_commit": git_commit(),
        "backbone": cfg.model.backbone, "head": cfg.model.head, "age": cfg.model.age,
        "best_epoch": best_epoch, "epochs_run": max(st.epochs_run for st in states.values()),
        "epochs_planned": max(st.epochs_planned or cfg.train.epochs for st in states.values()),
        "val_f1": report["f1"], "val_accuracy": report["accuracy"], "calibration": calibration,
        "val_attributes": {k: {"accuracy": v["accuracy"], "f1": v["f1"]} for k, v in report["attributes"].items()},
        "members": {n: {"best_epoch": st.best_epoch, "best_score": st.best_score, "stopped": st.stop_reason,
                        "epochs_planned": st.epochs_planned or cfg.train.epochs} for n, st in states.items()},
        "wall_seconds": s.wall(), "train_seconds": train_seconds,
        # train.time_budget_min spent by the epochs (training + validation, by the run's clock), as a fraction.
        "budget_used": (sum(st.budget_seconds for st in states.values()) / (cfg.train.time_budget_min * 60)
                        if cfg.train.time_budget_min else None),
        "images_per_s": images / max(train_seconds, 1e-9), "device": str(s.device),
        "world_size": int(os.environ.get("WORLD_SIZE", 1)),
        "train_images": len(train_set), "val_images": len(val_set),
        "skipped_images": s.skipped, "label_fixes": s.data.fixes, "techniques": techniques(cfg),
        "dropped_people": {"ages": cfg.data.drop_ages,
                           "people": len(training_records(s.data, s.split, cfg.data.drop_ages)[2])},
        "mask_only_images": int((train_set.labels >= MASK_ONLY).sum()),
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def techniques(cfg: Config) -> dict:
    """The training choices worth seeing at a glance in a summary (what differs from a plain run)."""
    t = cfg.train
    return {
        "head": cfg.model.head, "age": cfg.model.age, "pretrained": cfg.model.pretrained or "none",
        "loss": t.loss.name, "head_losses": {k: v.name for k, v in t.head_losses.items()},
        "class_weighted": t.class_weighted, "sampler": t.sampler.name, "augment": t.augment.preset,
        "mixup": t.augment.mixup, "cutmix": t.augment.cutmix, "ema": t.ema, "optimizer": t.optimizer.name,
        "scheduler": t.scheduler.name, "freeze": cfg.model.freeze, "extra_data": [str(p) for p in cfg.data.extra],
        "age_bounds": list(cfg.data.age_bounds), "drop_ages": cfg.data.drop_ages,
        "mask_extra": [str(p) for p in cfg.data.mask_extra], "paint_masks": paint_probability(cfg),
    }
