"""The space API: labels, sampling, validation, subnet counts, registry."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch
from conftest import UserCNN
from torch import nn

import hwnas
import hwnas.nn as hnn
from hwnas.space import ChoiceError, SampleError, evaluate, make_divisible, value_range


def test_choice_expressions():
    e = hnn.Choice([3, 4, 6], label="e")
    hidden = make_divisible(e * 24, 8)
    assert value_range(hidden) == [72, 96, 144]
    assert evaluate(hidden, {"e": 4}) == 96
    assert evaluate((e, 5, [e * 2]), {"e": 3}) == (3, 5, [6])
    with pytest.raises(ChoiceError, match="no truth value"):
        bool(e)
    with pytest.raises(ChoiceError, match="label 'e'"):
        evaluate(e, {})
    with pytest.raises(ChoiceError, match="non-empty string label"):
        hnn.Choice([1, 2], label="")
    with pytest.raises(ChoiceError, match="lists a value twice"):
        hnn.Choice([1, 1], label="x")
    with pytest.raises(ChoiceError, match="has no values"):
        hnn.Choice([], label="x")


def test_sampling_is_seeded_and_valid():
    space = hwnas.spaces.create("mobilenet_v3")
    assert space.random_sample(7) == space.random_sample(np.random.default_rng(7))
    assert space.random_sample(1) != space.random_sample(2)
    for s in (space.random_sample(0), space.max_sample(), space.min_sample()):
        space.validate(s)
        assert json.loads(json.dumps(s)) == s
    assert all(v == max(space.choices()[k]) for k, v in space.max_sample().items())
    assert all(v == min(space.choices()[k]) for k, v in space.min_sample().items())


def test_validate_errors_name_the_label():
    space = hwnas.spaces.create("digits")
    s = space.random_sample(0)
    with pytest.raises(SampleError, match=r"unknown label\(s\) \['nope'\]"):
        space.validate({**s, "nope": 1})
    missing = dict(s)
    missing.pop("stem.width")
    with pytest.raises(SampleError, match=r"misses label\(s\) \['stem.width'\]"):
        space.validate(missing)
    with pytest.raises(SampleError, match=r"label 'stem.width' got value 7 \(int\), which is not one of its choices \[8, 16, 24\]"):
        space.validate({**s, "stem.width": 7})
    with pytest.raises(SampleError, match="must be a dict"):
        space.validate([1, 2])


def _brute_force_subnets(space) -> int:
    """Distinct exported architectures, by enumerating every sample (small spaces only)."""
    choices = space.choices()
    seen = set()
    for combo in itertools.product(*choices.values()):
        sub = hwnas.export(space, dict(zip(choices, combo)))
        seen.add(str(sub.graph) + repr([(n, tuple(p.shape)) for n, p in sub.named_parameters()]) +
                 repr(sorted(str(m) for m in sub.modules())))
    return len(seen)


def test_num_subnets_counts_distinct_architectures():
    class Small(hnn.Space):
        def __init__(self):
            super().__init__()
            w = hnn.Choice([4, 8], label="w")
            self.stem = hnn.Conv2d(3, w, 3)
            self.body = hnn.Repeat(lambda i: hnn.LayerChoice(
                {"a": hnn.Conv2d(w, w, hnn.Choice([1, 3], label=f"k{i}")), "b": nn.ReLU()}, label=f"op{i}"),
                depth=hnn.Choice([1, 2], label="d"))

        def forward(self, x):
            return self.body(self.stem(x))

    space = Small()
    # w: 2 x [d=1: (2 + 1)] + [d=2: (2 + 1)^2] = 2 x 12
    assert space.num_subnets() == 24 == _brute_force_subnets(space)
    assert UserCNN().num_subnets() == 3 * 3 * 2 * 3 * (1 + 2 + 4) * 2
    assert hwnas.spaces.create("mobilenet_v3").num_subnets() == (9 ** 2 + 9 ** 3 + 9 ** 4) ** 5


def test_conflicting_label_values_are_refused():
    class Bad(hnn.Space):
        def __init__(self):
            super().__init__()
            self.a = hnn.Conv2d(3, hnn.Choice([4, 8], label="w"), 3)
            self.b = hnn.Conv2d(hnn.Choice([4, 16], label="w"), 4, 3)

        def forward(self, x):
            return self.b(self.a(x))

    with pytest.raises(ChoiceError, match=r"label 'w' is used with values \[4, 8\] at 'a' and with \[4, 16\] at 'b'"):
        Bad().choices()


def test_registry():
    assert hwnas.spaces.list() == ["digits", "mobilenet_v2", "mobilenet_v3", "resnet"]
    with pytest.raises(ValueError, match="no space named 'nope'; available"):
        hwnas.spaces.create("nope")
    with pytest.raises(ValueError, match="already registered"):
        hwnas.spaces.register_space("digits")(lambda: None)
    with pytest.raises(TypeError, match=r"space 'mobilenet_v3' got unknown keyword argument\(s\) \['nope'\]; it "
                                        r"accepts \['num_classes', 'resolutions', .*help\(hwnas.spaces.mobilenet"):
        hwnas.spaces.create("mobilenet_v3", num_classes=10, nope=1)
    space = hwnas.spaces.create("mobilenet_v3", num_classes=10, resolutions=[160, 224])
    assert space.choices()["resolution"] == (160, 224) and space.classifier.out_features == 10


def test_registered_input_shapes_fit_their_spaces():
    """Each space runs on the input shape it was registered with (what the CLI and benchmarks feed it)."""
    assert hwnas.spaces.input_shape("digits") == (1, 1, 8, 8)
    for name in hwnas.spaces.list():
        space = hwnas.spaces.create(name).eval()
        with torch.no_grad():
            assert space(torch.zeros(hwnas.spaces.input_shape(name))).shape[0] == 1
    assert hwnas.spaces.input_shape("mypkg.spaces:Mine") == (1, 3, 224, 224)
    with pytest.raises(ValueError, match="no space named 'nope'; available"):
        hwnas.spaces.input_shape("nope")


def test_arch_json_round_trip(tmp_path):
    space = hwnas.spaces.create("digits").eval()
    s = space.random_sample(5)
    path = hwnas.save_arch(s, tmp_path / "arch.json")
    assert hwnas.load_arch(path) == s
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="should hold a JSON object"):
        hwnas.load_arch(tmp_path / "bad.json")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        hwnas.load_arch(tmp_path / "missing.json")
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(hwnas.apply_arch(space, s)(x), hwnas.export(space, s).eval()(x))


def test_dynamic_layers_match_their_exports():
    torch.manual_seed(0)
    conv = hnn.Conv2d(hnn.Choice([4, 8], label="ci"), hnn.Choice([6, 12], label="co"),
                      hnn.Choice([3, 5, 7], label="k"), stride=2, bias=True)
    bn = hnn.BatchNorm2d(hnn.Choice([6, 12], label="co"))
    lin = hnn.Linear(hnn.Choice([4, 8], label="ci"), 3)
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
    bn.eval()
    for ci, co, k in itertools.product([4, 8], [6, 12], [3, 5, 7]):
        s = {"ci": ci, "co": co, "k": k}
        x = torch.randn(2, ci, 9, 9)
        for layer, inp in ((conv, x), (bn, torch.randn(2, co, 5, 5)), (lin, torch.randn(2, ci))):
            layer._hwnas_sample = s
            with torch.no_grad():
                torch.testing.assert_close(layer(inp), layer.export(s).eval()(inp))
    # depthwise (groups = the channel choice) and grouped (groups = a fraction of it), with dilation
    c = hnn.Choice([8, 16], label="c")
    dw = hnn.Conv2d(c, c, hnn.Choice([3, 5], label="k"), groups=c, dilation=2)
    grouped = hnn.Conv2d(c, hnn.Choice([8, 16], label="c"), 3, stride=2, groups=hwnas.space.make_divisible(c / 4, 1))
    for cv, k in itertools.product([8, 16], [3, 5]):
        s = {"c": cv, "k": k}
        x = torch.randn(2, cv, 11, 11)
        for layer in (dw, grouped):
            layer._hwnas_sample = s
            sub = layer.export(s)
            assert type(sub) is nn.Conv2d and sub.groups == (cv if layer is dw else cv // 4)
            with torch.no_grad():
                torch.testing.assert_close(layer(x), sub(x))
