"""``hwnas.profile``: a table of FLOPs, params (and latency) over a space, with constraint checks.

Example:
    >>> import torch, hwnas
    >>> summary = hwnas.profile(hwnas.spaces.create("digits"), torch.randn(1, 1, 8, 8),
    ...                         constraints={"flops": "60%"}, verbose=False)
    >>> summary.constraints[0].satisfiable
    True
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

from hwnas.graph.trace import build_graph
from hwnas.profile.constraints import ConstraintError, metric_range, parse_constraints
from hwnas.profile.profilers import FlopsProfiler, NumParamsProfiler
from hwnas.report.tables import format_number, render_table

__all__ = ["ProfileSummary", "ConstraintRow", "profile", "format_number"]

log = logging.getLogger(__name__)


@dataclass
class ConstraintRow:
    metric: str
    spec: Any
    bound: float
    satisfiable: bool


@dataclass
class ProfileSummary:
    """What :func:`profile` prints, as a record."""

    metrics: dict[str, tuple[float, float, float]]  # metric -> (min, centroid, max)
    constraints: list[ConstraintRow]
    choices: dict[str, tuple]
    num_subnets: int
    profilers: dict[str, Any] = field(repr=False, default_factory=dict)
    blocks: list[tuple[str, str, str]] = field(default_factory=list)  # (path, class, why): profiled whole
    use_centroid: bool = False  # constraints were checked against the centroid subnet instead of the smallest

    @property
    def is_sat(self) -> bool:
        """Whether every constraint can be met (by the smallest subnet, or the centroid with ``use_centroid``)."""
        return all(c.satisfiable for c in self.constraints)

    @property
    def ratios(self) -> dict[str, float]:
        """max / min of each metric (how much the space can shrink it; inf when the minimum is 0)."""
        return {m: (hi / lo if lo > 0 else math.inf) for m, (lo, _, hi) in self.metrics.items()}

    @property
    def num_configurable(self) -> int:
        """The number of labels (configurable hyperparameters) with more than one choice."""
        return sum(1 for v in self.choices.values() if len(v) > 1)

    def table(self) -> str:
        """The summary as a text table (drawn by ``rich``), then the space's labels and fixed blocks."""
        cons = {c.metric: c for c in self.constraints}
        ratios = self.ratios
        rows = []
        for metric, (lo, mid, hi) in self.metrics.items():
            c = cons.get(metric)
            rows.append([metric, format_number(lo), format_number(mid), format_number(hi), f"{ratios[metric]:.2f}",
                         f"<= {format_number(c.bound)}" if c else "-",
                         ("yes" if c.satisfiable else "NO") if c else "-"])
        lines = [render_table(["metric", "min", "centroid", "max", "max/min", "constraint", "satisfiable"], rows)]
        if self.use_centroid and self.constraints:
            lines.append("(satisfiable: checked against the centroid subnet)")
        lines.append("")
        lines.append(f"search space: {len(self.choices)} labels, {self.num_subnets:.4g} subnets "
                     f"(10^{math.log10(max(self.num_subnets, 1)):.1f})")
        for label, values in self.choices.items():
            lines.append(f"  {label:<28}{list(values)}")
        if self.blocks:
            lines.append(f"fixed blocks (profiled whole, no choice inside): {len(self.blocks)}")
            lines.extend(f"  {path} ({cls}): {why}" for path, cls, why in self.blocks)
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    def __repr__(self) -> str:
        """One line: :func:`profile` has printed the table already (a notebook echoing the result shows this, not
        the table a second time); ``print(summary)`` prints the table again."""
        ranges = ", ".join(f"{m} {format_number(lo)}..{format_number(hi)}" for m, (lo, _, hi) in self.metrics.items())
        return (f"<ProfileSummary: {ranges}; {self.num_subnets:.4g} subnets; constraints "
                f"{'satisfiable' if self.is_sat else 'NOT satisfiable'} ({len(self.constraints)})>")


def profile(space: Any, dummy_input: Any, constraints: dict[str, Any] | None = None,
            profilers: dict[str, Any] | None = None, verbose: bool = True, strict: bool = False,
            use_centroid: bool = False) -> ProfileSummary:
    """Profile a whole space: min / centroid / max of each metric, constraint feasibility, space size.

    Args:
        space: the model space.
        dummy_input: input tensor (e.g. ``torch.randn(1, 3, 224, 224)``).
        constraints: e.g. ``{"flops": "60%", "params": 3e6}``; each is checked against the space.
        profilers: extra or replacement profilers by metric name, e.g. ``{"latency_ms": LatencyProfiler(...)}``.
        verbose: print the table.
        strict: raise :class:`~hwnas.profile.constraints.ConstraintError` when a constraint cannot be met.
        use_centroid: check constraints against the centroid subnet (a typical one) instead of the smallest.

    Returns:
        A :class:`ProfileSummary` with the same content as the printed table (``is_sat``, ``ratios``,
        ``num_configurable`` too).
    """
    graph = build_graph(space, dummy_input)
    profs: dict[str, Any] = {"flops": FlopsProfiler(space, graph=graph), "params": NumParamsProfiler(space, graph=graph)}
    profs.update(profilers or {})
    ranges = {m: metric_range(p) for m, p in profs.items()}
    parsed = parse_constraints(constraints, profs, ranges, check_feasible=False)
    at = 1 if use_centroid else 0
    rows = [ConstraintRow(c.metric, c.spec, c.bound, c.bound >= ranges[c.metric][at]) for c in parsed]
    summary = ProfileSummary(ranges, rows, {k: tuple(v.values) for k, v in graph.choices.items()},
                             space.num_subnets() if hasattr(space, "num_subnets") else 1, profs, list(graph.blocks),
                             use_centroid)
    if verbose:
        print(summary.table())  # the purpose of verbose=True is to print
    if strict and not summary.is_sat:
        broken = [f"{c.metric} <= {format_number(c.bound)} (the {'centroid' if use_centroid else 'smallest'} subnet "
                  f"has {format_number(ranges[c.metric][at])})" for c in rows if not c.satisfiable]
        raise ConstraintError(f"hwnas.profile(strict=True): constraints cannot be met: {'; '.join(broken)}. Loosen "
                              "them, or profile without strict to see the ranges.")
    return summary
