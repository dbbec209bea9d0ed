import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from maskclf.data.transforms import (PRESETS, TTA_VIEWS, EvalTransform, _affine_grid, build_augment, build_eval_transform,
                                     tta_views)

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
RAW = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))  # mean/std that leave 0-1 pixel values as they are


def _norm(values: torch.Tensor) -> torch.Tensor:
    """Hand normalisation of (..., 3, H, W) float values in 0-255 units."""
    return (values / 255 - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)


def _chw(batch_hwc: torch.Tensor) -> torch.Tensor:
    return batch_hwc.permute(0, 3, 1, 2).float()


def _random_batch(n=8, size=32, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, size, size, 3), generator=g, dtype=torch.uint8)


def _smooth_batch(n=8, size=64) -> torch.Tensor:
    """Low-contrast gradients, different per sample, so CLAHE visibly changes them."""
    y, x = np.mgrid[0:size, 0:size]
    imgs = [np.stack([90 + (x + k * y) % 40, 100 + y % 30, 110 + (x * k) % 20], -1) for k in range(n)]
    return torch.from_numpy(np.stack(imgs).astype(np.uint8))


def _aug(preset="base", out=32, mean_std=RAW, **kw):
    return build_augment(preset, out, *mean_std, **kw)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_base_of_constant_image_is_normalised_constant():
    batch = torch.full((2, 128, 128, 3), 100, dtype=torch.uint8)
    out = build_augment("base", 112, MEAN, STD)(batch)
    expect = _norm(torch.full((3, 112, 112), 100.0)).expand(2, 3, 112, 112)
    torch.testing.assert_close(out, expect, atol=1e-5, rtol=0)


def test_base_of_gradient_is_hand_computed_bilinear_resize():
    cols = torch.arange(128, dtype=torch.float32) * 2  # pixel value 2 * column
    batch = cols.to(torch.uint8).view(1, 1, 128, 1).expand(1, 128, 128, 3).contiguous()
    out = build_augment("base", 112, MEAN, STD)(batch)
    j = torch.arange(112, dtype=torch.float32)
    src = (j + 0.5) * 128 / 112 - 0.5  # half-pixel-centre source column of output column j
    expect = _norm((2 * src).view(1, 1, 112).expand(3, 112, 112))
    torch.testing.assert_close(out[0], expect, atol=1e-4, rtol=0)


def test_base_at_same_size_is_exactly_normalise():
    batch = _random_batch(size=40)
    out = build_augment("base", 40, MEAN, STD)(batch)
    torch.testing.assert_close(out, _norm(_chw(batch)), atol=1e-5, rtol=0)


def test_identity_affine_params_equal_plain_resize():
    batch = _random_batch(size=48)
    plain = _aug(out=40)(batch)
    ident = _aug(out=40, crop_p=1.0, crop_scale=(1, 1), crop_ratio=(1, 1),
                 ssr_p=1.0, ssr_shift=0.0, ssr_scale=0.0, ssr_rotate=0.0)(batch, _gen())
    torch.testing.assert_close(ident, plain, atol=1e-5, rtol=0)
    resized = F.interpolate(_chw(batch) / 255, size=(40, 40), mode="bilinear", align_corners=False)
    torch.testing.assert_close(plain, resized, atol=1e-5, rtol=0)


def test_fast_affine_grid_matches_torch():
    theta = torch.randn(5, 2, 3, generator=_gen())
    torch.testing.assert_close(_affine_grid(theta, 17), F.affine_grid(theta, [5, 3, 17, 17], align_corners=False))


def test_hflip_always_flips_exactly():
    batch = _random_batch(size=48)
    flipped = _aug(out=40, hflip_p=1.0)(batch, _gen())
    torch.testing.assert_close(flipped, _aug(out=40)(batch).flip(-1), atol=1e-5, rtol=0)


def test_shapes_dtype_device_and_channels_last():
    batch = _random_batch(n=5, size=48)
    out = build_augment("custom", 40, MEAN, STD, channels_last=True)(batch, _gen())
    assert out.shape == (5, 3, 40, 40) and out.dtype == torch.float32 and out.device == batch.device
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert build_augment("custom", 40, MEAN, STD)(batch, _gen()).is_contiguous()


def test_seeded_generator_repeats_and_other_seed_differs():
    batch = _random_batch(n=16, size=48)
    aug = build_augment("custom", 40, MEAN, STD)
    a, b, c = aug(batch, _gen(1)), aug(batch, _gen(1)), aug(batch, _gen(2))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_custom_output_stays_in_pixel_range_and_input_untouched():
    batch = _random_batch(n=32, size=48)
    before = batch.clone()
    out = build_augment("custom", 40, *RAW)(batch, _gen(3))
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert torch.equal(batch, before)


