"""The public profilers: thin front ends over the op graph and the cost-table engine.

Example:
    >>> import torch, hwnas
    >>> space = hwnas.spaces.create("digits")
    >>> flops = hwnas.FlopsProfiler(space, torch.randn(1, 1, 8, 8))
    >>> sample = space.random_sample(0)
    >>> flops.profile(sample) > 0
    True
    >>> params = hwnas.NumParamsProfiler(space, torch.randn(1, 1, 8, 8), graph=flops.graph)
    >>> params.profile(sample) == sum(p.numel() for p in hwnas.export(space, sample).parameters())
    True
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from hwnas.graph.larray import LArray, maximum
from hwnas.graph.registry import UnsupportedOpError
from hwnas.graph.trace import Op, OpGraph, _tensor_leaves, build_graph
from hwnas.profile import rules_extra, rules_ops  # noqa: F401  (dynamic layers of converted models, attention, ...)
from hwnas.profile.blocks import block_flops
from hwnas.profile.engine import CostModel
from hwnas.profile.rules import MOVEMENT_OPS, flop_rule, is_builtin, param_count
from hwnas.space.modules import HwnasModule

__all__ = ["Profiler", "FlopsProfiler", "NumParamsProfiler", "value_at"]


def value_at(cost: Any, sample: dict[str, Any], graph: OpGraph) -> float:
    """A cost (number or :class:`LArray`) at one sample."""
    if not isinstance(cost, LArray):
        return float(cost)
    idx = tuple(graph.choices[lab].values.index(sample[lab]) for lab in cost.labels)
    return float(cost.data[idx])


class Profiler:
    """A cost per op, tabulated over the choices; see :class:`~hwnas.profile.engine.CostModel`.

    Subclasses define :meth:`op_cost`. Every profiler of a space exposes the same interface:
    ``profile(sample) -> float``, ``profile_batch(samples) -> np.ndarray``, ``expectation(probs)``.

    Args:
        space: the model space (an ``nn.Module`` with hwnas layers).
        dummy_input: an input tensor of the right shape (its batch size counts in FLOPs).
        graph: an :class:`OpGraph` already built for this space and input, to share between profilers.
    """

    metric = "cost"
    unit = ""

    def __init__(self, space: Any, dummy_input: Any = None, graph: OpGraph | None = None):
        if graph is None:
            if dummy_input is None:
                raise ValueError(f"{type(self).__name__} needs dummy_input (e.g. torch.randn(1, 3, 224, 224)) "
                                 "or a prebuilt graph=.")
            graph = build_graph(space, dummy_input)
        self.space = space
        self.graph = graph
        self.op_costs: list[tuple[Op, Any]] = [(op, cost * activity) for op, cost, activity in self._costs()
                                                if not _is_zero(activity)]
        self.model = CostModel(graph.choices, [c for _, c in self.op_costs])

    def _costs(self):
        """``(op, cost, activity)`` for every op with a cost (``op`` may be ``None`` for a model constant)."""
        for op in self.graph.ops:
            cost = self.op_cost(op)
            if cost is not None:
                yield op, cost, op.activity

    def op_cost(self, op: Op) -> Any:  # pragma: no cover - abstract
        """The op's cost (a number or an LArray), or ``None`` when it has none."""
        raise NotImplementedError

    @property
    def labels(self) -> tuple[str, ...]:
        """The label order of index vectors (``encode`` / ``profile_batch``)."""
        return self.model.labels

    def profile(self, sample: dict[str, Any]) -> float:
        """The metric of one sample, in microseconds: no model run, no re-trace."""
        return self.model.profile(sample)

    def profile_batch(self, samples: np.ndarray | Sequence[dict[str, Any]]) -> np.ndarray:
        """The metric of many samples: an ``[N, L]`` index array (see :meth:`encode_batch`) or a list of dicts."""
        return self.model.profile_batch(samples)

    def expectation(self, probs: dict[str, Any]) -> Any:
        """Exact expected metric under independent per-label probabilities (differentiable in torch)."""
        return self.model.expectation(probs)

    def encode(self, sample: dict[str, Any]) -> np.ndarray:
        return self.model.encode(sample)

    def encode_batch(self, samples: Sequence[dict[str, Any]]) -> np.ndarray:
        return self.model.encode_batch(samples)

    def breakdown(self, sample: dict[str, Any]) -> list[tuple[str, str, float]]:
        """``(op name, op type, cost)`` of every op that runs in ``sample`` with a non-zero cost."""
        self.model.encode(sample)  # validates
        rows = []
        for op, cost in self.op_costs:
            v = value_at(cost, sample, self.graph)
            if v:
                rows.append((op.name, op.op_type, v) if op is not None else ("(model overhead)", "overhead", v))
        return rows

    def __repr__(self) -> str:
        return f"{type(self).__name__}({type(self.space).__name__}, {len(self.op_costs)} ops, " \
               f"{len(self.model.tables)} tables)"


def _is_zero(activity: Any) -> bool:
    return not isinstance(activity, LArray) and activity == 0


