"""Smoke test of `bench/speed.py --quick`: it runs end to end on tiny data and writes its JSON and markdown section."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from maskclf.config import ModelCfg, PrepareCfg

SPEED = Path(__file__).resolve().parents[2] / "bench" / "speed.py"
MEASURES = {"baseline_loader", "maskclf_loader", "maskclf_loader_base", "maskclf_gather", "compute_train",
            "maskclf_train", "baseline_train", "maskclf_predict"}


def _bench_module(path: Path = SPEED):
    """A bench script imported as a module (bench/ is not a package)."""
    spec = importlib.util.spec_from_file_location(f"bench_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SPEED), *args], capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_speed_quick_writes_results_and_keeps_other_sections(tmp_path, tiny_data):
    (tmp_path / "RESULTS.md").write_text("# Benchmark results\n\n## Other benchmark\nkept\n")
    # One torch thread: kinder to a shared CI machine (threads that wait for each other slow down sharply).
    proc = _run("--quick", "--threads", "1", "--data", str(tiny_data), "--out-dir", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "results" / "speed.json").read_text())
    assert report["command"] == "python bench/speed.py --quick --threads 1"
    assert report["settings"]["threads"] == 1 and report["machine"]["torch_threads"] == 1
    assert report["data"] == {"source": "tiny", "images": 28, "jpeg": "384x512", "jpeg_kib": report["data"]["jpeg_kib"]}
    assert set(report["median"]) == MEASURES and set(report["rounds"]) == MEASURES
    assert all(v > 0 for v in report["median"].values())
    assert report["prepare"]["detector"] == PrepareCfg().detector
    for name in ("competition", "photos"):  # both paths on both image sets, each figure with its load and CPU time
        prep = report["prepare"][name]
        assert prep["images"] == 28 and set(prep["rounds"]) == {"earlier", "current"}
        for fig in prep["rounds"]["earlier"] + prep["rounds"]["current"]:
            assert fig["images_per_s"] > 0 and fig["cpu_ms_per_image"] > 0 and len(fig["load_before"]) == 3
            assert 0 <= fig["fallback"] <= 28
    assert set(report["loads"]) == MEASURES and all(len(v) == 1 for v in report["loads"].values())
    med = report["median"]
    assert report["ratios"]["compute_vs_maskclf_train"] == round(med["compute_train"] / med["maskclf_train"], 3)
    assert report["targets"]["compute_vs_maskclf_train <= 1.10"] == (report["ratios"]["compute_vs_maskclf_train"] <= 1.10)
    inference = json.loads((tmp_path / "results" / "speed_inference.json").read_text())["inference"]
    assert inference["model"] == ModelCfg().backbone and inference["detector"] == PrepareCfg().detector
    assert inference["detect"]["photos"] == 4 and inference["detect"]["faces_per_s"] >= 0
    assert set(inference["predict"]) == {"torch", "torch_contiguous", "onnxruntime", "torch_hflip", "onnxruntime_hflip"}
    assert all(v["images_per_s"] > 0 and v["cpu_ms_per_image"] > 0 and len(v["load"]) == 1
               for v in inference["predict"].values())
    assert {"cost_vs_plain"} <= set(inference["predict"]["torch_hflip"]) & set(inference["predict"]["onnxruntime_hflip"])
    assert inference["serve"]["requests"] == 16 and inference["serve"]["p95_ms"] >= inference["serve"]["p50_ms"] > 0
    md = (tmp_path / "RESULTS.md").read_text()
    assert "## Other benchmark\nkept\n" in md and "| maskclf batch predict" in md
    assert "| batch predict, ONNX Runtime" in md and "<!-- speed-inference:begin -->" in md

    _bench_module().write_results(report, tmp_path)  # a second run replaces the section instead of adding one
    again = (tmp_path / "RESULTS.md").read_text()
    assert again == md and again.count("<!-- speed:begin -->") == 1 and again.count("<!-- speed-inference:begin -->") == 1


def test_speed_refuses_too_few_images_before_any_work(tmp_path, tiny_data):
    proc = _run("--quick", "--images", "7", "--data", str(tiny_data), "--out-dir", str(tmp_path))
    assert proc.returncode == 2
    assert "--images 7 is too few for batch 4: need at least 20" in proc.stderr
    assert not (tmp_path / "results").exists()


def test_summarise_takes_medians_ratios_and_targets():
    speed = _bench_module()
    rounds = {k: [10.0, 12.0, 11.0] for k in MEASURES}
    rounds.update(baseline_loader=[100.0, 90.0, 110.0], maskclf_loader=[2500.0, 2000.0, 2200.0],
                  compute_train=[50.0, 50.0, 50.0], maskclf_train=[46.0, 48.0, 40.0])
    med, ratios, targets = speed.summarise(rounds)
    assert med["baseline_loader"] == 100.0 and med["maskclf_train"] == 46.0
    assert ratios["loader_maskclf_vs_baseline"] == 22.0 and ratios["compute_vs_maskclf_train"] == round(50 / 46, 3)
    assert targets == {"loader_maskclf_vs_baseline >= 20": True, "compute_vs_maskclf_train <= 1.10": True}


STEP_SPEED = SPEED.parent / "step_speed.py"


@pytest.mark.slow
def test_step_speed_quick_times_every_lever_against_the_contiguous_baseline(tmp_path):
    out = tmp_path / "step_speed.json"
    proc = subprocess.run([sys.executable, str(STEP_SPEED), "--quick", "--out", str(out)], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    levers = report["levers"]
    assert list(levers) == ["contiguous", "channels_last", "freeze_blocks2", "cached_blocks2", "size_16"]
    assert levers["contiguous"]["vs_contiguous"] == 1.0
    assert all(v["images_per_s"] > 0 and len(v["rounds"]) == len(v["load"]) == 1 for v in levers.values())
    assert "| `cached_blocks2` |" in proc.stdout


def test_the_cached_lever_runs_the_same_network_as_the_default_model():
    import torch

    from maskclf.models.heads import head_spec
    from maskclf.models.network import build_model

    module = _bench_module(STEP_SPEED)
    torch.manual_seed(0)
    model = build_model(ModelCfg(pretrained=""), head_spec("multihead", "classes").heads).eval()
    lower, upper = module._split(model)
    x = torch.randn(2, 3, 64, 64)
    full, split = model(x), upper(lower(x))
    assert full.keys() == split.keys() and all(torch.equal(full[k], split[k]) for k in full)
