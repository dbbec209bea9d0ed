"""Inference: one forward pass, predict, TTA, calibration, person grouping, ensembles."""
