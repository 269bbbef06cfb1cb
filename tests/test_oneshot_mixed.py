"""Mixed operations (hwnas.space.mixed) and their modes (hwnas.search.oneshot_modes), against plain torch layers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import hwnas
import hwnas.nn as hnn
from hwnas.search.oneshot_modes import TemperatureSchedule, mixed_state
from hwnas.space.mixed import MixedError, MixedState, clear_mixed, set_mixed


def _state(choices, weights, active=None):
    active = active or {lab: list(range(len(v))) for lab, v in choices.items()}
    return MixedState(choices, weights, active)


class Tiny(hnn.Space):
    def __init__(self):
        super().__init__()
        w = hnn.Choice([4, 6, 8], label="w")
        self.stem = hnn.ConvBNAct(3, w, hnn.Choice([1, 3, 5], label="k"))
        self.op = hnn.LayerChoice([hnn.ConvBNAct(w, w, 3), hnn.ConvBNAct(w, w, 5), nn.Identity()], label="op")
        self.rep = hnn.Repeat(lambda i: hnn.ConvBNAct(w, w, 3), hnn.Choice([1, 2, 3], label="d"))
        self.fc = hnn.Linear(w, 5)

    def forward(self, x):
        return self.fc(self.rep(self.op(self.stem(x))).mean((2, 3)))


def test_weighted_sum_layer_choice_equals_softmax_weighted_sum_of_candidates():
    torch.manual_seed(0)
    lc = hnn.LayerChoice([nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(3, 4, 1), nn.Conv2d(3, 4, 5, padding=2)], "op")
    x = torch.randn(2, 3, 6, 6)
    alpha = {"op": torch.randn(3, requires_grad=True)}
    set_mixed(lc, mixed_state("weighted_sum", {"op": (0, 1, 2)}, alpha, np.random.default_rng(0)))
    out = lc(x)
    p = torch.softmax(alpha["op"], 0)
    ref = sum(p[i] * lc.candidates[i](x) for i in range(3))
    torch.testing.assert_close(out, ref)
    out.square().mean().backward()
    assert alpha["op"].grad is not None and alpha["op"].grad.abs().sum() > 0


def test_masked_width_equals_the_sliced_conv_and_superkernel_equals_kernel_mixture():
    torch.manual_seed(0)
    conv = hnn.Conv2d(3, hnn.Choice([2, 5, 8], label="w"), hnn.Choice([1, 3, 5], label="k"), bias=True)
    with torch.no_grad():
        conv.bias.normal_()
    choices = {"w": (2, 5, 8), "k": (1, 3, 5)}
    x = torch.randn(2, 3, 7, 7)
    # one-hot width 5, kernel 3: the first 5 channels are the exported conv's output, the rest zero
    onehot = {"w": torch.tensor([0.0, 1.0, 0.0]), "k": torch.tensor([0.0, 1.0, 0.0])}
    set_mixed(conv, _state(choices, onehot))
    out = conv(x)
    ref = conv.export({"w": 5, "k": 3})(x)  # a plain nn.Conv2d with the sliced weights
    assert out.shape == (2, 8, 7, 7)
    torch.testing.assert_close(out[:, :5], ref)
    assert out[:, 5:].abs().max() == 0
    # soft weights: the weighted sum over every (width, kernel) of the plain, zero-padded convs
    pw, pk = torch.tensor([0.2, 0.3, 0.5]), torch.tensor([0.1, 0.6, 0.3])
    set_mixed(conv, _state(choices, {"w": pw, "k": pk}))
    out = conv(x)
    ref = torch.zeros(2, 8, 7, 7)
    for i, c in enumerate((2, 5, 8)):
        for j, k in enumerate((1, 3, 5)):
            ref[:, :c] += pw[i] * pk[j] * conv.export({"w": c, "k": k})(x)
    torch.testing.assert_close(out, ref)


def test_relaxed_depth_equals_the_weighted_sum_of_the_depth_subnets():
    torch.manual_seed(0)
    space = Tiny().eval()
    x = torch.randn(2, 3, 8, 8)
    choices = space.choices()
    pd = torch.tensor([0.5, 0.3, 0.2])
    weights = {"w": None, "k": None, "op": None, "d": pd}
    active = {"w": [2], "k": [1], "op": [0], "d": [0, 1, 2]}
    set_mixed(space, MixedState(choices, weights, active))
    out = space(x)
    clear_mixed(space)
    ref = 0  # the head (mean, linear with bias) is affine and the weights sum to 1: it commutes with the sum
    for i, d in enumerate((1, 2, 3)):
        ref = ref + pd[i] * hwnas.export(space, {"w": 8, "k": 3, "op": 0, "d": d}).eval()(x)
    torch.testing.assert_close(out, ref)


@pytest.mark.parametrize("mode", ["weighted_sum", "gumbel", "binary_gate", "binary_gate_uniform"])
def test_gradients_reach_every_relaxed_label(mode):
    torch.manual_seed(0)
    space = Tiny()
    choices = space.choices()
    x, y = torch.randn(4, 3, 8, 8), torch.randint(0, 5, (4,))
    alpha = {lab: torch.zeros(len(v), requires_grad=True) for lab, v in choices.items()}
    set_mixed(space, mixed_state(mode, choices, alpha, np.random.default_rng(1), temperature=1.0))
    F.cross_entropy(space(x), y).backward()
    for lab, a in alpha.items():
        assert a.grad is not None and torch.isfinite(a.grad).all() and a.grad.abs().sum() > 0, (mode, lab)


def test_hard_gumbel_computes_the_argmax_subnet():
    torch.manual_seed(0)
    space = Tiny().eval()
    choices = space.choices()
    alpha = {lab: torch.randn(len(v), requires_grad=True) for lab, v in choices.items()}
    state = mixed_state("gumbel", choices, alpha, np.random.default_rng(3), temperature=0.5, hard=True)
    chosen = {lab: choices[lab][idx[0]] for lab, idx in state.active.items()}
    x = torch.randn(2, 3, 8, 8)
    out = set_mixed(space, state)(x)
    sub = hwnas.export(space, chosen).eval()  # an independent plain model of that subnet
    torch.testing.assert_close(out, sub(x))


def test_binary_gate_gradient_is_proxylessnas_estimator():
    torch.manual_seed(0)
    lc = hnn.LayerChoice([nn.Conv2d(2, 3, 3, padding=1), nn.Conv2d(2, 3, 1), nn.Conv2d(2, 3, 5, padding=2)], "op")
    x, t = torch.randn(2, 2, 5, 5), torch.randn(2, 3, 5, 5)
    alpha = {"op": torch.tensor([0.3, -0.2, 0.5], requires_grad=True)}
    state = mixed_state("binary_gate", {"op": (0, 1, 2)}, alpha, np.random.default_rng(4))
    pair = state.active["op"]
    assert len(pair) == 2
    out = set_mixed(lc, state)(x)
    ((out - t) ** 2).sum().backward()
    # the paper's formula, from the two candidates' own outputs
    on = max(pair, key=lambda i: float(state.weights["op"][i].detach()))
    with torch.no_grad():
        grad_out = 2 * (lc.candidates[on](x) - t)
        dg = {j: float((grad_out * lc.candidates[j](x)).sum()) for j in pair}
        q = torch.softmax(alpha["op"][pair], 0)
    ref = torch.zeros(3)
    for a, i in enumerate(pair):
        ref[i] = sum(dg[j] * float(q[b]) * ((a == b) - float(q[a])) for b, j in enumerate(pair))
    torch.testing.assert_close(alpha["op"].grad, ref, rtol=1e-4, atol=1e-5)


def test_input_choice_modes_and_export():
    torch.manual_seed(0)
    ic = hnn.InputChoice(3, 2, label="skip")
    xs = [torch.randn(2, 4), torch.randn(2, 4), torch.randn(2, 4)]
    alpha = {"skip": torch.randn(3, requires_grad=True)}
    set_mixed(ic, mixed_state("weighted_sum", {"skip": ic.choice.values}, alpha, np.random.default_rng(0)))
    p = torch.softmax(alpha["skip"], 0)
    ref = p[0] * (xs[0] + xs[1]) + p[1] * (xs[0] + xs[2]) + p[2] * (xs[1] + xs[2])
    torch.testing.assert_close(ic(xs), ref)
    assert ic.chosen("0+2") == (0, 2)
    with pytest.raises(hwnas.space.ChoiceError, match="n_chosen"):
        hnn.InputChoice(2, 3, label="bad")


def test_relaxed_width_with_fixed_padding_is_refused():
    conv = hnn.Conv2d(3, 4, hnn.Choice([3, 5], label="k"), padding=1)
    set_mixed(conv, _state({"k": (3, 5)}, {"k": torch.tensor([0.5, 0.5])}))
    with pytest.raises(MixedError, match="padding"):
        conv(torch.randn(1, 3, 6, 6))


def test_apply_arch_clears_the_mixed_state_and_schedule_anneals():
    space = Tiny().eval()
    choices = space.choices()
    alpha = {lab: torch.zeros(len(v)) for lab, v in choices.items()}
    set_mixed(space, mixed_state("weighted_sum", choices, alpha, np.random.default_rng(0)))
    sample = space.max_sample()
    x = torch.randn(1, 3, 8, 8)
    torch.testing.assert_close(space.apply_arch(sample)(x), hwnas.export(space, sample).eval()(x))
    sched = TemperatureSchedule(10.0, 0.1, epochs=5)
    temps = [sched(e) for e in range(5)]
    assert temps[0] == pytest.approx(10.0) and temps[-1] == pytest.approx(0.1)
    assert all(a > b for a, b in zip(temps, temps[1:]))


@pytest.mark.parametrize("act", ["relu", "hswish", "gelu"])
@pytest.mark.parametrize("train", [False, True])
def test_conv_bn_act_block_under_soft_and_gated_widths_is_the_weighted_sum_of_sliced_blocks(act, train):
    torch.manual_seed(0)
    block = hnn.ConvBNAct(3, hnn.Choice([2, 4, 6], label="w"), 3, act=act)
    with torch.no_grad():
        block[1].running_mean.normal_()
        block[1].running_var.uniform_(0.5, 2.0)
        block[1].bias.normal_()
    block.train(train)
    x = torch.randn(4, 3, 5, 5)
    choices = {"w": (2, 4, 6)}
    weights = [torch.tensor([0.2, 0.5, 0.3]), torch.tensor([0.0, 1.0, 0.0])]
    for w in weights:
        alpha = w.clone().requires_grad_()
        out = set_mixed(block, _state(choices, {"w": alpha}))(x)
        clear_mixed(block)
        ref = torch.zeros(4, 6, 5, 5)
        for i, c in enumerate((2, 4, 6)):
            sub = hwnas.export(block, {"w": c}).train(train)
            ref[:, :c] += w[i] * sub(x)
        torch.testing.assert_close(out, ref)
        out.sum().backward()
        assert alpha.grad.abs().sum() > 0


def test_full_hard_gumbel_is_the_picked_path_with_every_values_straight_through_gradient():
    torch.manual_seed(0)
    lc = hnn.LayerChoice([nn.Conv2d(2, 3, 3, padding=1), nn.Conv2d(2, 3, 1), nn.Conv2d(2, 3, 5, padding=2)], "op")
    x, t = torch.randn(2, 2, 5, 5), torch.randn(2, 3, 5, 5)
    alpha = {"op": torch.tensor([0.3, -0.2, 0.5], requires_grad=True)}
    calls = {i: [] for i in range(3)}
    for i, c in enumerate(lc.candidates):
        c.register_forward_hook(lambda m, a, o, i=i: calls[i].append(torch.is_grad_enabled()))
    tau = 0.7
    state = mixed_state("gumbel", {"op": (0, 1, 2)}, alpha, np.random.default_rng(5), temperature=tau, full=True)
    w = state.weights["op"]
    on = int(torch.argmax(w.detach()))
    assert state.active["op"] == [0, 1, 2] and float(w.detach()[on]) == pytest.approx(1.0)
    out = set_mixed(lc, state)(x)
    torch.testing.assert_close(out, lc.candidates[on](x))  # the value is the picked path's
    assert [len(calls[i]) for i in range(3)] == [2 if i == on else 0 for i in range(3)]  # others not run yet
    ((out - t) ** 2).sum().backward()
    assert all(calls[i] == [False] for i in range(3) if i != on)  # run once, in backward, without autograd
    assert all(c.weight.grad is None for i, c in enumerate(lc.candidates) if i != on)
    # reference: d/dalpha of sum_k w_k o_k at the one-hot, w = softmax((alpha + g) / tau)
    with torch.no_grad():
        grad_out = 2 * (lc.candidates[on](x) - t)
        dw = torch.tensor([float((grad_out * lc.candidates[k](x)).sum()) for k in range(3)])
    a = alpha["op"].detach().clone().requires_grad_(True)
    g = torch.as_tensor(state_gumbel(alpha["op"].detach(), w.detach(), tau))
    s = torch.softmax((a + g) / tau, 0)
    (s * dw).sum().backward()
    torch.testing.assert_close(alpha["op"].grad, a.grad, rtol=1e-4, atol=1e-5)


def state_gumbel(alpha: torch.Tensor, onehot: torch.Tensor, tau: float) -> np.ndarray:
    """The Gumbel noise mixed_state drew: the same generator, seeded as in the test."""
    from hwnas.search.oneshot_modes import gumbel_noise
    g = gumbel_noise(len(alpha), np.random.default_rng(5))
    assert int(torch.argmax(alpha + g)) == int(torch.argmax(onehot))
    return g.numpy()


def test_full_straight_through_reaches_labels_behind_batch_norm_where_the_picked_path_alone_does_not():
    # GDAS's picked-path-only estimator differentiates the scale of a batch-normalised output: ~0 (BN's eps)
    torch.manual_seed(0)
    space = Tiny().train()
    choices = space.choices()
    x, y = torch.randn(16, 3, 8, 8), torch.randint(0, 5, (16,))
    size = {}
    for full in (False, True):
        total = 0.0
        for seed in range(4):
            alpha = {lab: torch.zeros(len(v), requires_grad=True) for lab, v in choices.items()}
            set_mixed(space, mixed_state("gumbel", choices, alpha, np.random.default_rng(seed), 1.0, full=full))
            F.cross_entropy(space(x), y).backward()
            total += float(alpha["k"].grad.abs().sum())  # the stem's kernel: a batch norm follows it
        size[full] = total
    clear_mixed(space)
    assert size[False] < 1e-4 and size[True] > 100 * max(size[False], 1e-7), size
