"""Self-describing checkpoints, written atomically and loaded without arbitrary pickle."""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Any

import torch

from maskclf import __version__
from maskclf.config import Config, validate_saved
from maskclf.utils.atomic import write_atomic

FORMAT = "maskclf-checkpoint-1"
CHECKSUM = "weights_sha256"


class CheckpointError(ValueError):
    """A checkpoint file that is missing, corrupted or not a maskclf checkpoint."""


def _tensors(obj: Any, prefix: str = ""):
    """(dotted name, tensor) for every tensor inside nested dicts/lists, in a fixed order."""
    if isinstance(obj, torch.Tensor):
        yield prefix, obj
    elif isinstance(obj, dict):
        for k in sorted(obj, key=str):
            yield from _tensors(obj[k], f"{prefix}.{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _tensors(v, f"{prefix}.{i}")


def weights_checksum(payload: dict[str, Any]) -> str:
    """SHA-256 over every tensor of `payload` (names, dtypes, shapes and bytes), the checksum key excluded."""
    digest = hashlib.sha256()
    for name, t in _tensors({k: v for k, v in payload.items() if k != CHECKSUM}):
        t = t.detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write `payload` (+ format/version/weights checksum) to `path` atomically: temp file, fsync, rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"format": FORMAT, "version": __version__, **payload}
    data[CHECKSUM] = weights_checksum(data)
    write_atomic(path, lambda fh: torch.save(data, fh))


def remove_partial_saves(folder: Path) -> None:
    """Delete the temp files of checkpoint saves that a killed process never finished."""
    for tmp in Path(folder).glob(".*.tmp"):
        tmp.unlink(missing_ok=True)


def resolve_checkpoint(path: Path) -> Path:
    """A checkpoint file as given, or a run folder's best.pt, else its last.pt (the folder itself if it has neither)."""
    path = Path(path)
    if path.is_dir():
        for name in ("best.pt", "last.pt"):
            if (path / name).is_file():
                return path / name
    return path


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load with `weights_only=True` (tensors, numbers, strings, lists, dicts only) and check the format."""
    path = resolve_checkpoint(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated zip, wrong file type, pickled objects outside the allow-list
        raise CheckpointError(f"{path}: not a readable maskclf checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a maskclf checkpoint (expected format '{FORMAT}')")
    if CHECKSUM not in data:
        # Checkpoints from before weights checksums existed still load; only their integrity goes unchecked.
        warnings.warn(f"{path}: saved by maskclf {data.get('version', '?')} without a weights checksum "
                      f"('{CHECKSUM}'), so damage to it cannot be detected; train again to get one", stacklevel=2)
    elif weights_checksum(data) != data[CHECKSUM]:
        raise CheckpointError(f"{path}: the weights do not match their checksum; the file is damaged "
                              "(copy it again, or use the run's other checkpoint)")
    return data


def config_of(ckpt: dict[str, Any]) -> dict[str, Any]:
    """The resolved config a checkpoint was trained with, as a plain dict."""
    return json.loads(ckpt["config"])


def checkpoint_config(ckpt: dict[str, Any], path: Path) -> Config:
    """The checkpoint's config, validated against the schema it was saved with (see config.CONFIG_SCHEMA)."""
    try:
        tree = config_of(ckpt)
    except (KeyError, TypeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: checkpoint is missing or has a malformed field (config: {exc})") from None
    return validate_saved(tree, ckpt.get("config_schema"), f"config inside {path}")
