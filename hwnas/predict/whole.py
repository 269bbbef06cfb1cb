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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hwnas.graph.trace import build_graph
from hwnas.hw.device import Device, get_device
from hwnas.hw.kernels import ORT_TYPES, KernelSignature, active_kernels, map_kernels
from hwnas.predict.features import family_of, model_weight_bytes
from hwnas.predict.movement import ONNX_MOVEMENT, movement_of_nodes, movement_ops
from hwnas.predict.predictor import LatencyPredictor, load_predictor

__all__ = ["ModelLatency", "predict_latency", "onnx_kernels", "UnseenKernelWarning"]

log = logging.getLogger(__name__)

FUSED_ACTS = {"Relu": "relu", "Clip": "clip", "HardSigmoid": "hardsigmoid", "Sigmoid": "sigmoid", "Tanh": "tanh",
              "LeakyRelu": "leaky_relu", "HardSwish": "hardswish"}
# ORT node -> the hwnas op name the torch mapping gives the same computation
ONNX_OPS = {"GlobalAveragePool": "adaptive_avg_pool", "AveragePool": "avg_pool", "MaxPool": "max_pool",
            "GlobalMaxPool": "adaptive_max_pool", "ReduceMean": "mean", "ReduceSum": "sum", "ReduceMax": "amax",
            "Clip": "relu6", "QuickGelu": "silu", "Sum": "add", "BiasGelu": "gelu", "Erf": "gelu"}


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
        source: ``"torch"`` or ``"onnx"``.
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
        graph = build_graph(model_or_onnx_path, dummy_input)
        if graph.choices:
            raise ValueError(f"predict_latency: {type(model_or_onnx_path).__name__} is a model space with "
                             f"{len(graph.choices)} choices (e.g. {next(iter(graph.choices))!r}); predict one subnet "
                             "(hwnas.export(space, sample)) or use hwnas.LatencyProfiler(space, x, predictor=...).")
        rows = [{"layer": k.name, "kind": k.kind if k.kind not in ("conv", "linear") else f"{k.kind}+{k.act}",
                 "signature": str(sig)} for k, sig in active_kernels(map_kernels(graph), graph, {})]
        moves = movement_ops(graph)
        movement = {"nodes": float(sum(n for _, _, n in moves)), "copy_elements": float(sum(c for _, c, _ in moves))}
        source = "torch"
    sigs = [r["signature"] for r in rows]
    notes = []
    if pred.speed:
        notes.append(f"times scaled by the speed factor {pred.speed_factor:.4f} (the machine now against the "
                     f"predictor's training session, speed check of {pred.speed.get('measured', '?')})")
    if sigs:
        details = pred.kernels.predict_details(sigs, context=model_weight_bytes(sigs))
        costs = pred.calibrate(details["ms"].to_numpy())
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


# ------------------------------------------------------------------------------------------ ONNX files
def _attr(node: Any, name: str, default: Any = None) -> Any:
    import onnx

    for a in node.attribute:
        if a.name == name:
            v = onnx.helper.get_attribute_value(a)
            return v.decode() if isinstance(v, bytes) else v
    return default


def _shapes(model: Any) -> dict[str, tuple[int, ...]]:
    out: dict[str, tuple[int, ...]] = {}
    g = model.graph
    for vi in [*g.input, *g.value_info, *g.output]:
        t = vi.type.tensor_type
        if t.HasField("shape") and all(d.HasField("dim_value") for d in t.shape.dim):
            out[vi.name] = tuple(int(d.dim_value) for d in t.shape.dim)
    for init in g.initializer:
        out[init.name] = tuple(int(d) for d in init.dims)
    return out


def _with_input_shapes(model: Any, dummy_input: Any) -> Any:
    import onnx

    inputs = [i for i in model.graph.input if i.name not in {x.name for x in model.graph.initializer}]
    values = list(dummy_input) if isinstance(dummy_input, (tuple, list)) else [dummy_input]
    if len(values) != len(inputs):
        raise ValueError(f"dummy_input has {len(values)} tensor(s) but the ONNX model has {len(inputs)} input(s) "
                         f"{[i.name for i in inputs]}; pass one per input.")
    for inp, v in zip(inputs, values):
        dims = inp.type.tensor_type.shape.dim
        for d, n in zip(dims, tuple(v.shape)):
            d.Clear()
            d.dim_value = int(n)
    onnx.checker.check_model(model)
    return model


