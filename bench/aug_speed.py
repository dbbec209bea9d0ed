"""Images per second of the batched `custom` augmentation vs a per-sample torchvision v2 pipeline on the same crops.

The crops are random uint8 images shaped like the face cache (N, S, S, 3); speed does not depend on content.
torchvision has no CLAHE, so its pipeline uses RandomEqualize at the same probability as the nearest stand-in.
Usage: python bench/aug_speed.py [--size 128] [--out 112] [--batch 64] [--batches 20] [--threads 1] [--device cpu]
       python bench/aug_speed.py --paint 0.5 [--data ../shared/data/tiny]   # painted masks vs a training step
       python bench/aug_speed.py --against REV [--rounds 3]   # `custom` now vs transforms.py at git revision REV

`--against REV` loads src/maskclf/data/transforms.py as it was at REV and times its `custom` preset against
today's in interleaved rounds on the same batches (ratios within one run).

`--paint P` times `train.augment.paint_masks=P` instead: real face crops with their cached landmarks (the folder is
prepared with the default detector into a temporary cache), batches in the data's own mix (1 bare photo in 7),
against one training step (forward, loss, backward, AdamW) of the default network (mobilenetv2_100, three heads,
random init) on a batch of the same size.

Measured on the 2-core dev machine, 128 -> 112 px, batch 64, 1 thread, while other jobs shared the cores:
batched custom 940-1030 images/s, torchvision per-sample 290-300 images/s (3.2-3.4x); on a quieter core the
batched path alone reached ~1300 images/s (`base`, resize + normalise only: ~2700 images/s).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torchvision.transforms import v2

from maskclf.config import ModelCfg, NamedCfg, PrepareCfg
from maskclf.data.crops import cached_crops, cached_landmarks, to_cropset
from maskclf.data.paint_masks import MaskPainter
from maskclf.data.scan import scan_train
from maskclf.data.transforms import build_augment
from maskclf.labels import HEADS
from maskclf.models.heads import head_spec, make_targets
from maskclf.models.network import build_model
from maskclf.training.losses import build_criterion

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def torchvision_custom(out: int) -> v2.Compose:
    """The `custom` preset's ops, one image at a time, as torchvision v2 spells them."""
    return v2.Compose([
        v2.RandomResizedCrop(out, scale=(0.7, 1.0), antialias=True),
        v2.RandomApply([v2.RandomAffine(degrees=15, translate=(0.0625, 0.0625), scale=(0.9, 1.1))], p=0.5),
        v2.RandomHorizontalFlip(0.5),
        v2.RandomApply([v2.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.4, hue=0.5)], p=0.8),
        v2.RandomGrayscale(0.2),
        v2.RandomApply([v2.RandomChannelPermutation()], p=0.3),
        v2.RandomEqualize(0.2),
        v2.RandomApply([v2.GaussianBlur(9, sigma=(0.1, 1.5))], p=0.2),
        v2.ToDtype(torch.float32, scale=True),
        v2.RandomApply([v2.GaussianNoise(sigma=0.03)], p=0.2),
        v2.Normalize(MEAN, STD),
    ])


def images_per_second(step, batches: list[torch.Tensor], sync) -> float:
    step(batches[0])  # warm-up
    sync()
    start = time.perf_counter()
    for b in batches:
        step(b)
    sync()
    return sum(len(b) for b in batches) / (time.perf_counter() - start)


