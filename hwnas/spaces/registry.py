"""The registry of named spaces (``@register_space``)."""

from __future__ import annotations

import builtins
import inspect
from collections.abc import Callable

from hwnas.space.space import Space

__all__ = ["register_space", "create", "list", "input_shape"]

_SPACES: dict[str, Callable[..., Space]] = {}
_INPUTS: dict[str, tuple[int, ...]] = {}

#: the input shape of a space that names none (an ImageNet-sized RGB image, batch 1)
DEFAULT_INPUT_SHAPE = (1, 3, 224, 224)


def register_space(name: str, input_shape: tuple[int, ...] = DEFAULT_INPUT_SHAPE
                   ) -> Callable[[Callable[..., Space]], Callable[..., Space]]:
    """Register a space constructor under ``name``, with the input shape it is built for (what the command
    line and the benchmarks feed it unless told otherwise, :func:`input_shape`); a second registration of a
    name raises ``ValueError``."""

    def deco(fn: Callable[..., Space]) -> Callable[..., Space]:
        if name in _SPACES:
            raise ValueError(f"a space named {name!r} is already registered ({_SPACES[name].__module__}); "
                             "choose another name.")
        _SPACES[name] = fn
        _INPUTS[name] = tuple(int(d) for d in input_shape)
        return fn

    return deco


def create(name: str, **kwargs) -> Space:
    """Build the registered space ``name`` with keyword arguments for its constructor.

    ``name`` may also be ``"package.module:attr"`` or ``"path/to/file.py:attr"``, a space class or factory
    of your own, so that the command line reaches your space too:
    ``hwnas profile --space myspace.py:MySpace --input 1,3,32,32``.

    Raises:
        ValueError: no space of that name (the message lists the registered ones).
        TypeError: a keyword argument the constructor does not take (the message lists those it takes).
    """
    if name in _SPACES:
        fn = _SPACES[name]
    elif ":" in name:
        fn = _import_space(name)
    else:
        raise _unknown(name)
    params = inspect.signature(fn).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        accepted = [k for k, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        unknown = [k for k in kwargs if k not in accepted]
        if unknown:
            raise TypeError(f"space {name!r} got unknown keyword argument(s) {unknown}; it accepts {accepted} "
                            f"(see help({fn.__module__}.{fn.__qualname__})).")
    return fn(**kwargs)


def _import_space(spec: str) -> Callable[..., Space]:
    """``package.module:attr`` or ``path/to/file.py:attr`` -> that class or factory."""
    import importlib
    import importlib.util
    from pathlib import Path

    target, _, attr = spec.rpartition(":")
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise ValueError(f"space {spec!r}: file {target!r} does not exist.")
        mod_spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(mod_spec)
        mod_spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as e:
            raise ValueError(f"space {spec!r}: cannot import {target!r} ({e}); give an importable module or a file "
                             "path like path/to/myspace.py:MySpace.") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ValueError(f"space {spec!r}: {target!r} has no class or function {attr!r}.")
    return fn


def input_shape(name: str) -> tuple[int, ...]:
    """The input shape (batch first) that the space ``name`` was registered with; :data:`DEFAULT_INPUT_SHAPE`
    for a space given as ``"module:attr"``.

    Example:
        >>> import hwnas
        >>> hwnas.spaces.input_shape("digits")
        (1, 1, 8, 8)
    """
    if name in _INPUTS:
        return _INPUTS[name]
    if ":" in name:
        return DEFAULT_INPUT_SHAPE
    raise _unknown(name)


def _unknown(name: str) -> ValueError:
    """The error for a space name that is neither registered nor ``module:attr``."""
    return ValueError(f"no space named {name!r}; available: {sorted(_SPACES)}. "
                      "Register your own with @hwnas.spaces.register_space(name), or name a class or factory "
                      "as 'package.module:attr' or 'path/to/file.py:attr'.")


def list() -> builtins.list[str]:  # noqa: A001 - mirrors timm.list_models
    """The names of all registered spaces, sorted."""
    return sorted(_SPACES)
