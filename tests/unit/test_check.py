import csv
import shutil
from pathlib import Path

import pytest
from PIL import Image

from maskclf.data.check import format_check, run_check, verify_image
from maskclf.config import DataCfg
from maskclf.layout import DataError

HEADER = ["id", "gender", "race", "age", "path"]


def make_train(tmp_path: Path, tiny_data: Path, n: int = 2) -> tuple[Path, list[dict[str, str]]]:
    """A competition-layout copy of the first n tiny people (train only)."""
    with (tiny_data / "train" / "train.csv").open() as fh:
        rows = list(csv.DictReader(fh))[:n]
    root = tmp_path / "data"
    for r in rows:
        shutil.copytree(tiny_data / "train" / "images" / r["path"], root / "train" / "images" / r["path"])
    write_rows(root / "train" / "train.csv", HEADER, rows)
    return root, rows


def write_rows(path: Path, header: list[str], rows: list[dict[str, str]]) -> None:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows([[r[k] for k in header] for r in rows])


def check(root: Path, **data) -> tuple:
    cfg = DataCfg(**data)
    report = run_check(root, cfg, progress=False)
    return report, format_check(report, cfg)


def test_tiny_is_clean(tiny_data):
    report, text = check(tiny_data)
    assert report.problems == [] and not report.fatal
    assert (len(report.train), len(report.eval)) == (168, 56)
    lines = text.splitlines()
    assert "train: 168 images, 24 people" in lines
    assert any(line.split() == ["0", "wear/male/<30", "20"] for line in lines)
    assert any(line.split() == ["17", "normal/female/>=60", "4"] for line in lines)
    assert "  mask   wear: 120  incorrect: 24  normal: 24" in lines
    assert "  gender male: 84  female: 84" in lines
    assert "  age    <30: 56  30-59: 56  >=60: 56" in lines
    assert "eval: 56 images" in lines
    assert "  label fixes (competition): none applied" in lines
    assert any("competition (bundled) not applied" in line for line in lines)
    assert lines[-2:] == ["problems: 0 fatal, 0 warnings", "result: OK"]


def test_report_uses_configured_bounds(tiny_data):
    _, text = check(tiny_data, age_bounds=(30, 58))
    assert "wear/male/30-57" in text and "age    <30:" in text and ">=58:" in text


