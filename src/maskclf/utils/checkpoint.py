"""Self-describing checkpoints, written atomically and loaded without arbitrary pickle."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from maskclf import __version__
from maskclf.utils.atomic import write_atomic

FORMAT = "maskclf-checkpoint-1"


class CheckpointError(ValueError):
    """A checkpoint file that is missing, corrupted or not a maskclf checkpoint."""


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write `payload` (+ format/version) to `path` atomically: temp file in the same folder, fsync, rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"format": FORMAT, "version": __version__, **payload}
    write_atomic(path, lambda fh: torch.save(data, fh))


def remove_partial_saves(folder: Path) -> None:
    """Delete the temp files of checkpoint saves that a killed process never finished."""
    for tmp in Path(folder).glob(".*.tmp"):
        tmp.unlink(missing_ok=True)


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load with `weights_only=True` (tensors, numbers, strings, lists, dicts only) and check the format."""
    path = Path(path)
    if path.is_dir():
        for name in ("best.pt", "last.pt"):
            if (path / name).is_file():
                path = path / name
                break
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated zip, wrong file type, pickled objects outside the allow-list
        raise CheckpointError(f"{path}: not a readable maskclf checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a maskclf checkpoint (expected format '{FORMAT}')")
    return data


def config_of(ckpt: dict[str, Any]) -> dict[str, Any]:
    return json.loads(ckpt["config"])
