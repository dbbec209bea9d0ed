"""End-to-end runs of cv, ensemble, compare, runs and synth-masks on the tiny dataset with a tiny model."""

import contextlib
import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, f1_score, log_loss

from maskclf.cli import main
from maskclf.utils.formats import read_oof
from maskclf.data.crops import cached_crops
from maskclf.labels import decode
from maskclf.inference.predict import load_model, predict_probs
from maskclf.utils.formats import read_probs, write_probs
from maskclf.data.train_data import load_train
from maskclf.utils.rundir import load_run_config
from maskclf.models.heads import probs18
from maskclf.data.transforms import build_eval_transform

K = 3


def run(*argv) -> tuple[int, str, str]:
    """Run the CLI in this process; returns (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([str(a) for a in argv])
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture(scope="session")
def work(tmp_path_factory) -> Path:
    torch.set_num_threads(1)
    return tmp_path_factory.mktemp("toolkit")


@pytest.fixture(scope="session")
def cache_set(work) -> str:
    return f"data.cache_dir={work / 'cache'}"


@pytest.fixture(scope="session")
def tiny_cv(tiny_args, tiny_data, work, cache_set) -> dict:
    """One 3-fold cv on tiny, trained once for the session (with progress output, as a user sees it)."""
    argv = ["cv", tiny_data, "-k", K, "--dir", work / "runs" / "cv", *tiny_args(work / "runs", "train.epochs=2", cache_set)]
    rc, out, err = run(*argv)
    assert rc == 0, err[-3000:]
    return {"dir": work / "runs" / "cv", "argv": argv, "out": out, "err": err}


@pytest.fixture(scope="session")
def extra_people(shared_data, work) -> tuple[Path, str]:
    out = work / "extra-elderly"
    rc, stdout, err = run("synth-masks", shared_data / "external-elderly", out, "--limit", 3)
    assert rc == 0, err[-3000:]
    return out, stdout


@pytest.fixture(scope="session")
def extra_train(tiny_args, tiny_data, work, cache_set, extra_people) -> dict:
    """A 1-epoch train run on tiny + the synthetic extra people, in the same runs folder as the cv."""
    rc, out, err = run("train", tiny_data, "--quiet",
                       *tiny_args(work / "runs", "train.epochs=1", cache_set, f"data.extra=[{extra_people[0]}]"))
    assert rc == 0, err[-3000:]
    return json.loads((work / "runs" / "exp" / "summary.json").read_text())


def rows_of(path: Path) -> list[list[str]]:
    with path.open(newline="") as fh:
        return list(csv.reader(fh))


@pytest.mark.parametrize("command", ["cv", "ensemble", "compare", "runs", "synth-masks"])
def test_every_command_has_help_with_an_example(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    out = capsys.readouterr().out
    assert exc.value.code == 0
    assert "example:" in out and f"maskclf {command} " in out.split("example:")[1]


@pytest.mark.slow
def test_cv_oof_has_every_image_once_people_within_one_fold_and_sklearn_scores(tiny_cv, tiny_data):
    cv_dir = tiny_cv["dir"]
    assert [f"fold {i}/{K}: training" in tiny_cv["out"] for i in range(1, K + 1)] == [True] * K
    assert "OOF macro F1" in tiny_cv["out"] and "epoch" in tiny_cv["err"]  # progress bars on stderr
    meta, probs = read_oof(cv_dir)
    records = load_train(load_run_config(cv_dir / "fold0").data).records
    assert len(records) == 168 and sorted(m["key"] for m in meta) == sorted(r.key for r in records)
    fold_of = {}
    for i in range(K):
        keys = [row[0] for row in rows_of(cv_dir / f"fold{i}" / "val.probs.csv")[1:]]
        fold_of.update({k: i for k in keys})
    folds_by_person: dict[str, set] = {}
    for m in meta:
        folds_by_person.setdefault(m["person"], set()).add(fold_of[m["key"]])
    assert len(folds_by_person) == 24 and all(len(f) == 1 for f in folds_by_person.values())
    assert {f.pop() for f in folds_by_person.values()} == set(range(K))

    labels, pred = np.array([m["label"] for m in meta]), probs.argmax(1)
    report = json.loads((cv_dir / "oof_report.json").read_text())
    assert report["f1"] == pytest.approx(f1_score(labels, pred, labels=range(18), average="macro", zero_division=0))
    assert report["accuracy"] == pytest.approx(accuracy_score(labels, pred))
    assert report["log_loss"] == pytest.approx(log_loss(labels, probs / probs.sum(1, keepdims=True),
                                                        labels=range(18)), abs=1e-4)
    for head, t, p in zip(("mask", "gender", "age"), decode(labels), decode(pred)):
        assert report["attributes"][head]["accuracy"] == pytest.approx(accuracy_score(t, p))
    assert json.loads((cv_dir / "summary.json").read_text())["oof_f1"] == report["f1"]


def metric_rows(run_dir: Path) -> int:
    return len((run_dir / "metrics.jsonl").read_text().splitlines())


@pytest.mark.slow
def test_cv_rerun_skips_finished_folds_and_resumes_an_interrupted_one(tiny_cv, work):
    cv_dir = work / "cv-resume"
    shutil.copytree(tiny_cv["dir"], cv_dir)
    mtimes = {i: (cv_dir / f"fold{i}" / "best.pt").stat().st_mtime_ns for i in (0, 2)}
    rows_before = metric_rows(cv_dir / "fold1")
    (cv_dir / "fold1" / "val.probs.csv").unlink()
    (cv_dir / "fold1" / "best.pt").unlink()  # interrupted after its last epoch: only last.pt is left
    argv = list(tiny_cv["argv"])
    argv[argv.index("--dir") + 1] = cv_dir
    rc, out, err = run(*argv, "--quiet")
    assert rc == 0, err[-3000:]
    assert f"fold 1/{K}: done already" in out and f"fold 2/{K}: resuming" in out and f"fold 3/{K}: done already" in out
    assert {i: (cv_dir / f"fold{i}" / "best.pt").stat().st_mtime_ns for i in (0, 2)} == mtimes  # not retrained
    assert (cv_dir / "fold1" / "best.pt").is_file() and metric_rows(cv_dir / "fold1") == rows_before
    meta, probs = read_oof(cv_dir)
    ref_meta, ref_probs = read_oof(tiny_cv["dir"])
    assert meta == ref_meta and probs == pytest.approx(ref_probs, abs=1e-5)

    rc, _, err = run(*argv[:argv.index("-k") + 1], 4, *argv[argv.index("-k") + 2:])
    assert rc == 2 and "holds a 3-fold run; asked for k=4" in err


@pytest.fixture(scope="session")
def fold0_predictions(tiny_cv, tiny_data, work) -> Path:
    out = work / "pred" / "fold0.csv"
    rc, stdout, err = run("predict", tiny_cv["dir"] / "fold0" / "best.pt", tiny_data / "eval", "-o", out, "--quiet")
    assert rc == 0, err[-3000:]
    return out


def same_probs(a: Path, b: Path) -> bool:
    """The two probability files hold the same ImageIDs and the same (printed) probabilities."""
    (ids_a, pa), (ids_b, pb) = read_probs(a), read_probs(b)
    return ids_a == ids_b and np.array_equal(pa, pb)


@pytest.mark.slow
def test_fold_models_predict_and_a_one_model_ensemble_equals_them(fold0_predictions, tiny_cv, tiny_data, work):
    sub = rows_of(fold0_predictions)
    assert sub[0] == ["ImageID", "ans"] and len(sub) == 57
    probs_file = fold0_predictions.with_name("fold0.probs.csv")
    rc, out, err = run("ensemble", tiny_cv["dir"] / "fold0" / "best.pt", "--eval", tiny_data / "eval",
                       "-o", work / "ens" / "ckpt.csv", "--quiet")
    assert rc == 0, err[-3000:]
    assert (work / "ens" / "ckpt.csv").read_text() == fold0_predictions.read_text()
    assert same_probs(work / "ens" / "ckpt.probs.csv", probs_file)  # predict's file adds a face column
    rc, out, _ = run("ensemble", probs_file, "-o", work / "ens" / "file.csv")
    assert rc == 0 and "ensemble of 1 (soft)" in out
    assert (work / "ens" / "file.csv").read_text() == fold0_predictions.read_text()
    assert same_probs(work / "ens" / "file.probs.csv", probs_file)


@pytest.mark.slow
def test_cv_folder_ensemble_averages_its_folds_and_searches_weights_on_oof(tiny_cv, tiny_data, work):
    out = work / "ens" / "cv.csv"
    rc, stdout, err = run("ensemble", tiny_cv["dir"], tiny_cv["dir"], "--search-weights", "--eval",
                          tiny_data / "eval", "-o", out, "--quiet")
    assert rc == 0, err[-3000:]
    assert "weights from OOF search" in stdout and "ensemble of 2 (soft)" in stdout
    folds = [read_probs(out.with_name("cv_members") / "0" / f"cv-{i}.probs.csv") for i in range(K)]
    assert (out.with_name("cv_members") / "1" / "cv-0.probs.csv").is_file()
    ids, probs = read_probs(out.with_name("cv.probs.csv"))
    assert ids == folds[0][0]
    assert probs == pytest.approx(np.mean([p for _, p in folds], axis=0), abs=1e-5)
    info = json.loads(out.with_name("cv.ensemble.json").read_text())
    assert info["oof_f1"] == pytest.approx(json.loads((tiny_cv["dir"] / "summary.json").read_text())["oof_f1"])

    probs_file = out.with_name("cv.probs.csv")
    rc, _, err = run("ensemble", probs_file, probs_file, "--search-weights", "-o", work / "ens" / "x.csv")
    assert rc == 2 and "weight search needs out-of-fold predictions" in err and "cv.probs.csv" in err


@pytest.mark.slow
def test_tta_none_is_plain_prediction_and_hflip_averages_the_flipped_view(tiny_cv, tiny_data):
    fold = tiny_cv["dir"] / "fold0"
    loaded = load_model(fold / "best.pt", torch.device("cpu"))
    records = load_train(loaded.cfg.data).records
    val_keys = [row[0] for row in rows_of(fold / "val.probs.csv")[1:]]
    by_key = {r.key: r for r in records}
    images, kept, _ = cached_crops([by_key[k] for k in val_keys], tiny_data, loaded.cfg.prepare,
                                   loaded.cfg.data.cache_dir, progress=False)
    plain = predict_probs(loaded, images, torch.device("cpu"), "none", progress=False, calibration=False)
    # the validation probabilities written during training are plain predictions of the same model
    saved = np.array([[float(x) for x in row[1:]] for row in rows_of(fold / "val.probs.csv")[1:]])
    assert plain == pytest.approx(saved, abs=1e-5)

    model, spec = loaded.members["main"]
    view = build_eval_transform(loaded.cfg.train.input_size, model.data_config["mean"], model.data_config["std"])

    @torch.no_grad()
    def forward(x):
        return probs18(model(view(torch.from_numpy(np.ascontiguousarray(x)))), spec).numpy()

    by_hand, flipped = forward(images), forward(images[:, :, ::-1])  # (B, H, W, 3): axis 2 is left-right
    assert plain == pytest.approx(by_hand, abs=1e-6)
    hflip = predict_probs(loaded, images, torch.device("cpu"), "hflip", progress=False, calibration=False)
    assert np.abs(hflip - plain).max() > 1e-4
    assert hflip.sum(1) == pytest.approx(np.ones(len(hflip)), abs=1e-5)
    assert hflip == pytest.approx((by_hand + flipped) / 2, abs=1e-5)


def test_compare_prints_disagreements_and_writes_the_gallery(tiny_data, tmp_path):
    rows = rows_of(tiny_data / "eval" / "gt.csv")
    changed = [list(r) for r in rows]
    other_mask, other_gender = (lambda c: (c + 6) % 18), (lambda c: c + 3 if c % 6 < 3 else c - 3)
    other_age = (lambda c: c - c % 3 + (c % 3 + 1) % 3)
    for i, change in [(1, other_mask), (2, other_gender), (3, other_age)]:
        changed[i][1] = str(change(int(changed[i][1])))
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    for path, content in ((a, rows), (b, changed)):
        with path.open("w", newline="") as fh:
            csv.writer(fh).writerows(content)
    html = tmp_path / "diff.html"
    rc, out, err = run("compare", a, b, "--gt", tiny_data / "eval" / "gt.csv", "--images",
                       tiny_data / "eval" / "images", "--html", html)
    assert rc == 0, err
    assert "disagree on 3 of 56 images" in out
    assert "on the disagreements A was right 3, B was right 0" in out
    by_attr = {line.split()[0]: int(line.split()[1]) for line in out.splitlines()
               if line.split()[:1] in (["mask"], ["gender"], ["age"])}
    assert by_attr == {"mask": 1, "gender": 1, "age": 1}
    assert f"wrote {html}" in out and html.read_text().count("<figure") == 3
    rc, _, err = run("compare", a, b, "--html", html)
    assert rc == 2 and "needs images_dir" in err


def test_ensemble_cli_attribute_and_hard_voting_on_probability_files(tmp_path):
    ids = ["i0", "i1"]
    a = np.zeros((2, 18))
    a[0, 7], a[1, 12] = 1.0, 1.0  # incorrect/male/30-59, normal/male/<30
    b = np.zeros((2, 18))
    b[0, 3], b[1, 5] = 1.0, 1.0  # wear/female/<30, wear/female/>=60
    write_probs(tmp_path / "a.probs.csv", ids, a)
    write_probs(tmp_path / "b.probs.csv", ids, b)
    files = [tmp_path / "a.probs.csv", tmp_path / "b.probs.csv"]
    rc, out, err = run("ensemble", *files, "--method", "attribute", "--attribute", "mask=0,gender=1,age=1",
                       "-o", tmp_path / "attr.csv")
    assert rc == 0, err
    assert rows_of(tmp_path / "attr.csv")[1:] == [["i0", "9"], ["i1", "17"]]  # incorrect/female/<30, normal/female/>=60
    rc, out, err = run("ensemble", *files, "--method", "hard", "--weights", "1,2", "-o", tmp_path / "hard.csv")
    assert rc == 0 and "ensemble of 2 (hard)" in out
    assert rows_of(tmp_path / "hard.csv")[1:] == [["i0", "3"], ["i1", "5"]]  # b has two votes


@pytest.mark.parametrize("args, message", [
    (["--weights", "2,x"], "--weights must be comma-separated numbers"),
    (["--method", "attribute", "--attribute", "mask0"], "--attribute must look like mask=0,gender=1,age=0"),
    (["--method", "attribute", "--attribute", "mask=0,gender=0"], "each of mask, gender and age"),
    (["--attribute", "mask=0,gender=0,age=0"], "only apply to method 'attribute'"),
])
def test_ensemble_cli_option_errors(tmp_path, args, message):
    write_probs(tmp_path / "a.probs.csv", ["i0"], np.ones((1, 18)) / 18)
    rc, _, err = run("ensemble", tmp_path / "a.probs.csv", *args, "-o", tmp_path / "e.csv")
    assert rc == 2 and message in err and not (tmp_path / "e.csv").exists()


@pytest.mark.slow
def test_synth_masks_writes_a_folder_that_check_and_train_accept(extra_people, extra_train):
    folder, stdout = extra_people
    written = len(rows_of(folder / "train" / "train.csv")) - 1
    assert written >= 1 and f"{written} people written" in stdout
    rc, out, err = run("check", folder)
    assert rc == 0 and out.rstrip().endswith("result: OK") and f"train: {written * 7} images" in out
    s = extra_train
    assert s["techniques"]["extra_data"] == [str(folder)]
    assert s["train_images"] == 168 - s["val_images"] + 7 * written


@pytest.mark.slow
def test_runs_lists_train_and_cv_runs_with_the_differing_keys(tiny_cv, extra_train, work):
    runs = work / "runs"
    rc, out, err = run("runs", "--dir", runs, "--sort", "val_f1")
    assert rc == 0, err
    header, *lines = out.splitlines()
    names = [line.split()[0] for line in lines]
    assert sorted(names) == ["cv", "cv/fold0", "cv/fold1", "cv/fold2", "exp"]
    assert header.split()[7:] == ["data.extra", "data.fold", "data.folds", "train.epochs"]
    scores = {n: json.loads((runs / n / "summary.json").read_text()).get("val_f1") for n in names}
    ranked = [n for n in names if scores[n] is not None]
    assert [scores[n] for n in ranked] == sorted(scores[n] for n in ranked)[::-1] and names[-1] == "cv"

    rc, out, _ = run("runs", "--dir", runs, "diff", "cv/fold0", "exp")
    assert rc == 0 and "data.fold: 0 -> None" in out and "train.epochs: 2 -> 1" in out
    rc, _, err = run("runs", "--dir", runs, "--sort", "accuracy")
    assert rc == 2 and "cannot sort by 'accuracy'; columns: name" in err
