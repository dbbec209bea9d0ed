"""Each loss against values worked out by hand on 1-3 rows (p = softmax(logits))."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from maskclf.config import NamedCfg
from maskclf.training.losses import build_age_regression_loss, build_criterion, build_loss, class_weights

LN3 = math.log(3.0)


def t(rows):
    return torch.tensor(rows, dtype=torch.float32)


def loss(name, num_classes=2, counts=None, weighted=False, **params):
    return build_loss(NamedCfg(name=name, params=params), num_classes, counts, weighted)


def test_ce_one_hot_row():
    # -log(e^3 / (e^1 + e^2 + e^3)) = 0.40760596
    value = loss("ce", 3)(t([[1.0, 2.0, 3.0]]), t([[0, 0, 1]]))
    assert value.item() == pytest.approx(0.40760596, abs=1e-6)


def test_ce_soft_target():
    # p = (0.25, 0.75); -(0.5 ln 0.25 + 0.5 ln 0.75) = 0.83698822
    value = loss("ce")(t([[0.0, LN3]]), t([[0.5, 0.5]]))
    assert value.item() == pytest.approx(0.83698822, abs=1e-6)


def test_ce_label_smoothing():
    # eps 0.2 on 2 classes: target (0, 1) -> (0.1, 0.9); -(0.1 ln 0.25 + 0.9 ln 0.75) = 0.39754330
    value = loss("ce", label_smoothing=0.2)(t([[0.0, LN3]]), t([[0, 1]]))
    assert value.item() == pytest.approx(0.39754330, abs=1e-6)


def test_class_weights_are_inverse_frequency_with_mean_one():
    w = class_weights(np.array([1, 2, 4, 0]))
    np.testing.assert_allclose(w, np.array([1, 0.5, 0.25, 0]) / (1.75 / 3))
    assert w[:3].mean() == pytest.approx(1.0)


def test_weighted_ce_by_hand_and_matches_torch():
    # counts (4, 2, 1) -> w = (1/4, 1/2, 1) / (7/12) ; value = sum w_y * l_i / sum w_y
    counts = np.array([4, 2, 1])
    logits, labels = t([[1.0, 2.0, 3.0], [1.0, 0.0, 0.0]]), torch.tensor([2, 0])
    l0 = math.log(math.e + math.e**2 + math.e**3) - 3
    l1 = math.log(math.e + 2) - 1
    w = np.array([0.25, 0.5, 1.0]) / (7 / 12)
    expected = (w[2] * l0 + w[0] * l1) / (w[2] + w[0])
    value = loss("ce", 3, counts, True)(logits, F.one_hot(labels, 3).float())
    assert value.item() == pytest.approx(expected, abs=1e-6)
    reference = F.cross_entropy(logits, labels, weight=torch.tensor(w, dtype=torch.float32))
    assert value.item() == pytest.approx(reference.item(), abs=1e-6)


def test_focal_one_row_and_gamma_zero_is_ce():
    # -(1 - 0.75)^2 ln 0.75 = 0.01798013
    logits, target = t([[0.0, LN3]]), t([[0, 1]])
    assert loss("focal", gamma=2.0)(logits, target).item() == pytest.approx(0.01798013, abs=1e-7)
    assert loss("focal", gamma=0.0)(logits, target).item() == pytest.approx(-math.log(0.75), abs=1e-6)


def test_focal_alpha_weights_rows():
    # rows: p_y = 0.75 (class 1) and p_y = 0.25 (class 0); alpha = (0.25, 0.75)
    la, lb = 0.25**2 * -math.log(0.75), 0.75**2 * -math.log(0.25)
    value = loss("focal", gamma=2.0, alpha=[0.25, 0.75])(t([[0.0, LN3], [0.0, LN3]]), t([[0, 1], [1, 0]]))
    assert value.item() == pytest.approx((0.75 * la + 0.25 * lb) / 1.0, abs=1e-6)
    assert value.item() == pytest.approx(0.20843274, abs=1e-6)


def test_focal_soft_target_with_class_weights():
    # counts (1, 3) -> w = (1, 1/3) / (2/3) = (1.5, 0.5); target (0.5, 0.5), p = (0.25, 0.75)
    per_class = [0.5 * 0.75**2 * -math.log(0.25), 0.5 * 0.25**2 * -math.log(0.75)]
    expected = (1.5 * per_class[0] + 0.5 * per_class[1]) / (1.5 * 0.5 + 0.5 * 0.5)
    value = loss("focal", 2, np.array([1, 3]), True, gamma=2.0)(t([[0.0, LN3]]), t([[0.5, 0.5]]))
    assert value.item() == pytest.approx(expected, abs=1e-6)


def test_soft_f1_two_rows():
    # p = (.25,.75) for y=1 and (.75,.25) for y=0: per class tp=.75, fp=.25, fn=.25 -> F1 = 1.5/2 = .75
    value = loss("soft_f1")(t([[0.0, LN3], [LN3, 0.0]]), t([[0, 1], [1, 0]]))
    assert value.item() == pytest.approx(0.25, abs=1e-6)


def test_soft_f1_is_differentiable():
    logits = t([[0.3, -0.2, 1.0], [0.1, 0.5, -1.0]]).requires_grad_()
    loss("soft_f1", 3)(logits, t([[0, 0, 1], [0.2, 0.8, 0]])).backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_sce_one_hot_and_soft():
    # one-hot: 0.1 * -ln .75 + 1.0 * -(0.25 * A + 0.75 * ln 1) with A = -4 -> 1.02876821
    logits = t([[0.0, LN3]])
    assert loss("sce")(logits, t([[0, 1]])).item() == pytest.approx(1.02876821, abs=1e-6)
    # soft (0.5, 0.5): 0.1 * 0.83698822 + -(0.25 + 0.75) ln 0.5 = 0.77684600
    assert loss("sce")(logits, t([[0.5, 0.5]])).item() == pytest.approx(0.77684600, abs=1e-6)
    assert loss("sce", alpha=1.0, beta=0.0)(logits, t([[0.5, 0.5]])).item() == pytest.approx(0.83698822, abs=1e-6)


def test_lade_one_row_by_hand():
    # counts (3, 1): prior (.75, .25). CE on logits + ln prior = -ln .75.
    # second_c = logsumexp_n(0 - ln prior_c - ln 2) - ln 1 = -ln(2 prior_c); first_c = 0 (class 1 absent)
    # bound_c = first_c - second_c - 0.1 second_c^2; loss = CE - 0.1 * sum_c prior_c bound_c = 0.27703502
    value = loss("lade", 2, np.array([3, 1]))(t([[0.0, 0.0]]), t([[1, 0]]))
    assert value.item() == pytest.approx(0.27703502, abs=1e-6)


def lade_reference(logits, labels, counts, lade_weight=0.1, lam=0.1):
    """The published LADE code path (integer labels), written in numpy."""
    prior = counts / counts.sum()
    n, c = logits.shape
    shifted = logits + np.log(prior + 1e-9)
    log_p = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
    ce = -log_p[np.arange(n), labels].mean()
    member = labels[None, :] == np.arange(c)[:, None]  # C x N
    first = (logits.T * member).sum(1) / (member.sum(1) + 1e-8)
    q = (logits - np.log(prior + 1e-9) + np.log(1.0 / c + 1e-9)).T
    second = np.log(np.exp(q).sum(1)) - np.log(n)
    estim = first - second - lam * second**2
    return ce + lade_weight * -(estim * prior).sum()


def test_lade_three_rows_matches_reference_formula():
    logits = np.array([[1.0, -0.5, 0.2], [0.3, 0.8, -1.0], [-0.2, 0.1, 0.9]])
    labels, counts = np.array([0, 1, 0]), np.array([5.0, 3.0, 2.0])
    value = loss("lade", 3, counts)(t(logits), F.one_hot(torch.tensor(labels), 3).float())
    assert value.item() == pytest.approx(lade_reference(logits, labels, counts), abs=1e-5)


def test_lade_uniform_prior_without_regulariser_is_ce():
    logits, target = t([[0.3, 0.8, -1.0]]), t([[0.2, 0.5, 0.3]])
    value = loss("lade", 3, np.array([2, 2, 2]), lade_weight=0.0)(logits, target)
    assert value.item() == pytest.approx(loss("ce", 3)(logits, target).item(), abs=1e-6)


def test_age_regression_losses():
    # (pred - age) / 10 = (1.0, -0.2): smooth L1 (beta 1) = (0.5 + 0.02) / 2; MSE = (1 + 0.04) / 2
    pred, age = t([[30.0], [50.0]]), t([20.0, 52.0])
    assert build_age_regression_loss(NamedCfg(name="smooth_l1"))(pred, age).item() == pytest.approx(0.26)
    assert build_age_regression_loss(NamedCfg(name="mse"))(pred, age).item() == pytest.approx(0.52)


@pytest.mark.parametrize(
    "name, params, counts, weighted, message",
    [
        ("cross_entropy", {}, None, False, "valid names: ['ce', 'focal', 'lade', 'sce', 'soft_f1']"),
        ("focal", {"gamma": 2, "gama": 1}, None, False, "unknown param(s) ['gama']; valid params: ['alpha', 'gamma'"),
        ("focal", {"gamma": -1}, None, False, "'gamma' must be a number in [0.0, inf], got -1"),
        ("ce", {"label_smoothing": "a"}, None, False, "'label_smoothing' must be a number"),
        ("ce", {"weight": [1, 2]}, None, False, "unknown param(s) ['weight']"),
        ("focal", {"alpha": [1, 2, 3]}, None, False, "alpha needs 2 values"),
        ("soft_f1", {}, np.array([1, 2]), True, "does not take class weights"),
        ("lade", {}, None, False, "needs the training class counts"),
        ("ce", {}, None, True, "needs the training class counts"),
        ("ce", {}, np.array([1, 2, 3]), True, "class_counts has 3 entries, expected 2"),
    ],
)
def test_build_loss_errors(name, params, counts, weighted, message):
    with pytest.raises(ValueError) as err:
        loss(name, 2, counts, weighted, **params)
    assert message in str(err.value)


def test_unknown_regression_loss_lists_names():
    with pytest.raises(ValueError, match=r"valid names: \['mse', 'smooth_l1'\]"):
        build_age_regression_loss(NamedCfg(name="l1"))


def test_criterion_sums_weighted_heads_with_regression_age():
    crit = build_criterion(
        heads={"mask": 3, "gender": 2, "age": 1},
        loss=NamedCfg(name="ce"),
        head_losses={"gender": NamedCfg(name="focal", params={"gamma": 2.0})},
        head_weights={"mask": 1.0, "gender": 2.0, "age": 0.5},
        class_counts={"mask": np.array([5, 1, 1]), "gender": np.array([3, 4])},
        class_weighted=False,
        age_regression=True,
    )
    outputs = {"mask": t([[1.0, 2.0, 3.0]]), "gender": t([[0.0, LN3]]), "age": t([[30.0]])}
    targets = {"mask": t([[0, 0, 1]]), "gender": t([[0, 1]]), "age": t([20.0])}
    total, parts = crit(outputs, targets)
    assert parts == pytest.approx({"mask": 0.40760596, "gender": 0.01798013, "age": 0.5}, abs=1e-6)
    assert total.item() == pytest.approx(0.40760596 + 2 * 0.01798013 + 0.5 * 0.5, abs=1e-6)


def test_criterion_single_head_class_weighted_and_backward():
    counts = np.arange(1, 19)
    crit = build_criterion({"cls": 18}, NamedCfg(name="ce"), {}, {"mask": 1.0, "gender": 1.0, "age": 1.0},
                           {"cls": counts}, class_weighted=True, age_regression=False)
    logits = torch.randn(4, 18, generator=torch.Generator().manual_seed(0)).requires_grad_()
    labels = torch.tensor([0, 5, 17, 5])
    total, parts = crit({"cls": logits}, {"cls": F.one_hot(labels, 18).float()})
    w = torch.tensor(class_weights(counts), dtype=torch.float32)
    assert total.item() == pytest.approx(F.cross_entropy(logits, labels, weight=w).item(), abs=1e-5)
    assert set(parts) == {"cls"}
    total.backward()
    assert logits.grad is not None


def test_criterion_rejects_head_losses_for_missing_heads():
    with pytest.raises(ValueError, match=r"head_losses has unknown head\(s\) \['age'\]"):
        build_criterion({"cls": 18}, NamedCfg(name="ce"), {"age": NamedCfg(name="focal")}, {}, {}, False, False)


def test_criterion_regression_age_needs_one_output():
    with pytest.raises(ValueError, match="regression age head has 1 output, got 3"):
        build_criterion({"age": 3}, NamedCfg(name="ce"), {}, {}, {}, False, True)


@pytest.mark.parametrize("loss", ["ce", "soft_f1", "sce"])
def test_mask_only_rows_count_for_the_mask_loss_only(loss):
    from maskclf.models.heads import head_spec, make_targets

    spec = head_spec("multihead", "regression")
    crit = build_criterion(spec.heads, NamedCfg(name=loss), {}, {}, {"mask": np.ones(3), "gender": np.ones(2)},
                           False, True)
    g = torch.Generator().manual_seed(0)
    outputs = {"mask": torch.randn(4, 3, generator=g), "gender": torch.randn(4, 2, generator=g),
               "age": torch.randn(4, generator=g) * 10 + 40}
    labels, ages = torch.tensor([1, 18 + 2, 13, 18]), torch.tensor([40.0, float("nan"), 65.0, float("nan")])
    total, parts = crit(outputs, make_targets(labels, ages, spec))
    known = [0, 2]
    _, sub = crit({k: v[known] for k, v in outputs.items()}, make_targets(labels[known], ages[known], spec))
    assert parts["gender"] == pytest.approx(sub["gender"]) and parts["age"] == pytest.approx(sub["age"])
    plain = make_targets(torch.tensor([1, 14, 13, 0]), ages.nan_to_num(30.0), spec)
    assert parts["mask"] == pytest.approx(crit(outputs, plain)[1]["mask"])  # mask-only photos keep their mask loss
    only = [1, 3]
    _, none = crit({k: v[only] for k, v in outputs.items()}, make_targets(labels[only], ages[only], spec))
    assert none["gender"] == none["age"] == 0.0 and none["mask"] > 0


def test_a_batch_of_only_mask_only_photos_gives_the_gender_model_a_zero_it_can_backpropagate():
    from maskclf.models.heads import head_spec, make_targets

    spec = head_spec("separate", "classes").only("gender")
    crit = build_criterion(spec.heads, NamedCfg(name="ce"), {}, {}, {"gender": np.ones(2)}, False, False)
    logits = torch.randn(2, 2, requires_grad=True)
    total, parts = crit({"gender": logits}, make_targets(torch.tensor([18, 20]), torch.full((2,), float("nan")), spec))
    total.backward()
    assert float(total.detach()) == 0.0 and parts == {"gender": 0.0} and logits.grad.abs().sum() == 0
