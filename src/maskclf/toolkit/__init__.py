"""Toolkit: workflows built on training and inference: cv, tune, noise, runs table, evaluate, compare, demo."""
