"""Model commands: train, predict, evaluate."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

from maskclf.cli.common import add_config_args, config_from, subparser
from maskclf.utils.rundir import load_run_config


def register(sub) -> None:
    """Add train, predict and evaluate to `sub`."""
    p = subparser(sub, "train", "train a model from the face-crop cache into runs/<name>",
                  "maskclf train ../shared/data/utkmask -c configs/multihead.yaml --set train.epochs=5")
    p.add_argument("data_dir", type=Path, nargs="?",
                   help="competition-layout folder (with --resume: only when the data moved since the run started)")
    p.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue an interrupted run from its last.pt")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_config_args(p)
    p.set_defaults(func=cmd_train, announce=lambda a: f"resuming {a.resume}" if a.resume
                   else f"training on {a.data_dir}")

    p = subparser(sub, "predict", "write a submission CSV (+ probabilities) for an eval folder",
                  "maskclf predict runs/exp/best.pt ../shared/data/utkmask/eval --tta hflip")
    p.add_argument("checkpoint", type=Path, help="a best.pt/last.pt file, a run folder or an exported .onnx model")
    p.add_argument("eval_dir", type=Path, help="DATA_DIR/eval (with info.csv and images/) or DATA_DIR")
    p.add_argument("--out", "-o", type=Path, help="submission path (default: submission.csv beside the checkpoint)")
    p.add_argument("--tta", default="none", help="test-time augmentation views: none, hflip, crops, hflip_crops")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--group-persons", action="store_true",
                   help="group each person's eval photos by upper-face similarity and let each group agree on "
                        "gender and age")
    p.add_argument("--group-similarity", type=float, metavar="T",
                   help="with --group-persons: the similarity that joins two photos (default 0.9)")
    p.add_argument("--group-weighting", default="equal", metavar="{equal,face}",
                   help="how photos count in a person group: 'equal' (default) all alike, 'face' by the face "
                        "they show (predicted mask status) times confidence")
    p.add_argument("--no-calibration", action="store_true",
                   help="ignore the class-prior offsets tuned on validation at train time (train.calibrate)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_predict, announce=lambda a: f"predicting {a.eval_dir} with {a.checkpoint}")

    p = subparser(sub, "evaluate", "score a submission against ground truth: F1, accuracy, per attribute, per class",
                  "maskclf evaluate runs/exp/submission.csv ../shared/data/utkmask/eval/gt.csv")
    p.add_argument("submission", type=Path)
    p.add_argument("gt", type=Path)
    p.add_argument("--out", type=Path, help="folder for report.json and confusion.png")
    p.add_argument("--age-bounds", default="30,60", help="young,old age-group bounds (default 30,60)")
    p.set_defaults(func=cmd_evaluate)


def cmd_train(args: argparse.Namespace) -> int:
    """`maskclf train`."""
    from maskclf.training.fit import fit

    if args.resume is None and args.data_dir is None:
        raise ValueError("give DATA_DIR, or --resume RUN_DIR")
    if args.resume is not None and (args.config or args.overrides):
        raise ValueError("--resume continues a run with its saved config; --config/--set cannot change it")
    if args.resume is not None:
        result = fit(None, resume=args.resume, progress=not args.quiet, data_root=args.data_dir)
    else:
        result = fit(config_from(args, data_root=args.data_dir), progress=not args.quiet)
    if int(os.environ.get("RANK", 0)) == 0:  # under torchrun, one summary from rank 0
        print(format_summary(result.summary))
        if load_run_config(result.run_dir).run.report:
            print(_build_report(result.run_dir))
    return 0


def _build_report(run_dir: Path) -> str:
    """Write the run's report.html; a failure is a warning, since the trained model is already saved."""
    from maskclf.toolkit.run_report import build_run_report

    try:
        return f"  report {build_run_report(run_dir).html}"
    except (ValueError, OSError, KeyError) as exc:
        return f"  warning: report not written ({type(exc).__name__}: {exc}); try `maskclf report {run_dir}`"


def format_summary(s: dict) -> str:
    """The lines `train` prints about a finished run."""
    attrs = "  ".join(f"{k} acc {v['accuracy']:.3f} F1 {v['f1']:.3f}" for k, v in s["val_attributes"].items())
    stops = "; ".join(m["stopped"] if n == "main" else f"{n}: {m['stopped']}" for n, m in s["members"].items())
    return "\n".join([
        f"run {s['name']}: {s['backbone']} ({s['head']} heads, age {s['age']}) on {s['device']}",
        f"  best epoch {s['best_epoch'] + 1} of {s['epochs_run']}  val macro F1 {s['val_f1']:.4f}  "
        f"accuracy {s['val_accuracy']:.4f}",
        f"  stopped: {stops}",
        f"  {attrs}",
        f"  {s['train_images']} train / {s['val_images']} val images, {s['images_per_s']:.0f} img/s, "
        f"wall {s['wall_seconds'] / 60:.1f} min" + (f", {len(s['skipped_images'])} unreadable skipped"
                                                    if s["skipped_images"] else ""),
        *_data_notes(s),
        f"  checkpoint {s['run_dir']}/best.pt   TensorBoard: tensorboard --logdir {s['run_dir']}/tb",
    ])


def _data_notes(s: dict) -> list[str]:
    """Lines on what changed the training data: people left out for their age, mask-only photos added."""
    dropped, extra, notes = s.get("dropped_people") or {}, s.get("mask_only_images", 0), []
    if dropped.get("ages"):
        notes.append(f"  {dropped['people']} people aged {dropped['ages']} left out of training (data.drop_ages)")
    if extra:
        notes.append(f"  {extra} photos with a mask label only (data.mask_extra)")
    return notes


def cmd_predict(args: argparse.Namespace) -> int:
    """`maskclf predict`."""
    from maskclf.inference.predict import PredictOptions, predict

    if args.group_similarity is not None and not args.group_persons:
        raise ValueError("--group-similarity only applies with --group-persons")
    similarity = args.group_similarity if args.group_similarity is not None else 0.9
    options = PredictOptions(tta=args.tta, batch_size=args.batch_size, calibration=not args.no_calibration,
                             group_similarity=similarity if args.group_persons else None,
                             group_weighting=args.group_weighting)
    r = predict(args.checkpoint, args.eval_dir, out=args.out, options=options, device=args.device,
                progress=not args.quiet)
    if r.groups is not None:
        sizes = np.bincount(r.groups)
        print(f"person groups: {len(sizes)} groups, {int((sizes > 1).sum())} with 2+ photos (largest {sizes.max()})")
    print(f"submission: {r.submission} ({len(r.image_ids)} rows)\nprobabilities: {r.probs_path}")
    fallback, several = r.faces.count("fallback"), sum(f.startswith("multiple:") for f in r.faces)
    if fallback or several:
        print(f"faces: {fallback} image(s) with no face found (fixed box used), {several} with several faces "
              f"(largest used); see the face column of {r.probs_path.name}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """`maskclf evaluate`."""
    from maskclf.toolkit.evaluate import evaluate_submission, format_report
    from maskclf.labels import AgeBounds

    try:
        young, old = (int(x) for x in args.age_bounds.split(","))
    except ValueError:
        raise ValueError(f"--age-bounds must look like 30,60, got '{args.age_bounds}'") from None
    report = evaluate_submission(args.submission, args.gt, args.out, AgeBounds(young, old))
    print(format_report(report))
    return 0
