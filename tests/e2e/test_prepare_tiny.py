import shutil

import numpy as np
import pytest

import maskclf.faces.detect as detect
from maskclf.data.scan import scan_eval
from maskclf.faces.cache import FaceCache
from maskclf.faces.detect import Face
from maskclf.config import PrepareCfg
from maskclf.layout import DataError
from maskclf.data.prepare import format_prepare_report, prepare

TINY_IMAGES = 24 * 7 + 56


@pytest.mark.slow
def test_prepare_tiny_with_the_default_detector(tiny_data, tmp_path):
    cfg = PrepareCfg()
    result = prepare(tiny_data, cfg, cache_root=tmp_path, progress=False)
    s = result.stats
    assert result.counts == {"train": 168, "eval": 56}
    assert (s.total, s.new, s.failed) == (TINY_IMAGES, TINY_IMAGES, 0)
    cache = FaceCache(result.cache_dir)
    keys = cache.keys()
    assert len(keys) == TINY_IMAGES and "train/images/000008_male_Black_26/normal.jpg" in keys
    assert cache.get(keys[:5]).shape == (5, cfg.size, cfg.size, 3)
    rate = s.fallback / s.total
    print(f"\n{cfg.detector}: fallback {s.fallback}/{s.total} ({rate:.1%}), {s.images_per_s:.1f} images/s")
    assert rate < 0.2 and len(result.fallback) == s.fallback
    face = cache.face(next(k for k in keys if k not in result.fallback))
    assert face.landmarks.shape == (5, 2)
    report = format_prepare_report(result)
    assert f"{TINY_IMAGES} new" in report and "images/s" in report and str(result.cache_dir) in report

    again = prepare(tiny_data, cfg, cache_root=tmp_path, progress=False)
    assert (again.stats.new, again.stats.changed, again.stats.reused) == (0, 0, TINY_IMAGES)


def test_prepare_tiny_with_yuface(tiny_data, tmp_path):
    cfg = PrepareCfg(detector="yuface", min_confidence=0.5)
    result = prepare(tiny_data, cfg, cache_root=tmp_path, progress=False)
    s = result.stats
    print(f"\nyuface: fallback {s.fallback}/{s.total} ({s.fallback / s.total:.1%}), {s.images_per_s:.1f} images/s")
    assert (s.total, s.new, s.failed) == (TINY_IMAGES, TINY_IMAGES, 0)
    assert len(FaceCache(result.cache_dir)) == TINY_IMAGES and s.fallback / s.total < 0.1


def _copy_tiny(tiny_data, dest):
    shutil.copytree(tiny_data / "train", dest / "train")
    shutil.copytree(tiny_data / "eval", dest / "eval")
    return dest


def test_prepare_without_detector_reports_broken_images(tiny_data, tmp_path):
    root = _copy_tiny(tiny_data, tmp_path / "data")
    broken = sorted((root / "train" / "images").glob("*/mask3.jpg"))[0]
    broken.write_bytes(broken.read_bytes()[:500])
    cfg = PrepareCfg(detector="none", size=64)
    result = prepare(root, cfg, cache_root=tmp_path / "cache", progress=False)
    assert (result.stats.total, result.stats.failed, result.stats.fallback) == (TINY_IMAGES, 1, 0)
    assert [p.path for p in result.problems] == [str(broken)]
    assert "cannot read image" in result.problems[0].message
    report = format_prepare_report(result)
    assert "1 unreadable" in report and str(broken) in report
    crops = FaceCache(result.cache_dir).get(["eval/images/" + p.name for p in sorted((root / "eval" / "images").iterdir())[:3]])
    assert crops.shape == (3, 64, 64, 3) and crops.dtype == np.uint8


def test_prepare_skips_absent_splits_and_rejects_empty_folders(tiny_data, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(tiny_data / "eval", root / "eval")
    result = prepare(root, PrepareCfg(detector="none", size=32), cache_root=tmp_path / "cache", progress=False)
    assert result.counts == {"eval": 56} and result.stats.new == 56
    with pytest.raises(DataError, match="no dataset split found"):
        prepare(tmp_path / "empty", PrepareCfg(detector="none"), cache_root=tmp_path / "cache", progress=False)
    with pytest.raises(ValueError, match="unknown split"):
        prepare(root, PrepareCfg(detector="none"), splits=("test",), progress=False)


def test_prepare_lists_fallback_and_several_face_images_by_name(tiny_data, tmp_path, monkeypatch):
    class TwoThenNone:
        calls = 0

        def detect(self, img_rgb):
            if max(img_rgb.shape[:2]) > PrepareCfg().detect_side:
                return []  # prepare's second look at a photo without a face: still none
            TwoThenNone.calls += 1
            if TwoThenNone.calls <= 2:
                return [Face((10.0, 10.0, 90.0, 90.0), 0.9, None), Face((100.0, 20.0, 150.0, 70.0), 0.9, None)]
            return [] if TwoThenNone.calls <= 5 else [Face((20.0, 20.0, 180.0, 180.0), 0.9, None)]

    monkeypatch.setattr(detect, "detector_for", lambda cfg, device="cpu": TwoThenNone())
    root = tmp_path / "data"
    shutil.copytree(tiny_data / "eval", root / "eval")
    result = prepare(root, PrepareCfg(detector="yuface", size=32), cache_root=tmp_path / "cache", workers=1,
                     progress=False)
    order = [r.key for r in scan_eval(root).records]
    assert result.multiple == {f"eval/images/{k}": 2 for k in order[:2]} and len(result.fallback) == 3
    report = format_prepare_report(result)
    assert "several faces (the largest was used), 2 images:" in report
    assert f"  eval/images/{order[0]} (2 faces)" in report
    assert "no face found (fallback box used), 3 images:" in report and f"  eval/images/{order[3]}" in report
