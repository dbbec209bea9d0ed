import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from maskclf.config import PrepareCfg
from maskclf.utils.checkpoint import CheckpointError
from maskclf.data.crops import cached_crops, crops_for, load_split
from maskclf.data.scan import scan_eval
from maskclf.inference.predict import PredictOptions, load_model, predict, predict_probs
from maskclf.utils.formats import read_probs
from maskclf.data.train_data import load_train
from maskclf.training.fit import fit
from maskclf.utils.formats import VAL_PROBS, read_oof

CPU = torch.device("cpu")



@pytest.fixture(scope="module")
def trained(tiny_cfg, tmp_path_factory):
    return fit(tiny_cfg(tmp_path_factory.mktemp("runs"), "train.epochs=1"), progress=False)


def _info_ids(eval_dir: Path) -> list[str]:
    with (eval_dir / "info.csv").open() as fh:
        return [r["ImageID"] for r in csv.DictReader(fh)]


LAYOUTS = {
    "single": ["model.head=single"],
    "multihead": ["model.head=multihead"],
    "separate": ["model.head=separate"],
    "age bins": ["model.head=multihead", "model.age=bins"],
    "age regression": ["model.head=multihead", "model.age=regression"],
    "moved age bounds": ["data.age_bounds=[30,40]"],  # validation labels stay in the truth bounds
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_best_checkpoint_predicts_exactly_like_the_trained_model(tiny_cfg, layout, tmp_path):
    cfg = tiny_cfg(tmp_path, "train.epochs=1", *LAYOUTS[layout])
    result = fit(cfg, progress=False)
    data = load_train(cfg.data)
    _, val_set, _ = crops_for(cfg, data, load_split(cfg.data, data.records, result.run_dir), progress=False)
    assert val_set.keys == result.val_keys
    loaded = load_model(result.checkpoint, CPU)
    assert set(loaded.members) == ({"mask", "gender", "age"} if layout == "separate" else {"main"})
    probs = predict_probs(loaded, val_set.images, CPU, progress=False, calibration=False)  # the model's own
    assert probs.shape == (len(val_set), 18)
    np.testing.assert_array_equal(probs, result.val_probs)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    saved, saved_probs = read_oof(result.run_dir / VAL_PROBS)  # what the run report reads back
    assert [r["key"] for r in saved] == result.val_keys
    assert [r["label"] for r in saved] == val_set.labels.tolist()
    np.testing.assert_allclose(saved_probs, result.val_probs, rtol=1e-5, atol=1e-7)


def test_predict_writes_rows_for_every_image_in_info_order(trained, tiny_data, tmp_path):
    out = tmp_path / "sub" / "submission.csv"
    r = predict(trained.checkpoint, tiny_data / "eval", out=out, progress=False)
    ids = _info_ids(tiny_data / "eval")
    with out.open() as fh:
        sub = list(csv.DictReader(fh))
    assert [row["ImageID"] for row in sub] == ids == r.image_ids
    assert r.probs_path == tmp_path / "sub" / "submission.probs.csv"
    prob_ids, probs = read_probs(r.probs_path)
    assert prob_ids == ids and probs.shape == (len(ids), 18)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-4)
    assert [int(row["ans"]) for row in sub] == list(probs.argmax(1))
    assert r.skipped == {}


def test_predict_from_a_run_folder_writes_beside_the_checkpoint(trained, tiny_data):
    r = predict(trained.run_dir, tiny_data, progress=False)  # DATA_DIR works as well as DATA_DIR/eval
    assert r.submission == trained.run_dir / "submission.csv" and r.submission.is_file()


def test_tta_none_is_plain_prediction_and_hflip_averages_the_mirror(trained, tiny_data, tmp_path):
    loaded = load_model(trained.checkpoint, CPU)
    plain = predict(trained.checkpoint, tiny_data, out=tmp_path / "none.csv", options=PredictOptions(tta="none"),
                    progress=False)
    flip = predict(trained.checkpoint, tiny_data, out=tmp_path / "flip.csv", options=PredictOptions(tta="hflip"),
                   progress=False)
    records = scan_eval(tiny_data).records
    images, _, _ = cached_crops(records, tiny_data, loaded.cfg.prepare, loaded.cfg.data.cache_dir, progress=False)
    direct = predict_probs(loaded, images, CPU, progress=False)
    np.testing.assert_array_equal(plain.probs, direct)
    mirrored = predict_probs(loaded, np.ascontiguousarray(images[:, :, ::-1]), CPU, progress=False)
    np.testing.assert_allclose(flip.probs, (direct + mirrored) / 2, atol=1e-5)
    assert not np.allclose(flip.probs, plain.probs)
    assert flip.image_ids == plain.image_ids


