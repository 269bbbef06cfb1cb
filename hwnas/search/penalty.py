r"""Hardware-cost penalties for training and scoring: the cost of a sampled subnet, or its exact expectation.

Both penalties compare a cost :math:`c` with a ``baseline`` :math:`b` through the ratio
:math:`d = c / b - 1` and a ``nonlinear`` function :math:`f`:

- ``"linear"``: :math:`f(d) = d` (reward cheaper subnets, punish dearer ones, as ProxylessNAS's
  :math:`\lambda \cdot E[\mathrm{LAT}]` term, Cai et al. 2019);
- ``"positive"``: :math:`f(d) = \max(0, d)` (only above the budget: a soft constraint);
- ``"negative"``: :math:`f(d) = \min(0, d)` (only below the budget: a reward for cheaper subnets, none above);
- ``"absolute"``: :math:`f(d) = |d|` (aim for the budget, MnasNet's target-latency idea, Tan et al. 2019).

and ``aggregate`` combines it with the loss :math:`L`:

- ``"add"``: :math:`L + s \cdot f(d)` (ProxylessNAS);
- ``"mul"``: :math:`L \cdot (1 + f(d))^{s}`, with "linear" that is :math:`L \cdot (c/b)^{s}`, the
  multiplicative form of FBNet (Wu et al. 2019, :math:`CE \cdot \alpha \log(\mathrm{LAT})^\beta`) and
  MnasNet (:math:`ACC \cdot (\mathrm{LAT}/T)^w`; a *score* to maximise takes a negative ``scale``, e.g.
  ``SampleProfilerPenalty(lat, 4.0, scale=-0.07, aggregate="mul")(accuracy, sample)`` is MnasNet's reward).

:class:`SampleProfilerPenalty` takes the cost of one sample (``profiler.profile``, a float: no gradient
reaches the architecture). :class:`ExpectationProfilerPenalty` takes :math:`E[c]` under independent
per-label probabilities (``profiler.expectation``): exact, and with torch probabilities (e.g. the
softmax of architecture logits) differentiable, so gradients reach the logits. The nonlinearity is
applied to the *expected* cost, as in ProxylessNAS and FBNet; with ``"linear"``/``"add"`` the penalty
is therefore exactly the mean of the sampled penalty.

Example:
    >>> import torch, hwnas
    >>> from hwnas.search import ExpectationProfilerPenalty
    >>> space = hwnas.spaces.create("digits")
    >>> flops = hwnas.FlopsProfiler(space, torch.randn(1, 1, 8, 8))
    >>> logits = {k: torch.zeros(len(v), requires_grad=True) for k, v in space.choices().items()}
    >>> penalty = ExpectationProfilerPenalty(flops, baseline="50%", scale=0.1)
    >>> loss = penalty(torch.tensor(2.3), {k: torch.softmax(v, 0) for k, v in logits.items()})
    >>> loss.backward()
    >>> logits["s2.width"].grad[-1] > 0        # a wider stage costs more: its logit is pushed down
    tensor(True)
"""

from __future__ import annotations

import math
from typing import Any

from hwnas.search.strategies import profiler_range, resolve_bound

__all__ = ["SampleProfilerPenalty", "ExpectationProfilerPenalty", "NONLINEAR", "AGGREGATE"]

NONLINEAR = ("linear", "positive", "negative", "absolute")
AGGREGATE = ("add", "mul")


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch")


