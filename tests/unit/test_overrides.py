import csv
import shutil
from pathlib import Path

import pytest

from maskclf.config import DataCfg
from maskclf.data.scan import scan_train
from maskclf.layout import DataError
from maskclf.labels import AgeBounds
from maskclf.data.label_fixes import applies, apply_fixes, load_fixes
from maskclf.data.train_data import load_train

HEADER = ["id", "gender", "race", "age", "path"]


def make_people(tmp_path: Path, tiny_data: Path, people: list[tuple[str, str, str, int]]) -> Path:
    """A competition-layout folder whose people (id, gender, race, age) reuse tiny's photos."""
    sources = sorted((tiny_data / "train" / "images").iterdir())
    root = tmp_path / "data"
    rows = []
    for (pid, gender, race, age), src in zip(people, sources):
        folder = f"{pid}_{gender}_{race}_{age}"
        shutil.copytree(src, root / "train" / "images" / folder)
        rows.append([pid, gender, race, age, folder])
    with (root / "train" / "train.csv").open("w", newline="") as fh:
        csv.writer(fh).writerows([HEADER] + rows)
    return root


def by_person(records) -> dict[str, dict[str, tuple[int, int, int, int]]]:
    """person -> file name -> (mask, gender, age, age_group)."""
    out: dict[str, dict] = {}
    for r in records:
        out.setdefault(r.person, {})[r.path.name] = (r.mask, r.gender, r.age, r.age_group)
    return out


def test_bundled_fixes_load_with_their_guard():
    fixes = load_fixes("competition")
    assert fixes.only_if_all_races == {"asian"}
    assert fixes.gender["000225"] == 0 and fixes.gender["004432"] == 1
    assert fixes.age["004348"] == 61 and fixes.age["001009"] == 29
    assert fixes.swap_incorrect_normal == {"000020", "004418", "005227"}
    assert len(fixes) == 32


def test_bundled_fixes_applied_to_an_all_asian_competition_folder(tmp_path, tiny_data):
    root = make_people(tmp_path, tiny_data, [
        ("000225", "female", "Asian", 25),
        ("000020", "male", "Asian", 40),
        ("004348", "male", "Asian", 58),
        ("000001", "female", "Asian", 33),  # not in the list: untouched
    ])
    td = load_train(DataCfg(root=root))
    assert td.fixes == {"gender": 1, "age": 1, "swap_incorrect_normal": 1}
    assert td.fixes_note == ""
    got = by_person(td.records)
    assert {v[1] for v in got["000225"].values()} == {0}  # female -> male, all 7 images
    swapped = got["000020"]
    assert swapped["incorrect_mask.jpg"][0] == 2 and swapped["normal.jpg"][0] == 1
    assert all(swapped[f"mask{i}.jpg"][0] == 0 for i in range(1, 6))
    assert {v[2:] for v in got["004348"].values()} == {(61, 2)}  # age 58 -> 61, age group recomputed
    assert got["000001"] == by_person(scan_train(root).records)["000001"]


def test_age_fix_uses_the_configured_bounds(tmp_path, tiny_data):
    root = make_people(tmp_path, tiny_data, [("004348", "male", "Asian", 58)])
    td = load_train(DataCfg(root=root, age_bounds=(30, 62)))
    assert {(r.age, r.age_group) for r in td.records} == {(61, 1)}


def test_bundled_fixes_not_applied_when_any_person_is_not_asian(tmp_path, tiny_data):
    root = make_people(tmp_path, tiny_data, [("000225", "female", "Asian", 25), ("000020", "male", "White", 40)])
    td = load_train(DataCfg(root=root))
    assert td.fixes == {"gender": 0, "age": 0, "swap_incorrect_normal": 0}
    assert "not applied" in td.fixes_note and "['white']" in td.fixes_note
    assert by_person(td.records) == by_person(scan_train(root).records)


@pytest.mark.parametrize("name", ["tiny", "utkmask"])
def test_bundled_fixes_not_applied_to_shared_sets(shared_data, name):
    # utkmask reuses competition ids (000020, 000225, 000664, 001009) for different people
    root = shared_data / name
    td = load_train(DataCfg(root=root))
    assert set(td.fixes.values()) == {0}
    assert "not applied" in td.fixes_note
    assert by_person(td.records) == by_person(scan_train(root).records)
    if name == "utkmask":  # the guard is what protects these people: their ids are in the bundled list
        listed = set(load_fixes("competition").gender) | load_fixes("competition").swap_incorrect_normal
        assert {"000020", "000225", "000664"} <= listed & {r.person for r in td.records}


