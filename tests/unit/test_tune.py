import csv
import multiprocessing
import time
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
import yaml

from maskclf.toolkit import tune as tune_mod
from maskclf.config import Config, ConfigError, load_config
from maskclf.toolkit.tune import apply_params, check_space, config_changes, load_space, suggest, tune
from maskclf.toolkit.tune_storage import Retry, mask_url, open_storage, retry_of


def write_space(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


def test_load_space_reads_exponent_floats_and_keeps_order(tmp_path):
    space = load_space(write_space(tmp_path, (
        "train.optimizer.name: {type: categorical, choices: [sgd, adamw]}\n"
        "train.optimizer.params.lr: {type: float, low: 1e-4, high: 1e-2, log: true}\n")))
    assert list(space) == ["train.optimizer.name", "train.optimizer.params.lr"]
    assert space["train.optimizer.params.lr"]["low"] == 1e-4


@pytest.mark.parametrize("text, message", [
    ("a.b: {type: uniform, low: 0, high: 1}", "type one of ['float', 'int', 'categorical']"),
    ("a.b: {type: float, low: 1, high: 1}", "needs numbers low < high, found low=1 high=1"),
    ("a.b: {type: float, low: 0, high: 1, log: true}", "log: true needs low > 0"),
    ("a.b: {type: int, low: 0, high: 4, choices: [1]}", "unknown field(s) ['choices']"),
    ("a.b: {type: categorical, choices: []}", "needs choices"),
    ("a.b: {type: categorical, choices: [[30, 60]]}", "plain values"),
    ("{}", "the search space is empty"),
])
def test_load_space_rejects_bad_specs_naming_key_and_file(tmp_path, text, message):
    with pytest.raises(ConfigError) as err:
        load_space(write_space(tmp_path, text))
    assert message in str(err.value) and "space.yaml" in str(err.value)


def test_check_space_names_a_key_that_is_not_in_the_config():
    with pytest.raises(ConfigError, match=r"search space key 'train.lr' = 0.1: .*unknown key 'train.lr'"):
        check_space(Config(), {"train.lr": {"type": "float", "low": 0.1, "high": 0.2}})


def test_check_space_rejects_a_range_end_outside_the_config_limits():
    with pytest.raises(ConfigError, match=r"'train.augment.mixup' = 1.5: .*less than or equal to 1"):
        check_space(Config(), {"train.augment.mixup": {"type": "float", "low": 0.0, "high": 1.5}})
    with pytest.raises(ConfigError, match=r"'model.head' = 'twin'"):
        check_space(Config(), {"model.head": {"type": "categorical", "choices": ["single", "twin"]}})


def test_apply_params_in_order_new_named_choice_starts_from_empty_params():
    cfg = apply_params(Config(), {"train.optimizer.name": "sgd", "train.optimizer.params.lr": 0.05})
    assert (cfg.train.optimizer.name, cfg.train.optimizer.params) == ("sgd", {"lr": 0.05})
    assert Config().train.optimizer.params["weight_decay"] == 0.01  # defaults untouched


def test_suggest_samples_each_type_under_its_dotted_name():
    space = {"train.epochs": {"type": "int", "low": 2, "high": 8, "step": 2},
             "model.drop_rate": {"type": "float", "low": 0.0, "high": 0.4, "step": 0.1},
             "model.head": {"type": "categorical", "choices": ["single", "multihead"]}}
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        params = suggest(study.ask(), space)
        assert params["train.epochs"] in (2, 4, 6, 8) and params["model.head"] in ("single", "multihead")
        assert round(params["model.drop_rate"] * 10, 6) == int(round(params["model.drop_rate"] * 10))


def test_config_changes_round_trip_through_yaml(tmp_path):
    cfg = load_config(overrides=["train.epochs=3", "train.optimizer.name=sgd", "train.optimizer.params.lr=0.05",
                                 "data.root=/some/data", "model.head=single"])
    changes = config_changes(cfg)
    assert changes == {"model": {"head": "single"},
                       "train": {"epochs": 3, "optimizer": {"name": "sgd", "params": {"lr": 0.05}}}}
    path = tmp_path / "best.yaml"
    path.write_text(yaml.safe_dump(changes))
    again = load_config([path])
    again.data.root = cfg.data.root
    assert again == cfg


def fake_fit(scores_by_call: list[list[float]]):
    """Stands in for fit(): the k-th call reports these per-epoch val scores, then returns the best of them."""
    calls = []

    def fit(cfg, progress=True, run_dir=None, on_epoch=None):
        scores = scores_by_call[len(calls)]
        calls.append(cfg)
        run_dir.mkdir(parents=True)
        (run_dir / "config.yaml").write_text(cfg.to_yaml())
        for epoch, s in enumerate(scores):
            on_epoch("main", epoch, s)
        return SimpleNamespace(best_f1=max(scores), best_epoch=scores.index(max(scores)))

    return fit, calls


def base_cfg(tmp_path: Path) -> Config:
    return load_config(overrides=[f"run.out_dir={tmp_path / 'runs'}", "train.epochs=3"])


LR_SPACE = {"train.optimizer.params.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}}


def test_tune_writes_best_yaml_and_trials_table_and_prunes_below_median(tmp_path, monkeypatch):
    fit, calls = fake_fit([[0.3, 0.5, 0.6]] * 4 + [[0.9, 0.9, 0.95], [0.2, 0.1, 0.9]])
    monkeypatch.setattr(tune_mod, "fit", fit)
    r = tune(base_cfg(tmp_path), LR_SPACE, trials=6, study_name="s", progress=False)
    assert r.counts == {"complete": 5, "pruned": 1}
    assert r.storage == f"sqlite:///{tmp_path / 'runs' / 'tune.db'}"
    assert r.best_value == pytest.approx(0.95)
    best = load_config([r.best_yaml])
    assert best.train.optimizer.params["lr"] == pytest.approx(r.best_params["train.optimizer.params.lr"])
    assert best.train.epochs == 3 and best.run.out_dir == tmp_path / "runs"
    assert best.train.optimizer.params["lr"] == calls[4].train.optimizer.params["lr"]
    with r.trials_csv.open() as fh:
        rows = list(csv.DictReader(fh))
    assert [row["state"] for row in rows] == ["COMPLETE"] * 5 + ["PRUNED"]
    assert rows[5]["last_step"] == "1"  # stopped after the second epoch: 0.1 < median 0.5
    assert rows[4]["run_dir"] == str(tmp_path / "runs" / "s" / "trial4") and rows[4]["best_epoch"] == "2"
    assert r.history_png is not None and r.history_png.stat().st_size > 0


def test_tune_continues_a_study_in_the_same_storage(tmp_path, monkeypatch):
    fit, _ = fake_fit([[0.4], [0.5]])
    monkeypatch.setattr(tune_mod, "fit", fit)
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    tune(base_cfg(tmp_path), LR_SPACE, trials=1, study_name="s", storage=storage, progress=False)
    r = tune(base_cfg(tmp_path), LR_SPACE, trials=1, study_name="s", storage=storage, progress=False)
    assert r.counts == {"complete": 2} and (tmp_path / "runs" / "s" / "trial1").is_dir()
    assert not (tmp_path / "runs" / "tune.db").exists()


def test_tune_refuses_a_new_study_over_old_trial_runs(tmp_path, monkeypatch):
    fit, _ = fake_fit([[0.4]])
    monkeypatch.setattr(tune_mod, "fit", fit)
    tune(base_cfg(tmp_path), LR_SPACE, trials=1, study_name="s", storage=f"sqlite:///{tmp_path / 'a.db'}",
         progress=False)
    with pytest.raises(ValueError, match="already holds trial runs"):
        tune(base_cfg(tmp_path), LR_SPACE, trials=1, study_name="s", storage=f"sqlite:///{tmp_path / 'b.db'}",
             progress=False)


def test_tune_checks_the_space_before_any_trial(tmp_path, monkeypatch):
    fit, calls = fake_fit([[0.4]])
    monkeypatch.setattr(tune_mod, "fit", fit)
    with pytest.raises(ConfigError, match="'train.nope'"):
        tune(base_cfg(tmp_path), {"train.nope": {"type": "int", "low": 1, "high": 2}}, trials=1, progress=False)
    assert calls == [] and not (tmp_path / "runs").exists()


def test_max_trials_caps_the_study_across_calls(tmp_path, monkeypatch):
    fit, calls = fake_fit([[0.4], [0.5], [0.6]])
    monkeypatch.setattr(tune_mod, "fit", fit)
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    r = tune(base_cfg(tmp_path), LR_SPACE, trials=5, study_name="s", storage=storage, progress=False, max_trials=2)
    assert r.counts == {"complete": 2} and r.wrote_best
    r = tune(base_cfg(tmp_path), LR_SPACE, trials=5, study_name="s", storage=storage, progress=False, max_trials=2)
    assert r.counts == {"complete": 2} and len(calls) == 2  # a worker joining a full study runs nothing
    assert not r.wrote_best and r.best_yaml == tmp_path / "runs" / "s" / "best.yaml"


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning", "ignore:Heartbeat of storage")
def test_a_journal_trial_silent_past_the_grace_period_fails_and_is_queued_again(tmp_path):
    retry = Retry()
    storage = open_storage(f"journal:{tmp_path / 'study.journal'}", 1, retry)
    study = optuna.create_study(storage=storage)
    trial = study.ask()
    trial.suggest_float("x", 0.0, 1.0)
    storage.record_heartbeat(trial._trial_id)
    optuna.storages.fail_stale_trials(study)
    assert [t.state.name for t in study.trials] == ["RUNNING"]  # heard from just now
    storage.set_trial_system_attr(trial._trial_id, "maskclf_heartbeat", time.time() - 3)  # silent for 3 s > 2 s
    optuna.storages.fail_stale_trials(study)
    first, again = study.trials
    assert (first.state.name, again.state.name, retry.queued) == ("FAIL", "WAITING", 1)
    assert again.params == first.params and retry_of(again) == 0


def test_storage_urls_are_printed_without_passwords():
    assert mask_url("postgresql://tuner:pw@db.example:5432/optuna") == "postgresql://tuner:***@db.example:5432/optuna"
    assert mask_url("sqlite:///runs/tune.db") == "sqlite:///runs/tune.db"


def _open_at_once(url: str, barrier, results) -> None:
    barrier.wait()
    try:
        open_storage(url, 1, Retry())
        results.put("ok")
    except Exception as e:  # reported to the parent, which fails the test with it
        results.put(repr(e))


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_workers_opening_a_new_sqlite_study_together_all_get_it(tmp_path):
    ctx = multiprocessing.get_context("fork")
    url, n = f"sqlite:///{tmp_path / 'new.db'}", 6
    barrier, results = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_open_at_once, args=(url, barrier, results)) for _ in range(n)]
    for p in procs:
        p.start()
    got = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    assert got == ["ok"] * n  # before the creation lock, SQLite said "table ... already exists" to a loser
    assert optuna.get_all_study_summaries(open_storage(url, 1, Retry())) == []  # one usable, empty database


def test_a_storage_error_that_is_not_a_creation_race_is_raised_at_once(tmp_path, monkeypatch):
    from maskclf.toolkit import tune_storage

    sleeps = []
    monkeypatch.setattr(tune_storage.time, "sleep", sleeps.append)
    (tmp_path / "not-a-db").write_text("plain text, not SQLite" * 100)
    with pytest.raises(Exception, match="not a database"):
        open_storage(f"sqlite:///{tmp_path / 'not-a-db'}", 1, Retry())
    assert sleeps == []  # not retried: waiting cannot fix it
