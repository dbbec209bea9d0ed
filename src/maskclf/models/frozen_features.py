"""Frozen face networks as backbones: features computed once per distinct input chip, remembered by its content.

A frozen extractor turns the loader's normalised batch back into uint8 RGB chips at the network's own input size
and asks the network for features. Because nothing in it trains, the features of a chip never change: a
process-wide memo keyed by a hash of the chip's bytes makes every later epoch (and validation) nearly free when the
augmentation is deterministic (`train.augment.preset=base`), and an on-disk store under the face-cache root lets
later runs and `predict` reuse them. Extractors register no parameters or buffers (the network lives outside the
module tree), so checkpoints hold only the heads and the optimiser never sees the frozen network.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import uuid
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from maskclf.utils.atomic import write_atomic

log = logging.getLogger(__name__)

# Any normalisation round-trips; 0.5/0.5 maps pixels to [-1, 1] for the augmentations' noise and colour ops.
MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)
STORE_FORMAT = 1
MAX_SHARDS = 64  # merge the store's shard files into one when a load finds more than this
_STALE_TMP_S = 3600  # temp files older than this are leftovers of a killed writer
DEFAULT_STORE = object()  # an extractor's store_dir default: its folder under the face-cache root


def chip_digest(chip: np.ndarray) -> bytes:
    """16-byte content hash of a uint8 chip (its bytes; shape and dtype are fixed per store)."""
    return hashlib.blake2b(np.ascontiguousarray(chip).data, digest_size=16).digest()


def to_chips(x: torch.Tensor, size: int, mean=MEAN, std=STD) -> np.ndarray:
    """Normalised float (B, 3, H, W) -> uint8 RGB (B, size, size, 3): undo `mean`/`std`, resize, round."""
    x = x.detach().float().cpu()
    m = torch.tensor(mean, dtype=x.dtype).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype).view(1, 3, 1, 1)
    x = x * s + m
    if x.shape[-2:] != (size, size):  # antialiasing only matters when shrinking (and is slow on CPU)
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=x.shape[-1] > size)
    return x.mul_(255.0).round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


class DescriptorStore:
    """Feature vectors of `dim` floats by chip digest: a dict in memory, backed (when `folder` is set) by .npz shards.

    Each batch with new chips is written as one shard: a temp file in the folder, fsynced and renamed, holding
    two plain arrays (no pickle): `keys` uint8 (N, 16) and `vectors` float32 (N, dim). Unreadable shards are
    skipped with a warning (their faces are simply computed again); many shards are merged into one on load.
    """

    def __init__(self, folder: Path | None, dim: int):
        self.folder = Path(folder) if folder else None
        self.dim = dim
        self.memo: dict[bytes, np.ndarray] = {}
        self.hits = self.misses = 0
        if self.folder is not None:
            self._load()

    def lookup(self, chips: np.ndarray, compute) -> np.ndarray:
        """(B, dim) float32 features of `chips`; `compute(list of chips)` runs only for unseen ones."""
        keys = [chip_digest(c) for c in chips]
        new = {}
        for k, c in zip(keys, chips):
            if k not in self.memo and k not in new:
                new[k] = c
        if new:
            vectors = np.asarray(compute(list(new.values())), dtype=np.float32).reshape(len(new), self.dim)
            self.memo.update(zip(new, vectors))
            if self.folder is not None:
                self._write(list(new), vectors)
        self.misses += len(new)
        self.hits += len(keys) - len(new)
        return np.stack([self.memo[k] for k in keys]) if keys else np.empty((0, self.dim), np.float32)

    def _write(self, keys: list[bytes], vectors: np.ndarray) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"part-{time.time_ns()}-{os.getpid()}-{uuid.uuid4().hex[:8]}.npz"
        key_array = np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(len(keys), 16)
        write_atomic(path, lambda fh: np.savez(fh, keys=key_array, vectors=np.asarray(vectors, dtype=np.float32)),
                     tmp_prefix=".part-")
        return path

    def _read(self, path: Path) -> int:
        try:
            with np.load(path, allow_pickle=False) as z:
                keys, vectors = z["keys"], z["vectors"]
        except FileNotFoundError:  # merged away by another process since the listing
            return 0
        except Exception as exc:  # truncated or foreign files raise many different types
            log.warning("%s: unreadable descriptor shard, ignoring it (%s: %s)", path, type(exc).__name__, exc)
            return 0
        ok = (keys.dtype == np.uint8 and keys.ndim == 2 and keys.shape[1] == 16 and vectors.dtype == np.float32
              and vectors.shape == (len(keys), self.dim) and np.isfinite(vectors).all())
        if not ok:
            log.warning("%s: descriptor shard with unexpected arrays %s %s / %s %s (expected vectors of %d), "
                        "ignoring it", path, keys.dtype, keys.shape, vectors.dtype, vectors.shape, self.dim)
            return 0
        self.memo.update(zip((k.tobytes() for k in keys), vectors))
        return len(keys)

    def _load(self) -> None:
        if not self.folder.is_dir():
            return
        now = time.time()
        for tmp in self.folder.glob(".part-*.tmp"):
            try:
                if now - tmp.stat().st_mtime > _STALE_TMP_S:
                    tmp.unlink()
            except FileNotFoundError:
                pass
        shards = sorted(self.folder.glob("part-*.npz"))
        read = [p for p in shards if self._read(p)]
        if len(read) > MAX_SHARDS:  # merge: the new file first, so the data is never only in files being removed
            self._write(list(self.memo), np.stack(list(self.memo.values())))
            for p in read:
                p.unlink(missing_ok=True)
        log.info("descriptor store %s: %d faces from %d shard(s)", self.folder, len(self.memo), len(read))


_STORES: dict[Path | None, DescriptorStore] = {}


def store_for(folder: Path | None, dim: int) -> DescriptorStore:
    """The process-wide store of `folder` (None: memory only), shared by every extractor and model copy."""
    if folder not in _STORES:
        _STORES[folder] = DescriptorStore(folder, dim)
    if _STORES[folder].dim != dim:
        raise ValueError(f"descriptor store {folder} holds vectors of {_STORES[folder].dim} floats, not {dim}")
    return _STORES[folder]


def default_store_dir(backbone: str, tag: list) -> Path:
    """<face-cache root>/descriptors/<backbone>-<hash of `tag` (network version, weights file, chip size)>."""
    from maskclf.faces.cache import default_cache_root

    digest = hashlib.sha1(json.dumps([STORE_FORMAT, *tag]).encode()).hexdigest()[:8]
    return default_cache_root() / "descriptors" / f"{backbone}-{digest}"


class FrozenExtractor(nn.Module):
    """A frozen network as a timm-like backbone: normalised (B, 3, H, W) -> (B, num_features), no parameters.

    Subclasses set `chip` (the network's input side), `num_features` and `model_path` (its weights file), the
    texts messages quote (`about`, `pip`, `cost` per face, `scale_note` on why heads need `model.head_bn`, the
    example `config`), `weights_file()` (the installed weights; raises naming `pip` when absent), and implement
    `compute(list of uint8 RGB chips) -> (N, num_features)`.
    """

    chip: int
    num_features: int
    model_path: str
    about: str
    pip: str
    cost: str
    scale_note: str
    config: str

    def __init__(self, drop_rate: float, store_dir: Path | None):
        super().__init__()
        self.store_dir = store_dir
        self.drop = nn.Dropout(drop_rate) if drop_rate else nn.Identity()
        # Read by timm.data.resolve_model_data_config: the loader normalises with these, forward undoes them.
        self.pretrained_cfg = {"input_size": (3, self.chip, self.chip), "mean": MEAN, "std": STD,
                               "interpolation": "bilinear"}

    @property
    def store(self) -> DescriptorStore:
        """The store that remembers encoded chips."""
        return store_for(self.store_dir, self.num_features)

    @staticmethod
    def weights_file() -> Path:
        """The frozen network's installed weights file."""
        raise NotImplementedError

    def compute(self, chips: list[np.ndarray]) -> np.ndarray:
        """Features of chips the store has not seen; the frozen network's own call."""
        raise NotImplementedError

    def descriptors(self, chips: np.ndarray) -> np.ndarray:
        """(B, num_features) float32 for uint8 (B, chip, chip, 3) RGB chips, memoised."""
        return self.store.lookup(chips, self.compute)

    @torch.compiler.disable
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        chips = to_chips(x, self.chip, self.pretrained_cfg["mean"], self.pretrained_cfg["std"])
        features = torch.from_numpy(self.descriptors(chips)).to(x.device)
        return self.drop(features)
