import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from maskclf.faces.cache import CacheError, FaceCache, cache_dir_for, cache_key
from maskclf.config import PrepareCfg
from maskclf.layout import Record
import maskclf.faces.detect as detect
from maskclf.faces.detect import Face, crop_face, load_rgb

CFG = PrepareCfg(detector="none", size=32, chunk=4)


def _write_image(path, seed):
    rng = np.random.default_rng(seed)
    h, w = 40 + seed % 7, 50 + seed % 5
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path, quality=95)


def _dataset(root, n):
    (root / "img").mkdir(parents=True)
    paths = []
    for i in range(n):
        paths.append(root / "img" / f"{i:03d}.jpg")
        _write_image(paths[-1], i)
    return [Record(path=p, key=p.name) for p in paths]


def _expected(path, cfg=CFG):
    return crop_face(load_rgb(path), None, cfg)[0]


def test_cache_dir_depends_on_root_and_crop_settings_only(tmp_path, monkeypatch):
    monkeypatch.setenv("MASKCLF_CACHE", str(tmp_path / "c"))
    a = cache_dir_for(tmp_path / "data", CFG)
    assert a.is_relative_to(tmp_path / "c") and a.parent.name.startswith("data-")
    assert cache_dir_for(tmp_path / "data", CFG.model_copy(update={"chunk": 99})) == a
    assert cache_dir_for(tmp_path / "data", CFG.model_copy(update={"size": 64})) != a
    assert cache_dir_for(tmp_path / "other" / "data", CFG).parent != a.parent
    assert cache_dir_for(tmp_path / "data", CFG, cache_root=tmp_path / "x").is_relative_to(tmp_path / "x")


def test_cache_key_is_relative_posix_path(tmp_path):
    assert cache_key(tmp_path, tmp_path / "train" / "images" / "a.jpg") == "train/images/a.jpg"
    with pytest.raises(ValueError, match="not inside"):
        cache_key(tmp_path / "data", tmp_path / "a.jpg")


def test_round_trip_returns_exactly_the_stored_crops(tmp_path):
    records = _dataset(tmp_path / "data", 10)
    cache = FaceCache(tmp_path / "cache")
    stats = cache.update(records, tmp_path / "data", CFG, workers=1, progress=False)
    assert (stats.total, stats.new, stats.reused, stats.failed, stats.fallback) == (10, 10, 0, 0, 0)
    keys = [f"img/{i:03d}.jpg" for i in (7, 0, 3, 9)]
    got = FaceCache(tmp_path / "cache").get(keys)
    assert got.shape == (4, 32, 32, 3) and got.dtype == np.uint8
    for crop, i in zip(got, (7, 0, 3, 9)):
        np.testing.assert_array_equal(crop, _expected(records[i].path))
    assert len(list((tmp_path / "cache").glob("shard-*.npy"))) == 3  # chunks of 4, 4, 2
    assert cache.face("img/000.jpg") is None and cache.get([]).shape == (0, 32, 32, 3)
    with pytest.raises(KeyError, match="run `maskclf prepare`"):
        cache.get(["img/nope.jpg"])


