"""Kernels: the units ONNX Runtime executes, mapped from the op graph, with typed signatures.

A kernel groups the ops that ONNX Runtime's CPU provider runs as one node (measured on this machine
class, see ``benchmarks/measure_methods.py``): a convolution with the batch norm folded into it at export,
its activation (ReLU, ReLU6/Clip, HardSigmoid, Sigmoid, Tanh, LeakyReLU, HardSwish) and a residual add
(FusedConv's ``Sum`` input, only when no activation precedes the add; a ReLU after the add fuses too); a
linear layer with a following ReLU (FusedGemm). Every other op with a cost (pooling, elementwise
arithmetic, unfused activations) is a kernel of its own; pure data movement is none.

A kernel's :class:`KernelSignature` (op, input/output shapes, kernel, stride, groups, activation, fused
add) is its LUT key, so one LUT serves every space that meets the same kernels. Signatures are
tabulated over the few labels the kernel depends on, like every cost in hwnas.

Measured times are attributed back to kernels by :func:`attribute_nodes`: convolutions and GEMMs are
anchors matched in execution order and checked by weight and output shape; other nodes match
standalone kernels by type; anything left (layout reorders, ops ORT fused differently than predicted)
is charged to the kernel that ran just before it, so per-kernel times always sum to the profiled total.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np

from hwnas.graph.larray import LArray, dims_equal
from hwnas.graph.registry import TensorMeta
from hwnas.graph.trace import Op, OpGraph
from hwnas.profile.rules import MOVEMENT_OPS

__all__ = ["Kernel", "KernelSignature", "map_kernels", "active_kernels", "attribute_nodes", "ORT_TYPES"]

FUSED_CONV_ACTS = {"relu": "relu", "relu6": "clip", "clamp": "clip", "hardsigmoid": "hardsigmoid",
                   "sigmoid": "sigmoid", "tanh": "tanh", "leaky_relu": "leaky_relu", "hardswish": "hardswish"}
FUSED_GEMM_ACTS = {"relu": "relu"}

# ORT node op_type -> the hwnas op types it can stand for (standalone kernels)
ORT_TYPES = {
    "GlobalAveragePool": {"adaptive_avg_pool"}, "AveragePool": {"avg_pool", "adaptive_avg_pool"},
    "MaxPool": {"max_pool"}, "GlobalMaxPool": {"adaptive_max_pool"}, "ReduceMean": {"mean", "adaptive_avg_pool"},
    "ReduceSum": {"sum"}, "ReduceMax": {"amax"}, "Mul": {"mul"}, "Add": {"add"}, "Sum": {"add"}, "Sub": {"sub"},
    "Div": {"div"}, "Relu": {"relu"}, "Clip": {"relu6", "clamp"}, "HardSigmoid": {"hardsigmoid"},
    "HardSwish": {"hardswish"}, "Sigmoid": {"sigmoid", "silu"}, "QuickGelu": {"silu"}, "Tanh": {"tanh"},
    "LeakyRelu": {"leaky_relu"}, "Elu": {"elu"}, "Softmax": {"softmax"}, "LogSoftmax": {"log_softmax"},
    "Gelu": {"gelu"}, "BiasGelu": {"gelu"}, "Erf": {"gelu"}, "LayerNormalization": {"layer_norm"},
    "Resize": {"upsample"}, "MatMul": {"matmul"}, "Mish": {"mish"},
}
ANCHOR_ORT = {"Conv", "FusedConv", "NchwcConv", "ConvTranspose", "Gemm", "FusedGemm"}


@dataclass(frozen=True)
class KernelSignature:
    """The LUT key of a kernel: what determines its run time on a device.

    ``str(signature)`` is the canonical, human-readable key, e.g.
    ``conv|in=1x24x56x56|out=1x72x56x56|k=1|s=1|g=1|act=relu|add=0``.
    """

    op: str
    inputs: tuple[tuple[int, ...], ...]
    output: tuple[int, ...]
    attrs: tuple[tuple[str, Any], ...] = ()

    def __str__(self) -> str:
        shape = lambda s: "x".join(str(d) for d in s) or "scalar"  # noqa: E731
        parts = [self.op, "in=" + ",".join(shape(s) for s in self.inputs), "out=" + shape(self.output)]
        parts += [f"{k}={v}" for k, v in self.attrs]
        return "|".join(parts)

    @staticmethod
    def parse(text: str) -> KernelSignature:
        """The inverse of ``str()``."""
        op, ins, out, *attrs = text.split("|")

        def shape(s: str) -> tuple[int, ...]:
            return () if s == "scalar" else tuple(int(d) for d in s.split("x"))

        pairs = []
        for a in attrs:
            k, v = a.split("=", 1)
            pairs.append((k, int(v) if v.lstrip("-").isdigit() else v))
        return KernelSignature(op, tuple(shape(s) for s in ins[3:].split(",")), shape(out[4:]), tuple(pairs))


@dataclass
class Kernel:
    """A group of ops that the runtime executes as one node (see the module docstring)."""

    name: str
    kind: str
    ops: list[Op]
    act: str = "none"
    fused_add: bool = False

    @property
    def anchor(self) -> Op:
        return self.ops[0]

    @property
    def activity(self) -> Any:
        return self.anchor.activity

    def fields(self) -> dict[str, Any]:
        """The symbolic quantities the signature is made of."""
        a = self.anchor
        f: dict[str, Any] = {}
        for i, t in enumerate(a.inputs[:1] if self.kind in ("conv", "linear") else a.inputs):
            for j, d in enumerate(t.shape):
                f[f"in{i}.{j}"] = d
        out = self.ops[-1].out if self.kind not in ("conv", "linear") else a.out
        for j, d in enumerate(out.shape):
            f[f"out.{j}"] = d
        if self.kind == "conv":
            at = a.attrs
            for j, k in enumerate(at["kernel"]):
                f[f"k{j}"] = k
            for j, s in enumerate(at["stride"]):
                f[f"s{j}"] = s
            f["g"] = at["groups"]
            if at["padding"] is not None:
                for j, p in enumerate(at["padding"]):
                    f[f"p{j}"] = p
            for j, d in enumerate(at["dilation"]):
                f[f"d{j}"] = d
        elif self.kind not in ("linear",):
            for key in ("kernel", "stride", "padding"):
                if key in a.attrs:
                    for j, v in enumerate(a.attrs[key]):
                        f[f"{key}{j}"] = v
        if isinstance(self.activity, LArray):
            f["active"] = self.activity
        return f

    def labels(self) -> tuple[str, ...]:
        return tuple(sorted({lab for v in self.fields().values() if isinstance(v, LArray) for lab in v.labels}))

    def signature_at(self, values: dict[str, int]) -> KernelSignature | None:
        """The concrete signature from concrete field values (``None`` where the kernel does not run)."""
        if values.get("active", 1) == 0:
            return None
        ins = []
        i = 0
        while f"in{i}.0" in values:
            ins.append(tuple(values[k] for k in sorted((k for k in values if k.startswith(f"in{i}.")),
                                                         key=lambda k: int(k.split(".")[1]))))
            i += 1
        out = tuple(values[k] for k in sorted((k for k in values if k.startswith("out.")),
                                              key=lambda k: int(k.split(".")[1])))
        attrs: list[tuple[str, Any]] = []
        if self.kind == "conv":
            nd = len(out) - 2
            attrs = [("k", "x".join(str(values[f"k{j}"]) for j in range(nd))),
                     ("s", "x".join(str(values[f"s{j}"]) for j in range(nd))),
                     ("g", values["g"])]
            if "p0" in values:
                attrs.append(("p", "x".join(str(values[f"p{j}"]) for j in range(nd))))
            if any(values.get(f"d{j}", 1) != 1 for j in range(nd)):
                attrs.append(("d", "x".join(str(values[f"d{j}"]) for j in range(nd))))
            attrs += [("act", self.act), ("add", int(self.fused_add))]
        elif self.kind == "linear":
            attrs = [("act", self.act)]
        else:
            for key in ("kernel", "stride", "padding"):
                if f"{key}0" in values:
                    n = sum(1 for k in values if k.startswith(key) and k[len(key):].isdigit())
                    attrs.append((key, "x".join(str(values[f"{key}{j}"]) for j in range(n))))
        return KernelSignature(self.kind, tuple(ins), out, tuple(attrs))

    def signature_table(self, graph: OpGraph) -> tuple[tuple[str, ...], np.ndarray]:
        """Labels and an object array (one axis per label) of signature strings (``None`` where inactive)."""
        fields = self.fields()
        labels = self.labels()
        sizes = [len(graph.choices[lab].values) for lab in labels]
        table = np.empty(sizes, dtype=object)
        for cell in itertools.product(*(range(n) for n in sizes)):
            at = dict(zip(labels, cell))
            values = {k: _at(v, at) for k, v in fields.items()}
            sig = self.signature_at(values)
            table[cell] = None if sig is None else str(sig)
        return labels, table


def _at(value: Any, cell: dict[str, int]) -> Any:
    if isinstance(value, LArray):
        return value.data[tuple(cell[lab] for lab in value.labels)].item()
    return value


def map_kernels(graph: OpGraph) -> list[Kernel]:
    """Group the graph's ops into kernels the way ONNX Runtime's CPU provider fuses them."""
    by_name = {op.name: op for op in graph.ops}
    consumers: dict[str, list[Op]] = defaultdict(list)
    for op in graph.ops:
        for src in op.input_ops:
            if src is not None:
                consumers[src].append(op)

    def only_consumer(op: Op) -> Op | None:
        c = consumers.get(op.name, [])
        return c[0] if len(c) == 1 else None

    absorbed: set[str] = set()
    kernels: list[Kernel] = []
    for op in graph.ops:
        if op.name in absorbed or op.op_type in MOVEMENT_OPS or op.kind == "get_attr":
            continue
        if op.op_type in ("conv", "linear"):
            k = Kernel(op.name, op.op_type, [op])
            cur = op
            nxt = only_consumer(cur)
            if op.op_type == "conv" and nxt is not None and nxt.op_type == "batch_norm":
                k.ops.append(nxt)
                cur, nxt = nxt, only_consumer(nxt)
            acts = FUSED_CONV_ACTS if op.op_type == "conv" else FUSED_GEMM_ACTS
            if op.op_type == "conv" and nxt is not None and nxt.op_type == "add" and len(nxt.inputs) == 2 \
                    and _add_fuses_into(nxt, cur, by_name, graph):
                k.ops.append(nxt)
                k.fused_add = True
                cur, nxt = nxt, only_consumer(nxt)
                if nxt is not None and nxt.op_type == "relu":
                    k.ops.append(nxt)
                    k.act = "relu"
            elif nxt is not None and nxt.op_type in acts:
                k.ops.append(nxt)
                k.act = acts[nxt.op_type]
            absorbed.update(o.name for o in k.ops)
            kernels.append(k)
        elif op.op_type != "batch_norm" or op.name not in absorbed:
            kernels.append(Kernel(op.name, op.op_type, [op]))
            absorbed.add(op.name)
    return kernels


def _add_fuses_into(add: Op, mine: Op, by_name: dict[str, Op], graph: OpGraph) -> bool:
    """ORT folds a residual add into the convolution whose output is computed last (the other operand must
    be ready); both shapes must agree."""
    if not _same_shape(add.inputs[0], add.inputs[1]):
        return False
    order = {op.name: i for i, op in enumerate(graph.ops)}
    other = [src for src in add.input_ops if src != mine.name]
    if not other:
        return False
    src = other[0]
    while src is not None and src in by_name and by_name[src].op_type in ("identity", "dropout"):
        src = by_name[src].input_ops[0] if by_name[src].input_ops else None  # no-ops ORT removes
    return src is None or order.get(src, -1) < order[mine.name]


def _same_shape(a: TensorMeta, b: TensorMeta) -> bool:
    return a.ndim == b.ndim and all(dims_equal(x, y) for x, y in zip(a.shape, b.shape))


def active_kernels(kernels: list[Kernel], graph: OpGraph, sample: dict[str, Any]) -> list[tuple[Kernel, KernelSignature]]:
    """The kernels that run in ``sample``, in execution order, with their concrete signatures."""
    cell = {lab: graph.choices[lab].values.index(sample[lab]) for lab in graph.choices}
    out = []
    for k in kernels:
        sig = k.signature_at({name: _at(v, cell) for name, v in k.fields().items()})
        if sig is not None:
            out.append((k, sig))
    return out


def _ort_matches(node: Any, kernel: Kernel, sig: KernelSignature) -> bool:
    op_type = node["op_type"]
    if op_type in ANCHOR_ORT:
        if kernel.kind not in ("conv", "linear"):
            return False
        ins = node.get("input_shapes") or []
        if kernel.kind == "conv":
            if len(ins) < 2 or len(ins[1]) != len(sig.output):
                return False
            k = [int(v) for v in dict(sig.attrs)["k"].split("x")]
            g = int(dict(sig.attrs)["g"])
            cin = sig.inputs[0][1]
            want = [sig.output[1], cin // g, *k]
            w = list(ins[1])
            # the data input's spatial size too (NCHW or blocked NCHWc [N, C/b, H, W, b]): two convolutions
            # with the same weights on different feature maps (parallel branches) must not be swapped
            spatial = list(sig.inputs[0][2:])
            if ins[0] and list(ins[0][2:2 + len(spatial)]) != spatial:
                return False
            # NCHWc convolutions pad channel counts to the block size (8 or 16)
            return w[2:] == want[2:] and _chan_ok(w[0], want[0]) and (_chan_ok(w[1], want[1]) or w[1] == want[1])
        outs = node.get("output_shapes") or []
        return bool(outs) and list(outs[0]) == list(sig.output)
    return kernel.kind in ORT_TYPES.get(op_type, set())


def _chan_ok(got: int, want: int) -> bool:
    return got == want or (got >= want and got - want < 16 and got % 8 == 0)


def attribute_nodes(nodes: list[dict], kernels: list[tuple[Kernel, KernelSignature]],
                    window: int = 8) -> tuple[list[float], float, int]:
    """Charge ORT's per-node times to kernels.

    Args:
        nodes: profiled nodes in execution order, each with ``op_type``, ``median_ms`` and ``input_shapes``.
        kernels: :func:`active_kernels` of the profiled subnet.

    Returns:
        ``(ms per kernel, ms before the first kernel, number of anchor kernels matched)``; the caller
        checks that every anchor (convolution/linear) kernel was matched.
    """
    times = [0.0] * len(kernels)
    matched = [False] * len(kernels)
    lead = 0.0
    current = -1
    n_anchor = 0
    for node in nodes:
        hit = -1
        first = next((i for i, m in enumerate(matched) if not m), len(kernels))
        for i in range(first, min(len(kernels), first + window)):
            if not matched[i] and _ort_matches(node, *kernels[i]):
                hit = i
                break
        if hit >= 0:
            matched[hit] = True
            current = hit
            n_anchor += node["op_type"] in ANCHOR_ORT
        if current < 0:
            lead += node["median_ms"]
        else:
            times[current] += node["median_ms"]
    return times, lead, n_anchor
