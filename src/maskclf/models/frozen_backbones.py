"""The frozen-feature backbones by model.backbone name: face networks whose features are remembered per chip."""

from __future__ import annotations

from maskclf.models.agender import BACKBONE as AGENDER
from maskclf.models.agender import AgenderExtractor
from maskclf.models.dlib_face import BACKBONE as DLIB_FACE
from maskclf.models.dlib_face import DlibFaceExtractor
from maskclf.models.frozen_features import FrozenExtractor

FROZEN_BACKBONES: dict[str, type[FrozenExtractor]] = {DLIB_FACE: DlibFaceExtractor, AGENDER: AgenderExtractor}


def frozen_names() -> str:
    """Every frozen backbone with what it is, for error messages."""
    return ", ".join(f"{name!r} ({cls.about})" for name, cls in FROZEN_BACKBONES.items())
