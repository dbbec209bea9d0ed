import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from maskclf.utils.checkpoint import load_checkpoint
from maskclf.utils.tracking import read_metrics
from maskclf.training.fit import fit




def losses(run_dir: Path, prefix: str = "") -> dict[int, float]:
    """Per-epoch train loss; a re-run epoch (after a resume) replaces the earlier row."""
    return {r["step"]: r[f"{prefix}train/loss"] for r in read_metrics(run_dir) if f"{prefix}train/loss" in r}


def rows(run_dir: Path, prefix: str = "") -> int:
    return sum(f"{prefix}train/loss" in r for r in read_metrics(run_dir))


# Dropout, EMA and a cosine schedule all carry state (RNG, shadow weights, lr) that a resume has to restore.
STATEFUL = ["train.epochs=4", "model.drop_rate=0.3", "train.ema=0.9", "train.scheduler.name=cosine",
            "train.augment.mixup=0.5"]


def test_resume_after_a_kill_replays_the_same_losses(tiny_cfg, tmp_path, kill_at):
    cfg = tiny_cfg(tmp_path, *STATEFUL)
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


def test_separate_layout_resumes_inside_its_second_model(tiny_cfg, tmp_path, kill_at):
    cfg = tiny_cfg(tmp_path, "train.epochs=2", "model.head=separate")
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


def test_resuming_a_finished_run_trains_nothing_more(tiny_cfg, tmp_path):
    cfg = tiny_cfg(tmp_path, "train.epochs=2")
    first = fit(cfg, progress=False)
    again = fit(None, resume=first.run_dir, progress=False)
    assert rows(first.run_dir) == 2
    assert (again.best_epoch, again.best_f1) == (first.best_epoch, first.best_f1)


def test_resume_needs_a_run_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a maskclf run folder"):
        fit(None, resume=tmp_path, progress=False)


@pytest.mark.slow
def test_sigkilled_cli_run_loses_at_most_one_epoch_and_resumes_exactly(tiny_cfg, tiny_args, tiny_data, tmp_path):
    reference = fit(tiny_cfg(tmp_path / "ref", "train.epochs=8", "model.drop_rate=0.3"),
                    progress=False)
    argv = [sys.executable, "-m", "maskclf", "train", str(tiny_data), "--quiet",
            *tiny_args(tmp_path, "train.epochs=8", "model.drop_rate=0.3")]
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


def steps(run_dir: Path, prefix: str = "") -> list[int]:
    return [r["step"] for r in read_metrics(run_dir) if f"{prefix}train/loss" in r]


@pytest.mark.parametrize("where", ["saving last.pt", "logging the epoch"])
def test_a_kill_around_the_checkpoint_never_logs_an_epoch_twice(tiny_cfg, tmp_path, kill_at, monkeypatch,
                                                              where):
    cfg = tiny_cfg(tmp_path, "train.epochs=3")
    full = fit(cfg, progress=False)
    import maskclf.training.state as state_module
    from maskclf.utils.tracking import Tracker

    real_save, real_log = state_module.save_checkpoint, Tracker.log

    def save(path, payload):  # the second epoch's last.pt never lands
        if payload["epoch"] == 1:
            raise kill_at.Killed
        real_save(path, payload)

    def log(self, metrics, step):  # the second epoch's row never lands
        if step == 2:
            raise kill_at.Killed
        real_log(self, metrics, step)

    if where == "saving last.pt":
        monkeypatch.setattr(state_module, "save_checkpoint", save)
    else:
        monkeypatch.setattr(Tracker, "log", log)
    with pytest.raises(kill_at.Killed):
        fit(cfg, progress=False)
    monkeypatch.undo()
    run = tmp_path / "exp2"
    fit(None, resume=run, progress=False)
    assert steps(run) == [1, 2, 3]  # metrics.jsonl and last.pt agreed on where the run stood
    assert losses(run) == losses(full.run_dir)


def test_train_epochs_1_works_with_the_default_warmup_and_shows_data_warnings(tiny_cfg, tiny_data, tmp_path, capsys):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    (data / "train" / "images" / "stray").mkdir()
    cfg = tiny_cfg(tmp_path, f"data.root={data}", "train.epochs=1", "train.scheduler.params.warmup_epochs=1")
    result = fit(cfg, progress=False)
    out, err = capsys.readouterr()
    assert "warm-up of 1 epochs does not fit a 1-epoch run: using 0.5" in out
    assert result.summary["epochs_run"] == 1 and steps(result.run_dir) == [1]
    assert "1 data warning(s):" in err and "stray: folder is not listed in train.csv; ignored" in err
    assert "label fixes (competition): none applied; " in err and "not applied" in err


def test_a_train_that_cannot_start_leaves_no_run_folder(tiny_cfg, tmp_path):
    from maskclf.layout import DataError
    from maskclf.toolkit.runs_table import runs_table

    cfg = tiny_cfg(tmp_path / "runs", f"data.root={tmp_path / 'missing'}")
    with pytest.raises(DataError, match="data folder not found"):
        fit(cfg, progress=False)
    assert not (tmp_path / "runs" / "exp").exists()
    assert runs_table(tmp_path / "runs")[0] == []


def test_resume_works_from_another_directory_and_after_the_data_moved(tiny_cfg, tiny_data, tmp_path, kill_at,
                                                                      monkeypatch, capsys):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    (tmp_path / "start").mkdir()
    monkeypatch.chdir(tmp_path / "start")
    cfg = tiny_cfg("runs", "data.root=../data", "train.epochs=3")  # relative paths, as typed on a command line
    with pytest.raises(kill_at.Killed):
        fit(cfg, progress=False, on_epoch=kill_at("main", 0))
    run = tmp_path / "start" / "runs" / "exp"
    saved_wall = load_checkpoint(run / "last.pt")["wall_seconds"]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    shutil.move(data, tmp_path / "moved")
    from maskclf.cli import main

    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--quiet"]) == 2
    assert re.search(r"not found; if the data moved, give its new place: maskclf train --resume .* NEW_DATA_DIR",
                     capsys.readouterr().err)
    assert main(["train", "--resume", str(run), str(tmp_path / "moved"), "--quiet"]) == 0
    assert f"resuming {run} from epoch 2" in capsys.readouterr().out
    resumed = json.loads((run / "summary.json").read_text())
    assert steps(run) == [1, 2, 3]
    assert saved_wall > 0 and resumed["wall_seconds"] > saved_wall  # both sessions counted
