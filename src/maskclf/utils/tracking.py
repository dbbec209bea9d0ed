"""Experiment tracking behind one `log()`: JSONL metrics always, TensorBoard and W&B optionally."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from maskclf.utils.atomic import write_atomic


def metrics_row(metrics: dict[str, Any], step: int) -> dict[str, Any]:
    """The metrics.jsonl row `Tracker.log` writes for `metrics` at `step` (None values left out)."""
    return {"step": step, **{k: v for k, v in metrics.items() if v is not None}}


class Tracker:
    """Writes metrics.jsonl in the run folder, and TensorBoard / W&B when they are switched on."""

    def __init__(self, run_dir: Path, tensorboard: bool = True, wandb: bool = False, config: dict | None = None):
        self.run_dir = Path(run_dir)
        self.metrics_path = self.run_dir / "metrics.jsonl"
        self._tb = None
        self._wandb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(self.run_dir / "tb"))
        if wandb:
            try:
                import wandb as wandb_lib
            except ImportError:
                raise ValueError("run.wandb=true needs the wandb package: pip install 'maskclf[wandb]'") from None
            # WANDB_MODE=offline works without network; `wandb sync` uploads later.
            self._wandb = wandb_lib.init(dir=str(self.run_dir), name=self.run_dir.name, config=config or {})

    def log(self, metrics: dict[str, Any], step: int) -> None:
        """Append `metrics` at `step` to metrics.jsonl and the optional trackers."""
        row = metrics_row(metrics, step)
        with self.metrics_path.open("a") as fh:
            fh.write(json.dumps(row) + "\n")
        scalars = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and math.isfinite(v)}
        if self._tb:
            for k, v in scalars.items():
                self._tb.add_scalar(k, v, step)
            self._tb.flush()
        if self._wandb:
            self._wandb.log(scalars, step=step)

    @property
    def draws_figures(self) -> bool:
        """Whether figures go anywhere (TensorBoard or W&B): callers skip drawing them otherwise."""
        return bool(self._tb or self._wandb)

    def log_figure(self, tag: str, figure, step: int) -> None:
        """Log a matplotlib figure and close it."""
        if self._tb:
            self._tb.add_figure(tag, figure, step, close=False)
        if self._wandb:
            import wandb as wandb_lib

            self._wandb.log({tag: wandb_lib.Image(figure)}, step=step)
        import matplotlib.pyplot as plt

        plt.close(figure)

    def close(self) -> None:
        """Flush and close the optional trackers."""
        if self._tb:
            self._tb.close()
        if self._wandb:
            self._wandb.finish()


class NullTracker:
    """Stands in for a Tracker on the ranks of a distributed job other than rank 0."""

    draws_figures = False

    def log(self, metrics: dict[str, Any], step: int) -> None:
        """Ignore the metrics."""
        pass

    def log_figure(self, tag: str, figure, step: int) -> None:
        """Ignore the figure."""
        pass

    def close(self) -> None:
        """Nothing to close."""
        pass


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """Rows of a run's metrics.jsonl (a torn last line from a killed run is skipped)."""
    path = Path(run_dir) / "metrics.jsonl"
    rows = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def repair_log(run_dir: Path, row: dict[str, Any] | None) -> None:
    """Make metrics.jsonl end at `row` (the last epoch a checkpoint holds), as a resume starts after it.

    Rows after it (logged by an epoch the checkpoint never saw) are dropped, a missing `row` (killed between the
    checkpoint and the log) is appended, and a torn last line is removed; the file is rewritten atomically.
    """
    lines = [json.dumps(r) for r in read_metrics(run_dir)]  # compared as text: NaN != NaN as numbers
    if row is not None:
        last = json.dumps(row)
        end = max((i + 1 for i, line in enumerate(lines) if line == last), default=len(lines))
        lines = lines[:end] if lines[:end][-1:] == [last] else lines[:end] + [last]
    path = Path(run_dir) / "metrics.jsonl"
    if path.exists() or lines:
        text = "".join(line + "\n" for line in lines)
        write_atomic(path, lambda fh: fh.write(text.encode()))
