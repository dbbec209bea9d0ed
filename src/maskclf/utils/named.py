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
        defaults = self._signature_defaults(cfg.name)
        for key, value in cfg.params.items():
            problem = _type_problem(defaults.get(key), value)
            if problem:
                raise ValueError(f"{self.kind} '{cfg.name}': param '{key}' must be {problem} "
                                 f"(default {defaults[key]!r}), got {value!r}")
        return {**self.defaults.get(cfg.name, {}), **cfg.params}

    def _signature_defaults(self, name: str) -> dict[str, Any]:
        """Default values in the target's signature (they tell a param's type when it has no annotation)."""
        target = self.signature_of(name) if self.signature_of else self.entry(name)
        if target is None:
            return {}
        return {p.name: p.default for p in inspect.signature(target).parameters.values() if p.default is not p.empty}

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



def _type_problem(default: Any, value: Any) -> str:
    """What `value` must be for a param whose default is `default` ('' when it fits or the type is open)."""
    if isinstance(default, bool):
        return "" if isinstance(value, bool) else "true or false"
    if isinstance(default, (int, float)):
        return "" if isinstance(value, (int, float)) and not isinstance(value, bool) else "a number"
    if isinstance(default, (tuple, list)):
        return "" if isinstance(value, (tuple, list)) else "a list"
    return ""
