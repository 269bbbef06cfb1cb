"""FLOP rules for the ops of :mod:`hwnas.graph.rules_ops`, matching fvcore's handles
(``fvcore.nn.jit_handles``, table ``_DEFAULT_SUPPORTED_OPS``) exactly where fvcore counts:

- ``aten::einsum``: the equation's letters renamed in order of appearance; ``abc,abd->acd`` counts
  ``a * b * c * d`` from the first operand's shape and the last one's last dim, ``abc,adc->adb`` likewise;
  any other equation half of numpy's ``einsum_path(..., optimize="optimal")`` "optimized flop" count, floored;
- ``aten::addmm``: ``n * m * p`` for ``(n, m) @ (m, p)``;
- ``aten::grid_sampler``: ``4 * numel(output)`` (fvcore assumes bilinear).

``scaled_dot_product_attention`` is not in fvcore's table: 0 by default and listed in
``FlopsProfiler.uncounted_ops``; with ``elementwise=True`` its two matmuls count
``prod(batch dims) * L * S * (E + Ev)`` (query ``(..., L, E)``, key ``(..., S, E)``, value ``(..., S, Ev)``),
as for multi-head attention without weights. ``pow``, ``abs``, ``neg``, floor division and remainder on
tensors, and the comparisons ``< <= > >=``, count ``numel(output)`` with ``elementwise=True``, like the other
elementwise ops.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np

from hwnas.graph.fallback import evaluate
from hwnas.graph.registry import numel
from hwnas.graph.trace import Op
from hwnas.profile.rules import _BUILTIN, _FLOPS, register_cost_rule

__all__ = ["einsum_flops"]


def einsum_flops(equation: str, shapes: list[tuple[int, ...]]) -> float:
    """fvcore's FLOPs of ``torch.einsum(equation, *operands)`` with operands of concrete ``shapes``."""
    eq = equation.replace(" ", "")
    order = OrderedDict((c, None) for c in eq if c.isalpha())
    eq = eq.translate({ord(c): ord("a") + i for i, c in enumerate(order)})
    if eq == "abc,abd->acd":
        n, c, t = shapes[0]
        return n * c * t * shapes[-1][-1]
    if eq == "abc,adc->adb":
        n, t, g = shapes[0]
        return n * t * g * shapes[-1][1]
    views = [np.broadcast_to(np.zeros((), dtype=np.float64), s) for s in shapes]  # shapes only, no memory
    report = np.einsum_path(eq, *views, optimize="optimal")[1]
    for line in report.split("\n"):
        if "optimized flop" in line.lower():
            return float(np.floor(float(line.split(":")[-1]) / 2))
    raise ValueError(f"numpy's einsum_path gave no FLOP count for {equation!r}")


@register_cost_rule("flops", "einsum", by_default=True)
def _einsum_flops(op: Op) -> Any:
    shapes = [tuple(s) for s in op.attrs["shapes"]]
    return evaluate(lambda *s: einsum_flops(op.attrs["equation"], list(s)), tuple(shapes), {},
                    f"einsum {op.attrs['equation']!r} at {op.path or '<root>'!r}")


@register_cost_rule("flops", "addmm", by_default=True)
def _addmm_flops(op: Op) -> Any:
    a, b = op.attrs["a"], op.attrs["b"]
    return a.shape[0] * a.shape[1] * b.shape[1]


@register_cost_rule("flops", "grid_sample", by_default=True)
def _grid_sample_flops(op: Op) -> Any:
    return 4 * numel(op.out)


@register_cost_rule("flops", "scaled_dot_product_attention", by_default=False)
def _sdpa_flops(op: Op) -> Any:
    q, k, v = op.attrs["q"], op.attrs["k"], op.attrs["v"]
    batch: Any = 1
    for d in q.shape[:-2]:
        batch = batch * d
    return batch * q.shape[-2] * k.shape[-2] * (q.shape[-1] + v.shape[-1])


def _out_numel(op: Op) -> Any:
    return numel(op.out)


for _name in ("pow", "abs", "neg", "floordiv", "mod", "lt", "le", "gt", "ge"):
    register_cost_rule("flops", _name, by_default=False)(_out_numel)

_BUILTIN.update(_FLOPS)
