"""Where two submissions disagree: counts by attribute and class pair, who was right, and an HTML gallery."""

from __future__ import annotations

import html
from collections import Counter
from pathlib import Path

import numpy as np

from maskclf.layout import DataError, inside
from maskclf.utils.atomic import write_atomic
from maskclf.toolkit.evaluate import read_aligned
from maskclf.toolkit.html_page import THUMB_PX, thumbnail
from maskclf.labels import HEADS, AgeBounds, attribute_names, class_names, decode
from maskclf.metrics import score

MAX_THUMBNAILS = 300
PLACEHOLDERS = {"outside": "outside the images folder", "missing": "image not found", "unreadable": "unreadable image"}


def _attribute_counts(y_a: np.ndarray, y_b: np.ndarray, y_true: np.ndarray | None) -> dict:
    out = {}
    parts_a, parts_b = decode(y_a), decode(y_b)
    parts_t = decode(y_true) if y_true is not None else (None,) * len(HEADS)
    for head, a, b, t in zip(HEADS, parts_a, parts_b, parts_t):
        differ = a != b
        out[head] = {"disagree": int(differ.sum())}
        if t is not None:
            out[head]["a_right"] = int((a[differ] == t[differ]).sum())
            out[head]["b_right"] = int((b[differ] == t[differ]).sum())
    return out


def compare_submissions(a_csv: Path, b_csv: Path, gt_csv: Path | None = None, images_dir: Path | None = None,
                        out_html: Path | None = None, bounds: AgeBounds = AgeBounds()) -> dict:
    """Disagreements between two submissions; with images_dir also an HTML gallery (default '<a>_vs_<b>.html')."""
    a_csv, b_csv = Path(a_csv), Path(b_csv)
    if out_html is not None and images_dir is None:
        raise ValueError(f"an HTML gallery ({out_html}) needs images_dir to take the thumbnails from")
    if images_dir is not None and not Path(images_dir).is_dir():
        raise DataError(f"images folder {images_dir} not found (expected the images named by ImageID)")
    ids, (y_a, y_b, *rest) = read_aligned(a_csv, b_csv, *([Path(gt_csv)] if gt_csv is not None else []))
    y_true = rest[0] if rest else None
    differ = np.flatnonzero(y_a != y_b)
    names = class_names(bounds)
    pairs = Counter(zip(y_a[differ].tolist(), y_b[differ].tolist()))
    result = {
        "a": str(a_csv), "b": str(b_csv), "gt": str(gt_csv) if gt_csv is not None else None,
        "n_images": len(ids),
        "n_disagree": int(len(differ)),
        "by_attribute": _attribute_counts(y_a[differ], y_b[differ], None if y_true is None else y_true[differ]),
        "pairs": [{"a": a, "b": b, "a_name": names[a], "b_name": names[b], "count": n}
                  for (a, b), n in pairs.most_common()],
        "items": [{"image_id": ids[i], "a": int(y_a[i]), "b": int(y_b[i]),
                   "truth": None if y_true is None else int(y_true[i])} for i in differ],
        "html": None,
    }
    if y_true is not None:
        result["scores"] = {"a": _headline(score(y_true, y_a, bounds)), "b": _headline(score(y_true, y_b, bounds))}
        result["a_right"] = int((y_a[differ] == y_true[differ]).sum())
        result["b_right"] = int((y_b[differ] == y_true[differ]).sum())
    if images_dir is not None:
        out_html = Path(out_html) if out_html is not None else a_csv.with_name(f"{a_csv.stem}_vs_{b_csv.stem}.html")
        _write_gallery(result, Path(images_dir), out_html, bounds)
    return result


def _headline(s: dict) -> dict:
    return {"accuracy": s["accuracy"], "f1": s["f1"]}


def _write_gallery(result: dict, images_dir: Path, out_html: Path, bounds: AgeBounds) -> None:
    """Write the HTML page; record its path and the ImageIDs shown as placeholders (missing, outside, unreadable)."""
    cells = {it["image_id"]: image_cell(inside(images_dir, it["image_id"])) for it in result["items"][:MAX_THUMBNAILS]}
    for status in PLACEHOLDERS:
        result[f"{status}_images"] = [i for i, (_, st) in cells.items() if st == status]
    page = _gallery(result, {i: tag for i, (tag, _) in cells.items()}, bounds).encode("utf-8")
    write_atomic(out_html, lambda fh: fh.write(page))
    result["html"] = str(out_html)


def image_cell(path: Path | None) -> tuple[str, str]:
    """(thumbnail or placeholder HTML, status) for an image; `path` None means it lies outside its folder."""
    status = "outside" if path is None else "missing" if not path.is_file() else "ok"
    if status == "ok":
        src = thumbnail(path)
        if src is not None:
            return f"<img src='{src}'>", status
        status = "unreadable"
    return f"<div class='missing'>{PLACEHOLDERS[status]}</div>", status