def test_user_yaml_overrides(tmp_path, tiny_data):
    records = scan_train(tiny_data).records
    base = by_person(records)
    male = next(p for p, v in base.items() if next(iter(v.values()))[1] == 0)
    young = next(p for p, v in base.items() if next(iter(v.values()))[3] == 0)
    f = tmp_path / "fixes.yaml"
    # ids unquoted on purpose: they must stay strings ('000008', not the octal number 8)
    f.write_text(f"gender:\n  {male}: female\nage:\n  {young}: 65\nswap_incorrect_normal: [{male}]\n")
    fixes = load_fixes(f)
    assert applies(fixes, records) == (True, "")
    out, touched = apply_fixes(records, fixes, AgeBounds())
    assert touched == {"gender": 1, "age": 1, "swap_incorrect_normal": 1}
    got = by_person(out)
    assert {v[1] for v in got[male].values()} == {1}
    assert got[male]["incorrect_mask.jpg"][0] == 2 and got[male]["normal.jpg"][0] == 1
    assert {v[2:] for v in got[young].values()} == {(65, 2)}
    assert sum(got[p] != base[p] for p in base) == (1 if male == young else 2)


def test_unquoted_ids_stay_strings(tmp_path):
    f = tmp_path / "fixes.yaml"
    f.write_text("gender:\n  000225: female\nage:\n  000123: 61\nswap_incorrect_normal:\n  - 000020\n")
    fixes = load_fixes(f)
    assert (fixes.gender, fixes.age, fixes.swap_incorrect_normal) == ({"000225": 1}, {"000123": 61}, {"000020"})


def test_user_csv_overrides(tmp_path, tiny_data):
    records = scan_train(tiny_data).records
    pid = records[0].person
    f = tmp_path / "fixes.csv"
    f.write_text(f"id,action,value\n{pid},gender,{'female' if records[0].gender == 0 else 'male'}\n"
                 f"{pid},age,45\n{pid},swap_incorrect_normal,\n999999,age,50\n")
    out, touched = apply_fixes(records, load_fixes(f), AgeBounds())
    assert touched == {"gender": 1, "age": 1, "swap_incorrect_normal": 1}  # 999999 is not in the data: ignored
    mine = [r for r in out if r.person == pid]
    assert {(r.gender, r.age, r.age_group) for r in mine} == {(1 - records[0].gender, 45, 1)}


def test_fixes_that_change_nothing_count_nothing(tiny_data, tmp_path):
    records = scan_train(tiny_data).records
    r = records[0]
    f = tmp_path / "same.yaml"
    f.write_text(f"gender: {{'{r.person}': {r.gender}}}\nage: {{'{r.person}': {r.age}}}\n")
    out, touched = apply_fixes(records, load_fixes(f), AgeBounds())
    assert out == records and set(touched.values()) == {0}


def test_none_means_no_fixes(tiny_data):
    fixes = load_fixes("none")
    assert len(fixes) == 0
    records = scan_train(tiny_data).records
    assert apply_fixes(records, fixes, AgeBounds())[0] == records


@pytest.mark.parametrize("text, expect", [
    ("gender:\n  '000008': male\nflip: ['000008']\n", r"unknown key\(s\) \['flip'\]; valid keys are"),
    ("gender:\n  '000008': m\n", r"gender\.000008: gender 'm' must be male/female"),
    ("age:\n  '000008': sixty\n", r"age\.000008: age 'sixty' is not a whole number"),
    ("age:\n  '000008': 200\n", r"age\.000008: age 200 is out of range"),
    ("gender: ['000008']\n", r"'gender' must be a mapping of person id -> value"),
    ("swap_incorrect_normal: '000008'\n", r"'swap_incorrect_normal' must be a list"),
    ("- 000008\n", r"expected a mapping with keys"),
    ("gender: {'000008': male\n", r"not valid YAML"),
])
def test_bad_yaml_files_name_the_file(tmp_path, text, expect):
    f = tmp_path / "my_fixes.yaml"
    f.write_text(text)
    with pytest.raises(DataError, match=expect) as exc:
        load_fixes(f)
    assert str(exc.value).startswith(str(f))


@pytest.mark.parametrize("text, expect", [
    ("id,action,value\n000008,flip,\n", r"my_fixes\.csv:2: action 'flip' is not one of"),
    ("id,action,value\n000008,gender,x\n", r"my_fixes\.csv:2: gender 'x' must be male/female"),
    ("id,action,value\n000008,age,\n", r"my_fixes\.csv:2: age '' is not a whole number"),
    ("id,action,value\n,age,40\n", r"my_fixes\.csv:2: empty id"),
    ("person,what\n000008,age\n", r"my_fixes\.csv: expected columns id,action,value"),
])
def test_bad_csv_files_name_the_file_and_line(tmp_path, text, expect):
    f = tmp_path / "my_fixes.csv"
    f.write_text(text)
    with pytest.raises(DataError, match=expect):
        load_fixes(f)


def test_missing_overrides_file(tmp_path):
    with pytest.raises(DataError, match=r"label overrides file not found: .*nope\.yaml \(or use 'competition' / 'none'\)"):
        load_fixes(tmp_path / "nope.yaml")


def test_load_train_needs_a_folder(tmp_path):
    with pytest.raises(DataError, match="no data folder given"):
        load_train(DataCfg())
    with pytest.raises(DataError, match="data folder not found"):
        load_train(DataCfg(root=tmp_path / "missing"))
