"""Annotated copies of photos: each face's box and labels drawn over the image."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# Box colour by mask status: worn, worn incorrectly, no mask.
MASK_COLOURS = {"wear": (46, 160, 67), "incorrect": (230, 140, 0), "normal": (215, 40, 40)}


def face_caption(face: dict) -> str:
    """The short label drawn above a box, e.g. 'wear, female, 30-59 (0.91)'."""
    return f"{face['mask']['label']}, {face['gender']['label']}, {face['age']['label']} ({face['prob']:.2f})"


def draw_faces(img_rgb: np.ndarray, faces: list[dict]) -> Image.Image:
    """A copy of the image with every face's box and caption (faces as returned by FacePipeline.faces)."""
    image = Image.fromarray(img_rgb)
    pen = ImageDraw.Draw(image)
    side = min(image.size)
    font = ImageFont.load_default(size=max(11, side // 30))
    width = max(2, side // 150)
    for face in faces:
        x0, y0, x1, y1 = face["box"]
        colour = MASK_COLOURS[face["mask"]["label"]]
        pen.rectangle((x0, y0, x1, y1), outline=colour, width=width)
        text = face_caption(face)
        tx0, ty0, tx1, ty1 = pen.textbbox((0, 0), text, font=font)
        top = y0 - (ty1 - ty0) - 2 * width if y0 - (ty1 - ty0) - 2 * width >= 0 else y1
        pen.rectangle((x0, top, x0 + tx1 - tx0 + 2 * width, top + ty1 - ty0 + 2 * width), fill=colour)
        pen.text((x0 + width - tx0, top + width - ty0), text, fill=(255, 255, 255), font=font)
    return image
