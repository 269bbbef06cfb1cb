"""Reading any ONNX model: concrete input shapes, static shapes of every tensor ONNX Runtime runs, and the class
of every node (kernel or not).

Exporters write shapes that are not static: a batch axis as a ``dim_param`` (``dynamic_axes``), ``Shape`` ->
``Gather`` -> ``Concat`` -> ``Reshape`` chains (timm's ``B, N, C = x.shape``), MatMul on 3-D and 4-D tensors, and
ONNX Runtime rewrites the graph at load time (``MatMulAddFusion`` turns a 3-D MatMul + Add into a Reshape, a 2-D
``Gemm`` and a Reshape with tensors of its own; ``FusedMatMul``, ``Gelu``, ``SkipLayerNormalization``,
``QuickGelu`` and ``FusedConv`` are contrib ops ONNX does not know). The graph ORT saves carries no shapes at
all. So shapes are found in three steps:

1. :func:`bind_inputs`: every graph input gets concrete dims, from the user's input or, for a symbolic batch
   axis, 1 (any other symbolic axis is an error that asks for an input).
2. :func:`infer_original`: ONNX's own shape inference with data propagation
   (``onnx.shape_inference.infer_shapes(model, data_prop=True)``), then, only for tensors still without a static
   shape, onnxruntime's symbolic shape inference (``SymbolicShapeInference.infer_shapes(auto_merge=True)``).
3. :func:`propagate`: an interpreter over the graph ORT runs, seeded with those shapes, that runs each node's
   rule in order: constant folding of small tensors (shape arithmetic) with ONNX's reference evaluator, rules of
   its own for ORT's contrib ops, and ONNX's per-node inference (``infer_node_outputs``) for the standard ones.

:func:`node_class` puts every node ORT runs in one class: a kernel family (``conv``, ``linear``, ``matmul``,
``pool``, ``eltwise``, ``attention``), ``movement`` (copies or views data) or ``free``/``layout`` (no time of
its own or an NCHWc reorder); an op type outside every class raises :class:`UnknownOpError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["UnknownOpError", "ShapeError", "bind_inputs", "infer_original", "propagate", "node_class", "attr",
           "static_shapes", "matmul_operands", "ELTWISE_NAMES", "POOL_NAMES", "CLASS_OF"]


class UnknownOpError(ValueError):
    """A node whose op type hwnas does not know how to cost."""


class ShapeError(ValueError):
    """A tensor whose static shape could not be found."""


#: ORT/ONNX op type -> hwnas op name of an elementwise-like kernel (the ``eltwise`` family).
ELTWISE_NAMES = {
    "Add": "add", "Sum": "add", "Sub": "sub", "Mul": "mul", "Div": "div", "Relu": "relu", "Clip": "relu6",
    "Sigmoid": "sigmoid", "HardSigmoid": "hardsigmoid", "HardSwish": "hardswish", "Tanh": "tanh",
    "LeakyRelu": "leaky_relu", "Elu": "elu", "Selu": "elu", "Softplus": "softplus", "Mish": "mish",
    "QuickGelu": "silu", "Gelu": "gelu", "BiasGelu": "gelu", "FastGelu": "gelu", "Erf": "erf",
    "Softmax": "softmax", "LogSoftmax": "log_softmax", "LayerNormalization": "layer_norm",
    "SimplifiedLayerNormalization": "layer_norm", "SkipLayerNormalization": "skip_layer_norm",
    "SkipSimplifiedLayerNormalization": "skip_layer_norm", "BatchNormalization": "batch_norm",
    "InstanceNormalization": "instance_norm", "GroupNormalization": "group_norm", "GroupNorm": "group_norm",
    "Pow": "pow", "Sqrt": "sqrt", "Exp": "exp", "Log": "log", "Neg": "neg", "Reciprocal": "reciprocal",
    "Abs": "abs", "Where": "where", "Equal": "equal", "Less": "less", "Greater": "greater", "LessOrEqual": "less",
    "GreaterOrEqual": "greater", "Not": "not", "And": "and", "Or": "or", "Min": "min", "Max": "max",
    "Mean": "add", "Floor": "floor", "Ceil": "floor", "Round": "floor", "Sign": "abs", "Sin": "exp", "Cos": "exp",
    "Resize": "upsample", "Upsample": "upsample", "BiasAdd": "add", "PRelu": "leaky_relu", "ThresholdedRelu": "relu",
    "CumSum": "cumsum", "ReduceL2": "sum", "ReduceSumSquare": "sum", "ReduceMin": "amax", "ReduceProd": "sum",
    "ArgMax": "amax", "ArgMin": "amax", "TopK": "amax", "DequantizeLinear": "mul", "QuantizeLinear": "mul",
}
#: ORT/ONNX op type -> hwnas op name of a pooling / reduction kernel (the ``pool`` family).
POOL_NAMES = {"GlobalAveragePool": "adaptive_avg_pool", "AveragePool": "avg_pool", "MaxPool": "max_pool",
              "GlobalMaxPool": "adaptive_max_pool", "ReduceMean": "mean", "ReduceSum": "sum", "ReduceMax": "amax",
              "LpPool": "avg_pool"}
_MOVEMENT = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Concat", "Split", "Slice", "Gather",
             "Expand", "Cast", "Tile", "Pad", "GatherElements", "GatherND", "ScatterND", "ScatterElements",
             "DepthToSpace", "SpaceToDepth", "Trilu", "Range", "OneHot", "NonZero", "CastLike", "Compress"}
_FREE = {"Identity", "Dropout", "Shape", "Size", "Constant", "ConstantOfShape", "MemcpyFromHost", "MemcpyToHost"}
_LAYOUT = {"ReorderInput", "ReorderOutput"}
#: class of each op type that is not an elementwise or pooling kernel.
CLASS_OF = {**{o: "movement" for o in _MOVEMENT}, **{o: "free" for o in _FREE}, **{o: "layout" for o in _LAYOUT},
            "Conv": "conv", "FusedConv": "conv", "NhwcConv": "conv", "ConvTranspose": "conv_transpose",
            "Gemm": "linear", "FusedGemm": "linear", "MatMul": "matmul", "FusedMatMul": "matmul",
            "Attention": "attention", "MultiHeadAttention": "attention"}


def node_class(node: Any) -> str:
    """The class of an ORT/ONNX node: ``conv``, ``conv_transpose``, ``linear``, ``matmul`` (the caller decides
    between ``linear`` and ``matmul`` from the operands), ``attention``, ``pool``, ``eltwise``, ``movement``,
    ``free`` or ``layout``.

    Raises:
        UnknownOpError: for an op type in none of them (never a silent zero).
    """
    op = node.op_type
    if op in CLASS_OF:
        return CLASS_OF[op]
    if op in POOL_NAMES:
        return "pool"
    if op in ELTWISE_NAMES:
        return "eltwise"
    raise UnknownOpError(
        f"node {node.name!r} has op type {op!r} (domain {node.domain or 'ai.onnx'!r}), which hwnas's latency "
        f"predictor does not know how to cost. Expected a convolution, GEMM/MatMul, attention, pooling, one of "
        f"{len(ELTWISE_NAMES)} elementwise ops or a data-movement op. Fix: add it to "
        f"hwnas.predict.onnx_graph.ELTWISE_NAMES (elementwise, costed by its elements) or CLASS_OF ('movement', "
        f"'free'), or export the model without it.")


def attr(node: Any, name: str, default: Any = None) -> Any:
    """An attribute of an ONNX node (strings decoded), or ``default``."""
    import onnx

    for a in node.attribute:
        if a.name == name:
            v = onnx.helper.get_attribute_value(a)
            return v.decode() if isinstance(v, bytes) else v
    return default


# ------------------------------------------------------------------------------------------ step 1: inputs
def bind_inputs(model: Any, dummy_input: Any = None) -> Any:
    """Give every graph input concrete dims (in place; returns ``model``).

    With ``dummy_input`` (a tensor/array, or a sequence of them, one per graph input that is not an
    initializer), its shapes; without it, each symbolic dim of a first axis becomes 1 (the batch), and any other
    symbolic dim raises :class:`ShapeError` naming the input and axis.
    """
    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if dummy_input is not None:
        values = list(dummy_input) if isinstance(dummy_input, (tuple, list)) else [dummy_input]
        if len(values) != len(inputs):
            raise ShapeError(f"dummy_input has {len(values)} tensor(s) but the ONNX model has {len(inputs)} input(s) "
                             f"{[i.name for i in inputs]}; pass one per input, in that order.")
        for inp, v in zip(inputs, values):
            dims = inp.type.tensor_type.shape.dim
            shape = tuple(int(n) for n in v.shape)
            if len(dims) and len(dims) != len(shape):
                raise ShapeError(f"input {inp.name!r} has rank {len(dims)} in the model but dummy_input has shape "
                                 f"{shape}; pass a tensor of rank {len(dims)}.")
            if not len(dims):
                for _ in shape:
                    inp.type.tensor_type.shape.dim.add()
            for d, n in zip(inp.type.tensor_type.shape.dim, shape):
                if d.HasField("dim_value") and d.dim_value != n:
                    raise ShapeError(f"input {inp.name!r} is fixed at {[x.dim_value for x in dims]} in the model, "
                                     f"dummy_input has shape {shape}; pass an input of the model's shape.")
                d.Clear()
                d.dim_value = n
        return model
    for inp in inputs:
        for axis, d in enumerate(inp.type.tensor_type.shape.dim):
            if d.HasField("dim_value") and d.dim_value > 0:
                continue
            if axis == 0:
                d.Clear()
                d.dim_value = 1
                continue
            raise ShapeError(f"input {inp.name!r} has a symbolic axis {axis} ({d.dim_param or '?'!r}) besides the "
                             "batch; pass dummy_input (e.g. torch.zeros(1, 128, dtype=torch.long) for 128 tokens) "
                             "with the shape to predict for.")
    return model


def static_shapes(model: Any) -> dict[str, tuple[int, ...]]:
    """Names -> shapes of the graph's inputs, value_infos, outputs and initializers with all dims known."""
    out: dict[str, tuple[int, ...]] = {}
    g = model.graph
    for vi in [*g.input, *g.value_info, *g.output]:
        t = vi.type.tensor_type
        if t.HasField("shape") and all(d.HasField("dim_value") for d in t.shape.dim):
            out[vi.name] = tuple(int(d.dim_value) for d in t.shape.dim)
    for init in g.initializer:
        out[init.name] = tuple(int(d) for d in init.dims)
    return out