class _ProfilerPenalty:
    def __init__(self, profiler: Any, baseline: float | str, scale: float = 1.0, nonlinear: str = "linear",
                 aggregate: str = "add"):
        name = type(self).__name__
        if nonlinear not in NONLINEAR:
            raise ValueError(f"{name}: nonlinear must be one of {NONLINEAR}, got {nonlinear!r}.")
        if aggregate not in AGGREGATE:
            raise ValueError(f"{name}: aggregate must be one of {AGGREGATE}, got {aggregate!r}.")
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
            raise ValueError(f"{name}: scale must be a finite number, got {scale!r}.")
        self.profiler, self.baseline, self.scale = profiler, baseline, float(scale)
        self.nonlinear, self.aggregate = nonlinear, aggregate
        largest = profiler_range(profiler)[2] if isinstance(baseline, str) else 1.0
        if not math.isfinite(largest):
            raise ValueError(f"{name}: baseline={baseline!r} is a percentage of the largest subnet, but "
                             f"{type(profiler).__name__} gives {largest} as the largest (NaN or infinite costs in "
                             "its tables); fix the profiler or its LUT, or give the baseline as a number.")
        b = resolve_bound(baseline, largest, f"{name}.baseline")
        if b is None or not b > 0 or not math.isfinite(b):
            raise ValueError(f"{name}: baseline must be a positive cost (a number in the metric's unit or a "
                             f"percentage of the largest subnet such as '50%'), got {baseline!r}.")
        self.baseline_ = b
        self.last_cost_: float | None = None

    def _f(self, d: Any) -> Any:
        if self.nonlinear == "linear":
            return d
        if self.nonlinear == "positive":
            return d.clamp(min=0) if _is_torch(d) else max(0.0, d)
        if self.nonlinear == "negative":
            return d.clamp(max=0) if _is_torch(d) else min(0.0, d)
        return abs(d)

    def _check_cost(self, cost: float, what: Any) -> None:
        if not math.isfinite(cost):
            raise ValueError(f"{self!r}: {type(self.profiler).__name__} gave the cost {cost} for {what}; a penalty "
                             "needs a finite cost (a NaN would silently poison the loss). Check the profiler and "
                             "its LUT or predictor.")

    def apply(self, loss: Any, cost: Any) -> Any:
        """The penalised loss for a given cost (a float or a torch scalar).

        Raises:
            ValueError: the cost is NaN or infinite.
        """
        self._check_cost(float(cost.detach()) if _is_torch(cost) else float(cost), "this input")
        f = self._f(cost / self.baseline_ - 1.0)
        if self.aggregate == "add":
            return loss + self.scale * f
        return loss * (1.0 + f) ** self.scale

    def __repr__(self) -> str:
        metric = getattr(self.profiler, "metric", type(self.profiler).__name__)
        return (f"{type(self).__name__}({metric}, baseline={self.baseline!r}, scale={self.scale}, "
                f"nonlinear={self.nonlinear!r}, aggregate={self.aggregate!r})")


class SampleProfilerPenalty(_ProfilerPenalty):
    """Penalise a loss (or reward a score) by the profiled cost of one sample.

    Args:
        profiler: any profiler with ``profile(sample) -> float``.
        baseline: the reference cost :math:`b`: a number in the metric's unit or ``"P%"`` of the largest subnet.
        scale: :math:`s`, the weight (add) or exponent (mul).
        nonlinear: ``"linear"``, ``"positive"``, ``"negative"`` or ``"absolute"`` (see the module docs).
        aggregate: ``"add"`` or ``"mul"``.

    Example:
        >>> import torch, hwnas
        >>> space = hwnas.spaces.create("digits")
        >>> flops = hwnas.FlopsProfiler(space, torch.randn(1, 1, 8, 8))
        >>> p = SampleProfilerPenalty(flops, baseline=flops.profile(space.max_sample()), scale=2.0,
        ...                           nonlinear="positive")
        >>> p(1.0, space.max_sample())          # at the baseline: no penalty
        1.0
    """

    def cost(self, sample: dict[str, Any]) -> float:
        """The sample's cost."""
        return float(self.profiler.profile(sample))

    def __call__(self, loss: Any, sample: dict[str, Any]) -> Any:
        """``loss`` penalised by ``sample``'s cost (the cost is kept in ``last_cost_``)."""
        cost = self.cost(sample)
        self._check_cost(cost, f"sample {sample}")
        self.last_cost_ = cost
        return self.apply(loss, cost)


class ExpectationProfilerPenalty(_ProfilerPenalty):
    """Penalise a loss by the exact expected cost under per-label probabilities (differentiable).

    Args: as :class:`SampleProfilerPenalty`; the profiler needs ``expectation(probs)``.
    """

    def __init__(self, profiler: Any, baseline: float | str, scale: float = 1.0, nonlinear: str = "linear",
                 aggregate: str = "add"):
        if not callable(getattr(profiler, "expectation", None)):
            raise TypeError(f"ExpectationProfilerPenalty needs a profiler with .expectation(probs), got "
                            f"{type(profiler).__name__}; use SampleProfilerPenalty for profilers without one.")
        super().__init__(profiler, baseline, scale, nonlinear, aggregate)

    def cost(self, probs: dict[str, Any]) -> Any:
        """The expected cost: a float for numpy/list probabilities, a differentiable scalar for torch ones."""
        return self.profiler.expectation(probs)

    def __call__(self, loss: Any, probs: dict[str, Any]) -> Any:
        """``loss`` penalised by the expected cost under ``probs`` (label -> probability vector)."""
        cost = self.cost(probs)
        value = float(cost.detach()) if _is_torch(cost) else float(cost)
        self._check_cost(value, "these probabilities (their expectation)")
        self.last_cost_ = value
        return self.apply(loss, cost)
