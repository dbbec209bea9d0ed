"""Tracking: metrics.jsonl rows, TensorBoard events, and W&B in offline mode (no network)."""

import json

import pytest

from maskclf.utils.tracking import NullTracker, Tracker, metrics_row, read_metrics, repair_log


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


def test_null_tracker_stands_in_for_every_tracker_call_and_draws_no_figures(tmp_path):
    public = {name for name in dir(Tracker) if not name.startswith("_")}
    assert public <= set(dir(NullTracker))
    t = NullTracker()
    t.log({"a": 1.0}, step=1)
    t.close()
    assert t.draws_figures is False
    assert Tracker(tmp_path, tensorboard=False).draws_figures is False  # nothing to show a figure: none drawn
    assert Tracker(tmp_path / "tb-on", tensorboard=True).draws_figures is True


def _log(path, *rows):
    t = Tracker(path, tensorboard=False)
    for r in rows:
        t.log(r, step=r["epoch"])
    t.close()


def test_repair_log_ends_the_file_at_the_checkpointed_row(tmp_path):
    one, two, three = ({"epoch": e, "train/loss": 1.0 / e} for e in (1, 2, 3))
    _log(tmp_path, one, two, three)  # epoch 3 was logged but never checkpointed
    repair_log(tmp_path, metrics_row(two, 2))
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2]


def test_repair_log_appends_a_checkpointed_row_the_log_missed_and_drops_a_torn_line(tmp_path):
    one, two = ({"epoch": e, "val/loss": float("nan")} for e in (1, 2))  # NaN rows still compare equal as text
    _log(tmp_path, one)
    with (tmp_path / "metrics.jsonl").open("a") as fh:
        fh.write('{"step": 2, "val/lo')  # killed mid-write
    repair_log(tmp_path, metrics_row(two, 2))
    repair_log(tmp_path, metrics_row(two, 2))  # a second resume changes nothing
    assert (tmp_path / "metrics.jsonl").read_text().splitlines() == [
        '{"step": 1, "epoch": 1, "val/loss": NaN}', '{"step": 2, "epoch": 2, "val/loss": NaN}']


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
