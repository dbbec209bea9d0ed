"""train.resize: progressive resizing, its cost model, and the budget plans that use it."""

import numpy as np
import pytest
import torch

from maskclf.config import ConfigError, NamedCfg, load_config
from maskclf.data.transforms import build_augment
from maskclf.training.checks import check_config
from maskclf.training.fit import fit
from maskclf.training.optim import build_scheduler
from maskclf.training.resize import SizeRamp, fit_epochs, mean_cost
from maskclf.utils.tracking import read_metrics


def test_the_ramp_grows_in_multiples_and_reaches_full_size_at_until():
    ramp = SizeRamp(64, 112, until=0.5)
    sizes = [ramp.size(u) for u in np.linspace(0, 1, 101)]
    assert sizes[0] == 64 and ramp.size(0.499) == 104 and ramp.size(0.5) == 112 and sizes[-1] == 112
    assert all(s % 8 == 0 for s in sizes) and sizes == sorted(sizes)
    assert ramp.size(0.25) == 88  # half-way up the ramp: 64 + 48 / 2


def test_cost_is_relative_to_full_size_steps():
    ramp = SizeRamp(16, 32, until=1.0)  # 16 px for u < 0.5, 24 px for 0.5 <= u < 1, 32 px at the end
    assert ramp.cost(0.0, 0.5) == pytest.approx(0.25)
    assert ramp.cost(0.5, 1.0) == pytest.approx(0.5625)
    assert ramp.cost(0.0, 1.0) == pytest.approx((0.25 + 0.5625) / 2, abs=1e-3)
    assert ramp.cost(1.0, 1.0) == 1.0 and mean_cost(None, 0.0, 0.3) == 1.0


@pytest.mark.parametrize("start, until", [(112, 0.5), (8, 0.5), (64, 0.0), (64, 1.5)])
def test_a_ramp_that_cannot_grow_is_refused(start, until):
    with pytest.raises(ValueError, match="progressive resizing"):
        SizeRamp(start, 112, until)


def test_fit_epochs_without_a_ramp_is_the_plain_quotient():
    assert fit_epochs(400.0, 25.0, 8, 1.0, 5, None) == 3.0  # 16 steps of 25 s after the first epoch
    assert fit_epochs(-5.0, 25.0, 8, 1.0, 5, None) == 1.0  # overspent: nothing more
    assert fit_epochs(1e9, 25.0, 8, 1.0, 5, None) == 5.0


def test_fit_epochs_adds_the_per_epoch_cost_whatever_the_size():
    # 8 steps of 20 s plus 40 s of validation: 200 s an epoch, 2 more epochs in 400 s.
    assert fit_epochs(400.0, 20.0, 8, 1.0, 5, None, epoch_s=40.0) == 3.0
    ramp = SizeRamp(16, 32, until=1.0)
    assert fit_epochs(400.0, 100.0, 8, 1.0, 5, ramp, epoch_s=56.25) == pytest.approx(1.75)  # 6 x 56.25 + 0.75 x 56.25


def test_fit_epochs_with_a_ramp_ends_where_the_steps_it_still_has_to_run_fill_the_time():
    ramp = SizeRamp(16, 32, until=1.0)
    # After 1 epoch of 8 steps, 400 s at 100 s per full-size step: ending at 15 steps puts steps 8..14 on
    # progress >= 8/15 > 0.5, i.e. at 24 px (0.5625 of a full step): 7 x 56.25 = 393.75 s; 16 steps would need 450.
    assert fit_epochs(400.0, 100.0, 8, 1.0, 5, ramp) == pytest.approx(15 / 8)
    assert fit_epochs(449.0, 100.0, 8, 1.0, 5, ramp) == pytest.approx(15 / 8)
    assert fit_epochs(450.0, 100.0, 8, 1.0, 5, ramp) == pytest.approx(2.0)
    assert fit_epochs(1e9, 100.0, 8, 1.0, 5, ramp) == 5.0
    assert fit_epochs(10.0, 100.0, 8, 1.0, 5, ramp) == 1.0


def test_augment_follows_the_size_asked_for_each_batch():
    aug = build_augment("custom", 32, (0.5,) * 3, (0.5,) * 3)
    batch = torch.randint(0, 256, (4, 48, 48, 3), dtype=torch.uint8)
    gen = torch.Generator().manual_seed(0)
    assert aug(batch, gen).shape == (4, 3, 32, 32)
    assert aug(batch, gen, out_size=16).shape == (4, 3, 16, 16)


def test_a_start_at_or_above_the_input_size_is_a_config_error():
    with pytest.raises(ConfigError, match="train.resize: progressive resizing starts at 112 px"):
        check_config(load_config([], ["train.resize.start=112"]))
    with pytest.raises(ConfigError, match="until"):
        load_config([], ["train.resize.start=64", "train.resize.until=0"])
    check_config(load_config([], ["train.resize.start=64"]))


def test_schedule_progress_is_the_share_of_the_planned_steps():
    s = build_scheduler(torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=0.1), NamedCfg(name="cosine"), 4, 5)
    for _ in range(5):
        s.step_batch()
    assert s.progress == pytest.approx(0.25)
    s.retarget(2.0)
    assert s.progress == pytest.approx(0.5)


def test_training_batches_grow_with_the_schedule(tiny_cfg, tmp_path):
    cfg = tiny_cfg(tmp_path, "train.epochs=4", "train.resize.start=16", "train.resize.until=0.5")
    result = fit(cfg, progress=False)
    sizes = {r["step"]: r["train/input_size"] for r in read_metrics(result.run_dir) if "train/input_size" in r}
    # The side of each epoch's last batch, 8 steps an epoch over 4 epochs: step 7 is at progress 7/32 (16 + 16 x
    # 0.4375 = 23 -> 16 in multiples of 8), step 15 at 15/32 (31 -> 24), full size from progress 0.5 on.
    assert sizes == {1: 16, 2: 24, 3: 32, 4: 32}
