"""`maskclf prepare`: detect and crop every image of a dataset folder once, into the face cache."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from maskclf.faces.cache import FaceCache, UpdateStats, cache_dir_for, cache_key
from maskclf.config import PrepareCfg
from maskclf.data.scan import scan_eval, scan_train
from maskclf.layout import DataError, Problem, Record

SCANNERS = {"train": (scan_train, "train.csv"), "eval": (scan_eval, "info.csv")}


@dataclass
class PrepareResult:
    """What a prepare run did, per split."""

    root: Path
    cache_dir: Path
    counts: dict[str, int]  # images found per split
    stats: UpdateStats
    problems: list[Problem] = field(default_factory=list)  # scan problems, then unreadable images
    fallback: list[str] = field(default_factory=list)  # keys cropped with the fallback box
    multiple: dict[str, int] = field(default_factory=dict)  # key -> faces found, where several were (largest used)


def _split_present(root: Path, split: str) -> bool:
    csv_name = SCANNERS[split][1]
    return (root / split / csv_name).is_file() or (root / csv_name).is_file()


def scan_splits(root: Path, splits: tuple[str, ...]) -> tuple[dict[str, list[Record]], list[Problem]]:
    """Records of each split present under `root` (absent splits are skipped) and the scanners' problems."""
    unknown = [s for s in splits if s not in SCANNERS]
    if unknown:
        raise ValueError(f"unknown split(s) {unknown}; expected some of {sorted(SCANNERS)}")
    found = [s for s in splits if _split_present(root, s)]
    if not found:
        wanted = ", ".join(f"{s}/{SCANNERS[s][1]}" for s in splits)
        raise DataError(f"{root}: no dataset split found (expected {wanted})")
    records, problems = {}, []
    for split in found:
        scan = SCANNERS[split][0](root)
        records[split] = scan.records
        problems += scan.problems
    return records, problems


def prepare(root: Path, cfg: PrepareCfg, cache_root: Path | None = None, splits: tuple[str, ...] = ("train", "eval"),
            device: str = "cpu", workers: int | None = None, progress: bool = True) -> PrepareResult:
    """Scan `root`, then crop every new or changed image into its face cache (workers=None: automatic)."""
    root = Path(root)
    by_split, problems = scan_splits(root, splits)
    records = [r for recs in by_split.values() for r in recs]
    cache = FaceCache(cache_dir_for(root, cfg, cache_root))
    stats = cache.update(records, root, cfg, device=device, workers=workers, progress=progress)
    paths = {cache_key(root, r.path): str(r.path) for r in records}
    failed = cache.failed
    # Failure messages start with the file's path; the Problem carries it separately.
    problems += [Problem(paths[k], failed[k].removeprefix(f"{paths[k]}: ")) for k in sorted(paths) if k in failed]
    fallback = sorted(set(paths) & cache.fallback)
    multiple = {k: n for k, n in sorted(cache.multiple.items()) if k in paths}
    return PrepareResult(root, cache.dir, {s: len(r) for s, r in by_split.items()}, stats, problems, fallback,
                         multiple)


def _listed(title: str, lines: list[str], limit: int) -> list[str]:
    """A titled, indented list of at most `limit` lines, saying how many more there are."""
    if not lines:
        return []
    more = [f"  ... and {len(lines) - limit} more"] if len(lines) > limit else []
    return [f"{title}, {len(lines)} images:"] + [f"  {line}" for line in lines[:limit]] + more


def format_prepare_report(result: PrepareResult, max_problems: int = 20) -> str:
    """Human-readable summary: where the cache is, what was done, how fast, what went wrong."""
    s = result.stats
    found = ", ".join(f"{n} {split}" for split, n in result.counts.items())
    cached = s.total - s.failed
    rate = 100.0 * s.fallback / cached if cached else 0.0
    lines = [
        f"dataset: {result.root} ({found} images)",
        f"cache:   {result.cache_dir}",
        f"images:  {s.new} new, {s.changed} changed, {s.reused} unchanged, {s.failed} unreadable",
        f"faces:   {s.fallback} of {cached} cropped with the fallback box ({rate:.1f}%: no face found)",
        f"time:    {s.seconds:.1f} s, {s.images_per_s:.1f} images/s processed",
    ]
    lines += [f"repaired: {message} (its crops were made again)" for message in s.repaired]
    lines += _listed("no face found (fallback box used)", result.fallback, max_problems)
    lines += _listed("several faces (the largest was used)", [f"{k} ({n} faces)" for k, n in result.multiple.items()],
                     max_problems)
    if result.problems:
        lines.append(f"problems ({len(result.problems)}):")
        lines += [f"  {p}" for p in result.problems[:max_problems]]
        if len(result.problems) > max_problems:
            lines.append(f"  ... and {len(result.problems) - max_problems} more")
    return "\n".join(lines)
