"""Data movement: the nodes that copy or reshape tensors without computing (Concat, Transpose, Split, ...).

Kernel signatures leave data movement out (:data:`hwnas.profile.rules.MOVEMENT_OPS`), and a LUT charges its
time to the kernel that ran before it. A learned predictor keeps it apart instead: its time follows the
elements a node copies, whatever kernel precedes it (ShuffleNet's channel shuffle, DenseNet's and
SqueezeNet's concatenations). Training sums the movement nodes of each profiled model
(:func:`movement_of_nodes`); the whole-model calibration learns a cost per copied element and per movement node
(:func:`hwnas.predict.train.fit_calibration`); prediction counts the same two quantities in the model to
predict, from its ONNX graph (:func:`movement_of_nodes`) or from its traced op graph (:func:`movement_ops`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hwnas.graph.registry import numel
from hwnas.graph.trace import Op, OpGraph

__all__ = ["ONNX_MOVEMENT", "ONNX_COPYING", "movement_of_nodes", "movement_ops"]

#: ORT node types that move data (not kernels).
ONNX_MOVEMENT = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Concat", "Split", "Slice",
                           "Gather", "Identity", "Dropout", "Shape", "Constant", "ConstantOfShape", "Expand", "Cast",
                           "Tile", "Pad", "GatherElements", "GatherND", "ScatterND", "ScatterElements",
                           "DepthToSpace", "SpaceToDepth", "Trilu", "Range", "OneHot", "NonZero", "CastLike",
                           "Compress", "Size"})
#: Of those, the ones that copy their output (the others are views or are folded away).
ONNX_COPYING = frozenset({"Transpose", "Concat", "Split", "Slice", "Gather", "Expand", "Tile", "Pad", "GatherElements",
                          "GatherND", "ScatterND", "ScatterElements", "DepthToSpace", "SpaceToDepth", "Trilu",
                          "Compress"})
_FREE = frozenset({"Identity", "Dropout", "Shape", "Constant", "ConstantOfShape", "Size"})

# hwnas op type -> (copies its output, is a node ORT runs)
_TORCH = {"cat": (True, True), "stack": (True, True), "transpose": (True, True), "permute": (True, True),
          "split": (True, True), "expand": (True, True), "reshape": (False, True), "flatten": (False, True),
          "unsqueeze": (False, True), "squeeze": (False, True)}


def movement_of_nodes(nodes: Sequence[tuple[str, Sequence[Sequence[int]]]]) -> dict[str, float]:
    """``{"nodes", "copy_elements"}`` of ORT nodes given as ``(op_type, output shapes)``."""
    n, copied = 0, 0
    for op_type, outs in nodes:
        if op_type not in ONNX_MOVEMENT or op_type in _FREE:
            continue
        n += 1
        if op_type in ONNX_COPYING:
            for shape in outs:
                size = 1
                for d in shape:
                    size *= int(d)
                copied += size
    return {"nodes": float(n), "copy_elements": float(copied)}


def movement_ops(graph: OpGraph) -> list[tuple[Op, Any, int]]:
    """``(op, copied elements, 1 if ORT runs a node for it else 0)`` of each data-movement op of a traced graph;
    element counts are symbolic (LArrays over the choices) in a model space. Selecting a piece of a split
    (``getitem`` of its tuple) is free; slicing a tensor copies."""
    producers = {op.name: op for op in graph.ops}
    out = []
    for op in graph.ops:
        if op.op_type == "getitem":
            srcs = [producers.get(s) for s in op.input_ops if s is not None]
            if srcs and all(s is not None and s.op_type == "split" for s in srcs):
                continue
            if op.inputs:
                out.append((op, numel(op.out), 1))
            continue
        if op.op_type not in _TORCH:
            continue
        copies, node = _TORCH[op.op_type]
        size = numel(op.inputs[0]) if op.op_type == "split" else numel(op.out)
        out.append((op, size if copies else 0, int(node)))
    return out
