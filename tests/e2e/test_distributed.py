"""Distributed data parallel on CPU (Gloo): torchrun processes, on one node or on two, train one run on tiny data."""

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from maskclf.inference.predict import load_model

TORCHRUN = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
# A model without BatchNorm and augmentation without random ops: two ranks of 8 images then take the same
# steps as one process with batches of 16, so the metrics agree up to the order of floating-point sums.
# SGD keeps those rounding differences as small as they are (Adam divides near-zero gradients by their size).
SAME_STEPS = ["--set", "model.backbone=test_convnext", "--set", "model.pretrained=", "--set", "train.input_size=32",
              "--set", "prepare.size=48", "--set", "prepare.detector=none", "--set", "train.augment.preset=base",
              "--set", "train.optimizer.name=sgd", "--set", "train.optimizer.params={lr: 0.01, momentum: 0.9}",
              "--set", "train.scheduler.params.warmup_epochs=0", "--set", "run.tensorboard=false"]
TOLERANCE = {"val/loss": 1e-4, "val/f1": 0.02}  # absolute, per epoch


def train_args(tiny_data: Path, tmp_path: Path, out: str, *extra: str) -> list[str]:
    return ["-m", "maskclf", "train", str(tiny_data), "--quiet", "--set", f"run.out_dir={tmp_path / out}",
            "--set", f"data.cache_dir={tmp_path / 'cache'}", *extra]


@pytest.mark.slow
def test_torchrun_two_processes_train_one_run(tiny_data, tmp_path):
    cmd = [TORCHRUN, "--standalone", "--nproc_per_node=2",
           *train_args(tiny_data, tmp_path, "runs", "--set", "model.backbone=test_resnet", "--set", "model.pretrained=",
                       "--set", "train.input_size=32", "--set", "prepare.size=48", "--set", "prepare.detector=none",
                       "--set", "train.epochs=2", "--set", "train.batch_size=16",
                       "--set", "train.scheduler.params.warmup_epochs=0")]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=ENV)
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def two_nodes(args: list[str], run_id: str) -> list[subprocess.Popen]:
    """The same torchrun line started twice, as two one-process nodes meeting at a c10d rendezvous on loopback."""
    line = [TORCHRUN, "--nnodes=2", "--nproc-per-node=1", "--rdzv-backend=c10d", f"--rdzv-id={run_id}",
            f"--rdzv-endpoint=127.0.0.1:{free_port()}", "--local-addr=127.0.0.1", "--max-restarts=0", *args]
    return [subprocess.Popen(line, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV,
                             start_new_session=True) for _ in range(2)]


def finish(nodes: list[subprocess.Popen]) -> None:
    for node in nodes:
        out, _ = node.communicate(timeout=600)
        assert node.returncode == 0, out[-3000:]


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (Linux /proc), children before grandchildren."""
    found, todo = [], [pid]
    while todo:
        for children in Path(f"/proc/{todo.pop()}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                kids = [int(c) for c in children.read_text().split()]
                found += kids
                todo += kids
    return found


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_two_nodes_match_one_process_and_resume_after_the_whole_job_is_killed(tiny_data, tmp_path):
    epochs = ["--set", "train.epochs=3"]
    single = subprocess.run([sys.executable, *train_args(tiny_data, tmp_path, "single", *SAME_STEPS, *epochs,
                                                         "--set", "train.batch_size=16")],
                            capture_output=True, text=True, timeout=600, env=ENV)
    assert single.returncode == 0, single.stderr[-3000:]

    nodes = two_nodes(train_args(tiny_data, tmp_path, "nodes", *SAME_STEPS, *epochs, "--set", "train.batch_size=8"),
                      "first")
    run_dir = tmp_path / "nodes" / "exp"
    deadline = time.monotonic() + 600
    while not (run_dir / "last.pt").is_file():  # epoch 1 is logged and checkpointed: kill the whole job
        assert time.monotonic() < deadline and all(n.poll() is None for n in nodes), [n.poll() for n in nodes]
        time.sleep(0.05)
    # torchrun starts its workers in sessions of their own, so the whole job is every process below both agents:
    # listed first, then killed together, so that no rank runs on while another is being killed.
    job = [pid for node in nodes for pid in [node.pid, *descendants(node.pid)]]
    for pid in job:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for node in nodes:
        node.communicate()
    killed_at = len(metrics(run_dir))
    assert killed_at < 3, "the job was killed before it finished"

    finish(two_nodes(["-m", "maskclf", "train", "--quiet", "--resume", str(run_dir)], "again"))
    assert [p.name for p in (tmp_path / "nodes").iterdir()] == ["exp"], "two nodes write one run folder"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["epochs_run"] == 3
    one, two = metrics(tmp_path / "single" / "exp"), metrics(run_dir)
    assert [r["epoch"] for r in two] == [1, 2, 3]
    report = [(r1["epoch"], {k: (r1[k], r2[k]) for k in TOLERANCE}) for r1, r2 in zip(one, two)]
    print(f"\nkilled after {killed_at} epoch(s); one process vs two nodes: {report}")
    for r1, r2 in zip(one, two):
        for key, tol in TOLERANCE.items():
            assert abs(r1[key] - r2[key]) <= tol, report
