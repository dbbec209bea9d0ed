"""How many deliberately flipped labels `maskclf noise` recovers: flip, cross-validate, rank, count.

Copies DATA_DIR's train.csv into WORK/data (the image folders are symlinked: the source stays untouched),
flips gender for a seeded random FRACTION of people and moves another FRACTION to a different age group
(a random age inside it), runs `maskclf cv` on the copy with the given config (label fixes off), ranks
suspects from its out-of-fold probabilities and reports recall of the flips among the top N and 2N
suspects (N = number of flips). The face-crop cache of DATA_DIR, when there is one, is reused through links.
Usage: python bench/noise_recovery.py DATA_DIR --work WORK [--fraction 0.05] [--seed 0] [--k 5] [-c YAML] [--set k=v]

Measured on the 2-core dev machine (CPU, 1 torch thread, shared with other jobs), seed 0, fraction 0.05:
- utkmask (1,750 people: 88 gender + 88 age-group flips), k=3, resnet18 from scratch at 64 px (72 px cache,
  detector none), 4 epochs, batch 64 (~45 min): OOF macro F1 0.388; 1,064 suspects (309 gender, 754 age,
  1 swap). Top 176 (N): 79/176 = 45% recovered (gender 46/88, age 33/88). Top 352 (2N): 104/176 = 59%
  (gender 54/88, age 50/88). 152/176 flips are flagged somewhere in the list. The weak, briefly trained model
  (OOF gender accuracy ~0.82, age ~0.57) sets the ceiling: a stronger model ranks fewer clean people high.
- tiny (24 people, 1 + 1 flips), resnet18 at 32 px, 1 epoch, k=3 (~45 s): runs end to end; a 1-epoch model is
  at chance, so its recall (0/2) says nothing.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
from pathlib import Path

import numpy as np

from maskclf.faces.cache import cache_dir_for
from maskclf.config import load_config
from maskclf.toolkit.crossval import cross_validate
from maskclf.labels import AgeBounds
from maskclf.toolkit.noise import rank_label_noise, read_oof_rows

AGE_RANGE = (18, 80)  # ages of the people in the competition-layout sets


def make_noisy_copy(data_dir: Path, work: Path, fraction: float, seed: int, bounds: AgeBounds) -> dict:
    """WORK/data with flipped labels; returns {person id: (kind, old value, new value)}."""
    with (data_dir / "train" / "train.csv").open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        fields, rows = reader.fieldnames, list(reader)
    rng = np.random.default_rng(seed)
    n = max(1, round(fraction * len(rows)))
    picked = rng.choice(len(rows), size=2 * n, replace=False)
    flips = {}
    for i in picked[:n]:
        old = rows[i]["gender"]
        rows[i]["gender"] = {"male": "female", "female": "male"}[old.lower()]
        flips[rows[i]["id"]] = ("gender", old, rows[i]["gender"])
    edges = [AGE_RANGE[0], bounds.young, bounds.old, AGE_RANGE[1] + 1]
    for i in picked[n:]:
        old = int(rows[i]["age"])
        group = int(rng.choice([g for g in range(3) if g != bounds.group(old)]))
        rows[i]["age"] = str(int(rng.integers(edges[group], edges[group + 1])))
        flips[rows[i]["id"]] = ("age", old, int(rows[i]["age"]))
    train = work / "data" / "train"
    train.mkdir(parents=True, exist_ok=True)
    with (train / "train.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    images = train / "images"
    if not images.exists():
        images.symlink_to((data_dir / "train" / "images").resolve(), target_is_directory=True)
    return flips


def link_cache(src_root: Path, dst_root: Path, cfg) -> bool:
    """Start the copy's face-crop cache from the source's (same image keys): link the shards, copy the index."""
    src = cache_dir_for(src_root, cfg.prepare, cfg.data.cache_dir)
    dst = cache_dir_for(dst_root, cfg.prepare, cfg.data.cache_dir)
    if not (src / "index.json").is_file() or dst.exists():
        return False
    dst.mkdir(parents=True)
    for shard in src.glob("shard-*.npy"):
        os.symlink(shard, dst / shard.name)
    shutil.copy2(src / "index.json", dst / "index.json")
    return True


def recall(suspects: list, flips: dict, n: int) -> dict:
    """Flips found among the top `n` suspects (right person and right kind), overall and per kind."""
    top = {(s.person, s.kind) for s in suspects[:n]}
    found = {pid: kind for pid, (kind, *_) in flips.items() if (pid, kind) in top}
    out = {"n": n, "found": len(found), "recall": len(found) / len(flips)}
    for kind in ("gender", "age"):
        total = sum(k == kind for k, *_ in flips.values())
        out[kind] = f"{sum(k == kind for k in found.values())}/{total}"
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("data_dir", type=Path)
    ap.add_argument("--work", type=Path, required=True, help="folder for the noisy copy, the cv run and results")
    ap.add_argument("--fraction", type=float, default=0.05, help="share of people per kind of flip")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--k", type=int, default=5, help="cross-validation folds")
    ap.add_argument("--config", "-c", action="append", default=[])
    ap.add_argument("--set", "-s", dest="overrides", action="append", default=[])
    args = ap.parse_args()
    cfg = load_config(args.config, args.overrides + ["data.label_fixes=none", f"run.out_dir={args.work / 'runs'}"])
    bounds = AgeBounds(*cfg.data.age_bounds)
    flips = make_noisy_copy(args.data_dir, args.work, args.fraction, args.seed, bounds)
    cfg.data.root = args.work / "data"
    reused = link_cache(args.data_dir, cfg.data.root, cfg)
    print(f"flipped {len(flips)} people ({sum(k == 'gender' for k, *_ in flips.values())} gender, "
          f"{sum(k == 'age' for k, *_ in flips.values())} age); face cache {'reused' if reused else 'built'}")
    cv = cross_validate(cfg, args.k, args.work / "cv", progress=False)
    suspects = rank_label_noise(read_oof_rows(cv.cv_dir))
    n = len(flips)
    result = {"data": str(args.data_dir), "people_flipped": n, "fraction": args.fraction, "seed": args.seed,
              "k": args.k, "oof_f1": cv.oof_f1, "suspects": len(suspects),
              "top_n": recall(suspects, flips, n), "top_2n": recall(suspects, flips, 2 * n),
              "config": args.config, "overrides": args.overrides}
    (args.work / "recovery.json").write_text(json.dumps(result, indent=1))
    print(f"OOF macro F1 {cv.oof_f1:.4f}; {len(suspects)} suspects in all")
    for name in ("top_n", "top_2n"):
        r = result[name]
        print(f"top {r['n']:>4}: recovered {r['found']}/{n} = {r['recall']:.0%} (gender {r['gender']}, age {r['age']})")


if __name__ == "__main__":
    main()
