"""Labelled arrays: a symbolic dimension or cost, tabulated over the choices it depends on.

An :class:`LArray` holds one number for every combination of the choices of a few labels, with one
array axis per label (labels kept sorted, so two arrays align without transposes). Arithmetic
broadcasts over the union of labels, so a shape rule written with ``+ - * //`` on plain ints works
unchanged on symbolic dims, and a cost rule applied to symbolic shapes returns its whole cost table at
once: ``H_out = (H + 2 * p - k) // s + 1`` with ``k`` over ``{"b3.kernel"}`` and ``H`` over
``{"resolution"}`` gives an array over both.

A plain ``int`` is a dim that depends on nothing; :func:`simplify` turns a label-free array back into one.
"""

from __future__ import annotations

import itertools
import operator
from typing import Any

import numpy as np

from hwnas.space.choice import Choice, ChoiceExpr, leaf_choices

__all__ = ["LArray", "Dim", "SymbolicValueError", "as_larray", "dims_equal", "simplify", "where",
           "maximum", "minimum", "from_value"]


class SymbolicValueError(TypeError):
    """A value that depends on a choice was used where a concrete number is needed."""


class LArray:
    """A numpy array with one axis per label; see the module docstring."""

    __slots__ = ("labels", "data")
    __array_priority__ = 1000  # numpy scalars defer to our operators

    def __init__(self, labels: tuple[str, ...], data: np.ndarray):
        if list(labels) != sorted(labels) or len(set(labels)) != len(labels):
            order = np.argsort(labels)
            labels = tuple(labels[i] for i in order)
            data = np.transpose(data, order)
        self.labels = tuple(labels)
        self.data = np.asarray(data)
        if self.data.ndim != len(self.labels):
            raise ValueError(f"LArray over {self.labels} needs {len(self.labels)} axes, got {self.data.shape}")

    # ----------------------------------------------------------------- construction and access
    @staticmethod
    def from_choice(choice: Choice) -> LArray:
        return LArray((choice.label,), np.asarray(choice.values))

    def squeeze(self) -> LArray | int | float | bool:
        """Drop every axis along which the value does not change; a label-free result becomes a scalar."""
        labels, data = list(self.labels), self.data
        for ax in range(len(labels) - 1, -1, -1):
            first = np.take(data, [0], axis=ax)
            if np.all(data == first):
                data = np.squeeze(first, axis=ax)
                labels.pop(ax)
        return simplify(LArray(tuple(labels), data))

    def expand_to(self, labels: tuple[str, ...], sizes: dict[str, int]) -> np.ndarray:
        """The data broadcast to the full grid over ``labels`` (which must include ``self.labels``)."""
        mine = [lab for lab in labels if lab in self.labels]
        data = np.transpose(self.data, [self.labels.index(lab) for lab in mine])
        shape = [sizes[lab] if lab in self.labels else 1 for lab in labels]
        return np.broadcast_to(data.reshape(shape), [sizes[lab] for lab in labels])

    def sizes(self) -> dict[str, int]:
        return dict(zip(self.labels, self.data.shape))

    def __repr__(self) -> str:
        return f"LArray({list(self.labels)}, {self.data.tolist()})"

    # ----------------------------------------------------------------- guards against Python branching
    def __bool__(self) -> bool:
        raise SymbolicValueError(
            f"a value over choices {list(self.labels)} was used in a Python condition (if/and/or/min/max); "
            "it differs between samples. Use hwnas.graph.where()/maximum() in shape rules, or keep such "
            "logic inside a leaf module with a registered shape rule."
        )

    def __index__(self) -> int:
        raise SymbolicValueError(
            f"a value over choices {list(self.labels)} was used as a concrete int (e.g. in range() or a "
            "slice); it differs between samples. Register the module that does this as a leaf with its own "
            "shape rule (hwnas.graph.register_shape_rule)."
        )

    __int__ = __index__

    # ----------------------------------------------------------------- arithmetic
    def _binary(self, other: Any, fn, reverse: bool = False) -> LArray:
        a, b = (other, self) if reverse else (self, other)
        return binary(fn, a, b)

    def __add__(self, o):
        return self._binary(o, operator.add)

    def __radd__(self, o):
        return self._binary(o, operator.add, True)

    def __sub__(self, o):
        return self._binary(o, operator.sub)

    def __rsub__(self, o):
        return self._binary(o, operator.sub, True)

    def __mul__(self, o):
        return self._binary(o, operator.mul)

    def __rmul__(self, o):
        return self._binary(o, operator.mul, True)

    def __floordiv__(self, o):
        return self._binary(o, operator.floordiv)

    def __rfloordiv__(self, o):
        return self._binary(o, operator.floordiv, True)

    def __truediv__(self, o):
        return self._binary(o, operator.truediv)

    def __rtruediv__(self, o):
        return self._binary(o, operator.truediv, True)

    def __mod__(self, o):
        return self._binary(o, operator.mod)

    def __pow__(self, o):
        return self._binary(o, operator.pow)

    def __neg__(self):
        return LArray(self.labels, -self.data)

    def __eq__(self, o):  # type: ignore[override]
        return self._binary(o, operator.eq)

    def __ne__(self, o):  # type: ignore[override]
        return self._binary(o, operator.ne)

    def __lt__(self, o):
        return self._binary(o, operator.lt)

    def __le__(self, o):
        return self._binary(o, operator.le)

    def __gt__(self, o):
        return self._binary(o, operator.gt)

    def __ge__(self, o):
        return self._binary(o, operator.ge)

    __hash__ = None  # type: ignore[assignment]


