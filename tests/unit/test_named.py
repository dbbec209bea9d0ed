"""The one `{name, params}` builder behind losses, optimisers, schedules and samplers."""

import pytest

from maskclf.config import NamedCfg
from maskclf.data.samplers import SAMPLER_CHOICES
from maskclf.training.losses import LOSS_CHOICES
from maskclf.training.optim import OPTIMIZER_CHOICES, SCHEDULE_CHOICES
from maskclf.utils.named import Choices


def _pair(a: int, b: int = 2, *, scale: float = 1.0):
    return a, b, scale


CHOICES = Choices("thing", {"pair": _pair, "off": None}, filled=("a",), shared=("common",), defaults={"pair": {"b": 5}})


def test_valid_params_come_from_the_signature_minus_filled_plus_shared():
    assert CHOICES.valid_params("pair") == ["b", "common", "scale"]
    assert CHOICES.valid_params("off") == ["common"]


def test_build_applies_defaults_under_the_users_params_and_drops_shared_ones():
    assert CHOICES.build(NamedCfg(name="pair", params={"common": 1}), 7) == (7, 5, 1.0)
    assert CHOICES.build(NamedCfg(name="pair", params={"b": 3, "scale": 0.5}), 7) == (7, 3, 0.5)


@pytest.mark.parametrize("cfg, message", [
    (NamedCfg(name="pear"), r"unknown thing 'pear'; valid names: \['off', 'pair'\]"),
    (NamedCfg(name="pair", params={"bb": 1}), r"thing 'pair': unknown param\(s\) \['bb'\]; valid params: \['b', "),
])
def test_bad_names_and_params_list_the_valid_ones(cfg, message):
    with pytest.raises(ValueError, match=message):
        CHOICES.build(cfg, 1)


def test_a_wrong_call_becomes_a_message_naming_the_section():
    with pytest.raises(ValueError, match=r"thing 'pair': invalid params \{\}"):
        CHOICES.build(NamedCfg(name="pair"))  # the filled-in `a` is missing


def test_every_named_section_uses_the_shared_builder():
    assert {c.kind for c in (LOSS_CHOICES, OPTIMIZER_CHOICES, SCHEDULE_CHOICES, SAMPLER_CHOICES)} == {
        "loss", "optimizer", "scheduler", "sampler"}
    assert "lr" in OPTIMIZER_CHOICES.valid_params("sgd") and "params" not in OPTIMIZER_CHOICES.valid_params("sgd")
    assert SCHEDULE_CHOICES.valid_params("step") == ["gamma", "step_size", "warmup_epochs", "warmup_lr_ratio"]
    assert SAMPLER_CHOICES.valid_params("oversample") == ["ratio"]
    assert "class_counts" not in LOSS_CHOICES.valid_params("lade")
