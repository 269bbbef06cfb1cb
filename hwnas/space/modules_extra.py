"""Dynamic layers built from existing ``torch.nn`` layers, for converted models (:func:`hwnas.convert`).

Unlike :mod:`hwnas.space.modules`, whose channel counts are single values, these layers describe each
channel axis as a list of *segments* ``(value, full, mult)``: ``full`` channels of which the first
``value`` (an int, :class:`~hwnas.space.choice.Choice` or expression) are active, each channel spanning
``mult`` consecutive features (a channel axis flattened with trailing spatial dims, as in ``flatten`` before
a ``Linear``). An axis fed by a concatenation has several segments (DenseNet), so the active channels are
the first ``value`` of every segment, gathered.

Every layer takes the ``torch.nn`` layer it replaces (already in the channel order it should use),
computes with the active slice under the applied sample, and exports a plain ``torch.nn`` layer of the
same class with copied weights.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from hwnas.space import Choice
    >>> w = Choice([4, 8], label="w")
    >>> conv = DynConv2d(nn.Conv2d(3, 8, 3, padding=1), [(3, 3, 1)], [(w, 8, 1)])
    >>> conv.export({"w": 4})
    Conv2d(3, 4, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1))
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hwnas.space.choice import ChoiceExpr, evaluate, is_choice, value_range
from hwnas.space.modules import HwnasModule

__all__ = ["SegAxis", "DynConv", "DynConv2d", "DynBatchNorm", "DynLinear", "DynLayerNorm", "DynGroupNorm",
           "DynMultiheadAttention",
           "width_values", "max_width"]

Resolve = Callable[[Any], Any]


def _sum(values: Sequence[Any]) -> Any:
    """The sum of ints and choice values, as an int when nothing is a choice."""
    if not any(is_choice(v) for v in values):
        return sum(values)
    return ChoiceExpr(lambda *xs: sum(xs), *values)


class SegAxis:
    """One channel axis of a dynamic layer: segments ``(value, full, mult)`` laid out one after another.

    Attributes:
        segs: the segments.
        width: the active number of features (``sum(value * mult)``), an int or an expression.
        full: the number of features of the full layer.
    """

    def __init__(self, segs: Sequence[tuple[Any, int, int]]):
        self.segs = tuple((v, int(f), int(m)) for v, f, m in segs)
        if not self.segs:
            raise ValueError("a channel axis needs at least one segment (value, full, mult).")
        self.full = sum(f * m for _, f, m in self.segs)
        self.width = _sum([v * m if m != 1 else v for v, _, m in self.segs])
        self.channels = _sum([v for v, _, _ in self.segs])
        self._cache: dict[tuple, Any] = {}

    @property
    def dynamic(self) -> bool:
        return any(is_choice(v) for v, _, _ in self.segs)

    def index(self, resolve: Resolve) -> slice | torch.Tensor:
        """The active features: a slice for one segment, else a gather index (cached per sample)."""
        vals = tuple(int(resolve(v)) for v, _, _ in self.segs)
        hit = self._cache.get(vals)
        if hit is not None:
            return hit
        if len(self.segs) == 1:
            out: Any = slice(0, vals[0] * self.segs[0][2])
        elif all(v == f for v, (_, f, _) in zip(vals, self.segs)):
            out = slice(0, self.full)
        else:
            parts, off = [], 0
            for v, (_, f, m) in zip(vals, self.segs):
                parts.append(torch.arange(off, off + v * m))
                off += f * m
            out = torch.cat(parts)
        self._cache[vals] = out
        return out

    def __repr__(self) -> str:
        return f"SegAxis({list(self.segs)!r})"


def _take(t: torch.Tensor | None, idx: Any, axis: int = 0) -> torch.Tensor | None:
    if t is None:
        return None
    if isinstance(idx, slice):
        if idx == slice(0, t.shape[axis]):
            return t
        return t.narrow(axis, idx.start, idx.stop - idx.start)
    return t.index_select(axis, idx.to(t.device))


def _param(t: torch.Tensor | None) -> nn.Parameter | None:
    """The layer's tensor as a parameter of the dynamic layer, sharing its storage (a dynamic layer takes over
    the layer it replaces; copying every weight again would double the memory and time of a conversion)."""
    if t is None:
        return None
    return t if isinstance(t, nn.Parameter) else nn.Parameter(t.detach(), requires_grad=t.requires_grad)


def _copy_into(dst: torch.Tensor | None, src: torch.Tensor | None) -> None:
    if dst is not None and src is not None:
        with torch.no_grad():
            dst.copy_(src)


_FORWARD = {(False, 1): F.conv1d, (False, 2): F.conv2d, (False, 3): F.conv3d,
            (True, 1): F.conv_transpose1d, (True, 2): F.conv_transpose2d, (True, 3): F.conv_transpose3d}


def _torch_conv_class(conv: nn.Module) -> type:
    """The ``torch.nn`` convolution class that ``conv`` is (or derives from without a new ``forward``)."""
    for cls in (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d):
        if isinstance(conv, cls):
            return cls
    raise TypeError(f"DynConv needs a torch.nn convolution (Conv1d/2d/3d, ConvTranspose1d/2d/3d), got "
                    f"{type(conv).__name__}.")


class DynConv(HwnasModule):
    """A convolution (``Conv1d/2d/3d`` or ``ConvTranspose1d/2d/3d``) with searchable input/output channels,
    kernel size and (following the width) groups.

    Weight layouts: a convolution's weight is ``(out, in / groups, *k)``, a transposed convolution's is
    ``(in, out / groups, *k)``; the active channels are taken along the matching axes.

    Args:
        conv: the convolution to take weights and settings from.
        in_segs: the input channel axis (segments); ``mult`` must be 1.
        out_segs: the output channel axis (segments).
        kernel_size: ``None`` to keep the kernel, or a choice of odd sizes up to the conv's (a cube: every
            spatial dim alike); smaller kernels use the centre of the weights and "same" padding
            ``(k - 1) // 2`` (not for transposed convolutions).
        groups: ``"fixed"`` (the conv's groups), ``"depthwise"`` (groups = channels, in = out) or an int
            ``b``: grouped with ``b`` channels per group (groups = channels // b, in = out).
    """

    def __init__(self, conv: nn.Module, in_segs: Sequence, out_segs: Sequence, kernel_size: Any = None,
                 groups: str | int = "fixed"):
        super().__init__()
        self.export_cls = _torch_conv_class(conv)
        self.transposed = isinstance(conv, nn.modules.conv._ConvTransposeNd)
        self.nsp = conv.weight.ndim - 2
        self.in_axis, self.out_axis = SegAxis(in_segs), SegAxis(out_segs)
        if self.in_axis.full != conv.in_channels or self.out_axis.full != conv.out_channels:
            raise ValueError(f"DynConv: segments give {self.in_axis.full} -> {self.out_axis.full} channels but the "
                             f"conv has {conv.in_channels} -> {conv.out_channels}.")
        if kernel_size is not None and self.transposed:
            raise ValueError("DynConv: kernel choices are for convolutions, not transposed convolutions.")
        self.in_channels, self.out_channels = self.in_axis.width, self.out_axis.width
        self.searched_kernel = kernel_size is not None
        self.kernel_size = kernel_size if kernel_size is not None else tuple(conv.kernel_size)
        self.stride, self.dilation = tuple(conv.stride), tuple(conv.dilation)
        self.padding = conv.padding if isinstance(conv.padding, str) else tuple(conv.padding)
        self.output_padding = tuple(conv.output_padding) if self.transposed else ()
        self.padding_mode = conv.padding_mode
        self._reversed_padding = list(getattr(conv, "_reversed_padding_repeated_twice", ()))
        self.groups_mode = groups
        if groups == "fixed":
            self.groups: Any = conv.groups
        elif groups == "depthwise":
            self.groups = self.out_channels
        else:
            b = int(groups)
            self.groups = ChoiceExpr(lambda c, b=b: c // b, self.out_channels) if is_choice(self.out_channels) \
                else self.out_channels // b
        self.slice_input = groups == "fixed" and conv.groups == 1
        # the weight axis of the output channels and of the input channels (sliced only without groups)
        self.out_dim = 1 if self.transposed and self.slice_input else 0
        self.in_dim = 0 if self.transposed else 1
        self.weight = _param(conv.weight)
        self.bias = _param(conv.bias)

    def choice_values(self) -> list[Any]:
        return [self.in_channels, self.out_channels, self.kernel_size, self.groups]

    def kernel(self, resolve: Resolve) -> tuple[int, ...]:
        k = resolve(self.kernel_size)
        return tuple(k) if isinstance(k, (tuple, list)) else (k,) * self.nsp

    def padding_for(self, k: tuple) -> Any:
        if not self.searched_kernel:
            return self.padding
        return tuple(d * (kk - 1) // 2 for d, kk in zip(self.dilation, k))

    def _pad_list(self, k: tuple) -> list[int]:
        if not self.searched_kernel:
            return self._reversed_padding
        return [v for p in reversed(self.padding_for(k)) for v in (p, p)]

    def _weights(self, resolve: Resolve):
        k = self.kernel(resolve)
        w = _take(self.weight, self.out_axis.index(resolve), self.out_dim)
        if self.slice_input:
            w = _take(w, self.in_axis.index(resolve), self.in_dim)
        if self.searched_kernel and k != tuple(w.shape[2:]):
            for i, kk in enumerate(k):
                w = w.narrow(2 + i, (w.shape[2 + i] - kk) // 2, kk)
        b = _take(self.bias, self.out_axis.index(resolve), 0)
        return w, b, k, int(resolve(self.groups))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w, b, k, groups = self._weights(self.active)
        fn = _FORWARD[(self.transposed, self.nsp)]
        if self.transposed:
            return fn(x, w, b, self.stride, self.padding, self.output_padding, groups, self.dilation)
        if self.padding_mode != "zeros":
            x = F.pad(x, self._pad_list(k), mode=self.padding_mode)
            return fn(x, w, b, self.stride, 0, self.dilation, groups)
        return fn(x, w, b, self.stride, self.padding_for(k), self.dilation, groups)

    def export(self, sample: dict[str, Any]) -> nn.Module:
        def resolve(v):
            return evaluate(v, sample)

        w, b, k, groups = self._weights(resolve)
        cin, cout = int(resolve(self.in_channels)), int(resolve(self.out_channels))
        kw = dict(stride=self.stride, padding=self.padding_for(k), dilation=self.dilation, groups=groups,
                  bias=b is not None, padding_mode=self.padding_mode)
        if self.transposed:
            kw["output_padding"] = self.output_padding
        out = self.export_cls(cin, cout, k, **kw)
        _copy_into(out.weight, w)
        _copy_into(out.bias, b)
        return out


#: The former name of :class:`DynConv` (it handles every convolution now).
DynConv2d = DynConv


class DynBatchNorm(HwnasModule):
    """Batch normalisation (1-D, 2-D or 3-D) over a searchable, possibly segmented, channel axis."""

    def __init__(self, bn: nn.modules.batchnorm._BatchNorm, segs: Sequence):
        super().__init__()
        self.axis = SegAxis(segs)
        self.num_features = self.axis.width
        self.eps, self.momentum = bn.eps, bn.momentum
        self.affine, self.track_running_stats = bn.affine, bn.track_running_stats
        self.export_cls = type(bn)
        self.weight, self.bias = _param(bn.weight), _param(bn.bias)
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            buf = getattr(bn, name, None)
            self.register_buffer(name, None if buf is None else buf.detach().clone())

    def choice_values(self) -> list[Any]:
        return [self.num_features]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idx = self.axis.index(self.active)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:
                factor = 1.0 / float(self.num_batches_tracked)
        use_batch = self.training or self.running_mean is None
        rm, rv = _take(self.running_mean, idx), _take(self.running_var, idx)
        out = F.batch_norm(x, rm if not self.training or self.track_running_stats else None,
                           rv if not self.training or self.track_running_stats else None,
                           _take(self.weight, idx), _take(self.bias, idx), use_batch, factor, self.eps)
        if self.training and self.track_running_stats and not isinstance(idx, slice):
            with torch.no_grad():  # a gathered index works on copies: write the updated statistics back
                self.running_mean[idx] = rm
                self.running_var[idx] = rv
        return out

    def export(self, sample: dict[str, Any]) -> nn.Module:
        idx = self.axis.index(lambda v: evaluate(v, sample))
        c = int(evaluate(self.num_features, sample))
        out = self.export_cls(c, self.eps, self.momentum, self.affine, self.track_running_stats)
        for name in ("weight", "bias", "running_mean", "running_var"):
            _copy_into(getattr(out, name), _take(getattr(self, name), idx))
        _copy_into(out.num_batches_tracked, self.num_batches_tracked)
        return out


class DynLinear(HwnasModule):
    """A ``Linear`` layer whose input features (segmented, with ``mult``) and output features are searchable."""

    def __init__(self, linear: nn.Linear, in_segs: Sequence, out_segs: Sequence):
        super().__init__()
        self.in_axis, self.out_axis = SegAxis(in_segs), SegAxis(out_segs)
        self.in_features, self.out_features = self.in_axis.width, self.out_axis.width
        self.weight, self.bias = _param(linear.weight), _param(linear.bias)

    def choice_values(self) -> list[Any]:
        return [self.in_features, self.out_features]

    def _weights(self, resolve: Resolve):
        out_idx = self.out_axis.index(resolve)
        w = _take(_take(self.weight, out_idx, 0), self.in_axis.index(resolve), 1)
        return w, _take(self.bias, out_idx, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w, b = self._weights(self.active)
        return F.linear(x, w, b)

    def export(self, sample: dict[str, Any]) -> nn.Linear:
        w, b = self._weights(lambda v: evaluate(v, sample))
        out = nn.Linear(w.shape[1], w.shape[0], bias=b is not None)
        _copy_into(out.weight, w)
        _copy_into(out.bias, b)
        return out


class DynLayerNorm(HwnasModule):
    """``LayerNorm`` over the last dim, whose width is searchable (statistics over the active features; an
    axis of several segments, a concatenation as in Swin's patch merging, gathers them)."""

    def __init__(self, ln: nn.LayerNorm, segs: Sequence):
        super().__init__()
        if len(ln.normalized_shape) != 1:
            raise ValueError(f"DynLayerNorm needs a 1-D normalized_shape, got {tuple(ln.normalized_shape)}.")
        self.axis = SegAxis(segs)
        if any(m != 1 for _, _, m in self.axis.segs):
            raise ValueError(f"DynLayerNorm needs plain segments (mult 1), got {self.axis!r}.")
        self.width = self.axis.width
        self.eps, self.elementwise_affine = ln.eps, ln.elementwise_affine
        self.weight, self.bias = _param(ln.weight), _param(ln.bias)

    def choice_values(self) -> list[Any]:
        return [self.width]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idx = self.axis.index(self.active)
        c = int(self.active(self.width))
        return F.layer_norm(x, (c,), _take(self.weight, idx), _take(self.bias, idx), self.eps)

    def export(self, sample: dict[str, Any]) -> nn.LayerNorm:
        idx = self.axis.index(lambda v: evaluate(v, sample))
        c = int(evaluate(self.width, sample))
        out = nn.LayerNorm(c, self.eps, self.elementwise_affine, bias=self.bias is not None)
        _copy_into(out.weight, _take(self.weight, idx))
        _copy_into(out.bias, _take(self.bias, idx))
        return out


class DynGroupNorm(HwnasModule):
    """``GroupNorm`` over a searchable channel axis that keeps the channels per group (``block``): the group
    count is the active width over ``block``; ``block`` 0 keeps one group of any width."""

    def __init__(self, gn: nn.GroupNorm, segs: Sequence, block: int):
        super().__init__()
        self.axis = SegAxis(segs)
        self.num_channels, self.block = self.axis.width, int(block)
        self.eps, self.affine = gn.eps, gn.affine
        self.weight, self.bias = _param(gn.weight), _param(gn.bias)

    def choice_values(self) -> list[Any]:
        return [self.num_channels]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idx = self.axis.index(self.active)
        c = int(self.active(self.num_channels))
        return F.group_norm(x, c // self.block if self.block else 1, _take(self.weight, idx), _take(self.bias, idx), self.eps)

    def export(self, sample: dict[str, Any]) -> nn.GroupNorm:
        idx = self.axis.index(lambda v: evaluate(v, sample))
        c = int(evaluate(self.num_channels, sample))
        out = nn.GroupNorm(c // self.block if self.block else 1, c, self.eps, self.affine)
        _copy_into(out.weight, _take(self.weight, idx))
        _copy_into(out.bias, _take(self.bias, idx))
        return out


class DynMultiheadAttention(HwnasModule):
    """Self-attention (``nn.MultiheadAttention``) whose embedding width is searchable, heads kept.

    With an embedding width ``E'`` of the original ``E``, the input and output projections use the first
    ``E'`` embedding features, and each of the ``num_heads`` heads keeps its first ``E' / num_heads`` inner
    dims. At construction the inner dims of every head are sorted by importance (the L1 norms of the
    query+key rows, and of the value rows plus the output-projection columns), a reordering that does not
    change the function, so that the kept dims are the most important. ``E'`` must be a multiple of
    ``num_heads`` (the converter makes the width choices so).

    Args:
        mha: the attention layer (``_qkv_same_embed_dim``, no ``bias_k``/``add_zero_attn``).
        segs: the embedding axis, one segment.
    """

    def __init__(self, mha: nn.MultiheadAttention, segs: Sequence):
        super().__init__()
        self.axis = SegAxis(segs)
        if len(self.axis.segs) != 1 or not mha._qkv_same_embed_dim or mha.bias_k is not None or mha.add_zero_attn:
            raise ValueError("DynMultiheadAttention supports self-attention with one embedding segment, packed "
                             "input projection, no bias_k/bias_v and add_zero_attn=False.")
        self.embed_dim, self.num_heads = self.axis.width, mha.num_heads
        self.full_embed = mha.embed_dim
        self.head_dim = mha.embed_dim // mha.num_heads
        self.dropout, self.batch_first = mha.dropout, mha.batch_first
        e, h, hd = mha.embed_dim, mha.num_heads, self.head_dim
        w_in = mha.in_proj_weight.detach().clone()
        b_in = None if mha.in_proj_bias is None else mha.in_proj_bias.detach().clone()
        w_out = mha.out_proj.weight.detach().clone()
        qk_score = (w_in[:e].abs().sum(1) + w_in[e:2 * e].abs().sum(1)).view(h, hd)
        vo_score = (w_in[2 * e:].abs().sum(1) + w_out.abs().sum(0)).view(h, hd)
        base = torch.arange(h)[:, None] * hd
        qk = (base + torch.argsort(qk_score, dim=1, descending=True, stable=True)).reshape(-1)
        vo = (base + torch.argsort(vo_score, dim=1, descending=True, stable=True)).reshape(-1)
        rows = torch.cat([qk, e + qk, 2 * e + vo])
        self.in_proj_weight = nn.Parameter(w_in[rows])
        self.in_proj_bias = None if b_in is None else nn.Parameter(b_in[rows])
        self.out_proj_weight = nn.Parameter(w_out[:, vo])
        self.out_proj_bias = _param(mha.out_proj.bias)
        self._cache: dict[int, tuple] = {}

    def choice_values(self) -> list[Any]:
        return [self.embed_dim]

    def _index(self, e: int) -> tuple[torch.Tensor, torch.Tensor]:
        hit = self._cache.get(e)
        if hit is None:
            per = e // self.num_heads
            inner = (torch.arange(self.num_heads)[:, None] * self.head_dim + torch.arange(per)[None]).reshape(-1)
            rows = torch.cat([inner, self.full_embed + inner, 2 * self.full_embed + inner])
            hit = self._cache[e] = (inner, rows)
        return hit

    def _weights(self, e: int):
        inner, rows = self._index(e)
        w_in = self.in_proj_weight[rows][:, :e]
        b_in = None if self.in_proj_bias is None else self.in_proj_bias[rows]
        w_out = self.out_proj_weight[:e][:, inner]
        b_out = None if self.out_proj_bias is None else self.out_proj_bias[:e]
        return w_in, b_in, w_out, b_out

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, key_padding_mask=None,
                need_weights: bool = True, attn_mask=None, average_attn_weights: bool = True,
                is_causal: bool = False):
        e = int(self.active(self.embed_dim))
        w_in, b_in, w_out, b_out = self._weights(e)
        if self.batch_first:
            query, key, value = (t.transpose(1, 0) for t in (query, key, value))
        out, weights = F.multi_head_attention_forward(
            query, key, value, e, self.num_heads, w_in, b_in, None, None, False, self.dropout, w_out, b_out,
            training=self.training, key_padding_mask=key_padding_mask, need_weights=need_weights,
            attn_mask=attn_mask, average_attn_weights=average_attn_weights, is_causal=is_causal)
        if self.batch_first:
            out = out.transpose(1, 0)
        return out, weights

    def export(self, sample: dict[str, Any]) -> nn.MultiheadAttention:
        e = int(evaluate(self.embed_dim, sample))
        w_in, b_in, w_out, b_out = self._weights(e)
        out = nn.MultiheadAttention(e, self.num_heads, dropout=self.dropout, bias=b_in is not None,
                                    batch_first=self.batch_first)
        _copy_into(out.in_proj_weight, w_in)
        _copy_into(out.in_proj_bias, b_in)
        _copy_into(out.out_proj.weight, w_out)
        _copy_into(out.out_proj.bias, b_out)
        return out


def width_values(width: int, ratios: Sequence[float], divisor: int | None = None, multiple: int = 1) -> list[int]:
    """Channel counts ``ratio * width`` rounded to a multiple of ``lcm(divisor, multiple)`` (at least one
    such multiple), unique and sorted; the full ``width`` is always one of them.

    Example:
        >>> width_values(64, (0.25, 0.5, 0.75, 1.0))
        [16, 32, 48, 64]
        >>> width_values(400, (0.25, 0.5, 0.75, 1.0), multiple=16)
        [96, 208, 304, 400]
    """
    d = math.lcm(int(divisor or 1), int(multiple or 1))
    out = {int(width)}
    for r in ratios:
        v = max(d, int(r * width / d + 0.5) * d)
        if v <= width:
            out.add(v)
    return sorted(out)


def max_width(value: Any) -> int:
    """The largest value of a channel count."""
    return max(value_range(value))
