"""Batches of cached face crops straight from an in-RAM uint8 array: no decoding, no per-sample Python."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from queue import Empty, Queue
from typing import Callable

import numpy as np
import torch


@dataclass
class CropSet:
    """Images (N,S,S,3) uint8 with their 18-class labels and ages (-1 / nan where unknown).

    `landmarks` (N, 5, 2) are the faces' landmarks in crop pixels (NaN where unknown); `paint`, when set, is a
    batch hook `(images, labels, landmarks, idx) -> (images, labels)` run on each gathered uint8 batch (training
    sets only, e.g. data.paint_masks.MaskPainter).
    """

    images: np.ndarray
    labels: np.ndarray
    ages: np.ndarray
    keys: list[str]
    landmarks: np.ndarray | None = None
    paint: Callable | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, idx: np.ndarray) -> "CropSet":
        """The crops at `idx`, as a new CropSet."""
        marks = None if self.landmarks is None else self.landmarks[idx]
        return CropSet(self.images[idx], self.labels[idx], self.ages[idx], [self.keys[i] for i in idx], marks,
                       self.paint)


def epoch_order(n: int, seed: int, epoch: int, sampler=None) -> np.ndarray:
    """The sample order of one epoch: a function of (seed, epoch) only, so a resumed run replays it exactly."""
    if sampler is not None:
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        return np.fromiter(iter(sampler), dtype=np.int64)
    return np.random.default_rng([seed, epoch]).permutation(n)


def iterate(data: CropSet, order: np.ndarray, batch_size: int, drop_last: bool = False):
    """Yield (uint8 images (B,S,S,3), labels (B,), ages (B,)) CPU tensors; gathers the next batch in a thread."""
    stops = range(0, len(order), batch_size)

    def make(start: int):
        idx = np.sort(order[start:start + batch_size])  # sorted gathers are cache-friendlier; order within a batch is irrelevant
        images, labels = data.images[idx], data.labels[idx]
        if data.paint is not None:  # in the prefetch thread, beside the model's step
            images, labels = data.paint(images, labels, data.landmarks[idx], idx)
        return torch.from_numpy(images), torch.from_numpy(labels), torch.from_numpy(data.ages[idx].astype(np.float32))

    starts = [s for s in stops if not (drop_last and s + batch_size > len(order))]
    queue: Queue = Queue(maxsize=2)
    stop = threading.Event()

    def worker() -> None:
        try:
            for s in starts:
                if stop.is_set():
                    return
                queue.put(make(s))
        except BaseException as exc:  # hand it to the consumer, which would otherwise wait forever
            queue.put(exc)
            return
        queue.put(None)

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    try:
        while (item := queue.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:  # also when the consumer stops early: unblock the worker so it ends
        stop.set()
        while thread.is_alive():
            try:
                queue.get(timeout=0.05)
            except Empty:
                pass
        thread.join()
