"""Person grouping at predict time: no grouping vs equal weights vs weights by visible face and confidence.

    .venv/bin/python bench/grouping.py CHECKPOINT [--data ../shared/data/utkmask] [--threshold 0.9]

Predicts the eval set once without grouping, groups its photos by upper-face similarity, then scores the
model's own probabilities and both weightings of the group average (inference.grouping) against eval/gt.csv.
"""

from __future__ import annotations

import argparse
import csv
import os
import tempfile
from pathlib import Path

import numpy as np

from maskclf.data.crops import cached_crops
from maskclf.data.scan import scan_eval
from maskclf.inference.grouping import WEIGHTINGS, group_probs, person_groups
from maskclf.inference.predict import load_model, predict
from maskclf.metrics import score

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MASKCLF_DATA", REPO.parent / "shared" / "data"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("--data", type=Path, default=DATA / "utkmask")
    ap.add_argument("--threshold", type=float, default=0.9)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = predict(args.checkpoint, args.data / "eval", out=Path(tmp) / "sub.csv", progress=False)
    cfg = load_model(args.checkpoint, "cpu").cfg
    scan = scan_eval(args.data)
    images, kept, _ = cached_crops(scan.records, args.data, cfg.prepare, cfg.data.cache_dir, progress=False)
    pos = {k: i for i, k in enumerate(result.image_ids)}
    probs = result.probs[[pos[r.key] for r in kept]]
    with (args.data / "eval" / "gt.csv").open() as fh:
        truth = {r["ImageID"]: int(r["ans"]) for r in csv.DictReader(fh)}
    y = np.array([truth[r.key] for r in kept])
    groups = person_groups(images, args.threshold)
    sizes = np.bincount(groups)
    print(f"{len(kept)} photos, {len(sizes)} groups ({int((sizes > 1).sum())} with 2+ photos, largest {sizes.max()})")
    variants = {"none": probs, **{w: group_probs(probs, groups, w) for w in WEIGHTINGS}}
    for name, p in variants.items():
        s = score(y, p.argmax(1))
        a = s["attributes"]
        print(f"{name:6s} macro F1 {s['f1']:.4f}  accuracy {s['accuracy']:.4f}  gender {a['gender']['accuracy']:.4f}  "
              f"age {a['age']['accuracy']:.4f} (F1 {a['age']['f1']:.4f})")


if __name__ == "__main__":
    main()
