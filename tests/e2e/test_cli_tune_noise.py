import csv

import numpy as np
import pytest
import yaml

from maskclf.cli import main
from maskclf.config import DataCfg, load_config
from maskclf.utils.formats import OOF_COLUMNS
from maskclf.data.scan import scan_train
from maskclf.labels import combine_probs
from maskclf.data.label_fixes import load_fixes
from maskclf.data.train_data import load_train

TINY_MODEL = ["--set", "model.backbone=resnet18", "--set", "model.pretrained=", "--set", "train.input_size=32",
              "--set", "prepare.size=48", "--set", "train.epochs=1", "--set", "train.batch_size=16",
              "--set", "prepare.detector=none", "--set", "run.tensorboard=false",
              "--set", "train.scheduler.params.warmup_epochs=0"]


def run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.slow  # two real (tiny) training runs
def test_tune_two_trials_writes_a_loadable_best_yaml(capsys, tmp_path, tiny_data):
    space = tmp_path / "space.yaml"
    space.write_text("train.optimizer.params.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}\n"
                     "model.drop_rate: {type: categorical, choices: [0.0, 0.2]}\n")
    runs = tmp_path / "runs"
    rc, out, err = run(capsys, "tune", str(tiny_data), "--space", str(space), "--trials", "2", "--study", "t",
                       "--storage", f"sqlite:///{tmp_path / 'study.db'}", "--quiet",
                       "--set", f"run.out_dir={runs}", *TINY_MODEL)
    assert rc == 0, err
    assert "study 't'" in out and "2 complete" in out and "best val macro F1" in out
    best = load_config([runs / "t" / "best.yaml"])
    assert best.train.input_size == 32 and best.train.epochs == 1 and best.model.drop_rate in (0.0, 0.2)
    assert best.data.root is None  # DATA_DIR is given on the command line that uses it
    with (runs / "t" / "trials.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["number"] for r in rows] == ["0", "1"] and all(r["state"] == "COMPLETE" for r in rows)
    assert (runs / "t" / "trial0" / "best.pt").is_file() and (runs / "t" / "trial1" / "summary.json").is_file()
    assert (tmp_path / "study.db").is_file() and not (runs / "tune.db").exists()


def test_tune_rejects_a_space_key_that_is_not_a_config_key(capsys, tmp_path, tiny_data):
    space = tmp_path / "space.yaml"
    space.write_text("train.learning_rate: {type: float, low: 0.001, high: 0.01}\n")
    rc, out, err = run(capsys, "tune", str(tiny_data), "--space", str(space), "--set", f"run.out_dir={tmp_path}")
    assert rc == 2 and "train.learning_rate" in err and "unknown key" in err
    assert not (tmp_path / "tune").exists()


def test_noise_on_a_hand_written_oof_writes_gallery_and_usable_overrides(capsys, tmp_path, tiny_data):
    records = scan_train(tiny_data).records
    people = sorted({r.person for r in records})[:4]
    flipped, swapped = people[0], people[1]
    rows = []
    for r in (r for r in records if r.person in people):
        mask, gender, age = np.full((1, 3), 0.05), np.full((1, 2), 0.1), np.full((1, 3), 0.05)
        shown_mask = {1: 2, 2: 1}[r.mask] if r.person == swapped and r.mask else r.mask
        mask[0, shown_mask], age[0, r.age_group] = 0.9, 0.9
        gender[0, 1 - r.gender if r.person == flipped else r.gender] = 0.9
        probs = combine_probs(mask, gender, age)[0]
        rows.append([r.key, r.person, r.label, str(r.path)] + [f"{p:.6g}" for p in probs])
    cv_dir = tmp_path / "cv"
    cv_dir.mkdir()
    with (cv_dir / "oof.csv").open("w", newline="") as fh:
        csv.writer(fh).writerows([OOF_COLUMNS] + rows)
    (cv_dir / "cv_config.yaml").write_text(f"data:\n  root: {tiny_data}\n")  # as cv writes it: where images may be

    rc, out, err = run(capsys, "noise", str(cv_dir), "--top", "5")
    assert rc == 0, err
    assert "2 suspect(s): 1 gender, 0 age, 1 swap_incorrect_normal" in out
    assert f"   1 {flipped}     gender                  0.900  male -> female" in out  # 000008 is labelled male
    assert f"   2 {swapped}     swap_incorrect_normal   0.900  as labelled -> normal <-> incorrect mask swapped" in out
    page = (cv_dir / "noise" / "review.html").read_text()
    assert page.count("data:image/jpeg;base64,") == 14  # two people, seven photos each
    fixes_path = cv_dir / "noise" / "label_fixes_draft.yaml"
    fixes = load_fixes(fixes_path)
    assert set(fixes.gender) == {flipped} and fixes.swap_incorrect_normal == {swapped}
    fixed = load_train(DataCfg(root=tiny_data, label_fixes=str(fixes_path)))
    assert fixed.fixes == {"gender": 1, "age": 0, "swap_incorrect_normal": 1}
    assert yaml.safe_load(fixes_path.read_text())["age"] == {}


def test_noise_without_oof_is_a_user_error(capsys, tmp_path):
    rc, out, err = run(capsys, "noise", str(tmp_path))
    assert rc == 2 and "oof.csv not found" in err and "maskclf cv" in err
