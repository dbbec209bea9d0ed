"""Training throughput: the competition baseline's JPEG data path vs maskclf's face-crop cache vs the compute limit.

One run, the same images, model (timm resnet18 + one 18-class head), square input size and batch size for all:
- baseline: a torch Dataset that opens each 384x512 JPEG with PIL and applies Resize + ToTensor + Normalize per
  sample, every epoch, through a DataLoader with worker processes (the baseline's BaseAugmentation; it resized
  to 128x96, here to the same square size as the other paths so the model cost is identical);
- maskclf: `iterate` over the in-RAM uint8 face crops + the batched `custom` augmentation (the engine's path);
- compute limit: the same training step on random tensors already in memory.
`prepare` (the default detector on the 384x512 images) runs once first; loaders alone (no model), full training
steps and batch prediction on the cached crops are then measured in interleaved rounds (median reported).

Inference (`--part inference`, also part of the default `all`): the default model (random weights: speed only)
with the default detector on real photos from mask-real: `detect` faces/s, batch prediction of face crops with
torch and with ONNX Runtime in the same run, and `maskclf serve` requests/s with p50/p95 latency under 8
concurrent clients on 127.0.0.1 (bounded in count and time). Each figure is stored with the load average.

Usage: python bench/speed.py [--quick] [--part all|training|inference] [--images N] [--data DATA_DIR] [--out-dir DIR]
"""

from __future__ import annotations

import argparse
import copy
import datetime
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import requests
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T

from maskclf.config import Config, ModelCfg, PrepareCfg, TrainCfg
from maskclf.data.crops import cached_crops, to_cropset
from maskclf.data.scan import scan_train
from maskclf.faces.detect import detector_for, process_image
from maskclf.inference.detect import FacePipeline, detect
from maskclf.inference.forward import predict_outputs
from maskclf.inference.onnx_export import write_onnx
from maskclf.inference.onnx_model import load_onnx
from maskclf.inference.predict import LoadedModel, predict_probs
from maskclf.training.engine import StepParts, train_one_epoch
from maskclf.data.loader import epoch_order, iterate
from maskclf.training.losses import build_criterion
from maskclf.models.network import build_model
from maskclf.training.optim import build_optimizer, build_scheduler
from maskclf.utils.runtime import memory_format
from maskclf.models.heads import head_spec, make_targets
from maskclf.data.transforms import build_augment, build_eval_transform, tta_views
from maskclf.layout import Record

BENCH = Path(__file__).resolve().parent
DATA_ROOT = Path(os.environ.get("MASKCLF_DATA", BENCH.parents[1] / "shared" / "data"))
DEFAULT_DATA = DATA_ROOT / "utkmask"
DEFAULT_PHOTOS = DATA_ROOT / "mask-real"
BASELINE_MEAN, BASELINE_STD = (0.548, 0.504, 0.479), (0.237, 0.247, 0.246)  # the baseline's dataset statistics
CPU = torch.device("cpu")
MARKERS = ("<!-- speed:begin -->", "<!-- speed:end -->")
PREPARE_SETS = {"competition": "384x512 JPEGs", "photos": "200x200 utkmask photos"}
INFERENCE_MARKERS = ("<!-- speed-inference:begin -->", "<!-- speed-inference:end -->")
PREDICT_TARGET = 150.0  # images/s of the default model with ONNX Runtime on 2 cores


@dataclass(frozen=True)
class Settings:
    images: int = 2000
    batch: int = 64
    size: int = 112  # network input side for every path
    rounds: int = 3
    train_batches: int = 8  # timed training steps per path and round
    workers: int = 2  # baseline DataLoader worker processes
    threads: int = 2  # torch intra-op threads of the main process
    min_seconds: float = 2.0  # loader-only measurements repeat whole epochs for at least this long


QUICK = Settings(images=28, batch=4, size=64, rounds=1, train_batches=1, min_seconds=0.1)


