"""The epoch loop of one model ("member"): build, train, validate, early-stop, checkpoint, resume."""

from __future__ import annotations

import copy
import math
import time
import warnings
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import f1_score

from maskclf.utils.checkpoint import save_checkpoint
from maskclf.config import Config
from maskclf.models.dlib_face import BACKBONE as DLIB_FACE
from maskclf.inference.forward import predict_outputs
from maskclf.training.engine import StepParts, batches_per_epoch, train_one_epoch
from maskclf.labels import HEADS, combine_probs, decode
from maskclf.data.loader import CropSet, epoch_order
from maskclf.training.losses import build_criterion
from maskclf.training.snapshot import checkpoint_payload
from maskclf.metrics import score_probs
from maskclf.data.mixing import mix_batch
from maskclf.models.network import build_model
from maskclf.training.optim import build_optimizer, build_scheduler
from maskclf.utils.plots import confusion_figure, image_grid_figure
from maskclf.utils.runtime import Dist, grad_scaler, memory_format, wrap_ddp
from maskclf.data.samplers import build_sampler
from maskclf.models.heads import HeadSpec, attribute_probs, class_counts, make_targets, probs18
from maskclf.data.transforms import build_augment, build_eval_transform


@dataclass
class MemberSpec:
    name: str  # "main", or "mask"/"gender"/"age" for the separate layout
    spec: HeadSpec


@dataclass
class Member:
    spec: MemberSpec
    model: torch.nn.Module
    eval_transform: object
    best_state: dict = field(default_factory=dict)
    best_score: float = -1.0
    best_epoch: int = -1
    epochs_run: int = 0
    stop_reason: str = "max epochs"
    images_trained: int = 0
    train_seconds: float = 0.0
    epochs_planned: int | None = None  # train.epochs, or fewer when train.fit_budget shortened the run


def member_plan(spec: HeadSpec, head: str) -> list[MemberSpec]:
    if head == "separate":
        return [MemberSpec(n, spec.only(n)) for n in ("mask", "gender", "age")]
    return [MemberSpec("main", spec)]


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


def descriptor_reuse_problem(cfg: Config) -> str | None:
    """Why a frozen-descriptor backbone (dlib_face) would re-encode every crop every epoch, or None if it won't."""
    if cfg.model.backbone != DLIB_FACE:
        return None
    a = cfg.train.augment
    changes = [f"augment preset '{a.preset}'"] if a.preset != "base" else []
    changes += [f"augment.params {sorted(a.params)}"] if a.params else []
    changes += ["mixup/cutmix"] if a.mixup > 0 or a.cutmix > 0 else []
    if not changes:
        return None
    return (f"dlib_face descriptors are remembered per exact input chip, but {', '.join(changes)} changes the chips "
            "every epoch, so every epoch pays the full dlib cost (~0.1 s per face on CPU); "
            "use train.augment.preset=base to encode each crop once")


def _build_parts(cfg: Config, ms: MemberSpec, model, train_set: CropSet, device, steps_per_epoch: int) -> StepParts:
    t = cfg.train
    problem = descriptor_reuse_problem(cfg)
    if problem:
        warnings.warn(problem, stacklevel=2)
    dc = model.data_config
    criterion = build_criterion(ms.spec.heads, t.loss, t.head_losses, cfg.model.head_weights,
                                class_counts(train_set.labels, train_set.ages, ms.spec), t.class_weighted,
                                age_regression=ms.spec.age_mode == "regression").to(device)
    # timm leaves out parameters that don't need grad; frozen ones must still be in the optimiser for unfreeze_epoch.
    frozen = [p for p in model.parameters() if not p.requires_grad]
    for p in frozen:
        p.requires_grad_(True)
    optimizer = build_optimizer(model, t.optimizer)
    for p in frozen:
        p.requires_grad_(False)
    mix = None
    if t.augment.mixup > 0 or t.augment.cutmix > 0:
        mixer = partial(mix_batch, mixup_p=t.augment.mixup, cutmix_p=t.augment.cutmix, alpha=t.augment.mix_alpha,
                        mode=t.augment.cutmix_mode)
        mix = lambda x, targets, gen: mixer(x, targets, generator=gen)[:2]  # noqa: E731
    ema = None
    if t.ema > 0:
        from timm.utils import ModelEmaV3

        ema = ModelEmaV3(model, decay=t.ema)
    return StepParts(
        criterion=criterion, optimizer=optimizer,
        schedule=build_scheduler(optimizer, t.scheduler, t.epochs, steps_per_epoch),
        make_targets=lambda labels, ages: make_targets(labels, ages, ms.spec),
        augment=build_augment(t.augment.preset, t.input_size, dc["mean"], dc["std"], **t.augment.params),
        mix=mix, scaler=grad_scaler(device, t.amp), ema=ema, accum_steps=t.accum_steps, clip_grad=t.clip_grad,
        amp=t.amp and device.type == "cuda", memory_format=memory_format(device, t.channels_last))


