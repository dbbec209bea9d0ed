"""A member's progress and the last.pt that carries a run across a kill: written and read here, nowhere else."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch

from maskclf.training.engine import StepParts
from maskclf.utils.checkpoint import load_checkpoint, save_checkpoint


@dataclass
class MemberState:
    """What one member ("main", or mask/gender/age of the separate layout) has done so far."""

    best_state: dict = field(default_factory=dict)
    best_score: float = -1.0
    best_epoch: int = -1
    epochs_run: int = 0
    bad_epochs: int = 0  # epochs since the last improvement (early stopping)
    stop_reason: str = "max epochs"
    images_trained: int = 0
    train_seconds: float = 0.0
    epochs_planned: float | None = None  # train.epochs, or fewer (whole optimiser steps) when fit_budget shortened it
    budget_seconds: float = 0.0  # clock time of the epochs so far, what train.time_budget_min is spent on
    pace_s: float | None = None  # clock seconds per training image the current budget plan assumed

    def to_dict(self) -> dict:
        """The fields as a plain dict (tensors kept as they are, not copied)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: dict) -> MemberState:
        """Rebuild from `to_dict` output; fields an older checkpoint lacks keep their defaults."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass
class RunProgress:
    """A run's progress: finished members, the running one with its training state, and the wall time spent."""

    done: dict[str, MemberState] = field(default_factory=dict)
    member: str | None = None  # the member training when last.pt was written (None: between members)
    running: MemberState | None = None
    weights: dict = field(default_factory=dict)  # the running member's current weights
    training: dict = field(default_factory=dict)  # optimizer / schedule / scaler / ema state dicts and RNG
    wall_seconds: float = 0.0  # wall time of every session of the run up to this checkpoint
    log_row: dict | None = None  # the metrics row of the epoch this checkpoint closes (see repair_log)

    @property
    def epoch(self) -> int:
        """The last finished epoch of the running member (0-based; -1 when none)."""
        return self.running.epochs_run - 1 if self.running else -1

    def state_for(self, name: str) -> MemberState | None:
        """The state to continue `name` from: its finished or running state, or None to start fresh."""
        if name in self.done:
            return self.done[name]
        return self.running if self.member == name else None


def training_state(parts: StepParts) -> dict:
    """Everything a resumed epoch loop needs besides the weights: optimiser, schedule, scaler, EMA, RNG."""
    return {"optimizer": parts.optimizer.state_dict(), "schedule": parts.schedule.state_dict(),
            "scaler": parts.scaler.state_dict() if parts.scaler else {},
            "ema": parts.ema.state_dict() if parts.ema is not None else {}, "rng_torch": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def restore_training(parts: StepParts, saved: dict) -> None:
    """Load `training_state` output back into the built optimiser, schedule, scaler and EMA, and the RNG."""
    parts.optimizer.load_state_dict(saved["optimizer"])
    parts.schedule.load_state_dict(saved["schedule"])
    if parts.scaler is not None and saved.get("scaler"):
        parts.scaler.load_state_dict(saved["scaler"])
    if parts.ema is not None and saved.get("ema"):
        parts.ema.load_state_dict(saved["ema"])
    torch.set_rng_state(saved["rng_torch"])
    if saved.get("rng_cuda") and torch.cuda.is_available():  # dropout on the GPU draws from these
        torch.cuda.set_rng_state_all(saved["rng_cuda"])


_TRAINING_KEYS = ("optimizer", "schedule", "scaler", "ema", "rng_torch", "rng_cuda")


def save_last(path: Path, described: dict, progress: RunProgress, closing: MemberState) -> None:
    """Write last.pt: the self-describing part (`checkpoint_payload`) plus `progress`.

    `closing` is the member whose epoch this checkpoint ends (running, or just finished): it sets `epoch` and `score`.
    """
    running = progress.running
    payload = dict(described)
    payload.update(
        member=progress.member, epoch=closing.epochs_run - 1, score=closing.best_score,
        running=running.to_dict() if running else {}, done_members={n: s.to_dict() for n, s in progress.done.items()},
        wall_seconds=progress.wall_seconds, log_row=json.dumps(progress.log_row), **progress.training)
    save_checkpoint(path, payload)


def load_last(path: Path) -> RunProgress:
    """Read a last.pt back (also those written before MemberState, whose bad_epochs sat at the top level)."""
    ckpt = load_checkpoint(path)
    member = ckpt.get("member")
    running = None
    if member is not None:
        running = MemberState.from_dict({"bad_epochs": ckpt.get("bad_epochs", 0), **ckpt["running"]})
        running.stop_reason = MemberState.stop_reason  # a running member has not stopped yet
    return RunProgress(
        done={n: MemberState.from_dict(s) for n, s in ckpt.get("done_members", {}).items()}, member=member,
        running=running, weights=ckpt["models"].get(member, {}) if member else {},
        training={k: ckpt[k] for k in _TRAINING_KEYS if k in ckpt}, wall_seconds=float(ckpt.get("wall_seconds", 0.0)),
        log_row=json.loads(ckpt["log_row"]) if ckpt.get("log_row") else None)
