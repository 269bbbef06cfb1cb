"""Draw samples from the feasible region of upper bounds on additive cost-table metrics.

Rejection sampling fails when the feasible region is a tiny share of the space: on ``mobilenet_v3`` at
96x96, ``flops <= 30%`` of the largest subnet holds for about 1 uniform sample in 1,800, and ``25%`` for
none of 200,000, although feasible subnets exist. The cost tables know the region exactly: a metric is a
sum of small tables over a few labels each (:class:`~hwnas.profile.engine.CostModel`), so min-sum variable
elimination gives, for every label and every choice of the labels sampled before it, the smallest total
any completion can reach. :class:`FeasibleSampler` draws labels one at a time (in the reverse order of
elimination), each uniformly among the values whose smallest completion still meets every bound.

With one bound this never dead-ends: every drawn sample is feasible. With several bounds each is
checked on its own completion, so a draw can dead-end when the bounds conflict; it then starts over, and
after ``max_attempts`` dead ends in a row it raises :class:`~hwnas.search.errors.RejectionError`, saying
that the bounds together are most likely infeasible.

The draw is not uniform over the feasible region (each label is uniform given the ones before it), which
is what a search's initial population needs: diverse subnets that all meet the constraints.

Example:
    >>> import numpy as np, torch, hwnas
    >>> space = hwnas.spaces.create("digits")
    >>> flops = hwnas.FlopsProfiler(space, torch.randn(1, 1, 8, 8))
    >>> lo = flops.model.extreme(largest=False)[0]
    >>> sampler = FeasibleSampler.build([(flops, 1.05 * lo)], space.choices())
    >>> rng = np.random.default_rng(0)
    >>> all(flops.profile(sampler.sample(rng)) <= 1.05 * lo for _ in range(50))
    True
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

from hwnas.search.errors import RejectionError

__all__ = ["FeasibleSampler"]

logger = logging.getLogger(__name__)


def _elimination_order(labels: tuple[str, ...], scopes: list[set[str]], sizes: dict[str, int]) -> list[str]:
    """A greedy min-fill elimination order over the union of every model's table scopes."""
    scopes = [set(s) for s in scopes if s]
    remaining = list(labels)
    order: list[str] = []

    def cost(lab: str) -> int:
        scope = set().union(*(s for s in scopes if lab in s)) - {lab}
        return math.prod(sizes[x] for x in scope)

    while remaining:
        lab = min(remaining, key=cost)  # min() keeps the first on ties: deterministic
        remaining.remove(lab)
        order.append(lab)
        mine = [s for s in scopes if lab in s]
        scopes = [s for s in scopes if lab not in s]
        merged = set().union(*mine) - {lab} if mine else set()
        if merged:
            scopes.append(merged)
    return order


class _Eliminated:
    """One cost model eliminated along a fixed order: per label, its joint table over (earlier-drawn labels, it)."""

    def __init__(self, model: Any, bound: float, order: list[str], position: dict[str, int],
                 sizes: dict[str, int], max_cells: int):
        self.bound = bound
        self.limit = bound + 1e-9 * abs(bound)
        factors: list[tuple[tuple[str, ...], np.ndarray]] = [(tuple(k), np.asarray(a, dtype=np.float64))
                                                             for k, a in model.tables]
        const = float(model.const)
        self.steps: dict[str, tuple[tuple[str, ...], np.ndarray] | None] = {}
        for lab in order:
            mine = [f for f in factors if lab in f[0]]
            factors = [f for f in factors if lab not in f[0]]
            if not mine:
                self.steps[lab] = None
                continue
            rest = tuple(sorted({x for k, _ in mine for x in k} - {lab}, key=position.__getitem__))
            axes = (*rest, lab)
            cells = math.prod(sizes[x] for x in axes)
            if cells > max_cells:
                raise ValueError(f"label {lab!r} needs a table of {cells:,} cells (limit {max_cells:,})")
            joint = np.zeros([sizes[x] for x in axes])
            for k, a in mine:
                present = [x for x in axes if x in k]
                a = np.transpose(a, [k.index(x) for x in present])
                joint = joint + a.reshape([sizes[x] if x in k else 1 for x in axes])
            self.steps[lab] = (rest, joint)
            low = joint.min(axis=-1)
            if rest:
                factors.append((rest, low))
            else:
                const += float(low)
        self.minimum = const + sum(float(a) for _, a in factors)


