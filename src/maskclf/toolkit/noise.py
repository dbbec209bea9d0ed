"""`maskclf noise`: rank likely label errors from out-of-fold probabilities; review gallery and draft overrides.

All seven photos of a person share gender and age, so those are judged on the person's averaged attribute
probabilities; mask labels are judged on the person's `normal` and `incorrect_mask` photos (a swap of the two).
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from maskclf.toolkit.compare import image_cell
from maskclf.config import load_config
from maskclf.layout import is_within
from maskclf.utils.atomic import write_atomic
from maskclf.utils.formats import read_oof, write_csv
from maskclf.labels import GENDER_NAMES, MASK_NAMES, AgeBounds, attribute_names, decode, split_probs

KINDS = ("gender", "age", "swap_incorrect_normal")
HEAD_OF = {"gender": "gender", "age": "age", "swap_incorrect_normal": "mask"}


@dataclass
class Suspect:
    """One likely label error; `score` is how confident the OOF predictions are that the current label is wrong."""

    person: str
    kind: str  # one of KINDS
    score: float
    current: int  # gender or age group now (-1 for a swap)
    suggested: int  # suggested gender or age group (-1 for a swap)
    age: int | None  # the person's age in years, when the image folder name gives it
    images: list[dict] = field(default_factory=list, repr=False)  # the person's OOF rows (key, path, label, probs)
    evidence: list[str] = field(default_factory=list)  # keys of the images the judgement rests on


def read_oof_rows(path: Path) -> list[dict]:
    """oof.csv (or a cv folder holding one) as rows with key, person, label, path and 18 `probs`."""
    meta, probs = read_oof(path)
    return [{**m, "probs": p} for m, p in zip(meta, probs)]


def _age_from_path(path: str) -> int | None:
    """Age from a competition image folder name '<id>_<gender>_<race>_<age>', if it has one."""
    tail = Path(path).parent.name.rsplit("_", 1)[-1]
    return int(tail) if tail.isdigit() else None


def _attribute_suspect(person: str, rows: list[dict], head: str, index: int) -> Suspect | None:
    """Gender or age group (`index` into decode) disagreeing with the person's averaged OOF marginals."""
    labels = np.array([decode(r["label"])[index] for r in rows])
    current = int(np.bincount(labels).argmax())
    mean = split_probs(np.stack([r["probs"] for r in rows]))[head].mean(axis=0)
    suggested = int(mean.argmax())
    if suggested == current:
        return None
    return Suspect(person, head, float(1.0 - mean[current]), current, suggested, _age_from_path(rows[0]["path"]),
                   rows, [r["key"] for r in rows])


def _swap_suspect(person: str, rows: list[dict]) -> Suspect | None:
    """The `normal` photo looks incorrect-masked and the `incorrect_mask` photo looks unmasked."""
    by_mask = {decode(r["label"])[0]: r for r in rows if decode(r["label"])[0] in (1, 2)}
    if len(by_mask) < 2 or sum(decode(r["label"])[0] in (1, 2) for r in rows) != 2:
        return None
    inc = split_probs(by_mask[1]["probs"])["mask"][0]
    nor = split_probs(by_mask[2]["probs"])["mask"][0]
    if not (nor[1] > nor[2] and inc[2] > inc[1]):
        return None
    # Geometric mean of the two "this photo is the other one" probabilities: both must look swapped.
    score = float(np.sqrt(nor[1] * inc[2]))
    return Suspect(person, "swap_incorrect_normal", score, -1, -1, _age_from_path(rows[0]["path"]), rows,
                   [by_mask[2]["key"], by_mask[1]["key"]])


def rank_label_noise(oof_rows: list[dict]) -> list[Suspect]:
    """Every gender, age-group and incorrect/normal-swap suspect in the OOF rows, most confident first."""
    people: dict[str, list[dict]] = {}
    for r in oof_rows:
        people.setdefault(str(r["person"]), []).append(r)
    suspects = []
    for person, rows in people.items():
        found = (_attribute_suspect(person, rows, "gender", 1), _attribute_suspect(person, rows, "age", 2),
                 _swap_suspect(person, rows))
        suspects += [s for s in found if s is not None]
    return sorted(suspects, key=lambda s: (-s.score, s.person, s.kind))


def _known_age(s: Suspect, bounds: AgeBounds) -> int | None:
    """The folder-name age, unless it falls outside the labelled group (the label was fixed after naming)."""
    return s.age if s.age is not None and bounds.group(s.age) == s.current else None