def test_broken_images_are_reported_but_not_fatal(tmp_path, tiny_data):
    root, rows = make_train(tmp_path, tiny_data, 2)
    person = root / "train" / "images" / rows[0]["path"]
    data = (person / "mask2.jpg").read_bytes()
    (person / "mask2.jpg").write_bytes(data[: len(data) // 2])  # truncated JPEG
    (person / "mask3.jpg").write_text("this is not an image\n")  # text file named .jpg
    report, text = check(root)
    assert not report.fatal and len(report.train) == 14
    bad = {Path(p.path).name: p.message for p in report.problems}
    assert set(bad) == {"mask2.jpg", "mask3.jpg"}
    assert all(m.startswith("unreadable or truncated image") and m.endswith("(it will be skipped)") for m in bad.values())
    assert f"warning: {person / 'mask2.jpg'}: unreadable or truncated image" in text
    assert text.endswith("problems: 0 fatal, 2 warnings\n" + "\n".join(
        f"  {p}" for p in report.problems) + "\nresult: OK")
    skipped = run_check(root, DataCfg(), decode_images=False, progress=False)
    assert skipped.problems == []  # not decoding misses them, as documented


def test_verify_image(tmp_path, tiny_data):
    good = next((tiny_data / "eval" / "images").iterdir())
    assert verify_image(good) is None
    Image.new("RGB", (4, 4)).save(tmp_path / "dot.png")
    assert verify_image(tmp_path / "dot.png") == "image is too small (4x4); at least 8x8 is needed"
    (tmp_path / "empty.jpg").write_bytes(b"")
    assert verify_image(tmp_path / "empty.jpg").startswith("unreadable or truncated image")


def test_missing_columns_are_fatal(tmp_path, tiny_data):
    root, rows = make_train(tmp_path, tiny_data, 1)
    write_rows(root / "train" / "train.csv", ["id", "gender", "race", "path"], rows)
    report, text = check(root)
    assert report.fatal and report.train == []
    assert "train.csv: missing column(s) ['age']" in text
    assert text.splitlines()[-1] == "result: FAILED (fatal problems above)"


def test_row_problems_listed_with_counts_kept(tmp_path, tiny_data):
    root, rows = make_train(tmp_path, tiny_data, 3)
    shutil.rmtree(root / "train" / "images" / rows[2]["path"])
    (root / "train" / "images" / rows[0]["path"] / "notes.txt").write_text("x")
    report, text = check(root)
    assert report.fatal and len(report.train) == 14  # the two good people are still counted
    assert "train: 14 images, 2 people" in text
    assert "problems: 1 fatal, 1 warnings" in text
    assert f"ERROR: {root / 'train' / 'train.csv'}:4: image folder" in text
    assert "notes.txt: unexpected file name ignored" in text


def test_applied_label_fixes_are_reported(tmp_path, tiny_data):
    src = sorted((tiny_data / "train" / "images").iterdir())[0]
    root = tmp_path / "data"
    shutil.copytree(src, root / "train" / "images" / "000225_female_Asian_25")
    write_rows(root / "train" / "train.csv", HEADER,
               [dict(zip(HEADER, ["000225", "female", "Asian", "25", "000225_female_Asian_25"]))])
    report, text = check(root)
    assert report.fixes == {"gender": 1, "age": 0, "swap_incorrect_normal": 0}
    assert "  label fixes (competition): gender 1" in text.splitlines()
    _, text = check(root, label_fixes="none")
    assert "  label fixes (none): none applied" in text.splitlines()


def test_bad_label_fixes_file_is_fatal(tmp_path, tiny_data):
    report, text = check(tiny_data, label_fixes=str(tmp_path / "nope.yaml"))
    assert report.fatal and "label overrides file not found" in text


def test_eval_only_folder(tmp_path, tiny_data):
    shutil.copytree(tiny_data / "eval", tmp_path / "data" / "eval")
    report, text = check(tmp_path / "data")
    assert report.train == [] and len(report.eval) == 56 and not report.fatal
    assert "result: OK" in text


def test_not_a_dataset_folder(tmp_path):
    with pytest.raises(DataError, match="neither train/train.csv nor eval/info.csv found"):
        run_check(tmp_path, DataCfg(), progress=False)
    with pytest.raises(DataError, match="data folder not found"):
        run_check(tmp_path / "missing", DataCfg(), progress=False)


def test_csv_paths_outside_their_folders_are_fatal_and_never_opened(tmp_path, tiny_data, monkeypatch):
    root, rows = make_train(tmp_path, tiny_data, 2)
    rows[1]["path"] = "../../../../../../etc"
    write_rows(root / "train" / "train.csv", HEADER, rows)
    (root / "eval" / "images").mkdir(parents=True)
    (root / "eval" / "info.csv").write_text("ImageID,ans\n../../../../../../etc/passwd,0\n")
    import maskclf.data.check as check_module

    opened = []
    real = check_module.verify_image
    monkeypatch.setattr(check_module, "verify_image", lambda p, limit: opened.append(str(p)) or real(p, limit))
    report, text = check(root)
    assert report.fatal and not any("etc" in p for p in opened)
    assert f"path '../../../../../../etc' is not inside {root / 'train' / 'images'}" in text
    assert f"ImageID '../../../../../../etc/passwd' is not inside {root / 'eval' / 'images'}" in text


def test_an_empty_eval_set_fails_the_check(tmp_path):
    (tmp_path / "eval" / "images").mkdir(parents=True)
    (tmp_path / "eval" / "info.csv").write_text("ImageID,ans\n")
    report, text = check(tmp_path)
    assert report.fatal and f"ERROR: {tmp_path / 'eval' / 'info.csv'}: lists no images" in text
    assert text.endswith("result: FAILED (fatal problems above)")
