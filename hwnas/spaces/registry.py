"""The registry of named spaces (``@register_space``)."""

from __future__ import annotations

import builtins
import inspect
from collections.abc import Callable

from hwnas.space.space import Space

__all__ = ["register_space", "create", "list"]

_SPACES: dict[str, Callable[..., Space]] = {}


def register_space(name: str) -> Callable[[Callable[..., Space]], Callable[..., Space]]:
    """Register a space constructor under ``name``; a second registration of a name raises ``ValueError``."""

    def deco(fn: Callable[..., Space]) -> Callable[..., Space]:
        if name in _SPACES:
            raise ValueError(f"a space named {name!r} is already registered ({_SPACES[name].__module__}); "
                             "choose another name.")
        _SPACES[name] = fn
        return fn

    return deco


def create(name: str, **kwargs) -> Space:
    """Build the registered space ``name`` with keyword arguments for its constructor."""
    try:
        fn = _SPACES[name]
    except KeyError:
        raise ValueError(f"no space named {name!r}; available: {sorted(_SPACES)}. "
                         "Register your own with @hwnas.spaces.register_space(name).") from None
    params = inspect.signature(fn).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        accepted = [k for k, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        unknown = [k for k in kwargs if k not in accepted]
        if unknown:
            raise TypeError(f"space {name!r} got unknown keyword argument(s) {unknown}; it accepts {accepted} "
                            f"(see help({fn.__module__}.{fn.__qualname__})).")
    return fn(**kwargs)


def list() -> builtins.list[str]:  # noqa: A001 - mirrors timm.list_models
    """The names of all registered spaces, sorted."""
    return sorted(_SPACES)
