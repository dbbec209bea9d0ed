import numpy as np
import pytest
import torch

from maskclf.labels import AgeBounds, combine_probs, encode, split_probs
from maskclf.models.heads import age_bin_edges, age_probs, attribute_probs, class_counts, head_spec, make_targets, probs18

CONFIGS = [("single", "classes"), ("multihead", "classes"), ("multihead", "bins"), ("multihead", "regression"),
           ("separate", "classes"), ("separate", "bins"), ("separate", "regression")]


def random_outputs(spec, n=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = {k: torch.randn(n, c, generator=g) * 3 for k, c in spec.heads.items()}
    if spec.age_mode == "regression":
        out["age"] = torch.rand(n, generator=g) * 80
    return out


def test_head_spec_layouts():
    assert head_spec("single", "classes").heads == {"cls": 18}
    assert head_spec("multihead", "classes").heads == {"mask": 3, "gender": 2, "age": 3}
    assert head_spec("separate", "regression").heads == {"mask": 3, "gender": 2, "age": 1}
    assert head_spec("multihead", "bins", AgeBounds(), 5).heads["age"] == 13
    assert head_spec("separate", "classes").only("gender").heads == {"gender": 2}


@pytest.mark.parametrize("head,age", [("single", "bins"), ("double", "classes"), ("multihead", "years")])
def test_head_spec_rejects_bad_choices(head, age):
    with pytest.raises(ValueError, match="model\\."):
        head_spec(head, age)


def test_only_rejects_missing_head():
    with pytest.raises(ValueError, match="not in this spec"):
        head_spec("single", "classes").only("age")


def test_bin_edges_include_both_bounds():
    assert age_bin_edges(AgeBounds(), 5) == tuple(float(e) for e in range(0, 61, 5))
    assert age_bin_edges(AgeBounds(30, 58), 5)[-3:] == (50.0, 55.0, 58.0)
    edges = age_bin_edges(AgeBounds(30, 60), 7)
    assert {30.0, 60.0} <= set(edges)
    # no bin straddles a bound: its lowest and highest member ages fall in the same group
    b = AgeBounds(30, 60)
    for lo, hi in zip(edges, edges[1:]):
        assert b.group(lo) == b.group(hi - 0.01)


@pytest.mark.parametrize("bounds,ages,groups", [
    (AgeBounds(30, 60), [29, 30, 59, 60, 90], [0, 1, 1, 2, 2]),
    (AgeBounds(30, 59), [29, 30, 58, 59], [0, 1, 1, 2]),
    (AgeBounds(29, 58), [28, 29, 57, 58], [0, 1, 1, 2]),
])
def test_bins_map_back_to_groups_at_bounds(bounds, ages, groups):
    spec = head_spec("multihead", "bins", bounds, 5)
    labels = torch.tensor([encode(0, 0, g) for g in groups])
    target = make_targets(labels, torch.tensor(ages, dtype=torch.float32), spec)["age"]
    assert torch.equal(spec.bin_groups()[target.argmax(1)], torch.tensor(groups))
    # logits peaked on the target bin give that group almost all age probability
    p = age_probs(target * 20, spec)
    assert torch.equal(p.argmax(1), torch.tensor(groups))
    assert torch.allclose(p.max(1).values, torch.ones(len(ages)), atol=1e-6)


def test_make_targets_one_hot():
    labels = torch.tensor([0, 7, 17])  # (mask, gender, age): (0,0,0), (1,0,1), (2,1,2)
    ages = torch.tensor([20.0, 40.0, 60.0])
    single = make_targets(labels, ages, head_spec("single", "classes"))
    assert torch.equal(single["cls"], torch.eye(18)[[0, 7, 17]])
    multi = make_targets(labels, ages, head_spec("multihead", "classes"))
    assert torch.equal(multi["mask"], torch.eye(3)[[0, 1, 2]])
    assert torch.equal(multi["gender"], torch.eye(2)[[0, 0, 1]])
    assert torch.equal(multi["age"], torch.eye(3)[[0, 1, 2]])
    assert multi["mask"].dtype == torch.float32
    reg = make_targets(labels, ages, head_spec("multihead", "regression"))
    assert torch.equal(reg["age"], ages)


def test_unknown_ages_use_group_midpoints():
    labels = torch.tensor([encode(2, 1, 0), encode(2, 1, 1), encode(2, 1, 2), encode(0, 0, 1)])
    ages = torch.tensor([-1.0, -1.0, float("nan"), 33.0])
    reg = make_targets(labels, ages, head_spec("multihead", "regression"))["age"]
    assert reg.tolist() == [22.5, 45.0, 67.5, 33.0]
    bins = make_targets(labels, ages, head_spec("multihead", "bins", AgeBounds(), 5))["age"].argmax(1)
    assert bins.tolist() == [4, 9, 12, 6]  # bins [20,25), [45,50), [60,...), [30,35)


def test_make_targets_rejects_bad_labels():
    with pytest.raises(ValueError, match="0..17"):
        make_targets(torch.tensor([3, 21]), torch.zeros(2), head_spec("multihead", "classes"))
    with pytest.raises(ValueError, match="0..17"):
        make_targets(torch.tensor([-1]), torch.zeros(1), head_spec("single", "classes"))
    with pytest.raises(ValueError, match="mask head"):
        make_targets(torch.tensor([3, 18]), torch.zeros(2), head_spec("single", "classes"))


@pytest.mark.parametrize("age", ["classes", "bins", "regression"])
def test_mask_only_codes_train_the_mask_head_only(age):
    spec = head_spec("multihead", age, AgeBounds(), 5)
    labels = torch.tensor([4, 18 + 1, 18 + 2, 13])  # wear/female/30-59, mask-only incorrect, mask-only normal, ...
    t = make_targets(labels, torch.tensor([40.0, float("nan"), float("nan"), 70.0]), spec)
    assert t["mask"].argmax(1).tolist() == [0, 1, 2, 2]
    assert t["known"].tolist() == [1.0, 0.0, 0.0, 1.0]
    assert t["gender"][1:3].abs().sum() == 0 and t["gender"][[0, 3]].sum(1).tolist() == [1.0, 1.0]
    assert t["age"][1:3].abs().sum() == 0
    full = make_targets(labels[[0, 3]], torch.tensor([40.0, 70.0]), spec)
    torch.testing.assert_close(t["age"][[0, 3]], full["age"])
    assert "known" not in full
    counts = class_counts(labels.numpy(), np.array([40.0, np.nan, np.nan, 70.0], np.float32), spec)
    assert counts["mask"].tolist() == [1, 1, 2] and counts["gender"].tolist() == [1, 1]


@pytest.mark.parametrize("head,age", CONFIGS)
def test_probs18_rows_sum_to_one(head, age):
    spec = head_spec(head, age, AgeBounds(), 5)
    p = probs18(random_outputs(spec), spec)
    assert p.shape == (5, 18)
    assert (p >= 0).all()
    assert torch.allclose(p.sum(1), torch.ones(5), atol=1e-5)


def test_probs18_multihead_matches_numpy_combine():
    spec = head_spec("multihead", "classes")
    out = random_outputs(spec)
    parts = {k: v.softmax(1).numpy() for k, v in out.items()}
    expected = combine_probs(parts["mask"], parts["gender"], parts["age"])
    np.testing.assert_allclose(probs18(out, spec).numpy(), expected, rtol=1e-5)


def test_probs18_known_answer():
    spec = head_spec("multihead", "classes")
    out = {"mask": torch.tensor([[0.0, 0, 50]]), "gender": torch.tensor([[0.0, 50]]), "age": torch.tensor([[50.0, 0, 0]])}
    p = probs18(out, spec)
    assert p.argmax().item() == encode(2, 1, 0) == 15
    assert p[0, 15].item() == pytest.approx(1.0)


def test_probs18_needs_all_attributes():
    spec = head_spec("separate", "classes").only("mask")
    with pytest.raises(ValueError, match="missing"):
        probs18(random_outputs(spec), spec)


def test_attribute_probs_of_single_head_marginalises():
    spec = head_spec("single", "classes")
    out = random_outputs(spec)
    got = attribute_probs(out, spec)
    expected = split_probs(out["cls"].softmax(1).numpy())
    for k in ("mask", "gender", "age"):
        np.testing.assert_allclose(got[k].numpy(), expected[k], rtol=1e-5)


def test_attribute_probs_of_one_separate_model():
    spec = head_spec("separate", "regression").only("age")
    got = attribute_probs({"age": torch.tensor([20.0, 45.0, 70.0])}, spec)
    assert list(got) == ["age"]
    assert got["age"].argmax(1).tolist() == [0, 1, 2]


@pytest.mark.parametrize("bounds", [AgeBounds(30, 60), AgeBounds(58, 59)])
def test_regression_soft_groups(bounds):
    spec = head_spec("multihead", "regression", bounds)
    y, o = bounds.young, bounds.old
    years = torch.tensor([y - 0.2, y + 0.2, (y + o) / 2, o - 0.2, o + 0.2, 0.0, 120.0])
    p = age_probs(years, spec)
    assert torch.allclose(p.sum(1), torch.ones(len(years)))
    assert (p >= 0).all()
    assert p.argmax(1).tolist() == [0, 1, 1, 1, 2, 0, 2]
    assert p[0, 0] > 0.5 and p[-1, 2] > 0.999


def test_class_counts():
    labels = np.array([0, 0, 7, 17, 15])
    ages = np.array([20, 25, 40, 70, 22], dtype=np.float32)
    single = class_counts(labels, ages, head_spec("single", "classes"))
    assert single["cls"].tolist() == np.bincount(labels, minlength=18).tolist()
    multi = class_counts(labels, ages, head_spec("multihead", "classes"))
    assert multi["mask"].tolist() == [2, 1, 2]
    assert multi["gender"].tolist() == [3, 2]
    assert multi["age"].tolist() == [3, 1, 1]
    bins = class_counts(labels, ages, head_spec("multihead", "bins", AgeBounds(), 5))["age"]
    assert len(bins) == 13 and bins[4] == 2 and bins[5] == 1 and bins[8] == 1 and bins[12] == 1 and bins.sum() == 5
    reg = class_counts(labels, ages, head_spec("multihead", "regression"))["age"]
    assert reg.tolist() == [3, 1, 1]
