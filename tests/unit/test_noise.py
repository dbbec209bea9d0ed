import csv

import numpy as np
import pytest

from maskclf.utils.formats import OOF_COLUMNS
from maskclf.labels import AgeBounds, combine_probs, encode
from maskclf.toolkit.noise import Suspect, describe, find_label_noise, rank_label_noise, read_oof_rows, suggested_age, write_gallery, write_overrides
from maskclf.data.label_fixes import load_fixes

STEMS = [("incorrect_mask", 1), ("mask1", 0), ("mask2", 0), ("mask3", 0), ("mask4", 0), ("mask5", 0), ("normal", 2)]


def person_rows(pid, gender, age, labelled=None, swapped_labels=False, conf=0.9, rng=None, folder=None):
    """OOF rows of one person whose photos show (gender, age); `labelled` = (gender, age_group) in the labels."""
    bounds = AgeBounds()
    true_g, true_a = gender, bounds.group(age)
    lab_g, lab_a = labelled if labelled is not None else (true_g, true_a)
    folder = folder or f"{pid}_{'female' if lab_g else 'male'}_White_{age}"
    rows = []
    for stem, mask in STEMS:
        lab_mask = {1: 2, 2: 1}.get(mask, mask) if swapped_labels else mask
        noise = rng.uniform(-0.05, 0.05, 3) if rng is not None else np.zeros(3)
        m, g, a = (np.full((1, k), (1 - conf - e) / (k - 1)) for k, e in zip((3, 2, 3), noise))
        for arr, v, e in ((m, mask, noise[0]), (g, true_g, noise[1]), (a, true_a, noise[2])):
            arr[0, v] = conf + e
        rows.append({"key": f"{folder}/{stem}.jpg", "person": pid, "label": int(encode(lab_mask, lab_g, lab_a)),
                     "path": f"/nowhere/{folder}/{stem}.jpg", "probs": combine_probs(m, g, a)[0]})
    return rows


def test_gender_score_is_the_mean_probability_of_the_other_gender():
    rows = person_rows("000001", gender=1, age=40, labelled=(0, 1), conf=0.8)
    unsure = combine_probs(np.array([[0.1, 0.8, 0.1]]), np.array([[0.5, 0.5]]), np.array([[0.1, 0.8, 0.1]]))
    rows[0]["probs"] = unsure[0]
    (s,) = rank_label_noise(rows)
    assert (s.kind, s.person, s.current, s.suggested) == ("gender", "000001", 0, 1)
    assert s.score == pytest.approx((6 * 0.8 + 0.5) / 7)
    assert s.age == 40 and len(s.images) == 7


def test_age_suspect_scores_one_minus_probability_of_current_group():
    rows = person_rows("000002", gender=0, age=65, labelled=(0, 0), conf=0.7)
    (s,) = rank_label_noise(rows)
    assert (s.kind, s.current, s.suggested) == ("age", 0, 2)
    assert s.score == pytest.approx(1 - 0.15)
    assert describe(s) == ("<30", ">=60 (65)")  # folder says 65, label says <30: the folder age is not shown


def test_swap_score_is_geometric_mean_of_both_photos_looking_swapped():
    rows = person_rows("000003", gender=0, age=40, swapped_labels=True, conf=0.9)
    (s,) = rank_label_noise(rows)
    assert s.kind == "swap_incorrect_normal" and s.current == s.suggested == -1
    assert s.score == pytest.approx(0.9)
    # The photo labelled normal is the file incorrect_mask.jpg here (labels swapped), and vice versa.
    assert [k.rsplit("/", 1)[1] for k in s.evidence] == ["incorrect_mask.jpg", "normal.jpg"]


def test_agreeing_predictions_give_no_suspects():
    rows = person_rows("000004", gender=1, age=20) + person_rows("000005", gender=0, age=70)
    assert rank_label_noise(rows) == []


