"""Experiment-toolkit commands: cv, ensemble, compare, runs, synth-masks."""

from __future__ import annotations

import argparse
from pathlib import Path

from maskclf.cli.common import add_config_args, config_from, subparser


def register(sub) -> None:
    """Add cv, ensemble, compare, runs and synth-masks to `sub`."""
    p = subparser(sub, "cv", "k-fold cross-validation by person: fold models + out-of-fold probabilities and report",
                  "maskclf cv ../shared/data/utkmask -k 5 -c configs/multihead.yaml")
    p.add_argument("data_dir", type=Path)
    p.add_argument("-k", type=int, default=5, help="number of folds (default 5)")
    p.add_argument("--dir", type=Path, help="cv folder to create or resume (default: <run.out_dir>/cv, cv2, ...)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_config_args(p)
    p.set_defaults(func=cmd_cv, announce=lambda a: f"{a.k}-fold cross-validation on {a.data_dir}")

    p = subparser(sub, "ensemble", "combine probability files, checkpoints, runs or cv folders into one submission",
                  "maskclf ensemble runs/cv runs/cv2 --eval ../shared/data/utkmask/eval --search-weights -o ens.csv")
    p.add_argument("members", type=Path, nargs="+", help=".probs.csv files, .pt checkpoints, run or cv folders")
    p.add_argument("--out", "-o", type=Path, default=Path("ensemble.csv"),
                   help="submission path (default ensemble.csv); probabilities go to <stem>.probs.csv")
    p.add_argument("--method", default="soft", choices=["soft", "hard", "attribute"],
                   help="soft: weighted mean of probabilities (default); hard: weighted votes, ties by the soft mean; "
                        "attribute: mask, gender and age each from one member (see --attribute)")
    p.add_argument("--weights", help="comma-separated member weights, e.g. 2,1,1")
    p.add_argument("--attribute", help="for --method attribute: which member gives each, e.g. mask=0,gender=1,age=2")
    p.add_argument("--search-weights", action="store_true", help="pick weights maximising out-of-fold macro F1 (cv members)")
    p.add_argument("--eval", type=Path, help="eval folder to predict on when members are models")
    p.add_argument("--tta", default="none", help="test-time augmentation for model members: none, hflip, crops, "
                                                  "hflip_crops")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_ensemble, announce=lambda a: f"combining {len(a.members)} members into {a.out}")

    p = subparser(sub, "compare", "where two submissions disagree: by attribute and class pair, with an HTML gallery",
                  "maskclf compare a.csv b.csv --images ../shared/data/utkmask/eval/images --gt ../shared/data/utkmask/eval/gt.csv")
    p.add_argument("a", type=Path)
    p.add_argument("b", type=Path)
    p.add_argument("--gt", type=Path, help="ground-truth CSV: also show who was right")
    p.add_argument("--images", type=Path, help="eval images folder: write an HTML gallery of the disagreements")
    p.add_argument("--html", type=Path, help="gallery path (default: <a>_vs_<b>.html beside A)")
    p.add_argument("--top", type=int, default=10, help="class pairs to list")
    p.set_defaults(func=cmd_compare)

    p = subparser(sub, "runs", "table of all runs (or `runs diff A B`: config differences)",
                  "maskclf runs --sort val_f1   |   maskclf runs diff exp exp2")
    p.add_argument("args", nargs="*", help="nothing, or: diff RUN_A RUN_B (run folders, or names under --dir)")
    p.add_argument("--dir", type=Path, default=Path("runs"), help="where runs live (default: runs)")
    p.add_argument("--sort", default="name", help="column to sort by (default: name)")
    p.add_argument("--csv", type=Path, help="also write the table as CSV")
    p.set_defaults(func=cmd_runs)

    p = subparser(sub, "synth-masks", "draw masks on unmasked UTKFace-named faces and write them as extra people",
                  "maskclf synth-masks ../shared/data/external-elderly extra-elderly && "
                  "maskclf train DATA --set 'data.extra=[extra-elderly]'")
    p.add_argument("faces_dir", type=Path)
    p.add_argument("out_dir", type=Path)
    p.add_argument("--limit", type=int, help="only the first N faces")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--detector", default="mtcnn", help="landmark detector (default mtcnn)")
    p.set_defaults(func=cmd_synth_masks, announce=lambda a: f"drawing masks on {a.faces_dir} into {a.out_dir}")


