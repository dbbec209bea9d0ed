import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, f1_score

from maskclf import __version__
from maskclf.utils.checkpoint import load_checkpoint
from maskclf.cli import main
from maskclf.training.fit import fit

def run(capsys, *argv) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def _csv(path: Path) -> list[dict]:
    with Path(path).open() as fh:
        return list(csv.DictReader(fh))


def test_train_predict_evaluate(tiny_args, capsys, tiny_data, tmp_path):
    rc, out, err = run(capsys, "train", tiny_data, "--quiet", *tiny_args(tmp_path, "train.epochs=2"))
    assert rc == 0, err
    run_dir = tmp_path / "exp"
    assert f"checkpoint {run_dir}/best.pt" in out and "stopped: max epochs" in out

    rc, out, err = run(capsys, "predict", run_dir / "best.pt", tiny_data / "eval", "--out", tmp_path / "sub.csv",
                       "--quiet")
    assert rc == 0, err
    assert f"submission: {tmp_path / 'sub.csv'} (56 rows)" in out
    info = [r["ImageID"] for r in _csv(tiny_data / "eval" / "info.csv")]
    sub = _csv(tmp_path / "sub.csv")
    assert [r["ImageID"] for r in sub] == info
    probs = _csv(tmp_path / "sub.probs.csv")
    assert [r["ImageID"] for r in probs] == info
    p = np.array([[float(r[f"p{c}"]) for c in range(18)] for r in probs])
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-4)
    assert [int(r["ans"]) for r in sub] == list(p.argmax(1))

    rc, out, err = run(capsys, "evaluate", tmp_path / "sub.csv", tiny_data / "eval" / "gt.csv", "--out",
                       tmp_path / "eval")
    assert rc == 0, err
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    gt = {r["ImageID"]: int(r["ans"]) for r in _csv(tiny_data / "eval" / "gt.csv")}
    y_true = [gt[i] for i in info]
    y_pred = [int(r["ans"]) for r in sub]
    assert report["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred), abs=1e-12)
    f1 = f1_score(y_true, y_pred, labels=list(range(18)), average="macro", zero_division=0)
    assert report["f1"] == pytest.approx(f1, abs=1e-12)
    assert f"macro F1 (18 classes) {f1:.4f}" in out

    rc, _, err = run(capsys, "predict", run_dir, tiny_data, "--out", tmp_path / "none.csv", "--tta", "none", "--quiet")
    assert rc == 0, err
    assert (tmp_path / "none.probs.csv").read_bytes() == (tmp_path / "sub.probs.csv").read_bytes()
    rc, _, err = run(capsys, "predict", run_dir, tiny_data, "--out", tmp_path / "flip.csv", "--tta", "hflip", "--quiet")
    assert rc == 0, err
    flip = np.array([[float(r[f"p{c}"]) for c in range(18)] for r in _csv(tmp_path / "flip.probs.csv")])
    assert flip.shape == p.shape and not np.allclose(flip, p)
    np.testing.assert_allclose(flip.sum(1), 1.0, atol=1e-4)


def test_run_folder_contents_and_names(tiny_args, capsys, tiny_data, tmp_path):
    for _ in range(2):
        rc, _, err = run(capsys, "train", tiny_data, "--quiet", *tiny_args(tmp_path, "train.epochs=2", "run.tensorboard=true"))
        assert rc == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp", "exp2"]
    run_dir = tmp_path / "exp2"
    for name in ("config.yaml", "split.json", "metrics.jsonl", "summary.json", "best.pt", "last.pt"):
        assert (run_dir / name).is_file(), name
    assert list((run_dir / "tb").glob("events.out.tfevents.*"))
    assert sorted(p.name for p in run_dir.glob("*.pt")) == ["best.pt", "last.pt"]
    s = json.loads((run_dir / "summary.json").read_text())
    assert s["version"] == __version__ and s["name"] == "exp2" and s["epochs_run"] == 2
    assert s["best_epoch"] in (0, 1) and 0 <= s["val_f1"] <= 1
    assert set(s["val_attributes"]) == {"mask", "gender", "age"}
    assert all(0 <= v["f1"] <= 1 for v in s["val_attributes"].values())
    assert s["wall_seconds"] > 0 and s["images_per_s"] > 0 and s["skipped_images"] == {}
    assert s["train_images"] + s["val_images"] == 168
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2]
    assert load_checkpoint(run_dir / "best.pt")["epoch"] == s["best_epoch"]


def test_early_stopping_stops_after_patience_epochs(tiny_args, capsys, tiny_data, tmp_path):
    # Frozen backbone (BatchNorm statistics fixed) and lr 0: every epoch scores the same.
    rc, out, err = run(capsys, "train", tiny_data, "--quiet",
                       *tiny_args(tmp_path, "train.epochs=6", "train.patience=2", "model.freeze=all",
                             "train.optimizer.params.lr=0"))
    assert rc == 0, err
    s = json.loads((tmp_path / "exp" / "summary.json").read_text())
    assert s["epochs_run"] == 3 and s["best_epoch"] == 0
    assert s["members"]["main"]["stopped"] == "early stop: no val improvement for 2 epochs"
    assert "stopped: early stop: no val improvement for 2 epochs" in out


