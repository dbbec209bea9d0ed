"""Training-step speed of the CPU levers of issue 14, against the contiguous default, in one run.

Each lever is the default model (`ModelCfg()`: mobilenetv2_100, three heads; random weights, speed only) doing
full training steps (the default loss and AdamW, batch `--batch`) on random batches already in memory, so only
the step itself is timed. The levers run in interleaved rounds (median reported) with the load before each:

- `contiguous`: `train.channels_last=false`, what the CPU ran before channels-last applied there (baseline);
- `channels_last`: the default today;
- `freeze_blocks2`: channels-last with `model.freeze=blocks.2` (stem and first three stages frozen: no backward
  through the high-resolution layers);
- `cached_blocks2`: what caching the frozen stages' output once per crop would leave: the steps of the layers
  after blocks.2 on feature maps already in memory (an upper bound: it ignores the cache's reads);
- `size_64` / `size_88`: channels-last at the sides progressive resizing (`train.resize.start=64`) passes through.

    .venv/bin/python bench/step_speed.py                  # 1 thread, 3 rounds of 6 steps per lever
    .venv/bin/python bench/step_speed.py --threads 2 --rounds 5
    .venv/bin/python bench/step_speed.py --quick          # a smoke test: 32 px, batch 8, 1 step
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from maskclf.config import ModelCfg, NamedCfg, TrainCfg  # noqa: E402
from maskclf.models.heads import head_spec, make_targets  # noqa: E402
from maskclf.models.network import build_model, modules_up_to  # noqa: E402
from maskclf.training.losses import build_criterion  # noqa: E402
from maskclf.training.optim import build_optimizer  # noqa: E402
from maskclf.utils.runtime import memory_format  # noqa: E402

BENCH = Path(__file__).resolve().parent
FROZEN_STAGE = "blocks.2"


def _split(model: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(the stem and stages up to FROZEN_STAGE, the rest of the network down to the heads) of the default model
    (timm's mobilenetv2: conv_stem, bn1, blocks, conv_head, bn2, then the pooling head)."""
    backbone = model.backbone
    frozen = {id(m) for m in modules_up_to(backbone, FROZEN_STAGE)}
    lower = torch.nn.Sequential(backbone.conv_stem, backbone.bn1, *[b for b in backbone.blocks if id(b) in frozen])
    rest = torch.nn.Sequential(*[b for b in backbone.blocks if id(b) not in frozen])

    class Upper(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rest, self.model = rest, model

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            b = self.model.backbone  # the rest of forward_features, then MaskNet's own head path
            return self.model.forward_map(b.bn2(b.conv_head(self.rest(x))))

    return lower, Upper()


class Lever:
    """One lever: its model, its batches and one timed training step."""

    def __init__(self, name: str, size: int, batch: int, channels_last: bool, freeze: str = "none",
                 cached: bool = False):
        torch.manual_seed(0)
        spec = head_spec("multihead", "classes")
        self.model = build_model(ModelCfg(pretrained="", freeze=freeze), spec.heads).train()
        fmt = memory_format(channels_last)
        self.model = self.model.to(memory_format=fmt)
        t = TrainCfg()
        self.criterion = build_criterion(spec.heads, t.loss, {}, ModelCfg().head_weights,
                                         {h: torch.ones(n, dtype=torch.long).numpy() for h, n in spec.heads.items()},
                                         False, False)
        self.optimizer = build_optimizer(self.model, NamedCfg(name="adamw", params={"lr": 1e-3}))
        x = torch.randn(batch, 3, size, size)
        self.forward = self.model
        if cached:
            lower, self.forward = _split(self.model)
            with torch.no_grad():
                x = lower.eval()(x)
        self.x = x.contiguous(memory_format=fmt)
        labels = torch.randint(0, 18, (batch,))
        self.targets = make_targets(labels, torch.randint(0, 90, (batch,)).float(), spec)
        self.name, self.batch = name, batch

    def step(self) -> None:
        outputs = self.forward(self.x)
        loss, _ = self.criterion(outputs, self.targets)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()


def levers(size: int, batch: int) -> list[Lever]:
    small = [s for s in (64, 88) if s < size] or [max(16, size // 2)]
    out = [Lever("contiguous", size, batch, False), Lever("channels_last", size, batch, True),
           Lever("freeze_blocks2", size, batch, True, freeze=FROZEN_STAGE),
           Lever("cached_blocks2", size, batch, True, freeze=FROZEN_STAGE, cached=True)]
    return out + [Lever(f"size_{s}", s, batch, True) for s in small]


def measure(all_levers: list[Lever], rounds: int, steps: int) -> dict:
    """images/s per lever and round (after one untimed step each), interleaved, with the load before each."""
    for lever in all_levers:
        lever.step()
    out = {lv.name: {"rounds": [], "load": []} for lv in all_levers}
    for _ in range(rounds):
        for lever in all_levers:
            out[lever.name]["load"].append(round(os.getloadavg()[0], 2))
            start = time.perf_counter()
            for _ in range(steps):
                lever.step()
            out[lever.name]["rounds"].append(round(steps * lever.batch / (time.perf_counter() - start), 2))
    base = statistics.median(out["contiguous"]["rounds"])
    for r in out.values():
        r["images_per_s"] = statistics.median(r["rounds"])
        r["vs_contiguous"] = round(r["images_per_s"] / base, 3)
    return out


def render(report: dict) -> str:
    s = report["settings"]
    lines = [f"`{report['command']}`, {report['date']}, {report['machine']}, mobilenetv2_100 (three heads), batch "
             f"{s['batch']}, {s['size']} px, {s['threads']} torch thread(s), {s['rounds']} interleaved rounds of "
             f"{s['steps']} steps (median):", "",
             "| lever | images/s | vs contiguous | rounds | 1-min load before each |", "|---|---:|---:|---|---|"]
    for name, r in report["levers"].items():
        lines.append(f"| `{name}` | {r['images_per_s']:.1f} | {r['vs_contiguous']:.2f}x | "
                     f"{', '.join(f'{x:.1f}' for x in r['rounds'])} | {', '.join(str(x) for x in r['load'])} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=6, help="timed steps per lever and round")
    ap.add_argument("--batch", type=int, default=TrainCfg().batch_size)
    ap.add_argument("--size", type=int, default=TrainCfg().input_size)
    ap.add_argument("--quick", action="store_true", help="32 px, batch 8, 1 round of 1 step")
    ap.add_argument("--out", type=Path, default=BENCH / "results" / "step_speed.json")
    args = ap.parse_args(argv)
    if args.quick:
        args.size, args.batch, args.rounds, args.steps = 32, 8, 1, 1
    torch.set_num_threads(args.threads)
    report = {"command": "python bench/step_speed.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
              "settings": {k: getattr(args, k) for k in ("threads", "rounds", "steps", "batch", "size")}}
    report["levers"] = measure(levers(args.size, args.batch), args.rounds, args.steps)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(render(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
