"""`maskclf eda`: one HTML page that looks at a dataset before training on it.

Counts come from the CSVs and folder scan (the same scan, label fixes and problem list as `maskclf check`);
images are opened only for their headers (sizes, formats), the sample grid and the fallback gallery.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from maskclf.config import DataCfg, PrepareCfg
from maskclf.data.check import run_check
from maskclf.data.label_fixes import applies, load_fixes
from maskclf.data.train_data import bounds_of
from maskclf.faces.cache import INDEX, FaceCache, cache_dir_for
from maskclf.labels import GENDER_NAMES, MASK_BY_STEM, MASK_NAMES, NUM_CLASSES, class_names
from maskclf.layout import Record
from maskclf.toolkit.html_page import Page, esc, table, thumbnail
from maskclf.utils.plots import age_histogram_figure, bar_figure, count_grid_figure, mosaic

SAMPLE_PX = 112
MAX_LISTED = 200  # rows of the fixes and problems tables
MAX_GALLERY = 60  # thumbnails of photos that fell back to the fixed box


@dataclass
class EdaResult:
    """The data report page, its figures, how long it took and what it counted."""

    html: Path
    figures: list[Path]
    seconds: float
    counts: dict = field(default_factory=dict)


def build_eda(root: Path, data: DataCfg, prepare: PrepareCfg, out_html: Path | None = None,
              cache_root: Path | None = None, people_per_cell: int = 2) -> EdaResult:
    """Write the data report for `root` (default `<root>/eda.html`, figures in `<stem>_figures/`)."""
    started = time.perf_counter()
    root = Path(root)
    out_html = Path(out_html) if out_html is not None else root / "eda.html"
    check = run_check(root, data, decode_images=False, progress=False)
    page = Page(f"Data report: {root.name}", out_html.parent / f"{out_html.stem}_figures")
    counts = _counts(check.train, data)
    if check.train:
        _class_sections(page, counts, data)
        _people_sections(page, check.train, data)
    _image_section(page, check.train + check.eval)
    _cache_section(page, root, prepare, cache_root)
    if check.train:
        _sample_section(page, check.train, people_per_cell, data)
        _fixes_section(page, check.train, check.fixes, check.fixes_note, data)
    _problems_section(page, check.problems)
    intro = table(["", "value"], [["train people", counts.get("people", 0)], ["train images", len(check.train)],
                                  ["eval images", len(check.eval)],
                                  ["problems", f"{sum(p.fatal for p in check.problems)} fatal, "
                                               f"{sum(not p.fatal for p in check.problems)} warnings"]])
    page.write(out_html, f"<p class='note'>{esc(root)}</p>{intro}")
    return EdaResult(out_html, page.figures, time.perf_counter() - started, counts)


def _counts(train: list[Record], data: DataCfg) -> dict:
    people = {r.person: r for r in train}
    return {
        "people": len(people),
        "images_per_class": np.bincount([r.label for r in train], minlength=NUM_CLASSES).tolist(),
        "people_per_class": [len({r.person for r in train if r.label == c}) for c in range(NUM_CLASSES)],
        "people_per_cell": np.bincount([r.gender * 3 + r.age_group for r in people.values()],
                                       minlength=6).reshape(2, 3).tolist(),
    }


def _class_sections(page: Page, counts: dict, data: DataCfg) -> None:
    names = class_names(bounds_of(data))
    images, people = counts["images_per_class"], counts["people_per_class"]
    fig = page.figure("class_counts", bar_figure(dict(zip(names, images)), "images per class", "images"))
    rows = [[c, names[c], images[c], people[c]] for c in range(NUM_CLASSES)]
    rare = min(range(NUM_CLASSES), key=lambda c: images[c])
    page.add("Images and people per class", fig + table(["class", "name", "images", "people"], rows)
             + f"<p class='note'>rarest class: {esc(names[rare])} ({images[rare]} images)</p>", "classes")


def _people_sections(page: Page, train: list[Record], data: DataCfg) -> None:
    bounds = bounds_of(data)
    people = list({r.person: r for r in train}.values())
    masks = Counter(r.mask for r in train)
    genders = {g: sum(r.gender == i for r in people) for i, g in enumerate(GENDER_NAMES)}
    groups = {a: sum(r.age_group == i for r in people) for i, a in enumerate(bounds.names())}
    per_mask = {MASK_NAMES[m]: masks[m] for m in range(3)}
    body = [page.figure("mask_counts", bar_figure(per_mask, "images per mask status")),
            page.figure("gender_counts", bar_figure(genders, "people per gender")),
            page.figure("age_group_counts", bar_figure(groups, "people per age group"))]
    cell = np.zeros((2, 3))
    for r in people:
        cell[r.gender, r.age_group] += 1
    body.append(page.figure("gender_age_people", count_grid_figure(cell, GENDER_NAMES, bounds.names(),
                                                                   "people per gender x age group")))
    page.add("Per attribute", "".join(body), "attributes")
    page.add("Age", page.figure("age_histogram", age_histogram_figure([r.age for r in people],
                                                                      (bounds.young, bounds.old))), "age")
    races = Counter(r.race for r in people if r.race)
    if races:
        page.add("Race", page.figure("race_counts", bar_figure(dict(races.most_common()), "people per race")), "race")


def _image_section(page: Page, records: list[Record]) -> None:
    kinds: Counter = Counter()
    unreadable = 0
    for r in records:
        try:
            with Image.open(r.path) as im:  # header only: no pixel is decoded
                kinds[(im.format, f"{im.width}x{im.height}")] += 1
        except Exception:  # unreadable files are listed by `maskclf check`; here they are only counted
            unreadable += 1
    rows = [[fmt, size, n] for (fmt, size), n in kinds.most_common(20)]
    more = f"<p class='note'>{len(kinds) - 20} more format/size pairs</p>" if len(kinds) > 20 else ""
    bad = f"<p class='bad'>{unreadable} file(s) could not be opened</p>" if unreadable else ""
    page.add("Image sizes and formats", table(["format", "size", "images"], rows) + more + bad, "images")


def _cache_section(page: Page, root: Path, prepare: PrepareCfg, cache_root) -> None:
    folder = cache_dir_for(root, prepare, cache_root)
    if not (folder / INDEX).is_file():
        page.add("Face-crop cache", f"<p class='note'>no face-crop cache for these settings ({esc(folder)}); "
                                    "`maskclf prepare` builds it</p>", "cache")
        return
    cache = FaceCache(folder)
    fallback, failed = sorted(cache.fallback), cache.failed
    n = len(cache) + len(failed)
    rate = f"{len(fallback)} ({len(fallback) / max(n, 1):.1%})"
    rows = [["cached crops", len(cache)], ["fallback box (no face found)", rate], ["unreadable", len(failed)],
            ["detector", prepare.detector], ["crop size", f"{prepare.size} px"]]
    by_stem = Counter(Path(k).stem if Path(k).stem in MASK_BY_STEM else "other (eval)" for k in fallback)
    rows += [[f"fallback: {stem}", n] for stem, n in by_stem.most_common()]
    shown = [(key, thumbnail(root / key)) for key in fallback[:MAX_GALLERY]]
    thumbs = [f"<figure><img src='{src}'><figcaption>{esc('/'.join(Path(key).parts[-2:]))}</figcaption></figure>"
              for key, src in shown if src is not None]
    gallery = (f"<h3>Photos that fell back to the fixed box ({len(fallback)}"
               + (f", first {MAX_GALLERY} shown" if len(fallback) > MAX_GALLERY else "") + ")</h3>" + "".join(thumbs)
               if fallback else "<p class='ok'>every cached photo had a detected face</p>")
    page.add("Face-crop cache", f"<p class='note'>{esc(folder)}</p>" + table(["", "value"], rows) + gallery, "cache")


def _sample_section(page: Page, train: list[Record], per_cell: int, data: DataCfg) -> None:
    """Rows of one person's photos (mask1..5, incorrect, normal) for the first people of each gender x age cell."""
    bounds = bounds_of(data)
    photos: dict[str, dict[str, Path]] = defaultdict(dict)
    person: dict[str, Record] = {}
    for r in train:
        photos[r.person][Path(r.path).stem.lower()] = Path(r.path)
        person[r.person] = r
    stems = list(MASK_BY_STEM)
    images, titles = [], []
    for g in range(2):
        for a in range(3):
            chosen = sorted(p for p, r in person.items() if r.gender == g and r.age_group == a)[:per_cell]
            for pid in chosen:
                r = person[pid]
                for i, stem in enumerate(stems):
                    images.append(_small(photos[pid].get(stem)))
                    head = f"{pid} {GENDER_NAMES[g]} {r.age}\n" if i == 0 else "\n"
                    titles.append(head + stem)
    if images:
        grid = mosaic(np.stack(images), titles, ncols=len(stems))
        page.add("Sample photos", "<p class='note'>one person per row, first people of each gender x age group "
                                  f"({', '.join(bounds.names())})</p>" + page.picture("samples", grid), "samples")


