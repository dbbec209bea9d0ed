"""maskclf: classify face photos by mask status x gender x age group.

The stages, top to bottom; a module imports only from its own stage or the ones below it
(tests/unit/test_architecture.py enforces this):

    cli/        argument parsing, then one library call per subcommand
    toolkit/    workflows: cv, tune, noise, runs table, evaluate, compare, demo, the web app (serve)
    training/   losses, optimisers + schedules, one epoch (engine), one member's loop, fit(cfg)
    inference/  one forward pass, predict, detect (any photo), ONNX export + runtime, TTA, calibration, grouping,
                ensembles
    models/     network, head layouts + 18-class decoding, pretrained starts, frozen face extractors
    data/       folder scan, label fixes, training records, splits, prepare, crop sets, loader, transforms
    faces/      detectors, face-crop cache, mask drawing, synthetic masked sets, demo faces
    utils/      runtime, atomic writes, checkpoints, run folders, file formats, tracking, plots
    config.py labels.py metrics.py layout.py   the shared vocabulary
"""

import importlib

__version__ = "0.1.0"

# Loaded on first use, so `import maskclf` stays cheap (no torch import).
_LAZY = {"detect": "maskclf.inference.detect"}


def __getattr__(name: str):
    """`maskclf.detect(model, paths, ...)`: see maskclf.inference.detect.detect."""
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'maskclf' has no attribute {name!r}")
