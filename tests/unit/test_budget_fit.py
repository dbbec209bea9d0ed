"""train.fit_budget: the first epoch's time decides how many epochs fit, and the lr schedule ends there."""

import json
import math

import pytest
import torch
from torch import nn

from maskclf.utils.checkpoint import load_checkpoint
from maskclf.config import NamedCfg
from maskclf.training.optim import build_scheduler
from maskclf.utils.tracking import read_metrics
from maskclf.training.fit import fit

LR = 1e-3
LOW = 0.1  # cosine end value, as a fraction of the lr
BUDGET_BASE = [f"train.optimizer.params.lr={LR}", "train.scheduler.name=cosine", "train.scheduler.params.warmup_epochs=1",
               f"train.scheduler.params.min_lr_ratio={LOW}", "train.patience=10"]



class FakeClock:
    """Seconds that advance by `step` on every reading: every timed epoch takes exactly `step` seconds."""

    def __init__(self, step: float):
        self.step, self.now = step, 0.0

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def curve(run_dir, key="train/loss", prefix=""):
    """Per-epoch value of a metric (the lr a train epoch ended with, its loss, ...)."""
    return {r["step"]: r[prefix + key] for r in read_metrics(run_dir) if prefix + key in r}


def cosine(e: float, start: float, end: float) -> float:
    return LR * (LOW + (1 - LOW) * 0.5 * (1 + math.cos(math.pi * (e - start) / (end - start))))


# 10 minutes at 200 s an epoch: 3 of the 5 epochs fit.
BUDGET = ["train.epochs=5", "train.time_budget_min=10"]


def test_budget_shortens_the_run_and_the_cosine_still_reaches_its_end_value(tiny_cfg, tmp_path, capsys):
    result = fit(tiny_cfg(tmp_path, *BUDGET_BASE, *BUDGET), progress=False, clock=FakeClock(200.0))
    assert ("budget: 10 min, 3.33 min used, fits 3 of 5 epochs (last epoch 200.0 s); schedule ends at epoch 3 "
            "(warm-up 1)") in capsys.readouterr().out
    s = result.summary
    assert s["epochs_run"] == 3 and s["epochs_planned"] == 3 and s["budget_used"] == pytest.approx(1.0)
    assert s["members"]["main"]["epochs_planned"] == 3
    assert s["members"]["main"]["stopped"] == "time budget: fitted 3 of 5 epochs"
    lr = curve(result.run_dir, "train/lr")
    # warm-up unchanged (1 epoch), then the cosine runs over epochs 1..3 instead of 1..5
    assert lr[1] == pytest.approx(LR)
    assert lr[2] == pytest.approx(cosine(2, 1, 3)) and lr[2] != pytest.approx(cosine(2, 1, 5))
    assert lr[3] == pytest.approx(LR * LOW)
    last = load_checkpoint(result.run_dir / "last.pt")
    assert last["schedule"]["epochs"] == 3 and last["done_members"]["main"]["epochs_planned"] == 3
    assert json.loads((result.run_dir / "summary.json").read_text())["epochs_planned"] == 3


def test_resume_after_the_shortening_continues_the_same_schedule(tiny_cfg, tmp_path, kill_at):
    cfg = tiny_cfg(tmp_path, *BUDGET_BASE, *BUDGET, "model.drop_rate=0.3")
    full = fit(cfg, progress=False, clock=FakeClock(200.0))
    with pytest.raises(kill_at.Killed):
        fit(cfg, progress=False, on_epoch=kill_at("main", 1), clock=FakeClock(200.0))
    run = tmp_path / "exp2"
    assert load_checkpoint(run / "last.pt")["running"]["epochs_planned"] == 3
    # The resumed process never times a first epoch: a clock that says "no time at all" must not matter.
    resumed = fit(None, resume=run, progress=False, clock=FakeClock(0.0))
    assert curve(run) == curve(full.run_dir)  # bitwise: same thread count, same process
    assert curve(run, "train/lr") == curve(full.run_dir, "train/lr")
    assert sorted(curve(run)) == [1, 2, 3]
    assert resumed.summary["epochs_planned"] == 3 and resumed.summary["members"]["main"]["stopped"] == \
        "time budget: fitted 3 of 5 epochs"
    best, ref = load_checkpoint(run / "best.pt")["models"]["main"], load_checkpoint(full.checkpoint)["models"]["main"]
    assert all(torch.equal(best[k], ref[k]) for k in ref)


def test_separate_layout_fits_each_model_to_its_share(tiny_cfg, tmp_path):
    # 6 minutes shared by 3 models: 120 s each, so at 50 s an epoch of 8 steps each model plans 1 epoch + the
    # 11 steps that 70 s hold: 2.375 of its 3 epochs, the third one cut after 3 steps.
    cfg = tiny_cfg(tmp_path, *BUDGET_BASE, "train.epochs=3", "train.time_budget_min=6", "model.head=separate")
    result = fit(cfg, progress=False, clock=FakeClock(50.0))
    for name in ("mask", "gender", "age"):
        assert result.summary["members"][name]["epochs_planned"] == 2.375
        assert sorted(curve(result.run_dir, prefix=f"{name}/")) == [1, 2, 3]
        assert curve(result.run_dir, "train/lr", f"{name}/")[3] == pytest.approx(LR * LOW)


