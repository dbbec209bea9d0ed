"""Crash-safe file writes: a temp file in the target's folder, fsync, then one rename over the target."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable


def write_atomic(path: Path, write: Callable[[BinaryIO], object], tmp_prefix: str | None = None) -> None:
    """Write `path` through `write(fh)`; readers see the old file or the whole new one, never a part.

    The temp file is `<tmp_prefix>XXXX.tmp` (default `.<name>.`) beside `path`; it is removed if `write` fails, and
    a process killed mid-write leaves only such a file, which the owners' leftover sweeps delete.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=tmp_prefix or f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
