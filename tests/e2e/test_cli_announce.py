"""Model commands say what they are doing before the slow PyTorch import, and predict's options parse safely."""

import subprocess
import sys
from pathlib import Path

import pytest

from maskclf.cli import build_parser

# Runs the CLI with an import hook that stops the process the moment anything imports torch.
STOP_AT_TORCH = """
import os, sys
class StopAtTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch":
            sys.stderr.write("<<importing torch>>\\n")
            sys.stderr.flush()
            os._exit(3)
sys.meta_path.insert(0, StopAtTorch())
from maskclf.cli import main
sys.exit(main(sys.argv[1:]))
"""


def model_commands(tiny: Path, tmp: Path) -> dict[str, list[str]]:
    (tmp / "space.yaml").write_text("train.optimizer.params.lr: {type: float, low: 0.0001, high: 0.01}\n")
    return {
        "train": ["train", str(tiny)],
        "predict": ["predict", str(tmp / "run"), str(tiny / "eval")],
        "cv": ["cv", str(tiny), "-k", "2", "--dir", str(tmp / "cv")],
        "tune": ["tune", str(tiny), "--space", str(tmp / "space.yaml"), "--trials", "1"],
        "ensemble": ["ensemble", str(tmp / "a.probs.csv"), str(tmp / "b.probs.csv")],
        "demo": ["demo", "--out", str(tmp / "demo")],
        "synth-masks": ["synth-masks", str(tiny), str(tmp / "extra")],
        "detect": ["detect", str(tmp / "run"), str(tiny / "eval" / "images")],
        "export": ["export", str(tmp / "run"), "-o", str(tmp / "m.onnx")],
        "serve": ["serve", str(tmp / "run")],
        "report": ["report", str(tmp / "run")],
        "explain": ["explain", str(tmp / "run"), str(tmp / "photo.jpg")],
    }


@pytest.mark.parametrize("command", ["train", "predict", "cv", "tune", "ensemble", "demo", "synth-masks", "detect",
                                     "export", "serve", "report", "explain"])
def test_model_commands_announce_themselves_before_importing_torch(command, tiny_data, tmp_path):
    argv = model_commands(tiny_data, tmp_path)[command]
    proc = subprocess.run([sys.executable, "-c", STOP_AT_TORCH, *argv], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)
    lines = proc.stderr.splitlines()
    assert "<<importing torch>>" in lines, proc.stderr
    before = lines[:lines.index("<<importing torch>>")]
    assert any(line.startswith(f"maskclf {command}: ") and "loading PyTorch" in line for line in before), proc.stderr


def test_group_persons_before_the_eval_folder_does_not_swallow_it():
    parser = build_parser()
    args = parser.parse_args(["predict", "runs/exp", "--group-persons", "data/eval"])
    assert args.eval_dir == Path("data/eval") and args.group_persons
    args = parser.parse_args(["predict", "runs/exp", "data/eval", "--group-persons", "--group-similarity", "0.8"])
    assert args.group_persons and args.group_similarity == 0.8
    assert not parser.parse_args(["predict", "runs/exp", "data/eval"]).group_persons