def _small(path: Path | None) -> np.ndarray:
    """A SAMPLE_PX square thumbnail as uint8 RGB (grey when the photo is missing or unreadable)."""
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB").resize((SAMPLE_PX, SAMPLE_PX)))
    except Exception:  # a missing stem or a broken file must not stop the report
        return np.full((SAMPLE_PX, SAMPLE_PX, 3), 200, np.uint8)


def _fixes_section(page: Page, train: list[Record], touched: dict, note: str, data: DataCfg) -> None:
    fixes = load_fixes(data.label_fixes)
    ok, _ = applies(fixes, train)
    people = {r.person: r for r in train}
    rows = []
    if ok:
        rows += [[pid, "gender", GENDER_NAMES[g]] for pid, g in sorted(fixes.gender.items()) if pid in people]
        rows += [[pid, "age", a] for pid, a in sorted(fixes.age.items()) if pid in people]
        rows += [[pid, "incorrect <-> normal", ""] for pid in sorted(fixes.swap_incorrect_normal) if pid in people]
    summary = ", ".join(f"{k}: {v}" for k, v in touched.items())
    body = f"<p>source: {esc(fixes.source)}; people changed: {esc(summary)}</p>"
    body += f"<p class='note'>{esc(note)}</p>" if note else ""
    body += (table(["person", "fix", "labelled now"], rows[:MAX_LISTED]) if rows
             else "<p class='note'>no fix applies to this folder</p>")
    page.add("Label fixes", body, "fixes")


def _problems_section(page: Page, problems) -> None:
    fatal = [p for p in problems if p.fatal]
    ordered = fatal + [p for p in problems if not p.fatal]
    rows = [["ERROR" if p.fatal else "warning", p.path, p.message] for p in ordered[:MAX_LISTED]]
    body = (f"<p class='{'bad' if fatal else 'ok'}'>{len(fatal)} fatal, {len(problems) - len(fatal)} warnings "
            "(the scan of `maskclf check`; it also decodes every image)</p>")
    page.add("Problems found", body + (table(["level", "where", "what"], rows) if rows else ""), "problems")
