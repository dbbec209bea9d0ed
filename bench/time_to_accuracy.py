"""Time to accuracy: the default recipe under several training budgets, and the first budget that reaches a score.

Each budget is one `bench/accuracy.py` run (trained on utkmask/train within `--budget-min`, with the schedule
fitted to the budget, scored on utkmask/eval) in its own process; the rows land in one JSON file. The table
gives eval macro F1 per budget, wall and CPU minutes (wall x torch threads), the load average after each run,
and the smallest budget whose F1 reaches `--target` (the competition baseline recipe's 0.46 after 25 minutes
on 2 cores). Budgets are wall-clock: run it on a quiet machine, or read the load column.

    .venv/bin/python bench/time_to_accuracy.py                       # budgets 5, 10, 30 min, 2 threads
    .venv/bin/python bench/time_to_accuracy.py --budgets 5 10 --threads 1
    .venv/bin/python bench/time_to_accuracy.py --quick               # tiny data, tiny model: a smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent
TARGET = 0.46
QUICK_BUDGETS = (0.02, 0.05)


def run_budget(minutes: float, threads: int, quick: bool, out: Path) -> dict:
    """One accuracy.py run within `minutes`; its result row plus the load average after it."""
    cmd = [sys.executable, str(BENCH / "accuracy.py"), "--budget-min", f"{minutes:g}", "--threads", str(threads),
           "--label", f"time-to-accuracy/{minutes:g}min", "--out", str(out)] + (["--quick"] if quick else [])
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    row = json.loads(out.read_text())[-1]
    return {"budget_min": minutes, "eval_f1": row["eval_f1"], "val_f1": row["val_f1"], "epochs": row["epochs"],
            "train_minutes": row["train_minutes"], "wall_minutes": row["wall_minutes"],
            "cpu_minutes": row["train_minutes"] * threads, "load_after": [round(x, 2) for x in os.getloadavg()]}


def first_reaching(rows: list[dict], target: float) -> dict | None:
    """The row with the smallest budget whose eval F1 reaches `target`, or None."""
    hits = [r for r in rows if r["eval_f1"] >= target]
    return min(hits, key=lambda r: r["budget_min"]) if hits else None


def render(rows: list[dict], target: float, threads: int) -> str:
    lines = [f"| budget (min) | eval macro F1 | val F1 | epochs | train min | CPU min ({threads} threads) | load after |",
             "|---:|---:|---:|---:|---:|---:|---|"]
    lines += [f"| {r['budget_min']:g} | {r['eval_f1']:.3f} | {r['val_f1']:.3f} | {r['epochs']:g} | "
              f"{r['train_minutes']:.1f} | {r['cpu_minutes']:.1f} | {', '.join(f'{x:.2f}' for x in r['load_after'])} |"
              for r in rows]
    hit = first_reaching(rows, target)
    lines.append("")
    lines.append(f"F1 {target:g} first reached with a {hit['budget_min']:g}-minute budget ({hit['cpu_minutes']:.1f} "
                 "CPU minutes)" if hit else f"F1 {target:g} not reached within {max(r['budget_min'] for r in rows):g} min")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budgets", type=float, nargs="+", help="training budgets in minutes (default 5 10 30)")
    ap.add_argument("--target", type=float, default=TARGET, help=f"eval macro F1 to reach (default {TARGET})")
    ap.add_argument("--threads", type=int, default=2, help="torch threads of every run")
    ap.add_argument("--quick", action="store_true", help=f"tiny data, tiny model, budgets {QUICK_BUDGETS}")
    ap.add_argument("--out", type=Path, help="write the rows as JSON here (default: bench/results/"
                    "time_to_accuracy.json; with --quick nothing)")
    args = ap.parse_args(argv)
    budgets = sorted(args.budgets or (QUICK_BUDGETS if args.quick else (5.0, 10.0, 30.0)))
    with tempfile.TemporaryDirectory() as tmp:
        rows = [run_budget(b, args.threads, args.quick, Path(tmp) / "rows.json") for b in budgets]
    out = args.out or (None if args.quick else BENCH / "results" / "time_to_accuracy.json")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"target": args.target, "threads": args.threads, "quick": args.quick,
                                   "rows": rows}, indent=1) + "\n")
    print(render(rows, args.target, args.threads))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
