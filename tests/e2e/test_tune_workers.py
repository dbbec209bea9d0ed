"""Three `maskclf tune` workers share one study; one is SIGKILLed mid-trial, the others re-run its trial.

Runs on each storage a user may pick: PostgreSQL (a throwaway cluster started here), SQLite and a journal file.
"""

import csv
import glob
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import yaml

CAP, WORKERS, PASSWORD = 3, 3, "s3cret-pw"


def _as_postgres_user() -> list[str]:
    """PostgreSQL refuses to run as root: run its tools as `nobody` then."""
    return ["runuser", "-u", "nobody", "--"] if os.geteuid() == 0 else []


@pytest.fixture
def postgres_url():
    """A throwaway PostgreSQL cluster listening only on a Unix socket in a temp folder; its URL (with a password)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        pytest.skip("PostgreSQL server not installed (apt-get install postgresql; .ci/run does)")
    bin_dir = Path(found[-1]).parent
    home = Path(tempfile.mkdtemp(prefix="pg-"))
    try:
        if os.geteuid() == 0:
            shutil.chown(home, "nobody")
        run = _as_postgres_user()
        subprocess.run(run + [str(bin_dir / "initdb"), "-D", str(home / "data"), "-U", "tuner", "--auth=trust"],
                       check=True, capture_output=True, timeout=120)
        options = f"-k {home} -c listen_addresses='' -c max_connections=50"
        subprocess.run(run + [str(bin_dir / "pg_ctl"), "-D", str(home / "data"), "-l", str(home / "log"),
                              "-o", options, "-w", "start"], check=True, capture_output=True, timeout=120)
        yield f"postgresql+psycopg2://tuner:{PASSWORD}@/postgres?host={home}"
        subprocess.run(run + [str(bin_dir / "pg_ctl"), "-D", str(home / "data"), "-m", "immediate", "stop"],
                       capture_output=True, timeout=120)
    finally:
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(params=["postgresql", "sqlite", "journal"])
def storage(request, tmp_path):
    if request.param == "postgresql":
        return request.getfixturevalue("postgres_url")
    return f"sqlite:///{tmp_path / 'study.db'}" if request.param == "sqlite" else f"journal:{tmp_path / 'study.log'}"


class Worker:
    """One `maskclf tune` process with its output collected line by line."""

    def __init__(self, cmd: list[str], env: dict):
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=lambda: self.lines.extend(self.proc.stdout), daemon=True)
        self.reader.start()

    def output(self) -> str:
        self.reader.join(timeout=30)
        return "".join(self.lines)


def _first_started_trial(runs: Path, workers: list[Worker], deadline: float) -> tuple[Worker, int]:
    """The worker and number of the first trial seen training (its run folder holds a config)."""
    while time.monotonic() < deadline:
        for w in workers:
            for line in list(w.lines):
                if line.startswith("trial ") and "=" in line:  # "trial N: key=value, ..." opens a trial
                    number = int(line.split()[1].rstrip(":"))
                    if (runs / "w" / f"trial{number}" / "config.yaml").is_file():
                        return w, number
        time.sleep(0.2)
    raise AssertionError("no trial started in time:\n" + "\n".join(w.output() for w in workers))


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_three_workers_share_a_study_and_rerun_the_killed_workers_trial(storage, tiny_args, tiny_data, tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text("train.optimizer.params.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}\n")
    runs = tmp_path / "runs"
    cmd = [sys.executable, "-m", "maskclf", "tune", str(tiny_data), "--space", str(space), "--study", "w",
           "--storage", storage, "--trials", "10", "--max-trials", str(CAP), "--heartbeat", "1",
           "--pruner", "none", "--quiet",
           *tiny_args(runs, "train.epochs=1", f"data.cache_dir={tmp_path / 'cache'}")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    workers = [Worker(cmd, env) for _ in range(WORKERS)]
    victim, killed = _first_started_trial(runs, workers, time.monotonic() + 240)
    victim.proc.send_signal(signal.SIGKILL)
    survivors = [w for w in workers if w is not victim]
    for w in survivors:
        assert w.proc.wait(timeout=300) == 0, w.output()[-3000:]
    victim.proc.wait(timeout=30)
    outputs = [w.output() for w in survivors]

    with (runs / "w" / "trials.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    table = "\n".join(f"{r['number']:>3} {r['state']:<9} worker={r['worker'] or '-':<22} "
                      f"retry_of={r['retry_of'] or '-'}" for r in rows)
    print(f"\n{storage.split(':')[0]} trials:\n{table}")
    states = [r["state"] for r in rows]
    assert states.count("COMPLETE") == CAP and len(rows) == CAP + 1, table  # capped across the workers
    assert rows[killed]["state"] == "FAIL", table  # failed by heartbeat: its worker died mid-trial
    retries = [r for r in rows if r["retry_of"] == str(killed)]
    assert len(retries) == 1 and retries[0]["state"] == "COMPLETE", table  # re-run once, by a live worker
    assert retries[0]["worker"] != rows[killed]["worker"] and retries[0]["worker"] in {
        r["worker"] for r in rows if r["number"] != str(killed)}
    assert retries[0]["train.optimizer.params.lr"] == rows[killed]["train.optimizer.params.lr"]

    writers = [o for o in outputs if f"best config: {runs / 'w' / 'best.yaml'}\n" in o]
    assert len(writers) == 1, outputs  # best.yaml is written once, by the worker that ended the study
    best = max((r for r in rows if r["state"] == "COMPLETE"), key=lambda r: float(r["value"]))
    text = (runs / "w" / "best.yaml").read_text()
    assert text.startswith(f"# best trial {best['number']} of study 'w'")
    assert yaml.safe_load(text)["train"]["optimizer"]["params"]["lr"] == pytest.approx(
        float(best["train.optimizer.params.lr"]))
    shown = storage.replace(f":{PASSWORD}@", ":***@").split("?")[0]
    assert all(PASSWORD not in o and f"study 'w' ({shown}" in o for o in outputs)  # passwords are masked
