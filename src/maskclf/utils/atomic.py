"""Crash-safe file writes: a temp file in the target's folder, fsync, then one rename over the target."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable


def _umask() -> int:
    """The process umask (reading it means setting it; it is put straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_atomic(path: Path, write: Callable[[BinaryIO], object], tmp_prefix: str | None = None) -> None:
    """Write `path` through `write(fh)`; readers see the old file or the whole new one, never a part.

    The temp file is `<tmp_prefix>XXXX.tmp` (default `.<name>.`) beside `path`; it is removed if `write` fails, and
    a process killed mid-write leaves only such a file, which the owners' leftover sweeps delete. The file gets
    the mode a plain `open` would give it (0666 less the umask), not the temp file's private 0600.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=tmp_prefix or f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
