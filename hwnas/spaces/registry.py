"""The registry of named spaces (``@register_space``)."""

from __future__ import annotations

import builtins
from collections.abc import Callable

from hwnas import registry as _registry
from hwnas.space.space import Space

__all__ = ["register_space", "create", "list", "input_shape"]

_INPUTS: dict[str, tuple[int, ...]] = {}

#: the input shape of a space that names none (an ImageNet-sized RGB image, batch 1)
DEFAULT_INPUT_SHAPE = (1, 3, 224, 224)


def _unknown(name: str) -> ValueError:
    """The error for a space name that is neither registered nor ``module:attr``."""
    return ValueError(f"no space named {name!r}; available: {sorted(_SPACES)}. "
                      "Register your own with @hwnas.spaces.register_space(name), or name a class or factory "
                      "as 'package.module:attr' or 'path/to/file.py:attr'.")


def _duplicate(name: str, old: Callable[..., Space]) -> ValueError:
    return ValueError(f"a space named {name!r} is already registered ({old.__module__}); choose another name.")


# The kind "spaces" of hwnas.registry; its table is this module's _SPACES.
_KIND = _registry.kind("spaces").configure(unknown=_unknown, duplicate=_duplicate)
_SPACES: dict[str, Callable[..., Space]] = _KIND.table


def register_space(name: str, input_shape: tuple[int, ...] = DEFAULT_INPUT_SHAPE
                   ) -> Callable[[Callable[..., Space]], Callable[..., Space]]:
    """Register a space constructor under ``name``, with the input shape it is built for (what the command
    line and the benchmarks feed it unless told otherwise, :func:`input_shape`); a second registration of a
    name raises ``ValueError``. The same as ``hwnas.registry.register("spaces", name)`` plus the input shape."""

    def deco(fn: Callable[..., Space]) -> Callable[..., Space]:
        _KIND.register(name, fn)
        _INPUTS[name] = tuple(int(d) for d in input_shape)
        return fn

    return deco


def create(name: str, **kwargs) -> Space:
    """Build the registered space ``name`` with keyword arguments for its constructor
    (``hwnas.registry.build("spaces", name, **kwargs)``).

    ``name`` may also be ``"package.module:attr"`` or ``"path/to/file.py:attr"``, a space class or factory
    of your own, so that the command line reaches your space too:
    ``hwnas profile --space myspace.py:MySpace --input 1,3,32,32``.

    Raises:
        ValueError: no space of that name (the message lists the registered ones).
        TypeError: a keyword argument the constructor does not take (the message lists those it takes).
    """
    return _KIND.build(name, **kwargs)


def input_shape(name: str) -> tuple[int, ...]:
    """The input shape (batch first) that the space ``name`` was registered with; :data:`DEFAULT_INPUT_SHAPE`
    for a space given as ``"module:attr"`` or registered with ``hwnas.registry.register("spaces", name)``.

    Example:
        >>> import hwnas
        >>> hwnas.spaces.input_shape("digits")
        (1, 1, 8, 8)
    """
    if name in _INPUTS:
        return _INPUTS[name]
    if ":" in name or name in _SPACES:  # module:attr, or registered through hwnas.registry without a shape
        return DEFAULT_INPUT_SHAPE
    raise _unknown(name)


def list() -> builtins.list[str]:  # noqa: A001 - mirrors timm.list_models
    """The names of all registered spaces, sorted."""
    return sorted(_SPACES)