@dataclass(frozen=True)
class InferenceSettings:
    photos: int = 200  # real photos for `detect`
    crops: int = 512  # face crops per batch-predict measurement
    rounds: int = 2  # torch and ONNX Runtime alternate
    requests: int = 200  # server requests in total (bounded by max_seconds too)
    clients: int = 8
    max_seconds: float = 60.0


INFERENCE_QUICK = InferenceSettings(photos=4, crops=16, rounds=1, requests=16, max_seconds=20.0)


def run_prepare_speed(s: Settings, data_root: Path, work: Path) -> dict:
    """bench/prepare_speed.py in its own process (no torch there, so its workers start fast); its image sets stay
    in `work` and today's cache of the 384x512 set in work/cache-competition-0."""
    out = work / "prepare.json"
    cmd = [sys.executable, str(BENCH / "prepare_speed.py"), "--images", str(s.images), "--data", str(data_root),
           "--work", str(work), "--json", str(out)]
    subprocess.run(cmd, check=True)
    return json.loads(out.read_text())


class BaselineDataset(Dataset):
    """The competition baseline's dataset: open the JPEG with PIL and transform it, per sample, every epoch."""

    def __init__(self, paths: list[Path], labels: list[int], transform):
        self.paths, self.labels, self.transform = paths, labels, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        return self.transform(Image.open(self.paths[i])), self.labels[i]


def baseline_loader(paths: list[Path], labels: list[int], s: Settings) -> DataLoader:
    transform = T.Compose([T.Resize((s.size, s.size), T.InterpolationMode.BILINEAR), T.ToTensor(),
                           T.Normalize(BASELINE_MEAN, BASELINE_STD)])
    return DataLoader(BaselineDataset(paths, labels, transform), batch_size=s.batch, shuffle=True,
                      num_workers=s.workers, drop_last=True)


def build_training(s: Settings, seed: int = 0) -> tuple[nn.Module, StepParts]:
    """A fresh resnet18 with maskclf's default single head, loss, optimiser, schedule and `custom` augmentation."""
    torch.manual_seed(seed)
    spec, t = head_spec("single", "classes"), TrainCfg()
    model = build_model(ModelCfg(backbone="resnet18", pretrained=""), spec.heads)
    optimizer = build_optimizer(model, t.optimizer)
    dc = model.data_config
    parts = StepParts(criterion=build_criterion(spec.heads, t.loss, {}, {}, {}, False, False), optimizer=optimizer,
                      schedule=build_scheduler(optimizer, t.scheduler, t.epochs, 1000),
                      make_targets=lambda labels, ages: make_targets(labels, ages, spec),
                      augment=build_augment("custom", s.size, dc["mean"], dc["std"]), batch_size=s.batch)
    return model, parts


def loader_rate(epoch, min_seconds: float) -> float:
    """Images/s of `epoch()` (which returns the images it produced), repeating epochs for at least min_seconds."""
    n, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < min_seconds or n == 0:
        n += epoch()
    return n / elapsed


def maskclf_epoch(data, s: Settings, augment, counter) -> int:
    """One epoch of maskclf's loader: gathered uint8 batches, augmented on the CPU unless `augment` is None."""
    n, gen = 0, torch.Generator().manual_seed(0)
    for images, labels, _ in iterate(data, epoch_order(len(data), 0, next(counter)), s.batch, drop_last=True):
        if augment is not None:
            augment(images, generator=gen)
        n += len(labels)
    return n


def baseline_train_rate(model: nn.Module, optimizer, loader: DataLoader, s: Settings) -> float:
    """The baseline's training loop; the first 2 x workers batches (filling the prefetch queue) are not timed."""
    model.train()
    criterion, warm, n = nn.CrossEntropyLoss(), 2 * s.workers, 0
    for i, (x, y) in enumerate(loader):
        if i == warm:
            start = time.perf_counter()
        optimizer.zero_grad()
        loss = criterion(model(x)["cls"], y)
        loss.backward()
        optimizer.step()
        loss.item()
        n += len(y) if i >= warm else 0
        if i + 1 == warm + s.train_batches:
            break
    return n / (time.perf_counter() - start)