def test_unknown_tta_lists_the_valid_names(trained, tiny_data, tmp_path):
    with pytest.raises(ValueError, match="valid names"):
        predict(trained.checkpoint, tiny_data, out=tmp_path / "x.csv", options=PredictOptions(tta="rotate"),
                progress=False)


def test_broken_eval_image_gets_the_mean_prediction_and_a_warning(trained, tiny_data, tmp_path, capsys):
    root = tmp_path / "data"
    shutil.copytree(tiny_data / "eval", root / "eval")
    ids = _info_ids(root / "eval")
    (root / "eval" / "images" / ids[3]).write_bytes(b"\xff\xd8\xff not really a jpeg")
    r = predict(trained.checkpoint, root, out=tmp_path / "s.csv", progress=False)
    assert r.image_ids == ids and list(r.skipped) == [str(root / "eval" / "images" / ids[3])]
    others = np.delete(r.probs, 3, axis=0)
    np.testing.assert_allclose(r.probs[3], others.mean(0), rtol=1e-6)
    err = capsys.readouterr().err
    assert "1 unreadable eval image(s) got the mean prediction" in err and ids[3] in err
    with (tmp_path / "s.csv").open() as fh:
        assert len(list(csv.DictReader(fh))) == len(ids)


def test_all_eval_images_broken_is_an_error_naming_one(trained, tiny_data, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(tiny_data / "eval", root / "eval")
    for f in (root / "eval" / "images").iterdir():
        f.write_bytes(b"broken")
    with pytest.raises(ValueError, match="none of the 56 eval images could be read") as info:
        predict(trained.checkpoint, root, out=tmp_path / "s.csv", progress=False)
    assert str(root / "eval" / "images") in str(info.value)
    assert not (tmp_path / "s.csv").exists()


def test_load_model_refuses_an_unfinished_separate_run(tiny_cfg, tmp_path):
    cfg = tiny_cfg(tmp_path, "train.epochs=1", "model.head=separate", "train.epochs=2")

    def stop(member, epoch, score):
        if member == "gender":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(cfg, progress=False, on_epoch=stop)
    with pytest.raises(CheckpointError, match="training was interrupted"):
        load_model(tmp_path / "exp" / "last.pt", CPU)


def test_an_empty_eval_set_is_a_clear_error(trained, tiny_data, tmp_path):
    root = tmp_path / "data"
    (root / "eval" / "images").mkdir(parents=True)
    (root / "eval" / "info.csv").write_text("ImageID,ans\n")
    with pytest.raises(ValueError, match="info.csv: lists no images") as info:
        predict(trained.checkpoint, root, out=tmp_path / "s.csv", progress=False)
    assert str(root / "eval" / "info.csv") in str(info.value) and not (tmp_path / "s.csv").exists()


def test_probabilities_file_says_per_image_how_its_face_was_found(trained, tiny_data, tmp_path, monkeypatch):
    import maskclf.faces.detect as detect
    from maskclf.faces.detect import Face

    class Cycling:
        calls = 0

        def detect(self, img_rgb):
            if max(img_rgb.shape[:2]) > PrepareCfg().detect_side:
                return []  # the second look at a photo without a face: still none
            n = [2, 0, 1][Cycling.calls % 3]
            Cycling.calls += 1
            return [Face((20.0 + 60 * i, 20.0, 80.0 + 60 * i, 80.0), 0.9, None) for i in range(n)]

    monkeypatch.setattr(detect, "detector_for", lambda cfg, device="cpu": Cycling())
    root = tmp_path / "data"
    shutil.copytree(tiny_data / "eval", root / "eval")
    ids = _info_ids(root / "eval")
    (root / "eval" / "images" / ids[4]).write_bytes(b"broken")
    r = predict(trained.checkpoint, root, out=tmp_path / "s.csv", progress=False)
    with r.probs_path.open() as fh:
        rows = list(csv.DictReader(fh))
    faces = [row["face"] for row in rows]
    assert [row["ImageID"] for row in rows] == ids and r.faces == faces
    assert faces[:4] == ["multiple:2", "fallback", "found", "multiple:2"] and faces[4] == "unreadable"
    assert read_probs(r.probs_path)[1].shape == (56, 18)


def test_predict_from_a_run_folder_without_best_pt_says_it_uses_last_pt(trained, tiny_data, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(Path(trained.checkpoint).parent / "last.pt", run / "last.pt")
    predict(run, tiny_data, out=tmp_path / "s.csv", progress=False)
    assert f"{run} has no best.pt; predicting with last.pt" in capsys.readouterr().err
    predict(Path(trained.checkpoint).parent, tiny_data, out=tmp_path / "t.csv", progress=False)
    assert "last.pt" not in capsys.readouterr().err