def test_rerun_is_incremental_and_reprocesses_exactly_the_changed_file(tmp_path):
    root = tmp_path / "data"
    records = _dataset(root, 6)
    cache = FaceCache(tmp_path / "cache")
    cache.update(records, root, CFG, workers=1, progress=False)
    again = cache.update(records, root, CFG, workers=1, progress=False)
    assert (again.new, again.changed, again.reused) == (0, 0, 6)

    st = os.stat(records[2].path)
    os.utime(records[2].path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    _write_image(records[4].path, 99)  # new content
    stats = cache.update(records, root, CFG, workers=1, progress=False)
    assert (stats.new, stats.changed, stats.reused) == (0, 2, 4)
    np.testing.assert_array_equal(FaceCache(tmp_path / "cache").get(["img/004.jpg"])[0], _expected(records[4].path))


def test_garbage_from_changed_files_is_compacted(tmp_path):
    root = tmp_path / "data"
    records = _dataset(root, 8)
    cache = FaceCache(tmp_path / "cache")
    cache.update(records, root, CFG, workers=1, progress=False)
    for r in records[:7]:  # 7 superseded of 15 stored rows: at least half -> compact
        _write_image(r.path, 50 + int(r.path.stem))
    cache.update(records, root, CFG, workers=1, progress=False)
    shards = sorted((tmp_path / "cache").glob("shard-*.npy"))
    assert sum(np.load(p, mmap_mode="r").shape[0] for p in shards) == 8  # no superseded rows left
    fresh = FaceCache(tmp_path / "cache")
    for r in records:
        np.testing.assert_array_equal(fresh.get([f"img/{r.path.name}"])[0], _expected(r.path))


def test_broken_files_are_recorded_failed_and_not_retried_until_changed(tmp_path):
    root = tmp_path / "data"
    records = _dataset(root, 5)
    truncated, text = root / "img" / "truncated.jpg", root / "img" / "text.jpg"
    truncated.write_bytes(records[0].path.read_bytes()[:300])
    text.write_text("hello")
    records += [Record(path=truncated, key="t"), Record(path=text, key="x")]
    cache = FaceCache(tmp_path / "cache")
    stats = cache.update(records, root, CFG, workers=1, progress=False)
    assert (stats.new, stats.failed, len(cache)) == (7, 2, 5)
    failed = FaceCache(tmp_path / "cache").failed
    assert set(failed) == {"img/truncated.jpg", "img/text.jpg"}
    assert str(truncated) in failed["img/truncated.jpg"] and str(text) in failed["img/text.jpg"]
    with pytest.raises(KeyError, match="cannot read image"):
        cache.get(["img/text.jpg"])

    again = cache.update(records, root, CFG, workers=1, progress=False)
    assert (again.new, again.changed, again.failed) == (0, 0, 2)
    _write_image(text, 3)  # the file is fixed
    fixed = cache.update(records, root, CFG, workers=1, progress=False)
    assert (fixed.changed, fixed.failed) == (1, 1) and cache.has("img/text.jpg")


def test_interrupted_update_leaves_a_consistent_cache_that_resumes(tmp_path, monkeypatch):
    root = tmp_path / "data"
    records = _dataset(root, 10)
    commit = FaceCache._commit
    calls = []

    def crash_on_second_commit(self, batch, crops):
        calls.append(len(batch))
        if len(calls) == 2:
            raise KeyboardInterrupt
        commit(self, batch, crops)

    monkeypatch.setattr(FaceCache, "_commit", crash_on_second_commit)
    with pytest.raises(KeyboardInterrupt):
        FaceCache(tmp_path / "cache").update(records, root, CFG, workers=1, progress=False)
    monkeypatch.setattr(FaceCache, "_commit", commit)
    (tmp_path / "cache" / "shard-00042.npy").write_bytes(b"left by a kill")
    (tmp_path / "cache" / ".index.json.tmp").write_bytes(b"{")

    cache = FaceCache(tmp_path / "cache")
    assert len(cache) == CFG.chunk
    resumed = cache.update(records, root, CFG, workers=1, progress=False)
    assert (resumed.new, resumed.reused) == (10 - CFG.chunk, CFG.chunk)
    assert not (tmp_path / "cache" / "shard-00042.npy").exists()
    assert not (tmp_path / "cache" / ".index.json.tmp").exists()
    np.testing.assert_array_equal(cache.get(["img/009.jpg"])[0], _expected(records[9].path))


_SLOW_UPDATE = """
import sys, time
from pathlib import Path
import maskclf.faces.detect as faces
from maskclf.faces.cache import FaceCache
from maskclf.config import PrepareCfg
from maskclf.layout import Record
process = faces.process_image
def slow(*args):
    time.sleep(0.05)
    return process(*args)
faces.process_image = slow
root = Path(sys.argv[1])
records = [Record(path=p, key=p.name) for p in sorted((root / "img").glob("*.jpg"))]
FaceCache(Path(sys.argv[2])).update(records, root, PrepareCfg(detector="none", size=32, chunk=4), workers=1, progress=False)
"""


def test_killed_update_resumes_without_redoing_committed_chunks(tmp_path):
    root, cache_dir = tmp_path / "data", tmp_path / "cache"
    records = _dataset(root, 40)
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_UPDATE, str(root), str(cache_dir)])
    deadline = time.time() + 60
    while not (cache_dir / "index.json").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    cache = FaceCache(cache_dir)
    done = len(cache)
    assert CFG.chunk <= done < 40 and done % CFG.chunk == 0
    stats = cache.update(records, root, CFG, workers=1, progress=False)
    assert (stats.new, stats.reused, len(cache)) == (40 - done, done, 40)


def test_worker_processes_give_the_same_crops(tmp_path):
    root = tmp_path / "data"
    records = _dataset(root, 9)
    cache = FaceCache(tmp_path / "cache")
    cache.update(records, root, CFG, workers=2, progress=False)
    for r in records:
        np.testing.assert_array_equal(cache.get([f"img/{r.path.name}"])[0], _expected(r.path))


