"""Accuracy within a CPU budget: train a config on utkmask/train, score utkmask/eval and real mask photos.

    .venv/bin/python bench/accuracy.py                      # the default config, 30 training minutes
    .venv/bin/python bench/accuracy.py --recipe baseline    # the competition baseline recipe, same budget
    .venv/bin/python bench/accuracy.py --recipe real_masks  # the default + real mask photos + painted masks
    .venv/bin/python bench/accuracy.py --quick              # smoke test on tiny data (CI)

Results are appended to bench/results/accuracy.json and printed as a markdown row for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import csv
import fcntl
import io
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from maskclf.utils.atomic import write_atomic
from maskclf.config import load_config
from maskclf.data.mask_extra import holdout_split, scan_mask_extra
from maskclf.toolkit.evaluate import evaluate_submission
from maskclf.inference.predict import predict
from maskclf.training.fit import fit

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MASKCLF_DATA", REPO.parent / "shared" / "data"))
RECIPES = {"default": [], "baseline": [REPO / "configs" / "baseline.yaml"],
           "real_masks": [REPO / "configs" / "real_masks.yaml"]}
MASKS = {"wear": 0, "incorrect": 1, "normal": 2}


def mask_real_layout(src: Path, dst: Path, limit: int | None = None, keep: set[str] | None = None) -> dict[str, int]:
    """mask-real photos (those in `keep`, if given) as a competition-style eval folder (info.csv + images/);
    returns ImageID -> mask.

    The folder is reused when it already holds the same images, so its face-crop cache (keyed by the folder's
    path) is detected once, not once per benchmark run.
    """
    images = dst / "eval" / "images"
    images.mkdir(parents=True, exist_ok=True)
    truth = {}
    with (src / "labels.csv").open(newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if keep is None or r["file"] in keep]
    if limit:
        rows = rows[::max(1, len(rows) // limit)][:limit]
    for row in rows:
        image_id = row["file"].replace("/", "__")
        link = images / image_id
        if not link.is_symlink():
            os.symlink((src / row["file"]).resolve(), link)
        truth[image_id] = MASKS[row["mask"]]
    text = io.StringIO(newline="")
    w = csv.writer(text)
    w.writerow(["ImageID", "ans"])
    w.writerows([k, 0] for k in truth)
    write_atomic(dst / "eval" / "info.csv", lambda fh: fh.write(text.getvalue().encode()))
    return truth


def mask_real_heldout(fraction: float, seed: int) -> set[str]:
    """The mask-real files `data.mask_extra` never trains on (its seeded per-source hold-out)."""
    return {r.key for r in holdout_split(scan_mask_extra(DATA / "mask-real"), fraction, seed)[1]}


def mask_real_scores(checkpoint: Path, work: Path, limit: int | None, fraction: float, seed: int) -> dict:
    """Mask accuracy and per-status recall on the held-out part of mask-real (the same photos for every row)."""
    name = f"mask-real-heldout-{fraction:g}-{seed}"
    layout = work / name if limit else REPO / "bench" / "_work" / name
    truth = mask_real_layout(DATA / "mask-real", layout, limit, mask_real_heldout(fraction, seed))
    result = predict(checkpoint, layout / "eval", out=work / "mask-real.csv", progress=False)
    pred = {k: int(c) // 6 for k, c in zip(result.image_ids, result.probs.argmax(1))}
    keys = list(truth)
    y, p = np.array([truth[k] for k in keys]), np.array([pred[k] for k in keys])
    recall = {name: float((p[y == m] == m).mean()) if (y == m).any() else None for name, m in MASKS.items()}
    return {"images": len(keys), "mask_accuracy": float((y == p).mean()), "recall": recall,
            "incorrect_recall": recall["incorrect"], "part": f"held-out {fraction:g} per source x mask, seed {seed}"}


def portable(text: str) -> str:
    """Paths in committed results relative to the repository (data as ../shared/data, temp folders as <tmp>)."""
    text = text.replace(str(DATA.resolve()), str(DATA)) if DATA.resolve() != DATA else text
    for prefix, short in ((str(REPO.parent / "shared") + "/", "../shared/"), (str(REPO) + "/", ""),
                          (tempfile.gettempdir().rstrip("/") + "/", "<tmp>/")):
        text = text.replace(prefix, short)
    return text


def append_row(out: Path, row: dict) -> None:
    """Append one result to a JSON list; locked and atomic, so parallel benchmark runs can share the file."""
    out.parent.mkdir(parents=True, exist_ok=True)
    row = json.loads(portable(json.dumps(row)))
    with open(out.with_name(out.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        rows = json.loads(out.read_text()) if out.is_file() else []
        write_atomic(out, lambda fh: fh.write(json.dumps(rows + [row], indent=1).encode()))


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return f"{cpu}, {os.cpu_count()} cores, {os.getloadavg()[0]:.1f} load at the end, torch {torch.__version__} ({torch.get_num_threads()} threads)"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", default="default", choices=sorted(RECIPES))
    ap.add_argument("--budget-min", type=float, default=30.0, help="training wall-clock budget (default 30)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="extra config overrides")
    ap.add_argument("--quick", action="store_true", help="tiny data, tiny model: a smoke test")
    ap.add_argument("--out", type=Path, help="append the row here (default: bench/results/accuracy.json, "
                    "except with --quick, which then writes nothing)")
    ap.add_argument("--keep", type=Path, help="keep the run (checkpoints, submissions) in this folder")
    ap.add_argument("--label", help="name of this row in the results (default: accuracy/<recipe>)")
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's choice, all cores)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    data = DATA / ("tiny" if args.quick else "utkmask")
    work = args.keep or Path(tempfile.mkdtemp(prefix="maskclf-acc-"))
    work.mkdir(parents=True, exist_ok=True)
    overrides = [f"data.root={data}", f"run.out_dir={work / 'runs'}", f"run.name={args.recipe}",
                 f"train.time_budget_min={args.budget_min}"] + args.overrides
    if args.recipe == "real_masks":  # the config's path is relative to the repository's parent; the data may be elsewhere
        overrides.insert(0, f"data.mask_extra=[{DATA / 'mask-real'}]")
    if args.quick:
        overrides += ["model.backbone=resnet18", "model.pretrained=", "train.input_size=32", "prepare.size=48",
                      "train.epochs=1", "train.batch_size=16", "train.scheduler.params.warmup_epochs=0",
                      "prepare.detector=none"]
    cfg = load_config(RECIPES[args.recipe], overrides)
    trained_on_real = any(Path(p).resolve() == (DATA / "mask-real").resolve() for p in cfg.data.mask_extra)
    if trained_on_real and cfg.data.mask_extra_holdout == 0:
        ap.error("data.mask_extra trains on mask-real: keep data.mask_extra_holdout > 0 to score on unseen photos")
    started = time.time()
    result = fit(cfg, progress=not args.quick)
    sub = predict(result.checkpoint, data / "eval", out=work / "submission.csv", progress=False)
    report = evaluate_submission(sub.submission, data / "eval" / "gt.csv", work / "eval")
    real = mask_real_scores(result.checkpoint, work, 60 if args.quick else None, cfg.data.mask_extra_holdout,
                            cfg.data.split_seed)
    row = {
        "what": args.label or f"accuracy/{args.recipe}" + ("/quick" if args.quick else ""),
        "command": "python bench/accuracy.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "date": time.strftime("%Y-%m-%d"), "machine": machine(), "data": str(data.name),
        "train_minutes": result.summary["train_seconds"] / 60, "epochs": result.summary["epochs_run"],
        "epochs_planned": result.summary.get("epochs_planned"), "budget_used": result.summary.get("budget_used"),
        "wall_minutes": (time.time() - started) / 60, "val_f1": result.best_f1,
        "eval_f1": report["f1"], "eval_accuracy": report["accuracy"],
        "eval_attributes": {a: {"accuracy": v["accuracy"], "f1": v["f1"]} for a, v in report["attributes"].items()},
        "mask_real": real, "mask_real_used_for_training": "the other part" if trained_on_real else False,
        "config": cfg.to_dict(),
    }
    if args.out or not args.quick:
        append_row(args.out or REPO / "bench" / "results" / "accuracy.json", row)
    a = row["eval_attributes"]
    print(f"| {row['what']} | `{row['command']}` | eval macro F1 {row['eval_f1']:.3f}, acc {row['eval_accuracy']:.3f}; "
          f"mask/gender/age acc {a['mask']['accuracy']:.3f}/{a['gender']['accuracy']:.3f}/{a['age']['accuracy']:.3f}; "
          f"mask-real acc {real['mask_accuracy']:.3f}, incorrect recall {real['incorrect_recall'] or 0:.3f}; "
          f"{row['train_minutes']:.1f} train min, {row['epochs']} epochs | {row['date']} | {row['machine']} |")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
