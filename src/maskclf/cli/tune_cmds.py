"""Search and review commands: tune (Optuna), noise (likely label errors from out-of-fold predictions)."""

from __future__ import annotations

import argparse
from pathlib import Path

from maskclf.cli.common import add_config_args, config_from, subparser


def register(sub) -> None:
    """Add tune and noise to `sub`."""
    p = subparser(sub, "tune", "search hyperparameters with Optuna: one training run per trial, pruning weak trials",
                  "maskclf tune ../shared/data/utkmask --space configs/tune_space.yaml --trials 20 --study lr\n"
                  "  several workers on one study: the same --study, --storage and --max-trials for each, e.g.\n"
                  "  --storage postgresql://user:pw@host/db (machines) or journal:runs/tune.journal (one machine)")
    p.add_argument("data_dir", type=Path)
    p.add_argument("--space", type=Path, required=True, metavar="YAML",
                   help="search space YAML: dotted config keys -> {type: float|int|categorical, low, high, ...}")
    p.add_argument("--trials", type=int, default=20, help="trials to run in this process (default 20)")
    p.add_argument("--max-trials", type=int, metavar="N",
                   help="the study's total across all workers: stop once N trials are done or running; a worker "
                        "then waits for the others and re-runs any trial whose worker died")
    p.add_argument("--study", default="tune", help="study name; trial runs go to <run.out_dir>/<study>/trial<N>")
    p.add_argument("--storage", metavar="URL",
                   help="Optuna storage: an SQLAlchemy URL (default sqlite:///<run.out_dir>/tune.db; "
                        "postgresql://user:pw@host/db) or journal:PATH (a journal file); "
                        "an existing study of that name is continued")
    p.add_argument("--heartbeat", type=int, default=60, metavar="SECONDS",
                   help="trials send a heartbeat this often; one silent for twice as long is failed and re-run "
                        "once (default 60)")
    p.add_argument("--pruner", default="median", choices=["median", "none"],
                   help="median: stop a trial whose val F1 is below the median of earlier trials at that epoch")
    p.add_argument("--quiet", action="store_true", help="no per-epoch progress from the trial runs")
    add_config_args(p)
    p.set_defaults(func=cmd_tune, announce=lambda a: f"tuning study '{a.study}' on {a.data_dir}")

    p = subparser(sub, "noise", "rank likely label errors from a cv run's out-of-fold probabilities",
                  "maskclf noise runs/cv --top 50   # then review runs/cv/noise/review.html and\n"
                  "  maskclf train DATA_DIR --set data.label_fixes=runs/cv/noise/label_fixes_draft.yaml")
    p.add_argument("cv_dir", type=Path, help="a `maskclf cv` folder (holding oof.csv)")
    p.add_argument("--top", type=int, default=50, help="suspects to print, show in the gallery and draft as fixes")
    p.add_argument("--out", type=Path, help="output folder (default: CV_DIR/noise)")
    p.set_defaults(func=cmd_noise)


def cmd_tune(args: argparse.Namespace) -> int:
    """`maskclf tune`."""
    from maskclf.toolkit.tune import format_tune, load_space, tune

    cfg = config_from(args, data_root=args.data_dir)
    result = tune(cfg, load_space(args.space), args.trials, args.study, args.storage, args.pruner,
                  progress=not args.quiet, max_trials=args.max_trials, heartbeat=args.heartbeat)
    print(format_tune(result))
    return 0


def cmd_noise(args: argparse.Namespace) -> int:
    """`maskclf noise`."""
    from maskclf.toolkit.noise import find_label_noise, format_suspects

    result = find_label_noise(args.cv_dir, args.top, args.out)
    print(format_suspects(result, args.top))
    return 0
