"""Read a traced model and find its channel-coupling groups (the heart of :func:`hwnas.convert`).

The analysis walks the ``torch.fx`` graph once, with every node's concrete output shape (from one forward
pass of the dummy input), and annotates each tensor axis with the channel group it carries (see
:mod:`hwnas.convert.channels`). Per op:

- a convolution or linear layer writes a new group and reads its input's groups; a depthwise or grouped
  convolution with ``in == out`` passes its input's group through (a grouped one keeps whole groups of
  ``in / groups`` channels); batch/layer norm, activations, pooling, dropout pass it through;
- add/sub/mul/div unite the groups of operands that meet on an axis (residuals, squeeze-excite gates);
- a concatenation along the channel axis lays its inputs' groups side by side (DenseNet, SqueezeNet);
- flatten/reshape/permute/transpose/index follow the axes; flattening channels with spatial dims
  into features keeps the group (each channel spans ``H * W`` features of the next ``Linear``);
- multi-head self-attention reads and writes one group (its width must be a multiple of the heads);
- a parameter used directly (class token, position embedding) slices with the groups it meets, and so do
  the tensors that functional batch/group norms and ``addmm`` read (:mod:`hwnas.convert.functional`);
- split/chunk/slices along a channel axis and reshapes into attention heads cut groups
  (:mod:`hwnas.convert.cuts`); a reshape size that would not follow the sample is written as ``-1``;
- a module without parameters or buffers called several times (one ``nn.ReLU`` for a whole block) is
  each call on its own.

Anything else fixes the channels it touches, with a reason that names the op and module path: a reshape that
mixes the channel axis (a channel shuffle), an unknown layer type or function, a layer with weights called
twice, tied weights, the model's output, a channel count read from a tensor and used as another size (see
:mod:`hwnas.convert.sizes`). Nothing raises here: an unknown op only fixes what it touches.
"""

from __future__ import annotations

import builtins
import operator
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from hwnas.convert.channels import UNTRACKED, Ann, Channels, Seg, Slot, iter_segs
from hwnas.convert.cuts import CuttingOps
from hwnas.convert.functional import FunctionalOps
from hwnas.convert.sizes import SizeTracking
from hwnas.convert.sizes import nodes_in as _nodes_in
from hwnas.convert.sizes import what as _what
from hwnas.convert.sizes import where as _where

__all__ = ["Analyzer", "LayerRecord", "FixedOp", "record_shapes", "UNTRACKED"]


_ACT_MODULES = (nn.ReLU, nn.ReLU6, nn.Hardswish, nn.Hardsigmoid, nn.SiLU, nn.GELU, nn.Sigmoid, nn.Tanh, nn.LeakyReLU,
                nn.ELU, nn.Mish, nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
                nn.Softmax, nn.LogSoftmax, nn.Hardtanh, nn.SELU, nn.CELU, nn.Softplus)
_SPATIAL_MODULES = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
                    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d,
                    nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d, nn.Upsample)
_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)

_ELEMENTWISE = {operator.add, operator.iadd, operator.sub, operator.isub, operator.mul, operator.imul,
                operator.truediv, operator.itruediv, torch.add, torch.sub, torch.mul, torch.div,
                "add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_", "__add__", "__radd__", "__mul__",
                "__rmul__", "__sub__", "__rsub__", "__truediv__", operator.pow, torch.pow, "pow", "__pow__"}
_ADDS = {operator.add, operator.iadd, torch.add, "add", "add_", "__add__", "__radd__"}
_PASS_FUNCS = {F.relu, torch.relu, F.relu6, F.hardswish, F.hardsigmoid, F.silu, F.gelu, torch.sigmoid, F.sigmoid,
               torch.tanh, F.tanh, F.leaky_relu, F.elu, F.mish, F.dropout, F.dropout1d, F.dropout2d, torch.dropout,
               F.softmax, torch.softmax, F.log_softmax, torch.clamp, torch.clip, F.hardtanh, F.relu_, torch.relu_,
               "relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_", "softmax", "log_softmax", "clamp",
               "clamp_", "clip", "contiguous", "clone", "float", "detach", "to", "type_as", "half", "double",
               torch.abs, torch.exp, torch.sqrt, torch.rsqrt, torch.square, torch.neg, operator.neg, F.softplus,
               "abs", "exp", "sqrt", "rsqrt", "square", "neg", "__neg__"}
_SPATIAL_FUNCS = {F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d, F.adaptive_max_pool1d,
                  F.adaptive_max_pool2d, F.adaptive_max_pool3d, F.avg_pool1d, F.avg_pool2d, F.avg_pool3d,
                  F.max_pool1d, F.max_pool2d, F.max_pool3d, F.interpolate}
_RESHAPES = {torch.flatten, torch.reshape, torch.unflatten, torch.squeeze, torch.unsqueeze, "flatten", "reshape",
             "view", "unflatten", "squeeze", "unsqueeze"}