def test_fit_budget_false_keeps_the_hard_stop_and_the_full_schedule(tiny_cfg, tmp_path, capsys):
    # A budget every real epoch overshoots: training stops after the first epoch with the 5-epoch schedule.
    cfg = tiny_cfg(tmp_path, *BUDGET_BASE, "train.epochs=5", "train.time_budget_min=0.0001",
                   "train.fit_budget=false", "train.scheduler.params.warmup_epochs=0")
    result = fit(cfg, progress=False, clock=FakeClock(200.0))
    assert "budget:" not in capsys.readouterr().out
    assert result.summary["epochs_run"] == 1 and result.summary["epochs_planned"] == 5
    assert result.summary["members"]["main"]["stopped"] == "time budget reached after epoch 1"
    assert curve(result.run_dir, "train/lr")[1] == pytest.approx(cosine(1, 0, 5))
    assert load_checkpoint(result.run_dir / "last.pt")["schedule"]["epochs"] == 5


def test_a_budget_that_holds_every_epoch_changes_nothing(tiny_cfg, tmp_path, capsys):
    cfg = tiny_cfg(tmp_path, *BUDGET_BASE, "train.epochs=2", "train.time_budget_min=10")
    result = fit(cfg, progress=False, clock=FakeClock(1.0))
    assert "budget: 10 min, 0.02 min used, fits 2 of 2 epochs (last epoch 1.0 s); keeping the schedule" \
        in capsys.readouterr().out
    assert result.summary["epochs_run"] == 2 and result.summary["members"]["main"]["stopped"] == "max epochs"
    assert curve(result.run_dir, "train/lr")[2] == pytest.approx(LR * LOW)


