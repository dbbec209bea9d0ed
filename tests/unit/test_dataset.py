import csv
import shutil
from collections import Counter
from pathlib import Path

import pytest

from maskclf.config import DataCfg
from maskclf.data.scan import read_ground_truth, scan_eval, scan_train, with_labels
from maskclf.layout import DataError
from maskclf.labels import AgeBounds, encode
from maskclf.data.train_data import load_train

HEADER = ["id", "gender", "race", "age", "path"]


def tiny_rows(tiny_data: Path, n: int) -> list[dict[str, str]]:
    with (tiny_data / "train" / "train.csv").open() as fh:
        return list(csv.DictReader(fh))[:n]


def write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)


def make_train(tmp_path: Path, tiny_data: Path, n: int = 3) -> tuple[Path, list[dict[str, str]]]:
    """A competition-layout copy of the first n tiny people: (root, their CSV rows)."""
    rows = tiny_rows(tiny_data, n)
    root = tmp_path / "data"
    for r in rows:
        shutil.copytree(tiny_data / "train" / "images" / r["path"], root / "train" / "images" / r["path"])
    write_csv(root / "train" / "train.csv", HEADER, [[r[k] for k in HEADER] for r in rows])
    return root, rows


def make_eval(tmp_path: Path, tiny_data: Path, n: int = 4) -> tuple[Path, list[str]]:
    with (tiny_data / "eval" / "info.csv").open() as fh:
        ids = [r["ImageID"] for r in csv.DictReader(fh)][:n]
    root = tmp_path / "data"
    (root / "eval" / "images").mkdir(parents=True)
    for i in ids:
        shutil.copy(tiny_data / "eval" / "images" / i, root / "eval" / "images" / i)
    write_csv(root / "eval" / "info.csv", ["ImageID", "ans"], [[i, 0] for i in ids])
    return root, ids


def messages(scan, fatal: bool) -> str:
    return "\n".join(str(p) for p in scan.problems if p.fatal == fatal)


# --- the real tiny set -------------------------------------------------------------------------

def test_scan_tiny_train(tiny_data):
    scan = scan_train(tiny_data)
    assert scan.problems == []
    assert len(scan.records) == 168
    people = Counter(r.person for r in scan.records)
    assert len(people) == 24 and set(people.values()) == {7}
    assert Counter(r.mask for r in scan.records) == {0: 120, 1: 24, 2: 24}
    labels = Counter(r.label for r in scan.records)  # README table: 20 per worn class, 4 per other class
    assert [labels[c] for c in range(18)] == [20] * 6 + [4] * 12


def test_tiny_records_match_their_folder_names(tiny_data):
    for r in scan_train(tiny_data).records:
        pid, gender, race, age = r.path.parent.name.split("_")
        assert r.person == pid and r.race == race and r.age == int(age)
        assert r.gender == {"male": 0, "female": 1}[gender]
        assert r.age_group == AgeBounds().group(int(age))
        assert r.key == f"{r.path.parent.name}/{r.path.name}"
        assert r.mask == {"mask": 0, "incorrect_mask": 1, "normal": 2}[r.path.stem.rstrip("12345")]
        assert r.label == encode(r.mask, r.gender, r.age_group)


def test_scan_accepts_the_train_folder_itself(tiny_data):
    assert len(scan_train(tiny_data / "train").records) == 168


def test_scan_tiny_eval_in_info_order(tiny_data):
    scan = scan_eval(tiny_data)
    with (tiny_data / "eval" / "info.csv").open() as fh:
        ids = [r["ImageID"] for r in csv.DictReader(fh)]
    assert scan.problems == []
    assert [r.key for r in scan.records] == ids
    assert all(r.label == -1 and r.path.is_file() for r in scan.records)


def test_ground_truth_attaches_labels(tiny_data):
    gt = read_ground_truth(tiny_data / "eval" / "gt.csv")
    assert len(gt) == 56 and set(gt.values()) <= set(range(18))
    recs = with_labels(scan_eval(tiny_data).records, gt)
    assert [r.label for r in recs] == [gt[r.key] for r in recs]


def test_bounds_are_applied_at_scan_time(tmp_path, tiny_data):
    root, rows = make_train(tmp_path, tiny_data, 1)
    rows[0]["age"] = "59"
    write_csv(root / "train" / "train.csv", HEADER, [[r[k] for k in HEADER] for r in rows])
    assert {r.age_group for r in scan_train(root).records} == {1}
    assert {r.age_group for r in scan_train(root, AgeBounds(30, 58)).records} == {2}


