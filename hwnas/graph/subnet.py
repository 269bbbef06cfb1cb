"""Extract a subnet from a space as a plain ``nn.Module`` (re-exported as ``hwnas.export``)."""

from __future__ import annotations

import copy
from typing import Any

from torch import fx, nn

from hwnas.graph.trace import HwnasTracer, UntraceableError, _can_be_block, trace_module
from hwnas.space.choice import evaluate
from hwnas.space.modules import HwnasModule, LayerChoice, Repeat
from hwnas.space.space import collect_choices, validate_sample

__all__ = ["export"]


def export(space: nn.Module, sample: dict[str, Any]) -> nn.Module:
    """The subnet ``sample`` of ``space`` as a plain PyTorch model (no hwnas class left).

    Weights are copied from the supernet's active slices, so the result computes exactly what the
    supernet computes under ``sample``. Containers become ``torch.fx.GraphModule``s named after the
    original classes; layers become their ``torch.nn`` counterparts; layers that the forward pass
    never calls are left out. A tensor that several layers share (tied weights) is shared in the result too.
    """
    validate_sample(collect_choices(space), sample)
    out = _export(space, sample, "", {})
    out.train(space.training)
    return out


def _export(module: nn.Module, sample: dict[str, Any], path: str, memo: dict) -> nn.Module:
    # one deepcopy memo for the whole export: a parameter (or module) shared between layers stays shared
    if isinstance(module, Repeat):
        d = evaluate(module.depth, sample)
        return nn.Sequential(*[_export(b, sample, f"{path}.blocks.{i}", memo)
                               for i, b in enumerate(module.blocks[:d])])
    if isinstance(module, LayerChoice):
        i = module.index(evaluate(module.choice, sample))
        return _export(module.candidates[i], sample, f"{path}.candidates.{i}", memo)
    if isinstance(module, HwnasModule):
        return module.export(sample)
    if HwnasTracer().is_leaf_module(module, path):
        return copy.deepcopy(module, memo)
    try:
        graph = trace_module(module, path)
    except UntraceableError:
        if not _can_be_block(module):
            raise
        return copy.deepcopy(module, memo)  # profiled as a fixed block: copied whole
    root: dict[str, Any] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            root[node.target] = _export(module.get_submodule(node.target), sample,
                                        f"{path}.{node.target}" if path else node.target, memo)
        elif node.op == "get_attr":
            obj: Any = module
            for part in node.target.split("."):
                obj = getattr(obj, part)
            root[node.target] = copy.deepcopy(obj, memo)
    return fx.GraphModule(root, graph, class_name=type(module).__name__)