def _skeleton(model: Any) -> Any:
    """``model`` without the data of its large initializers (declared as inputs of their shape instead), so
    that repeated shape inference does not copy hundreds of megabytes of weights."""
    import onnx

    m = onnx.ModelProto()
    m.CopyFrom(model)
    keep = []
    for init in m.graph.initializer:
        if int(np.prod(init.dims)) > 4096:
            m.graph.input.append(onnx.helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
        else:
            keep.append(init)
    del m.graph.initializer[:]
    m.graph.initializer.extend(keep)
    return m


def _infer_with(model: Any, shapes: dict[str, tuple[int, ...]]) -> Any:
    """ONNX shape inference of ORT's graph, seeded with the shapes known so far (ORT folded the shape arithmetic
    that the exporter wrote for ``chunk``/``split``, so the folded graph's slices have static shapes)."""
    import onnx

    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {vi.name for vi in [*m.graph.input, *m.graph.output, *m.graph.value_info]} | \
        {i.name for i in m.graph.initializer}
    for name, dims in shapes.items():
        if name not in have:
            m.graph.value_info.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, list(dims)))
    try:
        return onnx.shape_inference.infer_shapes(m)
    except Exception:  # ORT-internal ops can trip strict checks; the shapes known so far stand
        return m


def _conv_out(x: tuple, w: tuple, node: Any) -> tuple[int, ...]:
    nd = len(x) - 2
    strides = _attr(node, "strides", [1] * nd)
    pads = _attr(node, "pads", [0] * (2 * nd))
    dil = _attr(node, "dilations", [1] * nd)
    sp = [(x[2 + i] + pads[i] + pads[nd + i] - dil[i] * (w[2 + i] - 1) - 1) // strides[i] + 1 for i in range(nd)]
    return (x[0], w[0], *sp)


def onnx_kernels(path: str | os.PathLike, device: str | Device = "cpu-ort-1t",
                 dummy_input: Any = None, movement: dict[str, float] | None = None) -> list[dict[str, str]]:
    """The kernels ONNX Runtime runs for an ONNX file, as ``layer``/``kind``/``signature`` rows in run order.

    The kernels are the nodes of the graph ORT runs on ``device`` (its own fusions, including the NCHWc
    convolutions that absorb activations and residual adds); layout reorders and data movement are not kernels.
    Shapes and attributes come from the graph after ORT's ``"extended"`` fusions (standard layout, with ONNX
    shape inference of the original file): every NCHWc node is named after the tensor it replaces there.
    """
    import onnx

    from hwnas.hw.profiling import optimized_graph

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX model {str(path)!r} not found; check the path.")
    model = onnx.load(str(path))
    if dummy_input is not None:
        model = _with_input_shapes(model, dummy_input)
    shapes = _shapes(onnx.shape_inference.infer_shapes(_skeleton(model)))
    dev = get_device(device)
    with tempfile.TemporaryDirectory(prefix="hwnas-onnx-") as tmp:
        src = Path(tmp) / "model.onnx"
        onnx.save(model, str(src))
        ext = optimized_graph(src, dev.replace(graph_optimization="extended"))
        run = optimized_graph(src, dev) if dev.graph_optimization != "extended" else ext
    shapes.update({k: v for k, v in _shapes(ext).items() if k not in shapes})
    ext_skeleton = _skeleton(ext)
    for _ in range(len(ext.graph.node)):  # alternate ONNX inference and ORT's fused convolutions until stable
        before = len(shapes)
        shapes.update({k: v for k, v in _shapes(_infer_with(ext_skeleton, shapes)).items() if k not in shapes})
        for n in ext.graph.node:
            if n.op_type == "FusedConv" and n.output[0] not in shapes and n.input[0] in shapes and n.input[1] in shapes:
                shapes[n.output[0]] = _conv_out(shapes[n.input[0]], shapes[n.input[1]], n)
        if len(shapes) == before:
            break
    initializers = {i.name for i in ext.graph.initializer}
    by_output = {o: n for n in ext.graph.node for o in n.output}
    by_name = {n.name: n for n in ext.graph.node if n.name}
    rows, unmapped, moving = [], [], []
    for node in run.graph.node:
        op = node.op_type
        if op in ONNX_MOVEMENT:
            moving.append((op, [shapes.get(o, ()) for o in node.output]))
            continue
        if op in ("ReorderInput", "ReorderOutput"):
            continue
        if node.domain == "com.microsoft.nchwc":
            src_node = by_output.get(node.name[: -len("_nchwc")]) if node.name.endswith("_nchwc") else None
        else:
            src_node = by_name.get(node.name) or (by_output.get(node.output[0]) if node.output else None)
        if src_node is None:
            unmapped.append(f"{op} {node.name!r}")
            continue
        row = _kernel_row(src_node, node, shapes, initializers, path)
        if row is not None:
            rows.append(row)
    if movement is not None:
        movement.update(movement_of_nodes(moving))
    if unmapped:
        msg = (f"{str(path)!r}: {len(unmapped)} node(s) that ONNX Runtime runs could not be traced back to the "
               f"model's tensors and are not predicted: {unmapped[:5]}. Please report this with the model.")
        warnings.warn(msg, UnseenKernelWarning, stacklevel=3)
    return rows


def _kernel_row(src: Any, ran: Any, shapes: dict, initializers: set[str], path: Path) -> dict[str, str] | None:
    """One kernel row: shapes and attributes from ``src`` (the standard-layout node), activation and fused add
    from ``ran`` (the node ORT runs)."""
    op = src.op_type
    ins = [shapes.get(n) for n in src.input if n]
    out = shapes.get(src.output[0]) if src.output else None
    if op in ("Conv", "FusedConv"):
        x, w = ins[0], ins[1]
        if x is None or w is None:
            raise ValueError(f"{str(path)!r}: no static shape for the input of {op} node {src.name!r}; pass "
                             "dummy_input with the shape to predict for.")
        out = out or _conv_out(x, w, src)
        nd = len(x) - 2
        pads = _attr(src, "pads", [0] * (2 * nd))
        dil = _attr(src, "dilations", [1] * nd)
        attrs: list[tuple[str, Any]] = [("k", "x".join(str(d) for d in w[2:])),
                                        ("s", "x".join(str(d) for d in _attr(src, "strides", [1] * nd))),
                                        ("g", int(_attr(src, "group", 1))), ("p", "x".join(str(p) for p in pads[:nd]))]
        if any(d != 1 for d in dil):
            attrs.append(("d", "x".join(str(d) for d in dil)))
        name = _attr(ran, "activation", "") or ""
        act = FUSED_ACTS.get(name, name.lower() or "none")
        fused_add = ran.op_type in ("Conv", "FusedConv") and len([n for n in ran.input if n]) > 3
        attrs += [("act", act), ("add", int(fused_add))]
        return {"layer": ran.name, "kind": f"conv+{act}", "signature": str(KernelSignature("conv", (x,), out,
                                                                                           tuple(attrs)))}
    if op in ("Gemm", "FusedGemm", "MatMul") and len(ins) >= 2 and ins[1] is not None and len(ins[1]) == 2 \
            and src.input[1] in initializers:
        x = ins[0]
        if x is None:
            raise ValueError(f"{str(path)!r}: no static shape for the input of {op} node {src.name!r}; pass "
                             "dummy_input.")
        n_out = ins[1][0] if op != "MatMul" and _attr(src, "transB", 0) else ins[1][-1]
        act = "relu" if _attr(ran, "activation") == "Relu" else "none"
        return {"layer": ran.name, "kind": f"linear+{act}",
                "signature": str(KernelSignature("linear", (x,), (*x[:-1], n_out), (("act", act),)))}
    name = ONNX_OPS.get(op) or _torch_name(op)
    known = [s for s in ins if s is not None]
    if known and len(known) < len(ins) and op not in ONNX_OPS:  # tensors ORT created (e.g. an inlined HardSwish)
        ins = [s if s is not None else tuple(np.broadcast_shapes(*known)) for s in ins]
    if out is None and known and op not in ONNX_OPS:
        out = tuple(np.broadcast_shapes(*ins))
    if out is None or any(s is None for s in ins):
        raise ValueError(f"{str(path)!r}: no static shape for {op} node {src.name!r}; pass dummy_input with the "
                         "shape to predict for.")
    attrs = []
    if op in ("MaxPool", "AveragePool"):
        k = _attr(src, "kernel_shape")
        nd = len(k)
        pads = _attr(src, "pads", [0] * (2 * nd))
        attrs = [("kernel", "x".join(map(str, k))), ("stride", "x".join(map(str, _attr(src, "strides", [1] * nd)))),
                 ("padding", "x".join(map(str, pads[:nd])))]
    tensors = tuple(s for s, n in zip(ins, [n for n in src.input if n]) if n not in initializers or len(s) > 1)
    return {"layer": ran.name, "kind": name,
            "signature": str(KernelSignature(name, tensors or tuple(ins[:1]), out, tuple(attrs)))}


def _torch_name(op_type: str) -> str:
    """The hwnas op name of an ORT node type (via the LUT's ORT_TYPES table), else the lower-cased type."""
    names = ORT_TYPES.get(op_type)
    return sorted(names)[0] if names else op_type.lower()
