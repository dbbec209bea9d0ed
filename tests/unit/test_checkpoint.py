import os
import pickle

import pytest
import torch

from maskclf import __version__
from maskclf.utils.checkpoint import FORMAT, CheckpointError, load_checkpoint, save_checkpoint
from maskclf.inference.predict import load_model


def _payload():
    return {"models": {"main": {"w": torch.arange(6.0).reshape(2, 3)}}, "epoch": 3, "score": 0.5,
            "config": "{}", "names": ["a", "b"]}


def test_round_trip_adds_format_and_version(tmp_path):
    path = tmp_path / "sub" / "c.pt"
    save_checkpoint(path, _payload())
    data = load_checkpoint(path)
    assert data["format"] == FORMAT and data["version"] == __version__
    assert data["epoch"] == 3 and data["names"] == ["a", "b"]
    assert torch.equal(data["models"]["main"]["w"], torch.arange(6.0).reshape(2, 3))
    assert sorted(p.name for p in path.parent.iterdir()) == ["c.pt"]  # no temp file left behind


def test_a_run_folder_resolves_to_best_then_last(tmp_path):
    save_checkpoint(tmp_path / "last.pt", {**_payload(), "epoch": 7})
    assert load_checkpoint(tmp_path)["epoch"] == 7
    save_checkpoint(tmp_path / "best.pt", {**_payload(), "epoch": 2})
    assert load_checkpoint(tmp_path)["epoch"] == 2


def test_failed_save_keeps_the_previous_file_whole(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(path, _payload())
    good = path.read_bytes()

    def dies_halfway(obj, fh):
        fh.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt  # e.g. Ctrl-C in the middle of writing

    monkeypatch.setattr(torch, "save", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {**_payload(), "epoch": 4})
    assert path.read_bytes() == good
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def _error(path) -> str:
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)
    return str(info.value)


def test_missing_file(tmp_path):
    assert "not found" in _error(tmp_path / "nope.pt")


def test_truncated_file(tmp_path):
    path = tmp_path / "best.pt"
    save_checkpoint(path, _payload())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert "not a readable maskclf checkpoint" in _error(path)


def test_random_bytes(tmp_path):
    path = tmp_path / "best.pt"
    path.write_bytes(os.urandom(4096))
    assert "not a readable maskclf checkpoint" in _error(path)


class Boom:
    """Unpickling this would run code; a safe loader must refuse it."""

    def __reduce__(self):
        return (os.system, ("touch PWNED",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_pickled_object_is_refused_without_running_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name, obj in [("torch.pt", {"format": FORMAT, "x": Boom()}), ("raw.pt", Boom())]:
        path = tmp_path / name
        if name == "torch.pt":
            torch.save(obj, path)
        else:
            path.write_bytes(pickle.dumps(obj))
        assert "not a readable maskclf checkpoint" in _error(path)
    assert not (tmp_path / "PWNED").exists()


def test_a_plain_state_dict_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"w": torch.zeros(2)}, path)
    assert f"expected format '{FORMAT}'" in _error(path)
    torch.save([1, 2], path)
    assert f"expected format '{FORMAT}'" in _error(path)


def test_load_model_names_the_file_for_a_checkpoint_missing_fields(tmp_path):
    path = tmp_path / "best.pt"
    save_checkpoint(path, {"epoch": 1})
    with pytest.raises(CheckpointError, match="missing or has a malformed field") as info:
        load_model(path, torch.device("cpu"))
    assert str(path) in str(info.value)


def test_flipped_weight_bytes_are_refused_by_the_checksum(tmp_path):
    path = tmp_path / "best.pt"
    weights = torch.arange(8192, dtype=torch.float32)
    save_checkpoint(path, {**_payload(), "models": {"main": {"w": weights}}})
    data = bytearray(path.read_bytes())
    start = bytes(data).index(weights.numpy().tobytes())  # the tensor is stored uncompressed inside the zip
    data[start + 8192:start + 12288] = bytes(b ^ 0xFF for b in data[start + 8192:start + 12288])  # 4 KB flipped
    path.write_bytes(bytes(data))
    message = _error(path)
    assert "checksum" in message and "damaged" in message


def test_checkpoint_from_before_checksums_loads_with_a_warning_saying_so(tmp_path):
    path = tmp_path / "best.pt"
    torch.save({"format": FORMAT, "version": "0.0.9", **_payload()}, path)
    with pytest.warns(UserWarning, match=r"maskclf 0\.0\.9 without a weights checksum.*cannot be detected"):
        data = load_checkpoint(path)
    assert torch.equal(data["models"]["main"]["w"], _payload()["models"]["main"]["w"])


def test_checkpoints_carry_the_config_schema_and_newer_ones_are_refused(tmp_path):
    import json

    from maskclf.config import CONFIG_SCHEMA, Config, ConfigError
    from maskclf.models.heads import head_spec
    from maskclf.training.snapshot import checkpoint_payload
    from maskclf.utils.checkpoint import checkpoint_config

    cfg = Config()
    payload = checkpoint_payload(cfg, head_spec("multihead", "classes"), {}, {}, {"mean": [0.5] * 3, "std": [0.5] * 3})
    assert payload["config_schema"] == CONFIG_SCHEMA
    assert checkpoint_config(payload, tmp_path / "best.pt") == cfg
    older = {k: v for k, v in payload.items() if k != "config_schema"}  # saved before the schema was numbered
    assert checkpoint_config(older, tmp_path / "best.pt") == cfg
    with pytest.raises(ConfigError, match=rf"saved with config schema {CONFIG_SCHEMA + 1}, newer than this "
                                          rf"maskclf's {CONFIG_SCHEMA}; upgrade maskclf"):
        checkpoint_config({**payload, "config_schema": CONFIG_SCHEMA + 1}, tmp_path / "best.pt")
    renamed = {**payload, "config": json.dumps({"trainer": {}})}
    with pytest.raises(ConfigError, match=r"unknown key 'trainer'") as info:
        checkpoint_config(renamed, tmp_path / "best.pt")
    assert str(tmp_path / "best.pt") in str(info.value)
