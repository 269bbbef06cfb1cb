"""One registry of named parts: spaces, models, devices, strategies, penalties, filters, profilers, estimators,
trainers, exporters, reports and data sets.

Every part that an experiment file (:mod:`hwnas.experiment`) or the command line names is looked up here::

    from hwnas.search import RegularizedEvolution

    @hwnas.registry.register("strategies", "my_evolution")
    class MyEvolution(RegularizedEvolution): ...

    strategy = hwnas.registry.build("strategies", {"name": "my_evolution", "population_size": 20})
    hwnas.registry.names("strategies")            # sorted names, the same as hwnas.registry.list("strategies")

A name may also be ``"package.module:attr"`` or ``"path/to/file.py:attr"`` (a class or factory of your own).
``build`` checks keyword arguments against the constructor's signature before calling it, and an unknown name
is an error that lists the registered names and the closest ones.

The older lookups are views of this one: ``hwnas.spaces.create`` / ``register_space`` are the kind
``"spaces"``, ``hwnas.hw.device.register_device`` / ``get_device`` the kind ``"devices"``, and the model zoo
(``hwnas.zoo.create`` / ``register_model``) is the kind ``"models"`` (the zoo keeps its own table, which this
module reads, because the zoo imports nothing else of hwnas). They keep their names, behaviour and messages.

This module imports only the standard library, so that any hwnas module can register into it.

Example:
    >>> import hwnas
    >>> "digits" in hwnas.registry.names("spaces") and "resnet18" in hwnas.registry.names("models")
    True
    >>> hwnas.registry.build("strategies", {"name": "evolution", "population_size": 8, "sample_size": 3})
    RegularizedEvolution(population_size=8, sample_size=3, mutation_prob=0.05)
"""

from __future__ import annotations

import builtins
import difflib
import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["Kind", "KINDS", "RegistryError", "register", "build", "get", "names", "list", "kind", "closest",
           "import_object", "check_kwargs"]


class RegistryError(ValueError):
    """An unknown kind or name, or a duplicate registration."""


def closest(word: str, choices: Any, n: int = 3) -> builtins.list[str]:
    """The names of ``choices`` closest to ``word`` (``difflib``), best first."""
    return difflib.get_close_matches(str(word), [str(c) for c in choices], n=n, cutoff=0.5)


def _did_you_mean(word: str, choices: Any) -> str:
    near = closest(word, choices)
    return f" (did you mean {' or '.join(repr(c) for c in near)}?)" if near else ""


def import_object(spec: str, what: str = "object") -> Any:
    """``package.module:attr`` or ``path/to/file.py:attr`` -> that attribute (a class or function).

    Raises:
        ValueError: the file or module does not exist or does not import, or has no such attribute.
    """
    target, _, attr = spec.rpartition(":")
    if not target or not attr:
        raise ValueError(f"{what} {spec!r}: expected 'package.module:attr' or 'path/to/file.py:attr'.")
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise ValueError(f"{what} {spec!r}: file {target!r} does not exist.")
        mod_spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(mod_spec)
        mod_spec.loader.exec_module(module)
    else:
        if "" not in sys.path and Path.cwd().as_posix() not in sys.path:
            sys.path.insert(0, Path.cwd().as_posix())  # like `python -m`: modules of the current folder
        try:
            module = importlib.import_module(target)
        except ImportError as e:
            raise ValueError(f"{what} {spec!r}: cannot import {target!r} ({e}); give an importable module or a file "
                             f"path like path/to/file.py:{attr}.") from None
    obj = getattr(module, attr, None)
    if obj is None:
        raise ValueError(f"{what} {spec!r}: {target!r} has no class or function {attr!r}"
                         f"{_did_you_mean(attr, [n for n in dir(module) if not n.startswith('_')])}.")
    return obj


