"""Constraints over profilers: ``{"flops": "60%", "params": 3e6, "latency_ms": 4.0}``.

A number is an upper bound in the metric's unit; a string ``"P%"`` is P percent of the metric's largest
value over all subnets of the space, found exactly from the cost tables (see :func:`metric_range`; with
operator or depth choices the "max sample" need not be the largest in every metric). Every constraint is
checked before any work starts: an unknown metric, a malformed value, or a bound below the smallest subnet
raises :class:`ConstraintError` naming the constraint.

Decisions on careless input:

- A percentage above 100% is refused: no subnet exceeds the largest one, so ``"150%"`` constrains
  nothing and is almost always a typo (``"15%"``) or a mix-up with an absolute bound.
- A plain number is an *absolute* bound in the metric's unit (``flops=60`` means 60 FLOPs, not 60%);
  when it lies below the smallest subnet, the message says so and gives the space's range.
- A metric that is NaN or infinite never meets a bound (``value <= bound`` is the test, which NaN
  fails): see :meth:`Constraint.satisfied`. When the space's range itself is not finite (a profiler or
  LUT that yields NaN for some subnets), a percentage cannot be resolved and is refused, naming the
  profiler; an absolute bound is kept and non-finite subnets are rejected during search.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from hwnas.space.space import as_rng, rank_order

__all__ = ["Constraint", "ConstraintError", "parse_constraints", "metric_range", "centroid_sample"]


logger = logging.getLogger(__name__)


class ConstraintError(ValueError):
    """A constraint is malformed or cannot be met."""


@dataclass(frozen=True)
class Constraint:
    """An upper bound on one profiler's metric."""

    metric: str
    bound: float
    spec: Any

    def satisfied(self, value: float) -> bool:
        """Whether ``value`` meets the bound; NaN and infinities never do."""
        try:
            value = float(value)
        except (TypeError, ValueError):
            return False
        return math.isfinite(value) and value <= self.bound * (1 + 1e-12)


