"""One self-contained HTML page (figures inlined as base64 PNG, nothing fetched) shared by reports and galleries."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import numpy as np
from PIL import Image

from maskclf.utils.atomic import write_atomic

THUMB_PX = 96

STYLE = """
body { font-family: sans-serif; margin: 1em 2em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; font-size: 13px; margin: 0.5em 0; }
td, th { border: 1px solid #ddd; padding: 2px 8px; text-align: right; } th { background: #f3f3f3; }
td:first-child, th:first-child { text-align: left; }
img.figure { max-width: 100%; display: inline-block; vertical-align: top; margin: 0.4em 0.6em 0.4em 0; }
figure { display: inline-block; width: 150px; margin: 4px; vertical-align: top; font-size: 11px; }
figcaption { overflow-wrap: anywhere; }
figure img { width: 96px; }
pre { background: #f6f6f6; padding: 0.6em; font-size: 12px; overflow-x: auto; }
.note { color: #666; font-size: 13px; } .bad { color: #a00; } .ok { color: #080; }
.pair { display: grid; grid-template-columns: 1fr 1fr; gap: 1.5em; } .pair > div { min-width: 0; }
"""


def esc(value) -> str:
    """HTML-escaped text of `value`."""
    return html.escape(str(value))


def data_uri(png_or_jpeg: bytes, kind: str = "png") -> str:
    """An image as a data: URI for embedding."""
    return f"data:image/{kind};base64," + base64.b64encode(png_or_jpeg).decode("ascii")


def thumbnail(image: Path | np.ndarray, px: int = THUMB_PX) -> str | None:
    """A small inline JPEG (data URL) of an image file or a uint8 (H, W, 3) array; None when it cannot be decoded."""
    try:
        with Image.fromarray(np.asarray(image)) if isinstance(image, np.ndarray) else Image.open(image) as im:
            im.draft("RGB", (px, px))  # JPEGs decode at reduced size
            im = im.convert("RGB")
            im.thumbnail((px, px))
            buf = io.BytesIO()
            im.save(buf, format="JPEG", quality=80)
    except Exception:  # PIL raises many types for broken files; callers show a placeholder instead
        return None
    return data_uri(buf.getvalue(), "jpeg")


def table(header: list[str], rows: list[list]) -> str:
    """An HTML table; cells are escaped."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


class Page:
    """Sections of HTML plus figures; each figure is inlined and also written as `<figures_dir>/<name>.png`."""

    def __init__(self, title: str, figures_dir: Path):
        self.title = title
        self.figures_dir = Path(figures_dir)
        self.sections: list[str] = []
        self.figures: list[Path] = []

    def figure(self, name: str, fig, dpi: int = 100) -> str:
        """Save `fig` as a PNG beside the page and return an <img> that holds the same PNG."""
        self.figures_dir.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi)
        path = self.figures_dir / f"{name}.png"
        path.write_bytes(buf.getvalue())
        self.figures.append(path)
        return f"<img class='figure' alt='{esc(name)}' src='{data_uri(buf.getvalue())}'>"

    def picture(self, name: str, image: np.ndarray) -> str:
        """Like `figure` for a ready uint8 (H, W, 3) picture (photo grids): PNG beside the page, same PNG inlined."""
        self.figures_dir.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format="PNG", optimize=False)
        path = self.figures_dir / f"{name}.png"
        path.write_bytes(buf.getvalue())
        self.figures.append(path)
        return f"<img class='figure' alt='{esc(name)}' src='{data_uri(buf.getvalue())}'>"

    def add(self, heading: str, body: str, anchor: str = "") -> None:
        """Append a section with a heading (and an anchor to link to)."""
        ident = f" id='{esc(anchor)}'" if anchor else ""
        self.sections.append(f"<section{ident}><h2>{esc(heading)}</h2>\n{body}\n</section>")

    def render(self, intro: str = "") -> str:
        """The whole page as HTML text."""
        return (f"<!doctype html>\n<html><head><meta charset='utf-8'><title>{esc(self.title)}</title>"
                f"<style>{STYLE}</style></head><body>\n<h1>{esc(self.title)}</h1>\n{intro}\n"
                + "\n".join(self.sections) + "\n</body></html>\n")

    def write(self, path: Path, intro: str = "") -> Path:
        """Write the page atomically to `path`."""
        data = self.render(intro).encode("utf-8")
        write_atomic(Path(path), lambda fh: fh.write(data))
        return Path(path)
