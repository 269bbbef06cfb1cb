"""A space registered by a user with ``@hwnas.spaces.register_space`` goes the whole way by its name: created with
its keyword arguments, profiled, given a latency LUT (real ONNX Runtime measurements), searched under FLOPs and
latency constraints and exported. FLOPs and parameters are checked against fvcore and ``sum(p.numel())`` of the
exported subnets; the search's answer against an enumeration of the whole space with fvcore.
"""

from __future__ import annotations

import itertools

import pytest
import torch
from conftest import fvcore_flops, num_params
from torch import nn

import hwnas
import hwnas.nn as hnn
from hwnas.graph import build_graph
from hwnas.hw.build import build_lut, space_signatures
from hwnas.hw.kernels import active_kernels, map_kernels
from hwnas.hw.lut import LUT
from hwnas.search import Grid
from hwnas.spaces import registry

NAME = "user_tiny_test_space"
SHAPE = (1, 3, 16, 16)
FAST = dict(repeats_per_kernel=1, runs=3, warmup=1, progress=False, random_subnets=0, end_to_end_rounds=3,
            calibrate=0)


class TinyUserSpace(hnn.Space):
    """Stem width and kernel, a block repeated 1-2 times, the head: 2 x 2 x 2 = 8 distinct subnets."""

    def __init__(self, num_classes: int = 10, widths: tuple[int, ...] = (8, 16)):
        super().__init__()
        w = hnn.Choice(list(widths), label="w")
        self.stem = hnn.Conv2d(3, w, hnn.Choice([3, 5], label="k"), stride=2)
        self.bn = hnn.BatchNorm2d(w)
        self.blocks = hnn.Repeat(lambda i: nn.Sequential(hnn.Conv2d(w, w, 3), hnn.BatchNorm2d(w), nn.ReLU()),
                                 depth=hnn.Choice([1, 2], label="depth"))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = hnn.Linear(w, num_classes)

    def forward(self, x):
        return self.fc(self.pool(self.blocks(torch.relu(self.bn(self.stem(x))))).flatten(1))


@pytest.fixture(scope="module")
def registered():
    """NAME registered as a user would (the registry is restored afterwards)."""
    spaces, inputs = dict(registry._SPACES), dict(registry._INPUTS)

    @hwnas.spaces.register_space(NAME, input_shape=SHAPE)
    def tiny(num_classes: int = 10) -> TinyUserSpace:
        return TinyUserSpace(num_classes)

    yield tiny
    registry._SPACES.clear()
    registry._SPACES.update(spaces)
    registry._INPUTS.clear()
    registry._INPUTS.update(inputs)


def _all_samples(space) -> list[dict]:
    choices = space.choices()
    return [dict(zip(choices, values)) for values in itertools.product(*choices.values())]


def test_the_registry_knows_the_space_by_name(registered):
    assert NAME in hwnas.spaces.list() and hwnas.spaces.input_shape(NAME) == SHAPE
    space = hwnas.spaces.create(NAME, num_classes=4)
    assert isinstance(space, TinyUserSpace)
    with torch.no_grad():
        assert space.eval()(torch.randn(SHAPE)).shape == (1, 4)
    with pytest.raises(TypeError, match=r"unknown keyword argument\(s\) \['depth'\]; it accepts \['num_classes'\]"):
        hwnas.spaces.create(NAME, depth=3)
    with pytest.raises(ValueError, match=f"a space named '{NAME}' is already registered"):
        hwnas.spaces.register_space(NAME)(lambda: None)


def test_profiled_built_and_searched_end_to_end(registered, tmp_path):
    space = hwnas.spaces.create(NAME, num_classes=4).eval()
    x = torch.randn(hwnas.spaces.input_shape(NAME), generator=torch.Generator().manual_seed(0))
    samples = _all_samples(space)
    subnets = [hwnas.export(space, s).eval() for s in samples]
    flops = [fvcore_flops(m, x) for m in subnets]
    assert len(set(flops)) == len(samples) == 8  # every subnet differs, so the checks below can tell them apart

    # profiled: the table's range and every subnet's FLOPs and parameters, against fvcore and numel
    table = hwnas.profile(space, x, {"flops": "70%"}, verbose=False)
    assert table.metrics["flops"][0] == min(flops) and table.metrics["flops"][2] == max(flops)
    assert table.metrics["params"][0] == min(map(num_params, subnets))
    assert table.metrics["params"][2] == max(map(num_params, subnets))
    fp = hwnas.FlopsProfiler(space, x)
    pp = hwnas.NumParamsProfiler(space, graph=fp.graph)
    for s, m, f in zip(samples, subnets, flops):
        assert fp.profile(s) == f and pp.profile(s) == num_params(m)
        with torch.no_grad():
            torch.testing.assert_close(m(x), space.apply_arch(s)(x), rtol=1e-5, atol=1e-6)

    # built: a LUT measured for the space under its registered name covers its kernels
    path = tmp_path / f"{NAME}.json"
    build_lut(space, x, "cpu-ort-1t", path, space_name=NAME, **FAST)
    lut = LUT.load(path)
    assert [str(s).split("@", 1)[0] for s in lut.spaces] == [NAME]
    assert set(lut.entries) == space_signatures(space, x)
    latency = hwnas.LatencyProfiler(space, x, lut=lut, graph=fp.graph)
    lat = []
    for s, m in zip(samples, subnets):  # each subnet costs the LUT entries of its own kernels (traced plainly)
        g = build_graph(m, x)
        kernels = [str(sig) for _, sig in active_kernels(map_kernels(g), g, {})]
        lat.append(lut.overhead_ms + sum(lut.cost_ms(k) for k in kernels))
        assert latency.profile(s) == pytest.approx(lat[-1], rel=1e-12)

    # searched: every subnet visited once; the answer is the most FLOPs within both bounds, found by enumeration
    bound_f, bound_l = 0.7 * max(flops), sorted(lat)[-2]  # the latency bound excludes the slowest subnet
    result = hwnas.search(space, x, {"flops": "70%", "latency_ms": bound_l}, fp.profile,
                          strategy=Grid(), profilers={"latency_ms": latency}, max_trials=8,
                          progress=False)
    feasible = [i for i in range(8) if flops[i] <= bound_f and lat[i] <= bound_l]
    assert feasible and len(feasible) < 8
    best = max(feasible, key=lambda i: flops[i])
    assert result.best_sample == samples[best]
    assert fvcore_flops(result.subnet, x) == flops[best] and num_params(result.subnet) == num_params(subnets[best])
    assert not any(type(m).__module__.startswith("hwnas") for m in result.subnet.modules())
