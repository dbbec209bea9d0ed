"""Face-crop cache: uint8 crops in shard files plus a JSON index, updated incrementally and crash-safe.

Layout of a cache folder: `shard-NNNNN.npy` files (N x S x S x 3 uint8) and `index.json`, which maps each
image key (path relative to the dataset root) to its shard row, the file's (size, mtime_ns) stamp, the
detected face, how many confident faces were found and whether the fallback box was used. A shard is written to a temporary name and renamed,
then the index is replaced atomically, so a killed update leaves the previous consistent state; shard
files the index does not name are leftovers of such a kill and are deleted by the next update.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import socket
import sys
import time
from collections import defaultdict
from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from maskclf.utils.atomic import write_atomic
from maskclf.config import PrepareCfg
from maskclf.layout import Record
from maskclf.faces.detect import Face, FaceCrop, crop_images, crop_landmarks, default_workers

FORMAT = 2
INDEX = "index.json"
REBUILD = "run `maskclf prepare` on its dataset to rebuild it"


class CacheError(ValueError):
    """A damaged face-cache file (torn index, shortened shard); the next update rebuilds what it lost."""


def _empty_index() -> dict:
    return {"format": FORMAT, "settings": None, "next_shard": 0, "shards": {}, "entries": {}, "failed": {}}


def _read_index(path: Path) -> dict:
    """The parsed index file; CacheError naming it when it is torn or not an index."""
    try:
        index = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CacheError(f"{path}: face cache index is damaged ({type(exc).__name__}: {exc}); {REBUILD}") from None
    if not isinstance(index, dict) or not set(_empty_index()) <= set(index):
        raise CacheError(f"{path}: face cache index is damaged (expected keys {sorted(_empty_index())}); {REBUILD}")
    if index["format"] != FORMAT:
        raise ValueError(f"{path}: cache format {index['format']}, expected {FORMAT}; delete the folder to rebuild")
    return index


def default_cache_root() -> Path:
    """$MASKCLF_CACHE, else ~/.cache/maskclf."""
    return Path(os.environ.get("MASKCLF_CACHE") or Path.home() / ".cache" / "maskclf")


def _short_hash(obj) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:8]


def crop_settings(cfg: PrepareCfg) -> dict:
    """The settings that change a crop (not `chunk`; detection settings only when a detector runs)."""
    # max_pixels belongs here: images it refused are recorded as failed, and a new limit must look at them again.
    # detect_side also sets the reduced JPEG decode, so it changes crops without a detector too.
    out = {"format": FORMAT, "size": cfg.size, "detector": cfg.detector, "fallback_box": list(cfg.fallback_box),
           "max_pixels": cfg.max_pixels, "detect_side": cfg.detect_side}
    if cfg.detector != "none":
        out.update(margin=cfg.margin, pad=cfg.pad, min_confidence=cfg.min_confidence)
    return out


def cache_dir_for(root: Path, cfg: PrepareCfg, cache_root: Path | None = None) -> Path:
    """<cache_root>/<dataset name>-<hash of its path>/<detector>-<size>px-<hash of the crop settings>."""
    root = Path(os.path.abspath(root))
    base = Path(cache_root) if cache_root else default_cache_root()
    return base / f"{root.name}-{_short_hash(str(root))}" / f"{cfg.detector}-{cfg.size}px-{_short_hash(crop_settings(cfg))}"


def cache_key(root: Path, path: Path) -> str:
    """The image's path relative to the dataset root, '/'-separated."""
    rel = os.path.relpath(os.path.abspath(path), os.path.abspath(root))
    if rel.startswith(".."):
        raise ValueError(f"image {path} is not inside the dataset root {root}")
    return Path(rel).as_posix()


@dataclass
class UpdateStats:
    """What one cache update did: images asked for, processed, reused, failed, fallbacks."""

    total: int = 0  # distinct images asked for
    new: int = 0  # processed for the first time
    changed: int = 0  # processed again because size or mtime changed
    reused: int = 0  # already cached and unchanged
    failed: int = 0  # unreadable (now or at an earlier run, file unchanged since)
    fallback: int = 0  # cached with the fallback box because no face was found
    seconds: float = 0.0
    repaired: list[str] = field(default_factory=list)  # damaged cache files found and rebuilt

    @property
    def images_per_s(self) -> float:
        """Processing speed of the images this update (re)processed."""
        return (self.new + self.changed) / self.seconds if self.seconds > 0 else 0.0