def test_grayscale_makes_channels_equal_luma():
    batch = _random_batch(size=32)
    out = _aug(gray_p=1.0)(batch, _gen())
    luma = (_chw(batch) / 255 * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1)
    for ch in range(3):
        torch.testing.assert_close(out[:, ch], luma, atol=1e-5, rtol=0)


def test_third_of_a_turn_of_hue_rotates_channels():
    batch = _random_batch(size=32)
    out = _aug(jitter_p=1.0, brightness=(1, 1), contrast=(1, 1), saturation=(1, 1), hue=(1 / 3, 1 / 3))(batch, _gen())
    x = _chw(batch) / 255
    torch.testing.assert_close(out, x[:, [2, 0, 1]], atol=1e-5, rtol=0)


def test_brightness_and_contrast_known_answers():
    batch = _random_batch(size=32)
    x = _chw(batch) / 255
    same = dict(jitter_p=1.0, saturation=(1, 1), hue=(0, 0))
    half = _aug(brightness=(0.5, 0.5), contrast=(1, 1), **same)(batch, _gen())
    torch.testing.assert_close(half, x * 0.5, atol=1e-5, rtol=0)
    flat = _aug(brightness=(1, 1), contrast=(0, 0), **same)(batch, _gen())
    mean_gray = (x * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1).mean((1, 2))
    torch.testing.assert_close(flat, mean_gray.view(-1, 1, 1, 1).expand_as(x), atol=1e-5, rtol=0)


def test_channel_shuffle_permutes_channels():
    batch = _random_batch(n=16, size=16)
    out = (_aug(out=16, shuffle_p=1.0)(batch, _gen()) * 255).round()
    x = _chw(batch)
    perms = set()
    for i in range(16):
        perm = tuple(next(j for j in range(3) if torch.equal(out[i, c], x[i, j])) for c in range(3))
        assert sorted(perm) == [0, 1, 2]
        perms.add(perm)
    assert len(perms) > 1


def test_clahe_matches_opencv_on_lightness():
    batch = _smooth_batch(n=2)
    out = (_aug(out=64, clahe_p=1.0, clahe_clip=(2, 2), clahe_grid=4)(batch, _gen()) * 255).round()
    for i in range(2):
        lab = cv2.cvtColor(batch[i].numpy(), cv2.COLOR_RGB2LAB)
        lab[..., 0] = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(4, 4)).apply(np.ascontiguousarray(lab[..., 0]))
        ref = torch.from_numpy(cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)).permute(2, 0, 1).float()
        torch.testing.assert_close(out[i], ref)


def test_clahe_changes_only_the_selected_samples():
    batch = _smooth_batch(n=16)
    none, half, full = (_aug(out=64, clahe_p=p)(batch, _gen(5)) for p in (0.0, 0.5, 1.0))
    changed = [not torch.equal(half[i], none[i]) for i in range(16)]
    assert 0 < sum(changed) < 16
    for i in range(16):
        assert torch.equal(half[i], full[i] if changed[i] else none[i])


def test_blur_keeps_constant_and_smooths_noise():
    const = torch.full((3, 32, 32, 3), 77, dtype=torch.uint8)
    torch.testing.assert_close(_aug(blur_p=1.0)(const, _gen()), _aug()(const), atol=1e-5, rtol=0)
    batch = _random_batch(size=32)
    blurred = _aug(blur_p=1.0, blur_sigma=(1.0, 1.0))(batch, _gen())
    assert blurred.std() < 0.5 * _aug()(batch).std()


def test_noise_has_requested_strength():
    batch = torch.full((4, 32, 32, 3), 128, dtype=torch.uint8)
    diff = _aug(noise_p=1.0, noise_std=(0.05, 0.05))(batch, _gen()) - _aug()(batch)
    assert abs(diff.std().item() - 0.05) < 0.005


def test_random_crop_changes_geometry():
    batch = _random_batch(size=32)
    assert not torch.allclose(_aug(crop_p=1.0)(batch, _gen()), _aug()(batch), atol=1e-3)


def test_unknown_preset_and_override_and_bad_values_are_named():
    with pytest.raises(ValueError, match="valid presets.*custom"):
        build_augment("fancy", 32, MEAN, STD)
    with pytest.raises(ValueError, match="hflip_prob.*valid keys.*hflip_p"):
        build_augment("custom", 32, MEAN, STD, hflip_prob=0.5)
    with pytest.raises(ValueError, match="'gray_p' must be a probability"):
        build_augment("custom", 32, MEAN, STD, gray_p=1.5)
    with pytest.raises(ValueError, match="'hue' must be a \\[low, high\\] pair"):
        build_augment("custom", 32, MEAN, STD, hue=[0.5, -0.5])
    with pytest.raises(ValueError, match="uint8 batch shaped"):
        build_augment("base", 32, MEAN, STD)(torch.zeros(2, 3, 32, 32))


