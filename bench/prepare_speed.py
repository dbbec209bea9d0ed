"""`maskclf prepare` speed: today's path against the earlier one, on the same 384x512 JPEGs and 200x200 photos.

- earlier path (as `prepare` ran before reduced-size detection, from the same library functions): `load_rgb`
  (JPEGs under 1280 px decode at full size), detection on the image shrunk to at most 640 px with padding 0.3
  of its side, the crop from the full image, in 2 spawned worker processes (the earlier code used 1 below
  1000 images); crops are stacked per shard but not written, which favours it;
- today's path: `maskclf.data.prepare.prepare` into a fresh cache (workers chosen automatically; JPEG decode at
  reduced size, detection on a 160 px copy, shards and index written).
Both paths see the same images in the same run; each figure includes its worker start-up. The fallback rate
(no face found) is reported for both. This script does not import torch, so spawned workers start quickly.

Usage: python bench/prepare_speed.py [--images N] [--data DATA_DIR] [--work DIR] [--json FILE]
"""

from __future__ import annotations

import argparse
import csv
import json
import multiprocessing
import os
import resource
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from maskclf.config import PrepareCfg
from maskclf.data.prepare import prepare
from maskclf.faces.detect import build_detector, crop_face, default_workers, find_faces, load_rgb

BENCH = Path(__file__).resolve().parent
DEFAULT_DATA = Path(os.environ.get("MASKCLF_DATA", BENCH.parents[1] / "shared" / "data")) / "utkmask"
COMPETITION_SIZE = (384, 512)  # width, height of the competition's photos
JPEG_QUALITY = 95
EARLIER_MAX_SIDE, EARLIER_PAD, EARLIER_WORKERS = 640, 0.3, 2


def to_competition_size(src: Path, dst: Path) -> None:
    """A 200x200 face photo as a 384x512 portrait: upscaled to 384x384, edge rows replicated above and below."""
    w, h = COMPETITION_SIZE
    with Image.open(src) as im:
        img = np.asarray(im.convert("RGB").resize((w, w), Image.BICUBIC))
    top = (h - w) // 2
    img = cv2.copyMakeBorder(img, top, h - w - top, 0, 0, cv2.BORDER_REPLICATE)
    Image.fromarray(img).save(dst, quality=JPEG_QUALITY)