def cmd_cv(args: argparse.Namespace) -> int:
    """`maskclf cv`."""
    from maskclf.toolkit.crossval import cross_validate

    cfg = config_from(args, data_root=args.data_dir)
    r = cross_validate(cfg, args.k, args.dir, progress=not args.quiet)
    attrs = "  ".join(f"{a} F1 {v['f1']:.3f}" for a, v in r.report["attributes"].items())
    print(f"cv {r.cv_dir}: OOF macro F1 {r.oof_f1:.4f} (accuracy {r.report['accuracy']:.4f})  {attrs}")
    print("  fold val F1: " + ", ".join(f"{f:.4f}" for f in r.fold_f1))
    print(f"  out-of-fold probabilities: {r.cv_dir / 'oof.csv'}; fold models: {r.cv_dir}/fold*/best.pt")
    return 0


def _parse_attribute(text: str | None) -> dict[str, int] | None:
    if not text:
        return None
    try:
        return {k.strip(): int(v) for k, v in (part.split("=") for part in text.split(","))}
    except ValueError:
        raise ValueError(f"--attribute must look like mask=0,gender=1,age=0; got '{text}'") from None


def _parse_weights(text: str | None) -> list[float] | None:
    if not text:
        return None
    try:
        return [float(w) for w in text.split(",")]
    except ValueError:
        raise ValueError(f"--weights must be comma-separated numbers, one per member, e.g. 2,1; got '{text}'") from None


def cmd_ensemble(args: argparse.Namespace) -> int:
    """`maskclf ensemble`."""
    from maskclf.inference.ensemble import Combination, ensemble

    how = Combination(args.method, _parse_weights(args.weights), _parse_attribute(args.attribute), args.search_weights)
    info = ensemble(args.members, args.out, how, args.eval, args.tta, progress=not args.quiet)
    if "searched_weights" in info:
        print(f"weights from OOF search: {[round(w, 3) for w in info['searched_weights']]} "
              f"(OOF macro F1 {info['oof_f1']:.4f} vs {info['oof_f1_equal_weights']:.4f} with equal weights)")
    print(f"ensemble of {len(info['members'])} ({info['method']}): {info['submission']} ({info['rows']} rows)")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    """`maskclf compare`."""
    from maskclf.toolkit.compare import compare_submissions, format_comparison

    result = compare_submissions(args.a, args.b, args.gt, args.images, args.html)
    print(format_comparison(result, top=args.top))
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    """`maskclf runs`."""
    from maskclf.toolkit.runs_table import config_diff, format_runs_table, runs_table, write_runs_csv

    if args.args:
        if args.args[0] != "diff" or len(args.args) != 3:
            raise ValueError("usage: maskclf runs [diff RUN_A RUN_B]")
        changes = config_diff(*(_run_path(args.dir, name) for name in args.args[1:]))
        if not changes:
            print("no config differences")
        for key, (a, b) in changes.items():
            print(f"{key}: {a!r} -> {b!r}")
        return 0
    rows, varying = runs_table(args.dir)
    if not rows:
        print(f"no runs under {args.dir}")
        return 0
    print(format_runs_table(rows, varying, args.sort))
    if args.csv:
        write_runs_csv(args.csv, rows, varying)
    return 0


def _run_path(runs_dir: Path, name: str) -> Path:
    """A run given as a path, or by its name under --dir."""
    path = Path(name)
    return path if path.exists() or not (runs_dir / name).exists() else runs_dir / name


def cmd_synth_masks(args: argparse.Namespace) -> int:
    """`maskclf synth-masks`."""
    from maskclf.faces.detect import build_detector
    from maskclf.faces.synthmasks import synth_masks

    stats = synth_masks(args.faces_dir, args.out_dir, build_detector(args.detector), seed=args.seed, limit=args.limit)
    print(f"{stats.written} people written, {stats.existing} already there, {stats.no_landmarks} without landmarks, "
          f"{len(stats.skipped)} skipped, {stats.seconds:.1f} s")
    for name, why in stats.skipped[:20]:
        print(f"  skipped {name}: {why}")
    print(f"add them to training with: --set 'data.extra=[{args.out_dir}]'")
    return 0