def test_cache_refuses_other_crop_settings(tmp_path):
    records = _dataset(tmp_path / "data", 2)
    cache = FaceCache(tmp_path / "cache")
    cache.update(records, tmp_path / "data", CFG, workers=1, progress=False)
    with pytest.raises(ValueError, match="holds crops made with"):
        cache.update(records, tmp_path / "data", CFG.model_copy(update={"size": 48}), workers=1, progress=False)


def _filled_cache(tmp_path, n=10):
    root = tmp_path / "data"
    records = _dataset(root, n)
    FaceCache(tmp_path / "cache").update(records, root, CFG, workers=1, progress=False)
    return root, records, tmp_path / "cache"


def test_torn_index_is_reported_by_name_and_repaired_by_the_next_update(tmp_path):
    root, records, cache_dir = _filled_cache(tmp_path)
    index = cache_dir / "index.json"
    index.write_bytes(index.read_bytes()[: index.stat().st_size // 2])
    with pytest.raises(CacheError, match="run `maskclf prepare`") as info:
        FaceCache(cache_dir).get(["img/000.jpg"])
    assert str(index) in str(info.value) and "damaged" in str(info.value)
    cache = FaceCache(cache_dir)
    stats = cache.update(records, root, CFG, workers=1, progress=False)
    assert (stats.new, stats.reused) == (10, 0) and str(index) in stats.repaired[0]
    np.testing.assert_array_equal(FaceCache(cache_dir).get(["img/005.jpg"])[0], _expected(records[5].path))


def test_shortened_shard_is_reported_by_name_and_its_rows_redone(tmp_path):
    root, records, cache_dir = _filled_cache(tmp_path)
    shard = cache_dir / "shard-00001.npy"  # rows of images 4-7
    shard.write_bytes(shard.read_bytes()[:-500])
    with pytest.raises(CacheError, match="run `maskclf prepare`") as info:
        FaceCache(cache_dir).get(["img/005.jpg"])
    assert str(shard) in str(info.value)
    cache = FaceCache(cache_dir)
    stats = cache.update(records, root, CFG, workers=1, progress=False)
    assert (stats.new, stats.reused) == (4, 6) and str(shard) in stats.repaired[0]
    got = FaceCache(cache_dir).get([f"img/{i:03d}.jpg" for i in range(10)])
    for crop, r in zip(got, records):
        np.testing.assert_array_equal(crop, _expected(r.path))


class _CyclingDetector:
    """Finds 2, 0, then 1 face(s), in turn, one answer per image."""

    def __init__(self):
        self.calls = 0

    def detect(self, img_rgb):
        n = [2, 0, 1][self.calls % 3]
        self.calls += 1
        return [Face((2.0 + 8 * i, 2.0, 10.0 + 10 * i, 12.0 + 10 * i), 0.9, None) for i in range(n)]


def test_faces_found_are_recorded_per_image(tmp_path, monkeypatch):
    monkeypatch.setattr(detect, "detector_for", lambda cfg, device="cpu": _CyclingDetector())
    root = tmp_path / "data"
    records = _dataset(root, 6)
    cfg = PrepareCfg(detector="yuface", size=32, chunk=4, pad=0.0)
    cache = FaceCache(tmp_path / "cache")
    stats = cache.update(records, root, cfg, workers=1, progress=False)
    assert stats.fallback == 2
    statuses = [FaceCache(tmp_path / "cache").face_status(f"img/{i:03d}.jpg") for i in range(6)]
    assert statuses == ["multiple:2", "fallback", "found"] * 2
    assert cache.multiple == {"img/000.jpg": 2, "img/003.jpg": 2}
    monkeypatch.undo()
    plain = FaceCache(tmp_path / "plain")
    plain.update(records, root, CFG, workers=1, progress=False)
    assert plain.face_status("img/000.jpg") == "undetected" and plain.multiple == {}


def test_a_second_update_waiting_on_the_lock_says_who_holds_it(tmp_path, capsys):
    import threading

    from maskclf.faces.cache import _locked

    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    waited = threading.Event()
    with _locked(cache_dir):
        def second():
            with _locked(cache_dir):
                waited.set()

        thread = threading.Thread(target=second)
        thread.start()
        thread.join(timeout=1.0)  # it must still be waiting: the lock is held
        assert not waited.is_set()
    thread.join()
    err = capsys.readouterr().err
    assert f"waiting for {cache_dir}: another update holds its lock (pid {os.getpid()}" in err