Dim = int | LArray


def _align(*values: Any) -> tuple[tuple[str, ...], list[Any]]:
    labels = tuple(sorted({lab for v in values if isinstance(v, LArray) for lab in v.labels}))
    out = []
    for v in values:
        if isinstance(v, LArray):
            shape = [v.data.shape[v.labels.index(lab)] if lab in v.labels else 1 for lab in labels]
            out.append(v.data.reshape(shape))
        else:
            out.append(v)
    return labels, out


def binary(fn, a: Any, b: Any) -> Any:
    """``fn(a, b)`` broadcast over the union of the labels of ``a`` and ``b``."""
    labels, (da, db) = _align(a, b)
    return LArray(labels, np.asarray(fn(da, db)))


def where(cond: Any, a: Any, b: Any) -> Any:
    """Elementwise ``a if cond else b`` over labelled values (plain values work too)."""
    if not any(isinstance(v, LArray) for v in (cond, a, b)):
        return a if cond else b
    labels, (dc, da, db) = _align(cond, a, b)
    return simplify(LArray(labels, np.where(dc, da, db)))


def maximum(a: Any, b: Any) -> Any:
    """Elementwise maximum of labelled values."""
    if not isinstance(a, LArray) and not isinstance(b, LArray):
        return max(a, b)
    return binary(np.maximum, a, b)


def minimum(a: Any, b: Any) -> Any:
    """Elementwise minimum of labelled values."""
    if not isinstance(a, LArray) and not isinstance(b, LArray):
        return min(a, b)
    return binary(np.minimum, a, b)


def simplify(value: Any) -> Any:
    """A label-free :class:`LArray` as a Python scalar; anything else unchanged."""
    if isinstance(value, LArray) and not value.labels:
        item = value.data.item()
        return item
    return value


def from_value(value: Any) -> Any:
    """A constant, :class:`Choice` or :class:`ChoiceExpr` as a plain value or an :class:`LArray`.

    An expression is tabulated by evaluating it over the product of its labels' choices.
    """
    if isinstance(value, Choice):
        return LArray.from_choice(value)
    if isinstance(value, ChoiceExpr):
        return _tabulate(value)
    if isinstance(value, tuple):
        return tuple(from_value(v) for v in value)
    if isinstance(value, list):
        return [from_value(v) for v in value]
    return value


_EXPR_CACHE: dict[int, tuple[ChoiceExpr, Any]] = {}


def _tabulate(expr: ChoiceExpr) -> Any:
    hit = _EXPR_CACHE.get(id(expr))
    if hit is not None and hit[0] is expr:
        return hit[1]
    by_label: dict[str, Choice] = {}
    for c in leaf_choices(expr):
        by_label.setdefault(c.label, c)
    labels = tuple(sorted(by_label))
    shape = tuple(len(by_label[lab].values) for lab in labels)
    data = np.empty(shape, dtype=object)
    for idx in itertools.product(*(range(n) for n in shape)):
        data[idx] = expr.evaluate({lab: by_label[lab].values[i] for lab, i in zip(labels, idx)})
    try:
        data = data.astype(np.result_type(*data.ravel().tolist()))
    except TypeError:
        pass
    result = LArray(labels, data).squeeze()
    _EXPR_CACHE[id(expr)] = (expr, result)
    return result


def as_larray(value: Any) -> LArray:
    """Any number or labelled value as an :class:`LArray` (a scalar becomes a label-free array)."""
    if isinstance(value, LArray):
        return value
    return LArray((), np.asarray(value))


def dims_equal(a: Any, b: Any, active: Any = 1) -> bool:
    """True when two dims are equal for every combination of choices where ``active`` (1, 0 or an LArray of
    0/1, an op's activity) is not 0: a candidate that is not chosen need not fit."""
    if not isinstance(active, LArray) and not active:
        return True
    if not isinstance(a, LArray) and not isinstance(b, LArray):
        return a == b
    eq = binary(operator.eq, a, b)
    if isinstance(active, LArray):
        eq = binary(lambda e, act: np.logical_or(e, act == 0), eq, active)
    return bool(np.all(eq.data)) if isinstance(eq, LArray) else bool(eq)
