"""Time to accuracy: the default recipe under several training budgets, and the first budget that reaches a score.

Each budget is one `bench/accuracy.py` run (trained on utkmask/train within `--budget-min`, with the schedule
fitted to the budget, scored on utkmask/eval) in its own process; the rows land in one JSON file. The table
gives eval macro F1 per budget, wall and CPU minutes (wall x torch threads), the load average after each run,
and the smallest budget whose F1 reaches `--target` (the competition baseline recipe's 0.46 after 25 minutes
on 2 cores). Budgets are wall-clock: run it on a quiet machine, or read the load column.

    .venv/bin/python bench/time_to_accuracy.py                       # budgets 5, 10, 30 min, 2 threads
    .venv/bin/python bench/time_to_accuracy.py --budgets 5 10 --threads 1
    .venv/bin/python bench/time_to_accuracy.py --budgets 5 10 --threads 1 --jobs 2 --seeds 0 1   # both seeds, side by side
    .venv/bin/python bench/time_to_accuracy.py --quick               # tiny data, tiny model: a smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

BENCH = Path(__file__).resolve().parent
TARGET = 0.46
QUICK_BUDGETS = (0.02, 0.05)


def run_budget(minutes: float, seed: int, threads: int, quick: bool, work: Path, overrides: list[str]) -> dict:
    """One accuracy.py run within `minutes` with train.seed `seed`; its result row plus the load average after it."""
    out = work / f"rows-{minutes:g}-{seed}.json"
    cmd = [sys.executable, str(BENCH / "accuracy.py"), "--budget-min", f"{minutes:g}", "--threads", str(threads),
           "--label", f"time-to-accuracy/{minutes:g}min/seed{seed}", "--out", str(out), "--set", f"train.seed={seed}"]
    for o in overrides:
        cmd += ["--set", o]
    subprocess.run(cmd + (["--quick"] if quick else []), check=True, stdout=subprocess.DEVNULL)
    row = json.loads(out.read_text())[-1]
    return {"budget_min": minutes, "seed": seed, "eval_f1": row["eval_f1"], "val_f1": row["val_f1"],
            "epochs": row["epochs"], "epochs_planned": row.get("epochs_planned"), "budget_used": row.get("budget_used"),
            "train_minutes": row["train_minutes"], "wall_minutes": row["wall_minutes"],
            "cpu_minutes": row["train_minutes"] * threads, "load_after": [round(x, 2) for x in os.getloadavg()]}


def first_reaching(rows: list[dict], target: float) -> dict | None:
    """The row with the smallest budget at which every seed's eval F1 reaches `target` (its worst seed), or None."""
    worst = {}
    for r in rows:
        if r["budget_min"] not in worst or r["eval_f1"] < worst[r["budget_min"]]["eval_f1"]:
            worst[r["budget_min"]] = r
    hits = [r for r in worst.values() if r["eval_f1"] >= target]
    return min(hits, key=lambda r: r["budget_min"]) if hits else None


def render(rows: list[dict], target: float, threads: int) -> str:
    lines = [f"| budget (min) | seed | eval macro F1 | val F1 | epochs | budget used | train min | "
             f"CPU min ({threads} threads) | load after |", "|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in sorted(rows, key=lambda r: (r["budget_min"], r["seed"])):
        used = f"{r['budget_used']:.0%}" if r.get("budget_used") is not None else "-"
        lines.append(f"| {r['budget_min']:g} | {r['seed']} | {r['eval_f1']:.3f} | {r['val_f1']:.3f} | "
                     f"{r['epochs_planned'] or r['epochs']:g} | {used} | {r['train_minutes']:.1f} | "
                     f"{r['cpu_minutes']:.1f} | {', '.join(f'{x:.2f}' for x in r['load_after'])} |")
    hit = first_reaching(rows, target)
    lines.append("")
    lines.append(f"F1 {target:g} first reached by every seed with a {hit['budget_min']:g}-minute budget "
                 f"({hit['cpu_minutes']:.1f} CPU minutes)" if hit
                 else f"F1 {target:g} not reached by every seed within {max(r['budget_min'] for r in rows):g} min")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budgets", type=float, nargs="+", help="training budgets in minutes (default 5 10 30)")
    ap.add_argument("--target", type=float, default=TARGET, help=f"eval macro F1 to reach (default {TARGET})")
    ap.add_argument("--threads", type=int, default=2, help="torch threads of every run")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0], help="train.seed of each run of a budget (default 0)")
    ap.add_argument("--jobs", type=int, default=1, help="runs at once (default 1; 2 with --threads 1 on 2 cores)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="config overrides of every run")
    ap.add_argument("--quick", action="store_true", help=f"tiny data, tiny model, budgets {QUICK_BUDGETS}")
    ap.add_argument("--out", type=Path, help="write the rows as JSON here (default: bench/results/"
                    "time_to_accuracy.json; with --quick nothing)")
    args = ap.parse_args(argv)
    budgets = sorted(args.budgets or (QUICK_BUDGETS if args.quick else (5.0, 10.0, 30.0)))
    jobs = [(b, seed) for b in budgets for seed in args.seeds]
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(lambda job: run_budget(*job, args.threads, args.quick, Path(tmp), args.overrides), jobs))
    out = args.out or (None if args.quick else BENCH / "results" / "time_to_accuracy.json")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"target": args.target, "threads": args.threads, "jobs": args.jobs,
                                   "overrides": args.overrides, "quick": args.quick, "rows": rows}, indent=1) + "\n")
    print(render(rows, args.target, args.threads))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