def _additive(prof: Any, model: Any, choices: dict[str, tuple]) -> bool:
    """Whether ``prof.profile`` is its cost model's sum of tables (not, e.g., a latency scaled by a size term)."""
    probes = [{lab: v[0] for lab, v in choices.items()}, {lab: v[-1] for lab, v in choices.items()},
              {lab: v[i % len(v)] for i, (lab, v) in enumerate(choices.items())}]
    for sample in probes:
        try:
            a, b = float(prof.profile(sample)), float(model.profile(sample))
        except (TypeError, ValueError, KeyError):
            return False
        if not math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12):
            return False
    return True


class FeasibleSampler:
    """Samples that meet upper bounds on cost-model metrics (see the module docs).

    Build it with :meth:`build`; :meth:`sample` draws one, :meth:`meets` checks one.

    Args:
        parts: the eliminated models with their bounds.
        order: the labels in drawing order.
        choices: label -> values.
        max_attempts: dead ends in a row before :meth:`sample` raises.
    """

    def __init__(self, parts: list[tuple[Any, _Eliminated]], order: list[str], choices: dict[str, tuple],
                 max_attempts: int = 200):
        self.parts, self.order, self.choices, self.max_attempts = parts, order, choices, max_attempts

    @classmethod
    def build(cls, bounds: list[tuple[Any, float]], choices: dict[str, tuple],
              max_cells: int = 2_000_000) -> FeasibleSampler | None:
        """A sampler for ``[(profiler, upper bound), ...]``, or ``None`` when it cannot be built.

        Only profilers whose ``profile`` is their cost model's sum of tables, over exactly these labels and
        values, with finite tables, take part; others are left to rejection. ``None`` when none takes part, or when the labels
        interact too widely (an elimination table above ``max_cells``).
        """
        labels = tuple(choices)
        usable = []
        for prof, bound in bounds:
            model = getattr(prof, "model", None)
            if model is None or not hasattr(model, "tables") or not math.isfinite(bound):
                continue
            if tuple(model.labels) != labels or any(tuple(model.choices[lab].values) != tuple(choices[lab])
                                                    for lab in labels):
                continue
            if not all(np.isfinite(a).all() for _, a in model.tables) or not math.isfinite(model.const):
                continue
            if not _additive(prof, model, choices):
                continue
            usable.append((prof, model, float(bound)))
        if not usable:
            return None
        sizes = {lab: len(choices[lab]) for lab in labels}
        position = {lab: i for i, lab in enumerate(labels)}
        order = _elimination_order(labels, [set(k) for _, m, _ in usable for k, _ in m.tables], sizes)
        try:
            parts = [(prof, _Eliminated(model, bound, order, position, sizes, max_cells))
                     for prof, model, bound in usable]
        except ValueError as e:
            logger.debug("no feasible sampler: %s", e)
            return None
        return cls(parts, order[::-1], dict(choices))

    def meets(self, sample: dict[str, Any]) -> bool:
        """Whether ``sample`` meets every bound of this sampler (NaN never does)."""
        for prof, part in self.parts:
            value = prof.profile(sample)
            if not value <= part.limit:
                return False
        return True

    def sample(self, rng: np.random.Generator) -> dict[str, Any]:
        """One sample meeting every bound, drawn from ``rng``.

        Raises:
            RejectionError: ``max_attempts`` draws in a row dead-ended (the bounds together are most likely
                infeasible).
        """
        for _ in range(self.max_attempts):
            out = self._try(rng)
            if out is not None:
                return out
        bounds = "; ".join(f"{getattr(p, 'metric', type(p).__name__)} <= {e.bound:.6g} (smallest alone "
                           f"{e.minimum:.6g})" for p, e in self.parts)
        raise RejectionError(f"no sample meets these bounds together ({bounds}): each can be met alone, but "
                             f"{self.max_attempts} draws from the feasible region in a row ended where no choice "
                             "met them all. Loosen one of the constraints.")

    def _try(self, rng: np.random.Generator) -> dict[str, Any] | None:
        fixed: dict[str, int] = {}
        totals = [e.minimum for _, e in self.parts]
        for lab in self.order:
            n = len(self.choices[lab])
            ok = np.ones(n, dtype=bool)
            rows = []
            for i, (_, e) in enumerate(self.parts):
                step = e.steps[lab]
                if step is None:
                    rows.append(None)
                    continue
                rest, joint = step
                vals = joint[tuple(fixed[x] for x in rest)]
                base = totals[i] - float(vals.min())
                rows.append((base, vals))
                ok &= base + vals <= e.limit
            allowed = np.flatnonzero(ok)
            if not allowed.size:
                return None
            v = int(allowed[int(rng.integers(allowed.size))])
            fixed[lab] = v
            for i, row in enumerate(rows):
                if row is not None:
                    totals[i] = row[0] + float(row[1][v])
        return {lab: self.choices[lab][fixed[lab]] for lab in self.choices}