def _skeleton(model: Any, keep: int = 4096) -> Any:
    """``model`` without the data of initializers above ``keep`` elements (declared as inputs instead)."""
    import onnx

    m = onnx.ModelProto()
    m.CopyFrom(model)
    small = []
    for init in m.graph.initializer:
        if int(np.prod(init.dims)) > keep:
            m.graph.input.append(onnx.helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
        else:
            small.append(init)
    del m.graph.initializer[:]
    m.graph.initializer.extend(small)
    return m


# ------------------------------------------------------------------------------------------ step 2: original graph
def infer_original(model: Any) -> dict[str, tuple[int, ...]]:
    """Static shapes of the (bound) original model: ONNX inference with data propagation, then onnxruntime's
    symbolic shape inference for whatever it left without a static shape."""
    import onnx

    skel = _skeleton(model)
    try:
        shapes = static_shapes(onnx.shape_inference.infer_shapes(skel, data_prop=True))
    except Exception:  # a custom domain can trip ONNX's strict checks; ORT's inference below still runs
        shapes = static_shapes(skel)
    produced = {o for n in model.graph.node for o in n.output if o}
    if produced - set(shapes):
        try:
            from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

            sym = SymbolicShapeInference.infer_shapes(skel, auto_merge=True, guess_output_rank=False)
            if sym is not None:
                shapes.update({k: v for k, v in static_shapes(sym).items() if k not in shapes})
        except Exception:  # it can stop on ops it does not know; step 3 fills in from ORT's graph
            pass
    return shapes


# ------------------------------------------------------------------------------------------ step 3: ORT's graph
def _bshape(*shapes: Sequence[int]) -> tuple[int, ...]:
    return tuple(int(d) for d in np.broadcast_shapes(*[tuple(s) for s in shapes]))


def _matmul(a: Sequence[int], b: Sequence[int], ta: int = 0, tb: int = 0) -> tuple[int, ...]:
    a, b = list(a), list(b)
    if ta and len(a) >= 2:
        a[-1], a[-2] = a[-2], a[-1]
    if tb and len(b) >= 2:
        b[-1], b[-2] = b[-2], b[-1]
    if len(b) == 1:
        return tuple(a[:-1])
    if len(a) == 1:
        return (*b[:-2], b[-1])
    return (*_bshape(a[:-2], b[:-2]), a[-2], b[-1])


def matmul_operands(node: Any, a: Sequence[int], b: Sequence[int]) -> tuple[tuple[int, ...], tuple[int, ...], int,
                                                                            int]:
    """``(a, b, transA, transB)`` of a MatMul/FusedMatMul/Gemm with ORT's ``transBatchA``/``transBatchB`` applied:
    ORT's ``MatmulTransposeFusion`` folds a Transpose that moves the first axis behind the batch axes
    (``(L, N, H, d)`` -> ``(N, H, L, d)``, ``nn.MultiheadAttention``'s layout) into the FusedMatMul."""
    a, b = tuple(a), tuple(b)
    if attr(node, "transBatchA", 0) and len(a) > 2:
        a = (*a[1:-1], a[0], a[-1])
    if attr(node, "transBatchB", 0) and len(b) > 2:
        b = (*b[1:-1], b[0], b[-1])
    return a, b, int(attr(node, "transA", 0)), int(attr(node, "transB", 0))


def _conv_out(x: Sequence[int], w: Sequence[int], node: Any) -> tuple[int, ...]:
    nd = len(x) - 2
    strides = attr(node, "strides", [1] * nd)
    dil = attr(node, "dilations", [1] * nd)
    pads = attr(node, "pads", [0] * (2 * nd))
    if attr(node, "auto_pad", "NOTSET") in ("SAME_UPPER", "SAME_LOWER"):
        return (x[0], w[0], *[-(-x[2 + i] // strides[i]) for i in range(nd)])
    return (x[0], w[0], *[(x[2 + i] + pads[i] + pads[nd + i] - dil[i] * (w[2 + i] - 1) - 1) // strides[i] + 1
                          for i in range(nd)])


def _contrib(node: Any, ins: list[tuple[int, ...] | None]) -> list[tuple[int, ...] | None] | None:
    """Output shapes of ORT's contrib ops (``None`` for an op without a rule here)."""
    op = node.op_type
    if op in ("FusedConv", "NhwcConv") and ins[0] is not None and ins[1] is not None:
        return [_conv_out(ins[0], ins[1], node)]
    if op == "FusedGemm" and ins[0] is not None and ins[1] is not None:
        a, b = ins[0], ins[1]
        m = a[1] if attr(node, "transA", 0) else a[0]
        n = b[0] if attr(node, "transB", 0) else b[1]
        return [(m, n)]
    if op == "FusedMatMul" and ins[0] is not None and ins[1] is not None:
        a, b, ta, tb = matmul_operands(node, ins[0], ins[1])
        return [_matmul(a, b, ta, tb)]
    if op in ("Gelu", "FastGelu", "BiasGelu", "QuickGelu", "BiasAdd") and all(s is not None for s in ins):
        return [_bshape(*ins)]
    if op in ("SkipLayerNormalization", "SkipSimplifiedLayerNormalization", "SimplifiedLayerNormalization") \
            and ins[0] is not None:
        x = ins[0]
        return [x, (*x[:-1], 1), (*x[:-1], 1), x][: len(node.output)]
    if op == "Attention" and ins[0] is not None and ins[1] is not None:
        sizes = attr(node, "qkv_hidden_sizes")
        v = sizes[2] if sizes else ins[1][1] // 3
        return [(*ins[0][:2], v)] + [None] * (len(node.output) - 1)
    if op == "MultiHeadAttention" and ins[0] is not None:
        q = ins[0]
        value = ins[2] if len(ins) > 2 and ins[2] is not None else None
        heads = int(attr(node, "num_heads", 1))
        if value is not None and len(value) == 4:
            dv = value[1] * value[3]
        elif value is not None and len(value) == 3:
            dv = value[2]
        else:
            dv = q[2] if len(q) == 3 else heads * q[-1]
        return [(q[0], q[1], dv)] + [None] * (len(node.output) - 1)
    return None


def propagate(model: Any, seed: dict[str, tuple[int, ...]], path: str = "the model") -> dict[str, tuple[int, ...]]:
    """Static shapes of every tensor of ``model`` (the graph ORT runs, topologically sorted), seeded with
    ``seed`` (shapes known from the original model). A shape computed from this graph's own nodes wins over the
    seed: ORT's transpose optimizer can keep a tensor's name while changing its layout (``nn.MultiheadAttention``'s
    exports); the seed fills in only where no rule gives a shape.

    Raises:
        ShapeError: a node whose output shape no rule could find (naming the node and its input shapes).
    """
    import onnx
    from onnx import numpy_helper

    shapes = dict(seed)
    values: dict[str, np.ndarray] = {}
    for init in model.graph.initializer:
        shapes[init.name] = tuple(int(d) for d in init.dims)
        if int(np.prod(init.dims)) <= 1024:
            values[init.name] = numpy_helper.to_array(init)
    for vi in model.graph.input:
        t = vi.type.tensor_type
        if vi.name not in shapes and t.HasField("shape") and all(d.HasField("dim_value") for d in t.shape.dim):
            shapes[vi.name] = tuple(int(d.dim_value) for d in t.shape.dim)
    dtypes = {vi.name: vi.type.tensor_type.elem_type for vi in [*model.graph.input, *model.graph.value_info]}
    dtypes.update({i.name: i.data_type for i in model.graph.initializer})
    opsets = {o.domain: o.version for o in model.opset_import}
    opset = opsets.get("", opsets.get("ai.onnx", 17))
    for node in model.graph.node:
        ins = [shapes.get(n) if n else None for n in node.input]
        if node.op_type == "Constant":
            arr = numpy_helper.to_array(attr_tensor(node))
            values[node.output[0]], shapes[node.output[0]] = arr, tuple(arr.shape)
            dtypes[node.output[0]] = onnx.helper.np_dtype_to_tensor_dtype(arr.dtype)
            continue
        if node.op_type == "Shape" and ins and ins[0] is not None:
            start, end = attr(node, "start", 0), attr(node, "end", None)
            arr = np.array(ins[0][start:end], dtype=np.int64)
            values[node.output[0]], shapes[node.output[0]] = arr, tuple(arr.shape)
            dtypes[node.output[0]] = onnx.TensorProto.INT64
            continue
        inputs_const = [n for n in node.input if n]
        if node.domain in ("", "ai.onnx") and inputs_const and all(n in values for n in inputs_const):
            try:
                arrs = _evaluate(node, [values[n] for n in node.input if n], opset)
                for o, a in zip(node.output, arrs):
                    if o:
                        shapes[o] = tuple(np.shape(a))
                        dtypes[o] = onnx.helper.np_dtype_to_tensor_dtype(np.asarray(a).dtype)
                        if np.size(a) <= 4096:
                            values[o] = np.asarray(a)
                continue
            except Exception:  # fall through to shape rules
                pass
        got = _contrib(node, ins) if node.domain not in ("", "ai.onnx") else None
        if got is None and node.domain not in ("", "ai.onnx"):
            continue  # NCHWc and other layout ops: the caller reads their standard-layout twins
        if got is None and node.op_type == "MatMul" and ins[0] is not None and ins[1] is not None:
            got = [_matmul(ins[0], ins[1])]
        if got is None:
            got = _onnx_rule(node, ins, dtypes, values, opset, onnx)
        for o, s in zip(node.output, got):
            if o and s is not None:  # computed from this graph: it wins over the seed (ORT's transpose
                shapes[o] = tuple(int(d) for d in s)  # optimizer can keep a name for a re-laid-out tensor)
    return shapes


def attr_tensor(node: Any) -> Any:
    import onnx

    for a in node.attribute:
        if a.name == "value":
            return a.t
        if a.name in ("value_int", "value_ints", "value_float", "value_floats"):
            v = onnx.helper.get_attribute_value(a)
            dt = np.int64 if "int" in a.name else np.float32
            return onnx.numpy_helper.from_array(np.array(v, dtype=dt))
    raise ShapeError(f"Constant node {node.name!r} has no value attribute this reader understands.")


def _evaluate(node: Any, arrays: list[np.ndarray], opset: int) -> list[np.ndarray]:
    import onnx
    from onnx.reference import ReferenceEvaluator

    names = [n for n in node.input if n]
    vis = [onnx.helper.make_tensor_value_info(n, onnx.helper.np_dtype_to_tensor_dtype(a.dtype), list(a.shape))
           for n, a in zip(names, arrays)]
    outs = [onnx.helper.make_tensor_value_info(o, onnx.TensorProto.UNDEFINED, None) for o in node.output if o]
    g = onnx.helper.make_graph([node], "fold", vis, outs)
    m = onnx.helper.make_model(g, opset_imports=[onnx.helper.make_opsetid("", opset)])
    return list(ReferenceEvaluator(m).run(None, dict(zip(names, arrays))))


def _onnx_rule(node: Any, ins: list, dtypes: dict, values: dict, opset: int, onnx: Any) -> list:
    """ONNX's own per-node inference for a standard op."""
    try:
        schema = onnx.defs.get_schema(node.op_type, opset, node.domain or "")
    except Exception:
        return [None] * len(node.output)
    types, data = {}, {}
    for n, s in zip(node.input, ins):
        if not n or s is None:
            continue
        types[n] = onnx.helper.make_tensor_type_proto(dtypes.get(n, onnx.TensorProto.FLOAT) or 1, list(s))
        if n in values:
            data[n] = onnx.numpy_helper.from_array(np.asarray(values[n]), n)
    try:
        res = onnx.shape_inference.infer_node_outputs(schema, node, types, data,
                                                      opset_imports=[onnx.helper.make_opsetid("", opset)])
    except Exception:
        return [None] * len(node.output)
    out = []
    for o in node.output:
        t = res.get(o)
        if t is not None and t.tensor_type.HasField("shape") and \
                all(d.HasField("dim_value") for d in t.tensor_type.shape.dim):
            out.append(tuple(int(d.dim_value) for d in t.tensor_type.shape.dim))
            dtypes[o] = t.tensor_type.elem_type
        else:
            out.append(None)
    return out
