"""`maskclf ensemble`: combine probability files, checkpoints, runs or cv fold sets into one submission."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.metrics import f1_score

from maskclf.labels import NUM_CLASSES, combine_probs, split_probs
from maskclf.inference.predict import PredictOptions, predict, write_submission
from maskclf.utils.formats import read_probs, write_probs

METHODS = ("soft", "hard", "attribute")


@dataclass
class Source:
    """One ensemble member's eval probabilities (and out-of-fold ones for cv folders)."""

    name: str
    ids: list[str]
    probs: np.ndarray
    oof: tuple[list[str], np.ndarray, np.ndarray] | None = None  # keys, probs, labels (cv sources only)


def _checkpoints_of(path: Path) -> list[Path]:
    """The checkpoint(s) a path stands for: a .pt file, a run folder's best.pt, or every fold of a cv folder."""
    if not path.exists():
        raise FileNotFoundError(f"ensemble member {path} not found")
    if path.is_file():
        return [path]
    if (path / "cv.json").is_file():
        from maskclf.utils.formats import fold_dirs

        return [d / "best.pt" for d in fold_dirs(path)]
    if (path / "best.pt").is_file():
        return [path / "best.pt"]
    raise FileNotFoundError(f"{path}: not a probabilities CSV, checkpoint, run folder or cv folder")


def load_source(path: Path, eval_dir: Path | None, work_dir: Path, tta: str = "none", progress: bool = True) -> Source:
    """Probabilities of one ensemble member on the eval set (predicting first if it is a model).

    A model member's predictions are written to `work_dir/<name>-<i>.csv` (one file per checkpoint).
    """
    path = Path(path)
    if path.suffix == ".csv":
        ids, probs = read_probs(path)
        return Source(path.name.removesuffix(".csv").removesuffix(".probs"), ids, probs)
    if eval_dir is None:
        raise ValueError(f"{path} is a model: give --eval DATA_DIR/eval to predict with it")
    ckpts = _checkpoints_of(path)
    name = path.parent.name if path.is_file() else path.name  # runs/exp/best.pt -> exp
    runs = []
    for i, ckpt in enumerate(ckpts):
        if len(ckpts) > 1:
            print(f"member {name}: model {i + 1}/{len(ckpts)} ({ckpt})")
        runs.append(predict(ckpt, eval_dir, out=work_dir / f"{name}-{i}.csv", options=PredictOptions(tta=tta),
                            progress=progress))
    probs = np.mean([r.probs for r in runs], axis=0)
    oof = None
    if (path / "oof.csv").is_file():
        from maskclf.utils.formats import read_oof

        meta, oof_probs = read_oof(path / "oof.csv")
        oof = ([m["key"] for m in meta], oof_probs, np.array([m["label"] for m in meta]))
    return Source(name, runs[0].image_ids, probs, oof)


def _aligned(sources: list[Source]) -> list[np.ndarray]:
    ref = sources[0].ids
    out = []
    for s in sources:
        if set(s.ids) != set(ref) or len(s.ids) != len(ref):
            raise ValueError(f"member '{s.name}' covers different ImageIDs than '{sources[0].name}'")
        pos = {k: i for i, k in enumerate(s.ids)}
        out.append(s.probs[[pos[k] for k in ref]])
    return out


def combine(probs: list[np.ndarray], method: str = "soft", weights: list[float] | None = None,
            attribute_from: dict[str, int] | None = None) -> np.ndarray:
    """(N, 18) ensemble probabilities (for `hard`: weighted vote shares, ties broken by the soft average)."""
    if method not in METHODS:
        raise ValueError(f"unknown ensemble method '{method}'; valid: {list(METHODS)}")
    if method == "attribute":
        return _by_attribute(probs, attribute_from)
    w = np.ones(len(probs)) if weights is None else np.asarray(weights, dtype=float)
    if len(w) != len(probs) or (w < 0).any() or w.sum() == 0:
        raise ValueError(f"need {len(probs)} non-negative weights with a positive sum, got {list(w)}")
    w = w / w.sum()
    soft = sum(wi * p for wi, p in zip(w, probs))
    if method == "soft":
        return soft
    votes = sum(wi * np.eye(NUM_CLASSES)[p.argmax(1)] for wi, p in zip(w, probs))
    mixed = votes + 1e-6 * soft  # the soft average only breaks ties
    return mixed / mixed.sum(axis=1, keepdims=True)