def test_budget_plans_whole_steps_into_a_partial_last_epoch_and_scales_a_running_warm_up(tiny_cfg, tmp_path, capsys):
    # 8 min at 200 s an epoch of 8 steps: 1 epoch + floor(280 s / 25 s) = 11 steps -> 2.375 epochs. The 3-epoch
    # warm-up would outlast that plan: scaled with it (3 x 2.375 / 10 < 1) it ends now, after epoch 1.
    cfg = tiny_cfg(tmp_path, *BUDGET_BASE, "train.epochs=10", "train.time_budget_min=8",
                   "train.scheduler.params.warmup_epochs=3")
    result = fit(cfg, progress=False, clock=FakeClock(200.0))
    assert "fits 2.375 of 10 epochs (last epoch 200.0 s); schedule ends at epoch 2.375 (warm-up 1)" \
        in capsys.readouterr().out
    s = result.summary
    assert s["epochs_planned"] == 2.375 and s["epochs_run"] == 3
    assert s["members"]["main"]["stopped"] == "time budget: fitted 2.375 of 10 epochs"
    lr = curve(result.run_dir, "train/lr")
    assert lr[1] == pytest.approx(LR * (0.01 + 0.99 / 3))  # a third of the configured warm-up, then the plan ends it
    assert lr[2] == pytest.approx(cosine(2, 1, 2.375)) and lr[3] == pytest.approx(LR * LOW)  # annealed at the end
    seen = [r["train/images"] for r in read_metrics(result.run_dir) if "train/images" in r]
    assert seen[2] == 3 * (seen[0] // 8)  # the last epoch ran 3 of its 8 steps (batch 16)
    assert s["budget_used"] == pytest.approx(600 / 480)  # the fake clock bills the cut epoch a whole epoch


def test_budget_is_re_planned_when_the_pace_changes(tiny_cfg, tmp_path, capsys):
    # 20 min at 200 s an epoch fits 6 of 10 epochs; from the second epoch on the machine runs at half speed
    # (400 s an epoch): after it the 600 s left hold 1.5 more epochs, so the plan becomes 3.5 and the schedule
    # ends there.
    clock = FakeClock(200.0)

    def slow_down(name, epoch, score):
        clock.step = 400.0

    cfg = tiny_cfg(tmp_path, *BUDGET_BASE, "train.epochs=10", "train.time_budget_min=20")
    result = fit(cfg, progress=False, clock=clock, on_epoch=slow_down)
    out = capsys.readouterr().out
    assert "budget: 20 min, 3.33 min used, fits 6 of 10 epochs" in out
    assert "budget re-planned (pace moved > 20 %): 20 min, 10.00 min used, fits 3.5 of 10 epochs" in out
    assert result.summary["epochs_run"] == 4 and result.summary["epochs_planned"] == 3.5
    assert curve(result.run_dir, "train/lr")[4] == pytest.approx(LR * LOW)
    assert result.summary["budget_used"] == pytest.approx(1400 / 1200)  # the cut epoch billed whole (fake clock)


def test_a_budget_shorter_than_one_epoch_ends_the_schedule_and_the_epoch_inside_it(tiny_cfg, tmp_path, capsys):
    # The first 2 of the 8 steps take 10 s: 30 s, less the validation's estimate (a few seconds), hold 5 steps.
    cfg = tiny_cfg(tmp_path, *BUDGET_BASE, "train.epochs=3", "train.time_budget_min=0.5")
    result = fit(cfg, progress=False, clock=FakeClock(1.0), step_clock=FakeClock(10.0))
    assert ("budget: 0.5 min holds 0.625 of the first epoch (timed on its first 2 steps, 10.0 s); schedule ends "
            "there (warm-up 0.25)") in capsys.readouterr().out
    s = result.summary
    assert s["epochs_run"] == 1 and s["epochs_planned"] == 0.625
    assert s["members"]["main"]["stopped"] == "time budget: fitted 0.625 of 3 epochs"
    assert [r["train/images"] for r in read_metrics(result.run_dir) if "train/images" in r] == [5 * 16]
    assert curve(result.run_dir, "train/lr")[1] == pytest.approx(LR * LOW)  # annealed where the budget ends
    assert load_checkpoint(result.run_dir / "last.pt")["schedule"]["epochs"] == 0.625


def test_the_first_steps_are_not_timed_without_a_fitted_budget(tiny_cfg, tmp_path):
    cfg = tiny_cfg(tmp_path, *BUDGET_BASE, "train.epochs=1", "train.time_budget_min=0.5", "train.fit_budget=false")
    never = FakeClock(10.0)
    result = fit(cfg, progress=False, clock=FakeClock(1.0), step_clock=never)
    assert never.now == 0.0 and result.summary["epochs_planned"] == 1  # the hard stop alone decides


def test_the_budget_plan_prices_the_steps_it_plans_at_their_size(tiny_cfg, tmp_path, capsys):
    # 10 min at 200 s an epoch; 8 steps of 16 images, 35 validation images (a third of a training image each).
    # Epoch 1 ran at 16 px, a quarter of a full step's pixels: 200 s = pace x (128 x 0.25 + 35 / 3), so a
    # full-size image costs 4.58 s. The plan's later steps run at 24 px (0.5625 of full): an epoch of them costs
    # 4.58 x (128 x 0.5625 + 35 / 3) = 383 s, so the 400 s left hold one more epoch, not the two a flat pace
    # (200 s an epoch) would promise.
    cfg = tiny_cfg(tmp_path, *BUDGET_BASE, "train.epochs=5", "train.time_budget_min=10", "train.resize.start=16",
                   "train.resize.until=1")
    result = fit(cfg, progress=False, clock=FakeClock(200.0))
    assert "fits 2 of 5 epochs (last epoch 200.0 s); schedule ends at epoch 2 (warm-up 1)" in capsys.readouterr().out
    assert result.summary["epochs_planned"] == 2
    assert curve(result.run_dir, "train/input_size") == {1: 16, 2: 24}
    assert curve(result.run_dir, "train/lr")[2] == pytest.approx(LR * LOW)


# ---- Schedule.retarget on its own ------------------------------------------------------------------------------

def sched(name="cosine", epochs=10, steps=4, **params):
    opt = torch.optim.SGD(nn.Linear(2, 1).parameters(), lr=LR)
    return build_scheduler(opt, NamedCfg(name=name, params=params), epochs, steps)


def advance(s, epochs, steps=4, metric=None):
    for _ in range(epochs):
        for _ in range(steps):
            s.step_batch()
        s.step_epoch(metric)


def test_retarget_keeps_the_position_and_ends_the_cosine_at_the_new_last_epoch():
    s = sched(warmup_epochs=1, min_lr_ratio=LOW)
    advance(s, 2)
    s.retarget(4)
    assert (s.iteration, s.epoch, s.epochs) == (8, 2, 4)
    assert s.lr == pytest.approx(cosine(2, 1, 4))
    advance(s, 2)
    assert s.lr == pytest.approx(LR * LOW)


def test_retargeted_state_reloads_into_a_schedule_built_for_the_full_run():
    s = sched(warmup_epochs=1, min_lr_ratio=LOW)
    advance(s, 2)
    s.retarget(4)
    fresh = sched(warmup_epochs=1, min_lr_ratio=LOW)
    fresh.load_state_dict(s.state_dict())
    seen = []
    for a in (s, fresh):
        lrs = []
        for _ in range(8):
            lrs.append(a.lr)
            a.step_batch()
        seen.append(lrs)
    assert seen[0] == seen[1] and fresh.epochs == 4


def test_retarget_keeps_the_plateau_state_and_refuses_to_end_inside_the_warm_up():
    s = sched("plateau", factor=0.5, patience=0)
    advance(s, 1, metric=0.5)
    advance(s, 1, metric=0.4)  # no improvement: lr halves
    s.retarget(5)
    assert s.lr == pytest.approx(LR * 0.5)
    with pytest.raises(ValueError, match="warm-up lasts 2"):
        sched(warmup_epochs=2).retarget(2)
