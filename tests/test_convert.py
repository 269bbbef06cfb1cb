"""hwnas.convert on the hand-written zoo models and on small user models, against independent references:
fvcore's FLOPs of the exported subnet, sum(p.numel()) of the exported subnet, the original model's outputs,
ONNX Runtime, and the weights of the original model (importance order)."""

from __future__ import annotations

import functools
import itertools
import zlib

import numpy as np
import pytest
import torch
from conftest import fvcore_flops, num_params
from torch import nn

import hwnas
import hwnas.nn as hnn
from hwnas import zoo
from hwnas.convert import ConversionError, ConvertedFileError
from hwnas.graph import UntraceableError, build_graph
from hwnas.hw.build import space_signatures
from hwnas.hw.kernels import active_kernels, map_kernels
from hwnas.hw.lut import LUT
from hwnas.profile import register_cost_rule
from hwnas.search import Random
from hwnas.space.modules_extra import DynBatchNorm, DynConv2d, DynLayerNorm, DynLinear, DynMultiheadAttention

ZOO = ["resnet18", "resnet50", "mobilenet_v2", "mobilenet_v3_large", "efficientnet_b0", "regnet_x_400mf",
       "shufflenet_v2_x1_0", "densenet121", "squeezenet1_0", "vit_tiny"]
MODE = "width+kernel+depth"


def _x(seed: int = 1) -> torch.Tensor:
    return torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


@functools.cache
def _converted(name: str):
    torch.manual_seed(0)
    kw = {"image_size": 32} if name.startswith("vit") else {}
    model = zoo.create(name, num_classes=10, **kw).eval()
    space = hwnas.convert(model, _x(0), mode=MODE)
    flops = hwnas.FlopsProfiler(space, _x(0))
    params = hwnas.NumParamsProfiler(space, graph=flops.graph)
    return model, space, flops, params


def _check_samples(name: str, n_random: int, tmp_path, onnx: int = 1) -> None:
    model, space, flops, params = _converted(name)
    x = _x()
    samples = [space.max_sample(), space.min_sample()] + [space.random_sample(s) for s in range(n_random)]
    for i, sample in enumerate(samples):
        subnet = hwnas.export(space, sample).eval()
        assert not any(type(m).__module__.startswith("hwnas") for m in subnet.modules())
        assert flops.profile(sample) == fvcore_flops(subnet, x), f"{name}: FLOPs differ for sample {i}"
        assert params.profile(sample) == num_params(subnet), f"{name}: params differ for sample {i}"
        with torch.no_grad():
            got = subnet(x)
            torch.testing.assert_close(got, space.apply_arch(sample)(x), rtol=1e-4, atol=1e-5)
            if i == 0:  # the largest subnet is the original model
                torch.testing.assert_close(got, model(x), rtol=1e-4, atol=1e-5)
        if i < onnx:
            hwnas.to_onnx(subnet, x, tmp_path / f"{name}_{i}.onnx")  # runs ONNX Runtime and compares


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n == "densenet121" else n
                                  for n in ZOO])  # densenet121 (10 s): -m slow; its dense blocks in test_prune too
def test_zoo_model_converts_exactly(name, tmp_path):
    _check_samples(name, 5, tmp_path, onnx=3 if name in ("resnet18", "vit_tiny", "densenet121") else 2)


@pytest.mark.parametrize("name", ZOO)
def test_zoo_model_profile_table_and_search_agree_with_fvcore(name):
    """hwnas.profile's min/max and hwnas.search under {"flops": "60%"}, checked with fvcore on exported subnets."""
    _, space, flops, _ = _converted(name)
    x = _x(0)
    smallest, largest = (hwnas.export(space, s) for s in (space.min_sample(), space.max_sample()))
    max_flops = fvcore_flops(largest, x)
    table = hwnas.profile(space, x, {"flops": "60%"}, verbose=False)
    assert table.metrics["flops"][0] == fvcore_flops(smallest, x) and table.metrics["flops"][2] == max_flops
    assert table.metrics["params"][0] == num_params(smallest) and table.metrics["params"][2] == num_params(largest)
    (row,) = table.constraints
    assert row.bound == pytest.approx(0.6 * max_flops) and row.satisfiable
    result = hwnas.search(space, x, {"flops": "60%"}, flops.profile, strategy=Random(), max_trials=8,
                          progress=False)  # the score prefers the most FLOPs, so the best sits near the bound
    assert fvcore_flops(result.subnet, x) <= 0.6 * max_flops
    assert fvcore_flops(result.subnet, x) == flops.profile(result.best_sample)


