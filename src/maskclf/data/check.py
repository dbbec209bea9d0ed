"""`maskclf check`: validate a competition-layout folder and summarise it."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from maskclf.config import DataCfg, PrepareCfg
from maskclf.faces.detect import ImageRefused, load_rgb
from maskclf.data.scan import scan_eval, scan_train
from maskclf.layout import DataError, Problem, Record
from maskclf.labels import NUM_CLASSES, attribute_names, class_names, decode
from maskclf.data.train_data import bounds_of, fix_labels


@dataclass
class CheckReport:
    """What `check` found: train and eval records, label fixes and problems."""

    root: Path
    train: list[Record] = field(default_factory=list)
    eval: list[Record] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    fixes: dict[str, int] = field(default_factory=dict)
    fixes_note: str = ""

    @property
    def fatal(self) -> bool:
        """Whether any problem makes the folder unusable."""
        return any(p.fatal for p in self.problems)


def verify_image(path: Path, max_pixels: int = PrepareCfg().max_pixels) -> str | None:
    """None if `prepare` will crop the file (the same loader and rules), else what is wrong with it."""
    try:
        load_rgb(path, max_pixels)
    except ImageRefused as exc:
        return str(exc)
    except Exception as exc:  # PIL raises many types for broken files; all mean "unreadable"
        return f"unreadable or truncated image ({type(exc).__name__}: {exc})"
    return None


def run_check(root: Path, data: DataCfg, decode_images: bool = True, progress: bool = True,
              max_pixels: int = PrepareCfg().max_pixels) -> CheckReport:
    """Scan train (with label fixes) and eval, optionally decode every image, and collect all problems."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data folder not found: {root}")
    report = CheckReport(root=root)
    has_train = (root / "train" / "train.csv").exists() or (root / "train.csv").exists()
    has_eval = (root / "eval" / "info.csv").exists() or (root / "info.csv").exists()
    if not has_train and not has_eval:
        raise DataError(f"{root}: neither train/train.csv nor eval/info.csv found; is this a competition-layout folder?")
    if has_train:
        try:
            scan = scan_train(root, bounds_of(data))
            report.problems += scan.problems
            report.train, report.fixes, report.fixes_note = fix_labels(scan.records, data)
        except DataError as exc:
            report.problems.append(Problem(str(root / "train"), str(exc), fatal=True))
    if has_eval:
        try:
            ev = scan_eval(root)
            report.eval = ev.records
            report.problems += ev.problems
        except DataError as exc:
            report.problems.append(Problem(str(root / "eval"), str(exc), fatal=True))
    if decode_images:
        for r in tqdm(report.train + report.eval, desc="decoding", unit="img", disable=not progress):
            msg = verify_image(r.path, max_pixels)
            if msg:
                report.problems.append(Problem(str(r.path), msg + " (it will be skipped)"))
    return report


def format_check(report: CheckReport, data: DataCfg) -> str:
    """The human-readable report: counts per class and attribute, label fixes, problems, verdict."""
    bounds = bounds_of(data)
    lines = [f"maskclf check: {report.root}"]
    if report.train:
        n_people = len({r.person for r in report.train})
        lines.append(f"train: {len(report.train)} images, {n_people} people")
        counts = Counter(r.label for r in report.train)
        names = class_names(bounds)
        lines.append("  class  name                          images")
        for c in range(NUM_CLASSES):
            flag = "  <- none" if counts[c] == 0 else ""
            lines.append(f"  {c:>5}  {names[c]:<28} {counts[c]:>7}{flag}")
        attrs = attribute_names(bounds)
        for i, attr in enumerate(("mask", "gender", "age")):
            per = Counter(int(decode(r.label)[i]) for r in report.train)
            lines.append(f"  {attr:<7}" + "  ".join(f"{attrs[attr][k]}: {per[k]}" for k in range(len(attrs[attr]))))
        fixed = ", ".join(f"{k} {v}" for k, v in report.fixes.items() if v) or "none applied"
        lines.append(f"  label fixes ({data.label_fixes}): {fixed}")
        if report.fixes_note:
            lines.append(f"  {report.fixes_note}")
    if report.eval:
        lines.append(f"eval: {len(report.eval)} images")
    fatal = [p for p in report.problems if p.fatal]
    warn = [p for p in report.problems if not p.fatal]
    lines.append(f"problems: {len(fatal)} fatal, {len(warn)} warnings")
    lines += [f"  {p}" for p in fatal + warn[:50]]
    if len(warn) > 50:
        lines.append(f"  ... and {len(warn) - 50} more warnings")
    lines.append("result: " + ("FAILED (fatal problems above)" if fatal else "OK"))
    return "\n".join(lines)