def _face_json(face: Face | None) -> dict | None:
    if face is None:
        return None
    marks = None if face.landmarks is None else np.round(face.landmarks, 1).tolist()
    return {"box": [round(v, 1) for v in face.box], "score": round(face.score, 4), "landmarks": marks}


def _holder() -> str:
    """Who takes a lock: pid, host, command and time, written into the lock file for anyone who has to wait."""
    command = " ".join([Path(sys.argv[0]).name, *sys.argv[1:3]]) if sys.argv and sys.argv[0] else "python"
    return f"pid {os.getpid()} on {socket.gethostname()}, '{command}', since {time.strftime('%Y-%m-%d %H:%M:%S')}"


@contextmanager
def _locked(directory: Path):
    """Only one update per cache folder at a time; another one waits here, saying which process holds the lock."""
    with open(directory / ".lock", "a+") as fh:  # "a+": opening must not erase the holder's note
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            held_by = fh.read().strip() or "a process that left no note"
            print(f"waiting for {directory}: another update holds its lock ({held_by})", file=sys.stderr, flush=True)
            fcntl.flock(fh, fcntl.LOCK_EX)
        fh.seek(0)
        fh.truncate()
        fh.write(_holder())
        fh.flush()
        try:
            yield
        finally:
            fh.truncate(0)
            fcntl.flock(fh, fcntl.LOCK_UN)


