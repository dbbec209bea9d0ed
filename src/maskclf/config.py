"""Typed configuration: defaults live here, YAML files hold only changes, `--set a.b=v` overrides last."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads exponent floats without a dot (3e-4) as floats, as YAML 1.2 does."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789")
)


class ConfigError(ValueError):
    """A config file or override that does not fit the schema; the message names the key."""


# The config schema saved checkpoints carry. Bump it when a key is renamed or removed (adding keys with defaults
# needs no bump: older configs still validate), and say what changed in SCHEMA_CHANGES.
CONFIG_SCHEMA = 1
SCHEMA_CHANGES: dict[int, str] = {1: "the first numbered schema (checkpoints without a number have it)"}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class NamedCfg(_Section):
    """A `{name, params}` choice; the builder that reads it checks the name and the params."""

    name: str
    params: dict[str, Any] = Field(default_factory=dict)


class DataCfg(_Section):
    """`data.*`: where the data is, age groups, label fixes, the validation split, extra folders."""

    root: Path | None = None
    age_bounds: tuple[int, int] = (30, 60)  # where the training labels cut the three age groups
    # The groups validation, cv out-of-fold scores and eval ground truth are scored in. Group k of a prediction
    # is read as group k of these, so age_bounds=[30, 58] only moves which training people count as old.
    truth_age_bounds: tuple[int, int] = (30, 60)
    drop_ages: list[int] = Field(default_factory=list)  # training people of these ages are left out (not validation)
    label_fixes: str = "competition"  # "competition" (bundled), "none", or a path to a YAML/CSV file
    val_fraction: float = Field(0.2, gt=0.0, lt=1.0)  # share of people held out when data.fold is unset
    split_seed: int = 42
    folds: int = Field(5, ge=2)
    fold: int | None = None  # when set, validate on this fold of a `folds`-fold split instead of a hold-out
    extra: list[Path] = Field(default_factory=list)  # extra train folders in the competition layout
    # Photos with a mask label only: folders with wear/ incorrect/ normal/ (or a labels.csv of file,mask[,source])
    # or CSVs of path,mask. They train the mask head only (not model.head=single).
    mask_extra: list[Path] = Field(default_factory=list)
    mask_extra_holdout: float = Field(0.3, ge=0.0, lt=1.0)  # share of each source x mask status never trained on
    mask_extra_ratio: float | None = Field(None, gt=0.0)  # mask-only photos per other training image (None: all once)
    cache_dir: Path | None = None  # default: $MASKCLF_CACHE or ~/.cache/maskclf

    @field_validator("age_bounds", "truth_age_bounds")
    @classmethod
    def _bounds(cls, v: tuple[int, int]) -> tuple[int, int]:
        if not 0 < v[0] < v[1]:
            raise ValueError(f"need 0 < young < old, got {list(v)}")
        return v

    @field_validator("drop_ages")
    @classmethod
    def _ages(cls, v: list[int]) -> list[int]:
        bad = [a for a in v if not 0 < a < 130]
        if bad:
            raise ValueError(f"ages must be whole years in 1..129, got {bad}")
        return sorted(set(v))

    @model_validator(mode="after")
    def _fold(self) -> "DataCfg":
        if self.fold is not None and not 0 <= self.fold < self.folds:
            raise ValueError(f"fold must be in 0..{self.folds - 1} (folds={self.folds}), got {self.fold}")
        return self


class PrepareCfg(_Section):
    """`prepare.*`: how face crops are found and cached."""

    size: int = Field(128, ge=16, le=1024)  # side of the square face crop stored in the cache
    # yuface (libfacedetection, weights compiled into the wheel): ~3x faster than MTCNN with fewer misses here.
    detector: Literal["mtcnn", "yuface", "haar", "none"] = "yuface"
    margin: float = Field(0.1, ge=0.0, le=2.0)  # extra context around the detected box, as a fraction of its size
    # Detection runs on a copy shrunk to this longest side, padding included (faces must span >= ~10 px in it):
    # the cost grows with the area, and on 200x200 and 384x512 face photos yuface misses fewer faces at 160 px.
    detect_side: int = Field(160, ge=32)
    # Edge-replicate padding before detection, as a fraction of the image's longest side. A fraction, not pixels:
    # values over 1 are refused. yuface needs none (it missed 2-4x more faces with 0.1-0.3 on utkmask photos);
    # MTCNN needs ~0.3 to find faces that fill a tightly cropped photo.
    pad: float = Field(0.0, ge=0.0, le=1.0)
    fallback_box: tuple[float, float, float, float] = (0.1, 0.05, 0.9, 0.85)  # x0,y0,x1,y1 fractions when no face
    min_confidence: float = Field(0.5, ge=0.0, le=1.0)  # yuface scores run lower than MTCNN's (median 0.89)
    chunk: int = Field(256, ge=1)  # images per committed cache shard (the most a killed prepare loses)
    # Images with more decoded pixels are refused by name (JPEGs count at their reduced decoding size, at most
    # ~1/4 of the full area for large ones): a guard against memory blow-ups and decompression bombs.
    max_pixels: int = Field(40_000_000, ge=1)


class ModelCfg(_Section):
    """`model.*`: backbone, pretrained start, head layout, age mode and head options."""

    # Default: ImageNet MobileNetV2 whose weights ship in a wheel (works offline, ~2x the images/s of a ResNet18
    # on CPU) with one head per question. On a GPU, pick a larger timm backbone with pretrained="timm".
    backbone: str = "mobilenetv2_100"
    pretrained: str = "wheel"  # "" (random init), "timm" (hub or local HF cache), "wheel" (weights shipped in a package), or a file path
    head: Literal["single", "multihead", "separate"] = "multihead"
    age: Literal["classes", "bins", "regression"] = "classes"
    age_bin_width: int = Field(5, ge=1)
    drop_rate: float = Field(0.0, ge=0.0, lt=1.0)
    ms_dropout: int = Field(0, ge=0)  # multi-sample dropout: number of dropout samples in the head (0 = off)
    head_bn: bool = False
    freeze: str = "none"  # "none", "all" (backbone), or a backbone stage name to freeze up to (inclusive)
    unfreeze_epoch: int | None = None
    head_weights: dict[str, float] = Field(default_factory=lambda: {"mask": 1.0, "gender": 1.0, "age": 1.0})

    @field_validator("head_weights")
    @classmethod
    def _weights(cls, v: dict[str, float]) -> dict[str, float]:
        bad = sorted(set(v) - {"cls", "mask", "gender", "age"})
        if bad:
            raise ValueError(f"unknown head(s) {bad}; valid heads: ['age', 'cls', 'gender', 'mask']")
        negative = {h: w for h, w in v.items() if w < 0}
        if negative:
            raise ValueError(f"weights must be >= 0, got {negative}")
        return v


PAINT_MASKS_AUTO = 0.5  # train.augment.paint_masks="auto" where masks can be painted
LANDMARK_DETECTORS = ("yuface", "mtcnn")  # the prepare.detector choices whose crops keep face landmarks


class AugmentCfg(_Section):
    """`train.augment.*`: the augmentation preset, its per-op overrides, Mixup/CutMix."""

    preset: str = "custom"  # the competition favourites; colour/grayscale jitter keeps the model off mask colour
    params: dict[str, Any] = Field(default_factory=dict)  # per-op overrides of the preset, e.g. {hflip_p: 0.0}
    mixup: float = Field(0.0, ge=0.0, le=1.0)  # probability of applying Mixup to a batch
    cutmix: float = Field(0.0, ge=0.0, le=1.0)  # probability of applying CutMix to a batch
    cutmix_mode: Literal["box", "vertical"] = "box"
    mix_alpha: float = Field(1.0, gt=0.0)
    # Probability of painting a fresh random mask (worn, or below the nose / on the chin) on a bare training crop
    # each time it is drawn, relabelled to match; needs face landmarks (prepare.detector yuface or mtcnn).
    # "auto": PAINT_MASKS_AUTO where the crops have landmarks and the backbone trains, else 0 (see
    # training.build.paint_probability). On one-epoch utkmask models it lifted real incorrectly-worn recall from
    # 0.06-0.08 to 0.17-0.26 at an unchanged macro F1 (bench/RECIPES.md); not confirmed at 30 minutes.
    paint_masks: float | Literal["auto"] = "auto"

    @field_validator("paint_masks")
    @classmethod
    def _paint(cls, v):
        if v != "auto" and not 0.0 <= v <= 1.0:
            raise ValueError(f"must be 'auto' or a probability in [0, 1], got {v}")
        return v


class ResizeCfg(_Section):
    """`train.resize.*`: progressive resizing. Training batches start at `start` px and grow linearly to
    train.input_size at `until` of the planned schedule, then stay there; validation and prediction run at full
    size. Cheap early steps buy more of them within a time budget, whose plan accounts for their cost. With
    train.compile on CUDA each new size compiles once more."""

    start: int | None = Field(None, ge=16)  # None: off (every batch at train.input_size)
    until: float = Field(0.5, gt=0.0, le=1.0)


class TrainCfg(_Section):
    """`train.*`: epochs, batches, optimiser, schedule, loss, sampler, budget and runtime switches."""

    epochs: int = Field(10, ge=1)
    batch_size: int = Field(64, ge=1)
    input_size: int = Field(112, ge=16)
    resize: ResizeCfg = Field(default_factory=ResizeCfg)
    optimizer: NamedCfg = Field(default_factory=lambda: NamedCfg(name="adamw", params={"lr": 1e-3, "weight_decay": 0.01}))
    scheduler: NamedCfg = Field(default_factory=lambda: NamedCfg(name="cosine", params={"warmup_epochs": 1}))
    loss: NamedCfg = Field(default_factory=lambda: NamedCfg(name="ce"))
    head_losses: dict[str, NamedCfg] = Field(default_factory=dict)  # per-head overrides in multihead mode
    class_weighted: bool = False
    sampler: NamedCfg = Field(default_factory=lambda: NamedCfg(name="none"))
    augment: AugmentCfg = Field(default_factory=AugmentCfg)
    ema: float = Field(0.0, ge=0.0, lt=1.0)  # EMA decay (0 = off)
    accum_steps: int = Field(1, ge=1)
    clip_grad: float = Field(0.0, ge=0.0)
    amp: bool = True  # only takes effect on CUDA
    channels_last: bool = True  # model and batches channels-last (faster on CUDA and, with oneDNN, on the CPU)
    compile: bool = False
    seed: int = 0
    deterministic: bool = False
    patience: int = Field(5, ge=1)
    device: str = "auto"
    # Stop after the epoch that crosses this many minutes of training (shared equally by `separate`'s models).
    time_budget_min: float | None = None
    # With a budget: time the first epoch (train + validation), plan only the epochs that fit and end the lr
    # schedule there, so a cut-short cosine still anneals. The stop above stays as a safety net.
    fit_budget: bool = True
    # After training, tune per-age-group and per-gender log-probability offsets for macro F1 on the validation
    # predictions; saved in best.pt and applied by predict (predict --no-calibration ignores them). Off by default:
    # on utkmask, offsets tuned on a 20 % person hold-out lowered eval macro F1 (0.543 -> 0.536); the hold-out's
    # >=60 people were easier than eval's. Worth trying with larger validation sets (e.g. tuned on CV out-of-fold).
    calibrate: bool = False
    # After the run, train again from scratch on train + validation for the epochs each model's hold-out picked
    # (best epoch + 1); best.pt then holds that refit model, with no validation score (holdout.pt keeps the other).
    refit: bool = False

    @field_validator("head_losses")
    @classmethod
    def _heads(cls, v: dict[str, NamedCfg]) -> dict[str, NamedCfg]:
        bad = sorted(set(v) - {"mask", "gender", "age"})
        if bad:
            raise ValueError(f"keys must be mask/gender/age, got {bad}")
        return v


class RunCfg(_Section):
    """`run.*`: the run folder's name and place, and the trackers."""

    name: str = "exp"
    out_dir: Path = Path("runs")
    tensorboard: bool = True
    wandb: bool = False
    report: bool = True  # `maskclf train` ends by writing the run's report.html (see `maskclf report`)


