import json

import numpy as np
import pytest

from maskclf.inference.ensemble import Combination, Source, combine, ensemble, search_weights
from maskclf.labels import NUM_CLASSES, encode, split_probs
from maskclf.utils.formats import read_probs, write_probs


def onehotish(classes, confidence):
    """Rows with `confidence` on the given class and the rest spread evenly."""
    confidence = np.broadcast_to(confidence, (len(classes),))
    p = np.repeat(((1 - confidence) / (NUM_CLASSES - 1))[:, None], NUM_CLASSES, axis=1)
    p[np.arange(len(classes)), classes] = confidence
    return p


def rows(*spec):
    """(N, 18) rows from {class: probability} dicts (unlisted classes 0)."""
    p = np.zeros((len(spec), NUM_CLASSES))
    for i, d in enumerate(spec):
        for c, v in d.items():
            p[i, c] = v
    return p


def test_soft_voting_with_weights_matches_hand_computation():
    a = rows({0: 0.6, 1: 0.4}, {5: 1.0})
    b = rows({0: 0.2, 1: 0.8}, {5: 0.5, 6: 0.5})
    out = combine([a, b], "soft", [3, 1])  # weights 0.75 / 0.25
    assert out[0, 0] == pytest.approx(0.75 * 0.6 + 0.25 * 0.2)  # 0.5
    assert out[0, 1] == pytest.approx(0.75 * 0.4 + 0.25 * 0.8)  # 0.5
    assert out[1, 5] == pytest.approx(0.875) and out[1, 6] == pytest.approx(0.125)
    assert out.sum(1) == pytest.approx([1, 1])
    assert combine([a, b], "soft")[0, 1] == pytest.approx(0.6)  # no weights: equal


def test_hard_voting_counts_votes_and_breaks_ties_by_the_soft_average():
    a = rows({1: 0.9, 2: 0.1}, {3: 0.51, 4: 0.49}, {7: 0.6, 8: 0.4})
    b = rows({1: 0.4, 2: 0.6}, {4: 0.9, 3: 0.1}, {7: 0.55, 8: 0.45})
    c = rows({2: 0.7, 1: 0.3}, {8: 1.0}, {8: 0.9, 7: 0.1})
    out = combine([a, b, c], "hard")
    # row 0: votes 1,2,2 -> class 2 although the soft average prefers class 1 (0.533 vs 0.467)
    assert out[0].argmax() == 2 and out[0, 2] == pytest.approx(2 / 3, abs=1e-5)
    # row 1: one vote each for 3, 4, 8: the soft average (3: .203, 4: .463, 8: .333) picks 4
    assert out[1].argmax() == 4
    assert out[1, 3] == pytest.approx(1 / 3, abs=1e-5) and out[1, 8] == pytest.approx(1 / 3, abs=1e-5)
    # row 2: votes 7,7,8 -> 7
    assert out[2].argmax() == 7
    assert out.sum(1) == pytest.approx([1, 1, 1])
    # weights count as votes: c with weight 3 outvotes a + b (1 + 1)
    assert combine([a, b, c], "hard", [1, 1, 3])[2].argmax() == 8


def test_attribute_method_takes_each_attribute_from_its_member(tmp_path):
    ids = ["img0", "img1"]
    # A: sure of mask (incorrect / normal), unsure of the rest; B: sure of male, age >= 60 / <30 and mask wear
    a = rows({encode(1, 0, 0): 0.5, encode(1, 1, 1): 0.5}, {encode(2, 1, 0): 0.7, encode(2, 0, 2): 0.3})
    b = rows({encode(0, 0, 2): 1.0}, {encode(0, 1, 0): 0.8, encode(1, 1, 0): 0.2})
    write_probs(tmp_path / "a.probs.csv", ids, a)
    write_probs(tmp_path / "b.probs.csv", ids[::-1], b[::-1])  # row order must not matter
    out = tmp_path / "ens.csv"
    info = ensemble([tmp_path / "a.probs.csv", tmp_path / "b.probs.csv"], out,
                    Combination("attribute", attribute_from={"mask": 0, "gender": 1, "age": 1}))
    got_ids, got = read_probs(tmp_path / "ens.probs.csv")
    assert got_ids == ids and info["members"] == ["a", "b"]
    # image 0: mask incorrect (A), male and >= 60 (B) with certainty
    assert got[0, encode(1, 0, 2)] == pytest.approx(1.0)
    # image 1: mask normal from A (1.0); gender female from B (1.0); age <30 from B (1.0)
    assert got[1, encode(2, 1, 0)] == pytest.approx(1.0)
    parts = split_probs(got)
    assert parts["mask"][0] == pytest.approx([0, 1, 0])
    sub = (out.read_text().splitlines())
    assert sub == ["ImageID,ans", f"img0,{encode(1, 0, 2)}", f"img1,{encode(2, 1, 0)}"]


def test_attribute_method_mixes_marginals_by_hand():
    a = rows({encode(0, 0, 0): 0.25, encode(1, 1, 2): 0.75})  # mask: wear .25 incorrect .75
    b = rows({encode(2, 0, 1): 0.4, encode(0, 1, 2): 0.6})  # gender: m .4 f .6; age: 30-59 .4, >=60 .6
    out = combine([a, b], "attribute", attribute_from={"mask": 0, "gender": 1, "age": 1})
    assert out[0, encode(1, 1, 2)] == pytest.approx(0.75 * 0.6 * 0.6)
    assert out[0, encode(0, 0, 1)] == pytest.approx(0.25 * 0.4 * 0.4)
    assert out.sum() == pytest.approx(1.0)