@pytest.mark.parametrize("name", ZOO)
def test_zoo_model_latency_is_the_sum_of_its_subnets_kernels(name):
    """LatencyProfiler on a converted space: each sample costs what the kernels of its exported subnet (traced
    as a plain model) cost in a LUT, here with a made-up cost per kernel signature."""
    _, space, flops, _ = _converted(name)
    x = _x(0)
    lut = LUT.new("cpu-ort-1t")
    for sig in space_signatures(space, x):
        lut.add(sig, (zlib.crc32(sig.encode()) % 997 + 1) / 1000)
    latency = hwnas.LatencyProfiler(space, x, lut=lut, graph=flops.graph)
    for sample in [space.max_sample(), space.min_sample(), space.random_sample(3)]:
        subnet = build_graph(hwnas.export(space, sample).eval(), x)
        kernels = [str(sig) for _, sig in active_kernels(map_kernels(subnet), subnet, {})]
        assert all(k in lut for k in kernels)
        assert latency.profile(sample) == pytest.approx(lut.overhead_ms + sum(lut.cost_ms(k) for k in kernels),
                                                        rel=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("name", ZOO)
def test_zoo_model_converts_exactly_20_samples(name, tmp_path):
    _check_samples(name, 20, tmp_path, onnx=22)


def test_what_is_found_and_fixed():
    _, resnet, _, _ = _converted("resnet18")
    c = resnet.choices()
    assert c["stem.0.0.width"] == (16, 32, 48, 64)  # stem + stage-1 residual group
    assert c["stem.0.0.kernel"] == (3, 5, 7) and c["stages.0.0-1.depth"] == (0, 1, 2)
    assert [g.fixed for g in resnet.conversion.fixed_groups] == ["the model's output (fc)"]

    _, shuffle, _, _ = _converted("shufflenet_v2_x1_0")
    text = shuffle.summary()
    assert "channel shuffle" in text and "splits or mixes the channel axis" in text
    assert shuffle.choices()["stem.0.0.width"] == (6, 12, 18, 24)

    _, dense, _, _ = _converted("densenet121")
    growth = [g for g in dense.conversion.searched_groups if g.label == "features.4.layers.0.layers.5.width"]
    assert len(growth) == 5 and growth[0].choices == [8, 16, 24, 32]  # one growth decision per dense block

    _, regnet, _, _ = _converted("regnet_x_400mf")
    inner = [g for g in regnet.conversion.searched_groups if g.block == 16]
    assert inner and all(v % 16 == 0 for g in inner for v in g.choices)

    _, vit, _, _ = _converted("vit_tiny")
    assert vit.choices()["patch_embed.width"] == (48, 96, 144, 192)  # multiples of the 3 heads
    assert vit.choices()["blocks.0-11.depth"] == tuple(range(13))
    assert "blocks.0.mlp.0.width" in vit.choices()


def test_importance_order_keeps_the_strongest_filters():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 1)).eval()
    with torch.no_grad():
        model[0].weight.mul_(torch.linspace(0.1, 2.0, 8)[torch.randperm(8)].view(8, 1, 1, 1))
        model[1].running_mean.uniform_(-1, 1)
    space = hwnas.convert(model, torch.randn(1, 3, 8, 8), mode="width")
    (group,) = space.conversion.searched_groups
    l1 = model[0].weight.abs().sum((1, 2, 3))
    assert group.permutation == torch.argsort(l1, descending=True).tolist()
    sub = hwnas.export(space, {group.label: 4})
    keep = group.permutation[:4]
    layer = sub.get_submodule
    torch.testing.assert_close(layer("net.0").weight, model[0].weight[keep])  # the 4 strongest filters, in order
    torch.testing.assert_close(layer("net.1").running_mean, model[1].running_mean[keep])
    torch.testing.assert_close(layer("net.3").weight, model[3].weight[:, keep])


