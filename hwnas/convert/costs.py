"""Parameter counts of the data-movement layers that :func:`hwnas.convert` inserts (:class:`DynSplit`,
:class:`DynSlice`): none. Their FLOPs are zero as data movement (``"split"`` and ``"getitem"`` are movement
ops of :mod:`hwnas.profile.rules`). Registered here, only where no rule exists yet, because
:class:`~hwnas.profile.NumParamsProfiler` asks every hwnas layer for a parameter rule."""

from __future__ import annotations

from typing import Any

from hwnas.graph.trace import Op
from hwnas.profile.rules import param_count, register_cost_rule

__all__: list[str] = []


def _none(op: Op) -> Any:
    return 0


for _op in ("split", "getitem"):
    if param_count(_op) is None:
        register_cost_rule("params", _op)(_none)