def _by_attribute(probs: list[np.ndarray], attribute_from: dict[str, int] | None) -> np.ndarray:
    """Mask, gender and age marginals each from the member named for it, recombined into 18 classes."""
    if not attribute_from or set(attribute_from) != {"mask", "gender", "age"}:
        raise ValueError("method 'attribute' needs a member index for each of mask, gender and age, "
                         f"e.g. mask=0,gender=1,age=1; got {attribute_from}")
    bad = {a: i for a, i in attribute_from.items() if not 0 <= i < len(probs)}
    if bad:
        raise ValueError(f"member indices {bad} out of range: there are {len(probs)} members (0-{len(probs) - 1})")
    parts = {a: split_probs(probs[i])[a] for a, i in attribute_from.items()}
    return combine_probs(parts["mask"], parts["gender"], parts["age"])


def search_weights(sources: list[Source], method: str = "soft", trials: int = 300,
                   seed: int = 0) -> tuple[list[float], float, float]:
    """Weights maximising OOF macro F1 (Dirichlet samples + each single member); returns (weights, best, equal)."""
    if any(s.oof is None for s in sources):
        missing = [s.name for s in sources if s.oof is None]
        raise ValueError(f"weight search needs out-of-fold predictions (cv folders); these have none: {missing}")
    keys = sources[0].oof[0]
    labels = sources[0].oof[2]
    probs = []
    for s in sources:
        pos = {k: i for i, k in enumerate(s.oof[0])}
        if set(pos) != set(keys):
            raise ValueError(f"OOF keys of '{s.name}' differ from '{sources[0].name}' (different data or folds)")
        probs.append(s.oof[1][[pos[k] for k in keys]])

    def f1(w):
        return f1_score(labels, combine(probs, method, w).argmax(1), labels=list(range(NUM_CLASSES)),
                        average="macro", zero_division=0)

    rng = np.random.default_rng(seed)
    n = len(sources)
    candidates = [np.ones(n) / n, *np.eye(n), *rng.dirichlet(np.ones(n), trials)]
    scores = [f1(w) for w in candidates]
    best = int(np.argmax(scores))  # the first of equals: equal weights win a tie
    return [float(x) for x in candidates[best]], float(scores[best]), float(scores[0])


@dataclass(frozen=True)
class Combination:
    """How the members' probabilities are combined: method, fixed or searched weights, attribute sources."""

    method: str = "soft"
    weights: list[float] | None = None
    attribute_from: dict[str, int] | None = None  # method "attribute": which member each attribute comes from
    search: bool = False  # search the weights on the members' out-of-fold predictions


def _check_options(members: list[Path], how: Combination) -> None:
    """Refuse contradictory options before any member is predicted (that can take long)."""
    method, weights, attribute_from, search = how.method, how.weights, how.attribute_from, how.search
    if method not in METHODS:
        raise ValueError(f"unknown ensemble method '{method}'; valid: {list(METHODS)}")
    if search and weights is not None:
        raise ValueError("give either weights or a weight search, not both")
    if method == "attribute" and (search or weights is not None):
        raise ValueError("method 'attribute' takes each attribute from one member: weights do not apply")
    if method != "attribute" and attribute_from:
        raise ValueError(f"attribute choices ({attribute_from}) only apply to method 'attribute', not '{method}'")
    no_oof = [str(m) for m in members if not (Path(m) / "oof.csv").is_file()]
    if search and no_oof:
        raise ValueError(f"weight search needs out-of-fold predictions: every member must be a cv folder "
                         f"with oof.csv; these are not: {no_oof}")


def ensemble(members: list[Path], out: Path, how: Combination = Combination(), eval_dir: Path | None = None,
             tta: str = "none", progress: bool = True) -> dict:
    """Combine members into `out` (submission) + `<out stem>.probs.csv`; returns what was done."""
    _check_options(members, how)
    method, weights, attribute_from = how.method, how.weights, how.attribute_from
    out = Path(out)
    work = out.parent / f"{out.stem}_members"  # created by the first model member's predict
    # one folder per member: two members may share a name (fold0 of two cv runs)
    sources = [load_source(m, eval_dir, work / str(j), tta, progress) for j, m in enumerate(members)]
    info: dict = {"members": [s.name for s in sources], "method": method}
    if how.search:
        weights, best, equal = search_weights(sources, method)
        info.update(searched_weights=weights, oof_f1=best, oof_f1_equal_weights=equal)
    probs = combine(_aligned(sources), method, weights, attribute_from)
    ids = sources[0].ids
    write_submission(out, ids, probs.argmax(1))
    write_probs(out.with_name(out.stem + ".probs.csv"), ids, probs)
    info.update(weights=weights, attribute_from=attribute_from, submission=str(out), rows=len(ids))
    out.with_name(out.stem + ".ensemble.json").write_text(json.dumps(info, indent=1))
    return info