class _Custom(nn.Module):
    """Layer scale, GroupNorm, concat, a flatten of 4x4 maps into a Linear, a shared module."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(3, 8, 3, padding=1)
        self.d = nn.Conv2d(3, 8, 3, padding=1)
        self.scale = nn.Parameter(torch.rand(8, 1, 1))
        self.gn = nn.GroupNorm(2, 8)
        self.c = nn.Conv2d(16, 8, 1)
        self.shared = nn.Conv2d(8, 8, 1)
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.fc = nn.Linear(8 * 16, 5)

    def forward(self, x):
        y = self.c(torch.cat([self.a(x) * self.scale, self.b(x)], 1)) + self.gn(self.d(x))
        y = self.shared(self.shared(y))
        return self.fc(torch.flatten(self.pool(y), 1))


def test_custom_model_with_concat_params_flatten_and_unknown_layers(tmp_path):
    torch.manual_seed(0)
    model = _Custom().eval()
    x = torch.randn(2, 3, 8, 8)
    space = hwnas.convert(model, x, channel_divisor=2)
    text = space.summary()
    assert "called 2 times" in text and "layer type unknown" not in text  # GroupNorm is a known layer
    assert set(space.choices()) == {"a.width", "b.width"}  # concatenated into c, a scaled by a parameter
    flops = hwnas.FlopsProfiler(space, x)
    params = hwnas.NumParamsProfiler(space, graph=flops.graph)
    for sample in [space.max_sample(), space.min_sample(), space.random_sample(0)]:
        subnet = hwnas.export(space, sample).eval()
        assert flops.profile(sample) == fvcore_flops(subnet, x)
        assert params.profile(sample) == num_params(subnet)
    with torch.no_grad():
        torch.testing.assert_close(space(x), model(x))

    flat = hwnas.convert(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Flatten(), nn.Linear(8 * 64, 3)).eval(), x)
    (group,) = flat.conversion.searched_groups
    sub = hwnas.export(flat, {group.label: 2})
    assert sub.get_submodule("net.2").in_features == 2 * 64  # each channel spans its 8x8 features in the Linear


class _Attention(nn.Module):
    """Attention written by hand (timm style): the head size is computed from the input's width."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (torch.matmul(q, k.transpose(-2, -1)) * (c // self.heads) ** -0.5).softmax(-1)
        return self.proj(torch.matmul(attn, v).transpose(1, 2).reshape(b, n, c))


class _HandWrittenViT(nn.Module):
    def __init__(self, dim: int = 32):
        super().__init__()
        self.embed = nn.Linear(12, dim)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = _Attention(dim, 4)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        self.head = nn.Linear(dim, 3)

    def forward(self, x):
        x = self.embed(x)
        x = x + self.attn(self.norm1(x))
        x = x + self.mlp(self.norm2(x))
        return self.head(x.mean(1))