def test_override_replaces_one_setting_of_a_preset():
    aug = build_augment("custom", 32, MEAN, STD, hflip_p=0.0, hue=[-0.2, 0.2])
    assert aug.params.hflip_p == 0.0 and aug.params.hue == (-0.2, 0.2)
    assert aug.params.gray_p == PRESETS["custom"]["gray_p"]


def test_eval_transform_equals_base_and_centre_crop_is_exact():
    batch = _random_batch(size=128)
    torch.testing.assert_close(build_eval_transform(112, MEAN, STD)(batch), build_augment("base", 112, MEAN, STD)(batch))
    crop = EvalTransform(64, MEAN, STD, crop=0.5)(batch)
    torch.testing.assert_close(crop, _norm(_chw(batch)[:, :, 32:96, 32:96]), atol=1e-5, rtol=0)


def test_tta_views_identity_flip_and_corner_crops():
    batch = _random_batch(size=100)
    plain = build_eval_transform(90, MEAN, STD)(batch)
    ident, flip = tta_views("hflip", 90, MEAN, STD)
    assert torch.equal(ident(batch), plain)
    torch.testing.assert_close(flip(batch), plain.flip(-1), atol=1e-4, rtol=0)
    crops = tta_views("crops", 90, MEAN, STD)
    assert len(crops) == 5 and torch.equal(crops[0](batch), plain)
    x = _chw(batch)
    corners = [x[:, :, :90, :90], x[:, :, :90, 10:], x[:, :, 10:, :90], x[:, :, 10:, 10:]]
    for view, ref in zip(crops[1:], corners):
        torch.testing.assert_close(view(batch), _norm(ref), atol=1e-4, rtol=0)
    assert len(tta_views("hflip_crops", 90, MEAN, STD)) == 10


def test_unknown_tta_view_lists_names():
    with pytest.raises(ValueError, match="valid names.*hflip"):
        tta_views("five", 32, MEAN, STD)
    assert set(TTA_VIEWS) == {"none", "hflip", "crops", "hflip_crops"}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_runs_on_cuda_with_cpu_generator_and_clahe():
    batch = _random_batch(n=8, size=48).cuda()
    out = build_augment("custom", 40, MEAN, STD, clahe_p=1.0)(batch, _gen())
    assert out.device == batch.device and out.shape == (8, 3, 40, 40)
    cpu = build_augment("custom", 40, MEAN, STD, clahe_p=1.0)(batch.cpu(), _gen())
    torch.testing.assert_close(out.cpu(), cpu, atol=1e-3, rtol=0)


def _unfolded_reference(aug, batch: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """The chain with nothing folded: 0-1 floats, each op in turn, clamps at 0 and 1, normalise at the end."""
    d, p = aug._draw(batch.shape[0], gen, batch.device), aug.params
    if bool(d["clahe"].any()):
        batch = aug._clahe(batch, d)
    x = batch.permute(0, 3, 1, 2).float() / 255
    grid = F.affine_grid(aug._geometry(d), [len(x), 3, aug.out_size, aug.out_size], align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode=p.padding, align_corners=False)
    if bool((d["jitter"] | d["gray"] | d["shuffle"]).any()):
        m, weight = aug._colour_matrix(d)
        grey = x.mean((2, 3)) @ torch.tensor((0.299, 0.587, 0.114))
        x = (torch.bmm(m, x.flatten(2)).view_as(x) + (weight * grey)[:, None, None, None]).clamp(0, 1)
    if bool(d["blur"].any()):
        x = aug._blur(x, d)
    if bool(d["noise"].any()):
        idx = d["noise"].nonzero().squeeze(1)
        std = (p.noise_std[0] + d["noise_std"][idx] * (p.noise_std[1] - p.noise_std[0]))[:, None, None, None]
        x[idx] = (x[idx] + std * torch.randn((len(idx), *x.shape[1:]), generator=gen)).clamp(0, 1)
    return (x - torch.tensor(aug.mean).view(3, 1, 1)) / torch.tensor(aug.std).view(3, 1, 1)


@pytest.mark.parametrize("preset,overrides", [("custom", {}), ("strong", {}), ("custom", {"padding": "zeros"}),
                                              ("light", {"noise_p": 0.5})])
def test_folded_normalisation_equals_the_unfolded_chain(preset, overrides):
    batch = _random_batch(n=32, size=48, seed=4)
    aug = build_augment(preset, 40, MEAN, STD, **overrides)
    for seed in range(3):
        torch.testing.assert_close(aug(batch, _gen(seed)), _unfolded_reference(aug, batch, _gen(seed)),
                                   atol=1e-4, rtol=0)  # 1e-4 here is 0.006 of one 0-255 level