# --- broken layouts: each problem names the file ----------------------------------------------------

def test_hidden_files_ignored_with_one_warning(tmp_path, tiny_data):
    root, rows = make_train(tmp_path, tiny_data, 2)
    person = root / "train" / "images" / rows[0]["path"]
    (person / "._mask1.jpg").write_bytes(b"\x00\x05\x16\x07")
    (person / ".DS_Store").write_bytes(b"\x00")
    (root / "train" / "images" / ".DS_Store").write_bytes(b"\x00")
    scan = scan_train(root)
    assert len(scan.records) == 14 and not scan.fatal
    assert len(scan.problems) == 1
    msg = str(scan.problems[0])
    assert msg.startswith("warning:") and "ignored 3 hidden file(s)" in msg and "._mask1.jpg" in msg


def test_unexpected_file_names_warned(tmp_path, tiny_data):
    root, rows = make_train(tmp_path, tiny_data, 1)
    person = root / "train" / "images" / rows[0]["path"]
    (person / "notes.txt").write_text("hi")
    shutil.copy(person / "mask1.jpg", person / "mask6.jpg")
    scan = scan_train(root)
    assert len(scan.records) == 7 and not scan.fatal
    warned = messages(scan, fatal=False)
    assert f"{person / 'notes.txt'}: unexpected file name" in warned
    assert f"{person / 'mask6.jpg'}: unexpected file name" in warned


def test_any_image_extension_and_case(tmp_path, tiny_data):
    root, rows = make_train(tmp_path, tiny_data, 1)
    person = root / "train" / "images" / rows[0]["path"]
    (person / "mask1.jpg").rename(person / "mask1.png")
    (person / "normal.jpg").rename(person / "Normal.JPEG")
    scan = scan_train(root)
    assert scan.problems == []
    by_name = {r.path.name: r.mask for r in scan.records}
    assert by_name["mask1.png"] == 0 and by_name["Normal.JPEG"] == 2


def test_duplicate_stems_are_fatal(tmp_path, tiny_data):
    root, rows = make_train(tmp_path, tiny_data, 1)
    person = root / "train" / "images" / rows[0]["path"]
    shutil.copy(person / "mask1.jpg", person / "mask1.png")
    scan = scan_train(root)
    assert scan.fatal
    assert "two images for 'mask1': mask1.jpg and mask1.png" in messages(scan, fatal=True)
    assert str(person / "mask1.png") in messages(scan, fatal=True)


@pytest.mark.parametrize("drop", [["age"], ["gender", "path"]])
def test_missing_columns_name_the_csv_and_columns(tmp_path, tiny_data, drop):
    root, rows = make_train(tmp_path, tiny_data, 1)
    header = [h for h in HEADER if h not in drop]
    csv_path = root / "train" / "train.csv"
    write_csv(csv_path, header, [[r[k] for k in header] for r in rows])
    with pytest.raises(DataError) as exc:
        scan_train(root)
    assert str(csv_path) in str(exc.value) and f"missing column(s) {drop}" in str(exc.value)


def test_missing_csv_and_missing_images_folder(tmp_path, tiny_data):
    with pytest.raises(DataError, match=r"train[/\\]train\.csv: file not found"):
        scan_train(tmp_path)
    root, _ = make_train(tmp_path, tiny_data, 1)
    shutil.rmtree(root / "train" / "images")
    with pytest.raises(DataError, match=r"images: folder not found"):
        scan_train(root)


def test_row_with_surplus_values_names_the_line(tmp_path, tiny_data):
    root, rows = make_train(tmp_path, tiny_data, 2)
    csv_path = root / "train" / "train.csv"
    write_csv(csv_path, HEADER, [[rows[0][k] for k in HEADER], [rows[1][k] for k in HEADER] + ["oops"]])
    with pytest.raises(DataError, match=rf"{csv_path}:3: 6 values but 5 columns"):
        scan_train(root)


