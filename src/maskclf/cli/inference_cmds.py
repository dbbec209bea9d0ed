"""Using a trained model on any photo: detect, export, serve."""

from __future__ import annotations

import argparse
from pathlib import Path

from maskclf.cli.common import subparser


def register(sub) -> None:
    """Add detect, export and serve to `sub`."""
    p = subparser(sub, "detect", "find every face in photos, classify each, write JSON lines + CSV (+ drawn copies)",
                  "maskclf detect runs/exp/best.pt group.jpg photos/ -o faces.jsonl --draw")
    p.add_argument("model", type=Path, help="a best.pt/last.pt file, a run folder or an exported .onnx model")
    p.add_argument("paths", type=Path, nargs="+", help="image files and folders (searched recursively)")
    p.add_argument("--out", "-o", type=Path, default=Path("detections.jsonl"),
                   help="JSON lines output (default detections.jsonl); the CSV goes beside it as <stem>.csv")
    p.add_argument("--draw", action="store_true", help="also write annotated copies into <stem>_drawn/")
    p.add_argument("--min-face", type=float, default=0.0, metavar="PX", help="ignore faces smaller than PX pixels")
    p.add_argument("--max-faces", type=int, metavar="N", help="keep the N largest faces of each photo")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=1, help="torch / ONNX Runtime threads (default 1)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_detect, announce=lambda a: f"finding and classifying faces with {a.model}")

    p = subparser(sub, "export", "export a checkpoint to ONNX and check it against torch on real face crops",
                  "maskclf export runs/exp/best.pt -o model.onnx --check ../shared/data/mask-real")
    p.add_argument("checkpoint", type=Path, help="a best.pt/last.pt file or a run folder")
    p.add_argument("--out", "-o", type=Path, required=True, help="the .onnx file to write")
    p.add_argument("--check", type=Path, nargs="+", metavar="PATH",
                   help="images or folders for the parity check (default: the checkpoint's training data)")
    p.set_defaults(func=cmd_export, announce=lambda a: f"exporting {a.checkpoint} to {a.out}")

    p = subparser(sub, "serve", "web page and JSON API: upload a photo, see its faces boxed and labelled",
                  "maskclf serve runs/exp/best.pt --port 8000")
    p.add_argument("model", type=Path, help="a best.pt/last.pt file, a run folder or an exported .onnx model")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-upload-mb", type=float, default=10.0, help="largest accepted upload (default 10 MB)")
    p.add_argument("--max-pixels", type=int, default=40_000_000, help="largest accepted image area (default 40 MP)")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=1,
                   help="torch / ONNX Runtime threads per request (default 1; requests run in parallel)")
    p.set_defaults(func=cmd_serve, announce=lambda a: f"serving {a.model} on http://{a.host}:{a.port}")


def cmd_detect(args: argparse.Namespace) -> int:
    """`maskclf detect`."""
    from maskclf.inference.detect import detect, load_pipeline

    if args.out.suffix == ".csv":
        raise ValueError(f"--out {args.out}: give the JSON lines path (.jsonl); the CSV is written beside it")
    r = detect(load_pipeline(args.model, args.device, threads=args.threads), args.paths, args.out, args.draw, args.min_face,
               args.max_faces, progress=not args.quiet)
    faces = sum(len(i["faces"]) for i in r.images)
    print(f"{len(r.images)} images, {faces} faces" + (f", {len(r.skipped)} skipped" if r.skipped else "")
          + f"\njson lines: {r.jsonl}\ncsv: {r.csv}" + (f"\ndrawn: {r.drawn}" if r.drawn else ""))
    return 0 if r.images or not r.skipped else 2


def cmd_export(args: argparse.Namespace) -> int:
    """`maskclf export`."""
    from maskclf.inference.onnx_export import export_onnx

    r = export_onnx(args.checkpoint, args.out, args.check)
    p = r.parity
    print(f"exported {r.path}\nparity on {p['images']} face crops: max |p_onnx - p_torch| = {p['max_abs_diff']:.2e} "
          f"(tolerance {p['tolerance']:g}), same argmax: {p['argmax_agree']}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """`maskclf serve`."""
    from maskclf.toolkit.serve import Limits, serve

    serve(args.model, args.host, args.port, Limits(int(args.max_upload_mb * 1024 * 1024), args.max_pixels),
          args.device, args.threads)
    return 0