_LITERAL_SIZES = {torch.reshape, "reshape", "view"}
_PERMUTES = {torch.permute, torch.transpose, "permute", "transpose"}
_SPLITS = {torch.chunk, torch.split, "chunk", "split"}
_REDUCES = {torch.mean, torch.sum, torch.amax, "mean", "sum", "amax"}
_MATMULS = {torch.matmul, operator.matmul, torch.bmm, "matmul", "bmm"}
_SIZE_OPS = {builtins.getattr, "size", "dim", "numel", operator.eq, operator.ne, torch._assert}


def _is(module: nn.Module, classes: tuple) -> bool:
    """``module`` is one of ``classes`` and does not override its ``forward``."""
    for cls in classes:
        if isinstance(module, cls):
            return type(module).forward is cls.forward
    return False


def _tensor_at(root: nn.Module, name: str) -> Any:
    obj: Any = root
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


def _has_state(module: nn.Module) -> bool:
    """``module`` holds parameters or buffers (calling it twice shares them; a stateless one shares nothing)."""
    return any(True for _ in module.parameters()) or any(True for _ in module.buffers())


@dataclass
class LayerRecord:
    """A layer whose channels the analysis tracks (becomes dynamic when one of its groups is searched)."""

    path: str
    kind: str  # "conv", "bn", "linear", "ln", "mha"
    module: nn.Module
    axes: dict[str, Ann]
    groups: str | int = "fixed"
    kernels: tuple[int, ...] = ()


@dataclass
class FixedOp:
    """An op that fixed the channels it touches."""

    where: str
    what: str
    reason: str


@dataclass
class _Stats:
    calls: Counter = field(default_factory=Counter)


