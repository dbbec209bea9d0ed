"""What a checkpoint holds besides weights: enough to predict from the file alone."""

from __future__ import annotations

import json

from maskclf.config import CONFIG_SCHEMA, Config
from maskclf.data.train_data import bounds_of
from maskclf.labels import class_names


def checkpoint_payload(cfg: Config, spec, states: dict, heads: dict, data_config: dict) -> dict:
    """The self-describing part of a checkpoint: enough to predict from the file alone."""
    bounds = bounds_of(cfg.data)
    return {
        "mean": [float(x) for x in data_config["mean"]],
        "std": [float(x) for x in data_config["std"]],
        "config": json.dumps(cfg.to_dict()),
        "config_schema": CONFIG_SCHEMA,
        "label_map": class_names(bounds),
        "age_bounds": list(cfg.data.age_bounds),
        "spec": json.dumps({"heads": spec.heads, "age_mode": spec.age_mode, "bin_edges": list(spec.bin_edges)}),
        "member_heads": json.dumps(heads),
        "input_size": cfg.train.input_size,
        "cache_size": cfg.prepare.size,
        "models": {name: {k: v.detach().cpu() for k, v in sd.items()} for name, sd in states.items()},
    }
