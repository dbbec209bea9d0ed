"""`fit(cfg)`: dataset folder -> trained model(s), checkpoints, metrics and a summary in a run folder."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from maskclf import __version__
from maskclf.inference.calibrate import search_offsets
from maskclf.utils.checkpoint import load_checkpoint, remove_partial_saves, save_checkpoint
from maskclf.config import Config
from maskclf.data.crops import crops_for, load_split
from maskclf.training.member import Member, combined_val_probs, member_plan, train_member, write_final_figures
from maskclf.training.snapshot import checkpoint_payload
from maskclf.metrics import score_probs
from maskclf.models.pretrained import check_pretrained
from maskclf.data.train_data import bounds_of, load_train
from maskclf.utils.rundir import git_commit, load_run_config, new_run_dir, save_config, write_summary
from maskclf.utils.runtime import barrier, broadcast, init_distributed, resolve_device, seed_everything
from maskclf.models.heads import head_spec
from maskclf.utils.formats import VAL_PROBS, write_oof
from maskclf.utils.tracking import NullTracker, Tracker


@dataclass
class FitResult:
    run_dir: Path
    best_f1: float
    best_epoch: int
    summary: dict
    checkpoint: Path
    val_probs: np.ndarray = field(repr=False, default=None)  # the model's own, before the class offsets
    val_keys: list[str] = field(repr=False, default_factory=list)


def fit(cfg: Config, resume: Path | None = None, progress: bool = True, run_dir: Path | None = None,
        on_epoch=None, clock=time.monotonic) -> FitResult:
    """Train as `cfg` says; with `resume`, continue that run from its last checkpoint.

    `on_epoch(member, epoch, val_score)` is called after every validation (e.g. to prune a tuning trial).
    `clock()` times the first epoch for train.fit_budget.
    """
    if resume is not None:
        cfg = load_run_config(Path(resume))
    check_pretrained(cfg.model.backbone, cfg.model.pretrained)  # before minutes of data loading and face crops
    device = resolve_device(cfg.train.device)
    dist = init_distributed(device)  # under torchrun: rank 0 writes, every rank trains its share
    progress = progress and dist.main
    if resume is not None:
        run_dir = Path(resume)
        if dist.main:
            remove_partial_saves(run_dir)
    elif run_dir is None:
        run_dir = broadcast(new_run_dir(cfg.run.out_dir, cfg.run.name) if dist.main else None, dist)
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
    if dist.main:
        save_config(run_dir, cfg)
    seed_everything(cfg.train.seed, cfg.train.deterministic)
    bounds = bounds_of(cfg.data)
    started = time.time()

    data = load_train(cfg.data)
    split = load_split(cfg.data, data.records, run_dir if dist.main else None)
    barrier(dist)
    if not dist.main:
        split = load_split(cfg.data, data.records, run_dir)  # rank 0's saved split, never a recomputed one
    train_set, val_set, skipped = crops_for(cfg, data, split, progress=progress)
    spec = head_spec(cfg.model.head, cfg.model.age, bounds, cfg.model.age_bin_width)
    # Finished members are recorded here too, so a later last.pt still names them as done.
    state = (_resume_state(run_dir) if resume is not None else None) or {}
    tracker = Tracker(run_dir, cfg.run.tensorboard, cfg.run.wandb, cfg.to_dict()) if dist.main else NullTracker()
    members: dict[str, Member] = {}
    try:
        for member_spec in member_plan(spec, cfg.model.head):
            members[member_spec.name] = train_member(
                cfg, member_spec, train_set, val_set, device, run_dir, tracker, state, progress=progress,
                on_epoch=on_epoch, dist=dist, clock=clock)
    finally:
        tracker.close()
    result = _finish(cfg, run_dir, spec, members, (train_set, val_set), device, started, skipped, data, progress,
                     write=dist.main)
    barrier(dist)
    return result


def _resume_state(run_dir: Path) -> dict | None:
    last = run_dir / "last.pt"
    if not last.is_file():
        return None
    return load_checkpoint(last)


def _finish(cfg, run_dir, spec, members, sets, device, started, skipped, data, progress, write=True):
    train_set, val_set = sets
    bounds = bounds_of(cfg.data)
    probs = combined_val_probs(members, spec, val_set, device, progress=progress)
    report = score_probs(val_set.labels, probs, bounds)
    payload = checkpoint_payload(cfg, spec, {n: m.best_state for n, m in members.items()},
                                 {n: m.spec.spec.heads for n, m in members.items()},
                                 next(iter(members.values())).model.data_config)
    best_epoch = max(m.best_epoch for m in members.values())
    payload.update(epoch=best_epoch, score=report["f1"])
    calibration = None
    if cfg.train.calibrate:
        cal = search_offsets(probs, val_set.labels)
        payload["class_offsets"] = cal.offsets
        calibration = {"val_f1_before": report["f1"], "val_f1_after": cal.f1_after, "age_offsets": cal.age,
                       "gender_offsets": cal.gender,
                       "note": "val_f1_after is tuned on this validation set, so it is optimistic"}
    if write:
        save_checkpoint(run_dir / "best.pt", payload)
        write_final_figures(run_dir, report)
    images = sum(m.images_trained for m in members.values())
    train_seconds = sum(m.train_seconds for m in members.values())
    summary = {
        "name": run_dir.name, "run_dir": str(run_dir), "version": __version__, "git_commit": git_commit(),
        "backbone": cfg.model.backbone, "head": cfg.model.head, "age": cfg.model.age,
        "best_epoch": best_epoch, "epochs_run": max(m.epochs_run for m in members.values()),
        "epochs_planned": max(m.epochs_planned or cfg.train.epochs for m in members.values()),
        "val_f1": report["f1"], "val_accuracy": report["accuracy"], "calibration": calibration,
        "val_attributes": {k: {"accuracy": v["accuracy"], "f1": v["f1"]} for k, v in report["attributes"].items()},
        "members": {n: {"best_epoch": m.best_epoch, "best_score": m.best_score, "stopped": m.stop_reason,
                        "epochs_planned": m.epochs_planned or cfg.train.epochs} for n, m in members.items()},
        "wall_seconds": time.time() - started, "train_seconds": train_seconds,
        "images_per_s": images / max(train_seconds, 1e-9), "device": str(device),
        "world_size": int(os.environ.get("WORLD_SIZE", 1)),
        "train_images": len(train_set), "val_images": len(val_set),
        "skipped_images": skipped, "label_fixes": data.fixes, "techniques": techniques(cfg),
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    if write:
        write_summary(run_dir, summary)
        (run_dir / "val_report.json").write_text(json.dumps(report, indent=1))
        by_key = {r.key: r for r in data.records}
        write_oof(run_dir / VAL_PROBS, [by_key[k] for k in val_set.keys], probs)
    return FitResult(run_dir, report["f1"], best_epoch, summary, run_dir / "best.pt", probs, val_set.keys)


def techniques(cfg: Config) -> dict:
    """The training choices worth seeing at a glance in a summary (what differs from a plain run)."""
    t = cfg.train
    return {
        "head": cfg.model.head, "age": cfg.model.age, "pretrained": cfg.model.pretrained or "none",
        "loss": t.loss.name, "head_losses": {k: v.name for k, v in t.head_losses.items()},
        "class_weighted": t.class_weighted, "sampler": t.sampler.name, "augment": t.augment.preset,
        "mixup": t.augment.mixup, "cutmix": t.augment.cutmix, "ema": t.ema, "optimizer": t.optimizer.name,
        "scheduler": t.scheduler.name, "freeze": cfg.model.freeze, "extra_data": [str(p) for p in cfg.data.extra],
    }
