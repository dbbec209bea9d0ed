"""The one image loader behind prepare, check and detect: bit depth, size rules, reduced decoding, pixel limit."""

import numpy as np
import pytest
from PIL import Image

from maskclf.config import DataCfg, PrepareCfg
from maskclf.data.check import run_check, verify_image
from maskclf.faces.detect import DRAFT_SIDE, ImageRefused, load_rgb, process_image


def test_16_bit_grayscale_png_is_scaled_not_clipped(tmp_path):
    ramp = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode == "I;16"
    img = load_rgb(tmp_path / "deep.png")
    assert img.shape == (64, 64, 3) and img.dtype == np.uint8
    np.testing.assert_array_equal(img[..., 0], np.round(ramp / 257.0).astype(np.uint8))
    assert 120 < img.mean() < 135  # a mid-grey ramp, not a white square


def test_tiny_images_are_skipped_by_check_and_by_prepare_alike(tmp_path):
    for side in (1, 7, 8):
        Image.new("RGB", (side, side), (90, 40, 10)).save(tmp_path / f"{side}.png")
    cfg = PrepareCfg(detector="none")
    for side in (1, 7):
        path = tmp_path / f"{side}.png"
        said = verify_image(path)
        crop = process_image(path, None, cfg)
        assert crop.crop is None and said and f"too small ({side}x{side})" in said and said in crop.error
    assert verify_image(tmp_path / "8.png") is None and process_image(tmp_path / "8.png", None, cfg).error is None


def test_large_jpeg_is_decoded_at_reduced_size(tmp_path):
    rng = np.random.default_rng(0)
    big = np.repeat(np.repeat(rng.integers(0, 256, (375, 500, 3), dtype=np.uint8), 8, 0), 8, 1)  # 4000x3000
    Image.fromarray(big).save(tmp_path / "big.jpg", quality=85)
    img = load_rgb(tmp_path / "big.jpg")
    assert img.shape == (1500, 2000, 3)  # JPEG's 1/2 scale: the smallest that keeps DRAFT_SIDE on the long side
    assert max(img.shape) >= DRAFT_SIDE
    Image.fromarray(big).save(tmp_path / "big.png")
    assert load_rgb(tmp_path / "big.png").shape == (3000, 4000, 3)  # no reduced decoding for PNG


def test_pixel_limit_refuses_by_file_name_in_prepare_and_check(tmp_path):
    Image.new("RGB", (200, 100), (1, 2, 3)).save(tmp_path / "wide.png")
    with pytest.raises(ImageRefused) as info:
        load_rgb(tmp_path / "wide.png", max_pixels=10_000)
    message = str(info.value)
    assert "20000 pixels (200x100)" in message and "prepare.max_pixels=10000" in message
    crop = process_image(tmp_path / "wide.png", None, PrepareCfg(detector="none", max_pixels=10_000))
    assert crop.crop is None and str(tmp_path / "wide.png") in crop.error and message in crop.error
    assert load_rgb(tmp_path / "wide.png", max_pixels=20_000).shape == (100, 200, 3)
    assert message in verify_image(tmp_path / "wide.png", max_pixels=10_000)


def test_check_applies_the_configured_pixel_limit(tiny_data):
    report = run_check(tiny_data, DataCfg(), progress=False, max_pixels=200 * 200 - 1)
    too_large = [p for p in report.problems if "prepare.max_pixels" in p.message]
    assert len(too_large) == 168 + 56 and not report.fatal
