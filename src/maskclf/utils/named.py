"""`{name, params}` config sections -> objects: one lookup that checks the name and the params against the target."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

from maskclf.config import NamedCfg


@dataclass(frozen=True)
class Choices:
    """A table of named factories; params are checked against the factory's (or `signature_of`'s) signature.

    `filled` names the arguments the builder supplies from the data (never from the config); `shared` names
    params every entry accepts that the caller consumes itself (e.g. a schedule's warm-up); `defaults` are our
    per-name defaults under the user's params.
    """

    kind: str  # "loss", "optimizer", ... (used in messages)
    table: dict[str, Callable | None]
    filled: tuple[str, ...] = ()
    shared: tuple[str, ...] = ()
    defaults: dict[str, dict[str, Any]] = field(default_factory=dict)
    signature_of: Callable[[str], Callable] | None = None  # the callable whose keywords are the valid params

    def names(self) -> list[str]:
        """The valid names, sorted."""
        return sorted(self.table)

    def entry(self, name: str) -> Callable | None:
        """The factory for `name`; ValueError listing the valid names if there is none."""
        if name not in self.table:
            raise ValueError(f"unknown {self.kind} '{name}'; valid names: {self.names()}")
        return self.table[name]

    def valid_params(self, name: str) -> list[str]:
        """The params the named entry accepts from a config."""
        target = self.signature_of(name) if self.signature_of else self.entry(name)
        if target is None:
            return sorted(self.shared)
        skip = {"self", *self.filled}
        own = [p.name for p in inspect.signature(target).parameters.values()
               if p.name not in skip and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        return sorted(set(own) | set(self.shared))

    def params(self, cfg: NamedCfg) -> dict[str, Any]:
        """Our defaults for `cfg.name` under `cfg.params`, after checking every key is a valid param."""
        valid = self.valid_params(cfg.name)
        unknown = sorted(set(cfg.params) - set(valid))
        if unknown:
            raise ValueError(f"{self.kind} '{cfg.name}': unknown param(s) {unknown}; valid params: {valid}")
        return {**self.defaults.get(cfg.name, {}), **cfg.params}

    def build(self, cfg: NamedCfg, *args, **filled):
        """`factory(*args, **params, **filled)`; a bad value becomes a ValueError naming the params."""
        params = {k: v for k, v in self.params(cfg).items() if k not in self.shared}
        return self.call(cfg, self.entry(cfg.name), *args, **params, **filled)

    def call(self, cfg: NamedCfg, target: Callable, *args, errors: tuple = (TypeError,), **kwargs):
        """Call `target`, turning `errors` (a wrong argument type by default) into a message naming this section."""
        try:
            return target(*args, **kwargs)
        except errors as exc:
            raise ValueError(f"{self.kind} '{cfg.name}': invalid params {cfg.params} ({exc}); "
                             f"valid params: {self.valid_params(cfg.name)}") from None