def centroid_sample(space: Any, choices: dict) -> dict[str, Any]:
    """The middle value of every label (in size order): a typical mid-sized subnet."""
    return {label: vals[len(vals) // 2] for label, vals in rank_order(space, choices).items()}


def metric_range(profiler: Any, n_random: int = 4096, seed: int = 0) -> tuple[float, float, float]:
    """``(smallest, centroid, largest)`` of a profiler's metric over the space.

    The extremes are exact: max-sum / min-sum elimination over the profiler's cost tables
    (:meth:`~hwnas.profile.engine.CostModel.extreme`). Should the labels interact too widely for that, they
    fall back to the smaller/larger of the min/max samples and of ``n_random`` seeded random samples.
    """
    model, space = profiler.model, profiler.space
    mid = profiler.profile(centroid_sample(space, model.choices))
    try:
        return model.extreme(largest=False)[0], mid, model.extreme(largest=True)[0]
    except ValueError:
        pass
    order = rank_order(space, model.choices)
    lo = profiler.profile({lab: vals[0] for lab, vals in order.items()})
    hi = profiler.profile({lab: vals[-1] for lab, vals in order.items()})
    if n_random:
        rng = as_rng(seed)
        idx = np.stack([rng.integers(model.sizes[lab], size=n_random) for lab in model.labels], axis=1)
        vals = profiler.profile_batch(idx)
        lo, hi = min(lo, float(vals.min())), max(hi, float(vals.max()))
    return lo, mid, hi


_PERCENT = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*%\s*$")


def parse_constraints(constraints: dict[str, Any] | None, profilers: dict[str, Any],
                      ranges: dict[str, tuple[float, float, float]] | None = None,
                      check_feasible: bool = True) -> list[Constraint]:
    """Turn a constraint dict into absolute bounds, checking each against its profiler's range.

    Args:
        constraints: metric name -> number (absolute upper bound) or ``"P%"`` (of the largest subnet).
        profilers: metric name -> profiler (``"flops"``, ``"params"``, ``"latency_ms"``, ...).
        ranges: precomputed :func:`metric_range` per metric (computed here when missing).
        check_feasible: raise when a bound is below the smallest subnet (otherwise just return it).
    """
    if not constraints:
        return []
    if not isinstance(constraints, dict):
        raise ConstraintError(f"constraints must be a dict like {{'flops': '60%', 'latency_ms': 4}}, got "
                              f"{type(constraints).__name__}.")
    ranges = dict(ranges or {})
    out = []
    for metric, spec in constraints.items():
        if metric not in profilers:
            raise ConstraintError(f"unknown constraint {metric!r}; this search has profilers for {sorted(profilers)}. "
                                  "For latency_ms, pass a LatencyProfiler (or a LUT).")
        if metric not in ranges:
            ranges[metric] = metric_range(profilers[metric])
        lo, _, hi = ranges[metric]
        bound = _parse_bound(metric, spec, hi, profilers[metric])
        if not (math.isfinite(lo) and math.isfinite(hi)):
            logger.warning("constraint %s=%r: %s's range over the space is not finite (%s to %s): some subnets give "
                           "NaN or infinite %s and will be rejected as violating the bound.", metric, spec,
                           _name(profilers[metric]), lo, hi, metric)
        elif bound < lo * (1 - 1e-12):
            what = (f"{spec!r} is {bound:.6g}" if isinstance(spec, str) else
                    f"{spec!r} is an absolute bound ({bound:.6g} {_unit(metric)}, not a percentage)")
            text = (f"constraint {metric}={what}, below the smallest subnet's {metric} ({lo:.6g}); no subnet can meet "
                    f"it. Loosen it to at least {lo:.6g}: this space's {metric} spans {lo:.6g} to {hi:.6g} (as a "
                    f"percentage of the largest subnet, e.g. '{_pct_hint(lo, hi)}').")
            if check_feasible:
                raise ConstraintError(text)
            logger.warning("%s", text)
        out.append(Constraint(metric, bound, spec))
    return out


def _name(profiler: Any) -> str:
    return f"{type(profiler).__name__}({getattr(profiler, 'metric', '?')})"


def _unit(metric: str) -> str:
    return {"flops": "FLOPs", "params": "parameters", "latency_ms": "ms"}.get(metric, f"in {metric}'s unit")


def _pct_hint(lo: float, hi: float) -> str:
    if not hi > 0:
        return "60%"
    return f"{min(100, max(1, math.ceil(100 * lo / hi) + 10))}%"


def _parse_bound(metric: str, spec: Any, hi: float, profiler: Any) -> float:
    """One constraint value as an absolute bound (``hi``: the metric's largest value over the space)."""
    if isinstance(spec, str):
        m = _PERCENT.match(spec)
        if not m:
            raise ConstraintError(f"constraint {metric}={spec!r} is malformed; use a number in the metric's unit "
                                  "or a percentage of the largest subnet such as '60%'.")
        pct = float(m.group(1))
        if not math.isfinite(pct) or pct <= 0 or pct > 100:
            raise ConstraintError(f"constraint {metric}={spec!r}: a percentage of the largest subnet must be in "
                                  "(0%, 100%]; above 100% it constrains nothing (no subnet is larger than the "
                                  "largest). Did you mean a smaller percentage, or an absolute bound without '%'?")
        if not math.isfinite(hi):
            raise ConstraintError(f"constraint {metric}={spec!r}: the largest {metric} over the space is {hi} because "
                                  f"{_name(profiler)} gives NaN or infinite values for some subnets, so a "
                                  "percentage cannot be resolved. Fix the profiler (or its LUT), or give an "
                                  "absolute bound in the metric's unit.")
        bound = pct / 100.0 * hi
    elif isinstance(spec, (int, float, np.integer, np.floating)) and not isinstance(spec, (bool, np.bool_)):
        bound = float(spec)
    else:
        raise ConstraintError(f"constraint {metric}={spec!r} is malformed ({type(spec).__name__}); use a number or "
                              "a string like '60%'.")
    if not math.isfinite(bound) or bound <= 0:
        raise ConstraintError(f"constraint {metric}={spec!r} must be a positive finite bound, got {bound}.")
    return bound
