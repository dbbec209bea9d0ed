"""`maskclf tune`: Optuna search over a declared space of config keys, one `fit()` per trial, with pruning."""

from __future__ import annotations

import csv
import io
import json
import os
import socket
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import optuna
import yaml

from maskclf.config import Config, ConfigError, load_config, load_yaml
from maskclf.toolkit.tune_storage import Retry, mask_url, open_storage, retry_of
from maskclf.training.fit import fit
from maskclf.utils.atomic import write_atomic

TYPES = {"float": {"low", "high", "log", "step"}, "int": {"low", "high", "log", "step"}, "categorical": {"choices"}}
# Trials that hold a place under --max-trials: all but failed ones (a failed one is re-run, or is a real error).
HELD = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.RUNNING,
        optuna.trial.TrialState.WAITING)
# Epoch 0 is the learning-rate warm-up: its score says little, so the median rule starts at epoch 1.
PRUNERS = {"median": lambda: optuna.pruners.MedianPruner(n_warmup_steps=1), "none": optuna.pruners.NopPruner}


@dataclass
class TuneResult:
    """A finished study: where it is stored, its best value and params, and the best config file."""

    study_name: str
    storage: str
    study_dir: Path
    best_value: float | None
    best_params: dict
    best_yaml: Path | None
    trials_csv: Path
    counts: dict[str, int]
    history_png: Path | None = None
    wrote_best: bool = False  # this worker wrote best.yaml (the one that finished the study's last trial)


def build_pruner(name: str) -> optuna.pruners.BasePruner:
    """A pruner by name: median (stop trials below the median of earlier ones at the same epoch) or none."""
    if name not in PRUNERS:
        raise ValueError(f"unknown pruner '{name}'; valid: {', '.join(PRUNERS)}")
    return PRUNERS[name]()


def _check_spec(key: str, spec, where: str) -> None:
    if not isinstance(spec, dict) or spec.get("type") not in TYPES:
        raise ConfigError(f"{where}: '{key}' must be a mapping with type one of {list(TYPES)}, found {spec!r}")
    extra = sorted(set(spec) - TYPES[spec["type"]] - {"type"})
    if extra:
        raise ConfigError(f"{where}: '{key}' ({spec['type']}) has unknown field(s) {extra}; "
                          f"valid: {sorted(TYPES[spec['type']])}")
    if spec["type"] == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices or any(isinstance(c, (list, dict)) for c in choices):
            raise ConfigError(f"{where}: '{key}' needs choices: a non-empty list of plain values, found {choices!r}")
        return
    low, high = spec.get("low"), spec.get("high")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)) or not low < high:
        raise ConfigError(f"{where}: '{key}' needs numbers low < high, found low={low!r} high={high!r}")
    if spec.get("log") and (low <= 0 or spec.get("step") is not None):
        raise ConfigError(f"{where}: '{key}' with log: true needs low > 0 and no step (found low={low}, "
                          f"step={spec.get('step')})")


def load_space(path: str | Path) -> dict[str, dict]:
    """Read a search-space YAML: dotted config key -> {type, low, high, log, step} or {type, choices}."""
    tree = load_yaml(path)
    if not tree:
        raise ConfigError(f"{path}: the search space is empty (expected dotted config keys -> specs)")
    for key, spec in tree.items():
        _check_spec(str(key), spec, str(path))
    return {str(k): v for k, v in tree.items()}


def apply_params(cfg: Config, params: dict) -> Config:
    """`cfg` with each dotted key set to its value, in order, validated like `--set key=value`."""
    return load_config(overrides=[f"{k}={json.dumps(v)}" for k, v in params.items()], base=cfg)


def check_space(cfg: Config, space: dict[str, dict]) -> None:
    """Raise ConfigError naming the key if any end of any range (or any choice) is not a valid config value."""
    for key, spec in space.items():
        values = spec["choices"] if spec["type"] == "categorical" else [spec["low"], spec["high"]]
        for v in values:
            try:
                apply_params(cfg, {key: int(v) if spec["type"] == "int" else v})
            except ConfigError as exc:
                raise ConfigError(f"search space key '{key}' = {v!r}: {exc}") from None


def suggest(trial: optuna.Trial, space: dict[str, dict]) -> dict:
    """Sample one value per key (the Optuna parameter name is the dotted config key)."""
    params = {}
    for key, s in space.items():
        if s["type"] == "categorical":
            params[key] = trial.suggest_categorical(key, s["choices"])
        elif s["type"] == "int":
            params[key] = trial.suggest_int(key, int(s["low"]), int(s["high"]), step=int(s.get("step") or 1),
                                            log=bool(s.get("log")))
        else:
            params[key] = trial.suggest_float(key, float(s["low"]), float(s["high"]), step=s.get("step"),
                                              log=bool(s.get("log")))
    return params


def config_changes(cfg: Config) -> dict:
    """The parts of `cfg` that differ from the defaults, as a YAML-ready tree (data.root left to the command line)."""
    tree = cfg.to_dict()
    tree["data"].pop("root", None)
    return _changes(Config().to_dict(), tree)