def _shape_of(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return tuple(int(s) for s in value.shape)
    if isinstance(value, (tuple, list)):
        return [_shape_of(v) for v in value]
    return None


class _Recorder(fx.Interpreter):
    def __init__(self, gm: fx.GraphModule):
        super().__init__(gm)
        self.shapes: dict[fx.Node, Any] = {}
        self.values: dict[fx.Node, Any] = {}

    def run_node(self, n: fx.Node) -> Any:
        result = super().run_node(n)
        self.shapes[n] = _shape_of(result)
        if not isinstance(result, torch.Tensor) and _shape_of(result) is None:
            self.values[n] = result
        return result


def record_shapes(gm: fx.GraphModule, inputs: tuple) -> tuple[dict[fx.Node, Any], Any]:
    """Every node's output shape (a tuple for a tensor, a list for a sequence, else ``None``), and the model's
    output (the same run: the reference that the converted space must reproduce)."""
    rec = _Recorder(gm)
    with torch.no_grad():
        out = rec.run(*inputs)
    return rec.shapes, out




class Analyzer(SizeTracking, CuttingOps, FunctionalOps):
    """Channel groups of a traced model (see the module docstring).

    Args:
        gm: the traced model.
        shapes: every node's output shape (:func:`record_shapes`).
        kernel: also find convolutions whose kernel size can be searched.

    Attributes:
        ch: the groups.
        ann: node -> its annotation (a list of :data:`Ann` per axis for a tensor, a tuple for a sequence).
        layers: module path -> :class:`LayerRecord`.
        params: ``get_attr`` target -> the annotation of each axis of that tensor.
        fixed_ops: what fixed channels, and why.
    """

    def __init__(self, gm: fx.GraphModule, shapes: dict[fx.Node, Any], kernel: bool = False):
        self.gm, self.shapes, self.kernel = gm, shapes, kernel
        self.ch = Channels()
        self.ann: dict[fx.Node, Any] = {}
        self.layers: dict[str, LayerRecord] = {}
        self.params: dict[str, list[Ann]] = {}
        self.fixed_ops: list[FixedOp] = []
        self._fixed_where: set[str] = set()  # the ``where`` of every entry of fixed_ops
        self._fixed_pairs: set[tuple[str, str]] = set()  # and its (where, reason)
        self.sizes: dict[fx.Node, Any] = {}
        self.ties: list[list[int]] = []
        self.lost: dict[fx.Node, str] = {}  # nodes whose outputs are untracked -> what they are
        self._origins: dict[fx.Node, str | None] = {}
        self._inputs: dict[fx.Node, list[fx.Node]] = {}
        self.rewrites: dict[fx.Node, int] = {}
        self.cuts: dict[fx.Node, tuple] = {}
        self.group_counts: dict[fx.Node, int] = {}
        self.functional_bns: dict[fx.Node, tuple] = {}
        self.functional_lns: dict[fx.Node, tuple] = {}  # F.layer_norm nodes -> (tensor targets, eps)  # F.batch_norm nodes -> (tensor targets, momentum, eps)  # F.group_norm nodes -> channels per group  # split/slice nodes along a searched axis -> how they cut it  # reshape node -> the size argument to write as -1  # groups whose widths must be equal (parts of a chunk)
        self.calls = Counter(str(n.target) for n in gm.graph.nodes if n.op == "call_module")

    # ------------------------------------------------------------------ helpers
    def _fresh(self, width: int, reason: str | None = UNTRACKED) -> Ann:
        return (Seg(self.ch.new(width, reason), width),)

    def _none(self, shape: Any) -> Any:
        if isinstance(shape, tuple):
            return [None] * len(shape)
        if isinstance(shape, list):
            return tuple(self._none(s) for s in shape)
        return None

    def _tensor(self, node: Any) -> list[Ann] | None:
        """A tensor input's axes (``None`` when ``node`` is not a tensor)."""
        if not isinstance(node, fx.Node) or not isinstance(self.shapes.get(node), tuple):
            return None
        a = self.ann.get(node)
        return list(a) if isinstance(a, list) else [None] * len(self.shapes[node])

    def _tensor_inputs(self, n: fx.Node) -> list[fx.Node]:
        """The tensors among ``n``'s arguments, in order (computed once per node)."""
        found = self._inputs.get(n)
        if found is None:
            found = self._inputs[n] = [x for x in _nodes_in((n.args, n.kwargs))
                                       if isinstance(self.shapes.get(x), tuple)]
        return found

    def opaque(self, n: fx.Node, reason: str, module: nn.Module | None = None) -> None:
        """Fix every channel ``n`` reads; its outputs are untracked."""
        touched = False
        for x in self._tensor_inputs(n):
            for a in self._tensor(x) or []:
                if a is not None:
                    touched = True
                    self.ch.fix_ann(a, f"{reason} at {_where(n)}")
        if (touched or module is not None) and _where(n) not in self._fixed_where:
            self._add_fixed(FixedOp(_where(n), _what(n, module), reason))
        self.ann[n] = self._none(self.shapes.get(n))
        self.lost[n] = f"{_where(n)} ({_what(n, module)}: {reason})"

    def origin(self, n: fx.Node) -> str | None:
        """Where the untracked channels of ``n`` come from: the nearest op upstream that lost track of them (an
        unknown layer or function) or the model's input, through tensors without tracked channels."""
        if n in self.lost:
            return self.lost[n]
        if n in self._origins:
            return self._origins[n]
        found = None
        if not any(True for _ in iter_segs(self.ann.get(n))):
            for x in self._tensor_inputs(n):
                found = self.origin(x)
                if found:
                    break
        self._origins[n] = found
        return found

    def untracked(self, n: fx.Node) -> str:
        """``" (from ...)"`` naming where the untracked operands of ``n`` come from, or ``""``."""
        found = []
        for x in self._tensor_inputs(n):
            o = self.origin(x)
            if o and o not in found:
                found.append(o)
        return f" (untracked from {'; '.join(found)})" if found else ""

    def _note_fixed(self, n: fx.Node, what: str, reason: str) -> None:
        if (_where(n), reason) not in self._fixed_pairs:
            self._add_fixed(FixedOp(_where(n), what, reason))

    def _add_fixed(self, f: FixedOp) -> None:
        self.fixed_ops.append(f)
        self._fixed_where.add(f.where)
        self._fixed_pairs.add((f.where, f.reason))

    def _slot(self, g: int, owner: str, attr: str, axis: int, offset: int, mult: int, role: str) -> None:
        self.ch.add_slot(g, Slot(owner, attr, axis, offset, mult, role))

    def _segs_slots(self, ann: Ann, owner: str, attrs: tuple[str, ...], axis: int, role: str) -> None:
        off = 0
        for s in ann:
            for attr in attrs:
                self._slot(s.group, owner, attr, axis, off, s.mult, role)
            off += s.width * s.mult

    # ------------------------------------------------------------------ the walk
    def run(self) -> Analyzer:
        for n in self.gm.graph.nodes:
            if n.op == "placeholder":
                self.ann[n] = self._none(self.shapes.get(n))
                self.lost[n] = f"the model's input {n.name!r}"
            elif n.op == "get_attr":
                self._get_attr(n)
            elif n.op == "call_module":
                self._module(n)
            elif n.op in ("call_function", "call_method"):
                self._function(n)
            elif n.op == "output":
                for x in _nodes_in(n.args):
                    self.ch.fix_ann(self.ann.get(x), f"the model's output ({_where(x)})")
        self._fix_tied()
        return self

    def _tensor_names(self) -> dict[int, list[str]]:
        """id of every parameter/buffer the graph reads -> the names it has (several for tied weights; a layer's
        own weight that the model also reads directly, ``F.linear(x, self.embed.weight)``, counts twice)."""
        names: dict[int, list[str]] = {}
        by_layer: set[int] = set()
        for n in self.gm.graph.nodes:
            if n.op == "call_module":
                m = self.gm.get_submodule(str(n.target))
                items = list(m.named_parameters(recurse=True)) + list(m.named_buffers(recurse=True))
                prefix = f"{n.target}."
                by_layer.update(id(t) for _, t in items)
            elif n.op == "get_attr":
                t = _tensor_at(self.gm, str(n.target))
                items = [("", t)] if isinstance(t, torch.Tensor) else []
                prefix = str(n.target)
            else:
                continue
            for attr, t in items:
                found = names.setdefault(id(t), [])
                if prefix + attr not in found:
                    found.append(prefix + attr)
        for n in self.gm.graph.nodes:
            if n.op == "get_attr":
                t = _tensor_at(self.gm, str(n.target))
                read = f"{n.target} (read directly)"
                if isinstance(t, torch.Tensor) and id(t) in by_layer and read not in names[id(t)]:
                    names[id(t)].append(read)
        return names

    def _fix_tied(self) -> None:
        """Fix the groups held by a tensor that several layers share (tied weights stay one tensor)."""
        names = self._tensor_names()
        if not any(len(v) > 1 for v in names.values()):
            return
        for r in self.ch.roots():
            for sl in self.ch.state[r].slots:
                t = _tensor_at(self.gm, sl.owner + ("." + sl.attr if sl.attr else ""))
                shared = names.get(id(t), [])
                if len(shared) > 1:
                    self.ch.fix(r, f"tied weights: {' and '.join(shared)} are one tensor (kept as it is)")
                    break

    def _get_attr(self, n: fx.Node) -> None:
        shape = self.shapes.get(n)
        if not isinstance(shape, tuple):
            self.ann[n] = None
            return
        if n.target not in self.params:
            axes: list[Ann] = []
            for i, size in enumerate(shape):
                if size > 1:
                    g = self.ch.new(size)
                    self._slot(g, str(n.target), "", i, 0, 1, "member")
                    axes.append((Seg(g, size),))
                else:
                    axes.append(None)
            self.params[str(n.target)] = axes
        self.ann[n] = list(self.params[str(n.target)])

    # ------------------------------------------------------------------ modules
    def _module(self, n: fx.Node) -> None:
        path = str(n.target)
        m = self.gm.get_submodule(path)
        if self.calls[path] > 1 and _has_state(m):
            self.opaque(n, f"called {self.calls[path]} times (shared weights keep their channels)", m)
            return
        self.fix_sizes(n, f"passed to {type(m).__name__}")
        x = self._tensor(n.args[0]) if n.args else None
        out_shape = self.shapes.get(n)
        if _is(m, _CONVS) and x is not None:
            self._conv(n, path, m, x)
        elif _is(m, _BN) and x is not None:
            self._bn(n, path, m, x)
        elif _is(m, (nn.Linear,)) and x is not None:
            self._linear(n, path, m, x)
        elif _is(m, (nn.LayerNorm,)) and x is not None:
            self._layer_norm(n, path, m, x)
        elif _is(m, (nn.GroupNorm,)) and x is not None:
            self._group_norm(n, path, m, x)
        elif _is(m, (nn.Embedding,)) and m.max_norm is None:
            out = self._fresh(m.embedding_dim, None)
            self._segs_slots(out, path, ("weight",), 1, "producer")
            self.layers[path] = LayerRecord(path, "embedding", m, {"out": out})
            self.ann[n] = self._none(self.shapes[n])[:-1] + [out]
        elif _is(m, (nn.MultiheadAttention,)):
            self._mha(n, path, m)
        elif _is(m, _ACT_MODULES) and x is not None and out_shape == self.shapes[n.args[0]]:
            self.ann[n] = x
        elif _is(m, _SPATIAL_MODULES) and x is not None and isinstance(out_shape, tuple):
            for a in x[2:]:
                if a is not None:
                    self.ch.fix_ann(a, f"laid along a spatial axis of {type(m).__name__} ({path})")
            self.ann[n] = x[:2] + [None] * (len(out_shape) - 2)
        elif _is(m, (nn.Flatten, nn.Unflatten)) and x is not None:
            self._reshape(n, n.args[0])
        else:
            self.opaque(n, "layer type unknown to hwnas.convert (kept as it is)", m)

    def _conv(self, n: fx.Node, path: str, m: nn.Module, x: list[Ann]) -> None:
        cin, cout, groups = m.in_channels, m.out_channels, m.groups
        transposed = isinstance(m, nn.modules.conv._ConvTransposeNd)
        xin = x[1] if x[1] is not None else self._fresh(cin)
        if any(s.mult != 1 for s in xin):
            self.ch.fix_ann(xin, f"features of a flattened tensor fed to the convolution {path}")
        kernels = () if transposed else self._kernel_choices(m)
        # weight axes: (out, in / groups, *k) for a convolution, (in, out / groups, *k) for a transposed one
        out_dim, in_dim = (1, 0) if transposed else (0, 1)
        if groups == 1:
            out = self._fresh(cout, None)
            self._segs_slots(out, path, ("weight",), out_dim, "producer")
            if m.bias is not None:
                self._segs_slots(out, path, ("bias",), 0, "member")
            self._segs_slots(xin, path, ("weight",), in_dim, "consumer")
            rec = LayerRecord(path, "conv", m, {"in": xin, "out": out}, "fixed", kernels)
        elif cin == cout and len(xin) == 1:
            block = cin // groups
            self.ch.constrain(xin[0].group, block=block)
            out = xin
            self._segs_slots(out, path, ("weight",), 0, "producer")  # axis 0 holds whole groups either way
            if m.bias is not None:
                self._segs_slots(out, path, ("bias",), 0, "producer")
            rec = LayerRecord(path, "conv", m, {"in": xin, "out": out}, "depthwise" if block == 1 else block, kernels)
        else:
            why = "grouped convolution whose output channels differ from its input channels" if cin != cout else \
                "grouped convolution over a concatenation"
            self.ch.fix_ann(xin, f"{why} ({path})")
            out = self._fresh(cout, f"{why} ({path})")
            rec = LayerRecord(path, "conv", m, {"in": xin, "out": out}, "fixed", kernels)
        self.layers[path] = rec
        self.ann[n] = [None, out] + self._conv_spatial(path, m, x[2:])

    def _conv_spatial(self, path: str, m: nn.Module, xs: list[Ann]) -> list[Ann]:
        """The output's spatial axes: a pointwise convolution keeps each position, so channel groups laid
        along a spatial axis (EfficientViM's state axis, fed to a Conv1d) pass through; any other convolution
        mixes neighbouring positions, so such groups keep their channels (a permutation would reorder them)."""
        pointwise = not isinstance(m.padding, str) and set(m.kernel_size) == {1} and set(m.stride) == {1} \
            and set(m.padding) == {0} and not isinstance(m, nn.modules.conv._ConvTransposeNd)
        if pointwise:
            return list(xs)
        for a in xs:
            if a is not None:
                self.ch.fix_ann(a, f"laid along a spatial axis of the convolution {path}")
        return [None] * len(xs)

    def _kernel_choices(self, m: nn.Module) -> tuple[int, ...]:
        """Odd kernel sizes up to the conv's own that keep the output shape ("same"-style padding); the kernel
        must be a cube (every spatial dim alike)."""
        if not self.kernel or isinstance(m.padding, str) or m.padding_mode != "zeros":
            return ()
        k, p, d = m.kernel_size, m.padding, m.dilation
        if len(set(k)) != 1 or k[0] < 3 or k[0] % 2 == 0 or set(d) != {1} or tuple(p) != ((k[0] - 1) // 2,) * len(k):
            return ()
        return tuple(s for s in range(1, k[0] + 1, 2))[-3:]

    def _bn(self, n: fx.Node, path: str, m: nn.Module, x: list[Ann]) -> None:
        a = x[1]
        if a is not None:
            if any(s.mult != 1 for s in a):
                self.ch.fix_ann(a, f"batch norm over flattened features ({path})")
            attrs = tuple(name for name in ("weight", "bias", "running_mean", "running_var")
                          if getattr(m, name, None) is not None)
            self._segs_slots(a, path, attrs, 0, "member")
            self.layers[path] = LayerRecord(path, "bn", m, {"in": a})
        self.ann[n] = x

    def _linear(self, n: fx.Node, path: str, m: nn.Linear, x: list[Ann]) -> None:
        xin = x[-1] if x[-1] is not None else self._fresh(m.in_features)
        out = self._fresh(m.out_features, None)
        self._segs_slots(out, path, ("weight",), 0, "producer")
        if m.bias is not None:
            self._segs_slots(out, path, ("bias",), 0, "member")
        self._segs_slots(xin, path, ("weight",), 1, "consumer")
        self.layers[path] = LayerRecord(path, "linear", m, {"in": xin, "out": out})
        self.ann[n] = x[:-1] + [out]

    def _layer_norm(self, n: fx.Node, path: str, m: nn.LayerNorm, x: list[Ann]) -> None:
        a = x[-1]
        if a is not None:
            if len(m.normalized_shape) != 1 or any(sg.mult != 1 for sg in a):
                self.ch.fix_ann(a, f"layer norm over several dims or flattened features ({path})")
            else:
                attrs = tuple(name for name in ("weight", "bias") if getattr(m, name, None) is not None)
                self._segs_slots(a, path, attrs, 0, "member")
                self.layers[path] = LayerRecord(path, "ln", m, {"in": a})
        self.ann[n] = x

    def _group_norm(self, n: fx.Node, path: str, m: nn.GroupNorm, x: list[Ann]) -> None:
        """Group norm keeps the channels per group (whole groups move together; the group count follows the
        width); a single group (timm's ``GroupNorm1``, PoolFormer) stays one group of any width (block 0)."""
        a, block = x[1], (m.num_channels // m.num_groups if m.num_groups > 1 else 0)
        if a is not None:
            if any(sg.mult != 1 or (block and sg.width % block) for sg in a):
                self.ch.fix_ann(a, f"group norm over flattened features or groups across a concatenation ({path})")
            else:
                for sg in a:
                    self.ch.constrain(sg.group, block=max(block, 1))
                attrs = ("weight", "bias") if m.affine else ()
                self._segs_slots(a, path, attrs, 0, "member")
                self.layers[path] = LayerRecord(path, "gn", m, {"in": a}, block)
        self.ann[n] = x

    def _mha(self, n: fx.Node, path: str, m: nn.MultiheadAttention) -> None:
        names = ("query", "key", "value")
        qkv = [n.args[i] if i < len(n.args) else n.kwargs.get(name) for i, name in enumerate(names)]
        axes = [self._tensor(t) for t in qkv]
        if any(a is None for a in axes) or not m._qkv_same_embed_dim or m.bias_k is not None or m.add_zero_attn:
            self.opaque(n, "attention with separate key/value sizes, bias_k/bias_v or add_zero_attn", m)
            return
        reason = f"attention input of {path} is untracked"
        e = self.ch.unite(self.ch.unite(axes[0][-1], axes[1][-1], reason), axes[2][-1], reason)
        if e is not None:
            if len(e) != 1 or e[0].mult != 1:
                self.ch.fix_ann(e, f"attention over a concatenation ({path})")
            else:
                self.ch.constrain(e[0].group, multiple=m.num_heads)
                self._slot(e[0].group, path, "in_proj_weight", 1, 0, 1, "consumer")
                self._slot(e[0].group, path, "out_proj.weight", 0, 0, 1, "producer")
                if m.out_proj.bias is not None:
                    self._slot(e[0].group, path, "out_proj.bias", 0, 0, 1, "member")
                self.layers[path] = LayerRecord(path, "mha", m, {"in": e})
        shapes = self.shapes[n]
        self.ann[n] = (axes[0][:-1] + [e], self._none(shapes[1]))

    # ------------------------------------------------------------------ functions and methods
    def _function(self, n: fx.Node) -> None:
        t = n.target
        out_shape = self.shapes.get(n)
        try:
            key_hashable = {t}
        except TypeError:
            key_hashable = set()
        first = self._tensor(n.args[0]) if n.args else None
        if self.size_source(n):
            self.ann[n] = self._none(out_shape)
            return
        if not self._tensor_inputs(n) and not isinstance(out_shape, tuple):  # arithmetic on sizes
            self.size_arith(n)
            self.ann[n] = self._none(out_shape)
            return
        if key_hashable & _SIZE_OPS:  # comparisons, assertions
            self.ann[n] = self._none(out_shape)
        elif key_hashable & _ELEMENTWISE and isinstance(out_shape, tuple):
            self._elementwise(n)  # a size used as a scalar operand is harmless
        elif key_hashable & _PASS_FUNCS and first is not None and out_shape == self.shapes[n.args[0]]:
            self.ann[n] = first
        elif key_hashable & _RESHAPES and first is not None:
            self._reshape(n, n.args[0], self._literal_sizes(n) if key_hashable & _LITERAL_SIZES else None)
        elif t == "expand" and first is not None:
            self._expand(n, first)
        elif t is F.batch_norm and first is not None and len(first) >= 2:
            self._batch_norm_f(n, first)
        elif t is F.layer_norm and first is not None and first:
            self._layer_norm_f(n, first)
        elif t is F.group_norm and first is not None and len(first) >= 2:
            self._group_norm_f(n, first)
        elif t is torch.addmm and len(n.args) == 3 and not n.kwargs:
            self._addmm(n)
        elif t is F.linear and first is not None and first:
            self._linear_f(n)
        elif t in (torch.unbind, "unbind") and first is not None:
            self._unbind(n, first)
        elif t is F.scaled_dot_product_attention and first is not None:
            self._sdpa(n)
        else:
            self.fix_sizes(n, f"an argument of {getattr(t, '__name__', t)}")
            self._function_rest(n, t, key_hashable, first, out_shape)

    def _function_rest(self, n: fx.Node, t: Any, key_hashable: set, first: list[Ann] | None, out_shape: Any) -> None:
        if t is operator.getitem:
            self._getitem(n)
        elif key_hashable & _SPATIAL_FUNCS and first is not None and isinstance(out_shape, tuple):
            self.ann[n] = first[:2] + [None] * (len(out_shape) - 2)
        elif key_hashable & _PERMUTES and first is not None:
            self._permute(n, first)
        elif t in (torch.cat, torch.concat):
            self._cat(n)
        elif t is torch.stack:
            self._stack(n)
        elif key_hashable & _SPLITS and first is not None:
            self._split(n, first)
        elif key_hashable & _REDUCES and first is not None:
            self._reduce(n, first)
        elif key_hashable & _MATMULS and first is not None:
            self._matmul(n)
        else:
            self.opaque(n, "function unknown to hwnas.convert")

    def _axis_arg(self, n: fx.Node, index: int, name: str, default: Any, ndim: int) -> Any:
        d = n.args[index] if index < len(n.args) else n.kwargs.get(name, default)
        if isinstance(d, int):
            return d + ndim if d < 0 else d
        return d

    def _elementwise(self, n: fx.Node, reason: str = "combined with an untracked tensor") -> None:
        out_shape = self.shapes[n]
        nd = len(out_shape)
        operands = [x for x in _nodes_in(n.args) if isinstance(self.shapes.get(x), tuple)]
        res: list[Ann] = [None] * nd
        for j in range(nd):
            parts = []
            for x in operands:
                xs = self.shapes[x]
                i = j - (nd - len(xs))
                if i < 0 or xs[i] != out_shape[j] or out_shape[j] == 1:
                    continue
                parts.append(self._tensor(x)[i])
            if not parts:
                continue
            acc = parts[0]
            why = f"{_what(n)} at {_where(n)} {reason}"
            if any(p is None for p in parts):
                why += self.untracked(n)
            for p in parts[1:]:
                acc = self.ch.unite(acc, p, why)
            res[j] = acc if all(p is not None for p in parts) else None
        self.ann[n] = res

    def _literal_sizes(self, n: fx.Node) -> list[Any]:
        rest = list(n.args[1:])
        if len(rest) == 1 and isinstance(rest[0], (tuple, list)):
            rest = list(rest[0])
        return rest or list(n.kwargs.get("shape", n.kwargs.get("size", ())))

    def _reshape(self, n: fx.Node, src: fx.Node, literals: list[Any] | None = None) -> None:
        s_in, s_out = self.shapes[src], self.shapes[n]
        a = self._tensor(src)
        p_in, p_out = [1], [1]
        for s in s_in:
            p_in.append(p_in[-1] * s)
        for s in s_out:
            p_out.append(p_out[-1] * s)
        res: list[Ann] = [None] * len(s_out)
        for i, ax in enumerate(a):
            if ax is None or s_in[i] == 1:
                continue
            js = [j for j in range(len(s_out)) if p_out[j] == p_in[i] and s_out[j] != 1]
            j = js[0] if js else None
            if j is not None and s_out[j] == s_in[i]:
                res[j] = ax
            elif j is not None and s_out[j] % s_in[i] == 0 and p_out[j + 1] in p_in[i + 1:]:
                extra = s_out[j] // s_in[i]
                res[j] = tuple(Seg(s.group, s.width, s.mult * extra) for s in ax)
            elif j is not None and p_in[i + 1] in p_out and self._fold(n, src, i, j, p_out.index(p_in[i + 1]), res,
                                                                      literals):
                a = self._tensor(src)
            elif (merged := self._merge_outer(a, s_in, p_in, p_out, i)) is not None:
                res[merged[0]] = merged[1]
            else:
                self.ch.fix_ann(ax, f"channel axis split or mixed by a reshape (e.g. a channel shuffle) at {_where(n)}")
                self._add_fixed(FixedOp(_where(n), _what(n), "splits or mixes the channel axis"))
        if literals is not None:
            self.check_sizes(n, literals, res, "reshape")
        else:
            self.fix_sizes(n, "a reshape argument")
        self.ann[n] = res

    @staticmethod
    def _merge_outer(a: list[Ann], s_in: tuple, p_in: list[int], p_out: list[int], i: int) -> tuple | None:
        """A reshape that merges channel axis ``i`` with untracked axes before it (and maybe after it) into one
        output axis: ``(heads, head_width) -> heads * head_width`` with the per-head width searched. The merged
        axis holds the channel segments once per outer index (as a concatenation of copies)."""
        starts = [k for k in range(i) if p_in[k] in p_out and all(a[m] is None for m in range(k, i))]
        ends = [k for k in range(i + 1, len(s_in) + 1) if p_in[k] in p_out and
                all(a[m] is None for m in range(i + 1, k))]
        if not starts or not ends:
            return None
        k0, k1 = starts[-1], ends[0]
        j = p_out.index(p_in[k0])
        if p_out[j + 1] != p_in[k1]:
            return None
        outer, inner = p_in[i] // p_in[k0], p_in[k1] // p_in[i + 1]
        return j, tuple(Seg(sg.group, sg.width, sg.mult * inner) for sg in a[i]) * outer

    def _permute(self, n: fx.Node, a: list[Ann]) -> None:
        if n.target in (torch.transpose, "transpose"):
            d0 = self._axis_arg(n, 1, "dim0", 0, len(a))
            d1 = self._axis_arg(n, 2, "dim1", 1, len(a))
            out = list(a)
            out[d0], out[d1] = a[d1], a[d0]
        else:
            dims = self._literal_sizes(n)
            out = [a[d if d >= 0 else d + len(a)] for d in dims]
        self.ann[n] = out

    def _cat(self, n: fx.Node) -> None:
        tensors = list(n.args[0]) if n.args else list(n.kwargs["tensors"])
        nd = len(self.shapes[n])
        d = self._axis_arg(n, 1, "dim", 0, nd)
        axes = [self._tensor(t) for t in tensors]
        res: list[Ann] = []
        for j in range(nd):
            if j == d:
                if all(a[j] is None for a in axes):
                    res.append(None)
                    continue
                segs: list[Seg] = []
                for t, a in zip(tensors, axes):
                    size = self.shapes[t][j]
                    if size:
                        segs.extend(a[j] if a[j] is not None else self._fresh(size))
                res.append(tuple(segs))
            else:
                acc = axes[0][j]
                for a in axes[1:]:
                    acc = self.ch.unite(acc, a[j], f"concatenation at {_where(n)} with an untracked tensor"
                                                  f"{self.untracked(n) if a[j] is None or acc is None else ''}")
                res.append(acc if all(a[j] is not None for a in axes) else None)
        self.ann[n] = res

    def _stack(self, n: fx.Node) -> None:
        tensors = list(n.args[0])
        nd = len(self.shapes[n])
        d = self._axis_arg(n, 1, "dim", 0, nd)
        axes = [self._tensor(t) for t in tensors]
        res: list[Ann] = []
        for j in range(nd - 1):
            acc = axes[0][j]
            for a in axes[1:]:
                acc = self.ch.unite(acc, a[j], f"stack at {_where(n)} with an untracked tensor")
            res.append(acc if all(a[j] is not None for a in axes) else None)
        self.ann[n] = res[:d] + [None] + res[d:]

    def _reduce(self, n: fx.Node, a: list[Ann]) -> None:
        dims = n.args[1] if len(n.args) > 1 else n.kwargs.get("dim")
        keep = n.args[2] if len(n.args) > 2 else n.kwargs.get("keepdim", False)
        if dims is None:
            self.ann[n] = self._none(self.shapes[n])
            return
        dims = {d % len(a) for d in (dims if isinstance(dims, (tuple, list)) else (dims,))}
        self.ann[n] = [None if i in dims else x for i, x in enumerate(a) if keep or i not in dims]

    def _expand(self, n: fx.Node, a: list[Ann]) -> None:
        s_in, s_out = self.shapes[n.args[0]], self.shapes[n]
        lead = len(s_out) - len(s_in)
        literals = self._literal_sizes(n)
        res: list[Ann] = [None] * lead
        for i, ax in enumerate(a):
            j = i + lead
            res.append(ax if s_in[i] == s_out[j] else None)
        self.check_sizes(n, literals, res, "expand")
        self.ann[n] = res

    def _getitem(self, n: fx.Node) -> None:
        src, idx = n.args
        parent = self.ann.get(src)
        if isinstance(parent, tuple):
            self.ann[n] = parent[idx] if isinstance(idx, (int, slice)) else self._none(self.shapes.get(n))
            return
        if not isinstance(parent, list):
            self.ann[n] = self._none(self.shapes.get(n))
            return
        items = idx if isinstance(idx, tuple) else (idx,)
        n_real = sum(1 for it in items if it is not None and it is not Ellipsis)
        out: list[Ann] = []
        dim = 0
        for it in items:
            if it is Ellipsis:
                skip = len(parent) - n_real
                out.extend(parent[dim:dim + skip])
                dim += skip
            elif it is None:
                out.append(None)
            elif isinstance(it, int):
                if parent[dim] is not None:
                    self.ch.fix_ann(parent[dim], f"indexed along the channel axis at {_where(n)}")
                dim += 1
            elif isinstance(it, slice) and all(isinstance(v, (int, type(None))) for v in (it.start, it.stop, it.step)):
                full = it.start in (None, 0) and it.stop is None and it.step in (None, 1)
                if full:
                    out.append(parent[dim])
                else:
                    out.append(self._slice(n, src, dim, it, items) if parent[dim] is not None else None)
                    parent = self._tensor(src)  # a cut rewrites the groups it cuts
                dim += 1
            else:
                self.opaque(n, "indexing with tensors or computed bounds")
                return
        out.extend(parent[dim:])
        self.ann[n] = out


def residual_path(nodes: set[fx.Node], start: fx.Node, end: fx.Node, gm: fx.GraphModule) -> bool:
    """True when ``end`` is reached from ``start`` through adds and shape-keeping pass-through ops only."""
    seen, todo = set(), [start]
    while todo:
        x = todo.pop()
        if x is end:
            return True
        for u in x.users:
            if u in seen or u not in nodes:
                continue
            ok = False
            if u.op in ("call_function", "call_method"):
                try:
                    ok = u.target in _ADDS or u.target in _PASS_FUNCS
                except TypeError:
                    ok = False
            elif u.op == "call_module":
                ok = _is(gm.get_submodule(str(u.target)), _ACT_MODULES)
            if ok:
                seen.add(u)
                todo.append(u)
    return False


def segs_of(ann: Any) -> list[Seg]:
    return list(iter_segs(ann))
