"""One-shot strategies (DARTS, GumbelDARTS, ProxylessNAS, ENAS, RandomOneShot) through train_oneshot."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from torch import nn

import hwnas
import hwnas.nn as hnn
from hwnas.search import (
    DARTS,
    ENAS,
    Chain,
    ExpectationProfilerPenalty,
    Filter,
    GumbelDARTS,
    ProxylessNAS,
    RandomOneShot,
    RangeProfilerFilter,
    RegularizedEvolution,
    SampleProfilerPenalty,
    TensorBatches,
    train_oneshot,
)
from hwnas.search.strategies import profiler_range


class Tiny(hnn.Space):
    def __init__(self):
        super().__init__()
        w = hnn.Choice([4, 8], label="w")
        self.stem = hnn.ConvBNAct(1, w, hnn.Choice([1, 3], label="k"))
        self.op = hnn.LayerChoice([hnn.ConvBNAct(w, w, 3), hnn.ConvBNAct(w, w, 1), nn.Identity()], label="op")
        self.rep = hnn.Repeat(lambda i: hnn.ConvBNAct(w, w, 3), hnn.Choice([1, 2], label="d"))
        self.fc = hnn.Linear(w, 3)

    def forward(self, x):
        return self.fc(self.rep(self.op(self.stem(x))).mean((2, 3)))


X1 = torch.zeros(1, 1, 6, 6)


def _data(n=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 6, 6, generator=g)
    y = (x.mean((1, 2, 3)) > 0).long() + (x[:, 0, 0, 0] > 1).long()
    return TensorBatches(x, y, batch_size=16)


def _setup():
    torch.manual_seed(0)
    space = Tiny()
    flops = hwnas.FlopsProfiler(space, X1)
    return space, flops


@pytest.mark.parametrize("make", [
    lambda f: DARTS(ExpectationProfilerPenalty(f, "50%"), arch_lr=0.1),
    lambda f: DARTS(ExpectationProfilerPenalty(f, "50%"), order=2, arch_lr=0.1),
    lambda f: GumbelDARTS(ExpectationProfilerPenalty(f, "50%"), arch_lr=0.1),
    lambda f: GumbelDARTS(ExpectationProfilerPenalty(f, "50%"), hard=False, arch_lr=0.1),
    lambda f: ProxylessNAS(ExpectationProfilerPenalty(f, "50%"), arch_lr=0.1),
    lambda f: ProxylessNAS(ExpectationProfilerPenalty(f, "50%"), uniform=True, arch_lr=0.1),
    lambda f: ENAS(SampleProfilerPenalty(f, "50%")),
    lambda f: RandomOneShot(SampleProfilerPenalty(f, "50%"), search_trials=6, population_size=3, sample_size=2),
], ids=["darts1", "darts2", "gdas", "fbnet", "proxyless", "proxyless_uniform", "enas", "spos"])
def test_every_strategy_trains_and_returns_a_valid_subnet(make):
    space, flops = _setup()
    data = _data()
    result = train_oneshot(space, make(flops), data, _data(seed=1), epochs=2, progress=False)
    space.validate(dict(result.sample))
    assert len(result.history) == 2 and all(math.isfinite(h.train_loss) for h in result.history)
    sub = result.export()
    x = torch.randn(2, 1, 6, 6)
    torch.testing.assert_close(sub.eval()(x), space.apply_arch(result.sample).eval()(x))
    assert result.arch_state or isinstance(result.strategy, RandomOneShot)


def test_strong_expected_penalty_moves_the_distribution_to_cheap_subnets():
    space, flops = _setup()
    strat = DARTS(ExpectationProfilerPenalty(flops, "20%", scale=20.0), arch_lr=0.3)
    result = train_oneshot(space, strat, _data(), _data(seed=1), epochs=3, progress=False)
    costs = [h.expected_cost for h in result.history]
    assert costs[-1] < costs[0]
    assert flops.profile(result.sample) < flops.profile(space.max_sample())


def test_second_order_arch_step_leaves_the_weights_as_they_were():
    space, flops = _setup()
    data = _data()
    strat = DARTS(order=2)
    train_oneshot(space, strat, data, data, epochs=1, progress=False)
    for group in strat.optimizer.param_groups:
        group["lr"] = 0.05  # the cosine schedule ended at 0
    before = [p.detach().clone() for p in space.parameters()]
    x, y = next(iter(data))
    strat.weight_step(x, y)
    after_weight = [p.detach().clone() for p in space.parameters()]
    strat.arch_step(x, y)
    assert any(not torch.equal(a, b) for a, b in zip(before, after_weight))
    for a, b in zip(after_weight, space.parameters()):
        torch.testing.assert_close(a, b.detach(), rtol=0, atol=1e-6)


@pytest.mark.parametrize("make, match", [
    (lambda f: DARTS(SampleProfilerPenalty(f, "50%")), "no gradient"),
    (lambda f: GumbelDARTS(SampleProfilerPenalty(f, "50%")), "no gradient"),
    (lambda f: ProxylessNAS(SampleProfilerPenalty(f, "50%")), "no gradient"),
    (lambda f: ENAS(ExpectationProfilerPenalty(f, "50%")), "not a product"),
    (lambda f: RandomOneShot(ExpectationProfilerPenalty(f, "50%")), "no learned distribution"),
])
def test_penalties_where_they_are_invalid_are_refused_with_the_reason(make, match):
    _, flops = _setup()
    with pytest.raises(TypeError, match=match):
        make(flops)


def test_expected_latency_equals_enumeration_over_the_distribution():
    space = hwnas.spaces.create("digits")
    lat = hwnas.LatencyProfiler(space, torch.zeros(1, 1, 8, 8), lut="digits")
    rng = np.random.default_rng(0)
    choices = space.choices()
    spread = ["stem.width", "s1.b1.op", "s2.width", "s2.depth", "s2.b2.kernel"]
    probs = {}
    for lab, vals in choices.items():
        if lab in spread:
            p = rng.random(len(vals))
            probs[lab] = torch.tensor(p / p.sum())
        else:
            p = np.zeros(len(vals))
            p[int(rng.integers(len(vals)))] = 1.0
            probs[lab] = torch.tensor(p)
    expected = float(ExpectationProfilerPenalty(lat, "50%").cost(probs))
    support = [[(v, float(probs[lab][i])) for i, v in enumerate(choices[lab]) if probs[lab][i] > 0]
               for lab in choices]
    total = 0.0
    for combo in itertools.product(*support):
        sample = {lab: v for lab, (v, _) in zip(choices, combo)}
        total += math.prod(p for _, p in combo) * lat.profile(sample)
    assert expected == pytest.approx(total, rel=1e-9)


def test_chosen_subnet_meets_the_budget_by_an_independent_lut_evaluation():
    torch.manual_seed(0)
    space = hwnas.spaces.create("digits")
    x1 = torch.zeros(1, 1, 8, 8)
    lat = hwnas.LatencyProfiler(space, x1, lut="digits")
    budget = 0.6 * profiler_range(lat)[2]  # 60% of the largest subnet (not always the all-largest sample)
    g = torch.Generator().manual_seed(0)
    data = TensorBatches(torch.randn(32, 1, 8, 8, generator=g), torch.randint(0, 10, (32,), generator=g),
                         batch_size=16)
    strat = GumbelDARTS(ExpectationProfilerPenalty(lat, "60%"), filter=RangeProfilerFilter(lat, max="60%"))
    result = train_oneshot(space, strat, data, data, epochs=1, progress=False)
    # the exported plain model, profiled anew from its own graph with the same LUT
    independent = hwnas.LatencyProfiler(result.export(), x1, lut="digits").profile({})
    assert independent <= budget * (1 + 1e-9)


def test_filter_metric_for_invalid_tells_the_strategy_instead_of_dropping():
    told = []

    class Spy(RegularizedEvolution):
        def tell(self, sample, score):
            told.append((dict(sample), score))
            super().tell(sample, score)

    chain = Chain(Spy(population_size=4, sample_size=2), Filter(lambda s: s["a"] == 1, metric_for_invalid=-5.0))
    chain.bind({"a": (0, 1), "b": (0, 1, 2)}, seed=0)
    for _ in range(5):
        s = chain.propose()
        assert s["a"] == 1
    assert told and all(score == -5.0 and sample["a"] == 0 for sample, score in told)
    with pytest.raises(ValueError, match="metric_for_invalid"):
        Filter(lambda s: True, metric_for_invalid="low")


def test_enas_learns_to_avoid_what_the_filter_rewards_low():
    space, flops = _setup()
    strat = ENAS(filter=Filter(lambda s: s["op"] != 2, metric_for_invalid=-20.0), controller_lr=0.05)
    result = train_oneshot(space, strat, _data(), _data(seed=1), epochs=2, progress=False)
    assert result.sample["op"] != 2
    rng = np.random.default_rng(5)
    ops = [strat.controller.sample(rng)[0][list(strat.choices).index("op")] for _ in range(200)]
    assert ops.count(2) < 200 / 3


@pytest.mark.parametrize("nonlinear, costs, want", [
    ("negative", (5.0, 20.0), (-0.5, 0.0)),
    ("positive", (5.0, 20.0), (0.0, 1.0)),
    ("absolute", (5.0, 20.0), (0.5, 1.0)),
    ("linear", (5.0, 20.0), (-0.5, 1.0)),
])
def test_every_nonlinear_option(nonlinear, costs, want):
    _, flops = _setup()
    pen = SampleProfilerPenalty(flops, 10.0, nonlinear=nonlinear)
    for c, w in zip(costs, want):
        assert pen.apply(0.0, c) == pytest.approx(w)
        assert float(pen.apply(torch.zeros(()), torch.tensor(c))) == pytest.approx(w)


def test_architecture_files_in_value_index_and_onehot_formats(tmp_path):
    space = Tiny().eval()
    x = torch.randn(2, 1, 6, 6)
    sample = {"w": 8, "k": 3, "op": 1, "d": 2}
    ref = hwnas.export(space, sample).eval()(x)
    for fmt in ("value", "index", "onehot"):
        path = hwnas.save_arch(sample, tmp_path / f"{fmt}.json", format=fmt, space=space)
        assert hwnas.load_arch(path, space=space) == sample
    index = {"w": 1, "k": 1, "op": 1, "d": 1}          # NNI's index dict; {"d": 1} alone would read as a value
    onehot = {"w": [0, 1], "k": [0, 1], "op": [0, 1, 0], "d": [0, 1]}
    for arch, fmt in ((sample, None), (index, "index"), (onehot, None)):
        torch.testing.assert_close(hwnas.apply_arch(space, arch, format=fmt)(x), ref)
    with pytest.raises(hwnas.space.SampleError, match="exactly one 1"):
        hwnas.apply_arch(space, {**onehot, "op": [1, 1, 0]})
    with pytest.raises(hwnas.space.SampleError, match="index"):
        hwnas.apply_arch(space, {**index, "op": 3}, format="index")


def test_input_choice_multi_hot_arch():
    class WithSkip(hnn.Space):
        def __init__(self):
            super().__init__()
            self.a = hnn.ConvBNAct(1, 4, 3)
            self.b = hnn.ConvBNAct(4, 4, 3)
            self.skip = hnn.InputChoice(3, 2, label="skip")
            self.fc = hnn.Linear(4, 2)

        def forward(self, x):
            a = self.a(x)
            b = self.b(a)
            return self.fc(self.skip([a, b, a * 2]).mean((2, 3)))

    space = WithSkip().eval()
    x = torch.randn(1, 1, 6, 6)
    space.apply_arch({"skip": "0+2"})
    ref = space(x)
    for arch in ({"skip": [1, 0, 1]}, {"skip": [0, 2]}):
        fmt = None if isinstance(arch["skip"], list) and len(arch["skip"]) == 3 else "index"
        torch.testing.assert_close(hwnas.apply_arch(space, arch, format=fmt)(x), ref)
    assert hwnas.space.arch_format.encode(space, {"skip": "0+2"}, "onehot") == {"skip": [1, 0, 1]}


def test_second_order_darts_gradient_matches_the_exact_unrolled_gradient():
    from torch.func import functional_call

    from hwnas.search.oneshot_modes import mixed_state
    from hwnas.space.mixed import set_mixed

    class NoBN(hnn.Space):
        def __init__(self):
            super().__init__()
            self.op = hnn.LayerChoice([nn.Linear(4, 4), nn.Sequential(nn.Linear(4, 4), nn.Tanh()),
                                       nn.Identity()], label="op")
            self.fc = hnn.Linear(hnn.Choice([4], label="f"), 3)

        def forward(self, x):
            return self.fc(self.op(x))

    torch.manual_seed(0)
    space = NoBN()
    xt, yt, xv, yv = torch.randn(8, 4), torch.randint(0, 3, (8,)), torch.randn(8, 4), torch.randint(0, 3, (8,))
    xi = 0.1
    strat = DARTS(order=2, xi=xi)
    opt = torch.optim.SGD(space.parameters(), lr=xi)
    strat.setup(space, opt, np.random.default_rng(0), 1, torch.nn.functional.cross_entropy)
    with torch.no_grad():
        strat.alpha["op"].copy_(torch.tensor([0.2, -0.1, 0.4]))
    strat.arch_optimizer.step = lambda: None  # keep the gradient to read it
    strat._last_train = (xt, yt)
    strat.arch_step(xv, yv)
    got = strat.alpha["op"].grad.clone()

    choices = space.choices()

    def loss(params, alpha, x, y):
        set_mixed(space, mixed_state("weighted_sum", choices, {"op": alpha, "f": torch.zeros(1)},
                                     np.random.default_rng(0)))
        return torch.nn.functional.cross_entropy(functional_call(space, params, (x,)), y)

    params = {n: p.detach().clone().requires_grad_() for n, p in space.named_parameters()}
    alpha = strat.alpha["op"].detach().clone().requires_grad_()
    g = torch.autograd.grad(loss(params, alpha, xt, yt), list(params.values()), create_graph=True)
    unrolled = {n: p - xi * gi for (n, p), gi in zip(params.items(), g)}
    exact = torch.autograd.grad(loss(unrolled, alpha, xv, yv), alpha)[0]
    first = torch.autograd.grad(loss(params, alpha, xv, yv), alpha)[0]
    torch.testing.assert_close(got, exact, rtol=2e-3, atol=2e-5)
    assert not torch.allclose(exact, first, rtol=1e-3, atol=1e-6)  # the second-order term matters here


@pytest.mark.parametrize("make", [
    lambda f, flt: ProxylessNAS(ExpectationProfilerPenalty(f, "50%"), filter=flt, arch_lr=0.1, derive_samples=5),
    lambda f, flt: ENAS(SampleProfilerPenalty(f, "50%"), filter=flt, derive_samples=5),
], ids=["proxyless", "enas"])
def test_derivation_returns_the_best_scored_sample_rescored_independently(make):
    from hwnas.search.training import first_batches, recalibrate_bn

    space, flops = _setup()
    flt = RangeProfilerFilter(flops, max="70%")
    train, val = _data(), _data(seed=1)
    result = train_oneshot(space, make(flops, flt), train, val, epochs=1, progress=False)
    derived = result.strategy.derived_
    assert 2 <= len(derived) <= 6 and len({tuple(s.values()) for s, _ in derived}) == len(derived)
    assert all(flt(s) for s, _ in derived)
    best, score = max(derived, key=lambda t: t[1])
    assert result.sample == best
    # rescore: the subnet exported from the supernet, BN recalibrated on the same 4 training batches, its
    # mean validation cross entropy, plus the penalty on its FLOPs counted by a profiler of the exported model
    sub = result.export()
    recalibrate_bn(sub, first_batches(train, 4))
    sub.eval()
    with torch.no_grad():
        tot = sum(float(torch.nn.functional.cross_entropy(sub(x), y)) * len(y) for x, y in val)
    loss = tot / sum(len(y) for _, y in val)
    cost = hwnas.FlopsProfiler(sub, X1).profile({})
    base = 0.5 * profiler_range(flops)[2]
    assert score == pytest.approx(-(loss + (cost / base - 1)), rel=1e-4, abs=1e-5)
