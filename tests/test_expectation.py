"""Expected cost under independent per-label distributions: exact against enumeration, and its torch
gradient against finite differences."""

from __future__ import annotations

import itertools

import numpy as np
import torch
from conftest import UserCNN, fvcore_flops, num_params
from torch import nn

import hwnas
import hwnas.nn as hnn


def _probs(space, seed):
    rng = np.random.default_rng(seed)
    out = {}
    for label, values in space.choices().items():
        p = rng.random(len(values)) + 0.1
        out[label] = p / p.sum()
    return out


def test_expectation_equals_enumerated_mean():
    space = UserCNN()
    flops = hwnas.FlopsProfiler(space, torch.randn(1, 3, 32, 32))
    params = hwnas.NumParamsProfiler(space, graph=flops.graph)
    probs = _probs(space, 0)
    choices = space.choices()
    want_f = want_p = 0.0
    for combo in itertools.product(*(range(len(v)) for v in choices.values())):
        sample = {lab: choices[lab][i] for lab, i in zip(choices, combo)}
        w = float(np.prod([probs[lab][i] for lab, i in zip(choices, combo)]))
        want_f += w * flops.profile(sample)
        want_p += w * params.profile(sample)
    assert np.isclose(flops.expectation(probs), want_f, rtol=1e-12)
    assert np.isclose(params.expectation(probs), want_p, rtol=1e-12)
    # the same in torch
    t = {k: torch.tensor(v, dtype=torch.float64) for k, v in probs.items()}
    assert np.isclose(flops.expectation(t).item(), want_f, rtol=1e-12)


class _Small(hnn.Space):
    """32 subnets: resolution, width, kernel, an operator choice and a depth choice."""

    def __init__(self):
        super().__init__()
        self.resolution = hnn.Choice([8, 12], label="res")
        w = hnn.Choice([4, 8], label="w")
        self.stem = hnn.ConvBNAct(3, w, hnn.Choice([1, 3], label="k"), stride=2)
        self.body = hnn.Repeat(lambda i: hnn.LayerChoice(
            {"conv": hnn.ConvBNAct(w, w, 3), "pool": nn.AvgPool2d(3, 1, 1)}, label="op"),
            depth=hnn.Choice([1, 2], label="depth"))
        self.head = hnn.Linear(w, 3)

    def forward(self, x):
        return self.head(self.body(self.stem(x)).mean((2, 3)))


def test_expectation_equals_mean_of_independent_counts():
    """Against fvcore's FLOPs and sum(p.numel()) of every exported subnet, weighted by its probability."""
    space = _Small().eval()
    flops = hwnas.FlopsProfiler(space, torch.randn(2, 3, 12, 12))
    params = hwnas.NumParamsProfiler(space, graph=flops.graph)
    probs = _probs(space, 3)
    choices = space.choices()
    want_f = want_p = 0.0
    for combo in itertools.product(*(range(len(v)) for v in choices.values())):
        sample = {lab: choices[lab][i] for lab, i in zip(choices, combo)}
        w = float(np.prod([probs[lab][i] for lab, i in zip(choices, combo)]))
        subnet = hwnas.export(space, sample)
        want_f += w * fvcore_flops(subnet, torch.randn(2, 3, sample["res"], sample["res"]))
        want_p += w * num_params(subnet)
    assert np.isclose(flops.expectation(probs), want_f, rtol=1e-12)
    assert np.isclose(params.expectation(probs), want_p, rtol=1e-12)
    t = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in probs.items()}
    got = flops.expectation(t)
    assert np.isclose(got.item(), want_f, rtol=1e-12)
    got.backward()
    assert all(v.grad is not None and torch.isfinite(v.grad).all() for v in t.values())


def test_expectation_gradient_matches_finite_differences():
    space = hwnas.spaces.create("digits")
    flops = hwnas.FlopsProfiler(space, torch.randn(1, 1, 8, 8))
    rng = np.random.default_rng(1)
    logits = {k: torch.tensor(rng.normal(size=len(v)), dtype=torch.float64, requires_grad=True)
              for k, v in space.choices().items()}

    def f(lg):
        return flops.expectation({k: torch.softmax(v, 0) for k, v in lg.items()})

    value = f(logits)
    value.backward()
    eps = 1e-6
    for label in ["stem.width", "s1.depth", "s2.b2.op", "s1.b1.kernel"]:
        for j in range(len(logits[label])):
            plus = {k: v.detach().clone() for k, v in logits.items()}
            minus = {k: v.detach().clone() for k, v in logits.items()}
            plus[label][j] += eps
            minus[label][j] -= eps
            fd = (f(plus) - f(minus)).item() / (2 * eps)
            assert np.isclose(logits[label].grad[j].item(), fd, rtol=1e-5, atol=1e-3), (label, j)


def test_expectation_of_point_mass_is_profile():
    space = hwnas.spaces.create("mobilenet_v3")
    flops = hwnas.FlopsProfiler(space, torch.randn(1, 3, 224, 224))
    s = space.random_sample(3)
    probs = {k: np.eye(len(v))[list(v).index(s[k])] for k, v in space.choices().items()}
    assert np.isclose(flops.expectation(probs), flops.profile(s), rtol=1e-12)


def test_exact_extremes_equal_enumeration_and_drive_percentages():
    """The largest and smallest totals over all subnets (max-sum elimination) against brute force over every
    label combination, checked on the exported subnets they name; "60%" is of that true largest value."""
    from hwnas.hw.build import input_for
    from hwnas.profile.constraints import parse_constraints

    for space, x in ((UserCNN(), torch.randn(1, 3, 32, 32)), (hwnas.spaces.create("digits"), torch.randn(1, 1, 8, 8))):
        flops = hwnas.FlopsProfiler(space, x)
        params = hwnas.NumParamsProfiler(space, graph=flops.graph)
        m = flops.model
        every = np.array(list(itertools.product(*[range(m.sizes[lab]) for lab in m.labels])))
        for prof in (flops, params):
            values = prof.profile_batch(every)
            for largest, want in ((True, values.max()), (False, values.min())):
                total, sample = prof.model.extreme(largest)
                assert total == want
                subnet = hwnas.export(space, sample)
                got = fvcore_flops(subnet, input_for(space, sample, x)) if prof is flops else num_params(subnet)
                assert got == want
        (c,) = parse_constraints({"flops": "60%"}, {"flops": flops})
        assert c.bound == 0.6 * flops.profile_batch(every).max()