def train_member(cfg: Config, ms: MemberSpec, train_set: CropSet, val_set: CropSet, device, run_dir: Path,
                 tracker, state: dict, progress: bool = True, on_epoch=None, dist: Dist = Dist(),
                 clock=time.monotonic) -> Member:
    """Train one member with early stopping; resumes from `state` (a loaded last.pt, or {} for a fresh run).

    Finished members are recorded in `state["done_members"]`, so every later last.pt lists them.

    `on_epoch(member_name, epoch, score)` is called after each validation (tuning uses it to prune trials).
    `clock()` (seconds) times the first epoch when train.fit_budget fits the run to train.time_budget_min.
    Under torchrun each rank trains on its slice of the epoch's order; all ranks validate on the whole
    validation set (identical replicas reach identical decisions) and only rank 0 writes.
    """
    t = cfg.train
    model = build_model(cfg.model, ms.spec.heads).to(device)
    model = model.to(memory_format=memory_format(device, t.channels_last))
    dc = model.data_config
    member = Member(ms, model, build_eval_transform(t.input_size, dc["mean"], dc["std"]))
    done = state.get("done_members", {})
    if ms.name in done:  # finished before the interruption: restore, don't retrain
        _restore_done(member, done[ms.name])
        return member
    sampler = build_sampler(t.sampler, train_set.labels, t.seed)
    n_per_epoch = len(epoch_order(len(train_set), t.seed, 0, sampler))
    steps = max(1, math.ceil(batches_per_epoch(n_per_epoch, t.batch_size) / t.accum_steps))
    parts = _build_parts(cfg, ms, model, train_set, device, steps)
    train_model = wrap_ddp(torch.compile(model) if t.compile else model, device, dist)
    start, bad_epochs = 0, 0
    if state.get("member") == ms.name:
        start, bad_epochs = _restore_running(member, parts, state)
    n_members = 3 if cfg.model.head == "separate" else 1  # the separate layout's models share the budget
    budget_s = t.time_budget_min * 60 / n_members if t.time_budget_min else None
    prefix = "" if ms.name == "main" else f"{ms.name}/"
    member.epochs_planned = member.epochs_planned or t.epochs
    for epoch in range(start, t.epochs):
        began = clock()
        model.set_epoch(epoch)
        order = epoch_order(len(train_set), t.seed, epoch, sampler)[dist.rank::dist.world]
        gen = torch.Generator(device=device).manual_seed(t.seed * 100_003 + epoch)
        stats = train_one_epoch(train_model, train_set, order, t.batch_size, parts, device, gen,
                                desc=f"{prefix}epoch {epoch + 1}/{member.epochs_planned}", progress=progress)
        eval_model = parts.ema.module if parts.ema is not None else model
        outputs = predict_outputs(eval_model, val_set, member.eval_transform, device, amp=parts.amp,
                                  desc="validate", progress=progress)
        score, report = member_score(outputs, ms.spec, val_set.labels, ms.name)
        with torch.no_grad():
            val_targets = make_targets(torch.from_numpy(val_set.labels), torch.from_numpy(val_set.ages), ms.spec)
            val_loss = float(parts.criterion({k: v.to(device) for k, v in outputs.items()},
                                             {k: v.to(device) for k, v in val_targets.items()})[0])
        parts.schedule.step_epoch(score)
        member.epochs_run, member.images_trained = epoch + 1, member.images_trained + len(order)
        member.train_seconds += stats["seconds"]
        improved = score > member.best_score
        if improved:
            member.best_score, member.best_epoch, bad_epochs = score, epoch, 0
            member.best_state = copy.deepcopy({k: v.detach().cpu() for k, v in eval_model.state_dict().items()})
        else:
            bad_epochs += 1
        _log_epoch(tracker, prefix, epoch, stats, val_loss, score, report, outputs, ms, val_set, improved)
        if epoch == 0 and budget_s is not None and t.fit_budget:
            _fit_budget(member, parts, budget_s, clock() - began, t.epochs, prefix, dist.main)
        stop = _stop_reason(bad_epochs, t.patience, epoch, member.epochs_planned, budget_s, member.train_seconds)
        if stop:
            member.stop_reason = stop
        elif epoch + 1 == member.epochs_planned < t.epochs:
            member.stop_reason = f"time budget: fitted {member.epochs_planned} of {t.epochs} epochs"
        finished = bool(stop) or epoch + 1 == member.epochs_planned
        if dist.main:
            _save_last(run_dir, cfg, member, parts, epoch, bad_epochs, state, finished)
        if progress:
            print(f"{prefix}epoch {epoch + 1}/{member.epochs_planned}  loss {stats['loss']:.4f}  "
                  f"val_loss {val_loss:.4f}  val_f1 {score:.4f}{'  *best*' if improved else ''}  "
                  f"{stats['images_per_s']:.0f} img/s")
        if on_epoch is not None:
            on_epoch(ms.name, epoch, score)
        if finished:
            break
    model.load_state_dict(member.best_state)
    return member