class _SizeViews(nn.Module):
    """Squeeze-excite reading sizes with x.size() (searchable) and a tensor created with a channel count."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 24, 3, padding=1)
        self.fc1, self.fc2 = nn.Linear(16, 4), nn.Linear(4, 16)
        self.c3, self.fc = nn.Conv2d(24, 8, 1), nn.Linear(8, 4)

    def forward(self, x):
        x = torch.relu(self.c1(x))
        b, c, _, _ = x.size()
        gate = torch.sigmoid(self.fc2(torch.relu(self.fc1(x.mean((2, 3)).view(b, c))))).view(b, c, 1, 1)
        y = self.c2(x * gate)
        y = y + y.new_zeros(y.shape[0], y.shape[1], 1, 1)
        return self.fc(self.c3(y).mean((2, 3)))


def test_sizes_computed_from_channel_counts_keep_every_subnet_valid():
    torch.manual_seed(0)
    model, x = _HandWrittenViT().eval(), torch.randn(2, 7, 12)
    space = hwnas.convert(model, x, mode="width+kernel+depth")
    # the head size is computed as c // heads: the per-head width is searched (the head count stays), and the
    # reshapes' computed sizes are written as -1 so the residual width is free too
    assert set(space.choices()) == {"embed.width", "attn.qkv.head_width", "mlp.0.width"}
    assert space.choices()["attn.qkv.head_width"] == (2, 4, 6, 8)
    flops = hwnas.FlopsProfiler(space, x)
    params = hwnas.NumParamsProfiler(space, graph=flops.graph)
    for sample in [space.max_sample(), space.min_sample(), space.random_sample(0)]:
        subnet = hwnas.export(space, sample).eval()
        assert flops.profile(sample) == fvcore_flops(subnet, x) and params.profile(sample) == num_params(subnet)
        with torch.no_grad():
            torch.testing.assert_close(subnet(x), space.apply_arch(sample)(x))
    with torch.no_grad():
        torch.testing.assert_close(space.apply_arch(space.max_sample())(x), model(x))

    model, x = _SizeViews().eval(), torch.randn(2, 3, 8, 8)
    space = hwnas.convert(model, x)
    assert {"c1.width", "fc1.width", "c3.width"} == set(space.choices())  # .view(b, c) couples the gate to x
    assert "24 channels: its channel count is used as a size (an argument of new_zeros)" in space.summary()
    for sample in [space.max_sample(), space.min_sample(), space.random_sample(0)]:
        with torch.no_grad():
            torch.testing.assert_close(hwnas.export(space, sample).eval()(x), space.apply_arch(sample)(x))
    with torch.no_grad():
        torch.testing.assert_close(space.apply_arch(space.max_sample())(x), model(x))


@hwnas.graph.register_leaf
class _Gate(nn.Module):
    """A custom layer type that a user made a torch.fx leaf (with a shape rule and a FLOP rule)."""

    def __init__(self, channels: int):
        super().__init__()
        self.logit = nn.Parameter(torch.randn(channels, 1, 1))

    def forward(self, x):
        return x * torch.sigmoid(self.logit)


@hwnas.graph.register_shape_rule(_Gate, op="test_convert_gate")
def _gate_shape(call):
    return call.tensor(0)


@register_cost_rule("flops", "test_convert_gate")
def _gate_flops(op):
    return 0  # elementwise: fvcore counts it as 0 too


class _Roll(nn.Module):
    """A custom layer type traced through, calling a function hwnas.convert does not know."""

    def forward(self, x):
        return torch.roll(x, 1, dims=1)


class _CustomTypes(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.gate, self.c2 = nn.Conv2d(3, 8, 3, padding=1), _Gate(8), nn.Conv2d(8, 16, 3, padding=1)
        self.roll, self.c3, self.c4 = _Roll(), nn.Conv2d(16, 16, 1), nn.Conv2d(16, 4, 1)

    def forward(self, x):
        x = self.c2(torch.relu(self.gate(self.c1(x))))
        return self.c4(torch.relu(self.c3(self.roll(x)))).mean((2, 3))


def test_unknown_custom_layer_types_are_kept_fixed_and_reported():
    torch.manual_seed(0)
    model, x = _CustomTypes().eval(), torch.randn(2, 3, 8, 8)
    space = hwnas.convert(model, x, mode="width+kernel+depth")
    text = space.summary()
    assert "gate (_Gate): layer type unknown to hwnas.convert (kept as it is)" in text
    assert "roll:roll (roll): function unknown to hwnas.convert" in text
    fixed = {layer: g.fixed for g in space.conversion.fixed_groups for layer in g.layers}
    assert fixed["c1"].startswith("layer type unknown") and fixed["c2"].startswith("function unknown")
    assert set(space.choices()) == {"c3.width", "c1.kernel", "c2.kernel"}
    for sample in [space.max_sample(), space.min_sample(), space.random_sample(0)]:
        with torch.no_grad():
            torch.testing.assert_close(hwnas.export(space, sample).eval()(x), space.apply_arch(sample)(x))
    with torch.no_grad():
        torch.testing.assert_close(space.apply_arch(space.max_sample())(x), model(x))

    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), _Gate(8), nn.ReLU(), nn.Conv2d(8, 4, 1)).eval()
    space = hwnas.convert(model, x)  # with a leaf's rules, every profiler counts it exactly
    flops = hwnas.FlopsProfiler(space, x)
    params = hwnas.NumParamsProfiler(space, graph=flops.graph)
    for sample in [space.max_sample(), space.min_sample()]:
        subnet = hwnas.export(space, sample).eval()
        assert flops.profile(sample) == fvcore_flops(subnet, x) and params.profile(sample) == num_params(subnet)


class _Residual(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c)

    def forward(self, x):
        return x + torch.relu(self.bn(self.conv(x)))


def test_expectation_on_a_converted_space_is_the_weighted_mean_over_all_subnets():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), _Residual(8), _Residual(8), nn.Conv2d(8, 6, 1),
                          nn.Flatten(), nn.Linear(6 * 64, 3)).eval()
    x = torch.randn(1, 3, 8, 8)
    space = hwnas.convert(model, x, mode="width+kernel+depth", channel_ratios=(0.5, 1.0))
    choices = space.choices()
    assert len(choices) == 7  # two widths, three kernels, two depths
    flops = hwnas.FlopsProfiler(space, x)
    params = hwnas.NumParamsProfiler(space, graph=flops.graph)
    rng = np.random.default_rng(0)
    probs = {k: rng.dirichlet(np.ones(len(v))) for k, v in choices.items()}
    want_flops = want_params = 0.0
    for cell in itertools.product(*(range(len(v)) for v in choices.values())):
        sample = {k: v[i] for (k, v), i in zip(choices.items(), cell)}
        weight = float(np.prod([probs[k][i] for k, i in zip(choices, cell)]))
        subnet = hwnas.export(space, sample)
        want_flops += weight * fvcore_flops(subnet, x)
        want_params += weight * num_params(subnet)
    assert float(flops.expectation(probs)) == pytest.approx(want_flops, rel=1e-12)
    assert float(params.expectation(probs)) == pytest.approx(want_params, rel=1e-12)


def test_untraceable_model_names_the_line():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, x):
            if x.sum() > 0:
                return self.conv(x)
            return x

    with pytest.raises(UntraceableError, match=r"could not trace <root> \(Branchy\) at .*test_convert.py:\d+: "
                                               r"`if x.sum\(\) > 0:`"):
        hwnas.convert(Branchy(), torch.randn(1, 3, 8, 8))


def test_argument_errors_say_what_and_how():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU())
    with pytest.raises(ConversionError, match=r"unknown mode 'depth'; expected one of \['width'"):
        hwnas.convert(model, torch.randn(1, 3, 8, 8), mode="depth")
    with pytest.raises(ConversionError, match=r"channel_ratios must be numbers in \(0, 1\], got \[0.5, 2.0\]"):
        hwnas.convert(model, torch.randn(1, 3, 8, 8), channel_ratios=(0.5, 2))
    with pytest.raises(ConversionError, match="dummy_input\\[0\\] must be a torch.Tensor, got list"):
        hwnas.convert(model, [[1.0]])
    with pytest.raises(ConversionError, match=r"fails on the dummy input of shape\(s\) \[\(1, 5, 8, 8\)\]"):
        hwnas.convert(model, torch.randn(1, 5, 8, 8))


def test_save_restore_round_trip_and_refusals(tmp_path):
    _, space, _, _ = _converted("mobilenet_v2")
    space.search_state["best"] = space.random_sample(4)
    path = hwnas.save(space, tmp_path / "space.pt")
    again = hwnas.restore(zoo.create("mobilenet_v2", num_classes=10), path)
    assert again.search_state == {"best": space.random_sample(4)}
    assert again.conversion.to_dict() == space.conversion.to_dict()
    sample = space.random_sample(9)
    with torch.no_grad():
        torch.testing.assert_close(again.eval().apply_arch(sample)(_x()), space.apply_arch(sample)(_x()))

    with pytest.raises(ConvertedFileError, match=r"does not convert to the space saved .*saved 10, got 7"):
        hwnas.restore(zoo.create("mobilenet_v2", num_classes=7), path)
    with pytest.raises(ConvertedFileError, match="holds a converted MobileNetV2, but the model given is a ResNet"):
        hwnas.restore(zoo.create("resnet18", num_classes=10), path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    (tmp_path / "tampered.pt").write_bytes(bytes(data))
    with pytest.raises(ConvertedFileError):
        hwnas.restore(zoo.create("mobilenet_v2", num_classes=10), tmp_path / "tampered.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    with pytest.raises(ConvertedFileError, match="expected format 'hwnas.converted_space'"):
        hwnas.restore(zoo.create("mobilenet_v2", num_classes=10), tmp_path / "foreign.pt")
    torch.save({"evil": _Custom()}, tmp_path / "pickle.pt")
    with pytest.raises(ConvertedFileError, match="refused on purpose"):
        hwnas.restore(zoo.create("mobilenet_v2", num_classes=10), tmp_path / "pickle.pt")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        hwnas.restore(zoo.create("mobilenet_v2", num_classes=10), tmp_path / "missing.pt")


def test_dynamic_layers_match_their_exports():
    torch.manual_seed(0)
    w, k = hnn.Choice([2, 4], label="w"), hnn.Choice([1, 3], label="k")
    conv = DynConv2d(nn.Conv2d(6, 4, 3, padding=1, bias=True), [(w, 4, 1), (2, 2, 1)], [(w, 4, 1)], k)
    dw = DynConv2d(nn.Conv2d(4, 4, 3, padding=1, groups=4), [(w, 4, 1)], [(w, 4, 1)], k, "depthwise")
    bn = DynBatchNorm(nn.BatchNorm2d(6), [(w, 4, 1), (2, 2, 1)])
    lin = DynLinear(nn.Linear(8, 3), [(w, 4, 2)], [(3, 3, 1)])
    ln = DynLayerNorm(nn.LayerNorm(4), [(w, 4, 1)])
    mha = DynMultiheadAttention(nn.MultiheadAttention(4, 2, batch_first=True), [(w, 4, 1)])
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
    for s in ({"w": 2, "k": 1}, {"w": 4, "k": 3}, {"w": 2, "k": 3}):
        c = s["w"]
        cases = [(conv, (torch.randn(2, c + 2, 5, 5),)), (dw, (torch.randn(2, c, 5, 5),)),
                 (bn.eval(), (torch.randn(2, c + 2, 3, 3),)), (lin, (torch.randn(2, 2 * c),)),
                 (ln, (torch.randn(2, 3, c),)), (mha.eval(), (torch.randn(2, 3, c),) * 3)]
        for layer, args in cases:
            layer._hwnas_sample = s
            with torch.no_grad():
                got, want = layer(*args), layer.export(s).eval()(*args)
            got, want = (got[0], want[0]) if isinstance(got, tuple) else (got, want)
            torch.testing.assert_close(got, want)
    assert np.array_equal(DynConv2d(nn.Conv2d(3, 4, 5, padding=2), [(3, 3, 1)], [(4, 4, 1)],
                                    hnn.Choice([3, 5], label="k")).export({"k": 3}).weight.shape, (4, 3, 3, 3))
