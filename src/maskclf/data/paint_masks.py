"""Masks painted on the bare (`normal`) training crops: a fresh mask style and placement every time a crop is drawn.

The competition data has five worn masks and one incorrect one per person, all drawn in a handful of styles, so a
model can learn those styles instead of what a mask is. Painting a new random mask (faces.maskdraw: any colour,
pattern and shape, worn or pulled below the nose or down on the chin) on the unmasked crops while training, from
the landmarks kept in the face cache, shows it thousands of styles; the crop is relabelled (mask status changes,
gender and age stay). It works on the cached uint8 crops of a batch, before the float augmentation: nothing is
decoded again.
"""

from __future__ import annotations

import numpy as np

from maskclf.faces.maskdraw import draw_mask, random_style
from maskclf.faces.synthmasks import landmark_problem
from maskclf.labels import MASK_NAMES, mask_of, with_mask

NORMAL = MASK_NAMES.index("normal")
# Where a painted mask sits and the mask status it gives: worn, or incorrectly worn below the nose / on the chin.
# Incorrect masks get half the draws: they are the rarest class and the hardest on real photos.
PLACEMENTS = {"wear": (0.5, MASK_NAMES.index("wear")), "nose": (0.4, MASK_NAMES.index("incorrect")),
              "chin": (0.1, MASK_NAMES.index("incorrect"))}


def paintable(landmarks: np.ndarray, size: int) -> np.ndarray:
    """(N,) bool: crops whose 5 landmarks are known and plausible for drawing a mask (not a profile, not tiny)."""
    ok = np.isfinite(landmarks).all(axis=(1, 2))
    for i in np.flatnonzero(ok):
        ok[i] = landmark_problem(landmarks[i].astype(np.float64), (size, size)) is None
    return ok


class MaskPainter:
    """Batch hook for the crop loader: paint a mask on each paintable bare crop with probability `p`."""

    def __init__(self, p: float, seed: int = 0):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"train.augment.paint_masks must be a probability in [0, 1], got {p!r}")
        self.p, self.seed = p, seed
        self.names = list(PLACEMENTS)
        self.probs = np.array([PLACEMENTS[n][0] for n in self.names])

    def __call__(self, images: np.ndarray, labels: np.ndarray, landmarks: np.ndarray,
                 idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Paint in place on `images` (B, S, S, 3) uint8 (a gathered copy); returns (images, new labels).

        The draws depend only on the seed and the batch's sample indices, so a resumed epoch paints the same masks.
        """
        rng = np.random.default_rng([self.seed, *np.asarray(idx, np.int64).tolist()])
        labels = labels.copy()
        bare = np.flatnonzero(mask_of(labels) == NORMAL)
        chosen = bare[rng.random(len(bare)) < self.p]
        chosen = chosen[paintable(landmarks[chosen], images.shape[1])] if len(chosen) else chosen
        for i in chosen:
            placement = self.names[rng.choice(len(self.names), p=self.probs)]
            images[i] = draw_mask(images[i], landmarks[i], placement, random_style(rng), rng)
            labels[i] = with_mask(labels[i], PLACEMENTS[placement][1])
        return images, labels
