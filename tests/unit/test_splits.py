from collections import Counter
from pathlib import Path

import pytest

from maskclf.data.scan import scan_train
from maskclf.layout import Record
from maskclf.data.splits import Split, holdout, kfold, people


@pytest.fixture(scope="module")
def tiny_records(tiny_data):
    return scan_train(tiny_data).records


@pytest.fixture(scope="module")
def utk_records(shared_data):
    return scan_train(shared_data / "utkmask").records


def fake(n_people: int, strata: list[int], images: int = 2) -> list[Record]:
    """n_people people (person i in stratum strata[i % len(strata)]), `images` records each."""
    out = []
    for i in range(n_people):
        s = strata[i % len(strata)]
        for m in range(images):
            out.append(Record(path=Path(f"{i}/{m}.jpg"), key=f"{i}/{m}", person=f"{i:06d}", mask=min(m, 2),
                              gender=s // 3, age=40, age_group=s % 3))
    return out


def assert_person_disjoint(split: Split, records: list[Record]) -> None:
    assert not set(split.train) & set(split.val)
    assert set(split.train) | set(split.val) == {r.person for r in records}
    tr, va = split.partition(records)
    assert len(tr) + len(va) == len(records)
    assert {r.person for r in tr} == set(split.train) and {r.person for r in va} == set(split.val)


def strata_share(split_ids: list[str], stratum: dict[str, int]) -> dict[int, float]:
    c = Counter(stratum[p] for p in split_ids)
    return {s: c[s] / len(split_ids) for s in range(6)}


def test_people_and_strata(tiny_records):
    ids, strata = people(tiny_records)
    assert len(ids) == 24 and ids == sorted(ids)
    assert Counter(strata) == {s: 4 for s in range(6)}  # tiny: 4 people per gender x age group


@pytest.mark.parametrize("fraction", [0.1, 0.2, 0.25, 0.3, 0.5])
def test_holdout_on_tiny(tiny_records, fraction):
    split = holdout(tiny_records, fraction, seed=1)
    assert_person_disjoint(split, tiny_records)
    assert abs(len(split.val) - 24 * fraction) <= 0.5
    ids, strata = people(tiny_records)
    stratum = dict(zip(ids, strata))
    for s in range(6):  # 4 people per stratum: each stratum gives its share of the validation people, +-1
        assert abs(sum(stratum[p] == s for p in split.val) - 4 * len(split.val) / 24) < 1


@pytest.mark.parametrize("fraction", [0.05, 0.1, 0.2, 0.33])
def test_holdout_on_utkmask_sized_data(utk_records, fraction):
    split = holdout(utk_records, fraction, seed=7)
    n = len({r.person for r in utk_records})
    assert n == 1750
    assert_person_disjoint(split, utk_records)
    assert abs(len(split.val) - n * fraction) <= 0.5
    ids, strata = people(utk_records)
    stratum = dict(zip(ids, strata))
    # each stratum is split in proportion: within one person of its share
    for s, size in Counter(strata).items():
        in_val = sum(stratum[p] == s for p in split.val)
        assert abs(in_val - size * len(split.val) / n) < 1
    tr, va = strata_share(split.train, stratum), strata_share(split.val, stratum)
    assert max(abs(tr[s] - va[s]) for s in range(6)) < 0.02


def test_every_image_of_a_person_on_one_side(utk_records):
    split = holdout(utk_records, 0.2, seed=0)
    tr, va = split.partition(utk_records)
    assert Counter(r.person for r in va) == {p: 7 for p in split.val}
    assert len(tr) == 7 * len(split.train)


def test_holdout_is_seeded(tiny_records, utk_records):
    assert holdout(tiny_records, 0.2, 3) == holdout(tiny_records, 0.2, 3)
    assert holdout(utk_records, 0.2, 3) == holdout(utk_records, 0.2, 3)
    assert holdout(utk_records, 0.2, 3).val != holdout(utk_records, 0.2, 4).val
    assert holdout(tiny_records, 0.25, 3).val != holdout(tiny_records, 0.25, 4).val


def test_holdout_ignores_record_order(tiny_records):
    assert holdout(tiny_records[::-1], 0.2, 5) == holdout(tiny_records, 0.2, 5)


def test_holdout_rejects_empty_sides(tiny_records):
    for bad in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError, match="val_fraction must be in"):
            holdout(tiny_records, bad, 0)
    with pytest.raises(ValueError, match="leaves an empty side"):
        holdout(tiny_records, 0.01, 0)
    with pytest.raises(ValueError, match="leaves an empty side"):
        holdout(tiny_records, 0.99, 0)


@pytest.mark.parametrize("n_people, strata", [
    (2, [0]),
    (3, [0, 1, 2]),  # every stratum has one person
    (7, [0, 0, 0, 0, 0, 5, 4]),
    (11, [0, 1, 2, 3, 4, 5, 0, 0, 0, 0, 0]),
])
def test_holdout_degenerate_strata(n_people, strata):
    records = fake(n_people, strata)
    split = holdout(records, 0.34, seed=0)
    assert_person_disjoint(split, records)
    assert len(split.val) == round(n_people * 0.34)


@pytest.mark.parametrize("k", [2, 3, 5])
def test_kfold_covers_every_person_once(tiny_records, k):
    folds = kfold(tiny_records, k, seed=0)
    assert len(folds) == k
    val_people = [p for f in folds for p in f.val]
    assert sorted(val_people) == people(tiny_records)[0]  # each person validated exactly once
    for f in folds:
        assert_person_disjoint(f, tiny_records)
        assert abs(len(f.val) - 24 / k) < 1


def test_kfold_on_utkmask_is_stratified_and_seeded(utk_records):
    folds = kfold(utk_records, 5, seed=0)
    ids, strata = people(utk_records)
    stratum = dict(zip(ids, strata))
    assert sorted(p for f in folds for p in f.val) == ids
    overall = strata_share(ids, stratum)
    for f in folds:
        assert len(f.val) == 350
        share = strata_share(f.val, stratum)
        assert max(abs(share[s] - overall[s]) for s in range(6)) < 0.01
    assert [f.method for f in folds] == [f"kfold:5:{i}" for i in range(5)]
    assert kfold(utk_records, 5, seed=0) == folds
    assert kfold(utk_records, 5, seed=1)[0].val != folds[0].val


@pytest.mark.parametrize("n_people, strata, k", [(3, [0, 1, 2], 3), (5, [0, 0, 0, 0, 5], 2), (9, [0, 1, 2, 3], 4)])
def test_kfold_degenerate_strata(n_people, strata, k):
    records = fake(n_people, strata)
    folds = kfold(records, k, seed=0)
    assert sorted(p for f in folds for p in f.val) == sorted({r.person for r in records})


def test_kfold_rejects_bad_k(tiny_records):
    for k in (1, 25):
        with pytest.raises(ValueError, match=r"k must be between 2 and the number of people \(24\)"):
            kfold(tiny_records, k, 0)


def test_split_save_load_round_trip(tmp_path, tiny_records):
    split = holdout(tiny_records, 0.25, seed=9)
    split.save(tmp_path / "split.json")
    again = Split.load(tmp_path / "split.json")
    assert again == split
    assert again.method == "holdout:0.25" and again.seed == 9
    assert again.partition(tiny_records) == split.partition(tiny_records)


def test_split_load_rejects_other_files(tmp_path):
    (tmp_path / "a.json").write_text('{"train": []}')
    (tmp_path / "b.json").write_text("not json")
    for name in ("a.json", "b.json"):
        with pytest.raises(ValueError, match=rf"{name}: not a split saved by maskclf"):
            Split.load(tmp_path / name)


def test_partition_drops_people_in_neither_list(tiny_records):
    ids = people(tiny_records)[0]
    tr, va = Split(train=ids[:2], val=ids[2:3], method="manual", seed=0).partition(tiny_records)
    assert (len(tr), len(va)) == (14, 7)