class Config(_Section):
    """The whole typed config: defaults in code, YAML files and --set hold only changes."""

    data: DataCfg = Field(default_factory=DataCfg)
    prepare: PrepareCfg = Field(default_factory=PrepareCfg)
    model: ModelCfg = Field(default_factory=ModelCfg)
    train: TrainCfg = Field(default_factory=TrainCfg)
    run: RunCfg = Field(default_factory=RunCfg)

    @model_validator(mode="after")
    def _needs(self) -> "Config":
        if self.data.mask_extra and self.model.head == "single":
            raise ValueError("data.mask_extra photos have a mask label only, which the single 18-class head cannot "
                             "learn from; use model.head=multihead or separate")
        if self.data.mask_extra and self.train.sampler.name != "none":
            raise ValueError(f"train.sampler={self.train.sampler.name} balances the 18 classes, which data.mask_extra "
                             "photos (mask label only) have none of; use data.mask_extra_ratio to set their share")
        if self.train.refit and self.train.scheduler.name == "plateau":
            raise ValueError("train.refit replays the hold-out's epoch count, but a plateau schedule follows "
                             "validation scores, which a refit on everyone has none of; pick another scheduler")
        if self.train.augment.paint_masks != "auto" and self.train.augment.paint_masks > 0 \
                and self.prepare.detector not in LANDMARK_DETECTORS:
            raise ValueError(f"train.augment.paint_masks draws masks from face landmarks, which "
                             f"prepare.detector={self.prepare.detector} does not give; use yuface or mtcnn")
        return self

    def to_dict(self) -> dict[str, Any]:
        """The config as plain JSON-compatible values."""
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        """The config as YAML, every key in schema order."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def _valid_keys(loc: tuple) -> list[str]:
    """Field names of the section that holds the key at `loc` (for 'unknown key' messages)."""
    model: type[BaseModel] = Config
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        ann = getattr(field, "annotation", None)
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return []
        model = ann
    return list(model.model_fields)


def _format_error(err: ValidationError, source: str) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden":
            valid = _valid_keys(e["loc"])
            lines.append(f"unknown key '{key}'" + (f" (valid keys here: {', '.join(valid)})" if valid else ""))
        else:
            got = e.get("input")
            lines.append(f"'{key}': {e['msg']}" + ("" if isinstance(got, dict) else f" (got {got!r})"))
    return f"invalid config ({source}): " + "; ".join(lines)


def _merge(base: dict, changes: dict) -> dict:
    """Deep-merge `changes` into `base`; choosing a different `name` for a `{name, params}` section drops its old params."""
    out = dict(base)
    if "params" in out and "name" in changes and changes["name"] != out.get("name"):
        out["params"] = {}  # the old choice's params rarely fit the new one
    for k, v in changes.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    """'a.b=value' -> (['a', 'b'], parsed YAML value)."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like key.path=value")
    key, raw = text.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise ConfigError(f"override '{text}' has an empty key")
    try:
        value = yaml.load(raw, Loader=_Loader) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override '{text}': value is not valid YAML ({exc})") from exc
    return parts, value


