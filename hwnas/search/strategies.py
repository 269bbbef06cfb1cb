"""Multi-trial strategies and the filters that compose with them.

A *strategy* proposes samples (plain ``dict[label, value]``) and is told each one's score; higher is
better (the search loop negates scores for ``mode="min"``). Every strategy draws from the one seeded
``numpy.random.Generator`` it is bound to, so the same seed and the same scores give the same proposals.

- :class:`Random`: each label uniformly and independently.
- :class:`Grid`: every combination of choices in a fixed order (the last label varies fastest).
- :class:`RegularizedEvolution`: aging evolution (Real et al. 2019, "Regularized Evolution for Image
  Classifier Architecture Search"): a population of the latest ``population_size`` trials; each child
  mutates the best of ``sample_size`` members drawn at random; the oldest member dies.
- :class:`Chain`: a strategy followed by filters. A filter receives the *sample* (never a model) and
  rejects it before any evaluation; rejection sampling is bounded by ``max_rejects`` and ends with a
  :class:`RejectionError` that says how many candidates were tried and what each filter wanted.

Random draws under tight constraints: when a chain holds upper bounds on cost-model metrics (its
:class:`ConstraintFilter`, the ``max`` of a :class:`RangeProfilerFilter`), the random draws of
:class:`Random` and of the evolution's first population that break them are replaced by a draw from the
feasible region (:class:`~hwnas.search.feasible.FeasibleSampler`), so a feasible region of one subnet in
millions is still found without rejection. A metric that is NaN or infinite breaks every bound.

Example:
    >>> import torch, hwnas
    >>> from hwnas.search import Chain, RangeProfilerFilter, RegularizedEvolution
    >>> space = hwnas.spaces.create("digits")
    >>> flops = hwnas.FlopsProfiler(space, torch.randn(1, 1, 8, 8))
    >>> strategy = Chain(RegularizedEvolution(population_size=8, sample_size=3),
    ...                  RangeProfilerFilter(flops, min="20%", max="60%"))
    >>> strategy.bind(space.choices(), seed=0)
    >>> sample = strategy.propose()
    >>> 0.2 * 1947776 <= flops.profile(sample) <= 0.6 * 1947776
    True
"""

from __future__ import annotations

import itertools
import logging
import math
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from hwnas.profile.constraints import Constraint, metric_range
from hwnas.search.errors import RejectionError
from hwnas.search.feasible import FeasibleSampler
from hwnas.space.space import as_rng

__all__ = ["Strategy", "Random", "Grid", "RegularizedEvolution", "Chain", "Filter", "RangeProfilerFilter",
           "ConstraintFilter", "resolve_bound", "has_cost_model", "profiler_range"]

logger = logging.getLogger(__name__)


