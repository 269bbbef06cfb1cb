"""Bad input gets an error that names the culprit, what was expected, what was got and the fix."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from conftest import fvcore_flops
from torch import nn

import hwnas
import hwnas.nn as hnn
from hwnas.graph import (
    ShapeMismatchError,
    TensorMeta,
    UnsupportedOpError,
    UntraceableError,
    register_shape_rule,
)
from hwnas.profile import register_cost_rule
from hwnas.profile.constraints import ConstraintError, metric_range, parse_constraints


class Masked(nn.Module):
    def forward(self, x):
        return x[x > 0]  # how many elements survive depends on the values


def test_data_dependent_op_names_op_path_and_fix():
    """An op without a rule gets its shapes from PyTorch, unless they depend on tensor values: then the error
    names the op, the module path of the code that calls it (not '<root>') and the fix."""
    class Net(hnn.Space):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(hnn.Conv2d(3, hnn.Choice([4, 8], label="w"), 3), Masked())

        def forward(self, x):
            return self.body(x)

    with pytest.raises(UnsupportedOpError, match=r"function _operator.getitem at 'body.1' depends on tensor values.*"
                                                 r"register_shape_rule\(getitem"):
        hwnas.FlopsProfiler(Net(), torch.randn(1, 3, 8, 8))


def test_fixed_block_with_data_dependent_shapes_names_class_path_and_fix():
    class Net(hnn.Space):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(hnn.Conv2d(3, hnn.Choice([4, 8], label="w"), 3), Masked())

        def forward(self, x):
            return self.body(x)

    hwnas.graph.register_leaf(Masked)  # a leaf without a shape rule: a fixed block, whose shapes are not fixed
    try:
        with pytest.raises(UnsupportedOpError, match=r"module .*Masked at 'body.1' is profiled as a fixed block, but "
                                                     r"its output shapes depend on tensor values.*register_shape_rule"):
            hwnas.FlopsProfiler(Net(), torch.randn(1, 3, 8, 8))
    finally:
        from hwnas.graph.registry import _LEAVES
        _LEAVES.discard(Masked)


def test_untraceable_space_names_the_line():
    class Branchy(hnn.Space):
        def __init__(self):
            super().__init__()
            self.conv = hnn.Conv2d(3, hnn.Choice([4, 8], label="w"), 3)

        def forward(self, x):
            if x.sum() > 0:
                return self.conv(x)
            return x

    with pytest.raises(UntraceableError, match=r"could not trace <root> \(Branchy\) at .*test_errors.py:\d+: "
                                               r"`if x.sum\(\) > 0:`.*register_leaf"):
        hwnas.FlopsProfiler(Branchy(), torch.randn(1, 3, 8, 8))


def test_untraceable_submodule_is_named_with_its_path():
    """An untraceable submodule becomes a fixed block (tests/test_real_models.py), unless it holds choices."""
    class Flip(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = hnn.Conv2d(4, hnn.Choice([4, 8], label="v"), 1)

        def forward(self, x):
            if x.mean() > 0:
                return self.conv(-x)
            return self.conv(x)

    class Net(hnn.Space):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(hnn.Conv2d(3, 4, 3), Flip())

        def forward(self, x):
            return self.body(x)

    with pytest.raises(UntraceableError, match=r"could not trace <root> \(Net\), in its submodule 'body.1' \(Flip\) "
                                               r"at .*test_errors.py:\d+: `if x.mean\(\) > 0:`.*"
                                               r"register_leaf\(Flip\).*register_shape_rule\(Flip\)"):
        hwnas.FlopsProfiler(Net(), torch.randn(1, 3, 8, 8))


def test_leaf_with_registered_rules_works_and_missing_cost_rule_raises():
    class Gate(nn.Module):
        def forward(self, x):
            return x * torch.sigmoid(x) if x.numel() > 0 else x  # data-dependent: must be a leaf

    class Net(hnn.Space):
        def __init__(self):
            super().__init__()
            self.conv = hnn.Conv2d(3, hnn.Choice([4, 8], label="w"), 3)
            self.gate = Gate()

        def forward(self, x):
            return self.gate(self.conv(x))

    @register_shape_rule(Gate, op="my_gate")
    def _gate_shape(call):
        return TensorMeta(call.tensor(0).shape)

    with pytest.raises(UnsupportedOpError, match=r"no FLOP rule for op 'my_gate' at 'gate'.*register_cost_rule"
                                                 r"\('flops', 'my_gate'\).*on_missing='skip'"):
        hwnas.FlopsProfiler(Net(), torch.randn(1, 3, 8, 8))
    skipping = hwnas.FlopsProfiler(Net(), torch.randn(1, 3, 8, 8), on_missing="skip")
    assert skipping.skipped_ops == {"my_gate": 1}

    @register_cost_rule("flops", "my_gate", overwrite=True)
    def _gate_flops(op):
        return 2 * op.out.shape[1] * op.out.shape[2] * op.out.shape[3]

    counted = hwnas.FlopsProfiler(Net(), torch.randn(1, 3, 8, 8))
    s = {"w": 8}
    assert counted.profile(s) - skipping.profile(s) == 2 * 8 * 8 * 8


def test_shape_mismatch_names_layer_and_sizes():
    class Wrong(hnn.Space):
        def __init__(self):
            super().__init__()
            self.a = hnn.Conv2d(3, hnn.Choice([4, 8], label="w"), 3)
            self.b = hnn.Conv2d(8, 4, 3)

        def forward(self, x):
            return self.b(self.a(x))

    with pytest.raises(ShapeMismatchError, match=r"'b' \(Conv2d\) declares in_channels = 8 but its input has "
                                                 r"\[4, 8\] over \['w'\]"):
        hwnas.FlopsProfiler(Wrong(), torch.randn(1, 3, 8, 8))


def test_bad_dummy_input_and_profile_sample():
    space = hwnas.spaces.create("digits")
    with pytest.raises(TypeError, match="dummy_input\\[0\\] must be a torch.Tensor, got ndarray"):
        hwnas.FlopsProfiler(space, np.zeros((1, 1, 8, 8)))
    with pytest.raises(ValueError, match="needs dummy_input"):
        hwnas.FlopsProfiler(space)
    flops = hwnas.FlopsProfiler(space, torch.randn(1, 1, 8, 8))
    with pytest.raises(hwnas.space.SampleError, match="label 's1.width' got value 5"):
        flops.profile({**space.random_sample(0), "s1.width": 5})
    with pytest.raises(ValueError, match=r"expects indices of shape \[N, 17\]"):
        flops.profile_batch(np.zeros((3, 4), dtype=int))
    with pytest.raises(ValueError, match="missing"):
        flops.expectation({})
    with pytest.raises(ValueError, match="has 2 entries but label 'stem.width' has 3 choices"):
        flops.expectation({k: [1.0, 0.0] if k == "stem.width" else np.ones(len(v)) / len(v)
                           for k, v in space.choices().items()})


def test_constraint_errors():
    space = hwnas.spaces.create("digits")
    flops = hwnas.FlopsProfiler(space, torch.randn(1, 1, 8, 8))
    profs = {"flops": flops}
    with pytest.raises(ConstraintError, match=r"unknown constraint 'latency_ms'; this search has profilers for \['flops'\]"):
        parse_constraints({"latency_ms": 3}, profs)
    with pytest.raises(ConstraintError, match="malformed; use a number"):
        parse_constraints({"flops": "sixty"}, profs)
    with pytest.raises(ConstraintError, match="malformed \\(list\\)"):
        parse_constraints({"flops": [1]}, profs)
    with pytest.raises(ConstraintError, match="below the smallest subnet's flops"):
        parse_constraints({"flops": 10}, profs)
    (c,) = parse_constraints({"flops": "60%"}, profs)
    largest = metric_range(flops)[2]
    # the largest subnet by enumeration, counted by fvcore: widest stem and stages, two blocks per stage, each
    # block the larger of a plain 3x3 conv and the inverted residual with kernel 5 and expansion 3 (16 candidates;
    # the all-last-choices sample is not it: an inverted residual is the larger block where a stage widens)
    top = {lab: c[-1] for lab, c in space.choices().items()}
    ops = [f"s{s}.b{b}.op" for s in (1, 2) for b in (1, 2)]
    candidates = [{**top, **dict(zip(ops, pick))} for pick in itertools.product(("mbconv", "conv"), repeat=4)]
    x = torch.randn(1, 1, 8, 8)
    assert largest == max(fvcore_flops(hwnas.export(space, c), x) for c in candidates) > \
        flops.profile(space.max_sample())
    assert c.bound == pytest.approx(0.6 * largest)


# ----------------------------------------------------------------------------- issue 18: dtype, setitem, bools
def test_integer_input_to_a_float_layer_is_refused_at_build_time():
    """A long dummy input for a conv/linear model: PyTorch itself refuses to run it, so hwnas does too."""
    for model, x in ((nn.Sequential(nn.Conv2d(3, 4, 3)), torch.ones(1, 3, 8, 8, dtype=torch.long)),
                     (nn.Sequential(nn.Linear(6, 4)), torch.ones(2, 6, dtype=torch.int32))):
        with pytest.raises(RuntimeError):
            model(x)  # the reference: the model cannot run on it
        with pytest.raises(TypeError, match=rf"'0' \({type(model[0]).__name__}\) gets an input of dtype "
                                            rf"{x.dtype}, .*needs a floating-point input.*torch.randn"):
            hwnas.FlopsProfiler(model, x)


def test_integer_input_to_an_embedding_still_works():
    from conftest import fvcore_flops, num_params

    model = nn.Sequential(nn.Embedding(50, 8), nn.Linear(8, 4)).eval()
    tokens = torch.randint(0, 50, (2, 7))
    flops = hwnas.FlopsProfiler(model, tokens)
    assert flops.profile({}) == fvcore_flops(model, tokens)
    assert hwnas.NumParamsProfiler(model, graph=flops.graph).profile({}) == num_params(model)


class ZeroFirst(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(3, c, 3)

    def forward(self, x):
        y = self.conv(x)
        y[:, :2] = 0
        return y


def test_slice_assignment_is_diagnosed_as_such():
    """An in-place slice assignment is named as such, with the fix, not called data-dependent control flow."""
    flops = hwnas.FlopsProfiler(ZeroFirst(4), torch.randn(1, 3, 8, 8))  # no choice inside: a fixed block
    (path, cls, why), = flops.graph.blocks
    assert (path, cls) == ("<root>", "ZeroFirst")
    assert "in-place slice assignment" in why and "out-of-place" in why and "control flow" not in why

    class Space(ZeroFirst, hnn.Space):
        def __init__(self):
            super().__init__(4)
            self.conv = hnn.Conv2d(3, hnn.Choice([4, 8], label="w"), 3)

    with pytest.raises(UntraceableError, match=r"<root> \(Space\).*`y\[:, :2\] = 0`.*in-place slice assignment.*"
                                               r"out-of-place.*register_leaf") as err:
        hwnas.FlopsProfiler(Space(), torch.randn(1, 3, 8, 8))
    assert "control flow" not in str(err.value)


def test_profile_refuses_a_bool_for_a_number_like_validate():
    """``True == 1`` and ``hash(True) == hash(1)``: profile()'s fast path must not take True for the choice 1."""
    from hwnas.space.space import SampleError, validate_sample

    class Net(hnn.Space):
        def __init__(self):
            super().__init__()
            self.body = hnn.Repeat(lambda i: hnn.Conv2d(4, 4, 3, padding=1), hnn.Choice([0, 1, 2], label="d"))
            self.stem = hnn.Conv2d(3, 4, hnn.Choice([1, 3], label="k"))

        def forward(self, x):
            return self.body(self.stem(x))

    space = Net()
    flops = hwnas.FlopsProfiler(space, torch.randn(1, 3, 8, 8))
    good = {"d": 1, "k": 3}
    assert flops.profile(good) == flops.profile({"d": 1.0, "k": np.int64(3)})  # equal numbers are fine
    for bad in ({"d": True, "k": 3}, {"d": 1, "k": np.True_}, {"d": False, "k": 3}):
        with pytest.raises(SampleError) as want:
            validate_sample(flops.graph.choices, dict(bad))
        with pytest.raises(SampleError, match="a bool is not a number here") as got:
            flops.profile(dict(bad))
        assert str(got.value) == str(want.value)
        with pytest.raises(SampleError, match="a bool is not a number here"):
            flops.profile_batch([dict(bad)])
