"""One-shot training: BN recalibration against the data's statistics, the sandwich rule, the evaluator as a
search score, differentiable search with the expectation penalty, fine-tuning an exported subnet."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import hwnas
from hwnas.demo import load_digits_data
from hwnas.profile.constraints import metric_range
from hwnas.search import (
    DifferentiableTrainer,
    ExpectationProfilerPenalty,
    RegularizedEvolution,
    SubnetEvaluator,
    SupernetTrainer,
    TensorBatches,
    evaluate_accuracy,
    finetune,
    recalibrate_bn,
)

X = torch.zeros(1, 1, 8, 8)


@pytest.fixture(scope="module")
def data():
    torch.manual_seed(0)
    return load_digits_data()


def test_recalibrated_bn_holds_the_subnets_own_statistics(data):
    torch.manual_seed(0)
    space = hwnas.spaces.create("digits")
    sample = space.random_sample(1)
    for m in space.modules():  # stale statistics, as after training other subnets
        if hasattr(m, "running_mean") and m.running_mean is not None:
            m.running_mean.fill_(3.0)
            m.running_var.fill_(7.0)
    batches = [(data.x_train[i:i + 100], data.y_train[i:i + 100]) for i in range(0, 400, 100)]
    space.eval().apply_arch(sample)
    recalibrate_bn(space, batches)
    assert not space.training and all(m.momentum == 0.1 for m in space.modules() if hasattr(m, "momentum"))
    subnet = hwnas.export(space, sample).eval()
    stem_conv, stem_bn = subnet.get_submodule("stem.0"), subnet.get_submodule("stem.1")
    with torch.no_grad():
        feats = [stem_conv(x) for x, _ in batches]
    mean = torch.stack([f.mean((0, 2, 3)) for f in feats]).mean(0)
    var = torch.stack([f.var((0, 2, 3), unbiased=True) for f in feats]).mean(0)
    assert torch.allclose(stem_bn.running_mean, mean, atol=1e-5)
    assert torch.allclose(stem_bn.running_var, var, rtol=1e-4)
    # and the exported subnet computes what the recalibrated supernet computes
    assert torch.allclose(subnet(data.x_val[:50]), space(data.x_val[:50]), atol=1e-4)


def test_sandwich_rule_trains_largest_smallest_and_random(data):
    torch.manual_seed(0)
    space = hwnas.spaces.create("digits")
    opt = torch.optim.SGD(space.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    trainer = SupernetTrainer(space, opt, sampling="sandwich", num_random=2, seed=0)
    step = trainer.subnets_for_step()
    assert step[0] == space.max_sample() and step[1] == space.min_sample() and len(step) == 4
    assert len(SupernetTrainer(space, sampling="uniform").subnets_for_step()) == 1
    loader = TensorBatches(data.x_train[:512], data.y_train[:512], 32, shuffle=True, seed=0)
    trainer.fit(loader, epochs=4, progress=False)
    assert trainer.steps_ == 64 and trainer.losses_[-1] < 0.3 * trainer.losses_[0]
    val = TensorBatches(data.x_val, data.y_val, 512)
    evaluator = SubnetEvaluator(space, val, calib_loader=loader, calib_batches=2)
    small, large = evaluator(space.min_sample()), evaluator(space.max_sample())
    assert small > 0.4 and large > 0.8  # both ends of the sandwich learned
    assert evaluator(space.min_sample()) == small  # fixed calibration batches: the same score every time
    with pytest.raises(ValueError, match=r"sampling must be one of \('sandwich', 'uniform', 'progressive'\), got 'fair'"):
        SupernetTrainer(space, sampling="fair")


@pytest.mark.parametrize("distill", [True, False])
def test_a_sandwich_step_takes_the_gradient_of_ce_plus_in_place_distillation(data, distill):
    """One step's gradient against one written out by hand: cross entropy of the largest subnet plus, for the
    smallest and the random ones, the soft cross entropy with the largest's detached predictions at T=2 (or
    plain cross entropy without distillation)."""
    torch.manual_seed(0)
    space = hwnas.spaces.create("digits")
    ref = copy.deepcopy(space)
    x, y = data.x_train[:64], data.y_train[:64]
    temp = 2.0
    trainer = SupernetTrainer(space, torch.optim.SGD(space.parameters(), lr=0.0), sampling="sandwich",
                              num_random=2, distill=distill, temperature=temp, grad_clip=None, seed=3)
    trained = []
    draw = trainer.subnets_for_step
    trainer.subnets_for_step = lambda: trained.extend(draw()) or list(trained)
    first_loss = trainer.step(x, y)
    assert trained[0] == space.max_sample() and trained[1] == space.min_sample() and len(trained) == 4

    ref.train()
    ref.apply_arch(trained[0])
    out = ref(x)
    total = F.cross_entropy(out, y)
    assert math.isclose(first_loss, float(total.detach()), rel_tol=1e-6)
    teacher = torch.softmax(out.detach() / temp, 1)
    for sample in trained[1:]:
        ref.apply_arch(sample)
        logits = ref(x)
        if distill:
            total = total - (teacher * torch.log_softmax(logits / temp, 1)).sum(1).mean() * temp**2
        else:
            total = total + F.cross_entropy(logits, y)
    params = list(ref.parameters())
    grads = torch.autograd.grad(total, params, allow_unused=True)
    got = list(space.parameters())
    for p_ref, g_ref, p in zip(params, grads, got):
        want = torch.zeros_like(p_ref) if g_ref is None else g_ref
        have = torch.zeros_like(p) if p.grad is None else p.grad
        assert torch.allclose(have, want, atol=1e-6, rtol=1e-4)
    assert any(g is not None and g.abs().sum() > 0 for g in grads)


def test_uniform_sampling_draws_every_value_evenly():
    space = hwnas.spaces.create("digits")
    trainer = SupernetTrainer(space, sampling="uniform", seed=0)
    draws = [trainer.subnets_for_step()[0] for _ in range(600)]
    for label, values in space.choices().items():
        counts = [sum(d[label] == v for d in draws) for v in values]
        assert min(counts) > 0.6 * 600 / len(values), (label, counts)
    assert len({json.dumps(d, sort_keys=True) for d in draws}) > 500


def test_evaluator_as_score_func_under_constraints_then_finetune(data):
    torch.manual_seed(0)
    space = hwnas.spaces.create("digits")
    loader = TensorBatches(data.x_train[:384], data.y_train[:384], 128, shuffle=True, seed=0)
    SupernetTrainer(space, sampling="uniform", seed=0).fit(loader, epochs=2, progress=False)
    val = TensorBatches(data.x_val[:200], data.y_val[:200], 200)
    evaluator = SubnetEvaluator(space, val, calib_loader=loader, calib_batches=1)
    res = hwnas.search(space, X, {"flops": "40%"}, evaluator,
                       strategy=RegularizedEvolution(4, 2), max_trials=8, seed=0, progress=False)
    flops = hwnas.FlopsProfiler(space, X)
    assert flops.profile(res.best_sample) <= 0.4 * metric_range(flops)[2] * (1 + 1e-9)
    subnet = res.subnet
    assert not any(type(m).__module__.startswith("hwnas") for m in subnet.modules())
    before = evaluate_accuracy(subnet, loader)
    finetune(subnet, loader, epochs=3, lr=0.05, progress=False)
    assert not subnet.training and evaluate_accuracy(subnet, loader) > before


def test_differentiable_search_follows_the_expectation_penalty(data):
    torch.manual_seed(0)
    space = hwnas.spaces.create("digits")
    flops = hwnas.FlopsProfiler(space, X)
    loader = TensorBatches(data.x_train[:256], data.y_train[:256], 64, shuffle=True, seed=0)
    penalty = ExpectationProfilerPenalty(flops, "10%", scale=5.0)
    trainer = DifferentiableTrainer(space, penalty, arch_lr=0.1, seed=0)
    uniform = flops.expectation({k: np.full(len(v), 1 / len(v)) for k, v in space.choices().items()})
    trainer.fit(loader, loader, epochs=3, warmup_epochs=1, progress=False)
    assert all(a.grad is not None for a in trainer.alpha.values())
    expected_now = flops.expectation({k: p.detach().numpy() for k, p in trainer.probs().items()})
    assert expected_now < 0.7 * uniform
    best = trainer.export_best()
    assert best == {k: space.choices()[k][int(torch.argmax(a))] for k, a in trainer.alpha.items()}
    assert flops.profile(best) < flops.profile(space.max_sample()) / 2
    assert len(trainer.history_) == 3 * 4 and all(np.isfinite(h["expected_cost"]) for h in trainer.history_)


def test_training_helpers_check_their_input():
    with pytest.raises(ValueError, match=r"x has 3 rows but y has 2"):
        TensorBatches(torch.zeros(3, 1), torch.zeros(2))
    with pytest.raises(ValueError, match=r"recalibrate_bn got no batches"):
        recalibrate_bn(nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2)), [])
    with pytest.raises(TypeError, match=r"penalty must be an ExpectationProfilerPenalty"):
        DifferentiableTrainer(hwnas.spaces.create("digits"), penalty=lambda loss, s: loss)