def transforms_at(rev: str):
    """maskclf.data.transforms as it was at git revision `rev`, loaded as a separate module."""
    repo = Path(__file__).resolve().parents[1]
    src = subprocess.run(["git", "-C", str(repo), "show", f"{rev}:src/maskclf/data/transforms.py"], check=True,
                         capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "transforms_at_rev.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("transforms_at_rev", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


def against(rev: str, crops: torch.Tensor, out: int, rounds: int) -> None:
    """Today's `custom` vs the one at `rev`, alternating, on the same batches; prints images/s, load and ratio."""
    old = transforms_at(rev).build_augment("custom", out, MEAN, STD)
    new = build_augment("custom", out, MEAN, STD)
    batches, g = list(crops), torch.Generator().manual_seed(0)
    for r in range(rounds):
        load = os.getloadavg()[0]
        before = images_per_second(lambda b: old(b, g), batches, lambda: None)
        after = images_per_second(lambda b: new(b, g), batches, lambda: None)
        print(f"round {r + 1}: {rev} {before:7.0f} images/s, today {after:7.0f} images/s, "
              f"today/{rev} {after / before:.2f}x, load {load:.1f}")


def paint_vs_step(data: Path, p: float, size: int, out: int, batch: int, batches: int) -> None:
    """Seconds per batch of painting masks, against one CPU training step of the default network."""
    cfg = PrepareCfg(size=size)
    with tempfile.TemporaryDirectory() as cache:
        records = scan_train(data).records
        images, kept, _ = cached_crops(records, data, cfg, Path(cache), progress=False)
        crops = to_cropset(images, kept, cached_landmarks(kept, data, cfg, Path(cache)))
    painter = MaskPainter(p, seed=0)
    rng = np.random.default_rng(0)
    orders = [rng.choice(len(crops), batch) for _ in range(batches)]
    start = time.perf_counter()
    for idx in orders:
        painter(crops.images[idx], crops.labels[idx], crops.landmarks[idx], idx)
    paint_s = (time.perf_counter() - start) / batches

    spec = head_spec("multihead", "classes")
    model = build_model(ModelCfg(pretrained=""), spec.heads)
    criterion = build_criterion(spec.heads, NamedCfg(name="ce"), {}, {}, {k: np.ones(n) for k, n in HEADS.items()},
                                False, False)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    aug = build_augment("custom", out, MEAN, STD)
    g = torch.Generator().manual_seed(0)

    def step(idx):
        x = aug(torch.from_numpy(crops.images[idx]), g)
        targets = make_targets(torch.from_numpy(crops.labels[idx]), torch.from_numpy(crops.ages[idx]), spec)
        loss, _ = criterion(model(x), targets)
        opt.zero_grad()
        loss.backward()
        opt.step()

    step(orders[0])
    start = time.perf_counter()
    for idx in orders[:5]:
        step(idx)
    step_s = (time.perf_counter() - start) / 5
    bare = np.mean([np.mean(crops.labels[idx] // 6 == 2) for idx in orders])
    print(f"{data.name}: {len(crops)} crops {size}px, batch {batch} ({bare:.1%} bare), paint_masks={p}, "
          f"{torch.get_num_threads()} thread(s), load {os.getloadavg()[0]:.1f}")
    print(f"painting: {paint_s * 1000:7.1f} ms per batch")
    print(f"training step (mobilenetv2_100, {out}px, custom augmentation): {step_s * 1000:7.1f} ms")
    print(f"painting / step: {paint_s / step_s:.1%}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=128, help="side of the cached crops")
    ap.add_argument("--out", type=int, default=112, help="side of the network input")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads for both pipelines")
    ap.add_argument("--device", default="cpu", help="device of the batched path (torchvision runs on CPU)")
    ap.add_argument("--paint", type=float, help="time train.augment.paint_masks=P against a training step instead")
    ap.add_argument("--against", metavar="REV", help="time `custom` against transforms.py at this git revision")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds for --against")
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data" / "tiny",
                    help="competition-layout folder whose train crops --paint uses")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.paint is not None:
        paint_vs_step(args.data, args.paint, args.size, args.out, args.batch, args.batches)
        return
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    g = torch.Generator().manual_seed(0)
    crops = torch.randint(0, 256, (args.batches, args.batch, args.size, args.size, 3), generator=g, dtype=torch.uint8)
    if args.against:
        against(args.against, crops, args.out, args.rounds)
        return

    aug = build_augment("custom", args.out, MEAN, STD)
    ours = images_per_second(lambda b: aug(b, g), [c.to(device) for c in crops], sync)
    tv = torchvision_custom(args.out)
    per_sample = images_per_second(lambda b: torch.stack([tv(img) for img in b.permute(0, 3, 1, 2)]),
                                   list(crops), lambda: None)
    print(f"crops {args.size}px -> {args.out}px, batch {args.batch}, {args.threads} thread(s)")
    print(f"maskclf batched custom ({device}): {ours:8.0f} images/s")
    print(f"torchvision v2 per-sample (cpu):  {per_sample:8.0f} images/s")
    print(f"speed-up: {ours / per_sample:.1f}x")


if __name__ == "__main__":
    main()
