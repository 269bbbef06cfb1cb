"""Labelled choices and expressions over them.

A :class:`Choice` is one searchable decision: a tuple of candidate values and a *label*. The same label
used in several places is one decision (for example the width shared by every layer of a residual
group). Arithmetic on choices builds a :class:`ChoiceExpr`, a value derived from one or more labels,
such as ``hidden = make_divisible(in_channels * expand, 8)``.

A *sample* is a plain ``dict`` from label to value; :func:`evaluate` resolves any value (a constant, a
choice or an expression) under a sample.

Example:
    >>> from hwnas.nn import Choice, make_divisible
    >>> expand = Choice([3, 4, 6], label="s1.expand")
    >>> hidden = make_divisible(expand * 24, 8)
    >>> evaluate(hidden, {"s1.expand": 4})
    96
    >>> value_range(hidden)
    [72, 96, 144]
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Callable, Iterable
from typing import Any

__all__ = [
    "Choice",
    "ChoiceExpr",
    "ChoiceError",
    "evaluate",
    "is_choice",
    "labels_of",
    "leaf_choices",
    "make_divisible",
    "value_range",
    "max_value",
    "min_value",
]


class ChoiceError(ValueError):
    """A choice, label or sample is malformed."""


class _ValueBase:
    """Arithmetic shared by :class:`Choice` and :class:`ChoiceExpr`."""

    def _bin(self, other: Any, fn: Callable, reverse: bool = False) -> ChoiceExpr:
        return ChoiceExpr(fn, other, self) if reverse else ChoiceExpr(fn, self, other)

    def __add__(self, o):
        return self._bin(o, operator.add)

    def __radd__(self, o):
        return self._bin(o, operator.add, True)

    def __sub__(self, o):
        return self._bin(o, operator.sub)

    def __rsub__(self, o):
        return self._bin(o, operator.sub, True)

    def __mul__(self, o):
        return self._bin(o, operator.mul)

    def __rmul__(self, o):
        return self._bin(o, operator.mul, True)

    def __floordiv__(self, o):
        return self._bin(o, operator.floordiv)

    def __rfloordiv__(self, o):
        return self._bin(o, operator.floordiv, True)

    def __truediv__(self, o):
        return self._bin(o, operator.truediv)

    def __rtruediv__(self, o):
        return self._bin(o, operator.truediv, True)

    def __bool__(self) -> bool:
        raise ChoiceError(
            f"{self!r} is a searchable value and has no truth value until a sample is chosen; "
            "use it as a module argument, or resolve it with hwnas.space.evaluate(value, sample)."
        )

    def apply(self, fn: Callable[[Any], Any]) -> ChoiceExpr:
        """A value derived from this one by any Python function, e.g. ``c.apply(lambda v: v // 2)``."""
        return ChoiceExpr(fn, self)


class Choice(_ValueBase):
    """A searchable value: one of ``values``, chosen per sample under ``label``.

    Args:
        values: the candidates, at least one, unique and hashable (ints, floats or strings).
        label: the name of the decision in a sample. Choices that share a label are one decision and
            must list the same values.

    Raises:
        ChoiceError: empty or duplicate values, or a missing label.
    """

    def __init__(self, values: Iterable[Any], label: str):
        values = tuple(values)
        if not isinstance(label, str) or not label:
            raise ChoiceError(
                f"Choice({list(values)!r}) needs a non-empty string label (got {label!r}); "
                "pass label='stage1.kernel' or similar."
            )
        if not values:
            raise ChoiceError(f"Choice {label!r} has no values; give at least one candidate.")
        if len(set(values)) != len(values):
            raise ChoiceError(f"Choice {label!r} lists a value twice: {list(values)!r}; make them unique.")
        self.values = values
        self.label = label

    @property
    def labels(self) -> tuple[str, ...]:
        return (self.label,)

    def __repr__(self) -> str:
        return f"Choice({list(self.values)!r}, label={self.label!r})"

    def __len__(self) -> int:
        return len(self.values)


class ChoiceExpr(_ValueBase):
    """A value computed by ``fn`` from constants, choices and other expressions.

    Args:
        fn: a pure function of the resolved operands.
        *operands: constants, :class:`Choice` or :class:`ChoiceExpr`.
    """

    def __init__(self, fn: Callable[..., Any], *operands: Any):
        self.fn = fn
        self.operands = operands
        labels: list[str] = []
        for o in operands:
            for lab in labels_of(o):
                if lab not in labels:
                    labels.append(lab)
        self.labels = tuple(labels)

    def evaluate(self, sample: dict[str, Any]) -> Any:
        return self.fn(*(evaluate(o, sample) for o in self.operands))

    def __repr__(self) -> str:
        name = getattr(self.fn, "__name__", "fn")
        return f"ChoiceExpr({name}, over {list(self.labels)!r})"


def is_choice(value: Any) -> bool:
    """True for a :class:`Choice` or :class:`ChoiceExpr` (a value that depends on a sample)."""
    return isinstance(value, _ValueBase)


def labels_of(value: Any) -> tuple[str, ...]:
    """The labels a value depends on (empty for a constant; tuples and lists are searched)."""
    if isinstance(value, _ValueBase):
        return value.labels
    if isinstance(value, (tuple, list)):
        out: list[str] = []
        for v in value:
            out.extend(lab for lab in labels_of(v) if lab not in out)
        return tuple(out)
    return ()


def leaf_choices(value: Any) -> list[Choice]:
    """Every :class:`Choice` inside a value, once each, in order of appearance."""
    found: list[Choice] = []

    def walk(v: Any) -> None:
        if isinstance(v, Choice):
            if all(v is not f for f in found):
                found.append(v)
        elif isinstance(v, ChoiceExpr):
            for o in v.operands:
                walk(o)
        elif isinstance(v, (tuple, list)):
            for o in v:
                walk(o)

    walk(value)
    return found


def evaluate(value: Any, sample: dict[str, Any]) -> Any:
    """Resolve a constant, choice or expression (or a tuple/list of them) under ``sample``.

    Raises:
        ChoiceError: the sample has no value for a label the value depends on.
    """
    if isinstance(value, Choice):
        try:
            return sample[value.label]
        except KeyError:
            raise ChoiceError(
                f"the sample has no value for label {value.label!r} (choices {list(value.values)!r}); "
                "sample with space.random_sample() or check space.choices() for the labels."
            ) from None
    if isinstance(value, ChoiceExpr):
        return value.evaluate(sample)
    if isinstance(value, tuple):
        return tuple(evaluate(v, sample) for v in value)
    if isinstance(value, list):
        return [evaluate(v, sample) for v in value]
    return value


def value_range(value: Any) -> list[Any]:
    """All values ``value`` can take, sorted and unique (over the product of its labels' choices)."""
    leaves = leaf_choices(value)
    if not leaves:
        return [value]
    by_label: dict[str, Choice] = {}
    for c in leaves:
        by_label.setdefault(c.label, c)
    labels = list(by_label)
    seen = set()
    for combo in itertools.product(*(by_label[lab].values for lab in labels)):
        seen.add(evaluate(value, dict(zip(labels, combo))))
    return sorted(seen)


def max_value(value: Any) -> Any:
    """The largest value ``value`` can take."""
    return value_range(value)[-1]


def min_value(value: Any) -> Any:
    """The smallest value ``value`` can take."""
    return value_range(value)[0]


def _make_divisible_int(v: float, divisor: int, min_value: int | None = None) -> int:
    floor = divisor if min_value is None else min_value
    new_v = max(floor, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:  # do not round down by more than 10%
        new_v += divisor
    return int(new_v)


def make_divisible(v: Any, divisor: int = 8, min_value: int | None = None) -> Any:
    """Round ``v`` to the nearest multiple of ``divisor`` without losing more than 10%.

    The rounding rule of the MobileNet papers (Sandler et al. 2018; Howard et al. 2019). Works on plain
    numbers and on choices (it then returns a :class:`ChoiceExpr`).
    """
    if is_choice(v):
        return ChoiceExpr(lambda x: _make_divisible_int(x, divisor, min_value), v)
    return _make_divisible_int(v, divisor, min_value)
