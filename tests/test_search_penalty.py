"""Hardware penalties: the exact expectation against a Monte Carlo mean of sampled costs, the documented
formulas, gradients against finite differences, and error messages."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

import hwnas
from hwnas.artifacts import lut_path
from hwnas.profile.constraints import metric_range
from hwnas.search import ExpectationProfilerPenalty, SampleProfilerPenalty

X = torch.zeros(1, 1, 8, 8)
LUT = lut_path("digits")  # the shipped digits LUT (cpu-ort-1t)


@pytest.fixture(scope="module")
def setup():
    space = hwnas.spaces.create("digits")
    flops = hwnas.FlopsProfiler(space, X)
    latency = hwnas.LatencyProfiler(space, X, lut=LUT, graph=flops.graph)
    return space, flops, latency


def random_probs(space, seed):
    rng = np.random.default_rng(seed)
    return {lab: (p := rng.random(len(v)) + 0.2) / p.sum() for lab, v in space.choices().items()}


def draw(flops, probs, n, seed):
    rng = np.random.default_rng(seed)
    cols = [rng.choice(flops.model.sizes[lab], size=n, p=probs[lab]) for lab in flops.labels]
    return np.stack(cols, axis=1)


@pytest.mark.parametrize("metric", ["flops", "latency_ms"])
def test_expectation_penalty_equals_monte_carlo_mean_of_sampled_penalty(setup, metric):
    space, flops, latency = setup
    prof = flops if metric == "flops" else latency
    probs = random_probs(space, 0)
    baseline = prof.profile(space.max_sample()) / 2
    exp_pen = ExpectationProfilerPenalty(prof, baseline, scale=0.3)
    sample_pen = SampleProfilerPenalty(prof, baseline, scale=0.3)
    idx = draw(flops, probs, 40_000, 1)
    samples = [prof.model.decode(i) for i in idx[:2000]]
    sampled = np.array([sample_pen(1.5, s) for s in samples])  # the sampled penalty itself, on 2,000 draws
    costs = prof.profile_batch(idx)                              # and the cost, vectorised, on 40,000
    want_small = sampled.mean()
    want = 1.5 + 0.3 * (costs.mean() / baseline - 1)
    got = exp_pen(1.5, probs)
    se = 0.3 * costs.std() / baseline / math.sqrt(len(costs))
    assert abs(got - want) < 4 * se
    assert abs(got - want_small) < 4 * 0.3 * costs.std() / baseline / math.sqrt(2000)
    # and exactly the probability-weighted mean over every combination of choices (442,368 on digits)
    grid = np.array(list(itertools.product(*(range(flops.model.sizes[lab]) for lab in flops.labels))))
    weights = np.prod([probs[lab][grid[:, j]] for j, lab in enumerate(flops.labels)], axis=0)
    exact = 1.5 + 0.3 * (float(weights @ prof.profile_batch(grid)) / baseline - 1)
    assert math.isclose(got, exact, rel_tol=1e-9)
    # torch probabilities give the same number, as a tensor
    t = exp_pen(torch.tensor(1.5, dtype=torch.float64), {k: torch.tensor(v) for k, v in probs.items()})
    assert isinstance(t, torch.Tensor) and math.isclose(float(t), got, rel_tol=1e-12)


def test_documented_formulas(setup):
    space, flops, _ = setup
    s = space.random_sample(3)
    c, b = flops.profile(s), 5e5
    d = c / b - 1
    cases = {("linear", "add"): 2.0 + 0.5 * d, ("positive", "add"): 2.0 + 0.5 * max(0.0, d),
             ("absolute", "add"): 2.0 + 0.5 * abs(d), ("linear", "mul"): 2.0 * (c / b) ** 0.5,
             ("positive", "mul"): 2.0 * max(1.0, c / b) ** 0.5, ("absolute", "mul"): 2.0 * (1 + abs(d)) ** 0.5}
    for (nonlinear, aggregate), want in cases.items():
        pen = SampleProfilerPenalty(flops, b, scale=0.5, nonlinear=nonlinear, aggregate=aggregate)
        assert math.isclose(pen(2.0, s), want, rel_tol=1e-12), (nonlinear, aggregate)
        assert pen.last_cost_ == c
    # the nonlinearity applies to the expected cost
    probs = random_probs(space, 2)
    e = flops.expectation(probs)
    pen = ExpectationProfilerPenalty(flops, b, scale=0.5, nonlinear="positive")
    assert math.isclose(pen(1.0, probs), 1.0 + 0.5 * max(0.0, e / b - 1), rel_tol=1e-12)
    # a percentage baseline is of the largest subnet; MnasNet's reward is a negative exponent on a score
    assert SampleProfilerPenalty(flops, "50%").baseline_ == 0.5 * metric_range(flops)[2]
    mnas = SampleProfilerPenalty(flops, b, scale=-0.07, aggregate="mul")
    assert math.isclose(mnas(0.9, s), 0.9 * (c / b) ** -0.07)


@pytest.mark.parametrize("nonlinear,aggregate", [("linear", "add"), ("positive", "add"), ("absolute", "mul"),
                                                 ("linear", "mul")])
def test_expectation_gradient_matches_finite_differences(setup, nonlinear, aggregate):
    space, flops, _ = setup
    rng = np.random.default_rng(5)
    logits = {k: torch.tensor(rng.normal(size=len(v)), dtype=torch.float64, requires_grad=True)
              for k, v in space.choices().items()}
    baseline = 0.3 * flops.profile(space.max_sample())  # the expected cost is well above: no kink nearby
    pen = ExpectationProfilerPenalty(flops, baseline, scale=0.7, nonlinear=nonlinear, aggregate=aggregate)
    loss = torch.tensor(1.3, dtype=torch.float64)

    def f(lg):
        return pen(loss, {k: torch.softmax(v, 0) for k, v in lg.items()})

    f(logits).backward()
    eps = 1e-6
    for label in ["stem.width", "s1.depth", "s2.b1.op", "s2.width", "s1.b2.kernel"]:
        for j in range(len(logits[label])):
            plus = {k: v.detach().clone() for k, v in logits.items()}
            minus = {k: v.detach().clone() for k, v in logits.items()}
            plus[label][j] += eps
            minus[label][j] -= eps
            fd = (float(f(plus)) - float(f(minus))) / (2 * eps)
            assert math.isclose(float(logits[label].grad[j]), fd, rel_tol=1e-5, abs_tol=1e-9), (label, j)


def test_penalty_errors_name_the_culprit(setup):
    _, flops, _ = setup
    with pytest.raises(ValueError, match=r"SampleProfilerPenalty: nonlinear must be one of \('linear', 'positive', "
                                         r"'negative', 'absolute'\), got 'relu'"):
        SampleProfilerPenalty(flops, 1e6, nonlinear="relu")
    with pytest.raises(ValueError, match=r"aggregate must be one of \('add', 'mul'\), got 'sum'"):
        ExpectationProfilerPenalty(flops, 1e6, aggregate="sum")
    with pytest.raises(ValueError, match=r"baseline='half' is malformed"):
        SampleProfilerPenalty(flops, "half")
    with pytest.raises(ValueError, match=r"baseline must be a positive cost"):
        SampleProfilerPenalty(flops, 0)

    class NoExpectation:
        def profile(self, sample):
            return 1.0

    with pytest.raises(TypeError, match=r"needs a profiler with .expectation\(probs\), got NoExpectation; use "
                                        r"SampleProfilerPenalty"):
        ExpectationProfilerPenalty(NoExpectation(), 1.0)