class FlopsProfiler(Profiler):
    """FLOPs of a sample, one multiply-add = one FLOP, equal to fvcore's count by default.

    Args:
        space, dummy_input, graph: see :class:`Profiler`.
        elementwise: also count what fvcore leaves out (activations, adds, pooling, ...) by the rules
            documented in :mod:`hwnas.profile.rules`.
        on_missing: ``"raise"`` (default) for an op without a FLOP rule, or ``"skip"`` to count it as 0
            and list it in :attr:`skipped_ops`.

    Ops without a shape rule of their own (shapes from PyTorch, see :mod:`hwnas.graph.fallback`) are torch
    ops that fvcore does not count: they cost 0 and are listed in ``uncounted_ops``, with ``elementwise=True``
    too. Fixed blocks (a module torch.fx cannot trace, a leaf module without a rule) cost what fvcore counts
    for them (:mod:`hwnas.profile.blocks`); without fvcore installed they cost 0 and are listed.

    Attributes:
        uncounted_ops: op type -> number of ops that fvcore does not count and this profiler did not count
            (with ``elementwise=True``, only ops without a shape rule of their own).
        skipped_ops: op type -> number of ops without a rule that were skipped (``on_missing="skip"``).
    """

    metric = "flops"
    unit = "FLOPs"

    def __init__(self, space: Any, dummy_input: Any = None, graph: OpGraph | None = None,
                 elementwise: bool = False, on_missing: str = "raise"):
        if on_missing not in ("raise", "skip"):
            raise ValueError(f"on_missing must be 'raise' or 'skip', got {on_missing!r}.")
        self.elementwise, self.on_missing = elementwise, on_missing
        self.uncounted_ops: Counter[str] = Counter()
        self.skipped_ops: Counter[str] = Counter()
        super().__init__(space, dummy_input, graph)

    def op_cost(self, op: Op) -> Any:
        if op.op_type in MOVEMENT_OPS:
            return None
        rule = flop_rule(op.op_type)
        fallback = op.attrs.get("fallback")
        if fallback is not None and (rule is None or is_builtin(op.op_type)):  # a user's rule for it wins
            if not _tensor_leaves(op.output):  # a size, a dtype, ...: not an op fvcore would see
                return None
            cost = block_flops(op) if fallback == "block" else None
            if cost is None:
                self.uncounted_ops[op.op_type] += 1
            return cost
        if rule is None:
            if self.on_missing == "skip":
                self.skipped_ops[op.op_type] += 1
                return None
            raise UnsupportedOpError(
                f"no FLOP rule for op {op.op_type!r} at {op.path!r} ({op.name}). Register one with "
                f"@register_cost_rule('flops', {op.op_type!r}) (from hwnas.profile import register_cost_rule) on a function of the op that returns "
                "its FLOPs, or build the profiler with on_missing='skip' to count it as 0 (it is then listed in "
                ".skipped_ops)."
            )
        cost: Any = 0
        if rule.counts_by_default(op) or self.elementwise:
            cost = rule.fn(op)
        else:
            self.uncounted_ops[op.op_type] += 1
        if rule.extra is not None:
            extra = rule.extra(op)
            if self.elementwise:
                cost = cost + extra
            elif not (isinstance(extra, int) and extra == 0):
                self.uncounted_ops["scaled_dot_product_attention"] += 1
        return cost


class NumParamsProfiler(Profiler):
    """Parameters of a sample: exactly ``sum(p.numel() for p in hwnas.export(space, sample).parameters())``.

    A layer called several times counts once; hwnas layers count their active slice, other layers all their
    parameters.
    """

    metric = "params"
    unit = "params"

    def _costs(self):
        # Count each parameter once, wherever it is used (a layer called several times, weights tied between
        # layers, a parameter read directly): it exists whenever any op using it runs. hwnas layers count their
        # active slice, by rule.
        first: dict[int, list] = {}  # id(parameter or hwnas layer) -> [op using it first, numel, activity]
        for op in self.graph.ops:
            if op.kind == "get_attr":
                items = [(op.attrs["tensor"], op.attrs["numel"])]
            elif op.module is None:
                continue
            elif isinstance(op.module, HwnasModule):
                items = [(op.module, None)]
            else:
                items = [(p, p.numel()) for p in op.module.parameters()]
            for owner, n in items:
                if id(owner) in first:
                    first[id(owner)][2] = maximum(first[id(owner)][2], op.activity)
                else:
                    first[id(owner)] = [op, n, op.activity]
        by_op: dict[tuple, list] = {}  # one cost per op (and activity) where possible, for breakdown()
        for op, n, activity in first.values():
            cost = self.op_cost(op) if n is None else n
            key = (op.name, id(activity))
            if key in by_op:
                by_op[key][1] = by_op[key][1] + cost
            else:
                by_op[key] = [op, cost, activity]
        for op, cost, activity in by_op.values():
            yield op, cost, activity

    def op_cost(self, op: Op) -> Any:
        if op.kind == "get_attr":
            return op.attrs["numel"]
        if isinstance(op.module, HwnasModule):
            rule = param_count(op.op_type)
            if rule is None:
                raise UnsupportedOpError(
                    f"no parameter rule for hwnas layer {type(op.module).__name__} ({op.op_type!r}) at {op.path!r}; "
                    f"register one with @register_cost_rule('params', {op.op_type!r}) (from hwnas.profile import "
                    "register_cost_rule)."
                )
            return rule(op)
        return sum(p.numel() for p in op.module.parameters())
