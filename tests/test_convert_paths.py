"""Ops of a converted space keep the module paths of the original model (the converted net is one flat
``torch.fx.GraphModule``; its nodes carry their ``nn_module_stack``), so per-layer reports name real layers."""

from __future__ import annotations

import torch
from torch import nn

import hwnas


class _Attention(nn.Module):
    def __init__(self, d: int = 16):
        super().__init__()
        self.q, self.o = nn.Linear(d, d), nn.Linear(d, d)

    def forward(self, x):
        a = self.q(x)
        w = torch.matmul(a, a.transpose(1, 2)).softmax(-1)
        return self.o(w @ a)


class _Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(8, 16)
        self.blocks = nn.Sequential(_Attention(), _Attention())
        self.head = nn.Linear(16, 2)

    def forward(self, x):
        return self.head(self.blocks(self.inp(x)).mean(1))


def test_function_ops_of_a_converted_space_are_reported_at_their_original_modules():
    model, x = _Model().eval(), torch.randn(1, 5, 8)
    plain = hwnas.FlopsProfiler(model, x)
    want = sorted((op.op_type, op.path) for op in plain.graph.ops if op.op_type == "matmul")
    assert want == [("matmul", "blocks.0"), ("matmul", "blocks.0"), ("matmul", "blocks.1"), ("matmul", "blocks.1")]
    space = hwnas.convert(model, x)
    flops = hwnas.FlopsProfiler(space, x)
    got = sorted((op.op_type, op.path) for op in flops.graph.ops if op.op_type == "matmul")
    assert got == [(t, f"net.{p}") for t, p in want]
    def where(graph, prefix=""):
        return sorted((op.op_type, f"{prefix}.{op.path}" if op.path else prefix) if prefix else (op.op_type, op.path)
                      for op in graph.ops if op.op_type != "parameter")

    assert where(flops.graph) == where(plain.graph, "net")  # every op at its layer (mean at the model's root)
    sample = space.max_sample()
    assert flops.profile(sample) == plain.profile({})  # the same ops, counted once each
