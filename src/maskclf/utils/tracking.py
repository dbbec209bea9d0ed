"""Experiment tracking behind one `log()`: JSONL metrics always, TensorBoard and W&B optionally."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


class Tracker:
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
        row = {"step": step, **{k: v for k, v in metrics.items() if v is not None}}
        with self.metrics_path.open("a") as fh:
            fh.write(json.dumps(row) + "\n")
        scalars = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and math.isfinite(v)}
        if self._tb:
            for k, v in scalars.items():
                self._tb.add_scalar(k, v, step)
            self._tb.flush()
        if self._wandb:
            self._wandb.log(scalars, step=step)

    def log_figure(self, tag: str, figure, step: int) -> None:
        if self._tb:
            self._tb.add_figure(tag, figure, step, close=False)
        if self._wandb:
            import wandb as wandb_lib

            self._wandb.log({tag: wandb_lib.Image(figure)}, step=step)
        import matplotlib.pyplot as plt

        plt.close(figure)

    def close(self) -> None:
        if self._tb:
            self._tb.close()
        if self._wandb:
            self._wandb.finish()


class NullTracker:
    """Stands in for a Tracker on the ranks of a distributed job other than rank 0."""

    def log(self, metrics: dict[str, Any], step: int) -> None:
        pass

    def log_figure(self, tag: str, figure, step: int) -> None:
        pass

    def close(self) -> None:
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