class FaceCache:
    """Square uint8 face crops by image key, stored in one cache folder."""

    def __init__(self, directory: Path):
        self.dir = Path(directory)
        self._load()

    def _load(self) -> None:
        """Read the index; a damaged one reads as empty, with `damage` saying why (reads raise it, updates rebuild)."""
        self._maps: dict[str, np.ndarray] = {}
        self.damage: str | None = None
        self._index = _empty_index()
        path = self.dir / INDEX
        if path.is_file():
            try:
                self._index = _read_index(path)
            except CacheError as exc:
                self.damage = str(exc)

    @property
    def size(self) -> int | None:
        """Side of the cached crops, or None for an empty cache."""
        settings = self._index["settings"]
        return settings["size"] if settings else None

    @property
    def failed(self) -> dict[str, str]:
        """Cache key -> why that image could not be read."""
        return {k: v["message"] for k, v in self._index["failed"].items()}

    @property
    def fallback(self) -> set[str]:
        """Keys whose crop used the fallback box (no face found)."""
        return {k for k, e in self._index["entries"].items() if e["fallback"]}

    @property
    def multiple(self) -> dict[str, int]:
        """Key -> face count for images where the detector found several faces (the largest was cropped)."""
        return {k: e["faces"] for k, e in self._index["entries"].items() if (e["faces"] or 0) > 1}

    def face_status(self, key: str) -> str:
        """How the crop's face was chosen: found, multiple:N (largest used), fallback (none found), undetected."""
        n = self._entry(key)["faces"]
        if n is None:
            return "undetected"
        return "fallback" if n == 0 else "found" if n == 1 else f"multiple:{n}"

    def keys(self) -> list[str]:
        """Every cached key, in insertion order."""
        return list(self._index["entries"])

    def __len__(self) -> int:
        return len(self._index["entries"])

    def has(self, key: str) -> bool:
        """Whether `key` has a crop in the cache."""
        return key in self._index["entries"]

    def face(self, key: str) -> Face | None:
        """The detected face behind a cached crop (coordinates of the full-size image), or None."""
        f = self._entry(key)["face"]
        if f is None:
            return None
        marks = None if f["landmarks"] is None else np.asarray(f["landmarks"], np.float64)
        return Face(tuple(f["box"]), f["score"], marks)

    def crop_landmarks(self, keys: Iterable[str], cfg: PrepareCfg) -> np.ndarray:
        """(N, 5, 2) float32 landmarks of `keys` in their crops' pixels (cfg: the settings the crops were made
        with); NaN rows where no face or no landmarks were found (fallback box, Haar, no detector)."""
        keys = list(keys)
        out = np.full((len(keys), 5, 2), np.nan, np.float32)
        for i, k in enumerate(keys):
            marks = crop_landmarks(self.face(k), cfg)
            if marks is not None:
                out[i] = marks
        return out

    def _entry(self, key: str) -> dict:
        if self.damage:
            raise CacheError(self.damage)
        e = self._index["entries"].get(key)
        if e is not None:
            return e
        if key in self._index["failed"]:
            raise KeyError(f"image '{key}' could not be cached: {self._index['failed'][key]['message']}")
        raise KeyError(f"image '{key}' is not in the face cache {self.dir}; run `maskclf prepare` on its dataset")

    def _map(self, name: str) -> np.ndarray:
        """The shard memory-mapped, checked against the row count and crop size the index gives."""
        if name not in self._maps:
            path, s = self.dir / name, self.size
            want = (self._index["shards"].get(name), s, s, 3)
            try:
                arr = np.load(path, mmap_mode="r")
            except (OSError, ValueError) as exc:  # missing, shortened (mmap past the end), or not .npy
                raise CacheError(f"{path}: face cache shard is damaged ({type(exc).__name__}: {exc}); {REBUILD}") from None
            if arr.shape != want or arr.dtype != np.uint8:
                raise CacheError(f"{path}: face cache shard holds {arr.shape} {arr.dtype}, the index expects "
                                 f"{want} uint8; {REBUILD}")
            self._maps[name] = arr
        return self._maps[name]

    def get(self, keys: Iterable[str]) -> np.ndarray:
        """Crops for `keys` as one (N, S, S, 3) uint8 array, in the order given."""
        keys = list(keys)
        s = self.size or 0
        out = np.empty((len(keys), s, s, 3), np.uint8)
        groups: dict[str, tuple[list[int], list[int]]] = defaultdict(lambda: ([], []))
        for i, k in enumerate(keys):
            e = self._entry(k)
            pos, rows = groups[e["shard"]]
            pos.append(i)
            rows.append(e["row"])
        for name, (pos, rows) in groups.items():
            out[pos] = self._map(name)[rows]
        return out

    def update(self, records: Iterable[Record], root: Path, cfg: PrepareCfg, device: str = "cpu",
               workers: int | None = None, progress: bool = True) -> UpdateStats:
        """Crop every new or changed image of `records` (keys relative to `root`) and commit chunk by chunk."""
        start = time.perf_counter()
        self.dir.mkdir(parents=True, exist_ok=True)
        with _locked(self.dir):
            self._load()  # another process may have updated the cache while we waited
            repaired = self._repair()
            self._check_settings(cfg)
            self._remove_leftovers()
            todo, done, counts = self._plan(records, root)
            if workers is None:
                workers = default_workers(len(todo))
            batch, filled, fallback = [], 0, 0
            # Crops go straight into the shard's buffer, which is written as it is (no stacked copy).
            rows = np.empty((min(cfg.chunk, len(todo)), cfg.size, cfg.size, 3), np.uint8)
            results = crop_images([p for _, p, _ in todo], cfg, device, workers)
            # tqdm shows images/s and the time left; the postfix counts images cropped with the fallback box.
            with tqdm(total=len(todo), unit="img", desc="prepare", disable=not progress) as bar:
                for (key, _, stamp), result in zip(todo, results):
                    if result.error is None:
                        rows[filled], result.crop, filled = result.crop, None, filled + 1
                    batch.append((key, stamp, result))
                    fallback += result.fallback
                    bar.set_postfix(fallback=fallback, refresh=False)
                    bar.update()
                    if len(batch) == cfg.chunk:
                        self._commit(batch, rows[:filled])
                        batch, filled = [], 0
            if batch:
                self._commit(batch, rows[:filled])
            self._compact_if_needed(cfg.chunk)
        keys = done | {k for k, _, _ in todo}
        entries, failed = self._index["entries"], self._index["failed"]
        return UpdateStats(total=len(keys), failed=sum(k in failed for k in keys),
                           fallback=sum(k in entries and entries[k]["fallback"] for k in keys),
                           seconds=time.perf_counter() - start, repaired=repaired, **counts)

    def _repair(self) -> list[str]:
        """Forget a damaged index or shard (its images are then cropped again); what was damaged, by file."""
        found = [self.damage] if self.damage else []
        self.damage = None
        for name in list(self._index["shards"]):
            try:
                self._map(name)
            except CacheError as exc:
                found.append(str(exc))
                del self._index["shards"][name]
                self._index["entries"] = {k: e for k, e in self._index["entries"].items() if e["shard"] != name}
        if found:
            self._write_index()
        return found

    def _check_settings(self, cfg: PrepareCfg) -> None:
        want, have = crop_settings(cfg), self._index["settings"]
        if have is None:
            self._index["settings"] = want
        elif have != want:
            raise ValueError(f"face cache {self.dir} holds crops made with {have}, not {want}; "
                             "use the folder cache_dir_for() gives for these settings")

    def _plan(self, records: Iterable[Record], root: Path) -> tuple[list[tuple[str, Path, list[int]]], set[str], dict]:
        """Images to process as (key, path, stamp); keys that are up to date; new/changed/reused counts."""
        entries, failed = self._index["entries"], self._index["failed"]
        todo, done, seen, counts = [], set(), set(), {"new": 0, "changed": 0, "reused": 0}
        for r in records:
            key = cache_key(root, r.path)
            if key in seen:
                continue
            seen.add(key)
            try:
                st = os.stat(r.path)
                stamp = [st.st_size, st.st_mtime_ns]
            except OSError:
                stamp = [-1, -1]  # processed once, recorded as failed, skipped until the file appears
            old = entries.get(key) or failed.get(key)
            if old is not None and old["stamp"] == stamp:
                counts["reused"] += key in entries
                done.add(key)
                continue
            counts["changed" if old is not None else "new"] += 1
            todo.append((key, Path(r.path), stamp))
        return todo, done, counts

    def _commit(self, batch: list[tuple[str, list[int], FaceCrop]], crops: np.ndarray) -> None:
        """Write one shard of the batch's `crops` (its readable images, in order), then point the index at it."""
        name = None
        if len(crops):
            name = f"shard-{self._index['next_shard']:05d}.npy"
            self._index["next_shard"] += 1
            write_atomic(self.dir / name, lambda fh: np.save(fh, crops))
            self._index["shards"][name] = len(crops)
        entries, failed = self._index["entries"], self._index["failed"]
        row = 0
        for key, stamp, r in batch:
            entries.pop(key, None)
            failed.pop(key, None)
            if r.error is not None:
                failed[key] = {"stamp": stamp, "message": r.error}
                continue
            entries[key] = {"shard": name, "row": row, "stamp": stamp, "fallback": r.fallback, "faces": r.faces,
                            "face": _face_json(r.face)}
            row += 1
        self._write_index()

    def _write_index(self) -> None:
        data = json.dumps(self._index, separators=(",", ":")).encode()
        write_atomic(self.dir / INDEX, lambda fh: fh.write(data))

    def _remove_leftovers(self) -> None:
        """Delete shards and temp files a killed update left behind (the index never names them)."""
        for p in self.dir.iterdir():
            stray_shard = p.name.startswith("shard-") and p.name not in self._index["shards"]
            if stray_shard or p.name.endswith(".tmp"):
                p.unlink()

    def _compact_if_needed(self, chunk: int) -> None:
        """Rewrite live rows into fresh shards once superseded rows make up half the stored rows."""
        stored = sum(self._index["shards"].values())
        garbage = stored - len(self._index["entries"])
        if garbage < max(chunk, stored // 2):
            return
        old = list(self._index["shards"])
        live = sorted(self._index["entries"].items(), key=lambda kv: (kv[1]["shard"], kv[1]["row"]))
        shards = {}
        for i in range(0, len(live), chunk):
            part = live[i:i + chunk]
            arr = self.get([k for k, _ in part])
            name = f"shard-{self._index['next_shard']:05d}.npy"
            self._index["next_shard"] += 1
            write_atomic(self.dir / name, lambda fh: np.save(fh, arr))
            shards[name] = len(part)
            for row, (_, e) in enumerate(part):
                e["shard"], e["row"] = name, row
        self._index["shards"] = shards
        self._write_index()
        self._maps = {}
        for name in old:
            (self.dir / name).unlink()