def make_sets(src: Path, dst: Path, n_images: int, seed: int = 0) -> dict[str, float]:
    """ceil(n/7) random people of `src` (competition layout) twice: `dst/photos` links the 200x200 files,
    `dst/competition` holds them as 384x512 JPEGs. Returns mean KiB per file of each set."""
    with (src / "train" / "train.csv").open(newline="") as fh:
        reader = csv.DictReader(fh)
        fields, rows = reader.fieldnames, list(reader)
    n_people = min(len(rows), -(-n_images // 7))
    rows = [rows[i] for i in sorted(np.random.default_rng(seed).choice(len(rows), n_people, replace=False))]
    sizes: dict[str, list[int]] = {"photos": [], "competition": []}
    for name in sizes:
        (dst / name / "train").mkdir(parents=True)
        with (dst / name / "train" / "train.csv").open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fields)
            writer.writeheader()
            writer.writerows(rows)
    for row in rows:
        for f in sorted((src / "train" / "images" / row["path"]).iterdir()):
            link, big = (dst / name / "train" / "images" / row["path"] / f.name for name in sizes)
            link.parent.mkdir(parents=True, exist_ok=True)
            big.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(f.resolve())
            to_competition_size(f, big)
            sizes["photos"].append(f.stat().st_size)
            sizes["competition"].append(big.stat().st_size)
    return {k: round(float(np.mean(v)) / 1024, 1) for k, v in sizes.items()}


_EARLIER: dict = {}


def _earlier_init() -> None:
    cv2.setNumThreads(1)
    _EARLIER.update(cfg=PrepareCfg(), detector=build_detector(PrepareCfg().detector))


def _earlier_crop(path: Path) -> tuple[np.ndarray, bool]:
    """The earlier per-image path: decode, detect on <= 640 px with padding 0.3, crop from the decoded image."""
    cfg = _EARLIER["cfg"]
    img = load_rgb(path, cfg.max_pixels)
    faces = find_faces(_EARLIER["detector"], img, EARLIER_PAD, cfg.min_confidence, max_side=EARLIER_MAX_SIDE)
    return crop_face(img, faces[0] if faces else None, cfg)


def earlier_prepare(paths: list[Path]) -> dict:
    """Images/s and fallbacks of the earlier path over `paths` (2 spawned workers, crops stacked per shard)."""
    start, fallback, shard, chunk = time.perf_counter(), 0, [], PrepareCfg().chunk
    with multiprocessing.get_context("spawn").Pool(EARLIER_WORKERS, _earlier_init) as pool:
        for crop, used_fallback in pool.imap(_earlier_crop, paths, chunksize=4):
            fallback += used_fallback
            shard.append(crop)
            if len(shard) == chunk:
                np.stack(shard)
                shard = []
    seconds = time.perf_counter() - start
    return {"images_per_s": round(len(paths) / seconds, 1), "seconds": round(seconds, 2), "fallback": fallback,
            "workers": EARLIER_WORKERS}


def current_prepare(root: Path, cache_root: Path) -> dict:
    """Images/s and fallbacks of `prepare` on `root` into a fresh cache."""
    result = prepare(root, PrepareCfg(), cache_root=cache_root, splits=("train",), progress=False)
    s = result.stats
    return {"images_per_s": round(s.images_per_s, 1), "seconds": round(s.seconds, 2), "fallback": s.fallback,
            "workers": default_workers(s.new)}


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def cpu_seconds() -> float:
    """CPU time of this process and its finished worker processes: what an image costs whatever else runs."""
    return sum(r.ru_utime + r.ru_stime for r in map(resource.getrusage, (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)))


def measure(work: Path, rounds: int) -> dict:
    """Both paths on both sets, interleaved, `rounds` times; today's caches land in work/cache-<set>-<round>."""
    out = {}
    for name in ("competition", "photos"):
        root = work / name
        paths = sorted((root / "train" / "images").glob("*/*.jpg"))
        rows = {"earlier": [], "current": []}
        for r in range(rounds):
            for path in ("earlier", "current") if r % 2 == 0 else ("current", "earlier"):
                before, cpu = load(), cpu_seconds()
                fig = earlier_prepare(paths) if path == "earlier" else current_prepare(root, work / f"cache-{name}-{r}")
                fig["cpu_ms_per_image"] = round(1000 * (cpu_seconds() - cpu) / len(paths), 2)
                rows[path].append({**fig, "load_before": before, "load_after": load()})
                print(f"{name:12s} round {r + 1}/{rounds} {path:8s} {fig['images_per_s']:7.1f} images/s, "
                      f"{fig['cpu_ms_per_image']:6.2f} CPU ms/image, {fig['fallback']} fallback, "
                      f"load {before[0]:.2f}", flush=True)
        ratio = [c["images_per_s"] / e["images_per_s"] for c, e in zip(rows["current"], rows["earlier"])]
        out[name] = {"images": len(paths), "rounds": rows, "ratio_per_round": [round(x, 2) for x in ratio],
                     "median_images_per_s": {k: float(np.median([x["images_per_s"] for x in v])) for k, v in rows.items()},
                     "median_cpu_ms_per_image": {k: float(np.median([x["cpu_ms_per_image"] for x in v]))
                                                 for k, v in rows.items()},
                     "fallback": {k: v[0]["fallback"] for k, v in rows.items()}}  # the same every round
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=448, help="images per set (whole people of 7)")
    ap.add_argument("--rounds", type=int, default=1, help="interleaved rounds of both paths")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="dataset in the competition layout")
    ap.add_argument("--work", type=Path, help="keep the image sets and caches here (default: a temporary folder)")
    ap.add_argument("--json", type=Path, help="write the figures to this file")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        kib = make_sets(args.data, work, args.images)
        report = {"source": args.data.name, "jpeg_kib": kib, "load_start": load(), **measure(work, args.rounds),
                  "load_end": load()}
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    for name in ("competition", "photos"):
        r = report[name]
        print(f"{name}: {r['images']} images, earlier {r['median_images_per_s']['earlier']:.1f} images/s "
              f"({r['fallback']['earlier']} fallback), today {r['median_images_per_s']['current']:.1f} images/s "
              f"({r['fallback']['current']} fallback), ratio {r['ratio_per_round']}")


if __name__ == "__main__":
    main()
