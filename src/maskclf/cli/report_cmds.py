"""Looking commands: eda (data report), report (run report), explain (Grad-CAM overlays)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from maskclf.cli.common import add_config_args, subparser


def register(sub) -> None:
    """Add eda, report and explain to `sub`."""
    p = subparser(sub, "eda", "data report (HTML): counts, ages, face-cache fallbacks, samples, label fixes, problems",
                  "maskclf eda ../shared/data/utkmask -o utkmask-eda.html")
    p.add_argument("data_dir", type=Path)
    p.add_argument("--out", "-o", type=Path, help="HTML path (default DATA_DIR/eda.html); figure PNGs: <stem>_figures/")
    add_config_args(p)
    p.set_defaults(func=cmd_eda)

    p = subparser(sub, "report", "run report (HTML): curves, confusion, class scores, calibration, errors, Grad-CAM",
                  "maskclf report runs/exp --compare runs/exp2 -o exp-vs-exp2.html")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--out", "-o", type=Path, help="HTML path (default RUN_DIR/report.html)")
    p.add_argument("--compare", type=Path, metavar="OTHER_RUN", help="a second run folder shown side by side")
    p.add_argument("--device", default="cpu", help="device for the Grad-CAM pass (default cpu)")
    p.set_defaults(func=cmd_report, announce=lambda a: f"building the run report for {a.run_dir}")

    p = subparser(sub, "explain", "Grad-CAM per head (mask, gender, age): where the model looks, one PNG per photo",
                  "maskclf explain runs/exp/best.pt photo1.jpg photo2.jpg -o explained/")
    p.add_argument("checkpoint", type=Path, help="a best.pt/last.pt file or a run folder")
    p.add_argument("images", type=Path, nargs="+", help="photos; the face is cropped as at training")
    p.add_argument("--out", "-o", type=Path, default=Path("explained"), help="output folder (default explained/)")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=cmd_explain, announce=lambda a: f"Grad-CAM of {len(a.images)} photo(s) with {a.checkpoint}")


def cmd_eda(args: argparse.Namespace) -> int:
    """`maskclf eda`."""
    from maskclf.config import load_config
    from maskclf.toolkit.eda import build_eda

    # Only the data and prepare sections matter here; config_from would also check (and import) the training stack.
    cfg = load_config(args.config, args.overrides)
    r = build_eda(args.data_dir, cfg.data, cfg.prepare, args.out, cfg.data.cache_dir)
    print(f"data report: {r.html} ({len(r.figures)} figures in {r.html.parent / (r.html.stem + '_figures')}, "
          f"{r.seconds:.1f} s)")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """`maskclf report`."""
    from maskclf.toolkit.run_report import build_run_report

    r = build_run_report(args.run_dir, args.out, args.compare, args.device)
    print(f"run report: {r.html} ({len(r.figures)} figures in {r.html.parent / (r.html.stem + '_figures')})")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    """`maskclf explain`."""
    from maskclf.inference.saliency import explain_images
    from maskclf.utils.runtime import resolve_device

    written, failed = explain_images(args.checkpoint, args.images, args.out, resolve_device(args.device))
    for path in written:
        print(path)
    for path, reason in failed.items():
        print(f"warning: skipped {path}: {reason}", file=sys.stderr)
    return 0 if written else 1
