"""Distributed data parallel on CPU (Gloo): two torchrun processes train one run on tiny data."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from maskclf.inference.predict import load_model


@pytest.mark.slow
def test_torchrun_two_processes_train_one_run(tiny_data, tmp_path):
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    cmd = [torchrun, "--standalone", "--nproc_per_node=2", "-m", "maskclf", "train", str(tiny_data), "--quiet",
           "--set", f"run.out_dir={tmp_path / 'runs'}", "--set", "model.backbone=test_resnet",
           "--set", "model.pretrained=", "--set", "train.input_size=32", "--set", "prepare.size=48",
           "--set", "prepare.detector=none", "--set", "train.epochs=2", "--set", "train.batch_size=16",
           "--set", "train.scheduler.params.warmup_epochs=0", "--set", f"data.cache_dir={tmp_path / 'cache'}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    runs = sorted((tmp_path / "runs").iterdir())
    assert [r.name for r in runs] == ["exp"], "both ranks must share one run folder"
    summary = json.loads((runs[0] / "summary.json").read_text())
    assert summary["world_size"] == 2
    assert out.stdout.count("run exp:") == 1, "only rank 0 prints the summary"
    rows = [json.loads(line) for line in (runs[0] / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2], "only rank 0 logs, once per epoch"
    assert summary["train_images"] == 133
    loaded = load_model(runs[0] / "best.pt", torch.device("cpu"))
    assert set(loaded.members) == {"main"}
