"""`maskclf cv`: person-grouped stratified k-fold, out-of-fold probabilities, fold models for ensembling."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from maskclf.config import Config, diff, validate
from maskclf.metrics import score_probs
from maskclf.data.train_data import load_train, regroup, truth_bounds_of
from maskclf.utils.formats import fold_dirs, read_probs, write_oof, write_probs
from maskclf.utils.rundir import IGNORED_KEYS, new_run_dir, read_summary, write_summary
from maskclf.training.fit import fit


@dataclass
class CVResult:
    """A finished cv run: its folder, out-of-fold F1 and report, per-fold F1 and checkpoints."""

    cv_dir: Path
    oof_f1: float
    fold_f1: list[float]
    report: dict
    fold_checkpoints: list[Path]


def _run_fold(cfg: Config, fold_dir: Path, fold: int, k: int, progress: bool) -> Path:
    """Train one fold unless it already finished; resume it if it was interrupted. Returns its val probs file."""
    probs_path = fold_dir / "val.probs.csv"
    if probs_path.is_file() and (fold_dir / "best.pt").is_file():
        print(f"fold {fold + 1}/{k}: done already ({fold_dir})")
        return probs_path
    if (fold_dir / "last.pt").is_file():
        print(f"fold {fold + 1}/{k}: resuming {fold_dir}")
        result = fit(None, resume=fold_dir, progress=progress)
    else:
        print(f"fold {fold + 1}/{k}: training")
        fold_cfg = cfg.model_copy(deep=True)
        fold_cfg.data.folds, fold_cfg.data.fold = k, fold
        result = fit(fold_cfg, progress=progress, run_dir=fold_dir)
    write_probs(probs_path, result.val_keys, result.val_probs, id_column="key")
    return probs_path


def _check_same_run(cv_dir: Path, cfg: Config, k: int) -> None:
    """Refuse to resume a cv folder with a different k or config: its finished folds would not match."""
    meta_path, cfg_path = cv_dir / "cv.json", cv_dir / "cv_config.yaml"
    if meta_path.is_file() and json.loads(meta_path.read_text())["k"] != k:
        raise ValueError(f"{cv_dir} holds a {json.loads(meta_path.read_text())['k']}-fold run; asked for k={k}")
    if cfg_path.is_file():
        saved = validate(yaml.safe_load(cfg_path.read_text()), str(cfg_path)).to_dict()
        changed = {key: ab for key, ab in diff(saved, cfg.to_dict()).items() if key not in IGNORED_KEYS}
        if changed:
            listed = "; ".join(f"{key}: {a!r} -> {b!r}" for key, (a, b) in list(changed.items())[:5])
            raise ValueError(f"{cv_dir} was started with a different config ({listed}); "
                             "resume it with the same settings or use a new --dir")


def cross_validate(cfg: Config, k: int, cv_dir: Path | None = None, progress: bool = True) -> CVResult:
    """Train k folds (each resumable) into `cv_dir`, then write oof.csv and the OOF report."""
    if k < 2:
        raise ValueError(f"cross-validation needs at least 2 folds, got -k {k}; "
                         "for one train/validation split use `maskclf train`")
    if cv_dir is None:
        cv_dir = new_run_dir(cfg.run.out_dir, cfg.run.name if cfg.run.name != "exp" else "cv")
    cv_dir = Path(cv_dir)
    cv_dir.mkdir(parents=True, exist_ok=True)
    cfg = cfg.model_copy(deep=True)
    cfg.data.folds, cfg.data.fold = k, None
    _check_same_run(cv_dir, cfg, k)
    (cv_dir / "cv.json").write_text(json.dumps({"k": k, "seed": cfg.data.split_seed}))
    (cv_dir / "cv_config.yaml").write_text(cfg.to_yaml())
    fold_probs: dict[str, np.ndarray] = {}
    fold_f1 = []
    for i, fold_dir in enumerate(fold_dirs(cv_dir)):
        fold_probs.update(zip(*read_probs(_run_fold(cfg, fold_dir, i, k, progress), id_column="key")))
        fold_f1.append(read_summary(fold_dir).get("val_f1", float("nan")))
    data = load_train(cfg.data)
    truth = truth_bounds_of(cfg.data)  # out-of-fold scores are in the truth's groups, as validation is
    records = regroup([r for r in data.records if r.key in fold_probs], truth)
    probs = np.stack([fold_probs[r.key] for r in records])
    labels = np.array([r.label for r in records])
    report = score_probs(labels, probs, truth)
    write_oof(cv_dir / "oof.csv", records, probs)
    (cv_dir / "oof_report.json").write_text(json.dumps(report, indent=1))
    summary = {"name": cv_dir.name, "kind": "cv", "k": k, "oof_f1": report["f1"], "oof_accuracy": report["accuracy"],
               "oof_attributes": {a: {"accuracy": v["accuracy"], "f1": v["f1"]} for a, v in report["attributes"].items()},
               "fold_f1": fold_f1, "backbone": cfg.model.backbone, "images": len(records),
               "wall_seconds": sum(read_summary(d).get("wall_seconds", 0.0) for d in fold_dirs(cv_dir)),
               "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
    write_summary(cv_dir, summary)
    return CVResult(cv_dir, report["f1"], fold_f1, report, [d / "best.pt" for d in fold_dirs(cv_dir)])
