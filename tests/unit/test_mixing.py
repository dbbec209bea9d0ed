import pytest
import torch
import torch.nn.functional as F

from maskclf.data.mixing import mix_batch


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _batch(n=4, h=16, w=20):
    """Sample i is the constant image i + 1, so every pixel tells which sample it came from."""
    return (torch.arange(n, dtype=torch.float32) + 1).view(n, 1, 1, 1).expand(n, 3, h, w).contiguous()


def _targets(n=4):
    return {
        "mask": F.one_hot(torch.arange(n) % 3, 3).float(),
        "gender": F.one_hot(torch.arange(n) % 2, 2).float(),
        "age": torch.linspace(20.0, 70.0, n),
    }


def test_mixup_mixes_images_and_one_hot_rows_with_one_lambda():
    x, t = _batch(), _targets()
    mx, mt, info = mix_batch(x, t, mixup_p=1.0, cutmix_p=0.0, alpha=0.4, generator=_gen())
    lam = info.lam
    assert info.kind == "mixup" and 0.0 <= lam <= 1.0
    torch.testing.assert_close(mx, lam * x + (1 - lam) * x.flip(0))
    for key in ("mask", "gender"):
        torch.testing.assert_close(mt[key].sum(1), torch.ones(4))
        torch.testing.assert_close(mt[key], lam * t[key] + (1 - lam) * t[key].flip(0))
    torch.testing.assert_close(mt["age"], lam * t["age"] + (1 - lam) * t["age"].flip(0))


def test_regression_target_mixed_linearly_known_answer():
    t = {"age": torch.tensor([20.0, 80.0])}
    _, mt, info = mix_batch(_batch(n=2), t, 1.0, 0.0, generator=_gen(3))
    lam = info.lam
    torch.testing.assert_close(mt["age"], torch.tensor([20 * lam + 80 * (1 - lam), 80 * lam + 20 * (1 - lam)]))


@pytest.mark.parametrize("seed", range(8))
def test_cutmix_lambda_is_the_true_unpasted_fraction(seed):
    x, t = _batch(), _targets()
    mx, mt, info = mix_batch(x, t, 0.0, 1.0, alpha=1.0, mode="box", generator=_gen(seed))
    assert info.kind == "cutmix"
    own = (mx == x).float().mean((1, 2, 3))  # fraction of pixels still from the sample itself
    torch.testing.assert_close(own, torch.full((4,), info.lam))
    y0, y1, x0, x1 = info.box
    assert torch.equal(mx[:, :, y0:y1, x0:x1], x.flip(0)[:, :, y0:y1, x0:x1])
    torch.testing.assert_close(mt["mask"].sum(1), torch.ones(4))
    torch.testing.assert_close(mt["age"], info.lam * t["age"] + (1 - info.lam) * t["age"].flip(0))


@pytest.mark.parametrize("seed", range(6))
def test_vertical_cutmix_pastes_a_full_height_edge_strip(seed):
    x = _batch(h=16, w=20)
    mx, _, info = mix_batch(x, {}, 0.0, 1.0, mode="vertical", generator=_gen(seed))
    y0, y1, x0, x1 = info.box
    assert (y0, y1) == (0, 16) and (x0 == 0 or x1 == 20)
    pasted = (mx != x).any(1).any(1)  # (B, W): columns that came from the partner
    assert torch.equal(pasted[0], (torch.arange(20) >= x0) & (torch.arange(20) < x1))
    torch.testing.assert_close((mx == x).float().mean((1, 2, 3)), torch.full((4,), info.lam))


def test_no_mixing_returns_inputs_unchanged():
    x, t = _batch(), _targets()
    mx, mt, info = mix_batch(x, t, 0.0, 0.0, generator=_gen())
    assert info.kind == "none" and info.lam == 1.0 and mx is x and mt is t


def test_at_most_one_kind_and_both_happen_over_batches():
    kinds = {mix_batch(_batch(), _targets(), 0.5, 0.5, generator=_gen(s))[2].kind for s in range(30)}
    assert kinds == {"mixup", "cutmix"}


def test_seeded_generator_repeats():
    a = mix_batch(_batch(), _targets(), 0.5, 0.5, generator=_gen(7))
    b = mix_batch(_batch(), _targets(), 0.5, 0.5, generator=_gen(7))
    assert a[2] == b[2] and torch.equal(a[0], b[0])


def test_input_batch_is_not_modified():
    x = _batch()
    before = x.clone()
    mix_batch(x, {}, 0.0, 1.0, generator=_gen())
    assert torch.equal(x, before)


def test_bad_arguments_are_named():
    x = _batch()
    with pytest.raises(ValueError, match="valid modes"):
        mix_batch(x, {}, 0.0, 1.0, mode="diagonal")
    with pytest.raises(ValueError, match="sum <= 1"):
        mix_batch(x, {}, 0.7, 0.7)
    with pytest.raises(ValueError, match="target 'mask'.*one-hot"):
        mix_batch(x, {"mask": torch.tensor([0, 1, 2, 0])}, 1.0, 0.0)
    with pytest.raises(ValueError, match="alpha"):
        mix_batch(x, {}, 1.0, 0.0, alpha=0.0)
