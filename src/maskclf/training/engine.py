"""One training epoch and one evaluation pass. Functions take built objects, never the config."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from maskclf.data.loader import CropSet, iterate
from maskclf.training.resize import SizeRamp
from maskclf.utils.runtime import autocast, unwrap


@dataclass
class StepParts:
    """What a training step needs besides the model and the data."""

    criterion: torch.nn.Module
    optimizer: torch.optim.Optimizer
    schedule: object  # has step_batch(); see maskclf.training.optim
    make_targets: Callable[[torch.Tensor, torch.Tensor], dict]
    augment: Callable  # uint8 batch -> normalised float batch
    batch_size: int
    mix: Callable | None = None  # (x, targets, generator) -> (x, targets)
    scaler: torch.amp.GradScaler | None = None
    ema: object | None = None  # timm ModelEmaV3
    accum_steps: int = 1
    clip_grad: float = 0.0
    amp: bool = False
    memory_format: torch.memory_format = torch.contiguous_format
    ramp: SizeRamp | None = None  # progressive resizing: the training batches' side follows the schedule


def batches_per_epoch(n: int, batch_size: int) -> int:
    """Batches `train_one_epoch` runs over n samples: a partial last batch is dropped unless it is the only one."""
    return n // batch_size if n > batch_size else 1 if n else 0


def train_one_epoch(model, data: CropSet, order: np.ndarray, parts: StepParts, device: torch.device,
                    generator: torch.Generator, desc: str | None = "train",
                    after_batch: Callable[[int], bool] | None = None) -> dict[str, float]:
    """Train over `order` once; returns mean loss, per-head losses, images/s, the last learning rate and the side
    of the last batch (progressive resizing grows it).

    `desc` labels the progress bar; None shows none. `after_batch(images_seen)`, called after every batch, may
    end the epoch there by returning True (a time budget shorter than the epoch).
    """
    model.train()
    total, n_seen, head_sums, side = 0.0, 0, {}, 0
    # Dropping a small last batch keeps BatchNorm away from 1-image batches.
    batch_size = parts.batch_size
    n_batches = batches_per_epoch(len(order), batch_size)
    bar = tqdm(iterate(data, order, batch_size, drop_last=len(order) > batch_size), total=n_batches,
               desc=desc, unit="batch", disable=desc is None, leave=False)
    start = time.perf_counter()
    parts.optimizer.zero_grad(set_to_none=True)
    for i, (images, labels, ages) in enumerate(bar):
        sized = {"out_size": parts.ramp.size(parts.schedule.progress)} if parts.ramp is not None else {}
        x = parts.augment(images.to(device, non_blocking=True), generator=generator, **sized)
        x = x.contiguous(memory_format=parts.memory_format)
        targets = parts.make_targets(labels.to(device), ages.to(device))
        if parts.mix is not None:
            x, targets = parts.mix(x, targets, generator)
        with autocast(device, parts.amp):
            outputs = model(x)
            loss, head_losses = parts.criterion(outputs, targets)
        scaled = loss / parts.accum_steps
        if parts.scaler is not None and parts.scaler.is_enabled():
            parts.scaler.scale(scaled).backward()
        else:
            scaled.backward()
        if (i + 1) % parts.accum_steps == 0 or i + 1 == n_batches:
            _optimizer_step(model, parts)
        bs, side = len(labels), x.shape[-1]
        total += float(loss.detach()) * bs
        n_seen += bs
        for k, v in head_losses.items():
            head_sums[k] = head_sums.get(k, 0.0) + float(v) * bs
        bar.set_postfix(loss=f"{total / n_seen:.4f}", lr=f"{parts.optimizer.param_groups[0]['lr']:.2e}")
        if after_batch is not None and after_batch(n_seen):
            if (i + 1) % parts.accum_steps:  # gradients accumulated since the last step are not thrown away
                _optimizer_step(model, parts)
            break
    seconds = time.perf_counter() - start
    out = {"loss": total / max(n_seen, 1), "images_per_s": n_seen / max(seconds, 1e-9), "seconds": seconds,
           "lr": parts.optimizer.param_groups[0]["lr"], "input_size": side}
    out.update({f"loss_{k}": v / max(n_seen, 1) for k, v in head_sums.items()})
    return out


def _optimizer_step(model, parts: StepParts) -> None:
    scaler = parts.scaler if parts.scaler is not None and parts.scaler.is_enabled() else None
    if parts.clip_grad > 0:
        if scaler:
            scaler.unscale_(parts.optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), parts.clip_grad)
    if scaler:
        scaler.step(parts.optimizer)
        scaler.update()
    else:
        parts.optimizer.step()
    parts.optimizer.zero_grad(set_to_none=True)
    parts.schedule.step_batch()
    if parts.ema is not None:
        parts.ema.update(unwrap(model))
