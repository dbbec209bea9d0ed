"""Head layouts, label -> target encoding, and any head set's outputs -> 18-class probabilities."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from maskclf.labels import HEADS, MASK_ONLY, NUM_CLASSES, AgeBounds, combine_probs, decode, mask_of, split_probs

HEAD_LAYOUTS = ("single", "multihead", "separate")
AGE_MODES = ("classes", "bins", "regression")

# Regression -> soft group: P(age >= bound) = sigmoid((years - bound) / T), T in years. T shrinks for a narrow
# middle group so that an age inside it still gives that group the highest probability.
REGRESSION_SOFTNESS = 2.0

KNOWN = "known"  # targets key: 1 for rows whose gender and age are known, 0 for mask-only photos

# Unknown exact ages (eval data labelled by group only) are replaced by the midpoint of the group, taking the
# open ends as ADULT_RANGE (photos of people aged roughly 15 to 75).
ADULT_RANGE = (15.0, 75.0)


@dataclass(frozen=True)
class HeadSpec:
    """Which heads a model has, how the age head is read, and the age bounds it maps back through."""

    heads: dict[str, int]
    age_mode: str = "classes"
    bounds: AgeBounds = AgeBounds()
    bin_edges: tuple[float, ...] = ()  # lower edge of each age bin (last bin is open); only for age_mode="bins"

    def only(self, *names: str) -> HeadSpec:
        """The same spec restricted to some heads (one model of a `separate` layout)."""
        missing = [n for n in names if n not in self.heads]
        if missing:
            raise ValueError(f"heads {missing} not in this spec; it has {sorted(self.heads)}")
        return replace(self, heads={n: self.heads[n] for n in names})

    def bin_groups(self) -> torch.Tensor:
        """Age group (0/1/2) of each age bin."""
        return torch.as_tensor(self.bounds.groups(np.asarray(self.bin_edges)), dtype=torch.long)


def age_bin_edges(bounds: AgeBounds, width: int) -> tuple[float, ...]:
    """Lower bin edges 0, w, 2w, ... below `old`, plus both bounds, so no bin straddles a bound; last bin is `old`+."""
    edges = set(range(0, bounds.old, width)) | {bounds.young, bounds.old}
    return tuple(float(e) for e in sorted(edges))


def head_spec(head: str, age_mode: str, bounds: AgeBounds = AgeBounds(), bin_width: int = 5) -> HeadSpec:
    """The head layout for a `model.head` / `model.age` config choice."""
    if head not in HEAD_LAYOUTS:
        raise ValueError(f"model.head must be one of {list(HEAD_LAYOUTS)}, got {head!r}")
    if age_mode not in AGE_MODES:
        raise ValueError(f"model.age must be one of {list(AGE_MODES)}, got {age_mode!r}")
    if head == "single":
        if age_mode != "classes":
            raise ValueError(f"model.age={age_mode!r} needs an age head: use model.head=multihead or separate")
        return HeadSpec({"cls": NUM_CLASSES}, "classes", bounds)
    edges = age_bin_edges(bounds, bin_width) if age_mode == "bins" else ()
    n_age = {"classes": HEADS["age"], "bins": len(edges), "regression": 1}[age_mode]
    return HeadSpec({"mask": HEADS["mask"], "gender": HEADS["gender"], "age": n_age}, age_mode, bounds, edges)


def group_midpoints(bounds: AgeBounds) -> torch.Tensor:
    """A representative age in years for each group (used when a record's exact age is unknown)."""
    lo = ADULT_RANGE[0] if bounds.young > ADULT_RANGE[0] else 0.0
    hi = max(ADULT_RANGE[1], bounds.old + ADULT_RANGE[0])
    return torch.tensor([(lo + bounds.young) / 2, (bounds.young + bounds.old) / 2, (bounds.old + hi) / 2])


def _age_years(labels18: torch.Tensor, ages: torch.Tensor, bounds: AgeBounds) -> torch.Tensor:
    """Exact ages where known (>= 0), otherwise the midpoint of the labelled group."""
    ages = ages.to(torch.float32)
    mids = group_midpoints(bounds).to(ages.device)[labels18 % 3]
    return torch.where(torch.isfinite(ages) & (ages >= 0), ages, mids)


def age_bins(years: torch.Tensor, spec: HeadSpec) -> torch.Tensor:
    """Index of the age bin holding each age."""
    edges = torch.tensor(spec.bin_edges, dtype=years.dtype, device=years.device)
    return (torch.bucketize(years, edges, right=True) - 1).clamp(min=0)


def make_targets(labels18: torch.Tensor, ages: torch.Tensor, spec: HeadSpec) -> dict[str, torch.Tensor]:
    """One-hot float rows per classification head; age in years for regression (unknown ages -> group midpoint).

    Mask-only codes (MASK_ONLY + mask, from data.mask_extra) get their mask target and all-zero gender/age rows,
    and the targets then hold KNOWN: (N,) float, 1 where gender and age are known; losses skip the other rows.
    """
    labels18 = torch.as_tensor(labels18, dtype=torch.long)
    if labels18.numel() and (labels18.min() < 0 or labels18.max() >= MASK_ONLY + HEADS["mask"]):
        raise ValueError(f"labels must be in 0..{NUM_CLASSES - 1} (or mask-only {MASK_ONLY}..{MASK_ONLY + 2}), "
                         f"found {labels18.min()}..{labels18.max()}")
    mask_only = labels18 >= MASK_ONLY
    if bool(mask_only.any()):
        if "cls" in spec.heads:
            raise ValueError("photos with a mask label only need a mask head: use model.head=multihead or separate")
        out = make_targets(torch.where(mask_only, mask_of(labels18) * 6, labels18), ages, spec)
        for name in ("gender", "age"):
            if name in out:
                out[name] = out[name] * (~mask_only).reshape(-1, *[1] * (out[name].ndim - 1))
        out[KNOWN] = (~mask_only).to(torch.float32)
        return out
    mask, gender, group = decode(labels18)
    index = {"cls": labels18, "mask": mask, "gender": gender, "age": group}
    out = {}
    for name, n in spec.heads.items():
        if name == "age" and spec.age_mode != "classes":
            years = _age_years(labels18, torch.as_tensor(ages, device=labels18.device), spec.bounds)
            if spec.age_mode == "regression":
                out[name] = years
                continue
            index[name] = age_bins(years, spec)
        out[name] = F.one_hot(index[name], n).to(torch.float32)
    return out


def _regression_groups(years: torch.Tensor, bounds: AgeBounds) -> torch.Tensor:
    """Soft 3-group assignment of predicted ages: logistic steps at each bound."""
    t = min(REGRESSION_SOFTNESS, (bounds.old - bounds.young) / 4)
    above_young = torch.sigmoid((years - bounds.young) / t)
    above_old = torch.sigmoid((years - bounds.old) / t)
    return torch.stack([1 - above_young, above_young - above_old, above_old], dim=-1)


def age_probs(logits: torch.Tensor, spec: HeadSpec) -> torch.Tensor:
    """(N, 3) age-group probabilities from the age head of any mode."""
    if spec.age_mode == "regression":
        return _regression_groups(logits.reshape(-1).float(), spec.bounds)
    p = logits.float().softmax(dim=-1)
    if spec.age_mode == "classes":
        return p
    # Sum of the bin probabilities of each group, as a product with the (bins, 3) membership matrix: this form
    # also traces into an ONNX graph with a dynamic batch axis.
    return p @ F.one_hot(spec.bin_groups().to(p.device), 3).to(p.dtype)


def attribute_probs(outputs: dict[str, torch.Tensor], spec: HeadSpec) -> dict[str, torch.Tensor]:
    """Per-attribute probabilities from whichever heads a model has (a `cls` head is marginalised)."""
    if "cls" in outputs:
        return split_probs(outputs["cls"].float().softmax(dim=-1))
    out = {k: outputs[k].float().softmax(dim=-1) for k in ("mask", "gender") if k in outputs}
    if "age" in outputs:
        out["age"] = age_probs(outputs["age"], spec)
    return out


def probs18(outputs: dict[str, torch.Tensor], spec: HeadSpec) -> torch.Tensor:
    """(N, 18) class probabilities: softmax of a `cls` head, else the outer product of attribute probabilities."""
    if "cls" in outputs:
        return outputs["cls"].float().softmax(dim=-1)
    p = attribute_probs(outputs, spec)
    missing = [k for k in HEADS if k not in p]
    if missing:
        raise ValueError(f"probs18 needs mask, gender and age heads; missing {missing} (combine separate models)")
    return combine_probs(p["mask"], p["gender"], p["age"])


def member_probs(outputs: dict[str, torch.Tensor], spec: HeadSpec, member: str) -> dict[str, torch.Tensor]:
    """A member's probabilities: {"cls": (N, 18)} for a "main" model, its attribute's (N, k) for a separate one."""
    return {"cls": probs18(outputs, spec)} if member == "main" else attribute_probs(outputs, spec)


def to_probs18(parts: dict) -> np.ndarray:
    """(N, 18) probabilities from `member_probs` parts: a main model's own, or the separate models' product."""
    if "cls" in parts:
        return np.asarray(parts["cls"])
    missing = [k for k in HEADS if k not in parts]
    if missing:
        raise ValueError(f"the separate layout needs mask, gender and age models; missing {missing}")
    return combine_probs(*(np.asarray(parts[k]) for k in HEADS))


def class_counts(labels18, ages, spec: HeadSpec) -> dict[str, np.ndarray]:
    """Training examples per class of each head (regression age: per age group, for per-sample weights)."""
    labels = torch.as_tensor(np.asarray(labels18), dtype=torch.long)
    targets = make_targets(labels, torch.as_tensor(np.asarray(ages, dtype=np.float32)), spec)
    targets.pop(KNOWN, None)
    out = {}
    for name, t in targets.items():
        if name == "age" and spec.age_mode == "regression":
            known = labels.numpy()[labels.numpy() < MASK_ONLY]
            out[name] = np.bincount(known % 3, minlength=3)
        else:
            out[name] = t.sum(dim=0).numpy().astype(np.int64)
    return out
