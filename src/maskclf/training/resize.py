"""Progressive resizing: training batches start small and grow to the full input size as the schedule runs.

A step's cost grows with the pixels it pushes through the network, so the time a budget holds depends on where
in the ramp its steps fall. `SizeRamp.cost` gives the mean cost of a stretch of the schedule relative to
full-size steps; the budget planner (maskclf.training.member) turns measured paces into full-size paces with it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

COST_SAMPLES = 512  # points of the numeric mean in SizeRamp.cost


@dataclass(frozen=True)
class SizeRamp:
    """Side `start` at progress 0, growing linearly to `full` at progress `until` (a fraction of the planned
    schedule), in multiples of `multiple` px; full size from there on. Validation always runs at `full`."""

    start: int
    full: int
    until: float = 0.5
    multiple: int = 8

    def __post_init__(self):
        if not 16 <= self.start < self.full:
            raise ValueError(f"progressive resizing starts at {self.start} px: needs 16 <= start < the input size "
                             f"({self.full} px)")
        if not 0.0 < self.until <= 1.0:
            raise ValueError(f"progressive resizing reaches full size at {self.until:g} of the schedule: needs 0 < until <= 1")

    def size(self, progress: float) -> int:
        """The side of the training batches at `progress` (0 = first step, 1 = the planned end)."""
        if progress >= self.until:
            return self.full
        side = self.start + (self.full - self.start) * max(progress, 0.0) / self.until
        return max(self.start, min(self.full, int(side // self.multiple * self.multiple)))

    def cost(self, a: float, b: float) -> float:
        """Mean cost per step over progress [a, b], relative to a full-size step (cost grows with the pixels)."""
        a, b = max(a, 0.0), max(b, 0.0)
        if b <= a:
            return (self.size(a) / self.full) ** 2
        points = (np.arange(COST_SAMPLES) + 0.5) / COST_SAMPLES * (b - a) + a
        return float(np.mean([(self.size(u) / self.full) ** 2 for u in points]))


def mean_cost(ramp: SizeRamp | None, a: float, b: float) -> float:
    """`ramp.cost(a, b)`, or 1 without progressive resizing."""
    return 1.0 if ramp is None else ramp.cost(a, b)


def fit_epochs(seconds: float, step_s: float, steps_per_epoch: int, done: float, epochs: int,
               ramp: SizeRamp | None, epoch_s: float = 0.0) -> float:
    """Where a schedule should end (in epochs, at most `epochs`) so that what runs after epoch `done` fits in
    `seconds`: `step_s` seconds per full-size optimiser step plus `epoch_s` per epoch at any size (its
    validation). With a ramp the later steps' sizes depend on that end, so it is found by bisection over whole
    steps; without one it is the plain quotient."""
    if ramp is None:
        per_step = step_s + epoch_s / steps_per_epoch
        fit = math.floor(max(seconds, 0.0) / max(per_step, 1e-12) + 1e-9)  # 1e-9: 400 / 25 is 16 steps, not 15
        return min(float(epochs), done + fit / steps_per_epoch)

    def needs(end_steps: int) -> float:
        end = end_steps / steps_per_epoch
        return (end - done) * (steps_per_epoch * step_s * ramp.cost(done / end, 1.0) + epoch_s)

    low, high = math.ceil(done * steps_per_epoch), epochs * steps_per_epoch
    if needs(high) <= seconds:
        return float(epochs)
    while high - low > 1:  # needs(low) <= seconds < needs(high)
        mid = (low + high) // 2
        low, high = (mid, high) if needs(mid) <= seconds else (low, mid)
    return max(low / steps_per_epoch, done)
