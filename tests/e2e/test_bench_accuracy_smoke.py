"""The accuracy benchmark's quick mode runs end to end (so the benchmark never rots); no score asserts."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_accuracy_benchmark_quick_mode(tiny_data, tmp_path):
    out = subprocess.run([sys.executable, str(REPO / "bench" / "accuracy.py"), "--quick",
                          "--out", str(tmp_path / "acc.json")], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    row = out.stdout.strip().splitlines()[-1]
    assert row.startswith("| accuracy/default/quick |") and "mask-real acc" in row


@pytest.mark.slow
def test_time_to_accuracy_quick_mode_runs_each_budget_and_writes_its_rows(tiny_data, tmp_path):
    out = subprocess.run([sys.executable, str(REPO / "bench" / "time_to_accuracy.py"), "--quick", "--threads", "1",
                          "--target", "2", "--out", str(tmp_path / "tta.json")],
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads((tmp_path / "tta.json").read_text())
    assert [(r["budget_min"], r["seed"]) for r in result["rows"]] == [(0.02, 0), (0.05, 0)] and result["threads"] == 1
    assert all(0 <= r["eval_f1"] <= 1 and r["cpu_minutes"] == r["train_minutes"] for r in result["rows"])
    assert all(r["budget_used"] > 0 for r in result["rows"])
    assert "| 0.02 | 0 |" in out.stdout and "F1 2 not reached by every seed within 0.05 min" in out.stdout
