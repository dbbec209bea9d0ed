import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from maskclf.utils.checkpoint import load_checkpoint
from maskclf.config import load_config
from maskclf.utils.tracking import read_metrics
from maskclf.training.fit import fit

TINY = ["model.backbone=test_resnet", "model.pretrained=", "prepare.detector=none", "prepare.size=48",
        "train.input_size=32", "train.batch_size=16", "train.device=cpu", "train.scheduler.params.warmup_epochs=0",
        "run.tensorboard=false"]


def tiny_cfg(tiny_data, crops, out, *sets):
    return load_config([], TINY + [f"data.root={tiny_data}", f"data.cache_dir={crops}", f"run.out_dir={out}", *sets])


def losses(run_dir: Path, prefix: str = "") -> dict[int, float]:
    """Per-epoch train loss; a re-run epoch (after a resume) replaces the earlier row."""
    return {r["step"]: r[f"{prefix}train/loss"] for r in read_metrics(run_dir) if f"{prefix}train/loss" in r}


def rows(run_dir: Path, prefix: str = "") -> int:
    return sum(f"{prefix}train/loss" in r for r in read_metrics(run_dir))


# Dropout, EMA and a cosine schedule all carry state (RNG, shadow weights, lr) that a resume has to restore.
STATEFUL = ["train.epochs=4", "model.drop_rate=0.3", "train.ema=0.9", "train.scheduler.name=cosine",
            "train.augment.mixup=0.5"]


def test_resume_after_a_kill_replays_the_same_losses(tiny_data, crops, tmp_path, kill_at):
    cfg = tiny_cfg(tiny_data, crops, tmp_path, *STATEFUL)
    full = fit(cfg, progress=False)
    with pytest.raises(kill_at.Killed):
        fit(cfg, progress=False, on_epoch=kill_at("main", 1))
    run = tmp_path / "exp2"
    assert load_checkpoint(run / "last.pt")["epoch"] == 1 and not (run / "best.pt").exists()
    resumed = fit(None, resume=run, progress=False)
    assert resumed.run_dir == run
    assert losses(run) == losses(full.run_dir)  # bitwise: same thread count, same process
    assert rows(run) == 4  # epochs 1-2 from before the kill, 3-4 after: nothing re-run
    assert (resumed.best_epoch, resumed.best_f1) == (full.best_epoch, full.best_f1)
    best, ref = load_checkpoint(run / "best.pt")["models"]["main"], load_checkpoint(full.checkpoint)["models"]["main"]
    assert all(torch.equal(best[k], ref[k]) for k in ref)


def test_separate_layout_resumes_inside_its_second_model(tiny_data, crops, tmp_path, kill_at):
    cfg = tiny_cfg(tiny_data, crops, tmp_path, "train.epochs=2", "model.head=separate")
    full = fit(cfg, progress=False)
    with pytest.raises(kill_at.Killed):
        fit(cfg, progress=False, on_epoch=kill_at("gender", 0))
    run = tmp_path / "exp2"
    resumed = fit(None, resume=run, progress=False)
    for member in ("mask", "gender", "age"):
        assert losses(run, f"{member}/") == losses(full.run_dir, f"{member}/")
    assert rows(run, "mask/") == 2  # the finished first model is restored, not trained again
    assert rows(run, "gender/") == 2 and rows(run, "age/") == 2
    assert resumed.best_f1 == full.best_f1


def test_resuming_a_finished_run_trains_nothing_more(tiny_data, crops, tmp_path):
    cfg = tiny_cfg(tiny_data, crops, tmp_path, "train.epochs=2")
    first = fit(cfg, progress=False)
    again = fit(None, resume=first.run_dir, progress=False)
    assert rows(first.run_dir) == 2
    assert (again.best_epoch, again.best_f1) == (first.best_epoch, first.best_f1)


def test_resume_needs_a_run_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a maskclf run folder"):
        fit(None, resume=tmp_path, progress=False)


@pytest.mark.slow
def test_sigkilled_cli_run_loses_at_most_one_epoch_and_resumes_exactly(tiny_data, crops, tmp_path):
    sets = [*TINY, f"data.cache_dir={crops}", f"run.out_dir={tmp_path}", "train.epochs=8", "model.drop_rate=0.3"]
    reference = fit(tiny_cfg(tiny_data, crops, tmp_path / "ref", "train.epochs=8", "model.drop_rate=0.3"),
                    progress=False)
    argv = [sys.executable, "-m", "maskclf", "train", str(tiny_data), "--quiet"] + [a for s in sets for a in ("--set", s)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    last = tmp_path / "exp" / "last.pt"
    deadline = time.monotonic() + 120
    while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    run = tmp_path / "exp"
    saved = load_checkpoint(run / "last.pt")["epoch"]  # a whole file, even though the writer was killed
    assert saved < 7
    assert max(losses(run), default=0) <= saved + 2  # at most the epoch after the checkpoint is lost
    fit(None, resume=run, progress=False)
    assert losses(run) == pytest.approx(losses(reference.run_dir), abs=1e-6)
    assert not list(run.glob("*.tmp")) and not list(run.glob(".*.tmp"))
