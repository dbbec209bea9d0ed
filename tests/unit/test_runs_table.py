import csv
import json

import pytest

from maskclf.cli import main
from maskclf.config import load_config
from maskclf.toolkit.runs_table import format_runs_table, runs_table, write_runs_csv


def make_run(path, sets, summary=None, config_name="config.yaml"):
    path.mkdir(parents=True)
    # run.name, run.out_dir and data.cache_dir differ everywhere: they must never count as a difference.
    # Runs are ResNet18 runs (as their summaries say) unless `sets` choose another backbone.
    cfg = load_config([], [f"run.name={path.name}", f"run.out_dir={path.parent}", f"data.cache_dir={path}/c",
                           "model.backbone=resnet18", "model.pretrained=", *sets])
    (path / config_name).write_text(cfg.to_yaml())
    if summary is not None:
        (path / "summary.json").write_text(json.dumps(summary))
    return path


@pytest.fixture
def runs(tmp_path):
    """Two finished train runs, one interrupted, and a 2-fold cv run with its folds."""
    r = tmp_path / "runs"
    make_run(r / "exp", ["train.epochs=3"], {"val_f1": 0.5, "backbone": "resnet18", "wall_seconds": 120,
                                            "finished": "2024-05-01 10:00:00"})
    make_run(r / "exp2", ["train.epochs=5", "model.backbone=efficientnet_b0"],
             {"val_f1": 0.7, "backbone": "efficientnet_b0", "wall_seconds": 60})
    make_run(r / "exp3", ["train.epochs=3"])
    (r / "exp3" / "last.pt").write_bytes(b"")
    cv = make_run(r / "cv", ["train.epochs=3", "data.folds=2"], {"kind": "cv", "oof_f1": 0.6, "backbone": "resnet18"},
                  config_name="cv_config.yaml")
    (cv / "cv.json").write_text(json.dumps({"k": 2, "seed": 42}))
    for i, f1 in enumerate([0.55, 0.65]):
        make_run(cv / f"fold{i}", ["train.epochs=3", "data.folds=2", f"data.fold={i}"],
                 {"val_f1": f1, "backbone": "resnet18"})
    return r


def test_table_lists_train_runs_cv_runs_and_folds_with_only_the_differing_keys(runs):
    rows, varying = runs_table(runs)
    by_name = {r["name"]: r for r in rows}
    assert set(by_name) == {"exp", "exp2", "exp3", "cv", "cv/fold0", "cv/fold1"}
    assert varying == ["data.fold", "data.folds", "model.backbone", "train.epochs"]
    assert by_name["exp2"]["train.epochs"] == 5 and by_name["exp2"]["model.backbone"] == "efficientnet_b0"
    assert by_name["cv/fold1"]["data.fold"] == 1 and by_name["cv"]["data.fold"] is None
    assert by_name["cv"]["oof_f1"] == 0.6 and by_name["cv"]["val_f1"] is None
    assert by_name["exp"]["wall_min"] == 2.0 and by_name["exp"]["date"] == "2024-05-01 10:00:00"
    assert by_name["exp3"]["status"] == "interrupted" and by_name["exp"]["status"] == "done"


def test_table_sorts_by_val_f1_best_first_with_missing_scores_last(runs):
    text = format_runs_table(*runs_table(runs), sort="val_f1")
    header, *lines = text.splitlines()
    assert header.split() == ["name", "date", "backbone", "val_f1", "oof_f1", "wall_min", "status", "data.fold",
                              "data.folds", "train.epochs"]  # model.backbone is the backbone column
    assert [line.split()[0] for line in lines][:4] == ["exp2", "cv/fold1", "cv/fold0", "exp"]
    assert {line.split()[0] for line in lines[4:]} == {"cv", "exp3"}
    assert "0.7000" in lines[0] and "efficientnet_b0" in lines[0]


def test_table_sorts_numbers_by_value_not_text(runs):
    rows, varying = runs_table(runs)
    for r, epochs in zip(rows, [3, 10, 5, 3, 3, 3]):
        r["train.epochs"] = epochs
    order = [line.split()[0] for line in format_runs_table(rows, varying, "train.epochs").splitlines()[1:]]
    assert order.index(rows[1]["name"]) == len(rows) - 1  # 10 sorts after 5, not before it


def test_bad_sort_column_is_a_clear_error(runs):
    with pytest.raises(ValueError, match=r"cannot sort by 'f1'; columns: name, date, .*train.epochs"):
        format_runs_table(*runs_table(runs), sort="f1")


def test_csv_has_one_row_per_run(runs, tmp_path):
    rows, varying = runs_table(runs)
    write_runs_csv(tmp_path / "runs.csv", rows, varying)
    with (tmp_path / "runs.csv").open() as fh:
        got = list(csv.DictReader(fh))
    assert [r["name"] for r in got] == [r["name"] for r in rows]
    assert got[0].keys() >= {"val_f1", "train.epochs"}


def test_empty_or_missing_folder_has_no_rows(tmp_path):
    assert runs_table(tmp_path) == ([], [])
    assert runs_table(tmp_path / "missing") == ([], [])


def test_runs_cli_table_diff_and_errors(runs, capsys, tmp_path):
    assert main(["runs", "--dir", str(runs), "--sort", "val_f1", "--csv", str(tmp_path / "t.csv")]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[1].startswith("exp2 ") and (tmp_path / "t.csv").is_file()

    assert main(["runs", "--dir", str(runs), "diff", "exp", "exp2"]) == 0  # names under --dir
    lines = capsys.readouterr().out.splitlines()
    assert {line.split(":")[0] for line in lines} == {"model.backbone", "train.epochs", "run.name", "data.cache_dir"}
    assert "model.backbone: 'resnet18' -> 'efficientnet_b0'" in lines and "train.epochs: 3 -> 5" in lines
    assert main(["runs", "diff", str(runs / "cv" / "fold0"), str(runs / "cv" / "fold1")]) == 0
    assert "data.fold: 0 -> 1" in capsys.readouterr().out

    assert main(["runs", "--dir", str(runs), "--sort", "nope"]) == 2
    assert "cannot sort by 'nope'" in capsys.readouterr().err
    assert main(["runs", "diff", "exp"]) == 2
    assert "usage: maskclf runs [diff RUN_A RUN_B]" in capsys.readouterr().err
    assert main(["runs", "--dir", str(tmp_path / "none")]) == 0
    assert "no runs under" in capsys.readouterr().out
