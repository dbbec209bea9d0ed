"""Plumbing every stage may use: runtime (seed, device, distributed), atomic writes, checkpoints, run folders, file formats, tracking, plots."""
