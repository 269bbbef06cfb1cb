"""Whole-model prediction: ``predict_latency(model or ONNX file)`` -> total ms and a per-layer table.

A PyTorch model is traced once (:func:`hwnas.graph.trace.build_graph`) and grouped into kernels by the LUT's
own fusion rules (:func:`hwnas.hw.kernels.map_kernels`). An ONNX file is read the way ONNX Runtime runs it:
the graph ORT really runs on the device (:func:`hwnas.hw.profiling.optimized_graph`: its NCHWc convolutions
absorb activations and residual adds), with shapes and attributes from the same graph at ORT's
``"extended"`` level (standard layout) and ONNX shape inference of the original file. So no second set of
fusion rules is written: each node ORT runs becomes one kernel signature (layout reorders and data movement
such as Reshape, Concat or Transpose are not kernels, as in the torch mapping, where their time is charged to
the kernel before them). Each kernel is predicted by the device's
:class:`~hwnas.predict.predictor.LatencyPredictor`, and the model's fixed overhead is added.

Example:
    >>> import torch, hwnas
    >>> from hwnas import zoo
    >>> rec = hwnas.predict_latency(zoo.create("mobilenet_v2"), torch.randn(1, 3, 224, 224),
    ...                             device="cpu-ort-1t")                               # doctest: +SKIP
    >>> rec.total_ms, rec.layers.columns.tolist()                                      # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hwnas.graph.trace import build_graph
from hwnas.hw.device import Device, get_device
from hwnas.hw.kernels import KernelSignature, active_kernels, map_kernels
from hwnas.predict.features import family_of, model_weight_bytes
from hwnas.predict.movement import movement_of_nodes, movement_ops
from hwnas.predict.onnx_graph import (
    ELTWISE_NAMES,
    POOL_NAMES,
    ShapeError,
    UnknownOpError,
    _conv_out,
    _matmul,
    attr,
    bind_inputs,
    infer_original,
    matmul_operands,
    node_class,
    propagate,
)
from hwnas.predict.predictor import LatencyPredictor, load_predictor

__all__ = ["ModelLatency", "predict_latency", "onnx_kernels", "UnseenKernelWarning"]

log = logging.getLogger(__name__)

FUSED_ACTS = {"Relu": "relu", "Clip": "clip", "HardSigmoid": "hardsigmoid", "Sigmoid": "sigmoid", "Tanh": "tanh",
              "LeakyRelu": "leaky_relu", "HardSwish": "hardswish"}

class UnseenKernelWarning(UserWarning):
    """Some kernels are of a family the predictor was not trained on (predicted from sizes only)."""


@dataclass
class ModelLatency:
    """Predicted latency of one model on one device.

    Attributes:
        total_ms: predicted end-to-end milliseconds (kernels + overhead).
        overhead_ms: the fixed per-model part (session run, input/output).
        layers: one row per kernel in execution order: ``layer``, ``kind``, ``family``, ``signature``,
            ``predicted_ms`` (calibrated), ``share`` (of the total), ``regressor`` (``"fallback"`` where the
            predictor had no model for the kernel's family); then one ``(data movement)`` row for the model's
            Concat/Transpose/Split/Reshape/... nodes, if any (see :mod:`hwnas.predict.movement`).
        device: the device name.
        source: ``"torch"``, ``"torch (via ONNX)"`` (a module with ops beyond a CNN's, exported and read as an
            ONNX file) or ``"onnx"``.
    """

    total_ms: float
    overhead_ms: float
    layers: pd.DataFrame
    device: str
    source: str
    notes: list[str] = field(default_factory=list)

    def to_csv(self, path: str | os.PathLike) -> Path:
        """Write the per-layer table plus ``(model overhead)`` and ``(total)`` rows."""
        extra = pd.DataFrame([{"layer": "(model overhead)", "kind": "overhead", "predicted_ms": self.overhead_ms,
                               "share": self.overhead_ms / self.total_ms},
                              {"layer": "(total)", "kind": "total", "predicted_ms": self.total_ms, "share": 1.0}])
        pd.concat([self.layers, extra], ignore_index=True).to_csv(path, index=False)
        return Path(path)


def _resolve_predictor(predictor: Any, device: str | Device) -> LatencyPredictor:
    dev = get_device(device)
    if predictor is None:
        return load_predictor(device=dev)
    if isinstance(predictor, (str, os.PathLike)):
        return load_predictor(predictor, device=dev)
    if isinstance(predictor, LatencyPredictor):
        if predictor.device.__dict__ != dev.__dict__:
            from hwnas.predict.predictor import PredictorError

            raise PredictorError(f"the predictor is for device {predictor.device.name!r}, not {dev.name!r}; pass the "
                                 f"predictor of {dev.name!r} or device={predictor.device.name!r}.")
        return predictor
    raise TypeError(f"predictor must be a LatencyPredictor, the path of a predictor file or None (the shipped one), "
                    f"got {type(predictor).__name__}.")


def predict_latency(model_or_onnx_path: Any, dummy_input: Any = None, device: str | Device = "cpu-ort-1t",
                    predictor: LatencyPredictor | str | os.PathLike | None = None) -> ModelLatency:
    """Predict the latency of a PyTorch model or an ONNX file on ``device``, without running it.

    Args:
        model_or_onnx_path: a plain ``nn.Module`` (a model space must be exported to a subnet first) or the path
            of an ``.onnx`` file.
        dummy_input: an input tensor (required for a module; for an ONNX file, only when its input shape is
            not static).
        device: the device to predict for.
        predictor: a :class:`LatencyPredictor`, the path of a predictor file, or ``None`` for the shipped
            predictor of ``device`` (named by it, see :mod:`hwnas.artifacts`).

    Returns:
        A :class:`ModelLatency` (total, overhead, per-layer DataFrame).
    """
    pred = _resolve_predictor(predictor, device)
    movement: dict[str, float] = {}
    if isinstance(model_or_onnx_path, (str, os.PathLike)):
        rows = onnx_kernels(model_or_onnx_path, pred.device, dummy_input, movement=movement)
        source = "onnx"
    else:
        import torch

        if not isinstance(model_or_onnx_path, torch.nn.Module):
            raise TypeError(f"predict_latency expects a torch.nn.Module or the path of an .onnx file, got "
                            f"{type(model_or_onnx_path).__name__}.")
        if dummy_input is None:
            raise ValueError(f"predict_latency({type(model_or_onnx_path).__name__}): dummy_input is required for a "
                             "torch module (its shapes decide the kernels); pass e.g. torch.randn(1, 3, 224, 224).")
        rows = _torch_rows(model_or_onnx_path, dummy_input, movement)
        source = "torch"
        if rows is None:  # attention, normalisations, ...: read as ONNX Runtime runs it
            with tempfile.TemporaryDirectory(prefix="hwnas-predict-") as tmp:
                from hwnas.hw.session import export_onnx

                path = export_onnx(model_or_onnx_path, dummy_input, Path(tmp) / "model.onnx")
                rows = onnx_kernels(path, pred.device, dummy_input, movement=movement)
            source = "torch (via ONNX)"
    sigs = [r["signature"] for r in rows]
    notes = []
    if pred.speed:
        notes.append(f"times scaled by the speed factor {pred.speed_factor:.4f} (the machine now against the "
                     f"predictor's training session, speed check of {pred.speed.get('measured', '?')})")
    if sigs:
        details = pred.kernels.predict_details(sigs, context=model_weight_bytes(sigs))
        costs = pred.calibrate(details["ms"].to_numpy(), sigs)
        regressor = details["model"].to_list()
    else:
        costs, regressor = np.zeros(0), []
    df = pd.DataFrame(rows, columns=["layer", "kind", "signature"])
    df.insert(2, "family", [family_of(s) for s in sigs])
    df["predicted_ms"] = costs
    move_ms = pred.movement_ms(movement.get("copy_elements", 0.0), movement.get("nodes", 0.0))
    if movement.get("nodes"):
        df.loc[len(df)] = {"layer": "(data movement)", "kind": "movement", "family": "movement",
                           "signature": f"nodes={int(movement['nodes'])}|copied={int(movement['copy_elements'])}",
                           "predicted_ms": move_ms}
        regressor = [*regressor, "calibration"]
    total, overhead = float(df["predicted_ms"].sum()) + pred.overhead_ms, pred.overhead_ms
    if pred.speed.get("curve"):  # the check's factor for a model of this size instead of its median factor
        adjust = pred.at_model_speed(total) / total
        df["predicted_ms"] *= adjust
        notes.append(f"the speed check's size term gives {pred.speed_factor * adjust:.4f} for a model of "
                     f"{total / pred.speed_factor:.3g} ms at training speed")
        total, overhead = total * adjust, overhead * adjust
    df["share"] = df["predicted_ms"] / total
    df["regressor"] = regressor
    fallback = sorted({s.split("|", 1)[0] for s, r in zip(sigs, regressor) if r == "fallback"})
    if fallback:
        msg = (f"{sum(r == 'fallback' for r in regressor)} kernels of op(s) {fallback} are of a family the predictor "
               f"was not trained on; they were predicted from their sizes only (column regressor='fallback'). Train a "
               "predictor whose training models include them for accurate figures.")
        notes.append(msg)
        warnings.warn(msg, UnseenKernelWarning, stacklevel=2)
    return ModelLatency(total, overhead, df, pred.device.name, source, notes)


#: Kernel ops of a traced torch model that the torch mapping gives the same signatures as ONNX Runtime's graph;
#: a model with any other op (attention, LayerNorm, GELU, matmul, ...) is exported and read as ONNX instead.
TORCH_MAPPED = frozenset({"conv", "linear", "max_pool", "avg_pool", "adaptive_avg_pool", "adaptive_max_pool", "mean",
                          "sum", "amax", "add", "sub", "mul", "div", "relu", "relu6", "clamp", "hardswish",
                          "hardsigmoid", "sigmoid", "silu", "tanh", "leaky_relu", "batch_norm"})


def _torch_rows(model: Any, dummy_input: Any, movement: dict[str, float]) -> list[dict[str, str]] | None:
    """Kernel rows of a CNN from its traced graph (the LUT's mapping), or ``None`` for a model with other ops."""
    try:
        graph = build_graph(model, dummy_input)
    except Exception as e:  # an op the tracer has no rule for: ONNX Runtime's graph will tell
        log.info("tracing %s failed (%s); reading its ONNX export instead", type(model).__name__, e)
        return None
    if graph.choices:
        raise ValueError(f"predict_latency: {type(model).__name__} is a model space with {len(graph.choices)} choices "
                         f"(e.g. {next(iter(graph.choices))!r}); predict one subnet (hwnas.export(space, sample)) or "
                         "use hwnas.LatencyProfiler(space, x, predictor=...).")
    kernels = active_kernels(map_kernels(graph), graph, {})
    if any(k.kind not in TORCH_MAPPED for k, _ in kernels):
        return None
    moves = movement_ops(graph)
    movement.update({"nodes": float(sum(n for _, _, n in moves)), "copy_elements": float(sum(c for _, c, _ in moves))})
    return [{"layer": k.name, "kind": k.kind if k.kind not in ("conv", "linear") else f"{k.kind}+{k.act}",
             "signature": str(sig)} for k, sig in kernels]


# ------------------------------------------------------------------------------------------ ONNX files
def onnx_kernels(path: str | os.PathLike, device: str | Device = "cpu-ort-1t",
                 dummy_input: Any = None, movement: dict[str, float] | None = None) -> list[dict[str, str]]:
    """The kernels ONNX Runtime runs for an ONNX file, as ``layer``/``kind``/``signature``/``node``/``op_type`` rows
    in run order (``node``: the name of the ORT node, empty for a node ORT created without one; a fused attention
    node gives several rows).

    The kernels are the nodes of the graph ORT runs on ``device`` (its own fusions, including the NCHWc
    convolutions that absorb activations and residual adds); layout reorders and data movement are not kernels.
    Shapes and attributes come from the graph after ORT's ``"extended"`` fusions (standard layout), whose
    tensors get static shapes by :mod:`hwnas.predict.onnx_graph` (symbolic dims bound from ``dummy_input``, or
    a batch of 1). Every node is a kernel, data movement or free; an op type hwnas cannot cost raises
    :class:`~hwnas.predict.onnx_graph.UnknownOpError`.
    """
    import onnx

    from hwnas.hw.profiling import optimized_graph

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX model {str(path)!r} not found; check the path.")
    model = onnx.load(str(path))
    try:
        bind_inputs(model, dummy_input)
    except ShapeError as e:
        raise ShapeError(f"{str(path)!r}: {e}") from None
    seed = infer_original(model)
    dev = get_device(device)
    with tempfile.TemporaryDirectory(prefix="hwnas-onnx-") as tmp:
        src = Path(tmp) / "model.onnx"
        onnx.save(model, str(src))
        ext = optimized_graph(src, dev.replace(graph_optimization="extended"))
        run = optimized_graph(src, dev) if dev.graph_optimization != "extended" else ext
    shapes = propagate(ext, seed, str(path))
    if dev.graph_optimization in ("disable", "basic"):
        # below "extended" ORT keeps nodes the extended fusions remove (a Sigmoid and Mul it would fuse): the
        # graph it runs is in standard layout, so its own tensors get shapes the same way
        shapes = {**propagate(run, seed, str(path)), **shapes}
    initializers = {i.name for i in ext.graph.initializer}
    by_output = {o: n for n in ext.graph.node for o in n.output}
    by_name = {n.name: n for n in ext.graph.node if n.name}
    rows, moving = [], []
    for node in run.graph.node:
        if node.domain == "com.microsoft.nchwc":
            if node.op_type in ("ReorderInput", "ReorderOutput"):
                continue
            base = node.name[: -len("_nchwc")] if node.name.endswith("_nchwc") else ""
            # a batch norm ORT runs as an NCHWc convolution is named "<its output>_bn_nchwc"
            src_node = by_output.get(base) or by_output.get(base[: -len("_bn")] if base.endswith("_bn") else "")
        else:
            src_node = by_name.get(node.name) or (by_output.get(node.output[0]) if node.output else None)
        if src_node is None:  # a node ORT made at the "all" level only: its own shapes (run graph)
            src_node = node
        try:
            cls = node_class(src_node)
        except UnknownOpError as e:
            raise UnknownOpError(f"{str(path)!r}: {e}") from None
        if cls in ("free", "layout"):
            continue
        if cls == "movement":
            moving.append((src_node.op_type, [shapes.get(o, ()) for o in src_node.output if o]))
            continue
        for row in _kernel_rows(src_node, node, cls, shapes, initializers, path):
            rows.append({**row, "node": node.name, "op_type": node.op_type})
    if movement is not None:
        movement.update(movement_of_nodes(moving))
    return rows


def _need(shapes: dict, names: Sequence[str], node: Any, path: Path) -> list[tuple[int, ...]]:
    out = []
    for n in names:
        if n not in shapes:
            known = {m: shapes.get(m) for m in node.input if m}
            raise ShapeError(f"{str(path)!r}: no static shape for tensor {n!r} of {node.op_type} node {node.name!r} "
                             f"(shapes of its inputs: {known}); pass dummy_input with the shape to predict for, or "
                             "report the model if that does not help.")
        out.append(shapes[n])
    return out


def _kernel_rows(src: Any, ran: Any, cls: str, shapes: dict, initializers: set[str], path: Path) -> list[dict]:
    """Kernel rows of one node: shapes and attributes from ``src`` (the standard-layout node), activation and
    fused add from ``ran`` (the node ORT runs)."""
    op = src.op_type
    names = [n for n in src.input if n]
    if cls == "conv":
        x, w = _need(shapes, names[:2], src, path)
        out = shapes.get(src.output[0]) or _conv_out(x, w, src)
        nd = len(x) - 2
        pads = attr(src, "pads", [0] * (2 * nd))
        dil = attr(src, "dilations", [1] * nd)
        attrs: list[tuple[str, Any]] = [("k", "x".join(str(d) for d in w[2:])),
                                        ("s", "x".join(str(d) for d in attr(src, "strides", [1] * nd))),
                                        ("g", int(attr(src, "group", 1))), ("p", "x".join(str(p) for p in pads[:nd]))]
        if any(d != 1 for d in dil):
            attrs.append(("d", "x".join(str(d) for d in dil)))
        name = attr(ran, "activation", "") or ""
        act = FUSED_ACTS.get(name, name.lower() or "none")
        fused_add = ran.op_type in ("Conv", "FusedConv") and len([n for n in ran.input if n]) > 3
        attrs += [("act", act), ("add", int(fused_add))]
        return [{"layer": ran.name, "kind": f"conv+{act}",
                 "signature": str(KernelSignature("conv", (x,), out, tuple(attrs)))}]
    if cls in ("linear", "matmul"):
        a, b, ta, tb = matmul_operands(src, *_need(shapes, names[:2], src, path))
        name = attr(ran, "activation", "") or ""
        act = FUSED_ACTS.get(name, name.lower() or "none")
        if cls == "linear" or (names[1] in initializers and len(b) == 2 and not ta):
            if ta and len(a) == 2:
                a = (a[1], a[0])
            n_out = b[0] if tb else b[1]
            return [{"layer": ran.name, "kind": f"linear+{act}",
                     "signature": str(KernelSignature("linear", (a,), (*a[:-1], n_out), (("act", act),)))}]
        out = _matmul(a, b, ta, tb)
        return [{"layer": ran.name, "kind": "matmul",
                 "signature": str(KernelSignature("matmul", (a, b), out, (("ta", ta), ("tb", tb))))}]
    if cls == "attention":
        return _attention_rows(src, ran, shapes, path)
    if cls == "conv_transpose":
        x, w = _need(shapes, names[:2], src, path)
        out = _need(shapes, src.output[:1], src, path)[0]
        return [{"layer": ran.name, "kind": "conv_transpose",
                 "signature": str(KernelSignature("conv_transpose", (x, w), out))}]
    ins = _need(shapes, names, src, path)
    out = _need(shapes, src.output[:1], src, path)[0]
    name = POOL_NAMES[op] if cls == "pool" else ELTWISE_NAMES[op]
    attrs = []
    if op in ("MaxPool", "AveragePool"):
        k = attr(src, "kernel_shape")
        nd = len(k)
        pads = attr(src, "pads", [0] * (2 * nd))
        attrs = [("kernel", "x".join(map(str, k))), ("stride", "x".join(map(str, attr(src, "strides", [1] * nd)))),
                 ("padding", "x".join(map(str, pads[:nd])))]
    tensors = tuple(s for s, n in zip(ins, names) if n not in initializers or len(s) > 1)
    return [{"layer": ran.name, "kind": name,
             "signature": str(KernelSignature(name, tensors or tuple(ins[:1]), out, tuple(attrs)))}]


def _attention_rows(src: Any, ran: Any, shapes: dict, path: Path) -> list[dict]:
    """A fused attention node (com.microsoft ``Attention`` / ``MultiHeadAttention``) as the kernels it does:
    the QKV projection (``Attention`` only), ``Q K^T``, softmax and ``A V`` per head."""
    names = list(src.input)
    heads = int(attr(src, "num_heads", 1))
    rows = []
    if src.op_type == "Attention":
        x, w = _need(shapes, names[:2], src, path)
        sizes = attr(src, "qkv_hidden_sizes") or [w[1] // 3] * 3
        b, s = x[0], x[1]
        q_dim, v_dim = sizes[0], sizes[2]
        rows.append(("linear", (x,), (b, s, w[1]), (("act", "none"),)))
        kv_len = s
    else:
        q = _need(shapes, names[:1], src, path)[0]
        k = shapes.get(names[1]) if len(names) > 1 and names[1] else None
        v = shapes.get(names[2]) if len(names) > 2 and names[2] else None
        if len(q) != 3:
            raise ShapeError(f"{str(path)!r}: MultiHeadAttention node {src.name!r} with packed query of shape {q} is "
                             "not supported; export the attention unfused.")
        b, s, q_dim = q
        kv_len = (k[2] if len(k) == 4 else k[1]) if k is not None else s
        v_dim = (v[1] * v[3] if len(v) == 4 else v[2]) if v is not None else q_dim
    dq, dv = q_dim // heads, v_dim // heads
    rows += [("matmul", ((b, heads, s, dq), (b, heads, kv_len, dq)), (b, heads, s, kv_len), (("ta", 0), ("tb", 1))),
             ("softmax", ((b, heads, s, kv_len),), (b, heads, s, kv_len), ()),
             ("matmul", ((b, heads, s, kv_len), (b, heads, kv_len, dv)), (b, heads, s, dv), (("ta", 0), ("tb", 0)))]
    return [{"layer": f"{ran.name}#{i}", "kind": op, "signature": str(KernelSignature(op, ins, out, at))}
            for i, (op, ins, out, at) in enumerate(rows)]
