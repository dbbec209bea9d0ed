"""Seeding, device choice and precision: the only place that knows about CUDA vs CPU."""

from __future__ import annotations

import contextlib
import os
import random
from dataclasses import dataclass

import numpy as np
import torch


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch; `deterministic` also asks torch for deterministic kernels (warning otherwise)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    # Process-wide switches: set them both ways, so an earlier deterministic run does not leak into this one.
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    torch.backends.cudnn.benchmark = not deterministic and torch.cuda.is_available()


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' picks CUDA (this process's LOCAL_RANK under torchrun), then MPS, then CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f"train.device '{name}' is not a device (use auto, cpu, cuda, cuda:1, mps)") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"train.device '{name}' asked for CUDA but torch sees no GPU here; use 'auto' or 'cpu'")
    return device


def autocast(device: torch.device, enabled: bool):
    """bf16/fp16 autocast on CUDA when enabled; a no-op context on CPU (AMP gives no speed-up there)."""
    if enabled and device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return contextlib.nullcontext()


def grad_scaler(device: torch.device, enabled: bool) -> torch.amp.GradScaler:
    """A GradScaler that is active only for fp16 autocast on CUDA."""
    use = enabled and device.type == "cuda" and not torch.cuda.is_bf16_supported()
    return torch.amp.GradScaler("cuda", enabled=use)


def memory_format(channels_last: bool) -> torch.memory_format:
    """channels_last when asked for, else contiguous.

    On every device: cuDNN's tensor cores want it on CUDA, and oneDNN runs the default mobilenetv2 1.4-1.5x
    faster per training step and inference batch on the CPU (bench/RESULTS.md).
    """
    return torch.channels_last if channels_last else torch.contiguous_format


@dataclass(frozen=True)
class Dist:
    """This process's place in a torchrun job: rank 0 of 1 when not distributed."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        """Whether this process writes (rank 0)."""
        return self.rank == 0


def init_distributed(device: torch.device) -> Dist:
    """Join the process group torchrun set up (NCCL on CUDA, Gloo on CPU); a no-op for a single process."""
    if int(os.environ.get("WORLD_SIZE", 1)) <= 1:
        return Dist()
    import torch.distributed as dist

    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size())


def shard(order: np.ndarray, d: Dist) -> np.ndarray:
    """This rank's share of an epoch's sample order; every rank gets as many samples (DDP steps in lockstep)."""
    if d.world == 1:
        return order
    return order[: len(order) // d.world * d.world][d.rank::d.world]


def broadcast(obj, d: Dist):
    """Rank 0's value of `obj` on every rank."""
    if d.world == 1:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(d: Dist) -> None:
    """Wait for every rank (no-op alone)."""
    if d.world > 1:
        import torch.distributed as dist

        dist.barrier()


def wrap_ddp(model: torch.nn.Module, device: torch.device, d: Dist) -> torch.nn.Module:
    """DistributedDataParallel around `model` when running under torchrun; the model itself otherwise."""
    if d.world == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain model inside DDP and/or torch.compile wrappers."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if not isinstance(inner, torch.nn.Module):
            return model
        model = inner