def maskclf_train_rate(model: nn.Module, parts: StepParts, data, s: Settings, epoch: int) -> float:
    """`train_one_epoch` over train_batches batches, after one untimed warm-up batch."""
    order, gen = epoch_order(len(data), 0, epoch), torch.Generator().manual_seed(epoch)
    train_one_epoch(model, data, order[:s.batch], parts, CPU, gen, desc=None)
    n = s.batch * s.train_batches
    start = time.perf_counter()
    train_one_epoch(model, data, order[:n], parts, CPU, gen, desc=None)
    return n / (time.perf_counter() - start)


def compute_rate(model: nn.Module, parts: StepParts, s: Settings) -> float:
    """The engine's training step on one random normalised batch already in memory (no loading, no augmentation)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(s.batch, 3, s.size, s.size, generator=gen)
    labels = torch.randint(0, 18, (s.batch,), generator=gen)
    ages = torch.full((s.batch,), float("nan"))
    model.train()

    def step() -> None:
        loss, _ = parts.criterion(model(x), parts.make_targets(labels, ages))
        loss.backward()
        parts.optimizer.step()
        parts.optimizer.zero_grad(set_to_none=True)
        parts.schedule.step_batch()
        float(loss.detach())

    step()
    start = time.perf_counter()
    for _ in range(s.train_batches):
        step()
    return s.batch * s.train_batches / (time.perf_counter() - start)


def predict_rate(model: nn.Module, data, s: Settings) -> float:
    """`predict_outputs` (eval transform + forward, batches of 256) over every cached crop."""
    dc = model.data_config
    start = time.perf_counter()
    predict_outputs(model, data, build_eval_transform(s.size, dc["mean"], dc["std"]), CPU, desc=None)
    return len(data) / (time.perf_counter() - start)


def build_measures(s: Settings, paths: list[Path], labels: list[int], data) -> dict:
    """Name -> zero-argument function returning images/s, for every measurement repeated in each round."""
    counter = itertools.count()
    loader = baseline_loader(paths, labels, s)
    (m_base, p_base), (m_ours, p_ours), (m_comp, p_comp) = (build_training(s) for _ in range(3))
    base_aug = build_augment("base", s.size, m_ours.data_config["mean"], m_ours.data_config["std"])
    return {
        "baseline_loader": lambda: loader_rate(lambda: sum(len(y) for _, y in loader), s.min_seconds),
        "maskclf_loader": lambda: loader_rate(lambda: maskclf_epoch(data, s, p_ours.augment, counter), s.min_seconds),
        "maskclf_loader_base": lambda: loader_rate(lambda: maskclf_epoch(data, s, base_aug, counter), s.min_seconds),
        "maskclf_gather": lambda: loader_rate(lambda: maskclf_epoch(data, s, None, counter), s.min_seconds),
        "compute_train": lambda: compute_rate(m_comp, p_comp, s),
        "maskclf_train": lambda: maskclf_train_rate(m_ours, p_ours, data, s, next(counter)),
        "baseline_train": lambda: baseline_train_rate(m_base, p_base.optimizer, loader, s),
        "maskclf_predict": lambda: predict_rate(m_comp, data, s),
    }


def run_rounds(measures: dict, rounds: int) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Every measurement once per round, starting each round one measurement later (interleaved, rotated);
    (images/s, 1-minute load average at the start) per measurement and round."""
    names, out, loads = list(measures), {k: [] for k in measures}, {k: [] for k in measures}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            loads[name].append(round(os.getloadavg()[0], 2))
            out[name].append(round(measures[name](), 2))
            print(f"round {r + 1}/{rounds} {name:20s} {out[name][-1]:10.1f} images/s, load {loads[name][-1]:.2f}",
                  flush=True)
    return out, loads