def test_ranking_recovers_known_flips_first():
    rng = np.random.default_rng(0)
    bounds = AgeBounds()
    rows, flipped = [], set()
    for i in range(60):
        pid, g, age = f"{i:06d}", int(rng.integers(2)), int(rng.choice([22, 45, 70]))
        # Sloppy model: clean people are only ~60 % confident, so their ranking has to come from real disagreement.
        conf, labelled, swapped = 0.6, None, False
        if i in (3, 17, 41):
            labelled, conf = (1 - g, bounds.group(age)), 0.85
            flipped.add((pid, "gender"))
        elif i in (8, 29):
            labelled, conf = (g, (bounds.group(age) + 1) % 3), 0.85
            flipped.add((pid, "age"))
        elif i in (5, 12, 33):  # clean labels, but the model leans the wrong way: must rank below real flips
            labelled, conf = (1 - g, bounds.group(age)), 0.6
        elif i == 50:
            swapped, conf = True, 0.85
            flipped.add((pid, "swap_incorrect_normal"))
        rows += person_rows(pid, g, age, labelled, swapped, conf=conf, rng=rng)
    ranked = rank_label_noise(rows)
    assert {(s.person, s.kind) for s in ranked[:len(flipped)]} == flipped
    assert len(ranked) == len(flipped) + 3
    assert [s.score for s in ranked] == sorted((s.score for s in ranked), reverse=True)


@pytest.mark.parametrize("age, current, group, years", [
    (27, 0, 1, 30), (45, 1, 0, 29), (45, 1, 2, 60), (70, 2, 1, 59), (None, 0, 2, 65),
    (45, 0, 2, 65),  # a folder-name age outside the labelled group is stale: use a typical age
])
def test_suggested_age_is_the_nearest_age_inside_the_group(age, current, group, years):
    s = Suspect("1", "age", 0.9, current=current, suggested=group, age=age)
    assert suggested_age(s, AgeBounds()) == years


def test_overrides_draft_loads_as_label_fixes(tmp_path):
    suspects = [Suspect("000225", "gender", 0.97, 0, 1, 25), Suspect("000007", "age", 0.9, 0, 1, 28),
                Suspect("000020", "swap_incorrect_normal", 0.8, -1, -1, 40)]
    path = write_overrides(suspects, tmp_path / "fixes.yaml")
    fixes = load_fixes(path)
    assert fixes.gender == {"000225": 1} and fixes.age == {"000007": 30}
    assert fixes.swap_incorrect_normal == {"000020"}
    text = path.read_text()
    assert "score 0.970, labelled male" in text and "score 0.800" in text


def test_overrides_draft_with_only_one_kind_still_loads(tmp_path):
    path = write_overrides([Suspect("000001", "gender", 0.6, 1, 0, None)], tmp_path / "fixes.yaml")
    fixes = load_fixes(path)
    assert fixes.gender == {"000001": 0} and fixes.age == {} and fixes.swap_incorrect_normal == set()


def test_gallery_shows_thumbnails_and_placeholders(tmp_path, tiny_data):
    folder = sorted((tiny_data / "train" / "images").iterdir())[0]
    rows = person_rows("000008", gender=1, age=26, labelled=(0, 0), folder=folder.name)
    for r in rows:
        r["path"] = str(folder / r["key"].split("/")[1])
    rows[-1]["path"] = str(tmp_path / "gone.jpg")
    page = write_gallery(rank_label_noise(rows), tmp_path / "g.html").read_text()
    assert page.count("data:image/jpeg;base64,") == 6 and page.count("image not found") == 1
    assert "labelled <b>male</b> &rarr; suggested <b>female</b>" in page and "score 0.900" in page


def write_oof(path, rows):
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(OOF_COLUMNS)
        for r in rows:
            w.writerow([r["key"], r["person"], r["label"], r["path"]] + [f"{p:.6g}" for p in r["probs"]])


