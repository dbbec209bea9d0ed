"""Optimiser param groups and the lr curve of every schedule at known steps."""

import math

import pytest
import torch
from torch import nn

from maskclf.config import NamedCfg
from maskclf.training.optim import build_optimizer, build_scheduler

LR = 0.1


def small_model() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))


def schedule(name, epochs=10, steps=4, **params):
    opt = torch.optim.SGD(nn.Linear(2, 1).parameters(), lr=LR)
    return build_scheduler(opt, NamedCfg(name=name, params=params), epochs, steps)


def run_epochs(sched, steps, metrics=None):
    """lr seen by each optimiser step, epoch by epoch."""
    seen = []
    for epoch_metric in metrics:
        for _ in range(steps):
            seen.append(sched.lr)
            sched.step_batch()
        sched.step_epoch(epoch_metric)
    return seen


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw", "adamp", "madgrad"])
def test_no_weight_decay_on_biases_and_norm_weights(name):
    model = small_model()
    opt = build_optimizer(model, NamedCfg(name=name, params={"lr": 0.01, "weight_decay": 0.05}))
    decay_of = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    for pname, p in model.named_parameters():
        assert decay_of[id(p)] == (0.05 if p.ndim > 1 else 0.0), pname
    assert all(g["lr"] == 0.01 for g in opt.param_groups)
    model(torch.randn(2, 3, 3, 3)).sum().backward()
    opt.step()


def test_sgd_params_reach_torch():
    opt = build_optimizer(small_model(), NamedCfg(name="sgd", params={"lr": 0.1, "momentum": 0.5, "nesterov": False}))
    assert isinstance(opt, torch.optim.SGD)
    assert opt.param_groups[0]["momentum"] == 0.5 and opt.param_groups[0]["nesterov"] is False


def test_adam_betas_from_yaml_list():
    opt = build_optimizer(small_model(), NamedCfg(name="adamw", params={"lr": 1e-3, "betas": [0.8, 0.9]}))
    assert opt.param_groups[0]["betas"] == (0.8, 0.9)


@pytest.mark.parametrize(
    "name, params, message",
    [
        ("rmsprop", {}, "valid names: ['adam', 'adamp', 'adamw', 'madgrad', 'sgd']"),
        ("adamw", {"learning_rate": 1}, "unknown param(s) ['learning_rate']; valid params: ['amsgrad', 'betas'"),
        ("sgd", {"lr": -1.0}, "optimizer 'sgd': invalid params {'lr': -1.0}"),
    ],
)
def test_build_optimizer_errors(name, params, message):
    with pytest.raises(ValueError) as err:
        build_optimizer(small_model(), NamedCfg(name=name, params=params))
    assert message in str(err.value)


def test_linear_warmup_then_cosine():
    # 10 epochs x 4 steps, 2 warm-up epochs from 0.1 * lr; cosine over epochs 2..10, midpoint at epoch 6
    sched = schedule("cosine", warmup_epochs=2, warmup_lr_ratio=0.1, min_lr_ratio=0.0)
    lrs = run_epochs(sched, 4, [None] * 10)
    assert lrs[0] == pytest.approx(0.1 * LR)
    assert lrs[4] == pytest.approx((0.1 + 0.9 * 0.5) * LR)  # half-way through warm-up
    assert lrs[8] == pytest.approx(LR)  # warm-up done
    assert lrs[24] == pytest.approx(0.5 * LR)  # cosine midpoint
    assert lrs[39] == pytest.approx(LR * 0.5 * (1 + math.cos(math.pi * 31 / 32)))
    assert sched.lr == pytest.approx(0.0, abs=1e-12)


def test_fractional_warmup():
    sched = schedule("constant", steps=4, warmup_epochs=0.5, warmup_lr_ratio=0.0)
    assert run_epochs(sched, 4, [None]) == pytest.approx([0.0, 0.5 * LR, LR, LR])


def test_cosine_restarts():
    # 2 steps per epoch; cycles of 2 then 4 epochs: back to the full lr at epochs 2 and 6 (steps 4 and 12)
    sched = schedule("cosine", epochs=8, steps=2, restart_epochs=2, restart_mult=2.0)
    lrs = run_epochs(sched, 2, [None] * 8)
    quarter, three_quarters = (1 + math.cos(math.pi / 4)) / 2, (1 + math.cos(3 * math.pi / 4)) / 2
    last = (1 + math.cos(math.pi * 3.5 / 4)) / 2  # step 11 = epoch 5.5, 3.5 epochs into the 4-epoch cycle
    expected = {0: 1, 1: quarter, 2: 0.5, 3: three_quarters, 4: 1, 6: quarter, 8: 0.5, 11: last, 12: 1}
    assert {i: lrs[i] / LR for i in expected} == pytest.approx(expected)


