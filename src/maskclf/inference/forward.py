"""One inference pass over a crop set: the code validation, the final score and `predict` share."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from maskclf.data.loader import CropSet, iterate
from maskclf.utils.runtime import autocast


@torch.no_grad()
def predict_outputs(model, data: CropSet, transform: Callable, device: torch.device, batch_size: int = 256,
                    amp: bool = False, memory_format=torch.contiguous_format,
                    desc: str | None = "predict") -> dict[str, torch.Tensor]:
    """Raw head outputs (CPU float32) for every image of `data`, in order; `desc` labels the bar (None: no bar)."""
    model.eval()
    chunks: dict[str, list[torch.Tensor]] = {}
    order = np.arange(len(data))
    n_batches = (len(order) + batch_size - 1) // batch_size
    for images, _, _ in tqdm(iterate(data, order, batch_size), total=n_batches, desc=desc, unit="batch",
                             disable=desc is None, leave=False):
        x = transform(images.to(device, non_blocking=True)).contiguous(memory_format=memory_format)
        with autocast(device, amp):
            outputs = model(x)
        for k, v in outputs.items():
            chunks.setdefault(k, []).append(v.float().cpu())
    return {k: torch.cat(v) for k, v in chunks.items()}
