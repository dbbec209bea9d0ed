"""bench/recipes.py: every row is a valid config, and the table renders from results rows."""

import importlib.util
import json
from pathlib import Path

import pytest

from maskclf.config import load_config

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def recipes():
    spec = importlib.util.spec_from_file_location("bench_recipes", REPO / "bench" / "recipes.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_row_is_a_valid_config_that_changes_the_base(recipes):
    base = load_config([], recipes.BASE).to_dict()
    for name, overrides in recipes.ROWS.items():
        cfg = load_config([], recipes.BASE + overrides).to_dict()
        if name != "multihead":  # the default head: this row only names it
            assert cfg != base, f"row {name} changes nothing"
    assert base["train"]["epochs"] == 1 and base["model"]["pretrained"] == "wheel"


def test_render_keeps_the_latest_row_and_marks_missing_ones(recipes, tmp_path, monkeypatch):
    attrs = {a: {"accuracy": 0.5, "f1": 0.5} for a in ("mask", "gender", "age")}
    row = {"what": "focal", "val_f1": 0.1, "eval_f1": 0.2, "eval_attributes": attrs, "train_minutes": 5.0,
           "epochs": 1, "date": "2026-01-01", "mask_real": {"mask_accuracy": 0.6}}
    results = tmp_path / "recipes.json"
    results.write_text(json.dumps([row, {**row, "eval_f1": 0.345}]))
    monkeypatch.setattr(recipes, "RESULTS", results)
    monkeypatch.setattr(recipes, "TABLE", tmp_path / "RECIPES.md")
    recipes.render()
    table = (tmp_path / "RECIPES.md").read_text()
    focal = next(line for line in table.splitlines() if line.startswith("| focal |"))
    assert "0.345" in focal and "0.200" not in focal  # a rerun replaces the earlier row
    assert "| cutmix |" in table and "not run yet" in table


def test_render_shows_every_seed_of_a_row(recipes, tmp_path, monkeypatch):
    attrs = {a: {"accuracy": 0.5, "f1": 0.5} for a in ("mask", "gender", "age")}
    row = {"what": "paint_masks", "val_f1": 0.1, "eval_f1": 0.611, "eval_attributes": attrs, "train_minutes": 5.0,
           "epochs": 1, "date": "2026-01-01", "mask_real": {"mask_accuracy": 0.6}}
    results = tmp_path / "recipes.json"
    results.write_text(json.dumps([row, {**row, "what": "paint_masks@seed1", "eval_f1": 0.622}]))
    monkeypatch.setattr(recipes, "RESULTS", results)
    monkeypatch.setattr(recipes, "TABLE", tmp_path / "RECIPES.md")
    recipes.render()
    line = next(x for x in (tmp_path / "RECIPES.md").read_text().splitlines() if x.startswith("| paint_masks |"))
    assert "0.611 / 0.622" in line and "| - / - |" in line  # no incorrect recall recorded
    assert recipes.label("paint_masks", 0) == "paint_masks" and recipes.label("paint_masks", 1) == "paint_masks@seed1"
