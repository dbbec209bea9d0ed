from pathlib import Path

import pytest
import yaml

from maskclf.config import Config, ConfigError, diff, load_config, parse_override, validate


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_defaults_live_in_code():
    cfg = load_config()
    assert cfg == Config()
    assert cfg.data.age_bounds == (30, 60)
    assert cfg.data.label_fixes == "competition"
    assert cfg.train.optimizer.name == "adamw"


def test_default_recipe_is_wheel_mobilenetv2_with_three_heads_and_custom_augmentation():
    cfg = Config()
    assert (cfg.model.backbone, cfg.model.pretrained, cfg.model.head) == ("mobilenetv2_100", "wheel", "multihead")
    assert cfg.train.augment.preset == "custom"
    assert cfg.train.optimizer.name == "adamw" and cfg.train.optimizer.params == {"lr": 1e-3, "weight_decay": 0.01}
    assert (cfg.train.batch_size, cfg.train.input_size, cfg.prepare.detector) == (64, 112, "yuface")


def test_yaml_file_holds_only_changes(tmp_path):
    f = write(tmp_path / "exp.yaml", "train:\n  epochs: 3\n  optimizer:\n    params: {lr: 0.01}\ndata:\n  age_bounds: [30, 58]\n")
    cfg = load_config([f])
    assert cfg.train.epochs == 3
    assert cfg.data.age_bounds == (30, 58)
    # untouched keys keep their defaults, including siblings inside params
    assert cfg.train.batch_size == Config().train.batch_size
    assert cfg.train.optimizer.params == {"lr": 0.01, "weight_decay": 0.01}


def test_files_apply_in_order_then_overrides(tmp_path):
    a = write(tmp_path / "a.yaml", "train: {epochs: 3, batch_size: 8}\n")
    b = write(tmp_path / "b.yaml", "train: {epochs: 4}\n")
    cfg = load_config([a, b], ["train.batch_size=16", "model.backbone=efficientnet_b0"])
    assert (cfg.train.epochs, cfg.train.batch_size, cfg.model.backbone) == (4, 16, "efficientnet_b0")


def test_set_values_are_parsed_as_yaml():
    cfg = load_config(overrides=["data.age_bounds=[30, 59]", "train.amp=false", "train.time_budget_min=1.5",
                                 "model.head_weights.age=2", "train.optimizer.params.lr=3e-4"])
    assert cfg.data.age_bounds == (30, 59)
    assert cfg.train.amp is False
    assert cfg.train.time_budget_min == 1.5
    assert cfg.model.head_weights == {"mask": 1.0, "gender": 1.0, "age": 2.0}
    assert cfg.train.optimizer.params == {"lr": 3e-4, "weight_decay": 0.01}


def test_exponent_floats_without_a_dot_are_floats(tmp_path):
    # plain YAML 1.1 would read 3e-4 as the string '3e-4' and hand it to the optimiser
    f = write(tmp_path / "lr.yaml", "train:\n  optimizer:\n    params: {lr: 3e-4}\n")
    assert load_config([f]).train.optimizer.params["lr"] == pytest.approx(3e-4)
    assert load_config(overrides=["train.loss.params.eps=1E-8"]).train.loss.params == {"eps": 1e-8}
    assert load_config(overrides=["run.name=1e"]).run.name == "1e"


def test_choosing_another_name_drops_old_params(tmp_path):
    cfg = load_config(overrides=["train.scheduler.name=step", "train.scheduler.params.step_size=2"])
    assert cfg.train.scheduler.params == {"step_size": 2}
    f = write(tmp_path / "sgd.yaml", "train:\n  optimizer: {name: sgd, params: {lr: 0.1}}\n")
    assert load_config([f]).train.optimizer.params == {"lr": 0.1}
    same = load_config(overrides=["train.optimizer.name=adamw"])
    assert same.train.optimizer.params == Config().train.optimizer.params