class Strategy:
    """Base class: bind to a space's choices and a generator, then ``propose`` / ``tell``.

    Constructors only store settings; :meth:`bind` (re)starts the strategy, so one object can run
    several searches. State learned while searching ends in ``_``.
    """

    def bind(self, choices: dict[str, tuple], seed: np.random.Generator | int | None = None,
             canonical: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> None:
        """Start over on a space with these labels and choices, drawing from ``seed``'s generator.

        ``canonical`` maps a sample to the canonical sample of its subnet (``space.canonical``; hwnas.search
        passes it), so that strategies which enumerate can skip samples of a subnet already visited.
        """
        if not choices:
            raise ValueError(f"{self!r}: the space has no choices; there is nothing to search.")
        self.canonical_ = canonical
        self.choices_ = {label: tuple(values) for label, values in choices.items()}
        self.labels_ = tuple(self.choices_)
        self.sizes_ = np.array([len(v) for v in self.choices_.values()], dtype=np.int64)
        self.rng_ = as_rng(seed)
        self.feasible_ = None
        self._start()

    feasible_: FeasibleSampler | None = None

    def _start(self) -> None:
        """Reset learned state (called by :meth:`bind`)."""

    def propose(self) -> dict[str, Any] | None:  # pragma: no cover - abstract
        """The next sample to evaluate, or ``None`` when the strategy has nothing left to propose."""
        raise NotImplementedError

    def tell(self, sample: dict[str, Any], score: float) -> None:
        """The score (higher is better) of a sample this strategy proposed."""

    def discard(self, sample: dict[str, Any]) -> None:
        """A proposed sample was rejected by a filter and will not be evaluated."""

    def _random_sample(self) -> dict[str, Any]:
        """A uniform draw; when it breaks the bounds of a bound :attr:`feasible_` sampler, a feasible draw."""
        idx = self.rng_.integers(0, self.sizes_)
        sample = {lab: self.choices_[lab][int(i)] for lab, i in zip(self.labels_, idx)}
        feasible = self.feasible_
        if feasible is not None and not feasible.meets(sample):
            return feasible.sample(self.rng_)
        return sample

    def _check_bound(self) -> None:
        if not hasattr(self, "rng_"):
            raise RuntimeError(f"{self!r} is not bound to a space yet; call .bind(space.choices(), seed) first "
                               "(hwnas.search does this for you).")


class Random(Strategy):
    """Uniform random search: every label drawn independently and uniformly (Li & Talwalkar 2019)."""

    def propose(self) -> dict[str, Any]:
        self._check_bound()
        return self._random_sample()

    def __repr__(self) -> str:
        return "Random()"


class Grid(Strategy):
    """Every subnet once, in label order with the last label varying fastest.

    Bound by :func:`hwnas.search` (which passes the space's canonical form), the grid visits each distinct
    subnet once: label combinations that differ only in labels the subnet does not use (blocks beyond a
    stage's depth, an unchosen candidate) are skipped (digits: 24,300 subnets of 442,368 combinations). Bound
    without it, it visits every label combination. Use it on small spaces or with few labels; ``Random`` and
    ``RegularizedEvolution`` suit large ones.

    Args:
        shuffle: visit the grid in a seeded random order instead (needs the grid to fit in memory:
            at most ``max_shuffle`` points).
        max_shuffle: the largest grid that ``shuffle=True`` accepts.
    """

    def __init__(self, shuffle: bool = False, max_shuffle: int = 10_000_000):
        self.shuffle, self.max_shuffle = shuffle, max_shuffle

    def _start(self) -> None:
        self.num_points_ = math.prod(int(n) for n in self.sizes_)
        if self.shuffle:
            if self.num_points_ > self.max_shuffle:
                raise ValueError(f"Grid(shuffle=True): the grid has {self.num_points_:.3g} points, more than "
                                 f"max_shuffle={self.max_shuffle:,}; use Grid() (lazy, in order) or Random().")
            order: Iterator = iter(self.rng_.permutation(self.num_points_).tolist())
            self._iter = (np.unravel_index(i, tuple(int(n) for n in self.sizes_)) for i in order)
        else:
            self._iter = itertools.product(*(range(int(n)) for n in self.sizes_))

    def propose(self) -> dict[str, Any] | None:
        self._check_bound()
        canonical = self.canonical_
        for idx in self._iter:
            sample = {lab: self.choices_[lab][int(i)] for lab, i in zip(self.labels_, idx)}
            if canonical is None or canonical(sample) == sample:
                return sample
        return None

    def __repr__(self) -> str:
        return f"Grid(shuffle={self.shuffle})"


class RegularizedEvolution(Strategy):
    """Aging (regularized) evolution, Real et al. 2019.

    The first ``population_size`` proposals are random. After that each proposal draws ``sample_size``
    members of the population without replacement, takes the best as parent and mutates it: each label
    changes with probability ``mutation_prob`` to another of its values (uniformly), and when no label
    changed, one label chosen at random does (so a child never repeats its parent). When a child's score
    arrives it joins the population and the oldest member leaves: age, not score, decides who dies.

    Args:
        population_size: members kept (P in the paper).
        sample_size: tournament size (S in the paper), ``1 <= sample_size <= population_size``.
        mutation_prob: per-label mutation probability in ``[0, 1]``.
    """

    def __init__(self, population_size: int = 100, sample_size: int = 25, mutation_prob: float = 0.05):
        self.population_size, self.sample_size, self.mutation_prob = population_size, sample_size, mutation_prob

    def _start(self) -> None:
        p, s, m = self.population_size, self.sample_size, self.mutation_prob
        if not isinstance(p, int) or p < 1:
            raise ValueError(f"RegularizedEvolution: population_size must be an int >= 1, got {p!r}.")
        if not isinstance(s, int) or not 1 <= s <= p:
            raise ValueError(f"RegularizedEvolution: sample_size must be an int in [1, population_size={p}], "
                             f"got {s!r}.")
        if not 0.0 <= float(m) <= 1.0:
            raise ValueError(f"RegularizedEvolution: mutation_prob must be in [0, 1], got {m!r}.")
        self.population_: deque[tuple[dict[str, Any], float]] = deque()
        self.pending_ = 0
        self._mutable = [i for i, n in enumerate(self.sizes_) if n > 1]

    def propose(self) -> dict[str, Any]:
        self._check_bound()
        self.pending_ += 1
        if len(self.population_) + self.pending_ - 1 < self.population_size or not self.population_:
            return self._random_sample()
        members = self.rng_.choice(len(self.population_), size=min(self.sample_size, len(self.population_)),
                                    replace=False)
        parent = max(members.tolist(), key=lambda i: (self.population_[i][1], -i))
        return self._mutate(self.population_[parent][0])

    def _mutate(self, parent: dict[str, Any]) -> dict[str, Any]:
        child = dict(parent)
        if not self._mutable:
            return child
        flips = self.rng_.random(len(self.labels_)) < self.mutation_prob
        positions = [i for i in self._mutable if flips[i]]
        if not positions:
            positions = [self._mutable[int(self.rng_.integers(len(self._mutable)))]]
        for i in positions:
            lab = self.labels_[i]
            values = self.choices_[lab]
            current = values.index(parent[lab])
            j = int(self.rng_.integers(len(values) - 1))
            child[lab] = values[j if j < current else j + 1]
        return child

    def tell(self, sample: dict[str, Any], score: float) -> None:
        self.pending_ = max(0, self.pending_ - 1)
        self.population_.append((sample, -math.inf if math.isnan(score) else float(score)))
        while len(self.population_) > self.population_size:
            self.population_.popleft()

    def discard(self, sample: dict[str, Any]) -> None:
        self.pending_ = max(0, self.pending_ - 1)

    def __repr__(self) -> str:
        return (f"RegularizedEvolution(population_size={self.population_size}, sample_size={self.sample_size}, "
                f"mutation_prob={self.mutation_prob})")


# --------------------------------------------------------------------------------------------- filters
def _check_invalid_metric(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise ValueError(f"Filter: metric_for_invalid must be None or a number (the score a rejected sample gets), "
                         f"got {value!r}.")
    return float(value)


class Filter:
    """Keep a sample when ``fn(sample)`` is True; reject it (before evaluation) when False.

    Args:
        fn: a function of the sample dict returning a bool.
        name: how errors and reprs name the filter (default: the function's name).
        metric_for_invalid: ``None`` (default): a rejected sample is dropped silently; a number: the strategy is
            told that score for it (NNI's ``Filter(metric_for_invalid=...)``), so that evolution or a policy
            learns to avoid such samples (higher is better: give a low score).
    """

    metric_for_invalid: float | None = None

    def __init__(self, fn: Callable[[dict[str, Any]], bool], name: str | None = None,
                 metric_for_invalid: float | None = None):
        if not callable(fn):
            raise TypeError(f"Filter needs a function sample -> bool, got {type(fn).__name__}.")
        self.fn = fn
        self.name = name or getattr(fn, "__qualname__", type(fn).__name__)
        self.metric_for_invalid = _check_invalid_metric(metric_for_invalid)

    def bind(self, choices: dict[str, tuple]) -> None:
        """Reset the rejection count (called when the chain is bound)."""
        self.num_rejected_ = 0

    def __call__(self, sample: dict[str, Any]) -> bool:
        keep = self.fn(sample)
        if not isinstance(keep, (bool, np.bool_)):
            raise TypeError(f"{self!r} returned {keep!r} ({type(keep).__name__}) for a sample; a filter function "
                            "must return True to keep the sample or False to reject it.")
        if not keep:
            self.num_rejected_ = getattr(self, "num_rejected_", 0) + 1
        return bool(keep)

    def describe(self) -> str:
        """What the filter wants, for error messages."""
        return f"{self!r}: rejected {getattr(self, 'num_rejected_', 0):,}"

    def __repr__(self) -> str:
        return f"Filter({self.name})"


def resolve_bound(spec: Any, largest: float, what: str) -> float | None:
    """A bound given as a number, ``None`` or ``"P%"`` (of ``largest``) as an absolute number."""
    if spec is None:
        return None
    if isinstance(spec, str):
        text = spec.strip()
        try:
            if not text.endswith("%"):
                raise ValueError
            return float(text[:-1]) / 100.0 * largest
        except ValueError:
            raise ValueError(f"{what}={spec!r} is malformed; give a number in the metric's unit or a percentage "
                             "of the largest subnet such as '60%'.") from None
    if isinstance(spec, bool) or not isinstance(spec, (int, float, np.integer, np.floating)):
        raise ValueError(f"{what}={spec!r} must be a number, a percentage string like '60%' or None, got "
                         f"{type(spec).__name__}.")
    return float(spec)


def has_cost_model(profiler: Any) -> bool:
    """Whether ``profiler`` is a hwnas cost-table profiler (``profile_batch`` over its ``model``)."""
    return all(hasattr(profiler, a) for a in ("model", "space")) and callable(getattr(profiler, "profile_batch", None))


def _sortable(values: tuple) -> list:
    try:
        return sorted(values)
    except TypeError:
        return list(values)


def profiler_range(profiler: Any, choices: dict[str, tuple] | None = None, n_random: int = 256,
                   seed: int = 0) -> tuple[float, float, float]:
    """``(smallest found, centroid, largest found)`` of any profiler's metric.

    A hwnas profiler (FLOPs, params, latency: a cost model) gets
    :func:`~hwnas.profile.constraints.metric_range`. Any other object with ``profile(sample) -> float``
    is profiled one sample at a time on the all-smallest, middle and all-largest values of each label
    (numbers sorted, other values in the order given) and on ``n_random`` seeded random samples: an
    estimate, so bounds checked against it are only warned about, never refused.

    Args:
        profiler: the profiler.
        choices: label -> values, needed for profilers without a cost model.
        n_random: random samples for profilers without a cost model.
        seed: seeds those samples.
    """
    if has_cost_model(profiler):
        return metric_range(profiler)
    if not choices:
        raise TypeError(f"{type(profiler).__name__} has no cost model (a hwnas profiler's .model and "
                        ".profile_batch), so its range over the space cannot be looked up here; give bounds and "
                        "baselines for it as numbers in its unit rather than percentages, or use a hwnas profiler.")
    order = {lab: _sortable(tuple(v)) for lab, v in choices.items()}
    probes = [{lab: v[0] for lab, v in order.items()}, {lab: v[len(v) // 2] for lab, v in order.items()},
              {lab: v[-1] for lab, v in order.items()}]
    rng = np.random.default_rng(seed)
    labels = list(choices)
    for row in rng.integers(0, [len(choices[lab]) for lab in labels], size=(n_random, len(labels))):
        probes.append({lab: choices[lab][int(i)] for lab, i in zip(labels, row)})
    values = []
    for sample in probes:
        v = profiler.profile(sample)
        try:
            values.append(float(v))
        except (TypeError, ValueError):
            raise TypeError(f"{type(profiler).__name__}.profile(sample) returned {v!r} ({type(v).__name__}); a "
                            "profiler must return a number.") from None
    finite = [v for v in values if math.isfinite(v)]
    if len(finite) < len(values):
        bad = next(s for s, v in zip(probes, values) if not math.isfinite(v))
        if not finite:
            raise ValueError(f"{type(profiler).__name__}.profile returned NaN or infinity for every one of the "
                             f"{len(values)} samples probed (e.g. {bad}); a profiler must return finite numbers.")
        logger.warning("%s.profile returned NaN or infinity for %d of %d probed samples (e.g. %s); such samples "
                       "break every bound on this metric.", type(profiler).__name__, len(values) - len(finite),
                       len(values), bad)
    mid = values[1] if math.isfinite(values[1]) else sorted(finite)[len(finite) // 2]
    return min(finite), mid, max(finite)


class RangeProfilerFilter(Filter):
    """Keep samples whose profiled metric lies in ``[min, max]`` (both ends included).

    Args:
        profiler: any profiler with ``profile(sample) -> float`` (FLOPs, params, latency, ...).
        min: lower bound, a number in the metric's unit, ``"P%"`` of the largest subnet, or ``None``.
        max: upper bound, likewise.
        metric: the metric's name in messages (default: ``profiler.metric``).

    Raises:
        ValueError: when bound: neither bound given, ``min > max``, or a range that no subnet can reach
            (checked against :func:`profiler_range`; for a profiler without a cost model, whose range
            is only estimated, a range outside the estimate is logged as a warning instead).
    """

    def __init__(self, profiler: Any, min: Any = None, max: Any = None, metric: str | None = None,  # noqa: A002
                 metric_for_invalid: float | None = None):
        if not callable(getattr(profiler, "profile", None)):
            raise TypeError(f"RangeProfilerFilter needs a profiler with .profile(sample) -> float, got "
                            f"{type(profiler).__name__}.")
        self.metric_for_invalid = _check_invalid_metric(metric_for_invalid)
        self.profiler, self.min, self.max = profiler, min, max
        self.metric = metric or getattr(profiler, "metric", type(profiler).__name__)
        self.name = self.metric

    def bind(self, choices: dict[str, tuple]) -> None:
        super().bind(choices)
        if self.min is None and self.max is None:
            raise ValueError(f"{self!r} has neither min nor max; give at least one bound.")
        lo, _, hi = profiler_range(self.profiler, choices)
        self.range_ = (lo, hi)
        self.min_ = resolve_bound(self.min, hi, f"RangeProfilerFilter({self.metric}).min")
        self.max_ = resolve_bound(self.max, hi, f"RangeProfilerFilter({self.metric}).max")
        low = -math.inf if self.min_ is None else self.min_
        high = math.inf if self.max_ is None else self.max_
        if low > high:
            raise ValueError(f"{self!r}: min ({low:.6g}) is above max ({high:.6g}); swap or fix the bounds.")
        if high < lo * (1 - 1e-12) or low > hi * (1 + 1e-12):
            if not has_cost_model(self.profiler):
                logger.warning("%r: the range [%.6g, %.6g] lies outside every %s seen when probing the space "
                               "(%.6g to %.6g); the search may find no candidate in it.", self, low, high,
                               self.metric, lo, hi)
            else:
                raise ValueError(f"{self!r}: the range [{low:.6g}, {high:.6g}] misses every subnet: this space's "
                                 f"{self.metric} spans {lo:.6g} to {hi:.6g}. Move the range into that "
                                 "interval.")
        self.low_, self.high_ = low, high
        self.seen_ = [math.inf, -math.inf]

    def __call__(self, sample: dict[str, Any]) -> bool:
        value = self.profiler.profile(sample)
        if self.low_ <= value <= self.high_:
            return True
        self.num_rejected_ += 1
        if not math.isfinite(value):
            _warn_non_finite(self, self.metric, self.profiler, value, sample)
            return False
        seen = self.seen_
        if value < seen[0]:
            seen[0] = value
        if value > seen[1]:
            seen[1] = value
        return False

    def describe(self) -> str:
        text = f"{self!r} = [{self.low_:.6g}, {self.high_:.6g}]: rejected {self.num_rejected_:,}"
        if self.num_rejected_:
            text += f" (their {self.metric} ran from {self.seen_[0]:.6g} to {self.seen_[1]:.6g})"
        exact = has_cost_model(self.profiler)
        return text + (f"; the space's {self.metric} spans {'' if exact else 'about '}{self.range_[0]:.6g} to "
                       f"{self.range_[1]:.6g}")

    def __repr__(self) -> str:
        return f"RangeProfilerFilter({self.metric}, min={self.min!r}, max={self.max!r})"


def _warn_non_finite(owner: Any, metric: str, profiler: Any, value: float, sample: dict[str, Any]) -> None:
    """Log (once per filter and metric) that a profiler returned a non-finite value: it counts as a violation."""
    warned = owner.__dict__.setdefault("_warned_non_finite", set())
    if metric not in warned:
        warned.add(metric)
        logger.warning("%s for %s returned %s for sample %s; a non-finite metric breaks the bound, so the sample "
                       "is rejected (later ones are counted in the rejection summary).", type(profiler).__name__,
                       metric, value, sample)


class ConstraintFilter(Filter):
    """Hard constraints as a filter: every ``constraint.metric`` profiled and compared with its bound.

    ``hwnas.search`` appends one to every strategy, so no candidate that breaks a constraint is ever
    evaluated or returned.

    Args:
        constraints: parsed constraints (:func:`~hwnas.profile.constraints.parse_constraints`).
        profilers: metric name -> profiler.
    """

    def __init__(self, constraints: list[Constraint], profilers: dict[str, Any]):
        self.constraints = list(constraints)
        self.profilers = profilers
        self.name = "constraints"
        self._checks = [(c.metric, profilers[c.metric].profile, c.bound * (1 + 1e-12)) for c in self.constraints]

    def bind(self, choices: dict[str, tuple]) -> None:
        super().bind(choices)
        self.rejected_by_ = {c.metric: 0 for c in self.constraints}
        self.non_finite_ = {c.metric: 0 for c in self.constraints}
        self.seen_ = {c.metric: [math.inf, -math.inf] for c in self.constraints}

    def __call__(self, sample: dict[str, Any]) -> bool:
        for metric, profile, bound in self._checks:
            value = profile(sample)
            if not value <= bound:  # NaN fails too: a non-finite metric breaks the constraint
                self.num_rejected_ += 1
                self.rejected_by_[metric] += 1
                if not math.isfinite(value):
                    self.non_finite_[metric] += 1
                    _warn_non_finite(self, metric, self.profilers[metric], value, sample)
                    return False
                seen = self.seen_[metric]
                seen[0], seen[1] = min(seen[0], value), max(seen[1], value)
                return False
        return True

    def violations(self, sample: dict[str, Any]) -> list[str]:
        """Every constraint ``sample`` breaks, as text (empty when it meets them all)."""
        out = []
        for c in self.constraints:
            prof = self.profilers[c.metric]
            value = prof.profile(sample)
            if not c.satisfied(value):
                why = f"not a finite number, from {type(prof).__name__}" if not math.isfinite(value) else \
                    f"> {c.bound:.6g}"
                out.append(f"{c.metric} = {value:.6g} {why} (from {c.spec!r})")
        return out

    def describe(self) -> str:
        parts = []
        for c in self.constraints:
            n = self.rejected_by_.get(c.metric, 0)
            text = f"constraint {c.metric} <= {c.bound:.6g} (from {c.spec!r}): rejected {n:,}"
            bad = self.non_finite_.get(c.metric, 0)
            if n > bad:
                lo, hi = self.seen_[c.metric]
                text += f" (their {c.metric} ran from {lo:.6g} to {hi:.6g})"
            if bad:
                text += (f", {bad:,} of them because {type(self.profilers[c.metric]).__name__} returned NaN or "
                         "infinity")
            parts.append(text)
        return "; ".join(parts)

    def __repr__(self) -> str:
        return "ConstraintFilter(" + ", ".join(f"{c.metric}<={c.bound:.6g}" for c in self.constraints) + ")"


class Chain(Strategy):
    """A strategy followed by filters: proposals that a filter rejects are never evaluated.

    ``Chain(Chain(s, f1), f2)`` is ``Chain(s, f1, f2)``. Each proposal draws from the inner strategy
    until every filter keeps a sample; after ``max_rejects`` rejections in a row it raises
    :class:`RejectionError` with what each filter rejected.

    Args:
        strategy: the inner strategy.
        *filters: :class:`Filter` objects, or plain functions ``sample -> bool`` (wrapped in a Filter).
        max_rejects: rejections in a row before giving up.
    """

    def __init__(self, strategy: Strategy, *filters: Filter | Callable, max_rejects: int = 10_000):
        if not isinstance(strategy, Strategy):
            raise TypeError(f"Chain's first argument must be a strategy (Random(), RegularizedEvolution(), ...), "
                            f"got {type(strategy).__name__}.")
        if isinstance(strategy, Chain):
            filters = (*strategy.filters, *filters)
            strategy = strategy.strategy
        self.strategy = strategy
        self.filters = [f if isinstance(f, Filter) else Filter(f) for f in filters]
        self.max_rejects = max_rejects

    def bind(self, choices: dict[str, tuple], seed: np.random.Generator | int | None = None,
             canonical: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> None:
        if not isinstance(self.max_rejects, int) or self.max_rejects < 1:
            raise ValueError(f"Chain: max_rejects must be an int >= 1, got {self.max_rejects!r}.")
        self.strategy.bind(choices, seed, canonical)
        self.canonical_ = canonical
        self.choices_, self.labels_, self.sizes_, self.rng_ = (self.strategy.choices_, self.strategy.labels_,
                                                               self.strategy.sizes_, self.strategy.rng_)
        for f in self.filters:
            f.bind(self.choices_)
        self.num_rejected_ = 0
        self.num_proposed_ = 0
        bounds = []
        for f in self.filters:
            if isinstance(f, ConstraintFilter):
                bounds += [(f.profilers[c.metric], c.bound) for c in f.constraints]
            elif isinstance(f, RangeProfilerFilter) and f.max_ is not None:
                bounds.append((f.profiler, f.max_))
        self.strategy.feasible_ = FeasibleSampler.build(bounds, self.choices_) if bounds else None

    def propose(self) -> dict[str, Any] | None:
        self._check_bound()
        inner, filters = self.strategy, self.filters
        for _ in range(self.max_rejects):
            sample = inner.propose()
            if sample is None:
                return None
            self.num_proposed_ += 1
            failed = next((f for f in filters if not f(sample)), None)
            if failed is None:
                return sample
            self.num_rejected_ += 1
            if failed.metric_for_invalid is None:
                inner.discard(sample)
            else:
                inner.tell(sample, failed.metric_for_invalid)
        raise RejectionError(
            f"{self!r}: {self.max_rejects:,} candidates in a row were rejected before one passed every filter "
            f"({self.num_proposed_:,} proposed in this search so far, {self.num_rejected_:,} rejected). "
            + " | ".join(f.describe() for f in filters)
            + ". Fix: widen the range or loosen the constraint (the values above show where candidates fell), "
              "or raise Chain(..., max_rejects=) if feasible subnets are merely rare."
        )

    def tell(self, sample: dict[str, Any], score: float) -> None:
        self.strategy.tell(sample, score)

    def discard(self, sample: dict[str, Any]) -> None:
        self.strategy.discard(sample)

    def __repr__(self) -> str:
        return "Chain(" + ", ".join([repr(self.strategy), *(repr(f) for f in self.filters)]) + ")"
