"""The technique table: every competition technique against one base recipe, same data, seed and CPU budget.

    .venv/bin/python bench/recipes.py                       # all rows, two at a time on one core each
    .venv/bin/python bench/recipes.py --only focal cutmix   # some rows
    .venv/bin/python bench/recipes.py --render              # rebuild bench/RECIPES.md from the results

Each row is `bench/accuracy.py` with the base overrides plus the row's own; results accumulate in
bench/results/recipes.json (a rerun of a row replaces it) and bench/RECIPES.md is rendered from them.

Every row gets the same training budget. By default two rows run at once with one torch thread each, which
gets ~1.4x more work out of two cores than one row on two threads; every row then sees the same conditions
(one core, a busy neighbour). The base recipe is one epoch (a full table then takes about an hour on 2 cores);
a run is never cut inside an epoch, so rows that cost more per epoch (three separate models, a ResNet18, the
external people) report their own, larger training minutes in the table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "recipes.json"
TABLE = REPO / "bench" / "RECIPES.md"
EXTRA = REPO / "bench" / "_work" / "extra-elderly"
SHARED = REPO.parent / "shared"
MASK_REAL = SHARED / "data" / "mask-real"
# The winners' boundary-age trick: people aged within two years below a bound are left out of training.
BOUNDARY_AGES = "data.drop_ages=[27,28,29,57,58,59]"

# The base every row starts from: a CPU-friendly pretrained start and the competition's favourite augmentation.
BASE = ["model.backbone=mobilenetv2_100", "model.pretrained=wheel", "train.augment.preset=custom",
        "train.input_size=96", "train.epochs=1", "train.scheduler.params.warmup_epochs=0",
        "train.optimizer.params.weight_decay=0.01", "train.calibrate=false"]
ROWS: dict[str, list[str]] = {
    "single": ["model.head=single"],
    "multihead": ["model.head=multihead"],
    "age_bins": ["model.head=multihead", "model.age=bins"],
    "age_regression": ["model.head=multihead", "model.age=regression"],
    "focal": ["model.head=multihead", "train.loss.name=focal"],
    "weighted_sampler": ["model.head=multihead", "train.sampler.name=weighted_class"],
    "class_weighted_ce": ["model.head=multihead", "train.class_weighted=true"],
    "cutmix": ["model.head=multihead", "train.augment.cutmix=0.5", "train.augment.cutmix_mode=vertical"],
    "ema": ["model.head=multihead", "train.ema=0.99"],  # ~150 steps in the budget: a 100-step horizon,
    "separate": ["model.head=separate"],  # the three models share the budget
    "scratch_resnet18": ["model.head=multihead", "model.backbone=resnet18", "model.pretrained="],
    "external_elderly": ["model.head=multihead", f"data.extra=[{EXTRA}]"],
    "drop_boundary_ages": ["model.head=multihead", BOUNDARY_AGES],
    "old_bound_58": ["model.head=multihead", "data.age_bounds=[30,58]"],  # scored against the 30/60 truth
    "old_bound_59": ["model.head=multihead", "data.age_bounds=[30,59]"],
    "mask_real_70": ["model.head=multihead", f"data.mask_extra=[{MASK_REAL}]"],  # scored on the other 30 %
    "paint_masks": ["model.head=multihead", "train.augment.paint_masks=0.5"],
    "refit": ["model.head=multihead", "train.refit=true"],  # a second epoch on train + validation
    # Every lever at once. No moved bound: with 57-59 left out of training, a bound at 58 labels the same people.
    "combined": ["model.head=multihead", BOUNDARY_AGES, f"data.mask_extra=[{MASK_REAL}]",
                 "train.augment.paint_masks=0.5", "train.refit=true"],
}


def prepare_extra() -> None:
    """Masked extra people from external-elderly and their face-crop cache, made once (both resumable)."""
    data = REPO.parent / "shared" / "data" / "external-elderly"
    subprocess.run([sys.executable, "-m", "maskclf", "synth-masks", str(data), str(EXTRA)], check=True)
    subprocess.run([sys.executable, "-m", "maskclf", "prepare", str(EXTRA), "--splits", "train"], check=True)


def label(name: str, seed: int) -> str:
    """A row's name in the results: the row itself for seed 0, `row@seedN` for the others."""
    return name if seed == 0 else f"{name}@seed{seed}"


