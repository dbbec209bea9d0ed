"""Tracking: metrics.jsonl rows, TensorBoard events, and W&B in offline mode (no network)."""

import json

import pytest

from maskclf.utils.tracking import NullTracker, Tracker, read_metrics


def test_jsonl_and_tensorboard(tmp_path):
    t = Tracker(tmp_path, tensorboard=True)
    t.log({"train/loss": 1.5, "val/f1": 0.25, "note": None}, step=1)
    t.log({"train/loss": 1.0, "val/f1": 0.5}, step=2)
    t.close()
    rows = read_metrics(tmp_path)
    assert rows == [{"step": 1, "train/loss": 1.5, "val/f1": 0.25}, {"step": 2, "train/loss": 1.0, "val/f1": 0.5}]
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))


def test_torn_last_line_is_skipped(tmp_path):
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"step": 1, "a": 1}) + "\n{\"step\": 2, \"a")
    assert read_metrics(tmp_path) == [{"step": 1, "a": 1}]


def test_null_tracker_writes_nothing(tmp_path):
    t = NullTracker()
    t.log({"a": 1.0}, step=1)
    t.close()
    assert not list(tmp_path.iterdir())


def test_wandb_offline_run_is_written_locally(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    t = Tracker(tmp_path, tensorboard=False, wandb=True, config={"train": {"epochs": 2}})
    t.log({"train/loss": 0.5}, step=1)
    t.close()
    offline_runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(offline_runs) == 1
    assert list(offline_runs[0].glob("*.wandb")), "the offline run holds its logged data for a later `wandb sync`"
