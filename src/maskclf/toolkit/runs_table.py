"""Run folders: naming (exp, exp2, ...), resolved config, split, summary, and listing past runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from maskclf.config import diff, validate
from maskclf.utils.rundir import IGNORED_KEYS, find_runs, load_run_config, read_summary


def _any_run_config(run_dir: Path) -> dict:
    """The config of a train run (config.yaml) or of a cv run (cv_config.yaml)."""
    cv = Path(run_dir) / "cv_config.yaml"
    if cv.is_file() and not (Path(run_dir) / "config.yaml").is_file():
        return validate(yaml.safe_load(cv.read_text()), str(cv)).to_dict()
    return load_run_config(run_dir).to_dict()


def config_diff(a: Path, b: Path) -> dict[str, tuple[Any, Any]]:
    """Config keys whose values differ between two runs."""
    return diff(_any_run_config(a), _any_run_config(b))


def _flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in tree.items():
        if isinstance(v, dict) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def runs_table(out_dir: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """One row per run (train, cv fold or cv) and the config keys whose values differ between runs."""
    rows, configs = [], []
    base = Path(out_dir)
    dirs = find_runs(base) + [p.parent for p in base.rglob("cv.json")] if base.is_dir() else []
    for d in sorted(set(dirs), key=lambda p: str(p)):
        s = read_summary(d)
        cfg_path = d / ("config.yaml" if (d / "config.yaml").is_file() else "cv_config.yaml")
        cfg = _flatten(yaml.safe_load(cfg_path.read_text()) or {}) if cfg_path.is_file() else {}
        configs.append(cfg)
        rows.append({
            "name": str(d.relative_to(base)), "date": s.get("finished", ""),
            "backbone": s.get("backbone", cfg.get("model.backbone", "")),
            "val_f1": s.get("val_f1"), "oof_f1": s.get("oof_f1"),
            "wall_min": round(s["wall_seconds"] / 60, 1) if "wall_seconds" in s else None,
            "status": "done" if s else ("interrupted" if (d / "last.pt").is_file() else "started"),
            "_config": cfg,
        })
    keys = sorted({k for c in configs for k in c} - IGNORED_KEYS)
    varying = [k for k in keys if len({json.dumps(c.get(k), sort_keys=True) for c in configs}) > 1]
    for r in rows:
        cfg = r.pop("_config")
        r.update({k: cfg.get(k) for k in varying})
    return rows, varying


def _cell(v: Any, col: str) -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and col.endswith("f1"):
        return f"{v:.4f}"
    return str(v)


def _sort_key(rows: list[dict[str, Any]], col: str):
    """Missing values last; numbers by value (scores best first), anything else as text."""
    values = [r.get(col) for r in rows if r.get(col) is not None]
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    sign = -1 if col.endswith("f1") else 1

    def key(r: dict[str, Any]):
        v = r.get(col)
        return (v is None, sign * v if numeric and v is not None else str(v))

    return key


def _columns(varying: list[str]) -> list[str]:
    # model.backbone already has its own column
    return ["name", "date", "backbone", "val_f1", "oof_f1", "wall_min", "status"] + [
        k for k in varying if k != "model.backbone"]


def format_runs_table(rows: list[dict[str, Any]], varying: list[str], sort: str = "name") -> str:
    """The runs as an aligned text table sorted by one column (scores best first)."""
    cols = _columns(varying)
    if sort not in cols:
        raise ValueError(f"cannot sort by '{sort}'; columns: {', '.join(cols)}")
    rows = sorted(rows, key=_sort_key(rows, sort))
    table = [cols] + [[_cell(r.get(c), c) for c in cols] for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(cols))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in table)


def write_runs_csv(path: Path, rows: list[dict[str, Any]], varying: list[str]) -> None:
    """The runs table as CSV, written atomically."""
    import csv

    cols = _columns(varying)
    with Path(path).open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
