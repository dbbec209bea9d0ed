"""The accuracy benchmark's quick mode runs end to end (so the benchmark never rots); no score asserts."""

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