def test_find_label_noise_reads_cv_folder_and_its_age_bounds(tmp_path):
    rows = person_rows("000009", gender=0, age=25) + person_rows("000010", gender=1, age=50)
    for r in rows[:7]:  # the model says 30-59 for a 25-year-old
        r["probs"] = combine_probs(np.array([[0.8, 0.1, 0.1]]), np.array([[0.9, 0.1]]), np.array([[0.2, 0.8, 0.0]]))[0]
    write_oof(tmp_path / "oof.csv", rows)
    assert len(read_oof_rows(tmp_path)) == 14
    (tmp_path / "cv_config.yaml").write_text("data:\n  age_bounds: [29, 60]\n")
    result = find_label_noise(tmp_path, top=5)
    assert result.bounds == AgeBounds(29, 60)
    assert [(s.person, s.kind) for s in result.suspects] == [("000009", "age")]
    assert load_fixes(result.overrides).age == {"000009": 29}  # nearest age in 29-59 under these bounds
    assert result.gallery.is_file() and result.table.read_text().count("\n") == 2


def test_find_label_noise_without_oof_says_what_to_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="maskclf cv"):
        find_label_noise(tmp_path)


def test_oof_file_with_wrong_columns_is_refused_by_name(tmp_path):
    (tmp_path / "oof.csv").write_text("key,person,label\na/b.jpg,1,0\n")
    with pytest.raises(ValueError, match=r"missing column\(s\) \['path', 'p0'"):
        read_oof_rows(tmp_path)
    rows = person_rows("000011", gender=0, age=25)
    write_oof(tmp_path / "oof.csv", rows)
    text = (tmp_path / "oof.csv").read_text().replace(",0.", ",x", 1)
    (tmp_path / "oof.csv").write_text(text)
    with pytest.raises(ValueError, match=r"oof.csv:2: .*000011_male_White_25/incorrect_mask.jpg"):
        read_oof_rows(tmp_path)


def test_overrides_draft_keeps_hostile_person_ids_intact(tmp_path):
    # Ids with quotes, newlines, YAML syntax and comment marks must round-trip, not break the file or add entries.
    odd = ['ab"c', 'x"\nswap_incorrect_normal:\n  - "000001', "k: v # not a comment", "- dash", "a" * 200]
    suspects = [Suspect(odd[0], "gender", 0.9, 0, 1, None), Suspect(odd[1], "age", 0.8, 0, 1, 25),
                Suspect(odd[2], "swap_incorrect_normal", 0.7, -1, -1, None),
                Suspect(odd[3], "gender", 0.6, 1, 0, None), Suspect(odd[4], "age", 0.5, 1, 2, 40)]
    fixes = load_fixes(write_overrides(suspects, tmp_path / "fixes.yaml"))
    assert fixes.gender == {odd[0]: 1, odd[3]: 0}
    assert fixes.age == {odd[1]: 30, odd[4]: 60}
    assert fixes.swap_incorrect_normal == {odd[2]}


def test_review_gallery_embeds_only_images_inside_the_cv_runs_train_images(tmp_path, tiny_data):
    folder = sorted((tiny_data / "train" / "images").iterdir())[0]
    rows = person_rows("000008", gender=1, age=26, labelled=(0, 0), folder=folder.name)
    for r in rows:
        r["path"] = str(folder / r["key"].split("/")[1])
    secret = tmp_path / "private.jpg"
    secret.write_bytes((folder / "normal.jpg").read_bytes())
    rows[0]["path"] = str(secret)  # a crafted oof.csv pointing outside the dataset
    rows[1]["path"] = str(folder / ".." / ".." / ".." / "eval" / "images" / "x.jpg")
    write_oof(tmp_path / "oof.csv", rows)
    (tmp_path / "cv_config.yaml").write_text(f"data:\n  root: {tiny_data}\n")
    page = find_label_noise(tmp_path, top=5).gallery.read_text()
    assert page.count("data:image/jpeg;base64,") == 5 and page.count("outside the images folder") == 2
