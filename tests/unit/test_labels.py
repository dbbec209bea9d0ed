import numpy as np
import pytest

from maskclf.labels import (
    NUM_CLASSES,
    AgeBounds,
    attribute_names,
    class_names,
    combine_probs,
    decode,
    encode,
    split_probs,
)


def test_encode_matches_competition_table():
    assert encode(0, 0, 0) == 0
    assert encode(0, 1, 2) == 5
    assert encode(1, 0, 0) == 6  # incorrect / male / <30
    assert encode(2, 0, 1) == 13  # normal / male / 30-59
    assert encode(2, 1, 2) == 17


def test_decode_inverts_encode_for_all_18_classes():
    seen = set()
    for m in range(3):
        for g in range(2):
            for a in range(3):
                c = encode(m, g, a)
                assert decode(c) == (m, g, a)
                seen.add(c)
    assert seen == set(range(NUM_CLASSES))


def test_encode_decode_on_arrays():
    cls = np.arange(NUM_CLASSES)
    m, g, a = decode(cls)
    assert np.array_equal(encode(m, g, a), cls)
    assert m.tolist() == [0] * 6 + [1] * 6 + [2] * 6


@pytest.mark.parametrize("age, group", [(18, 0), (29, 0), (29.9, 0), (30, 1), (59, 1), (59.5, 1), (60, 2), (80, 2)])
def test_default_bounds_edges(age, group):
    b = AgeBounds()
    assert b.group(age) == group
    assert b.groups(np.array([age])).tolist() == [group]


def test_team_bounds_58_move_59_year_olds_to_old():
    b = AgeBounds(30, 58)
    assert [b.group(a) for a in (29, 30, 57, 58, 59, 60)] == [0, 1, 1, 2, 2, 2]
    assert b.names() == ("<30", "30-57", ">=58")


def test_groups_vectorised_matches_scalar():
    b = AgeBounds(25, 59)
    ages = np.arange(1, 100)
    assert b.groups(ages).tolist() == [b.group(a) for a in ages]


@pytest.mark.parametrize("young, old", [(60, 30), (30, 30), (0, 60), (-1, 60)])
def test_invalid_bounds_rejected(young, old):
    with pytest.raises(ValueError, match="young"):
        AgeBounds(young, old)


def test_names_follow_bounds():
    assert class_names()[0] == "wear/male/<30"
    assert class_names()[13] == "normal/male/30-59"
    assert class_names(AgeBounds(30, 59))[17] == "normal/female/>=59"
    assert len(set(class_names())) == NUM_CLASSES
    assert attribute_names()["age"] == ("<30", "30-59", ">=60")


def test_split_probs_marginals_of_one_hot():
    p = np.zeros((2, NUM_CLASSES))
    p[0, encode(1, 0, 2)] = 1.0
    p[1, encode(2, 1, 0)] = 1.0
    out = split_probs(p)
    assert out["mask"].tolist() == [[0, 1, 0], [0, 0, 1]]
    assert out["gender"].tolist() == [[1, 0], [0, 1]]
    assert out["age"].tolist() == [[0, 0, 1], [1, 0, 0]]


def test_combine_probs_hand_computed():
    p = combine_probs(np.array([[0.5, 0.5, 0.0]]), np.array([[0.2, 0.8]]), np.array([[1.0, 0.0, 0.0]]))
    assert p.shape == (1, NUM_CLASSES)
    assert p[0, encode(0, 0, 0)] == pytest.approx(0.1)
    assert p[0, encode(1, 1, 0)] == pytest.approx(0.4)
    assert p.sum() == pytest.approx(1.0)


def test_split_then_combine_round_trip():
    rng = np.random.default_rng(0)
    mask, gender, age = (rng.dirichlet(np.ones(k), size=4) for k in (3, 2, 3))
    p = combine_probs(mask, gender, age)
    assert np.allclose(p.sum(axis=1), 1.0)
    back = split_probs(p)
    assert np.allclose(back["mask"], mask)
    assert np.allclose(back["gender"], gender)
    assert np.allclose(back["age"], age)
    # argmax of the joint is the encoded argmax of the marginals for independent heads
    expect = encode(mask.argmax(1), gender.argmax(1), age.argmax(1))
    assert np.array_equal(p.argmax(1), expect)
