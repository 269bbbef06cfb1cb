"""Per-layer convert rules: channel ratios, divisors and kernel sizes by layer type and module-name pattern.

A rule book maps a layer type to ``{name pattern: settings}``::

    {"nn.Conv2d": {"*": {"channels_ratio": (0.5, 0.75, 1.0), "channel_divisor": 16, "kernel_size": (3, 5)},
                   "layer4.*": {"channels_ratio": (0.25, 0.5, 1.0)},
                   "stem.*": None},
     "nn.Linear": {"*": {"features_ratio": (0.5, 1.0)}}}

- The type is ``"nn.Conv2d"`` / ``"torch.nn.Conv2d"``, a class, or the dotted name of any class
  (``"timm.layers.Conv2dSame"``); it matches instances of that class and its subclasses.
- A pattern is an ``fnmatch`` glob over the module's path (``"*"``: every layer). Every matching pattern
  applies, in the order given, later settings overriding earlier ones; ``None`` turns the layer's
  search off (its channels stay fixed) until a later matching pattern gives settings again.
- Settings: ``channels_ratio`` (also spelled ``out_channels_ratio`` or ``features_ratio``): fractions of the
  layer's output channels to offer; ``channel_divisor`` (or ``feature_divisor``): round widths to a multiple;
  ``kernel_size``: the kernel sizes to offer (the layer's own is always kept; an empty tuple means none).
  A setting left out falls back to ``convert``'s own ``channel_ratios`` / ``channel_divisor`` / mode.
  Other keys (ModelOpt's settings for BatchNorm layers, ``min_depth`` of ``nn.Sequential``) are accepted
  and have no effect; :func:`normalize_rules` lists them in the conversion record.

The width of a channel group follows the rule of the layer that computes its channels (the first producer,
the one that names the width label). Rules are stored in the conversion record (JSON), so
:func:`hwnas.restore` rebuilds the same space.
"""

from __future__ import annotations

import fnmatch
import importlib
from typing import Any

from torch import nn

__all__ = ["RuleBook", "normalize_rules", "RuleError", "RATIO_KEYS", "DIVISOR_KEYS"]

RATIO_KEYS = ("channels_ratio", "out_channels_ratio", "features_ratio")
DIVISOR_KEYS = ("channel_divisor", "feature_divisor")
_KNOWN = set(RATIO_KEYS) | set(DIVISOR_KEYS) | {"kernel_size"}


class RuleError(ValueError):
    """A malformed convert rule."""


def _type_name(key: Any) -> str:
    if isinstance(key, type):
        return f"{key.__module__}.{key.__qualname__}"
    if not isinstance(key, str) or not key:
        raise RuleError(f"hwnas.convert: a rule's layer type must be a class or a name like 'nn.Conv2d', got "
                        f"{key!r}.")
    return key


def _resolve_type(name: str) -> type:
    full = "torch." + name if name.startswith("nn.") else name
    mod, _, attr = full.rpartition(".")
    try:
        cls = getattr(importlib.import_module(mod), attr) if mod else None
    except (ImportError, AttributeError):
        cls = None
    if not isinstance(cls, type) or not issubclass(cls, nn.Module):
        raise RuleError(f"hwnas.convert: rule layer type {name!r} is not an importable torch.nn.Module class; use "
                        "e.g. 'nn.Conv2d', 'nn.Linear' or the class itself.")
    return cls


def _numbers(value: Any, what: str, where: str, integer: bool) -> list:
    try:
        out = [int(v) if integer else float(v) for v in value]
    except (TypeError, ValueError):
        raise RuleError(f"hwnas.convert: rule {where}: {what} must be a sequence of numbers, got {value!r}.") from None
    if integer and any(v < 1 for v in out) or not integer and any(not 0 < v <= 1 for v in out):
        want = "positive ints" if integer else "numbers in (0, 1]"
        raise RuleError(f"hwnas.convert: rule {where}: {what} must be {want}, got {value!r}.")
    return sorted(set(out))


def _settings(cfg: Any, where: str) -> dict[str, Any] | None:
    if cfg is None:
        return None
    if not isinstance(cfg, dict):
        raise RuleError(f"hwnas.convert: rule {where} must be a dict of settings or None, got {type(cfg).__name__}; "
                        "e.g. {'channels_ratio': (0.5, 1.0), 'channel_divisor': 8}.")
    out: dict[str, Any] = {}
    for k, v in cfg.items():
        if k in RATIO_KEYS and v is not None:
            out["channels_ratio"] = _numbers(v, k, where, False)
        elif k in DIVISOR_KEYS:
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise RuleError(f"hwnas.convert: rule {where}: {k} must be a positive int or None, got {v!r}.")
            out["channel_divisor"] = v
        elif k == "kernel_size" and v is not None:
            out["kernel_size"] = _numbers(v, k, where, True)
        elif k == "ignored":  # normalized before (the rules of a saved recipe)
            out.setdefault("ignored", []).extend(str(x) for x in v)
        elif k not in _KNOWN:
            out.setdefault("ignored", []).append(str(k))
    return out


def normalize_rules(rules: Any) -> dict[str, dict[str, Any]] | None:
    """Rules as plain JSON (type names, lists), checked; ``None`` stays ``None``.

    Raises:
        RuleError: a rule is not ``{type: {pattern: settings or None}}`` or a setting is malformed.
    """
    if rules is None:
        return None
    if hasattr(rules, "model_dump"):  # a pydantic config object
        rules = rules.model_dump()
    if not isinstance(rules, dict):
        raise RuleError(f"hwnas.convert: rules must be a dict {{layer type: {{name pattern: settings}}}}, got "
                        f"{type(rules).__name__}; e.g. {{'nn.Conv2d': {{'*': {{'channels_ratio': (0.5, 1.0)}}}}}}.")
    out: dict[str, dict[str, Any]] = {}
    for key, per_name in rules.items():
        name = _type_name(key)
        _resolve_type(name)
        if per_name is None:
            per_name = {"*": None}
        if not isinstance(per_name, dict):
            raise RuleError(f"hwnas.convert: rules[{name!r}] must map name patterns to settings, e.g. "
                            f"{{'*': {{'channels_ratio': (0.5, 1.0)}}}}, got {type(per_name).__name__}.")
        out[name] = {str(p): _settings(cfg, f"{name}[{p!r}]") for p, cfg in per_name.items()}
    return out


class RuleBook:
    """Look up the settings that apply to one layer (see the module docstring)."""

    def __init__(self, rules: dict[str, dict[str, Any]] | None):
        self.rules = rules or {}
        self.types = [(_resolve_type(name), per_name) for name, per_name in self.rules.items()]

    def __bool__(self) -> bool:
        return bool(self.rules)

    def lookup(self, path: str, module: nn.Module | None) -> dict[str, Any] | None:
        """The merged settings for ``module`` at ``path``: a dict (``{}`` when no rule matches) or ``None``
        when a rule turns the layer's search off."""
        merged: dict[str, Any] | None = {}
        if module is None:
            return merged
        for cls, per_name in self.types:
            if not isinstance(module, cls):
                continue
            for pattern, cfg in per_name.items():
                if not fnmatch.fnmatchcase(path, pattern):
                    continue
                merged = None if cfg is None else {**(merged or {}), **cfg}
        return merged

    def wants_kernels(self) -> bool:
        """Whether any rule offers kernel sizes."""
        return any(cfg and cfg.get("kernel_size") for per_name in self.rules.values() for cfg in per_name.values())
