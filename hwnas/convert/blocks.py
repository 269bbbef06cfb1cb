"""Depth choices for converted models: find residual blocks that can be skipped, and cut them out.

A submodule is a *skippable block* when, in the traced graph, its nodes take one tensor from outside and
give one tensor back, that output has the input's shape and channel groups (for every width choice), and
an identity path (adds and shape-keeping activations only) leads from the input to the output: a
residual block. Skipping it leaves the residual stream (``x``) as in stochastic depth. Only the innermost
such blocks are used (a ResNet stage whose blocks are all residual is not skipped as a whole), and
consecutive skippable siblings chained output-to-input form one *run*: an :class:`hwnas.nn.Repeat` whose
depth choice ``0 .. len(run)`` keeps the first blocks, as Once-for-All's elastic depth does.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import fx

from hwnas.convert.analysis import Analyzer, residual_path

__all__ = ["Block", "find_runs"]


@dataclass
class Block:
    """A skippable block: its module path, nodes (in graph order), input node and output node."""

    path: str
    nodes: list[fx.Node]
    inp: fx.Node
    out: fx.Node


def _candidates(gm: fx.GraphModule) -> dict[str, list[fx.Node]]:
    leaves = {str(n.target) for n in gm.graph.nodes if n.op == "call_module"}
    found: dict[str, list[fx.Node]] = {}
    for n in gm.graph.nodes:
        for path in n.meta.get("nn_module_stack", {}):
            if path and path not in leaves:
                found.setdefault(path, []).append(n)
    return found


def _block(gm: fx.GraphModule, an: Analyzer, path: str, nodes: list[fx.Node], order: dict[fx.Node, int]) -> Block | None:
    idx = [order[n] for n in nodes]
    if max(idx) - min(idx) + 1 != len(nodes):  # not contiguous (called twice, or interleaved)
        return None
    inside = set(nodes)
    inputs = {a for n in nodes for a in n.all_input_nodes if a not in inside}
    outputs = [n for n in nodes if any(u not in inside for u in n.users)]
    if len(inputs) != 1 or len(outputs) != 1:
        return None
    (inp,), out = tuple(inputs), outputs[0]
    s_in, s_out = an.shapes.get(inp), an.shapes.get(out)
    if not isinstance(s_in, tuple) or s_in != s_out:
        return None
    a_in, a_out = an._tensor(inp), an._tensor(out)
    if not all(an.ch.same(x, y) for x, y in zip(a_in, a_out)):
        return None
    if not residual_path(inside, inp, out, gm):
        return None
    return Block(path, nodes, inp, out)


def find_runs(gm: fx.GraphModule, an: Analyzer) -> list[list[Block]]:
    """Runs of skippable blocks (see the module docstring), in graph order."""
    order = {n: i for i, n in enumerate(gm.graph.nodes)}
    blocks = [b for path, nodes in _candidates(gm).items()
              if (b := _block(gm, an, path, nodes, order)) is not None]
    paths = {b.path for b in blocks}
    innermost = [b for b in blocks if not any(p != b.path and p.startswith(b.path + ".") for p in paths)]
    innermost.sort(key=lambda b: order[b.nodes[0]])
    runs: list[list[Block]] = []
    for b in innermost:
        prev = runs[-1][-1] if runs else None
        if prev is not None and prev.out is b.inp and prev.path.rsplit(".", 1)[0] == b.path.rsplit(".", 1)[0] \
                and "." in b.path:
            runs[-1].append(b)
        else:
            runs.append([b])
    return runs