def machine() -> dict:
    cpuinfo = Path("/proc/cpuinfo")
    names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
             if line.startswith("model name")] if cpuinfo.exists() else []
    return {"cpu": names[0] if names else platform.processor(), "cores": os.cpu_count(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
            "platform": platform.platform()}


def summarise(rounds: dict[str, list[float]]) -> tuple[dict, dict, dict]:
    """(medians, ratios, targets met) from the per-round figures."""
    med = {k: round(statistics.median(v), 2) for k, v in rounds.items()}
    ratios = {
        "loader_maskclf_vs_baseline": med["maskclf_loader"] / med["baseline_loader"],
        "loader_maskclf_base_vs_baseline": med["maskclf_loader_base"] / med["baseline_loader"],
        "loader_gather_vs_baseline": med["maskclf_gather"] / med["baseline_loader"],
        "train_maskclf_vs_baseline": med["maskclf_train"] / med["baseline_train"],
        "compute_vs_maskclf_train": med["compute_train"] / med["maskclf_train"],
        "compute_vs_baseline_train": med["compute_train"] / med["baseline_train"],
    }
    ratios = {k: round(v, 3) for k, v in ratios.items()}
    targets = {"loader_maskclf_vs_baseline >= 20": ratios["loader_maskclf_vs_baseline"] >= 20,
               "compute_vs_maskclf_train <= 1.10": ratios["compute_vs_maskclf_train"] <= 1.10}
    return med, ratios, targets


ROWS = [  # (key, what) in table order
    ("baseline_loader", "baseline loader: PIL decode 384x512 + Resize + ToTensor + Normalize, DataLoader workers"),
    ("maskclf_loader", "maskclf loader: `iterate` over cached crops + batched `custom` augmentation (CPU)"),
    ("maskclf_loader_base", "maskclf loader with the `base` preset (resize + normalise: like-for-like with the baseline)"),
    ("maskclf_gather", "maskclf `iterate` alone (uint8 batches; what the CPU feeds when augmenting on a GPU)"),
    ("compute_train", "compute limit: training steps on random tensors in memory"),
    ("maskclf_train", "maskclf training: `train_one_epoch` (loader + `custom` augmentation + step)"),
    ("baseline_train", "baseline training: its DataLoader + forward/backward/step"),
    ("maskclf_predict", "maskclf batch predict: `predict_outputs` on cached crops (batch 256)"),
]


def render_markdown(report: dict) -> str:
    s, m, d = report["settings"], report["machine"], report["data"]
    lines = [
        "## Speed: baseline data path vs maskclf vs compute limit", "",
        f"Command: `{report['command']}`  ", f"Date: {report['date']}  ",
        f"Machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']} ({m['torch_threads']} threads), "
        f"Python {m['python']}; load average {report['load_start']} at start, {report['load_end']} at end.  ",
        f"Data: {d['images']} images from `{d['source']}` upscaled to {d['jpeg']} JPEG (mean {d['jpeg_kib']} KiB); "
        f"resnet18, input {s['size']}x{s['size']} for every path (the baseline's 128x96 replaced by the same "
        f"square size so the model cost is identical), batch {s['batch']}, baseline DataLoader "
        f"{s['workers']} workers, {s['rounds']} interleaved rounds (median shown), {s['train_batches']} timed "
        "training steps per path and round.", "",
        "| what | images/s (median) | rounds | 1-min load at each round |", "|---|---:|---|---|",
    ]
    for key, what in ROWS:
        lines.append(f"| {what} | {report['median'][key]:.1f} | {', '.join(f'{v:.1f}' for v in report['rounds'][key])} "
                     f"| {', '.join(f'{v:.1f}' for v in report['loads'][key])} |")
    lines += ["", f"`prepare` ({report['prepare']['detector']}, `bench/prepare_speed.py` in the same run; CPU ms per "
              "image counts the workers too, so 2000 / it is what 2 idle cores would do):", "",
              "| images | path | images/s | CPU ms/image | workers | fallback (no face) | load before |",
              "|---|---|---:|---:|---:|---:|---|"]
    for name in PREPARE_SETS:
        p = report["prepare"][name]
        for path, what in (("earlier", "earlier (full decode, detect <= 640 px, pad 0.3)"), ("current", "today")):
            for fig in p["rounds"][path]:
                lines.append(f"| {p['images']} {PREPARE_SETS[name]} | {what} | {fig['images_per_s']:.1f} | "
                             f"{fig['cpu_ms_per_image']:.2f} | {fig['workers']} | {fig['fallback']} | "
                             f"{', '.join(f'{x:.2f}' for x in fig['load_before'])} |")
    lines += ["", "| ratio | value |", "|---|---:|"]
    lines += [f"| {k} | {v:.2f} |" for k, v in report["ratios"].items()]
    lines += ["", "Targets: " + "; ".join(f"{k}: {'met' if ok else 'NOT met'}" for k, ok in report["targets"].items())]
    return "\n".join(lines) + "\n"


def write_section(md: Path, markers: tuple[str, str], body: str) -> None:
    """Replace the section between `markers` in `md` (or append it); the rest of the file is kept."""
    text = md.read_text() if md.exists() else "# Benchmark results\n"
    block = f"{markers[0]}\n{body}{markers[1]}"
    if markers[0] in text and markers[1] in text:
        head, rest = text.split(markers[0], 1)
        text = head + block + rest.split(markers[1], 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    md.write_text(text)


def write_results(report: dict, out_dir: Path) -> None:
    """`results/speed.json` (training) and/or `results/speed_inference.json`, and their sections of RESULTS.md."""
    (out_dir / "results").mkdir(parents=True, exist_ok=True)
    if "median" in report:
        (out_dir / "results" / "speed.json").write_text(json.dumps(report, indent=2) + "\n")
        write_section(out_dir / "RESULTS.md", MARKERS, render_markdown(report))
    if "inference" in report:
        (out_dir / "results" / "speed_inference.json").write_text(json.dumps(report, indent=2) + "\n")
        write_section(out_dir / "RESULTS.md", INFERENCE_MARKERS, render_inference(report))


def load_now() -> float:
    return round(os.getloadavg()[0], 2)


def default_model(cfg: Config) -> LoadedModel:
    """The default config's model with random weights (throughput does not depend on them)."""
    torch.manual_seed(0)
    spec = head_spec(cfg.model.head, cfg.model.age, bin_width=cfg.model.age_bin_width)
    model = build_model(cfg.model.model_copy(update={"pretrained": ""}), spec.heads).eval()
    model = model.to(memory_format=memory_format(cfg.train.channels_last))  # as `load_model` places it
    dc = model.data_config
    return LoadedModel(cfg, spec, {"main": (model, spec)}, Path("default-model.pt"), tuple(dc["mean"]),
                       tuple(dc["std"]))


def real_photos(root: Path, n: int) -> list[Path]:
    """`n` photos spread evenly over the sorted mask-real files."""
    files = sorted(p for p in root.rglob("*.jpg"))
    if not files:
        raise SystemExit(f"no photos under {root}")
    return [files[i] for i in np.linspace(0, len(files) - 1, min(n, len(files))).round().astype(int)]


def detect_rate(pipe: FacePipeline, photos: list[Path]) -> dict:
    """`detect` (decode + find every face + crop + classify) over the photos, after one untimed photo."""
    detect(pipe, photos[:1], progress=False)
    start = time.perf_counter()
    result = detect(pipe, photos, progress=False)
    wall = time.perf_counter() - start
    faces = sum(len(r["faces"]) for r in result.images)
    return {"photos": len(result.images), "faces": faces, "faces_per_s": round(faces / wall, 2),
            "photos_per_s": round(len(result.images) / wall, 2), "load": load_now()}


def contiguous_probs(loaded: LoadedModel, crops: np.ndarray) -> None:
    """The torch forward with model and inputs contiguous (`train.channels_last=false`; what `predict` ran on the
    CPU before it followed the checkpoint's channels-last setting there too)."""
    model = copy.deepcopy(loaded.members["main"][0]).to(memory_format=torch.contiguous_format)
    view = tta_views("none", loaded.cfg.train.input_size, loaded.mean, loaded.std)[0]
    predict_outputs(model, to_cropset(crops, [Record(path=Path(), key=str(i)) for i in range(len(crops))]), view,
                    CPU, 256, memory_format=torch.contiguous_format, desc=None)


def predict_rates(loaded: LoadedModel, crops: np.ndarray, onnx_path: Path, rounds: int) -> dict:
    """Batch prediction (batches of 256, eval transform included) with torch (also channels-last) and ONNX Runtime,
    plain and with `--tta hflip`, alternating; images/s and CPU ms per image."""
    exported = load_onnx(onnx_path)
    runs = {"torch": lambda: predict_probs(loaded, crops, CPU, progress=False),
            "torch_contiguous": lambda: contiguous_probs(loaded, crops),
            "onnxruntime": lambda: predict_probs(exported, crops, CPU, progress=False),
            "torch_hflip": lambda: predict_probs(loaded, crops, CPU, tta="hflip", progress=False),
            "onnxruntime_hflip": lambda: predict_probs(exported, crops, CPU, tta="hflip", progress=False)}
    out = {name: {"rounds": [], "cpu_ms": [], "load": []} for name in runs}
    predict_probs(loaded, crops[:8], CPU, progress=False)  # warm-up
    predict_probs(exported, crops[:8], CPU, progress=False)
    for _ in range(rounds):
        for name, run_once in runs.items():
            out[name]["load"].append(load_now())
            start, cpu = time.perf_counter(), time.process_time()
            run_once()
            out[name]["rounds"].append(round(len(crops) / (time.perf_counter() - start), 2))
            out[name]["cpu_ms"].append(round(1000 * (time.process_time() - cpu) / len(crops), 2))
    for v in out.values():
        v["images_per_s"] = round(statistics.median(v["rounds"]), 2)
        v["cpu_ms_per_image"] = round(statistics.median(v["cpu_ms"]), 2)
    for name in ("torch", "onnxruntime"):  # cost of --tta hflip: per-round ratios of the times, median
        ratio = [a / b for a, b in zip(out[name]["rounds"], out[f"{name}_hflip"]["rounds"])]
        out[f"{name}_hflip"]["cost_vs_plain"] = round(statistics.median(ratio), 3)
    return out


def server_rates(pipe: FacePipeline, photo: bytes, s: InferenceSettings) -> dict:
    """Requests/s and latency of `POST /api/detect` from `clients` threads, on a free loopback port."""
    import uvicorn

    from maskclf.toolkit.serve import create_app

    server = uvicorn.Server(uvicorn.Config(create_app(pipe), host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    url, deadline, local = f"http://127.0.0.1:{port}/api/detect", time.monotonic() + s.max_seconds, threading.local()

    def one(_: int) -> float | None:
        if time.monotonic() > deadline:
            return None
        session = local.__dict__.setdefault("session", requests.Session())
        t0 = time.perf_counter()
        session.post(url, files={"file": ("photo.jpg", photo, "image/jpeg")}, timeout=30).raise_for_status()
        return time.perf_counter() - t0

    try:
        start = time.perf_counter()
        with ThreadPoolExecutor(s.clients) as pool:
            latencies = [t for t in pool.map(one, range(s.requests)) if t is not None]
        wall = time.perf_counter() - start
    finally:
        server.should_exit = True
        thread.join(timeout=30)
    ms = np.array(latencies) * 1000
    return {"requests": len(latencies), "clients": s.clients, "requests_per_s": round(len(latencies) / wall, 2),
            "p50_ms": round(float(np.percentile(ms, 50)), 1), "p95_ms": round(float(np.percentile(ms, 95)), 1),
            "load": load_now()}


def run_inference(s: InferenceSettings, photos_root: Path, work: Path) -> dict:
    """Detect, batch predict (torch vs ONNX Runtime) and serve figures for the default model."""
    cfg = Config()
    loaded = default_model(cfg)
    pipe = FacePipeline(loaded, detector_for(cfg.prepare), cfg.prepare, CPU)
    photos = real_photos(photos_root, s.photos)
    outcomes = [(p, process_image(p, pipe.detector, cfg.prepare)) for p in photos]
    found = [c.crop for _, c in outcomes if c.crop is not None]
    crops = np.resize(np.stack(found), (s.crops, *found[0].shape))  # real crops repeated up to the count
    with_face = next((p for p, c in outcomes if c.face is not None), photos[0])  # what the server is sent
    out = {"model": cfg.model.backbone, "input": cfg.train.input_size, "detector": cfg.prepare.detector,
           "photos_source": photos_root.name, "crops": len(crops)}
    out["predict"] = predict_rates(loaded, crops, write_onnx(loaded, work / "default.onnx"), s.rounds)
    print(f"predict {out['predict']}", flush=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # what `maskclf detect` and `maskclf serve` use by default (see load_pipeline)
    out["detect"] = detect_rate(pipe, photos)
    print(f"detect {out['detect']}", flush=True)
    out["serve"] = server_rates(pipe, with_face.read_bytes(), s)
    print(f"serve {out['serve']}", flush=True)
    torch.set_num_threads(threads)
    pr = out["predict"]
    out["targets"] = {f"onnxruntime predict >= {PREDICT_TARGET:g} images/s": pr["onnxruntime"]["images_per_s"] >= PREDICT_TARGET,
                      f"torch predict >= {PREDICT_TARGET:g} images/s": pr["torch"]["images_per_s"] >= PREDICT_TARGET,
                      "torch --tta hflip <= 2.1x plain": pr["torch_hflip"]["cost_vs_plain"] <= 2.1}
    return out


def render_inference(report: dict) -> str:
    i, m = report["inference"], report["machine"]
    p, d, v = i["predict"], i["detect"], i["serve"]
    lines = [
        "## Speed: using a model (detect, batch predict with torch and ONNX Runtime, serve)", "",
        f"Command: `{report['command']}`  ", f"Date: {report['date']}  ",
        f"Machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']}; batch predict with {m['torch_threads']} "
        "threads (ONNX Runtime the same), detect and serve with 1 (their default); load average "
        f"{report['load_start']} at start, {report['load_end']} at end.  ",
        f"Model: default config ({i['model']}, input {i['input']} px, random weights), detector {i['detector']}, "
        f"photos from `{i['photos_source']}`.", "",
        "| what | figure | 1-min load average |", "|---|---:|---|",
        f"| `detect` on {d['photos']} real photos ({d['faces']} faces): decode + detect + crop + classify | "
        f"{d['faces_per_s']:.1f} faces/s ({d['photos_per_s']:.1f} photos/s) | {d['load']} |",
    ]
    names = {"torch": "torch", "torch_contiguous": "torch, contiguous (`train.channels_last=false`)",
             "onnxruntime": "ONNX Runtime", "torch_hflip": "torch, `--tta hflip`",
             "onnxruntime_hflip": "ONNX Runtime, `--tta hflip`"}
    for name, what in names.items():
        r = p[name]
        cost = f"; {r['cost_vs_plain']:.2f}x the plain time" if "cost_vs_plain" in r else ""
        lines.append(f"| batch predict, {what}: {i['crops']} face crops, batches of 256 (rounds "
                     f"{', '.join(f'{x:.1f}' for x in r['rounds'])}; {r['cpu_ms_per_image']:.2f} CPU ms/image{cost}) "
                     f"| {r['images_per_s']:.1f} images/s | {', '.join(str(x) for x in r['load'])} |")
    lines.append(f"| `maskclf serve`: {v['requests']} `POST /api/detect` from {v['clients']} concurrent clients on "
                 f"127.0.0.1 | {v['requests_per_s']:.1f} requests/s, p50 {v['p50_ms']:.0f} ms, p95 "
                 f"{v['p95_ms']:.0f} ms | {v['load']} |")
    lines += ["", "Targets: " + "; ".join(f"{k}: {'met' if ok else 'NOT met'}" for k, ok in i["targets"].items())]
    return "\n".join(lines) + "\n"


def images_needed(s: Settings) -> int:
    """The baseline's training measurement needs its warm-up batches plus the timed ones in one epoch."""
    return s.batch * (2 * s.workers + s.train_batches)


def run(s: Settings, data_root: Path, work: Path) -> dict:
    """Prepare the 384x512 images and 200x200 photos both ways, then run the interleaved rounds; returns the report."""
    prep = run_prepare_speed(s, data_root, work)
    root, cfg = work / "competition", PrepareCfg()
    records = scan_train(root).records
    images, kept, _ = cached_crops(records, root, cfg, work / "cache-competition-0", progress=False)
    data = to_cropset(images, kept)
    measures = build_measures(s, [r.path for r in kept], [r.label for r in kept], data)
    rounds, loads = run_rounds(measures, s.rounds)
    med, ratios, targets = summarise(rounds)
    for name in PREPARE_SETS:
        ratios[f"prepare_{name}_today_vs_earlier"] = round(prep[name]["ratio_per_round"][0], 3)
        targets[f"prepare {name} >= 100 images/s"] = prep[name]["median_images_per_s"]["current"] >= 100
    return {"data": {"source": data_root.name, "images": len(data), "jpeg": "384x512",
                     "jpeg_kib": prep["jpeg_kib"]["competition"]},
            "prepare": {"detector": cfg.detector, "detect_side": cfg.detect_side, "crop": cfg.size,
                        **{name: prep[name] for name in PREPARE_SETS}},
            "rounds": rounds, "loads": loads, "median": med, "ratios": ratios, "targets": targets}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny run (a few batches, one round) for the smoke test")
    ap.add_argument("--part", default="all", choices=["all", "training", "inference"],
                    help="which measurements to run (default all)")
    ap.add_argument("--images", type=int, help="images to benchmark (whole people of 7; default 2000, quick 28)")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="dataset in the competition layout")
    ap.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS, help="real photos for the inference part")
    ap.add_argument("--threads", type=int, help="torch threads of the main process (default 2)")
    ap.add_argument("--out-dir", type=Path, default=BENCH, help="writes results/speed*.json and RESULTS.md here")
    args = ap.parse_args()
    s = QUICK if args.quick else Settings()
    s = replace(s, images=args.images or s.images, threads=args.threads or s.threads)
    if args.part != "inference" and s.images < images_needed(s):
        ap.error(f"--images {s.images} is too few for batch {s.batch}: need at least {images_needed(s)}")
    torch.set_num_threads(s.threads)
    load_start = [round(x, 2) for x in os.getloadavg()]
    report = {}
    with tempfile.TemporaryDirectory() as tmp:
        if args.part != "inference":
            report.update(run(s, args.data, Path(tmp)))
        if args.part != "training":
            report["inference"] = run_inference(INFERENCE_QUICK if args.quick else InferenceSettings(), args.photos,
                                                Path(tmp))
    flags = [("--quick", args.quick), (f"--part {args.part}", args.part != "all"),
             (f"--images {args.images}", args.images), (f"--threads {args.threads}", args.threads)]
    report = {"command": " ".join(["python bench/speed.py"] + [f for f, on in flags if on]),
              "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              "machine": machine(), "load_start": load_start, "load_end": [round(x, 2) for x in os.getloadavg()],
              "settings": asdict(s), **report}
    write_results(report, args.out_dir)
    if "median" in report:
        print(render_markdown(report))
    if "inference" in report:
        print(render_inference(report))


if __name__ == "__main__":
    main()
