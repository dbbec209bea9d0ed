"""Turn records into in-RAM crop sets via the face cache: the split, the cache update, the gather."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from maskclf.faces.cache import FaceCache, cache_dir_for, cache_key
from maskclf.config import Config, DataCfg, PrepareCfg
from maskclf.layout import Record
from maskclf.data.loader import CropSet
from maskclf.data.mask_extra import holdout_split, mask_extra_draw
from maskclf.labels import MASK_ONLY
from maskclf.data.train_data import TrainData, age_dropped, regroup, truth_bounds_of
from maskclf.data.splits import Split, holdout, kfold


def load_split(data: DataCfg, records: list[Record], run_dir: Path | None = None) -> Split:
    """The run's saved split if it has one (resume), else a new person-level split saved into the run."""
    path = Path(run_dir) / "split.json" if run_dir else None
    if path is not None and path.is_file():
        return Split.load(path)
    split = kfold(records, data.folds, data.split_seed)[data.fold] if data.fold is not None \
        else holdout(records, data.val_fraction, data.split_seed)
    if path is not None:
        split.save(path)
    return split


def cached_crops(records: list[Record], root: Path, cfg: PrepareCfg, cache_root: Path | None = None,
                 progress: bool = True) -> tuple[np.ndarray, list[Record], dict[str, str]]:
    """Crops for `records` (preparing any missing ones); broken images are dropped and returned as key -> reason."""
    cache = FaceCache(cache_dir_for(root, cfg, cache_root))
    cache.update(records, root, cfg, progress=progress)
    keys = [cache_key(root, r.path) for r in records]
    failed = cache.failed  # a property that builds a dict: read it once, not per record
    kept = [(k, r) for k, r in zip(keys, records) if k not in failed]
    skipped = {str(r.path): failed[k] for k, r in zip(keys, records) if k in failed}
    images = cache.get([k for k, _ in kept]) if kept else np.empty((0, cfg.size, cfg.size, 3), np.uint8)
    return images, [r for _, r in kept], skipped


def to_cropset(images: np.ndarray, records: list[Record], landmarks: np.ndarray | None = None) -> CropSet:
    """A crop set of records in order; photos labelled with a mask status only get code MASK_ONLY + mask."""
    labels = np.array([MASK_ONLY + r.mask if r.label < 0 <= r.mask else r.label for r in records], dtype=np.int64)
    ages = np.array([r.age if r.age > 0 else np.nan for r in records], dtype=np.float32)
    return CropSet(images, labels, ages, [r.key for r in records], landmarks)


def cached_landmarks(records: list[Record], root: Path, cfg: PrepareCfg, cache_root: Path | None = None) -> np.ndarray:
    """(N, 5, 2) landmarks of cached `records` in crop pixels (NaN where the cache has none)."""
    cache = FaceCache(cache_dir_for(root, cfg, cache_root))
    return cache.crop_landmarks([cache_key(root, r.path) for r in records], cfg)


def training_records(data: TrainData, split: Split, drop_ages: list[int]) -> tuple[list[Record], dict, set[str]]:
    """(main train records, extra folders' records, people left out for `drop_ages`) of a split."""
    train_recs = split.partition(data.records)[0]
    dropped = age_dropped(train_recs + [r for recs in data.extra.values() for r in recs], drop_ages)

    def keep(recs: list[Record]) -> list[Record]:
        return [r for r in recs if r.person not in dropped]

    return keep(train_recs), {root: keep(recs) for root, recs in data.extra.items()}, dropped


def _train_set(cfg: Config, data: TrainData, main: tuple[np.ndarray, list[Record]], extra_recs: dict,
               skipped: dict, progress: bool) -> CropSet:
    """The training crops: the main folder's, the extra folders' people, then the mask-only photos drawn."""
    parts = [(main[0], main[1], data.root)]
    for root, extra in extra_recs.items():
        ex_images, ex_recs, ex_skipped = cached_crops(extra, root, cfg.prepare, cfg.data.cache_dir, progress)
        parts.append((ex_images, ex_recs, root))
        skipped.update(ex_skipped)
    n_main = sum(len(p[1]) for p in parts)
    for extra in data.mask_extra:
        trained = holdout_split(extra, cfg.data.mask_extra_holdout, cfg.data.split_seed)[0]
        ex_images, ex_recs, ex_skipped = cached_crops(trained, extra.root, cfg.prepare, cfg.data.cache_dir, progress)
        pick = mask_extra_draw(len(ex_recs), n_main, cfg.data.mask_extra_ratio, cfg.data.split_seed)
        parts.append((ex_images[pick], [ex_recs[i] for i in pick], extra.root))
        skipped.update(ex_skipped)
    marks = np.concatenate([cached_landmarks(p[1], p[2], cfg.prepare, cfg.data.cache_dir) for p in parts])
    return to_cropset(np.concatenate([p[0] for p in parts]), [r for p in parts for r in p[1]], marks)


def crops_for(cfg: Config, data: TrainData, split: Split, progress: bool = True) -> tuple[CropSet, CropSet, dict]:
    """(train set incl. extra people and mask-only photos, validation set, skipped images) for a split of `data`.

    Training leaves out people of `data.drop_ages`; validation keeps everyone and is labelled in
    `data.truth_age_bounds`, so its scores compare across age_bounds and drop_ages choices.
    """
    val_recs = regroup(split.partition(data.records)[1], truth_bounds_of(cfg.data))
    if not val_recs:
        raise ValueError("the validation split is empty: check data.val_fraction / data.fold")
    train_recs, extra_recs, _ = training_records(data, split, cfg.data.drop_ages)
    images, recs, skipped = cached_crops(train_recs + val_recs, data.root, cfg.prepare, cfg.data.cache_dir, progress)
    val_keys = {r.key for r in val_recs}
    is_val = np.array([r.key in val_keys for r in recs])
    main = (images[~is_val], [r for r, v in zip(recs, is_val) if not v])
    train = _train_set(cfg, data, main, extra_recs, skipped, progress)
    val = to_cropset(images[is_val], [r for r, v in zip(recs, is_val) if v])
    return train, val, skipped


def refit_crops(cfg: Config, data: TrainData, split: Split, progress: bool = True) -> tuple[CropSet, dict]:
    """(train set, skipped images) of `train.refit`: the split's train and validation people together, labelled
    and filtered as training data (data.age_bounds, data.drop_ages), with the extra and mask-only photos."""
    everyone = Split(train=sorted(split.train + split.val), val=[], method=f"{split.method}+refit", seed=split.seed)
    train_recs, extra_recs, _ = training_records(data, everyone, cfg.data.drop_ages)
    images, recs, skipped = cached_crops(train_recs, data.root, cfg.prepare, cfg.data.cache_dir, progress)
    return _train_set(cfg, data, (images, recs), extra_recs, skipped, progress), skipped
