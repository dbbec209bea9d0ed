"""Run folders: naming (exp, exp2, ...), resolved config, summary, and finding past runs."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

from maskclf.config import Config, validate
from maskclf.utils.atomic import write_atomic

def new_run_dir(out_dir: Path, name: str) -> Path:
    """`out_dir/name`, or `name2`, `name3`, ... if taken (created atomically, so parallel runs never collide)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    i = 1
    while True:
        path = out_dir / (name if i == 1 else f"{name}{i}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            i += 1


def save_config(run_dir: Path, cfg: Config) -> None:
    """config.yaml: the run's resolved config (every key, so the run can be repeated or resumed)."""
    text = cfg.to_yaml().encode()
    write_atomic(Path(run_dir) / "config.yaml", lambda fh: fh.write(text))


def load_run_config(run_dir: Path) -> Config:
    """The validated config.yaml of a run folder."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a maskclf run folder (no config.yaml)")
    return validate(yaml.safe_load(path.read_text()), str(path))


def git_commit() -> str | None:
    """The current git commit of the code, if it runs from a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).parent, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def write_summary(run_dir: Path, summary: dict[str, Any]) -> None:
    """summary.json, written atomically."""
    text = json.dumps(summary, indent=1).encode()
    write_atomic(Path(run_dir) / "summary.json", lambda fh: fh.write(text))


def read_summary(run_dir: Path) -> dict[str, Any]:
    """A run's summary.json, or {} when it has none (unfinished)."""
    path = Path(run_dir) / "summary.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def find_runs(out_dir: Path) -> list[Path]:
    """Run folders under `out_dir` (any depth: cv folds live inside their cv run), natural-sorted."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return []
    runs = [p.parent for p in out_dir.rglob("config.yaml")]

    def natural(p: Path):
        return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(p))]

    return sorted(runs, key=natural)


IGNORED_KEYS = {"run.name", "run.out_dir", "data.cache_dir"}