def _nest(parts: list[str], value: Any) -> dict:
    """(['a', 'b'], v) -> {'a': {'b': v}}."""
    for p in reversed(parts):
        value = {p: value}
    return value


def validate(tree: dict, source: str = "config") -> Config:
    """Build a Config from a plain dict; ConfigError names every bad key and `source`."""
    try:
        return Config.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(_format_error(exc, source)) from None


def validate_saved(tree: dict, schema: int | None, source: str) -> Config:
    """A config saved by some maskclf version: newer schemas are refused, older ones say what changed since."""
    schema = 1 if schema is None else int(schema)
    if schema > CONFIG_SCHEMA:
        raise ConfigError(f"{source}: saved with config schema {schema}, newer than this maskclf's {CONFIG_SCHEMA}; "
                          "upgrade maskclf to read it")
    try:
        return validate(tree, source)
    except ConfigError as exc:
        if schema == CONFIG_SCHEMA:
            raise
        changes = "; ".join(f"schema {v}: {SCHEMA_CHANGES[v]}" for v in range(schema + 1, CONFIG_SCHEMA + 1))
        raise ConfigError(f"{exc} (saved with config schema {schema}; changed since: {changes})") from None


def load_yaml(path: str | Path) -> dict:
    """Read a YAML config file (changes only) as a dict."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        tree = yaml.load(path.read_text(), Loader=_Loader) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: top level must be a mapping, found {type(tree).__name__}")
    return tree


def load_config(files: list[str | Path] = (), overrides: list[str] = (), base: Config | None = None) -> Config:
    """Defaults (or `base`) <- each YAML file in order <- each `key=value` override; validated at each step."""
    tree = (base or Config()).to_dict()
    for f in files:
        tree = _merge(tree, load_yaml(f))
        validate(tree, str(f))
    for o in overrides:
        tree = _merge(tree, _nest(*parse_override(o)))
        validate(tree, f"--set {o}")
    return validate(tree)


def diff(a: dict, b: dict, prefix: str = "") -> dict[str, tuple[Any, Any]]:
    """Flattened keys whose values differ between two config dicts."""
    out: dict[str, tuple[Any, Any]] = {}
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        key = f"{prefix}{k}"
        if isinstance(va, dict) and isinstance(vb, dict):
            out.update(diff(va, vb, key + "."))
        elif va != vb:
            out[key] = (va, vb)
    return out
