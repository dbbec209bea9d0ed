"""ONNX export: every head layout and age mode gives ONNX Runtime probabilities equal to torch's on real crops."""

import json

import numpy as np
import onnx
import pytest
import torch

from maskclf.inference import onnx_export
from maskclf.inference.onnx_export import ParityError, check_crops, export_onnx
from maskclf.inference.onnx_model import load_onnx
from maskclf.inference.predict import load_model, predict, predict_probs
from maskclf.training.fit import fit
from maskclf.utils.checkpoint import CheckpointError
from maskclf.utils.formats import read_probs

LAYOUTS = {
    "single": ["model.head=single"],
    "multihead classes": ["model.head=multihead"],
    "multihead bins": ["model.head=multihead", "model.age=bins"],
    "multihead regression": ["model.head=multihead", "model.age=regression"],
    "separate classes": ["model.head=separate"],
    "separate bins": ["model.head=separate", "model.age=bins"],
    "separate regression": ["model.head=separate", "model.age=regression"],
}
CPU = torch.device("cpu")


def _fit(tiny_cfg, out, *sets):
    return fit(tiny_cfg(out, "train.epochs=1", *sets), progress=False)


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_onnx_runtime_matches_torch_on_real_crops(tiny_cfg, layout, shared_data, tmp_path):
    result = _fit(tiny_cfg, tmp_path, *LAYOUTS[layout])
    real = [shared_data / "mask-real"]
    exported = export_onnx(result.checkpoint, tmp_path / "model.onnx", real)
    p = exported.parity
    print(f"parity {layout}: {json.dumps(p)}")
    assert p["images"] == onnx_export.PARITY_IMAGES and p["max_abs_diff"] <= 1e-4 and p["argmax_agree"]

    loaded, onnx_model = load_model(result.checkpoint, CPU), load_onnx(exported.path)
    assert onnx_model.spec == loaded.spec and onnx_model.cfg == loaded.cfg
    assert (onnx_model.mean, onnx_model.std) == (loaded.mean, loaded.std)
    crops_ = check_crops(loaded, real, limit=7)  # another batch size than the export's: the batch axis is dynamic
    for tta in ("none", "hflip_crops"):
        ref = predict_probs(loaded, crops_, CPU, tta, progress=False)
        got = predict_probs(onnx_model, crops_, CPU, tta, progress=False)
        assert got.shape == (7, 18)
        np.testing.assert_allclose(got, ref, atol=1e-4)
        assert (got.argmax(1) == ref.argmax(1)).all()


def test_predict_accepts_the_exported_model(tiny_cfg, tiny_data, tmp_path):
    result = _fit(tiny_cfg, tmp_path)
    onnx_path = export_onnx(result.checkpoint, tmp_path / "m.onnx").path  # parity on the training data by default
    torch_run = predict(result.checkpoint, tiny_data / "eval", tmp_path / "torch.csv", progress=False)
    onnx_run = predict(onnx_path, tiny_data / "eval", tmp_path / "onnx.csv", progress=False)
    assert (tmp_path / "torch.csv").read_text() == (tmp_path / "onnx.csv").read_text()
    ids, probs = read_probs(onnx_run.probs_path)
    assert ids == torch_run.image_ids and np.abs(probs - torch_run.probs).max() <= 1e-4


def test_a_failed_parity_check_raises_and_removes_the_file(tiny_cfg, tiny_data, tmp_path, monkeypatch):
    result = _fit(tiny_cfg, tmp_path)
    monkeypatch.setattr(onnx_export, "PARITY_TOLERANCE", -1.0)  # no difference can pass
    with pytest.raises(ParityError, match="disagrees with torch"):
        export_onnx(result.checkpoint, tmp_path / "m.onnx", [tiny_data / "eval" / "images"])
    assert not (tmp_path / "m.onnx").exists()


def test_load_onnx_refuses_files_that_are_not_maskclf_exports(tmp_path):
    fake = tmp_path / "notes.onnx"
    fake.write_text("not a graph")
    with pytest.raises(CheckpointError, match="not a readable ONNX model"):
        load_onnx(fake)
    bare = tmp_path / "bare.onnx"
    x = onnx.helper.make_tensor_value_info("image", onnx.TensorProto.FLOAT, [None, 3])
    y = onnx.helper.make_tensor_value_info("probs", onnx.TensorProto.FLOAT, [None, 3])
    graph = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["image"], ["probs"])], "bare", [x], [y])
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)]), bare)
    with pytest.raises(CheckpointError, match="not an ONNX model exported by maskclf"):
        load_onnx(bare)
    with pytest.raises(CheckpointError, match="not found"):
        load_onnx(tmp_path / "missing.onnx")