def test_step_and_multistep_boundaries():
    lrs = run_epochs(schedule("step", epochs=6, steps=3, step_size=2, gamma=0.5), 3, [None] * 6)
    assert lrs[5] == LR and lrs[6] == pytest.approx(0.5 * LR) and lrs[12] == pytest.approx(0.25 * LR)
    lrs = run_epochs(schedule("multistep", epochs=6, steps=3, milestones=[1, 4]), 3, [None] * 6)
    assert lrs[2] == LR and lrs[3] == pytest.approx(0.1 * LR) and lrs[11] == pytest.approx(0.1 * LR)
    assert lrs[12] == pytest.approx(0.01 * LR)


def test_cyclic_triangle():
    lrs = run_epochs(schedule("cyclic", epochs=4, steps=2, cycle_epochs=2, min_lr_ratio=0.2), 2, [None] * 4)
    assert lrs[:5] == pytest.approx([LR, 0.6 * LR, 0.2 * LR, 0.6 * LR, LR])


def test_onecycle_curve():
    # 40 steps, pct_start 0.3: cosine up from lr/25 to lr at step 12, then down to lr/25/1e4 at step 40
    sched = schedule("onecycle", pct_start=0.3, div_factor=25.0, final_div_factor=1e4)
    lrs = run_epochs(sched, 4, [None] * 10)
    assert lrs[0] == pytest.approx(LR / 25)
    assert lrs[6] == pytest.approx(LR / 25 + (LR - LR / 25) / 2)
    assert lrs[12] == pytest.approx(LR)
    assert lrs[26] == pytest.approx(LR / 25e4 + (LR - LR / 25e4) / 2)
    assert sched.lr == pytest.approx(LR / 25e4)


def test_plateau_reduces_after_patience():
    sched = schedule("plateau", epochs=10, steps=1, patience=1, factor=0.5)
    lrs = run_epochs(sched, 1, [0.5, 0.6, 0.6, 0.55, 0.7, 0.7, 0.7, 0.7])
    # bad epochs: 3rd, 4th (2 > patience 1: halve from the 5th), then 6th, 7th (halve again from the 8th)
    assert lrs == pytest.approx([LR, LR, LR, LR, 0.5 * LR, 0.5 * LR, 0.5 * LR, 0.25 * LR])
    assert sched.lr == pytest.approx(0.25 * LR)


def test_plateau_needs_metric():
    with pytest.raises(ValueError, match="needs the validation metric"):
        schedule("plateau").step_epoch(None)


@pytest.mark.parametrize("name, params", [
    ("cosine", {"warmup_epochs": 1.5, "restart_epochs": 3}),
    ("plateau", {"patience": 0, "warmup_epochs": 1}),
    ("step", {"step_size": 3}),
])
def test_state_dict_resumes_identical_curve(name, params):
    metrics = [0.3, 0.2, 0.4, 0.1, 0.1, 0.5, 0.2, 0.2, 0.1, 0.1]
    full = run_epochs(schedule(name, **params), 4, metrics)
    first = schedule(name, **params)
    head = run_epochs(first, 4, metrics[:4])
    state = first.state_dict()
    resumed = schedule(name, **params)  # a fresh optimiser at its configured lr, as after a restart
    resumed.load_state_dict(state)
    assert head + run_epochs(resumed, 4, metrics[4:]) == pytest.approx(full)


@pytest.mark.parametrize(
    "name, params, message",
    [
        ("linear", {}, "valid names: ['constant', 'cosine', 'cyclic', 'multistep', 'onecycle', 'plateau', 'step']"),
        ("cosine", {"eta_min": 0}, "unknown param(s) ['eta_min']; valid params: ['min_lr_ratio', 'restart_epochs'"),
        ("step", {}, "scheduler 'step': invalid params {}"),
        ("step", {"step_size": 0}, "'step_size' must be a number"),
        ("cosine", {"warmup_epochs": 10}, "warm-up (10 epochs) must be shorter than training (10 epochs)"),
    ],
)
def test_build_scheduler_errors(name, params, message):
    with pytest.raises(ValueError) as err:
        schedule(name, **params)
    assert message in str(err.value)