def _fit_budget(member: Member, parts: StepParts, budget_s: float, epoch_s: float, epochs: int, prefix: str,
                main: bool) -> None:
    """Plan as many epochs as the budget holds at the first epoch's pace, and end the lr schedule there."""
    fits = min(epochs, max(1, math.floor(budget_s / max(epoch_s, 1e-9))))
    member.epochs_planned = fits
    if fits == epochs:
        note = "keeping the schedule"
    elif fits > parts.schedule.warmup_epochs:
        parts.schedule.retarget(fits)
        note = "schedule shortened"
    else:
        note = "schedule kept: the shortened run would not get past the warm-up"
    if main:
        print(f"{prefix}budget: {budget_s / 60:g} min fits {fits} of {epochs} epochs "
              f"(first epoch {epoch_s:.1f} s); {note}", flush=True)


def _stop_reason(bad_epochs, patience, epoch, epochs, budget_s, seconds) -> str:
    if bad_epochs >= patience:
        return f"early stop: no val improvement for {patience} epochs"
    if budget_s is not None and seconds >= budget_s and epoch + 1 < epochs:
        return f"time budget reached after epoch {epoch + 1}"
    return ""


def _log_epoch(tracker, prefix, epoch, stats, val_loss, score, report, outputs, ms, val_set, improved) -> None:
    metrics = {f"{prefix}train/{k}": v for k, v in stats.items() if k != "seconds"}
    metrics.update({f"{prefix}val/loss": val_loss, f"{prefix}val/f1": score,
                    f"{prefix}val/accuracy": report.get("accuracy"), "epoch": epoch + 1})
    for attr, r in report.get("attributes", {}).items():
        metrics[f"{prefix}val/{attr}_f1"] = r["f1"]
        metrics[f"{prefix}val/{attr}_accuracy"] = r["accuracy"]
    tracker.log(metrics, step=epoch + 1)
    if ms.name == "main" and improved:
        preds = probs18(outputs, ms.spec).argmax(1).numpy()
        tracker.log_figure("val/confusion", confusion_figure(np.asarray(report["confusion"]), report["class_names"]),
                           epoch + 1)
        tracker.log_figure("val/images", _grid(val_set, preds, report["class_names"]), epoch + 1)


