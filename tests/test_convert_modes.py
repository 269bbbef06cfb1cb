"""hwnas.convert's partial modes ``width+kernel`` and ``width+depth`` on zoo models: the labels each mode makes,
and subnets checked against independent references (fvcore's FLOPs and ``sum(p.numel())`` of the exported plain
subnet, its own forward pass against the space's, the original model for the largest subnet) and against the
structure the mode promises, read from the exported subnet's ``nn.Conv2d`` modules (``width+kernel`` keeps every
layer, ``width+depth`` keeps every kernel size)."""

from __future__ import annotations

import functools
from collections import Counter

import pytest
import torch
from conftest import fvcore_flops, num_params
from torch import nn

import hwnas
from hwnas import zoo

X = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
# the default suite converts each mode once (resnet18's 3/5/7 kernels, mobilenet_v2's inverted-residual depths);
# the other pairs run with -m slow (4-9 s each at load 7: fvcore traces every subnet)
KERNEL_MODELS = ["resnet18", pytest.param("mobilenet_v2", marks=pytest.mark.slow)]
DEPTH_MODELS = ["mobilenet_v2", pytest.param("resnet18", marks=pytest.mark.slow)]


@functools.cache
def _model(name: str) -> nn.Module:
    torch.manual_seed(0)
    return zoo.create(name, num_classes=10).eval()


@functools.cache
def _space(name: str, mode: str):
    return hwnas.convert(_model(name), X, mode=mode)


def _kinds(space) -> set[str]:
    return {label.rsplit(".", 1)[-1] for label in space.choices()}


def _convs(model: nn.Module) -> dict[str, nn.Conv2d]:
    """The model's convolutions by their path in the original model (an exported subnet nests it under ``net.``)."""
    return {n.removeprefix("net."): m for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}


def _check_subnets(name: str, mode: str) -> list[nn.Module]:
    space, model = _space(name, mode), _model(name)
    flops = hwnas.FlopsProfiler(space, X)
    params = hwnas.NumParamsProfiler(space, graph=flops.graph)
    samples = [space.max_sample(), space.min_sample(), space.random_sample(0)]
    subnets, counted = [], []
    for i, sample in enumerate(samples):
        subnet = hwnas.export(space, sample).eval()
        assert not any(type(m).__module__.startswith("hwnas") for m in subnet.modules())
        counted.append(fvcore_flops(subnet, X))
        assert flops.profile(sample) == counted[-1], f"{name} {mode}: FLOPs differ for sample {i}"
        assert params.profile(sample) == num_params(subnet), f"{name} {mode}: params differ for sample {i}"
        with torch.no_grad():
            got = subnet(X)
            torch.testing.assert_close(got, space.apply_arch(sample)(X), rtol=1e-4, atol=1e-5)
            if i == 0:  # the largest subnet is the original model
                torch.testing.assert_close(got, model(X), rtol=1e-4, atol=1e-5)
        subnets.append(subnet)
    # the smallest subnet is smaller than the largest, by fvcore and by numel
    assert counted[1] < counted[0] and num_params(subnets[1]) < num_params(subnets[0])
    return subnets


@pytest.mark.parametrize("name", KERNEL_MODELS)
def test_width_kernel_searches_widths_and_kernels_at_full_depth(name):
    space = _space(name, "width+kernel")
    assert _kinds(space) == {"width", "kernel"}
    original = _convs(_model(name))
    for subnet in _check_subnets(name, "width+kernel"):
        convs = _convs(subnet)
        assert convs.keys() == original.keys()  # every layer kept, at its place
        for path, got in convs.items():  # no kernel grows; stride and depthwise structure kept
            orig = original[path]
            assert got.kernel_size <= orig.kernel_size and got.stride == orig.stride, path
            assert (got.groups == got.in_channels) == (orig.groups == orig.in_channels), path
    smallest = _convs(hwnas.export(space, space.min_sample()))
    assert any(c.kernel_size < original[p].kernel_size for p, c in smallest.items())


@pytest.mark.parametrize("name", DEPTH_MODELS)
def test_width_depth_searches_widths_and_depths_with_the_original_kernels(name):
    space = _space(name, "width+depth")
    assert _kinds(space) == {"width", "depth"}
    original = _convs(_model(name))
    kernels = Counter((c.kernel_size, c.stride) for c in original.values())
    for subnet in _check_subnets(name, "width+depth"):  # blocks nest one level deeper: compare as multisets
        got = Counter((c.kernel_size, c.stride) for c in _convs(subnet).values())
        assert not got - kernels  # only the original layers' kernel sizes and strides, no more of each
    smallest = _convs(hwnas.export(space, space.min_sample()))
    assert len(smallest) < len(original)  # some blocks dropped
