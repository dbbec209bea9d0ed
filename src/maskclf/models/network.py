"""MaskNet: a timm backbone with one linear head per output, optional freezing and multi-sample dropout."""

from __future__ import annotations

import difflib

import timm
import torch
from torch import nn

from maskclf.config import ModelCfg
from maskclf.models.frozen_backbones import FROZEN_BACKBONES, frozen_names
from maskclf.models.pretrained import load_pretrained

# An age head of size 1 is a regression in years; start its bias near a typical adult age so early
# losses are not dominated by the offset.
REGRESSION_INIT_YEARS = 35.0


def create_backbone(name: str, drop_rate: float = 0.0) -> nn.Module:
    """A timm model without its classifier (outputs pooled features), or a frozen face network's extractor.

    Unknown names list close matches.
    """
    if name in FROZEN_BACKBONES:
        return FROZEN_BACKBONES[name](drop_rate=drop_rate)
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models() + list(FROZEN_BACKBONES), n=8, cutoff=0.6)
        raise ValueError(f"unknown backbone {name!r}; close matches: {close or 'none'} (valid: any timm model, "
                         f"see timm.list_models(), or a frozen face network: {frozen_names()})")
    return timm.create_model(name, pretrained=False, num_classes=0, drop_rate=drop_rate)


def stage_names(backbone: nn.Module) -> list[str]:
    """Stage names `freeze` accepts: timm feature_info modules and their siblings, in forward order."""
    modules = dict(backbone.named_modules())
    names = {f["module"] for f in getattr(backbone, "feature_info", [])}
    for name in list(names):
        parent = name.rpartition(".")[0]
        if parent:
            names |= {f"{parent}.{child}" for child, _ in modules[parent].named_children()}
    if not names:
        names = {n for n, _ in backbone.named_children()}
    return [n for n in modules if n in names]


def modules_up_to(backbone: nn.Module, stage: str) -> list[nn.Module]:
    """Every module registered before `stage`, plus `stage` and its submodules (the stem and earlier stages)."""
    valid = stage_names(backbone)
    if stage not in valid:
        raise ValueError(f"model.freeze: unknown stage {stage!r} for this backbone; valid: ['all', 'none'] + {valid}")
    named = list(backbone.named_modules())[1:]
    start = next(i for i, (n, _) in enumerate(named) if n == stage)
    end = start + 1
    while end < len(named) and named[end][0].startswith(stage + "."):
        end += 1
    return [m for _, m in named[:end]]


class MaskNet(nn.Module):
    """Backbone -> (BatchNorm1d) -> dropout -> Linear per head; forward returns {head: logits}."""

    def __init__(self, backbone: nn.Module, heads: dict[str, int], drop_rate: float = 0.0,
                 ms_dropout: int = 0, head_bn: bool = False):
        super().__init__()
        self.backbone = backbone
        features = getattr(backbone, "head_hidden_size", None) or backbone.num_features
        self.head_bn = nn.BatchNorm1d(features) if head_bn else nn.Identity()
        self.dropout = nn.Dropout(drop_rate) if ms_dropout else nn.Identity()
        self.ms_dropout = ms_dropout
        self.heads = nn.ModuleDict({name: nn.Linear(features, n) for name, n in heads.items()})
        if heads.get("age") == 1:
            nn.init.constant_(self.heads["age"].bias, REGRESSION_INIT_YEARS)
        self.data_config = timm.data.resolve_model_data_config(backbone)
        self.frozen: list[nn.Module] = []
        self.unfreeze_epoch: int | None = None

    def _heads(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {}
        for name, head in self.heads.items():
            y = head(features)
            out[name] = y.squeeze(-1) if y.shape[-1] == 1 else y
        return out

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.head_bn(self.backbone(x))
        if not (self.training and self.ms_dropout):
            return self._heads(self.dropout(features))
        samples = [self._heads(self.dropout(features)) for _ in range(self.ms_dropout)]
        return {name: torch.stack([s[name] for s in samples]).mean(dim=0) for name in samples[0]}

    def forward_map(self, feature_map: torch.Tensor) -> dict[str, torch.Tensor]:
        """Head outputs (eval mode) from the backbone's `forward_features` output: lets saliency reach the map."""
        return self._heads(self.head_bn(self.backbone.forward_head(feature_map)))

    def freeze(self, what: str, unfreeze_epoch: int | None = None) -> None:
        """Freeze the whole backbone ('all') or the stem and stages up to `what`; unfreeze at `unfreeze_epoch`."""
        if what == "none":
            if unfreeze_epoch is not None:
                raise ValueError("model.unfreeze_epoch is set but model.freeze is 'none': nothing to unfreeze")
            return
        self.frozen = list(self.backbone.modules()) if what == "all" else modules_up_to(self.backbone, what)
        for m in self.frozen:
            for p in m.parameters(recurse=False):
                p.requires_grad_(False)
        self.unfreeze_epoch = unfreeze_epoch
        self.train(self.training)

    def set_epoch(self, epoch: int) -> None:
        """Call at the start of each epoch (0-based): unfreezes everything once `epoch >= unfreeze_epoch`."""
        if self.frozen and self.unfreeze_epoch is not None and epoch >= self.unfreeze_epoch:
            for m in self.frozen:
                for p in m.parameters(recurse=False):
                    p.requires_grad_(True)
            self.frozen = []
            self.train(self.training)

    def train(self, mode: bool = True) -> MaskNet:
        """Like nn.Module.train, but frozen BatchNorm layers keep their running statistics (stay in eval)."""
        super().train(mode)
        for m in self.frozen:
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
        return self


def build_model(cfg: ModelCfg, heads: dict[str, int]) -> MaskNet:
    """Backbone from `cfg.backbone` (pretrained start from `cfg.pretrained`) with the given heads."""
    if cfg.ms_dropout and cfg.drop_rate == 0:
        raise ValueError(f"model.ms_dropout={cfg.ms_dropout} needs model.drop_rate > 0 (dropout samples would be equal)")
    # With multi-sample dropout the head applies the dropout K times; otherwise timm applies it once.
    backbone = create_backbone(cfg.backbone, drop_rate=0.0 if cfg.ms_dropout else cfg.drop_rate)
    load_pretrained(backbone, cfg.backbone, cfg.pretrained)
    model = MaskNet(backbone, heads, cfg.drop_rate, cfg.ms_dropout, cfg.head_bn)
    model.freeze(cfg.freeze, cfg.unfreeze_epoch)
    return model