def _changes(base: dict, tree: dict) -> dict:
    out = {}
    for key, value in tree.items():
        old = base.get(key)
        if isinstance(value, dict) and isinstance(old, dict):
            if "name" in value and "params" in value and value["name"] != old.get("name"):
                out[key] = value  # a new {name, params} choice starts from empty params: keep all of them
            elif sub := _changes(old, value):
                out[key] = sub
        elif value != old:
            out[key] = value
    return out


def worker_name() -> str:
    """host:pid, recorded on each trial so a shared study's table says who ran what."""
    return f"{socket.gethostname()}:{os.getpid()}"


class OverTheCap(RuntimeError):
    """A first-run trial that workers starting at the same moment pushed past --max-trials."""


def _check_cap(trial: optuna.Trial, max_trials: int | None) -> None:
    """Fail a new trial numbered past the cap (re-runs of trials whose worker died always run)."""
    if max_trials is None:
        return
    trials = trial.study.get_trials(deepcopy=False)
    if retry_of(trials[trial.number]) is not None:
        return
    if sum(t.state in HELD for t in trials[:trial.number]) >= max_trials:
        trial.study.stop()
        raise OverTheCap(f"the study already holds --max-trials {max_trials} trials")


def _objective(cfg: Config, space: dict, study_dir: Path, progress: bool, max_trials: int | None):
    def objective(trial: optuna.Trial) -> float:
        trial.set_user_attr("worker", worker_name())
        _check_cap(trial, max_trials)
        params = suggest(trial, space)
        trial_cfg = apply_params(cfg, params)
        run_dir = study_dir / f"trial{trial.number}"
        trial.set_user_attr("run_dir", str(run_dir))
        print(f"trial {trial.number}: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                                    for k, v in params.items()), flush=True)
        offsets: dict[str, int] = {}

        def on_epoch(member: str, epoch: int, score: float) -> None:
            # Separate-head runs train members one after another: give each its own block of steps.
            step = offsets.setdefault(member, len(offsets) * trial_cfg.train.epochs) + epoch
            trial.report(score, step)
            if trial.should_prune():
                raise optuna.TrialPruned(f"val F1 {score:.4f} at epoch {epoch + 1} is below the median")

        result = fit(trial_cfg, progress=progress, run_dir=run_dir, on_epoch=on_epoch)
        trial.set_user_attr("best_epoch", result.best_epoch)
        trial.set_user_attr("config", config_changes(trial_cfg))
        return result.best_f1

    return objective


def _refuse_stale_runs(study: optuna.Study, study_dir: Path) -> None:
    """A new study must not write its trials over run folders left by an earlier study of the same name."""
    stale = sorted(study_dir.glob("trial*/config.yaml")) if study_dir.is_dir() else []
    if stale and not study.trials:
        raise ValueError(f"{study_dir} already holds trial runs ({stale[0].parent.name}, ...) but study "
                         f"'{study.study_name}' has no trials in its storage; use another --study or remove the folder")


def open_study(name: str, storage, pruner: str = "median") -> optuna.Study:
    """Create or join (load_if_exists) a maximising study in an Optuna storage (object or SQLAlchemy URL)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(study_name=name, storage=storage, direction="maximize",
                               pruner=build_pruner(pruner), load_if_exists=True)


def _held(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=HELD))


def _running(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))


def tune(cfg: Config, space: dict[str, dict], trials: int, study_name: str = "tune", storage: str | None = None,
         pruner: str = "median", progress: bool = True, max_trials: int | None = None,
         heartbeat: int = 60) -> TuneResult:
    """Run up to `trials` trials of the study here, and no more than `max_trials` in the study as a whole.

    Every worker rewrites trials.csv after each trial; the worker that finishes the study's last running
    trial writes best.yaml. With `max_trials`, a worker stays until no trial is running, re-running any
    whose worker stopped sending heartbeats, so the study ends whole even when a worker was killed.
    """
    if trials < 1 or (max_trials is not None and max_trials < 1):
        raise ValueError(f"--trials and --max-trials must be at least 1, got {trials} and {max_trials}")
    check_space(cfg, space)
    out_dir = Path(cfg.run.out_dir)
    study_dir = out_dir / study_name
    out_dir.mkdir(parents=True, exist_ok=True)
    storage = storage or f"sqlite:///{out_dir / 'tune.db'}"
    retry = Retry()
    study = open_study(study_name, open_storage(storage, heartbeat, retry), pruner)
    _refuse_stale_runs(study, study_dir)
    study_dir.mkdir(parents=True, exist_ok=True)
    mine: set[int] = set()

    def after_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        mine.add(trial.number)
        write_trials(study, study_dir)
        value = "pruned" if trial.state == optuna.trial.TrialState.PRUNED else (
            f"val F1 {trial.value:.4f}" if trial.value is not None else trial.state.name.lower())
        best = _best(study)
        again = retry_of(trial)
        value += "" if again is None else f" (re-run of trial {again}, whose worker stopped)"
        print(f"trial {trial.number}: {value}" + (f"   (best so far: trial {best.number}, {best.value:.4f})"
                                                  if best else ""), flush=True)

    callbacks = [after_trial]
    if max_trials is not None:
        callbacks.append(optuna.study.MaxTrialsCallback(max_trials, states=HELD))

    def run(n: int) -> None:
        study.optimize(_objective(cfg, space, study_dir, progress, max_trials), n_trials=n, callbacks=callbacks,
                       catch=(RuntimeError,), gc_after_trial=True)

    if max_trials is None or _held(study) < max_trials:
        run(trials)
    if max_trials is not None:
        _see_the_study_out(study, run, retry, heartbeat)
    return _result(study, mask_url(storage), study_dir, mine)


def _see_the_study_out(study: optuna.Study, run, retry: Retry, poll: float) -> None:
    """Wait until no trial is running; a trial whose worker died is failed by heartbeat and re-run here."""
    while _running(study):
        time.sleep(poll)
        retry.queued = 0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        waiting = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,))
        if retry.queued and waiting:  # this worker failed the stale trial, so this worker runs its re-run
            run(min(retry.queued, len(waiting)))


def _best(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    return max(done, key=lambda t: t.value) if done else None


def _last_finished(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    done = [t for t in study.get_trials(deepcopy=False) if t.datetime_complete is not None]
    return max(done, key=lambda t: (t.datetime_complete, t.number)) if done else None


def write_trials(study: optuna.Study, study_dir: Path) -> Path:
    """trials.csv: every trial of the study, with the worker that ran it and the trial it re-runs."""
    trials_csv = study_dir / "trials.csv"
    keys = sorted({k for t in study.trials for k in t.params})
    buf = io.StringIO(newline="")
    w = csv.writer(buf)
    w.writerow(["number", "state", "value", "best_epoch", "last_step", "seconds", "worker", "retry_of", "run_dir"]
               + keys)
    for t in study.trials:
        secs = t.duration.total_seconds() if t.duration else ""
        again = retry_of(t)
        w.writerow([t.number, t.state.name, "" if t.value is None else f"{t.value:.6f}",
                    t.user_attrs.get("best_epoch", ""), "" if t.last_step is None else t.last_step,
                    f"{secs:.1f}" if secs != "" else "", t.user_attrs.get("worker", ""),
                    "" if again is None else again, t.user_attrs.get("run_dir", "")]
                   + [t.params.get(k, "") for k in keys])
    write_atomic(trials_csv, lambda fh: fh.write(buf.getvalue().encode()))
    return trials_csv


def write_best(study: optuna.Study, study_dir: Path) -> Path | None:
    """best.yaml: the best trial's changes from the defaults (None when no trial has completed)."""
    best = _best(study)
    if best is None:
        return None
    best_yaml = study_dir / "best.yaml"
    text = (f"# best trial {best.number} of study '{study.study_name}': val macro F1 {best.value:.4f}\n"
            f"# changes from the defaults; use: maskclf train DATA_DIR -c {best_yaml.name}\n"
            + yaml.safe_dump(best.user_attrs["config"], sort_keys=False))
    write_atomic(best_yaml, lambda fh: fh.write(text.encode()))
    return best_yaml


def plot_history(study: optuna.Study, path: Path) -> Path | None:
    """Optuna's optimisation-history plot as a PNG (None when there is nothing completed to plot)."""
    if _best(study) is None:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        ax = optuna.visualization.matplotlib.plot_optimization_history(study)
    ax.figure.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(ax.figure)
    return path


def _result(study: optuna.Study, storage: str, study_dir: Path, mine: set[int]) -> TuneResult:
    trials_csv = write_trials(study, study_dir)
    last = _last_finished(study)
    wrote = not _running(study) and last is not None and last.number in mine
    best_yaml = write_best(study, study_dir) if wrote else None
    if best_yaml is None and (study_dir / "best.yaml").is_file():
        best_yaml = study_dir / "best.yaml"
    best = _best(study)
    counts: dict[str, int] = {}
    for t in study.trials:
        counts[t.state.name.lower()] = counts.get(t.state.name.lower(), 0) + 1
    return TuneResult(study.study_name, storage, study_dir, best.value if best else None,
                      dict(best.params) if best else {}, best_yaml, trials_csv, counts,
                      plot_history(study, study_dir / "history.png") if wrote else None, wrote and best is not None)


def format_tune(r: TuneResult) -> str:
    """Terminal summary of a study: trial counts, the best trial's params and where the outputs are."""
    lines = [f"study '{r.study_name}' ({r.storage}): " + ", ".join(f"{n} {s}" for s, n in sorted(r.counts.items()))]
    if r.best_value is None:
        lines.append("no trial has completed yet")
    else:
        lines.append(f"best val macro F1 {r.best_value:.4f} with")
        lines += [f"  {k} = {v}" for k, v in r.best_params.items()]
        if r.wrote_best:
            lines.append(f"best config: {r.best_yaml}")
        else:
            lines.append(f"best config: {r.study_dir / 'best.yaml'} (written by the worker that finishes the "
                         "study's last running trial)")
    lines.append(f"trials table: {r.trials_csv}")
    if r.history_png:
        lines.append(f"history plot: {r.history_png}")
    return "\n".join(lines)