def _describe(cls: int, bounds: AgeBounds) -> list[str]:
    attrs = attribute_names(bounds)
    return [attrs[head][int(v)] for head, v in zip(HEADS, decode(cls))]


def _item_html(item: dict, img: str, bounds: AgeBounds) -> str:
    a, b = _describe(item["a"], bounds), _describe(item["b"], bounds)
    differ = [h for h, x, y in zip(HEADS, a, b) if x != y]
    rows = [("A", a, item["a"]), ("B", b, item["b"])]
    if item["truth"] is not None:
        rows.append(("truth", _describe(item["truth"], bounds), item["truth"]))
    cells = "".join(
        f"<div class='{'ok' if item['truth'] == cls and label != 'truth' else ''}'>"
        f"<b>{label}</b> {html.escape('/'.join(parts))}</div>" for label, parts, cls in rows)
    return (f"<figure data-attrs='{' '.join(differ)}'>{img}<figcaption>"
            f"<div class='id'>{html.escape(item['image_id'][:12])}</div>{cells}</figcaption></figure>")


def _gallery(result: dict, cells: dict[str, str], bounds: AgeBounds) -> str:
    items = result["items"][:MAX_THUMBNAILS]
    capped = (f"Showing the first {len(items)} of {result['n_disagree']} disagreements "
              f"(at most {MAX_THUMBNAILS} thumbnails)." if result["n_disagree"] > len(items)
              else f"Showing all {result['n_disagree']} disagreements.")
    buttons = "".join(f"<button onclick=\"show('{h}')\">{h} ({result['by_attribute'][h]['disagree']})</button>"
                      for h in HEADS)
    figures = "\n".join(_item_html(item, cells[item["image_id"]], bounds) for item in items)
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>A vs B disagreements</title>
<style>
body {{ font-family: sans-serif; margin: 1em; }}
figure {{ display: inline-block; width: 170px; margin: 4px; vertical-align: top; font-size: 11px; }}
figure img {{ width: {THUMB_PX}px; }}
.ok {{ color: #080; }} .id {{ color: #888; }} .missing {{ color: #a00; }}
</style>
<script>
function show(attr) {{
  for (const f of document.querySelectorAll('figure'))
    f.style.display = (attr === '' || f.dataset.attrs.split(' ').includes(attr)) ? '' : 'none';
}}
</script></head><body>
<h2>Disagreements: {result['n_disagree']} of {result['n_images']} images</h2>
<p>A = {html.escape(result['a'])}<br>B = {html.escape(result['b'])}<br>
truth = {html.escape(result['gt'] or 'not given')} (a prediction matching the truth is green)</p>
<p>{capped}</p>
<p>Filter by differing attribute: <button onclick="show('')">all</button>{buttons}</p>
{figures}
</body></html>
"""


def format_comparison(result: dict, top: int = 10) -> str:
    """Terminal summary: disagreement counts, per attribute, the top class pairs and who was right."""
    n, d = result["n_images"], result["n_disagree"]
    lines = [f"A {result['a']}", f"B {result['b']}", f"disagree on {d} of {n} images ({d / n:.1%})", ""]
    has_gt = result["gt"] is not None
    lines.append(f"{'attribute':<10} {'disagree':>8}" + (f" {'A right':>8} {'B right':>8}" if has_gt else ""))
    for head, c in result["by_attribute"].items():
        lines.append(f"{head:<10} {c['disagree']:>8}" + (f" {c['a_right']:>8} {c['b_right']:>8}" if has_gt else ""))
    if has_gt:
        s = result["scores"]
        lines += ["", f"on the disagreements A was right {result['a_right']}, B was right {result['b_right']}, "
                      f"neither {d - result['a_right'] - result['b_right']}",
                  f"overall  A acc {s['a']['accuracy']:.4f} F1 {s['a']['f1']:.4f}   "
                  f"B acc {s['b']['accuracy']:.4f} F1 {s['b']['f1']:.4f}"]
    if result["pairs"]:
        lines += ["", f"top class pairs (A -> B), {min(top, len(result['pairs']))} of {len(result['pairs'])}:"]
        lines += [f"{p['count']:>6}  {p['a_name']} -> {p['b_name']}" for p in result["pairs"][:top]]
    if result["html"]:
        lines += ["", f"wrote {result['html']}"]
        for status, what in (("missing", "image(s) not found"), ("outside", "ImageID(s) outside the images folder"),
                             ("unreadable", "unreadable image(s)")):
            ids = result[f"{status}_images"]
            if ids:
                lines.append(f"warning: {len(ids)} {what}, shown as placeholders (e.g. {', '.join(ids[:3])})")
    return "\n".join(lines)
