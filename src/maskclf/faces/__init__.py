"""Faces: detectors, the face-crop cache, mask drawing, synthetic masked datasets and demo faces."""
