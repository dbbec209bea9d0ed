"""Data commands: check, prepare, config show, demo."""

from __future__ import annotations

import argparse
from pathlib import Path

from maskclf.cli.common import add_config_args, config_from, subparser


def register(sub) -> None:
    """Add check, prepare, config and demo to `sub`."""
    p = subparser(sub, "check", "validate a competition-layout folder and print a report",
                  "maskclf check ../shared/data/utkmask")
    p.add_argument("data_dir", type=Path)
    p.add_argument("--no-decode", action="store_true", help="skip decoding every image (faster, misses broken files)")
    add_config_args(p)
    p.set_defaults(func=cmd_check)

    p = subparser(sub, "prepare", "detect and crop every face once into the face-crop cache",
                  "maskclf prepare ../shared/data/utkmask --set prepare.size=128")
    p.add_argument("data_dir", type=Path)
    p.add_argument("--no-detect", action="store_true", help="no face detection: plain resized crops")
    p.add_argument("--splits", default="train,eval", help="which parts to prepare (default: train,eval)")
    add_config_args(p)
    p.set_defaults(func=cmd_prepare)

    p = subparser(sub, "config", "show the resolved configuration", "maskclf config show -c configs/multihead.yaml")
    p.add_argument("action", choices=["show"])
    add_config_args(p)
    p.set_defaults(func=cmd_config)

    p = subparser(sub, "demo", "run the whole job end to end on a generated synthetic dataset (or --data DIR)",
                  "maskclf demo --out demo-out")
    p.add_argument("--data", type=Path, help="run on this competition-layout folder instead of synthetic data")
    p.add_argument("--out", type=Path, help="folder for the synthetic data and the run (default: a temp folder)")
    p.add_argument("--seed", type=int, default=0)
    add_config_args(p)
    p.set_defaults(func=cmd_demo, announce=lambda a: f"end-to-end run on {a.data or 'generated synthetic data'}")


def cmd_check(args: argparse.Namespace) -> int:
    """`maskclf check`."""
    from maskclf.data.check import format_check, run_check

    cfg = config_from(args)
    report = run_check(args.data_dir, cfg.data, decode_images=not args.no_decode, max_pixels=cfg.prepare.max_pixels)
    print(format_check(report, cfg.data))
    return 1 if report.fatal else 0


def cmd_prepare(args: argparse.Namespace) -> int:
    """`maskclf prepare`."""
    from maskclf.data.prepare import format_prepare_report, prepare

    cfg = config_from(args)
    if args.no_detect:
        cfg.prepare.detector = "none"
    splits = tuple(s.strip() for s in args.splits.split(",") if s.strip())
    bad = sorted(set(splits) - {"train", "eval"})
    if bad:
        raise ValueError(f"--splits: unknown part(s) {bad}; valid: train, eval")
    result = prepare(args.data_dir, cfg.prepare, cache_root=cfg.data.cache_dir, splits=splits)
    print(format_prepare_report(result))
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    """`maskclf config show`."""
    print(config_from(args).to_yaml(), end="")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """`maskclf demo`."""
    import tempfile

    from maskclf.toolkit.demo import demo_config, run_demo

    out = args.out or Path(tempfile.mkdtemp(prefix="maskclf-demo-"))
    cfg = demo_config(args.config, args.overrides, out)
    return run_demo(cfg, data=args.data, out=out, seed=args.seed)