def test_folder_name_disagreeing_with_csv_is_a_warning(tmp_path, tiny_data):
    root, rows = make_train(tmp_path, tiny_data, 1)
    old = rows[0]["gender"]
    rows[0]["gender"] = "female" if old == "male" else "male"
    csv_path = root / "train" / "train.csv"
    write_csv(csv_path, HEADER, [[r[k] for k in HEADER] for r in rows])
    scan = scan_train(root)
    assert not scan.fatal and len(scan.records) == 7
    assert f"{csv_path}:2: folder name '{rows[0]['path']}' disagrees with the CSV row (gender '{old}'" in messages(scan, False)
    assert {r.gender for r in scan.records} == {0 if rows[0]["gender"] == "male" else 1}  # the CSV wins


def test_missing_person_folder_is_fatal(tmp_path, tiny_data):
    root, rows = make_train(tmp_path, tiny_data, 2)
    shutil.rmtree(root / "train" / "images" / rows[1]["path"])
    scan = scan_train(root)
    assert scan.fatal and len(scan.records) == 7
    assert f"train.csv:3: image folder {root / 'train' / 'images' / rows[1]['path']} does not exist" in messages(scan, True)


def test_unlisted_folder_and_missing_images_are_warnings(tmp_path, tiny_data):
    root, rows = make_train(tmp_path, tiny_data, 2)
    write_csv(root / "train" / "train.csv", HEADER, [[rows[0][k] for k in HEADER]])
    (root / "train" / "images" / rows[0]["path"] / "incorrect_mask.jpg").unlink()
    scan = scan_train(root)
    assert not scan.fatal and len(scan.records) == 6
    warned = messages(scan, False)
    assert f"{rows[1]['path']}: folder is not listed in train.csv" in warned
    assert "missing image(s): ['incorrect_mask']" in warned


@pytest.mark.parametrize("field, value, expect", [
    ("gender", "M", "gender 'M' is not one of ['female', 'male']"),
    ("age", "abc", "age 'abc' is not a number"),
    ("age", "inf", "age 'inf' is not a number"),
    ("age", "0", "age 0 is out of range"),
    ("age", "200", "age 200 is out of range"),
    ("id", "", "empty id or path"),
])
def test_bad_values_are_fatal_and_name_the_line(tmp_path, tiny_data, field, value, expect):
    root, rows = make_train(tmp_path, tiny_data, 2)
    rows[1][field] = value
    write_csv(root / "train" / "train.csv", HEADER, [[r[k] for k in HEADER] for r in rows])
    scan = scan_train(root)
    assert scan.fatal and len(scan.records) == 7
    assert f"train.csv:3: {expect}" in messages(scan, True)


def test_duplicate_person_rows_are_fatal(tmp_path, tiny_data):
    root, rows = make_train(tmp_path, tiny_data, 2)
    write_csv(root / "train" / "train.csv", HEADER, [[r[k] for k in HEADER] for r in rows + rows[:1]])
    scan = scan_train(root)
    assert scan.fatal and len(scan.records) == 14
    assert f"train.csv:4: duplicate id '{rows[0]['id']}' (first at line 2) and path" in messages(scan, True)


def test_eval_missing_image_and_duplicate_id(tmp_path, tiny_data):
    root, ids = make_eval(tmp_path, tiny_data, 4)
    (root / "eval" / "images" / ids[1]).unlink()
    write_csv(root / "eval" / "info.csv", ["ImageID", "ans"], [[i, 0] for i in ids + ids[:1]])
    scan = scan_eval(root)
    assert scan.fatal and [r.key for r in scan.records] == [ids[0], ids[2], ids[3]]
    errors = messages(scan, True)
    assert f"info.csv:3: image {root / 'eval' / 'images' / ids[1]} does not exist" in errors
    assert f"info.csv:6: duplicate ImageID {ids[0]} (first at line 2)" in errors


def test_eval_unlisted_files_warned_and_hidden_ignored(tmp_path, tiny_data):
    root, ids = make_eval(tmp_path, tiny_data, 2)
    shutil.copy(root / "eval" / "images" / ids[0], root / "eval" / "images" / "stray.jpg")
    (root / "eval" / "images" / "._stray.jpg").write_bytes(b"\x00")
    scan = scan_eval(root)
    assert not scan.fatal and len(scan.records) == 2
    assert messages(scan, False).splitlines() == [
        f"warning: {root / 'eval' / 'images'}: ignored 1 hidden file(s), e.g. ['._stray.jpg']",
        f"warning: {root / 'eval' / 'images'}: 1 file(s) not listed in info.csv ignored, e.g. ['stray.jpg']",
    ]