def run_row(name: str, budget: float, threads: int, seed: int = 0) -> None:
    if name == "external_elderly":
        prepare_extra()  # not part of the training budget; first in the queue, so it overlaps other rows
    cmd = [sys.executable, str(REPO / "bench" / "accuracy.py"), "--budget-min", str(budget),
           "--label", label(name, seed), "--out", str(RESULTS), "--threads", str(threads)]
    for o in BASE + ROWS[name] + [f"train.seed={seed}"]:
        cmd += ["--set", o]
    log = REPO / "bench" / "_work" / f"recipe-{label(name, seed)}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"[recipes] {name}: running (log {log.relative_to(REPO)})", flush=True)
    with log.open("w") as fh:
        done = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT)
    print(f"[recipes] {name}: " + ("done" if done.returncode == 0 else f"FAILED (exit {done.returncode}), see {log}"),
          flush=True)
    render()


def shown(overrides: list[str]) -> str:
    """A row's overrides as a reader should see them: paths relative to the repository."""
    return " ".join(overrides).replace(str(SHARED) + "/", "../shared/").replace(str(REPO) + "/", "")


def render() -> None:
    rows = json.loads(RESULTS.read_text()) if RESULTS.is_file() else []
    latest = {r["what"]: r for r in rows}  # a rerun replaces the earlier row
    lines = ["# Techniques on utkmask: one base recipe, one change per row", "",
             f"Base overrides: `{' '.join(BASE)}`. Trained on utkmask/train (person hold-out), scored on "
             "utkmask/eval and mask-real. Rendered by `bench/recipes.py --render` from bench/results/recipes.json.",
             "", "| row | change | val F1 | eval macro F1 | mask, gender, age acc | mask-real acc | incorrect recall | train min | epochs | date |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name in ROWS:
        runs = [latest[k] for k in sorted(latest) if k == name or k.startswith(f"{name}@seed")]
        if not runs:
            lines.append(f"| {name} | `{shown(ROWS[name])}` | not run yet | | | | | | | |")
            continue
        lines.append(f"| {name} | `{shown(ROWS[name])}` | " + " | ".join(_cells(runs)) + " |")
    lines += ["", "Conditions: one epoch of the base recipe per row (96 px, no warm-up), two rows at a time with one torch "
              "thread each on a 2-core machine that also ran other jobs, so *train min* varies with the load; rows "
              "that cost more per epoch (three separate models, a ResNet18, 2.2x the people with the external "
              "elderly) report their own larger training minutes, because a run is never cut inside an epoch. "
              "Several values in a cell are the runs with train.seed 0, 1, ... (`--seeds 0 1`), same split; "
              "differences of about 0.02 are within run-to-run noise. mask-real acc and incorrect recall (the "
              "share of real incorrectly worn masks called so) are scored on the photos data.mask_extra never trains on (a seeded 30 % of every source x mask status); rows dated before "
              "2026-12-01 were scored on all of mask-real.",
              "", "Reproduce a row: `.venv/bin/python bench/recipes.py --only ROW` (same budget for every row)."]
    TABLE.write_text("\n".join(lines) + "\n")


def _incorrect_recall(r: dict) -> str:
    """Recall of real incorrectly worn masks ('-' for rows from before it was recorded)."""
    recall = r["mask_real"].get("incorrect_recall")
    return "-" if recall is None else f"{recall:.3f}"


def _cells(runs: list[dict]) -> list[str]:
    """A row's result cells, one value per seed run (seed 0 first) joined by ' / '."""
    def each(get) -> str:
        return " / ".join(get(r) for r in runs)

    def attrs(r: dict) -> str:
        a = r["eval_attributes"]
        return f"{a['mask']['accuracy']:.3f}, {a['gender']['accuracy']:.3f}, {a['age']['accuracy']:.3f}"

    return [each(lambda r: f"{r['val_f1']:.3f}"), each(lambda r: f"{r['eval_f1']:.3f}"), each(attrs),
            each(lambda r: f"{r['mask_real']['mask_accuracy']:.3f}"), each(_incorrect_recall),
            each(lambda r: f"{r['train_minutes']:.1f}"),
            each(lambda r: str(r["epochs"])), runs[-1]["date"]]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="+", choices=sorted(ROWS), help="run only these rows")
    ap.add_argument("--budget-min", type=float, default=6.0, help="training minutes per row (default 6)")
    ap.add_argument("--jobs", type=int, default=2, help="rows run at once (default 2)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per row (default 1)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0], help="train.seed of each run of a row (default 0)")
    ap.add_argument("--render", action="store_true", help="only rebuild bench/RECIPES.md")
    args = ap.parse_args(argv)
    if not args.render:
        names = sorted(args.only or ROWS, key=lambda n: n != "external_elderly")
        jobs = [(n, seed) for n in names for seed in args.seeds]
        with ThreadPoolExecutor(args.jobs) as pool:
            list(pool.map(lambda job: run_row(job[0], args.budget_min, args.threads, job[1]), jobs))
    render()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