def _grid(val_set: CropSet, preds: np.ndarray, names: list[str], n: int = 16):
    idx = np.linspace(0, len(val_set) - 1, num=min(n, len(val_set))).astype(int)
    titles = [f"true {names[val_set.labels[i]]}\npred {names[preds[i]]}" for i in idx]
    return image_grid_figure(val_set.images[idx], titles, ncols=4)


def _save_last(run_dir, cfg, member: Member, parts: StepParts, epoch, bad_epochs, state, finished: bool) -> None:
    done = dict(state.get("done_members", {}))
    info = {"best_state": member.best_state, "best_score": member.best_score, "best_epoch": member.best_epoch,
            "epochs_run": member.epochs_run, "stop_reason": member.stop_reason,
            "images_trained": member.images_trained, "train_seconds": member.train_seconds,
            "epochs_planned": member.epochs_planned}
    if finished:
        done[member.spec.name] = info
    payload = checkpoint_payload(cfg, member.spec.spec, {member.spec.name: member.model.state_dict()},
                                 {member.spec.name: member.spec.spec.heads}, member.model.data_config)
    payload.update(
        member=None if finished else member.spec.name, epoch=epoch, score=member.best_score, bad_epochs=bad_epochs,
        running=info, done_members=done, optimizer=parts.optimizer.state_dict(),
        schedule=parts.schedule.state_dict(), scaler=parts.scaler.state_dict() if parts.scaler else {},
        ema=parts.ema.state_dict() if parts.ema is not None else {}, rng_torch=torch.get_rng_state(),
        rng_cuda=torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [])
    save_checkpoint(Path(run_dir) / "last.pt", payload)
    state["done_members"] = done


def _restore_done(member: Member, info: dict) -> None:
    for k in ("best_state", "best_score", "best_epoch", "epochs_run", "stop_reason", "images_trained", "train_seconds"):
        setattr(member, k, info[k])
    member.epochs_planned = info.get("epochs_planned")  # absent in runs from before train.fit_budget
    member.model.load_state_dict(member.best_state)


def _restore_running(member: Member, parts: StepParts, state: dict) -> tuple[int, int]:
    """Restore a member interrupted mid-training; returns (next epoch, epochs without improvement)."""
    member.model.load_state_dict(state["models"][member.spec.name])
    for k, v in state["running"].items():
        if k != "stop_reason":
            setattr(member, k, v)
    parts.optimizer.load_state_dict(state["optimizer"])
    parts.schedule.load_state_dict(state["schedule"])
    if parts.scaler is not None and state.get("scaler"):
        parts.scaler.load_state_dict(state["scaler"])
    if parts.ema is not None and state.get("ema"):
        parts.ema.load_state_dict(state["ema"])
    torch.set_rng_state(state["rng_torch"])
    if state.get("rng_cuda") and torch.cuda.is_available():  # dropout on the GPU draws from these
        torch.cuda.set_rng_state_all(state["rng_cuda"])
    return state["epoch"] + 1, state["bad_epochs"]


def combined_val_probs(members: dict[str, Member], spec: HeadSpec, val_set: CropSet, device,
                       progress: bool = True) -> np.ndarray:
    """18-class validation probabilities from the members' best weights (combined for the separate layout)."""
    parts = {}
    for name, m in members.items():
        out = predict_outputs(m.model, val_set, m.eval_transform, device, desc=f"validate {name}", progress=progress)
        if name == "main":
            return probs18(out, m.spec.spec).numpy()
        parts.update({k: v.numpy() for k, v in attribute_probs(out, m.spec.spec).items()})
    return combine_probs(parts["mask"], parts["gender"], parts["age"])


def write_final_figures(run_dir: Path, report: dict) -> None:
    """val_confusion.png: the final validation confusion matrix."""
    import matplotlib.pyplot as plt

    fig = confusion_figure(np.asarray(report["confusion"]), report["class_names"])
    fig.savefig(Path(run_dir) / "val_confusion.png", dpi=110, bbox_inches="tight")
    plt.close(fig)