def test_unknown_key_names_key_and_valid_keys(tmp_path):
    with pytest.raises(ConfigError) as exc:
        load_config(overrides=["train.epoch=3"])
    msg = str(exc.value)
    assert "unknown key 'train.epoch'" in msg and "--set train.epoch=3" in msg
    assert "epochs" in msg and "batch_size" in msg  # the valid keys of that section
    f = write(tmp_path / "bad.yaml", "trian:\n  epochs: 3\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*unknown key 'trian'.*valid keys here: data, prepare, model, train, run"):
        load_config([f])
    with pytest.raises(ConfigError, match=r"unknown key 'train\.augment\.mixupp'.*cutmix"):
        load_config(overrides=["train.augment.mixupp=0.5"])


@pytest.mark.parametrize("override, key", [
    ("train.epochs=abc", "train.epochs"),
    ("train.epochs=0", "train.epochs"),
    ("data.val_fraction=1.5", "data.val_fraction"),
    ("data.val_fraction=0", "data.val_fraction"),
    ("prepare.detector=yolo", "prepare.detector"),
    ("model.head=triple", "model.head"),
    ("data.age_bounds=[60, 30]", "data.age_bounds"),
    ("data.age_bounds=[30]", "data.age_bounds"),
    ("train.epochs.max=3", "train.epochs"),
    ("train.head_losses.color={name: ce}", "train.head_losses"),
])
def test_wrong_types_and_values_name_the_key(override, key):
    with pytest.raises(ConfigError, match=f"'{key}"):
        load_config(overrides=[override])


def test_fold_must_be_inside_folds():
    assert load_config(overrides=["data.folds=3", "data.fold=2"]).data.fold == 2
    with pytest.raises(ConfigError, match=r"fold must be in 0\.\.2 \(folds=3\), got 3"):
        load_config(overrides=["data.folds=3", "data.fold=3"])


@pytest.mark.parametrize("text", ["train.epochs", "=3", "train.epochs=[1,"])
def test_malformed_override(text):
    with pytest.raises(ConfigError, match="override"):
        parse_override(text)


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config([tmp_path / "missing.yaml"])
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config([write(tmp_path / "broken.yaml", "train: {epochs: [\n")])
    with pytest.raises(ConfigError, match="top level must be a mapping, found list"):
        load_config([write(tmp_path / "list.yaml", "- 1\n- 2\n")])
    assert load_config([write(tmp_path / "empty.yaml", "")]) == Config()


def test_round_trip_through_yaml(tmp_path):
    cfg = load_config(overrides=["data.root=some/data", "data.age_bounds=[30,58]", "train.head_losses.age={name: focal, params: {gamma: 2}}",
                                 "data.extra=[more/data]", "run.name=rt"])
    f = write(tmp_path / "resolved.yaml", cfg.to_yaml())
    again = load_config([f])
    assert again == cfg
    assert validate(yaml.safe_load(cfg.to_yaml())) == cfg
    assert again.data.root == Path("some/data")


def test_load_on_top_of_a_base_config():
    base = load_config(overrides=["train.epochs=7"])
    cfg = load_config(overrides=["train.batch_size=4"], base=base)
    assert (cfg.train.epochs, cfg.train.batch_size) == (7, 4)


def test_diff_finds_changed_keys():
    a = Config().to_dict()
    b = load_config(overrides=["train.epochs=3", "train.optimizer.params.lr=0.1", "data.age_bounds=[30,58]"]).to_dict()
    assert diff(a, b) == {
        "data.age_bounds": ([30, 60], [30, 58]),
        "train.epochs": (10, 3),
        "train.optimizer.params.lr": (1e-3, 0.1),
    }
    assert diff(a, a) == {}
    assert diff({"x": {"y": 1}}, {"x": {}}) == {"x.y": (1, None)}


def test_assignment_is_validated():
    cfg = Config()
    with pytest.raises(ValueError):
        cfg.train.epochs = "many"
