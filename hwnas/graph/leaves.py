"""Which modules and functions torch.fx keeps whole: the not-traceable marks of timm and torchvision, and the
modules that hwnas made leaves because torch.fx could not trace them.

timm marks its own untraceable code with ``register_notrace_module`` / ``register_notrace_function``
(``timm.layers._fx``, and ``timm.models._features_fx`` in older releases, each with ``get_notrace_modules()``
and ``get_notrace_functions()``); torchvision's feature extraction wraps every function of ``torchvision.ops``
(``autowrap_modules=(math, torchvision.ops)``) and its ops call ``torch.fx.wrap`` themselves. Those packages are
consulted only when the user's program has already imported them: hwnas never imports or requires them.
"""

from __future__ import annotations

import importlib
import sys
import weakref
from types import ModuleType
from typing import Any

from torch import nn

__all__ = ["third_party_leaf_classes", "third_party_functions", "third_party_autowrap_modules", "mark_auto_leaf",
           "auto_leaf_reason", "third_party_reason"]

_TIMM_FX = ("timm.layers._fx", "timm.models._features_fx", "timm.models.fx_features")

# modules (instances) that torch.fx could not trace, with why; weak, so a model's leaves go with it
_AUTO_LEAVES: weakref.WeakKeyDictionary[nn.Module, str] = weakref.WeakKeyDictionary()


def _timm_registries() -> list[ModuleType]:
    if "timm" not in sys.modules:
        return []
    found = []
    for name in _TIMM_FX:
        try:
            found.append(importlib.import_module(name))
        except Exception:  # noqa: BLE001 - an old or partial timm: use what imports
            continue
    return found


def _registered(module: ModuleType, getter: str, attribute: str) -> list[Any]:
    get = getattr(module, getter, None)
    try:
        return list(get()) if callable(get) else list(getattr(module, attribute, ()))
    except Exception:  # noqa: BLE001
        return []


def third_party_leaf_classes() -> tuple[type, ...]:
    """Module classes that timm marks as not traceable (empty when timm is not imported)."""
    classes = {c for m in _timm_registries() for c in _registered(m, "get_notrace_modules", "_leaf_modules")}
    return tuple(c for c in classes if isinstance(c, type) and issubclass(c, nn.Module))


def third_party_functions() -> tuple[Any, ...]:
    """Functions that timm marks as not traceable (kept as single call nodes)."""
    funcs = {f for m in _timm_registries() for f in _registered(m, "get_notrace_functions", "_autowrap_functions")}
    return tuple(f for f in funcs if callable(f))


def third_party_autowrap_modules() -> tuple[ModuleType, ...]:
    """``torchvision.ops`` when torchvision is imported: its functions stay single call nodes, as in
    torchvision's own feature extraction (its module classes are traced through, so their convolutions stay
    visible; one that cannot be traced becomes a leaf automatically)."""
    if "torchvision" not in sys.modules:
        return ()
    try:
        return (importlib.import_module("torchvision.ops"),)
    except Exception:  # noqa: BLE001
        return ()


def mark_auto_leaf(module: nn.Module, reason: str) -> None:
    """Remember that ``module`` is traced as one op (a fixed block), and why."""
    _AUTO_LEAVES[module] = reason


def auto_leaf_reason(module: nn.Module) -> str | None:
    """Why hwnas made ``module`` a leaf, or ``None`` when it did not."""
    try:
        return _AUTO_LEAVES.get(module)
    except TypeError:  # not weak-referenceable
        return None


def third_party_reason(module: nn.Module) -> str | None:
    """Which package marks ``module``'s class as not traceable, or ``None``."""
    if isinstance(module, third_party_leaf_classes()):
        return "timm marks it not traceable (register_notrace_module)"
    return None
