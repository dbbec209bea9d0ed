import json

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, log_loss, precision_recall_fscore_support

from maskclf.labels import AgeBounds
from maskclf.metrics import score, score_probs

LABELS = list(range(18))


def test_score_matches_sklearn_on_random_predictions():
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 18, 500)
    y_pred = np.where(rng.random(500) < 0.6, y_true, rng.integers(0, 18, 500))
    out = score(y_true, y_pred)
    assert out["n"] == 500
    assert out["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred))
    assert out["f1"] == pytest.approx(f1_score(y_true, y_pred, labels=LABELS, average="macro", zero_division=0))
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=LABELS, zero_division=0)
    assert [c["precision"] for c in out["per_class"]] == pytest.approx(p)
    assert [c["recall"] for c in out["per_class"]] == pytest.approx(r)
    assert [c["f1"] for c in out["per_class"]] == pytest.approx(f)
    assert [c["support"] for c in out["per_class"]] == s.tolist()
    assert out["confusion"] == confusion_matrix(y_true, y_pred, labels=LABELS).tolist()
    assert out["absent_classes"] == []
    json.dumps(out)  # plain JSON types only


def test_macro_f1_by_hand_with_one_mistake():
    y_true = np.arange(18)
    y_pred = y_true.copy()
    y_pred[0] = 1  # class 0: F1 0; class 1: precision 1/2, recall 1 -> F1 2/3; the other 16: F1 1
    out = score(y_true, y_pred)
    assert out["f1"] == pytest.approx((0 + 2 / 3 + 16) / 18)
    assert out["accuracy"] == pytest.approx(17 / 18)
    assert out["per_class"][1]["precision"] == pytest.approx(0.5)


def test_absent_classes_count_as_zero_in_the_macro_f1():
    out = score(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]))
    # class 0: P 1, R 1/2 -> F1 2/3; class 1: P 2/3, R 1 -> F1 4/5; 16 classes absent from both -> 0
    assert out["f1"] == pytest.approx((2 / 3 + 4 / 5) / 18)
    assert out["absent_classes"] == list(range(2, 18))


def test_per_attribute_scores_decode_the_classes():
    # true: wear/male/<30 (0), normal/female/>=60 (17); predicted: wear/female/<30 (3), normal/male/>=60 (14)
    out = score(np.array([0, 17]), np.array([3, 14]))
    mask, gender, age = (out["attributes"][h] for h in ("mask", "gender", "age"))
    assert (mask["accuracy"], gender["accuracy"], age["accuracy"]) == (1.0, 0.0, 1.0)
    assert mask["confusion"] == [[1, 0, 0], [0, 0, 0], [0, 0, 1]]
    assert gender["confusion"] == [[0, 1], [1, 0]]
    assert mask["f1"] == pytest.approx(2 / 3)  # 'incorrect' is absent and counts as 0
    assert mask["names"] == ["wear", "incorrect", "normal"]
    assert age["names"] == ["<30", "30-59", ">=60"]


def test_class_names_follow_the_age_bounds():
    out = score(np.array([2]), np.array([2]), AgeBounds(young=25, old=55))
    assert out["per_class"][2]["name"] == "wear/male/>=55"
    assert out["attributes"]["age"]["names"] == ["<25", "25-54", ">=55"]


def test_score_probs_is_argmax_plus_log_loss():
    rng = np.random.default_rng(1)
    y_true = rng.integers(0, 18, 100)
    probs = rng.dirichlet(np.ones(18), 100)
    out = score_probs(y_true, probs)
    assert out["accuracy"] == pytest.approx(accuracy_score(y_true, probs.argmax(1)))
    assert out["log_loss"] == pytest.approx(log_loss(y_true, probs, labels=LABELS))


@pytest.mark.parametrize("y_true, y_pred, message", [
    ([0, 18], [0, 1], "0-17"),
    ([0, -1], [0, 1], "0-17"),
    ([0.0, 1.0], [0, 1], "integer"),
    ([0, 1, 2], [0, 1], "3 true and 2 predicted"),
    ([], [], "non-empty"),
])
def test_bad_labels_raise(y_true, y_pred, message):
    with pytest.raises(ValueError, match=message):
        score(np.array(y_true), np.array(y_pred, dtype=np.int64))


def test_score_probs_rejects_wrong_shape():
    with pytest.raises(ValueError, match=r"\(N, 18\)"):
        score_probs(np.array([0]), np.ones((1, 3)) / 3)
