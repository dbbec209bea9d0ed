"""Why heads on frozen dlib face descriptors trained by maskclf scored below a plain logistic regression.

    .venv/bin/python bench/dlib_heads.py [--train-people 250] [--test-people 150] [--threads 1]

Takes utkmask train people (all 7 photos each), splits them by person, computes dlib's descriptors once on the
clean 150 px chips maskclf feeds the `dlib_face` backbone (remembered in the descriptor store, so a rerun is
fast), then scores on the held-out people: scikit-learn's logistic regression on standardised descriptors, and
maskclf-style heads (Linear per attribute, optional BatchNorm1d, AdamW wd 0.01, 1 warm-up epoch + cosine,
batch 64) trained on the same descriptors with different learning rates, epochs and feature scales.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from torch import nn

from maskclf.config import PrepareCfg
from maskclf.data.crops import cached_crops
from maskclf.data.scan import scan_train
from maskclf.data.transforms import build_augment, build_eval_transform
from maskclf.labels import HEADS, decode
from maskclf.models.dlib_face import CHIP, MEAN, STD, DlibFaceExtractor

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MASKCLF_DATA", REPO.parent / "shared" / "data")) / "utkmask"


def descriptors(images: np.ndarray, preset: str = "", batch: int = 64) -> np.ndarray:
    """dlib descriptors of uint8 crops through maskclf's own path: the eval transform at 150 px (or one random
    view of augmentation `preset`, as training would draw it), then the extractor."""
    extractor = DlibFaceExtractor()
    transform = build_augment(preset, CHIP, MEAN, STD) if preset else build_eval_transform(CHIP, MEAN, STD)
    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(0, len(images), batch):
        x = torch.from_numpy(images[i:i + batch])
        out.append(extractor(transform(x, generator=g) if preset else transform(x)).numpy())
    return np.concatenate(out)


def logistic(xtr, ytr, xte, yte) -> float:
    scaler = StandardScaler().fit(xtr)
    clf = LogisticRegression(max_iter=3000).fit(scaler.transform(xtr), ytr)
    return float((clf.predict(scaler.transform(xte)) == yte).mean())


def heads(xtr, ytr: dict, xte, yte: dict, lr: float, epochs: int, bn: bool, scale: float, seed: int = 0) -> dict:
    """Accuracy per attribute of maskclf-style linear heads trained on (scaled) frozen descriptors."""
    torch.manual_seed(seed)
    xtr, xte = (torch.from_numpy((x * scale).astype(np.float32)) for x in (xtr, xte))
    norm = nn.BatchNorm1d(xtr.shape[1]) if bn else nn.Identity()
    lin = nn.ModuleDict({k: nn.Linear(xtr.shape[1], n) for k, n in HEADS.items()})
    params = list(norm.parameters()) + list(lin.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    steps = max(1, len(xtr) // 64)
    total, warm = epochs * steps, steps

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        norm.train()
        order = torch.randperm(len(xtr), generator=g)
        for s in range(steps):
            idx = order[s * 64:(s + 1) * 64]
            f = norm(xtr[idx])
            loss = sum(nn.functional.cross_entropy(lin[k](f), torch.from_numpy(ytr[k])[idx]) for k in HEADS)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    norm.eval()
    with torch.no_grad():
        f = norm(xte)
        return {k: float((lin[k](f).argmax(1).numpy() == yte[k]).mean()) for k in HEADS}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train-people", type=int, default=250)
    ap.add_argument("--test-people", type=int, default=150)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--augmented", action="store_true",
                    help="also train on one view per photo of the default 'custom' augmentation (dlib runs again)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    records = scan_train(DATA).records
    people = sorted({r.person for r in records})
    rng = np.random.default_rng(args.seed)
    chosen = rng.permutation(people)[: args.train_people + args.test_people]
    train_people = set(chosen[: args.train_people])
    picked = [r for r in records if r.person in set(chosen)]
    images, kept, _ = cached_crops(picked, DATA, PrepareCfg(), progress=False)
    start = time.perf_counter()
    x = descriptors(images).astype(np.float64)
    print(f"{len(kept)} crops, descriptors in {time.perf_counter() - start:.0f} s "
          f"(norm {np.linalg.norm(x, axis=1).mean():.2f}, per-dim std {x.std(0).mean():.3f})")
    is_train = np.array([r.person in train_people for r in kept])
    y = dict(zip(HEADS, (np.asarray(v) for v in decode(np.array([r.label for r in kept])))))
    ytr, yte = {k: v[is_train] for k, v in y.items()}, {k: v[~is_train] for k, v in y.items()}
    xtr, xte = x[is_train], x[~is_train]
    print(f"{is_train.sum()} train / {(~is_train).sum()} test photos")
    print("logistic regression (standardised): " +
          "  ".join(f"{k} {logistic(xtr, ytr[k], xte, yte[k]):.3f}" for k in HEADS), flush=True)
    for lr, epochs, bn, scale in [(1e-3, 10, True, 1.0), (1e-3, 10, False, 1.0), (1e-2, 10, True, 1.0),
                                  (1e-2, 10, False, 1.0), (1e-3, 10, False, math.sqrt(128)),
                                  (1e-2, 10, False, math.sqrt(128)), (3e-3, 30, False, math.sqrt(128)),
                                  (1e-2, 30, True, 1.0)]:
        acc = heads(xtr, ytr, xte, yte, lr, epochs, bn, scale)
        print(f"heads lr {lr:g} epochs {epochs} head_bn {bn!s:5} scale {scale:5.2f}: " +
              "  ".join(f"{k} {v:.3f}" for k, v in acc.items()), flush=True)
    if args.augmented:
        start = time.perf_counter()
        xaug = descriptors(images[is_train], "custom").astype(np.float64)
        print(f"one 'custom' view per train photo: descriptors in {time.perf_counter() - start:.0f} s")
        print("logistic regression on augmented views, clean test: " +
              "  ".join(f"{k} {logistic(xaug, ytr[k], xte, yte[k]):.3f}" for k in HEADS))
        for lr, bn in [(1e-3, True), (1e-2, True)]:
            acc = heads(xaug, ytr, xte, yte, lr, 10, bn, 1.0)
            print(f"heads on augmented views lr {lr:g} epochs 10 head_bn {bn}: " +
                  "  ".join(f"{k} {v:.3f}" for k, v in acc.items()), flush=True)


if __name__ == "__main__":
    main()
