"""Shape rules for the dynamic layers of converted models (:mod:`hwnas.space.modules_extra`) and for the
few tensor ops that plain models use and the core rules lack (``unflatten``, ``==`` on sizes,
``torch._assert``).

The dynamic layers reuse the canonical op names of their ``torch.nn`` counterparts (``"conv"``,
``"batch_norm"``, ``"linear"``, ``"layer_norm"``, ``"multihead_attention"``), so the FLOP rules that match
fvcore apply unchanged; a sliced parameter is ``"param_slice"``.
"""

from __future__ import annotations

import operator
from typing import Any

import torch

from hwnas.graph.larray import from_value
from hwnas.graph.registry import Call, TensorMeta, numel, register_shape_rule
from hwnas.graph.rules_nn import _conv, attention, batch_norm, check_dim, layer_norm, linear
from hwnas.graph.rules_tensor import normalize_dim
from hwnas.space.modules_data import DynEmbedding, DynParam, DynSlice, DynSplit
from hwnas.space.modules_extra import (
    DynBatchNorm,
    DynConv,
    DynGroupNorm,
    DynLayerNorm,
    DynLinear,
    DynMultiheadAttention,
)

__all__: list[str] = []

register_shape_rule(DynBatchNorm, op="batch_norm")(batch_norm)
register_shape_rule(DynLinear, op="linear")(linear)
register_shape_rule(DynLayerNorm, op="layer_norm")(layer_norm)


@register_shape_rule(DynConv, op="conv")
def _dyn_conv(call: Call) -> TensorMeta:
    m, x = call.module, call.tensor(0)
    check_dim(call, "in_channels", from_value(m.in_channels), x.shape[1])
    k = from_value(m.kernel_size)
    kernel = tuple(k) if isinstance(k, tuple) else (k,) * m.nsp
    padding = m.padding_for(kernel)
    if m.padding_mode != "zeros" and not m.transposed:  # padded explicitly before a zero-padding convolution
        pads = m._pad_list(kernel)  # (last dim left, right, previous dim left, right, ...)
        spatial = tuple(x.shape[2 + i] + pads[2 * (m.nsp - 1 - i)] + pads[2 * (m.nsp - 1 - i) + 1]
                        for i in range(m.nsp))
        x = TensorMeta((*x.shape[:2], *spatial))
        padding = (0,) * m.nsp
    return _conv(call, x, from_value(m.out_channels), kernel, m.stride, padding, m.dilation, from_value(m.groups),
                 m.bias is not None, m.transposed, m.output_padding)


@register_shape_rule(DynMultiheadAttention, op="multihead_attention")
def _dyn_mha(call: Call) -> tuple:
    emb = from_value(call.module.embed_dim)
    return attention(call, emb, emb, emb)


@register_shape_rule(DynParam, op="param_slice")
def _param_slice(call: Call) -> TensorMeta:
    m = call.module
    out = TensorMeta(m.shape(from_value))
    call.attrs.update(is_parameter=m.is_parameter, numel=numel(out))
    return out


@register_shape_rule(DynGroupNorm, op="group_norm")
def _dyn_group_norm(call: Call) -> TensorMeta:
    x = call.tensor(0)
    check_dim(call, "num_channels", from_value(call.module.num_channels), x.shape[1])
    call.attrs.update(affine=call.module.affine, channels=x.shape[1])
    return x


@register_shape_rule(DynEmbedding, op="dyn_embedding")
def _dyn_embedding(call: Call) -> TensorMeta:
    ids, m = call.tensor(0), call.module
    dim = from_value(m.embedding_dim)
    call.attrs.update(num_embeddings=m.num_embeddings, embedding_dim=dim)
    return TensorMeta((*ids.shape, dim))


@register_shape_rule(DynSplit, op="split")
def _dyn_split(call: Call) -> tuple:
    x, m = call.tensor(0), call.module
    return tuple(TensorMeta((*x.shape[:m.dim], from_value(s), *x.shape[m.dim + 1:])) for s in m.sizes)


@register_shape_rule(DynSlice, op="getitem")
def _dyn_slice(call: Call) -> TensorMeta:
    x, m = call.tensor(0), call.module
    return TensorMeta((*x.shape[:m.dim], from_value(m.width), *x.shape[m.dim + 1:]))


@register_shape_rule(torch.unflatten, "unflatten", op="reshape")
def _unflatten(call: Call) -> TensorMeta:
    x = call.tensor(0)
    d = normalize_dim(call.arg(1, "dim"), x.ndim)
    sizes = list(call.arg(2, "sizes"))
    if any(isinstance(s, int) and s == -1 for s in sizes):
        known: Any = 1
        for s in sizes:
            if not (isinstance(s, int) and s == -1):
                known = known * s
        sizes = [x.shape[d] // known if isinstance(s, int) and s == -1 else s for s in sizes]
    return TensorMeta((*x.shape[:d], *sizes, *x.shape[d + 1:]))


def _compare(name: str, fn):
    def rule(call: Call) -> Any:
        if call.tensors():
            raise NotImplementedError(f"{call.path!r}: elementwise tensor comparison {name!r} has no shape rule; "
                                      f"register one with hwnas.graph.register_shape_rule(operator.{name}, "
                                      "overwrite=True).")
        return fn(*call.args)

    return rule


for _name, _fn in {"eq": operator.eq, "ne": operator.ne}.items():
    register_shape_rule(_fn, op=_name)(_compare(_name, _fn))


@register_shape_rule(torch._assert, op="assert")
def _assert(call: Call) -> None:
    """``torch._assert(cond, msg)`` on sizes: checked here when the condition is concrete."""
    cond = call.arg(0, "condition")
    if isinstance(cond, bool) and not cond:
        raise ValueError(f"{call.path!r}: the model's assertion fails for this input: {call.arg(1, 'message')}")
    return None