def test_time_budget_stops_after_the_epoch_that_crosses_it(tiny_args, capsys, tiny_data, tmp_path):
    rc, out, err = run(capsys, "train", tiny_data, "--quiet",
                       *tiny_args(tmp_path, "train.epochs=5", "train.time_budget_min=0.0001",
                             "train.fit_budget=false"))  # the hard stop alone
    assert rc == 0, err
    s = json.loads((tmp_path / "exp" / "summary.json").read_text())
    assert s["epochs_run"] == 1
    assert s["members"]["main"]["stopped"] == "time budget reached after epoch 1"


def test_broken_train_image_is_skipped_and_reported(tiny_args, capsys, tiny_data, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(tiny_data / "train", root / "train")
    broken = sorted((root / "train" / "images").iterdir())[0] / "mask2.jpg"
    broken.write_bytes(b"\xff\xd8\xff truncated")
    rc, out, err = run(capsys, "train", root, "--quiet",
                       *tiny_args(tmp_path / "runs", "train.epochs=1", f"data.cache_dir={tmp_path / 'crops'}"))
    assert rc == 0, err
    s = json.loads((tmp_path / "runs" / "exp" / "summary.json").read_text())
    assert list(s["skipped_images"]) == [str(broken)]
    assert s["train_images"] + s["val_images"] == 167
    assert "1 unreadable skipped" in out


def test_resume_and_config_changes_do_not_mix(capsys, tmp_path):
    rc, _, err = run(capsys, "train", "--resume", tmp_path, "--set", "train.epochs=3")
    assert rc == 2 and "--resume continues a run with its saved config" in err
    rc, _, err = run(capsys, "train")
    assert rc == 2 and "give DATA_DIR, or --resume RUN_DIR" in err



@pytest.mark.parametrize("extra", [
    ["train.augment.mixup=0.5", "train.augment.cutmix=0.5"],
    ["train.sampler.name=weighted_class"],
    ["train.sampler.name=oversample", "model.head=multihead"],
    ["train.accum_steps=2", "train.clip_grad=1.0"],
], ids=["mixup-cutmix", "weighted-sampler", "oversample-multihead", "accum-clip"])
def test_training_options_run_one_epoch(tiny_cfg, extra, tmp_path):
    r = fit(tiny_cfg(tmp_path, "train.epochs=1", *extra), progress=False)
    rows = [json.loads(line) for line in (r.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and np.isfinite(rows[0]["train/loss"])
    assert r.summary["epochs_run"] == 1 and r.val_probs.shape == (r.summary["val_images"], 18)


def test_ema_weights_are_the_ones_validated_and_saved(tiny_cfg, tmp_path):
    r = fit(tiny_cfg(tmp_path, "train.epochs=1", "train.ema=0.5", "model.head=single"), progress=False)
    best = load_checkpoint(r.checkpoint)["models"]["main"]
    raw = load_checkpoint(r.run_dir / "last.pt")["models"]["main"]  # the trained (non-averaged) weights
    key = "heads.cls.weight"
    assert not torch.equal(best[key], raw[key])
    assert r.summary["techniques"]["ema"] == 0.5


def test_freeze_then_unfreeze(tiny_cfg, tmp_path):
    single = "model.head=single"
    frozen = fit(tiny_cfg(tmp_path, "train.epochs=1", single, "model.freeze=all"), progress=False)
    thawed = fit(tiny_cfg(tmp_path, "train.epochs=2", single, "model.freeze=all",
                      "model.unfreeze_epoch=1"), progress=False)
    unfrozen = fit(tiny_cfg(tmp_path, "train.epochs=1", single), progress=False)
    w = {name: load_checkpoint(r.run_dir / "last.pt")["models"]["main"] for name, r in
         [("frozen", frozen), ("thawed", thawed), ("unfrozen", unfrozen)]}
    conv, bn, head = "backbone.conv1.0.weight", "backbone.bn1.running_mean", "heads.cls.weight"
    # Same seed, same start: a frozen backbone ends where a never-trained one starts.
    assert torch.equal(w["frozen"][conv], _init(tiny_cfg, tmp_path)[conv])
    assert torch.equal(w["frozen"][bn], _init(tiny_cfg, tmp_path)[bn])
    assert not torch.equal(w["frozen"][head], _init(tiny_cfg, tmp_path)[head])
    assert not torch.equal(w["thawed"][conv], w["frozen"][conv])  # unfrozen for its second epoch
    assert not torch.equal(w["unfrozen"][conv], w["frozen"][conv])


def _init(tiny_cfg, tmp_path) -> dict:
    """Weights of the single-head model fit() starts from (same seed, before any step)."""
    from maskclf.models.network import build_model
    from maskclf.utils.runtime import seed_everything
    from maskclf.models.heads import head_spec

    cfg = tiny_cfg(tmp_path, "model.head=single")
    seed_everything(cfg.train.seed)
    return build_model(cfg.model, head_spec("single", "classes").heads).state_dict()
