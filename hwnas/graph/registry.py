"""The shape-rule registry: op type -> a pure function from symbolic inputs to symbolic outputs.

A rule receives a :class:`Call` (the interpreted arguments, the module for a module call, the module
path) and returns the output value; it may record attributes that cost rules need in ``call.attrs``.
Targets are module classes (looked up along the MRO), functions, or tensor-method names, each mapped to
a canonical op name (``"conv"``, ``"relu"``, ``"add"``, ...) that cost rules are keyed by.

Register a rule for your own leaf module::

    import hwnas
    from hwnas.graph import TensorMeta, register_shape_rule

    @register_shape_rule(MyUpsample, op="upsample")
    def _my_upsample(call):
        x = call.tensor(0)
        n, c, h, w = x.shape
        return TensorMeta((n, c, 2 * h, 2 * w))
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from hwnas.graph.larray import Dim

__all__ = ["TensorMeta", "Call", "ShapeRule", "register_shape_rule", "register_leaf", "lookup_rule",
           "is_registered_leaf", "UnsupportedOpError", "numel"]


class UnsupportedOpError(NotImplementedError):
    """An op has no shape or cost rule."""


@dataclass(frozen=True)
class TensorMeta:
    """A tensor during symbolic shape inference: its shape (each dim an int or an :class:`LArray`) and dtype."""

    shape: tuple[Dim, ...]
    dtype: torch.dtype = torch.float32

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __repr__(self) -> str:
        dims = ", ".join(repr(d) for d in self.shape)
        return f"TensorMeta({dims})" if self.dtype == torch.float32 else f"TensorMeta({dims}; {self.dtype})"


def numel(t: TensorMeta) -> Dim:
    """The number of elements (symbolic when a dim is)."""
    n: Dim = 1
    for d in t.shape:
        n = n * d
    return n


@dataclass
class Call:
    """One op call during interpretation."""

    op_type: str
    args: tuple
    kwargs: dict
    module: nn.Module | None
    path: str
    attrs: dict[str, Any] = field(default_factory=dict)
    activity: Any = 1
    """1, or an LArray of 0/1 saying for which samples the op runs: shape checks hold only there."""

    def arg(self, index: int, name: str, default: Any = None) -> Any:
        """Positional argument ``index`` or keyword ``name`` (or ``default``)."""
        if index < len(self.args):
            return self.args[index]
        return self.kwargs.get(name, default)

    def tensor(self, index: int = 0, name: str = "input") -> TensorMeta:
        """A tensor argument, with a clear error when it is something else."""
        t = self.arg(index, name)
        if not isinstance(t, TensorMeta):
            raise TypeError(f"op {self.op_type!r} at {self.path!r}: argument {index} ({name}) should be a tensor, "
                            f"got {type(t).__name__} {t!r}.")
        return t

    def tensors(self) -> list[TensorMeta]:
        return [a for a in list(self.args) + list(self.kwargs.values()) if isinstance(a, TensorMeta)]


ShapeRule = Callable[[Call], Any]


@dataclass(frozen=True)
class _Entry:
    op: str
    rule: ShapeRule


_MODULE_RULES: dict[type, _Entry] = {}
_FUNCTION_RULES: dict[Any, _Entry] = {}
_METHOD_RULES: dict[str, _Entry] = {}
_NAMED_RULES: dict[str, _Entry] = {}  # "package.module.function" -> rule
_LEAVES: set[type] = set()


def register_shape_rule(*targets: Any, op: str | None = None, overwrite: bool = False) -> Callable[[ShapeRule], ShapeRule]:
    """Register a shape rule for module classes, functions or method names (strings).

    Args:
        *targets: module classes (which also become torch.fx leaves), functions, tensor method names, or the
            qualified names of functions from packages hwnas does not import (``"pkg.module.function"``).
        op: the canonical op name that cost rules use; defaults to the rule function's name without a
            leading underscore.
        overwrite: replace an existing rule instead of raising ``ValueError``.
    """

    def deco(rule: ShapeRule) -> ShapeRule:
        entry = _Entry(op or rule.__name__.lstrip("_"), rule)
        for t in targets:
            table, key = _table_for(t)
            if key in table and not overwrite and table[key].rule is not rule:
                raise ValueError(f"{t!r} already has a shape rule ({table[key].op!r}); pass overwrite=True to "
                                 "replace it.")
            table[key] = entry
            if isinstance(t, type) and issubclass(t, nn.Module):
                _LEAVES.add(t)
        return rule

    return deco


def _table_for(target: Any) -> tuple[dict, Any]:
    if isinstance(target, str):
        return (_NAMED_RULES, target) if "." in target else (_METHOD_RULES, target)
    if isinstance(target, type):
        return _MODULE_RULES, target
    return _FUNCTION_RULES, target


def register_leaf(cls: type[nn.Module]) -> type[nn.Module]:
    """Make torch.fx treat ``cls`` as one op (it then needs a shape rule, see :func:`register_shape_rule`)."""
    _LEAVES.add(cls)
    return cls


def _inherits(cls: type, base: type) -> bool:
    """``cls`` is ``base`` or a subclass that runs ``base``'s own ``forward`` (a rule written for ``base`` then
    describes it; a subclass with its own ``forward``, such as a convolution that pads first, may differ)."""
    return cls is base or getattr(cls, "forward", None) is getattr(base, "forward", None)


def is_registered_leaf(module: nn.Module) -> bool:
    """A registered leaf class, or a subclass of one that keeps its ``forward``."""
    cls = type(module)
    return any(_inherits(cls, base) for base in cls.__mro__ if base in _LEAVES)


def lookup_rule(kind: str, target: Any) -> tuple[str, ShapeRule] | None:
    """The ``(op name, rule)`` for a node's target, or ``None``.

    A module class gets the rule of the nearest registered base class, unless it overrides that class's
    ``forward`` (then it has no rule: it is traced through, or profiled as a fixed block).
    """
    if kind == "call_module":
        cls = type(target)
        for base in cls.__mro__:
            if base in _MODULE_RULES:
                if not _inherits(cls, base):
                    return None
                e = _MODULE_RULES[base]
                return e.op, e.rule
        return None
    if kind == "call_method":
        e = _METHOD_RULES.get(target)
    else:
        try:
            e = _FUNCTION_RULES.get(target)
        except TypeError:  # unhashable target
            e = None
        if e is None and _NAMED_RULES:
            e = _NAMED_RULES.get(f"{getattr(target, '__module__', '')}.{getattr(target, '__qualname__', '')}")
    return (e.op, e.rule) if e else None
