"""Data: folder scan, label fixes, training records, splits, prepare, crop sets, loader, samplers, transforms, mixing, check."""
