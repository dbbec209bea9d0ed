import csv
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from maskclf.cli import main
from maskclf.config import Config


def run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_check_tiny_ok(capsys, tiny_data):
    rc, out, _ = run(capsys, "check", str(tiny_data))
    assert rc == 0
    assert "train: 168 images, 24 people" in out and "eval: 56 images" in out
    assert out.rstrip().endswith("result: OK")


def test_check_takes_config_overrides(capsys, tiny_data):
    rc, out, _ = run(capsys, "check", str(tiny_data), "--no-decode", "--set", "data.age_bounds=[30,58]",
                     "--set", "data.label_fixes=none")
    assert rc == 0
    assert "wear/male/30-57" in out and "label fixes (none)" in out


def test_check_fatal_problems_exit_non_zero(capsys, tmp_path, tiny_data):
    root = tmp_path / "data"
    shutil.copytree(tiny_data / "train" / "images" / "000008_male_Black_26", root / "train" / "images" / "000008_male_Black_26")
    with (root / "train" / "train.csv").open("w", newline="") as fh:
        csv.writer(fh).writerows([["id", "gender", "race", "path"], ["000008", "male", "Black", "000008_male_Black_26"]])
    rc, out, _ = run(capsys, "check", str(root))
    assert rc == 1
    assert "missing column(s) ['age']" in out and str(root / "train" / "train.csv") in out
    assert out.rstrip().endswith("result: FAILED (fatal problems above)")


def test_check_not_a_dataset_is_a_user_error(capsys, tmp_path):
    rc, out, err = run(capsys, "check", str(tmp_path))
    assert rc == 2 and out == ""
    assert err.startswith("error: ") and "neither train/train.csv nor eval/info.csv found" in err


def test_config_show_prints_resolved_config(capsys, tmp_path):
    rc, out, _ = run(capsys, "config", "show")
    assert rc == 0 and yaml.safe_load(out) == Config().to_dict()
    exp = tmp_path / "exp.yaml"
    exp.write_text("train:\n  epochs: 3\nmodel:\n  head: multihead\n")
    rc, out, _ = run(capsys, "config", "show", "-c", str(exp), "--set", "train.epochs=4", "-s", "data.age_bounds=[30,59]")
    shown = yaml.safe_load(out)
    assert rc == 0
    assert (shown["train"]["epochs"], shown["model"]["head"], shown["data"]["age_bounds"]) == (4, "multihead", [30, 59])
    assert shown["train"]["batch_size"] == Config().train.batch_size


def test_config_show_rejects_unknown_keys_and_bad_types(capsys):
    rc, out, err = run(capsys, "config", "show", "--set", "train.epoch=3")
    assert rc == 2 and out == ""
    assert "unknown key 'train.epoch'" in err and "epochs" in err
    rc, _, err = run(capsys, "config", "show", "--set", "train.epochs=lots")
    assert rc == 2 and "'train.epochs'" in err and "lots" in err


def test_installed_command_runs_check(tiny_data):
    exe = Path(sys.executable).with_name("maskclf")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "maskclf"]
    proc = subprocess.run(cmd + ["check", str(tiny_data), "--no-decode"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "result: OK" in proc.stdout


def test_prepare_names_and_rebuilds_a_torn_cache_index(capsys, tmp_path, tiny_data):
    args = ("prepare", str(tiny_data), "--no-detect", "--splits", "eval", "--set", f"data.cache_dir={tmp_path}")
    assert run(capsys, *args)[0] == 0
    index = next(tmp_path.rglob("index.json"))
    index.write_text(index.read_text()[:100])
    rc, out, _ = run(capsys, *args)
    assert rc == 0 and "56 new" in out
    assert f"repaired: {index}: face cache index is damaged" in out


@pytest.mark.parametrize("override, message", [
    ("train.optimizer.params.lrr=0.1", "train.optimizer: optimizer 'adamw': unknown param(s) ['lrr']; valid params: ["),
    ("train.optimizer.params.lr=fast", "param 'lr' must be a number (default 0.001), got 'fast'"),
    ("train.optimizer.name=adamx", "unknown optimizer 'adamx'; valid names: ['adam', 'adamp', 'adamw',"),
    ("train.augment.preset=strng", "train.augment: unknown augment preset 'strng'; valid presets: ["),
    ("train.augment.params.hflip=0.5", "train.augment:"),
    ("train.scheduler.params.eta=1", "train.scheduler: scheduler 'cosine': unknown param(s) ['eta']"),
    ("train.sampler.name=balanced", "train.sampler: unknown sampler 'balanced'; valid names: ["),
    ("train.loss.params.gama=2", "train.loss / train.head_losses: loss 'ce': unknown param(s) ['gama']"),
    ("model.head_weights.mask2=1", "'model.head_weights': Value error, unknown head(s) ['mask2']; valid heads: ["),
])
def test_config_show_rejects_bad_names_params_and_values(capsys, override, message):
    rc, out, err = run(capsys, "config", "show", "--set", override)
    assert rc == 2 and out == ""
    assert message in err


def test_every_command_checks_the_config_before_reading_data(capsys, tmp_path):
    missing = str(tmp_path / "no-such-data")
    for argv in (["train", missing], ["prepare", missing], ["check", missing], ["cv", missing]):
        rc, _, err = run(capsys, *argv, "--set", "train.optimizer.params.lrr=0.1")
        error = err[err.index("error:"):]  # after the model commands' opening line, which names the folder
        assert rc == 2 and "unknown param(s) ['lrr']" in error and "no-such-data" not in error, (argv, err)