def test_one_probability_file_ensemble_reproduces_it(tmp_path):
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(NUM_CLASSES), size=5)
    ids = [f"id{i}" for i in range(5)]
    write_probs(tmp_path / "m.probs.csv", ids, p)
    ensemble([tmp_path / "m.probs.csv"], tmp_path / "out.csv")
    assert (tmp_path / "out.probs.csv").read_text() == (tmp_path / "m.probs.csv").read_text()
    expected = ["ImageID,ans"] + [f"{i},{c}" for i, c in zip(ids, p.argmax(1))]
    assert (tmp_path / "out.csv").read_text().splitlines() == expected
    info = json.loads((tmp_path / "out.ensemble.json").read_text())
    assert info["members"] == ["m"] and info["rows"] == 5 and not (tmp_path / "out_members").exists()


def synthetic_oof(n_people=60, seed=0):
    """Two members' OOF probabilities: A right on 90% of images, B right on 30%."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n_people * 3) % NUM_CLASSES
    keys = [f"k{i}" for i in range(len(labels))]

    def member(right):
        pred = np.where(rng.random(len(labels)) < right, labels, rng.integers(0, NUM_CLASSES, len(labels)))
        return onehotish(pred, rng.uniform(0.3, 0.95, len(labels)))

    return keys, labels, member(0.9), member(0.3)


def test_weight_search_prefers_the_clearly_better_member():
    keys, labels, good, bad = synthetic_oof()
    sources = [Source("bad", [], np.zeros((0, 18)), (keys, bad, labels)),
               Source("good", [], np.zeros((0, 18)), (keys[::-1], good[::-1], labels[::-1]))]  # order differs
    weights, best, equal = search_weights(sources, trials=50)
    assert weights[1] > 0.6 > weights[0]
    f1_good = search_weights(sources[1:], trials=0)[1]
    assert best >= f1_good - 1e-9 and best > equal
    hard_weights, _, _ = search_weights(sources, method="hard", trials=50)
    assert hard_weights[1] > hard_weights[0]


def test_weight_search_without_oof_is_a_clear_error(tmp_path):
    src = Source("plain", ["a"], np.ones((1, 18)) / 18)
    with pytest.raises(ValueError, match=r"needs out-of-fold predictions.*\['plain'\]"):
        search_weights([src])
    write_probs(tmp_path / "m.probs.csv", ["a"], np.ones((1, 18)) / 18)
    with pytest.raises(ValueError, match=r"every member must be a cv folder with oof.csv.*m.probs.csv"):
        ensemble([tmp_path / "m.probs.csv"], tmp_path / "out.csv", Combination(search=True))
    assert not (tmp_path / "out.csv").exists()


@pytest.mark.parametrize("kwargs, message", [
    ({"method": "vote"}, "unknown ensemble method 'vote'"),
    ({"weights": [1, 1], "search": True}, "either weights or a weight search"),
    ({"method": "attribute", "weights": [1, 2], "attribute_from": {"mask": 0, "gender": 0, "age": 1}},
     "weights do not apply"),
    ({"attribute_from": {"mask": 0, "gender": 0, "age": 1}}, "only apply to method 'attribute'"),
    ({"method": "attribute", "attribute_from": {"mask": 0, "age": 1}}, "each of mask, gender and age"),
    ({"method": "attribute", "attribute_from": {"mask": 0, "gender": 2, "age": 1}}, "out of range: there are 2"),
    ({"weights": [1, -1]}, "non-negative weights"),
    ({"weights": [1]}, "need 2 non-negative weights"),
])
def test_bad_options_are_refused(tmp_path, kwargs, message):
    for name in "ab":
        write_probs(tmp_path / f"{name}.probs.csv", ["x"], np.ones((1, 18)) / 18)
    with pytest.raises(ValueError, match=message):
        ensemble([tmp_path / "a.probs.csv", tmp_path / "b.probs.csv"], tmp_path / "out.csv", Combination(**kwargs))


def test_members_must_cover_the_same_images(tmp_path):
    write_probs(tmp_path / "a.probs.csv", ["x", "y"], np.ones((2, 18)) / 18)
    write_probs(tmp_path / "b.probs.csv", ["x", "z"], np.ones((2, 18)) / 18)
    with pytest.raises(ValueError, match="member 'b' covers different ImageIDs than 'a'"):
        ensemble([tmp_path / "a.probs.csv", tmp_path / "b.probs.csv"], tmp_path / "out.csv")


def test_model_members_need_an_eval_folder_and_must_exist(tmp_path):
    (tmp_path / "run").mkdir()
    with pytest.raises(ValueError, match="is a model: give --eval"):
        ensemble([tmp_path / "run"], tmp_path / "out.csv")
    with pytest.raises(FileNotFoundError, match="not a probabilities CSV, checkpoint, run folder or cv folder"):
        ensemble([tmp_path / "run"], tmp_path / "out.csv", eval_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="ensemble member .*nope not found"):
        ensemble([tmp_path / "nope"], tmp_path / "out.csv", eval_dir=tmp_path)
