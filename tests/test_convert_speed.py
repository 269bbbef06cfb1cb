"""What the convert speed-ups must not change: the tracer's table lookup of parameters and buffers gives the graph
that torch.fx's own search gives, the converted space's largest subnet still computes what the model computes
(its export against the model's own forward pass), and the garbage collector is left as it was found."""

from __future__ import annotations

import gc

import pytest
import torch
import torch.nn.functional as F
from conftest import num_params
from torch import fx, nn

import hwnas
from hwnas import zoo
from hwnas.convert import ConversionError
from hwnas.convert.sizes import nodes_in
from hwnas.graph.trace import HwnasTracer


class BNAct(nn.BatchNorm2d):
    """timm's ``BatchNormAct2d``: passes its own buffers and parameters to ``F.batch_norm``, then an activation."""

    def forward(self, x):
        x = F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.1, self.eps)
        return F.relu(x)


class Tied(nn.Module):
    """Parameters read as attributes, a tied weight (two names, one tensor), a buffer read and one passed to a
    function, a tensor constant that is no buffer."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.norm = BNAct(8)
        self.scale = nn.Parameter(torch.ones(1, 8, 1, 1))
        self.fc = nn.Linear(8, 8)
        self.head = nn.Linear(8, 8)
        self.tail = nn.Linear(8, 8, bias=False)
        self.tail.weight = self.head.weight  # tied
        self.register_buffer("shift", torch.zeros(1, 8, 1, 1))

    def forward(self, x):
        y = self.norm(self.conv(x)) * self.scale + self.shift
        y = torch.add(y, self.shift)
        y = y.mean((2, 3))
        return F.linear(self.head(self.fc(y)), self.tail.weight) + torch.tensor(0.5)


def _nodes(graph: fx.Graph) -> list[tuple]:
    return [(n.op, str(n.target) if isinstance(n.target, str) else n.target, n.name) for n in graph.nodes]


class _FxTracer(HwnasTracer):
    """The same tracer with torch.fx's own search of the root's tensors (the reference)."""

    def getattr(self, attr, attr_val, parameter_proxy_cache):
        return fx.Tracer.getattr(self, attr, attr_val, parameter_proxy_cache)

    def create_arg(self, a):
        return fx.Tracer.create_arg(self, a)


@pytest.mark.parametrize("buffers", [False, True])
def test_tracer_table_lookup_gives_torch_fx_graph(buffers):
    graphs = []
    for cls in (HwnasTracer, _FxTracer):  # a fresh model each (torch.fx stores the tensor constant on it)
        tracer = cls()
        tracer.proxy_buffer_attributes = buffers
        graphs.append(_nodes(tracer.trace(Tied().eval())))
    assert graphs[0] == graphs[1]
    targets = {t for op, t, _ in graphs[0] if op == "get_attr"}
    assert {"scale", "shift", "head.weight"} <= targets  # found by name, the tied weight by its first name
    assert "tail.weight" not in targets


def test_nodes_in_keeps_order_and_repeats():
    g = fx.Graph()
    a, b, c = (g.placeholder(n) for n in "abc")
    value = ([a, (b, {"k": c, "s": slice(a, None, b)})], 3, a)
    assert nodes_in(value) == [a, b, c, a, b, a]
    deep = a
    for _ in range(500):  # a deeply nested argument is walked without a list per level
        deep = [deep, b]
    assert nodes_in(deep) == [a] + [b] * 500


@pytest.mark.parametrize("make", [
    lambda: (Tied(), torch.randn(1, 3, 16, 16)),
    lambda: (zoo.create("densenet121", num_classes=10), torch.randn(1, 3, 32, 32)),
    lambda: (zoo.create("vit_tiny", num_classes=10, image_size=32), torch.randn(1, 3, 32, 32)),
], ids=["tied_bnact", "densenet121", "vit_tiny"])
def test_largest_subnet_equals_the_model(make):
    torch.manual_seed(0)
    model, x = make()
    model.eval()
    with torch.no_grad():
        want = model(x)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    space = hwnas.convert(model, x)
    assert space.choices(), "nothing searchable"
    subnet = hwnas.export(space, space.max_sample()).eval()
    with torch.no_grad():
        torch.testing.assert_close(subnet(x), want, rtol=1e-4, atol=1e-4)
    assert num_params(subnet) == num_params(model)
    for k, v in model.state_dict().items():  # the model itself is untouched
        assert torch.equal(v, before[k]), k


@pytest.mark.parametrize("enabled", [True, False])
def test_convert_leaves_the_garbage_collector_as_it_was(enabled):
    was = gc.isenabled()
    (gc.enable if enabled else gc.disable)()
    try:
        hwnas.convert(Tied().eval(), torch.randn(1, 3, 8, 8))
        assert gc.isenabled() is enabled
        with pytest.raises(ConversionError):
            hwnas.convert(Tied().eval(), torch.randn(1, 5, 8, 8))  # fails inside: the state still comes back
        assert gc.isenabled() is enabled
    finally:
        (gc.enable if was else gc.disable)()