def test_eval_bad_csv_and_layout(tmp_path, tiny_data):
    root, ids = make_eval(tmp_path, tiny_data, 2)
    write_csv(root / "eval" / "info.csv", ["image", "ans"], [[i, 0] for i in ids])
    with pytest.raises(DataError, match=r"info\.csv: missing column\(s\) \['ImageID'\]"):
        scan_eval(root)
    shutil.rmtree(root / "eval" / "images")
    write_csv(root / "eval" / "info.csv", ["ImageID", "ans"], [[i, 0] for i in ids])
    with pytest.raises(DataError, match="images: folder not found"):
        scan_eval(root)


@pytest.mark.parametrize("ans, expect", [("x", "is not an integer"), ("18", "outside 0-17")])
def test_bad_ground_truth(tmp_path, ans, expect):
    gt = tmp_path / "gt.csv"
    write_csv(gt, ["ImageID", "ans"], [["a.jpg", 3], ["b.jpg", ans]])
    with pytest.raises(DataError, match=rf"gt\.csv:3: ans .*{expect}"):
        read_ground_truth(gt)


# --- load_train: what training gets ------------------------------------------------------------

def test_load_train_refuses_fatal_problems(tmp_path, tiny_data):
    root, rows = make_train(tmp_path, tiny_data, 2)
    shutil.rmtree(root / "train" / "images" / rows[1]["path"])
    with pytest.raises(DataError, match=r"1 fatal problem\(s\) \(see `maskclf check .*`\):\n  ERROR: .*train\.csv:3: image folder"):
        load_train(DataCfg(root=root))


def test_load_train_with_extra_folders(tmp_path, tiny_data):
    extra, rows = make_train(tmp_path, tiny_data, 1)
    rows[0]["id"] = "900001"
    write_csv(extra / "train" / "train.csv", HEADER, [[r[k] for k in HEADER] for r in rows])
    td = load_train(DataCfg(root=tiny_data, extra=[extra]))
    assert len(td.records) == 168
    assert [len(v) for v in td.extra.values()] == [7]
    assert {r.person for r in td.extra[extra]} == {"900001"}
    assert any("disagrees with the CSV" in p.message for p in td.problems)  # the extra folder's warning is kept
    with pytest.raises(DataError, match=r"extra data .*: person ids also in"):
        load_train(DataCfg(root=tiny_data, extra=[tiny_data]))


def test_train_paths_leaving_train_images_are_refused_by_row(tmp_path, tiny_data):
    root, rows = make_train(tmp_path, tiny_data, 3)
    outside = tmp_path / "outside_person"
    shutil.copytree(tiny_data / "train" / "images" / rows[0]["path"], outside)
    listed = [[r[k] for k in HEADER] for r in rows]
    listed[1][4] = str(outside)  # absolute
    listed[2][4] = "../../../outside_person"  # relative, climbing out
    write_csv(root / "train" / "train.csv", HEADER, listed)
    scan = scan_train(root)
    assert scan.fatal and {r.person for r in scan.records} == {rows[0]["id"]}
    errors = messages(scan, True)
    assert f"train.csv:3: path '{outside}' is not inside {root / 'train' / 'images'}" in errors
    assert f"train.csv:4: path '../../../outside_person' is not inside {root / 'train' / 'images'}" in errors


def test_eval_image_ids_leaving_eval_images_are_refused_by_row(tmp_path, tiny_data):
    root, ids = make_eval(tmp_path, tiny_data, 2)
    train_img = root / "train" / "images" / "p" / "normal.jpg"
    train_img.parent.mkdir(parents=True)
    shutil.copy(root / "eval" / "images" / ids[0], train_img)
    hostile = ["../../train/images/p/normal.jpg", str(train_img), "../../../../../../etc/passwd"]
    write_csv(root / "eval" / "info.csv", ["ImageID", "ans"], [[i, 0] for i in ids + hostile])
    scan = scan_eval(root)
    assert scan.fatal and [r.key for r in scan.records] == ids
    errors = messages(scan, True)
    for line, image_id in enumerate(hostile, start=4):
        assert f"info.csv:{line}: ImageID '{image_id}' is not inside {root / 'eval' / 'images'}" in errors