def accepted_kwargs(fn: Callable) -> builtins.list[str] | None:
    """The keyword names ``fn`` accepts, or ``None`` when it takes ``**kwargs`` (or has no readable signature)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return None
    return [k for k, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def check_kwargs(fn: Callable, kwargs: Mapping[str, Any], who: str) -> None:
    """Raise ``TypeError`` naming ``who``, the unknown keyword arguments and those ``fn`` accepts."""
    accepted = accepted_kwargs(fn)
    if accepted is None:
        return
    unknown = [k for k in kwargs if k not in accepted]
    if unknown:
        near = closest(unknown[0], accepted)
        hint = f" Did you mean {' or '.join(repr(c) for c in near)} for {unknown[0]!r}?" if near else ""
        raise TypeError(f"{who} got unknown keyword argument(s) {unknown}; it accepts {accepted} "
                        f"(see help({fn.__module__}.{fn.__qualname__})).{hint}")


class Kind:
    """One kind of part: a table ``name -> class, factory or object`` and how to build its entries.

    Args:
        name: the kind, e.g. ``"strategies"``.
        singular: one of it in messages, e.g. ``"strategy"``.
        table: the dict of entries, or a function returning it (for a table that another module owns).
        loader: modules imported before the first lookup (importing them registers the built-in entries).
        unknown: ``name -> Exception`` for a name that is neither registered nor ``module:attr``.
        duplicate: ``(name, old) -> Exception`` for a second registration of a name.
        importable: whether ``"module:attr"`` names reach user code.
    """

    def __init__(self, name: str, singular: str, *, table: dict | Callable[[], dict] | None = None,
                 loader: tuple[str, ...] = (), unknown: Callable[[str], Exception] | None = None,
                 duplicate: Callable[[str, Any], Exception] | None = None, importable: bool = True):
        self.name, self.singular, self.loader, self.importable = name, singular, loader, importable
        self._table = {} if table is None else table
        self._unknown, self._duplicate = unknown, duplicate
        self._loaded = not loader

    def configure(self, *, table: dict | Callable[[], dict] | None = None,
                  unknown: Callable[[str], Exception] | None = None,
                  duplicate: Callable[[str, Any], Exception] | None = None) -> Kind:
        """Set the table and the messages of a kind (the owner of ``spaces``, ``devices`` ... calls this once)."""
        if table is not None:
            self._table = table
        self._unknown = unknown or self._unknown
        self._duplicate = duplicate or self._duplicate
        return self

    @property
    def table(self) -> dict:
        """The live table (the owner's dict)."""
        return self._table() if callable(self._table) else self._table

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True
            for module in self.loader:
                importlib.import_module(module)

    def names(self) -> builtins.list[str]:
        """The registered names, sorted."""
        self._load()
        return sorted(self.table)

    def register(self, name: str, obj: Any = None, *, replace: bool = False) -> Any:
        """Register ``obj`` under ``name`` (or, without ``obj``, return a decorator that does)."""

        def deco(o: Any) -> Any:
            table = self.table
            if name in table and not replace:
                if self._duplicate is not None:
                    raise self._duplicate(name, table[name])
                owner = getattr(table[name], "__module__", type(table[name]).__module__)
                raise RegistryError(f"a {self.singular} named {name!r} is already registered ({owner}); choose "
                                    f"another name.")
            table[name] = o
            return o

        if not isinstance(name, str) or not name:
            raise TypeError(f"a {self.singular} name must be a non-empty string, got {name!r}.")
        return deco if obj is None else deco(obj)

    def unknown_error(self, name: str) -> Exception:
        if self._unknown is not None:
            return self._unknown(name)
        how = " or name a class or factory as 'package.module:attr'" if self.importable else ""
        return RegistryError(f"no {self.singular} named {name!r}{_did_you_mean(name, self.names())}; available: "
                             f"{self.names()}. Register your own with @hwnas.registry.register({self.name!r}, "
                             f"name){how}.")

    def has(self, name: str) -> bool:
        """Whether ``name`` is registered (``module:attr`` names are not)."""
        self._load()
        return name in self.table

    def get(self, name: str) -> Any:
        """The entry of ``name``: a registered one, or ``"module:attr"`` imported."""
        self._load()
        table = self.table
        if name in table:
            return table[name]
        if self.importable and isinstance(name, str) and ":" in name:
            return import_object(name, self.singular)
        raise self.unknown_error(name)

    def build(self, name_or_config: Any, **overrides: Any) -> Any:
        """Build an entry: ``"name"``, ``"module:attr"`` or ``{"name": ..., **kwargs}``, with ``overrides`` on top.

        A class or function is called with the keyword arguments (checked against its signature first); any
        other entry (a :class:`~hwnas.hw.device.Device`, say) is returned as it is when there are none.
        """
        if isinstance(name_or_config, Mapping):
            config = dict(name_or_config)
            if "name" not in config:
                raise RegistryError(f"a {self.singular} config needs a 'name' key (one of {self.names()}), got "
                                    f"keys {sorted(config)}.")
            name = config.pop("name")
            kwargs = {**config, **overrides}
        elif isinstance(name_or_config, str):
            name, kwargs = name_or_config, dict(overrides)
        elif callable(name_or_config):
            name, kwargs = getattr(name_or_config, "__name__", repr(name_or_config)), dict(overrides)
            check_kwargs(name_or_config, kwargs, f"{self.singular} {name!r}")
            return name_or_config(**kwargs)
        else:
            raise TypeError(f"build({self.name!r}, ...) takes a name, 'module:attr' or a dict with 'name', got "
                            f"{type(name_or_config).__name__}.")
        entry = self.get(name)
        if not callable(entry):
            if kwargs:
                raise TypeError(f"{self.singular} {name!r} is an object, not a class or factory; it takes no "
                                f"keyword arguments (got {sorted(kwargs)}).")
            return entry
        check_kwargs(entry, kwargs, f"{self.singular} {name!r}")
        return entry(**kwargs)

    def __repr__(self) -> str:
        return f"Kind({self.name!r}, {len(self.names())} entries)"


def _zoo_table() -> dict:
    return importlib.import_module("hwnas.zoo._registry")._MODELS


def _zoo_unknown(name: str) -> ValueError:  # hwnas.zoo.create's message
    return ValueError(f"unknown zoo model {name!r}; expected one of: {', '.join(sorted(_zoo_table()))}. Use "
                      "hwnas.zoo.list() to see the names, or register a new one with @hwnas.zoo.register_model.")


def _zoo_duplicate(name: str, owner: Any) -> ValueError:  # hwnas.zoo.register_model's message
    return ValueError(f"zoo model name {name!r} is already registered by {owner.__module__}.{owner.__qualname__}; "
                      "expected a new name, got a duplicate. Pick a different name for the new builder.")


#: The kinds, by name. ``spaces``, ``models`` and ``devices`` are defined by their owners' modules' messages.
KINDS: dict[str, Kind] = {k.name: k for k in (
    Kind("spaces", "space", loader=("hwnas.spaces",)),
    Kind("models", "zoo model", table=_zoo_table, loader=("hwnas.zoo",), unknown=_zoo_unknown,
         duplicate=_zoo_duplicate),
    Kind("devices", "device", loader=("hwnas.hw.device",), importable=False),
    Kind("strategies", "strategy", loader=("hwnas.experiment.parts",)),
    Kind("penalties", "penalty", loader=("hwnas.experiment.parts",)),
    Kind("filters", "filter", loader=("hwnas.experiment.parts",)),
    Kind("profilers", "profiler", loader=("hwnas.experiment.parts",)),
    Kind("estimators", "estimator", loader=("hwnas.experiment.parts",)),
    Kind("trainers", "trainer", loader=("hwnas.experiment.parts",)),
    Kind("exporters", "exporter", loader=("hwnas.experiment.parts",)),
    Kind("reports", "report", loader=("hwnas.experiment.parts",)),
    Kind("datasets", "data set", loader=("hwnas.experiment.parts",)),
)}


def kind(name: str) -> Kind:
    """The :class:`Kind` called ``name``."""
    try:
        return KINDS[name]
    except (KeyError, TypeError):
        raise RegistryError(f"no kind of part named {name!r}{_did_you_mean(name, KINDS)}; the kinds are "
                            f"{sorted(KINDS)}.") from None


def register(kind_name: str, name: str, obj: Any = None, *, replace: bool = False) -> Any:
    """Register ``obj`` (or, as a decorator, the decorated class or function) as ``name`` of ``kind_name``."""
    return kind(kind_name).register(name, obj, replace=replace)


def build(kind_name: str, name_or_config: Any, **overrides: Any) -> Any:
    """Build a part: see :meth:`Kind.build`."""
    return kind(kind_name).build(name_or_config, **overrides)


def get(kind_name: str, name: str) -> Any:
    """The registered class, factory or object (or ``module:attr`` imported); see :meth:`Kind.get`."""
    return kind(kind_name).get(name)


def names(kind_name: str) -> builtins.list[str]:
    """The registered names of a kind, sorted."""
    return kind(kind_name).names()


def list(kind_name: str) -> builtins.list[str]:  # noqa: A001 - mirrors hwnas.spaces.list
    """The registered names of a kind, sorted (the same as :func:`names`)."""
    return names(kind_name)