def suggested_age(s: Suspect, bounds: AgeBounds) -> int:
    """Years to write for an age suspect: the age nearest the person's current one inside the suggested group."""
    lo, hi = [(1, bounds.young - 1), (bounds.young, bounds.old - 1), (bounds.old, 129)][s.suggested]
    age = _known_age(s, bounds)
    if age is None:  # no age known: a typical adult age inside the group
        return [max(lo, bounds.young - 5), (lo + hi) // 2, bounds.old + 5][s.suggested]
    return int(min(max(age, lo), hi))


def describe(s: Suspect, bounds: AgeBounds = AgeBounds()) -> tuple[str, str]:
    """(current label, suggested label) in words, e.g. ('<30 (27)', '30-59 (30)')."""
    if s.kind == "gender":
        return GENDER_NAMES[s.current], GENDER_NAMES[s.suggested]
    if s.kind == "age":
        names, age = bounds.names(), _known_age(s, bounds)
        return names[s.current] + (f" ({age})" if age is not None else ""), \
            f"{names[s.suggested]} ({suggested_age(s, bounds)})"
    return "as labelled", "normal <-> incorrect mask swapped"


def _yaml_entry(entry: dict | list, note: str) -> list[str]:
    """One section entry as YAML writes it (quoted and escaped as needed), indented, `note` on its last line."""
    text = yaml.safe_dump(entry, width=float("inf"), allow_unicode=True).rstrip("\n")
    lines = ["  " + line for line in text.split("\n")]
    lines[-1] += note
    return lines


def write_overrides(suspects: list[Suspect], path: Path, bounds: AgeBounds = AgeBounds()) -> Path:
    """A draft label-overrides YAML (the format `data.label_fixes` reads), each entry commented with its score."""
    lines = ["# Draft label overrides from `maskclf noise`: review each entry against the gallery and delete the",
             "# ones that are wrong. Ages are the nearest age in the suggested group: put the real age if you know it.",
             "# This file replaces data.label_fixes, so copy in any fixes you already use.",
             "# use: maskclf train DATA_DIR --set data.label_fixes=<this file>"]
    for kind in KINDS:
        entries = [s for s in suspects if s.kind == kind]
        if not entries:
            lines.append(f"{kind}: {'[]' if kind == 'swap_incorrect_normal' else '{}'}")
            continue
        lines.append(f"{kind}:")
        for s in entries:
            now, new = describe(s, bounds)
            note = f"  # score {s.score:.3f}" + ("" if kind == "swap_incorrect_normal" else f", labelled {now}")
            if kind == "gender":
                lines += _yaml_entry({s.person: GENDER_NAMES[s.suggested]}, note)
            elif kind == "age":
                lines += _yaml_entry({s.person: suggested_age(s, bounds)}, f"{note} -> {new}")
            else:
                lines += _yaml_entry([s.person], note)
    data = ("\n".join(lines) + "\n").encode()
    path = Path(path)
    write_atomic(path, lambda fh: fh.write(data))
    return path


def write_suspects_csv(suspects: list[Suspect], path: Path, bounds: AgeBounds = AgeBounds()) -> Path:
    """The whole ranking as CSV: rank, person, kind, score, current, suggested."""
    write_csv(path, ["rank", "person", "kind", "score", "current", "suggested"],
              ([i, s.person, s.kind, f"{s.score:.4f}", *describe(s, bounds)] for i, s in enumerate(suspects, start=1)))
    return Path(path)


def _image_html(row: dict, s: Suspect, bounds: AgeBounds, image_dirs: list[Path] | None) -> str:
    head = HEAD_OF[s.kind]
    probs = split_probs(row["probs"])[head][0]
    names = attribute_names(bounds)[head]
    label_value = decode(row["label"])[{"mask": 0, "gender": 1, "age": 2}[head]]
    cells = " ".join(f"<span class='{'lab' if i == label_value else ''}'>{html.escape(n)} {p:.2f}</span>"
                     for i, (n, p) in enumerate(zip(names, probs)))
    path = Path(row["path"])
    img, _ = image_cell(path if image_dirs is None or any(is_within(path, d) for d in image_dirs) else None)
    mark = " class='evidence'" if row["key"] in s.evidence and s.kind == "swap_incorrect_normal" else ""
    return (f"<figure{mark}>{img}<figcaption><div class='id'>{html.escape(Path(row['key']).name)} "
            f"({MASK_NAMES[decode(row['label'])[0]]})</div>{cells}</figcaption></figure>")


def write_gallery(suspects: list[Suspect], path: Path, bounds: AgeBounds = AgeBounds(), title: str = "",
                  image_dirs: list[Path] | None = None) -> Path:
    """An HTML review page: per suspect the person's photos, current vs suggested label and the score.

    With `image_dirs`, only photos inside those folders are embedded; others get a placeholder.
    """
    blocks = []
    for rank, s in enumerate(suspects, start=1):
        now, new = describe(s, bounds)
        figures = "".join(_image_html(r, s, bounds, image_dirs) for r in s.images)
        blocks.append(f"<section><h3>#{rank} person {html.escape(s.person)}: {s.kind} "
                      f"<span class='score'>score {s.score:.3f}</span></h3>"
                      f"<p>labelled <b>{html.escape(now)}</b> &rarr; suggested <b>{html.escape(new)}</b></p>"
                      f"{figures}</section>")
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Label noise review</title>
<style>
body {{ font-family: sans-serif; margin: 1em; }}
section {{ border-top: 1px solid #ccc; padding: 4px 0; }}
figure {{ display: inline-block; width: 110px; margin: 3px; vertical-align: top; font-size: 10px; }}
figure.evidence img {{ outline: 3px solid #c00; }}
.lab {{ font-weight: bold; text-decoration: underline; }} .id {{ color: #666; }} .missing {{ color: #a00; }}
.score {{ color: #a50; font-weight: normal; }}
</style></head><body>
<h2>Likely label errors{': ' + html.escape(title) if title else ''}</h2>
<p>{len(suspects)} suspect(s), most confident first. Under each photo: the out-of-fold probabilities of the
attribute in question; the photo's current label is underlined. Score = how confident the predictions are that
the current label is wrong (for swaps: geometric mean over the two outlined photos).</p>
{chr(10).join(blocks)}
</body></html>
"""
    Path(path).write_text(page, encoding="utf-8")
    return Path(path)


@dataclass
class NoiseResult:
    """Suspected label errors and the gallery, draft fixes and table written."""

    suspects: list[Suspect]
    overrides: Path
    gallery: Path
    table: Path
    bounds: AgeBounds


def find_label_noise(cv_dir: Path, top: int = 50, out: Path | None = None) -> NoiseResult:
    """Rank suspects from `cv_dir/oof.csv`; write the review gallery and draft overrides (top N) and the full table."""
    if top < 1:
        raise ValueError(f"--top must be at least 1, got {top}")
    cv_dir = Path(cv_dir)
    if not (cv_dir / "oof.csv").is_file():
        raise FileNotFoundError(f"{cv_dir / 'oof.csv'} not found (run `maskclf cv` first; it writes oof.csv)")
    cv_config = cv_dir / "cv_config.yaml"
    data = load_config([cv_config] if cv_config.is_file() else []).data
    bounds = AgeBounds(*data.age_bounds)
    # oof.csv names image files: embed only those in the cv run's train image folders (either layout).
    roots = [Path(r) for r in [data.root, *data.extra] if r is not None]
    image_dirs = [r / "train" / "images" for r in roots] + [r / "images" for r in roots]
    suspects = rank_label_noise(read_oof_rows(cv_dir / "oof.csv"))
    out = Path(out) if out is not None else cv_dir / "noise"
    out.mkdir(parents=True, exist_ok=True)
    return NoiseResult(suspects, write_overrides(suspects[:top], out / "label_fixes_draft.yaml", bounds),
                       write_gallery(suspects[:top], out / "review.html", bounds, str(cv_dir), image_dirs),
                       write_suspects_csv(suspects, out / "suspects.csv", bounds), bounds)


def format_suspects(r: NoiseResult, top: int = 20) -> str:
    """Terminal list of the top suspects and where the review files are."""
    counts = {k: sum(s.kind == k for s in r.suspects) for k in KINDS}
    lines = [f"{len(r.suspects)} suspect(s): " + ", ".join(f"{n} {k}" for k, n in counts.items())]
    if r.suspects:
        lines.append(f"{'rank':>4} {'person':<10} {'kind':<22} {'score':>6}  current -> suggested")
    for i, s in enumerate(r.suspects[:top], start=1):
        now, new = describe(s, r.bounds)
        lines.append(f"{i:>4} {s.person:<10} {s.kind:<22} {s.score:>6.3f}  {now} -> {new}")
    lines += [f"review gallery: {r.gallery}", f"draft overrides: {r.overrides}", f"full ranking: {r.table}"]
    return "\n".join(lines)
