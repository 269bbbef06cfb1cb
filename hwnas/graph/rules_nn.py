"""Shape rules for layers: convolution, linear, normalisation, pooling, attention, activations.

Each rule returns the output and records in ``call.attrs`` what the cost rules need. Dims may be ints
or :class:`~hwnas.graph.larray.LArray`; rules use only arithmetic that works for both.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch.nn.functional as F
from torch import nn

from hwnas.graph.larray import LArray, dims_equal, from_value, where
from hwnas.graph.registry import Call, TensorMeta, register_shape_rule
from hwnas.space import modules as hnn

__all__ = ["ShapeMismatchError", "attention", "conv_out", "pool_out", "check_dim", "need_batch", "scale_size"]


class ShapeMismatchError(ValueError):
    """A declared size does not match the tensor that flows in."""


def _tuple(v: Any, n: int) -> tuple:
    return tuple(v) if isinstance(v, (tuple, list)) else (v,) * n


_LAYOUT = {2: "(N, C)", 3: "(N, C, L)", 4: "(N, C, H, W)", 5: "(N, C, D, H, W)"}


def need_batch(call: Call, x: TensorMeta, ranks: tuple[int, ...], layout: bool = True) -> None:
    """Raise a clear error when ``x`` has not one of ``ranks`` dims (usually: the batch dim is missing).

    ``layout`` names the channels-first layout of each rank in the message (for convolutions, norms, pools).
    """
    if ranks and x.ndim not in ranks:
        layer = type(call.module).__name__ if call.module is not None else call.op_type
        expected = " or ".join(_LAYOUT.get(r, f"{r} dims") for r in ranks) if layout else "dims"
        missing = "; did you forget the batch dimension? hwnas profiles batched inputs: pass x.unsqueeze(0) for " \
                  "one sample" if x.ndim + 1 in ranks else ""
        raise ShapeMismatchError(f"{call.path or '<root>'!r} ({layer}) expects an input of rank "
                                 f"{' or '.join(map(str, ranks))} {expected}, got rank {x.ndim} with shape "
                                 f"{tuple(x.shape)}{missing}.")


def check_dim(call: Call, what: str, declared: Any, got: Any) -> None:
    """Raise :class:`ShapeMismatchError` unless ``declared`` equals ``got`` for every sample."""
    if not dims_equal(declared, got, call.activity):
        raise ShapeMismatchError(
            f"{call.path or '<root>'!r} ({type(call.module).__name__ if call.module is not None else call.op_type}) declares "
            f"{what} = {_show(declared)} but its input has {_show(got)}; make the layer's declared size the same "
            "value (the same Choice or expression) as the producer's output."
        )


def _show(d: Any) -> str:
    if isinstance(d, LArray):
        return f"{d.data.ravel().tolist()} over {list(d.labels)}"
    return repr(d)


def _tidy(d: Any) -> Any:
    """Drop label axes a dim does not really depend on (e.g. 'same' padding cancels the kernel size)."""
    return d.squeeze() if isinstance(d, LArray) else d


def conv_out(size: Any, k: Any, s: Any, p: Any, d: Any) -> Any:
    """Output length of a convolution or pooling window (floor mode)."""
    return _tidy((size + 2 * p - d * (k - 1) - 1) // s + 1)


def pool_out(size: Any, k: Any, s: Any, p: Any, d: Any, ceil_mode: bool) -> Any:
    """Output length of a pooling window, with PyTorch's ceil-mode rule."""
    if not ceil_mode:
        return conv_out(size, k, s, p, d)
    span = size + 2 * p - d * (k - 1) - 1
    out = -((-span) // s) + 1
    return _tidy(where((out - 1) * s >= size + p, out - 1, out))


def _conv(call: Call, x: TensorMeta, cout: Any, k: tuple, s: tuple, p: Any, d: tuple, groups: Any, bias: bool,
          transposed: bool = False, out_pad: tuple = ()) -> TensorMeta:
    nsp = x.ndim - 2
    if isinstance(p, str):
        if p == "valid":
            p = (0,) * nsp
        elif p == "same":
            p = None
        else:
            raise ValueError(f"{call.path!r}: unknown padding {p!r}; use an int, a tuple, 'same' or 'valid'.")
    spatial = []
    for i in range(nsp):
        if transposed:
            out = _tidy((x.shape[2 + i] - 1) * s[i] - 2 * p[i] + d[i] * (k[i] - 1) + out_pad[i] + 1)
        elif p is None:
            out = x.shape[2 + i]
        else:
            out = conv_out(x.shape[2 + i], k[i], s[i], p[i], d[i])
        spatial.append(out)
    call.attrs.update(kernel=k, stride=s, padding=p, dilation=d, groups=groups, in_channels=x.shape[1],
                      out_channels=cout, bias=bias, transposed=transposed)
    return TensorMeta((x.shape[0], cout, *spatial))


@register_shape_rule(nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
def conv(call: Call) -> TensorMeta:
    m, x = call.module, call.tensor(0)
    need_batch(call, x, (len(m.kernel_size) + 2,))
    check_dim(call, "in_channels", m.in_channels, x.shape[1])
    transposed = isinstance(m, nn.modules.conv._ConvTransposeNd)
    return _conv(call, x, m.out_channels, m.kernel_size, m.stride, m.padding, m.dilation, m.groups, m.bias is not None,
                 transposed, getattr(m, "output_padding", ()))


@register_shape_rule(F.conv1d, F.conv2d, F.conv3d, op="conv")
def _conv_functional(call: Call) -> TensorMeta:
    x, w = call.tensor(0), call.tensor(1, "weight")
    need_batch(call, x, (w.ndim,))
    nsp = x.ndim - 2
    groups = call.arg(6, "groups", 1)
    check_dim(call, "in_channels (weight.shape[1] * groups)", w.shape[1] * groups, x.shape[1])
    return _conv(call, x, w.shape[0], tuple(w.shape[2:]), _tuple(call.arg(3, "stride", 1), nsp),
                 _tuple(call.arg(4, "padding", 0), nsp) if not isinstance(call.arg(4, "padding", 0), str)
                 else call.arg(4, "padding"), _tuple(call.arg(5, "dilation", 1), nsp), groups,
                 call.arg(2, "bias") is not None)


@register_shape_rule(F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d, op="conv")
def _conv_transpose_functional(call: Call) -> TensorMeta:
    # conv_transpose(input, weight, bias, stride, padding, output_padding, groups, dilation);
    # weight is (in_channels, out_channels / groups, *kernel)
    x, w = call.tensor(0), call.tensor(1, "weight")
    nsp = x.ndim - 2
    groups = call.arg(6, "groups", 1)
    check_dim(call, "in_channels (weight.shape[0])", w.shape[0], x.shape[1])
    return _conv(call, x, w.shape[1] * groups, tuple(w.shape[2:]), _tuple(call.arg(3, "stride", 1), nsp),
                 _tuple(call.arg(4, "padding", 0), nsp), _tuple(call.arg(7, "dilation", 1), nsp), groups,
                 call.arg(2, "bias") is not None, True, _tuple(call.arg(5, "output_padding", 0), nsp))


@register_shape_rule(hnn.Conv2d, op="conv")
def _dynamic_conv(call: Call) -> TensorMeta:
    m, x = call.module, call.tensor(0)
    need_batch(call, x, (4,))
    check_dim(call, "in_channels", from_value(m.in_channels), x.shape[1])
    k = from_value(m.kernel_size)
    p = m.padding_for(k)
    return _conv(call, x, from_value(m.out_channels), (k, k), (m.stride, m.stride), (p, p),
                 (m.dilation, m.dilation), from_value(m.groups), m.bias is not None)


@register_shape_rule(nn.Linear, hnn.Linear, F.linear, op="linear")
def linear(call: Call) -> TensorMeta:
    x, m = call.tensor(0), call.module
    if m is None:
        w = call.tensor(1, "weight")
        fin, fout, bias = w.shape[1], w.shape[0], call.arg(2, "bias") is not None
    else:
        fin, fout, bias = from_value(m.in_features), from_value(m.out_features), m.bias is not None
    check_dim(call, "in_features", fin, x.shape[-1])
    call.attrs.update(in_features=fin, out_features=fout, bias=bias)
    return TensorMeta((*x.shape[:-1], fout))


@register_shape_rule(nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, hnn.BatchNorm2d, op="batch_norm")
def batch_norm(call: Call) -> TensorMeta:
    x, m = call.tensor(0), call.module
    if isinstance(m, nn.modules.batchnorm._BatchNorm):
        need_batch(call, x, {nn.BatchNorm1d: (2, 3), nn.BatchNorm2d: (4,), nn.BatchNorm3d: (5,)}.get(type(m), ()))
    check_dim(call, "num_features", from_value(m.num_features), x.shape[1])
    # batch statistics even at inference when the layer keeps no running statistics (as PyTorch and fvcore do);
    # otherwise FLOPs are those of inference, whatever the training flag
    stats = getattr(m, "running_mean", None) is None and getattr(m, "running_var", None) is None
    call.attrs.update(affine=getattr(m, "affine", True), channels=x.shape[1], training=stats)
    return x


@register_shape_rule(F.batch_norm, op="batch_norm")
def _batch_norm_f(call: Call) -> TensorMeta:
    # batch_norm(input, running_mean, running_var, weight, bias, training, momentum, eps)
    x = call.tensor(0)
    call.attrs.update(affine=call.arg(3, "weight") is not None, channels=x.shape[1],
                      training=bool(call.arg(5, "training", False)))
    return x


@register_shape_rule(nn.LayerNorm, op="layer_norm")
def layer_norm(call: Call) -> TensorMeta:
    call.attrs["affine"] = call.module.elementwise_affine
    return call.tensor(0)


@register_shape_rule(F.layer_norm, op="layer_norm")
def _layer_norm_f(call: Call) -> TensorMeta:
    call.attrs["affine"] = call.arg(2, "weight") is not None
    return call.tensor(0)


@register_shape_rule(nn.GroupNorm, op="group_norm")
def group_norm(call: Call) -> TensorMeta:
    call.attrs["affine"] = call.module.affine
    return call.tensor(0)


@register_shape_rule(nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d, op="instance_norm")
def instance_norm(call: Call) -> TensorMeta:
    call.attrs["affine"] = call.module.affine
    return call.tensor(0)


def _pool(call: Call, x: TensorMeta, k: Any, s: Any, p: Any, d: Any, ceil_mode: bool, kind: str) -> TensorMeta:
    nsp = {"1d": 1, "2d": 2, "3d": 3}[kind]
    k = _tuple(k, nsp)
    s = _tuple(s if s not in (None, ()) else k, nsp)
    p, d = _tuple(p, nsp), _tuple(d, nsp)
    lead = x.shape[: x.ndim - nsp]
    spatial = tuple(pool_out(x.shape[x.ndim - nsp + i], k[i], s[i], p[i], d[i], ceil_mode) for i in range(nsp))
    call.attrs.update(kernel=k, stride=s, padding=p)
    return TensorMeta((*lead, *spatial))


def _pool_kind(name: str) -> str:
    return name[-2:]


@register_shape_rule(nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, op="max_pool")
def max_pool(call: Call) -> TensorMeta:
    m = call.module
    return _pool(call, call.tensor(0), m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode,
                 _pool_kind(type(m).__name__))


@register_shape_rule(nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, op="avg_pool")
def avg_pool(call: Call) -> TensorMeta:
    m = call.module
    return _pool(call, call.tensor(0), m.kernel_size, m.stride, m.padding, 1, m.ceil_mode,
                 _pool_kind(type(m).__name__))


@register_shape_rule(F.max_pool1d, F.max_pool2d, F.max_pool3d, op="max_pool")
def _max_pool_f(call: Call) -> TensorMeta:
    x = call.tensor(0)
    return _pool(call, x, call.arg(1, "kernel_size"), call.arg(2, "stride"), call.arg(3, "padding", 0),
                 call.arg(4, "dilation", 1), call.arg(5, "ceil_mode", False), f"{x.ndim - 2}d")


@register_shape_rule(F.avg_pool1d, F.avg_pool2d, F.avg_pool3d, op="avg_pool")
def _avg_pool_f(call: Call) -> TensorMeta:
    x = call.tensor(0)
    return _pool(call, x, call.arg(1, "kernel_size"), call.arg(2, "stride"), call.arg(3, "padding", 0), 1,
                 call.arg(4, "ceil_mode", False), f"{x.ndim - 2}d")


def _adaptive(call: Call, x: TensorMeta, size: Any, nsp: int) -> TensorMeta:
    size = _tuple(size, nsp)
    lead = x.shape[: x.ndim - nsp]
    spatial = tuple(x.shape[x.ndim - nsp + i] if size[i] is None else size[i] for i in range(nsp))
    call.attrs["spatial_dims"] = nsp
    return TensorMeta((*lead, *spatial))


@register_shape_rule(nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, op="adaptive_avg_pool")
def adaptive_avg_pool(call: Call) -> TensorMeta:
    return _adaptive(call, call.tensor(0), call.module.output_size, int(type(call.module).__name__[-2]))


@register_shape_rule(nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d, op="adaptive_max_pool")
def adaptive_max_pool(call: Call) -> TensorMeta:
    return _adaptive(call, call.tensor(0), call.module.output_size, int(type(call.module).__name__[-2]))


@register_shape_rule(F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d, op="adaptive_avg_pool")
def _adaptive_avg_f(call: Call) -> TensorMeta:
    x = call.tensor(0)
    return _adaptive(call, x, call.arg(1, "output_size"), x.ndim - 2)


@register_shape_rule(F.adaptive_max_pool1d, F.adaptive_max_pool2d, F.adaptive_max_pool3d, op="adaptive_max_pool")
def _adaptive_max_f(call: Call) -> TensorMeta:
    x = call.tensor(0)
    return _adaptive(call, x, call.arg(1, "output_size"), x.ndim - 2)


@register_shape_rule(nn.Upsample, F.interpolate, op="upsample")
def upsample(call: Call) -> TensorMeta:
    x, m = call.tensor(0), call.module
    size = m.size if m is not None else call.arg(1, "size")
    scale = m.scale_factor if m is not None else call.arg(2, "scale_factor")
    mode = m.mode if m is not None else call.arg(3, "mode", "nearest")
    nsp = x.ndim - 2
    if size is not None:
        spatial = _tuple(size, nsp)
    else:
        spatial = tuple(scale_size(x.shape[2 + i], f) for i, f in enumerate(_tuple(scale, nsp)))
    call.attrs["mode"] = mode
    return TensorMeta((*x.shape[:2], *spatial))


def scale_size(size: Any, factor: float) -> Any:
    """``floor(size * factor)``, as PyTorch computes an interpolated size (a labelled size stays labelled)."""
    if isinstance(size, LArray):
        return LArray(size.labels, np.floor(size.data * float(factor)).astype(np.int64)).squeeze()
    return math.floor(size * float(factor))


def attention(call: Call, embed_dim: Any, kdim: Any, vdim: Any) -> tuple:
    """Shape rule of multi-head attention modules (``nn.MultiheadAttention`` and searchable ones)."""
    m = call.module
    q, k = call.tensor(0, "query"), call.tensor(1, "key")
    need_batch(call, q, (3,), layout=False)
    need_weights = call.arg(4, "need_weights", True)
    average = call.arg(6, "average_attn_weights", True)
    if m.batch_first:
        n, lq, e = q.shape
        s = k.shape[1]
    else:
        lq, n, e = q.shape
        s = k.shape[0]
    # bias_k/bias_v and add_zero_attn each append one key/value position after the projections
    attn_len = s + int(getattr(m, "bias_k", None) is not None) + int(bool(getattr(m, "add_zero_attn", False)))
    check_dim(call, "embed_dim", embed_dim, e)
    call.attrs.update(embed_dim=embed_dim, num_heads=m.num_heads, kdim=kdim, vdim=vdim, batch=n, q_len=lq, kv_len=s,
                      attn_len=attn_len, need_weights=need_weights, bias=m.in_proj_bias is not None)
    weights = None
    if need_weights:
        weights = TensorMeta((n, lq, attn_len) if average else (n, m.num_heads, lq, attn_len))
    return (q, weights)


@register_shape_rule(nn.MultiheadAttention, op="multihead_attention")
def multihead_attention(call: Call) -> tuple:
    m = call.module
    return attention(call, m.embed_dim, m.kdim, m.vdim)


def _same_shape(call: Call) -> TensorMeta:
    return call.tensor(0)


_ACTIVATIONS = {
    "relu": (nn.ReLU, F.relu, "relu", "relu_", F.relu_),
    "relu6": (nn.ReLU6, F.relu6),
    "hardswish": (nn.Hardswish, F.hardswish),
    "hardsigmoid": (nn.Hardsigmoid, F.hardsigmoid),
    "silu": (nn.SiLU, F.silu),
    "gelu": (nn.GELU, F.gelu),
    "sigmoid": (nn.Sigmoid, F.sigmoid, "sigmoid", "sigmoid_"),
    "tanh": (nn.Tanh, F.tanh, "tanh", "tanh_"),
    "leaky_relu": (nn.LeakyReLU, F.leaky_relu),
    "elu": (nn.ELU, F.elu),
    "mish": (nn.Mish, F.mish),
    "softmax": (nn.Softmax, F.softmax, "softmax"),
    "log_softmax": (nn.LogSoftmax, F.log_softmax, "log_softmax"),
    "clamp": (nn.Hardtanh, F.hardtanh, F.hardtanh_, "clamp", "clamp_", "clip", "clip_"),
    "dropout": (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, F.dropout, F.dropout1d,
                F.dropout2d, F.dropout3d, F.alpha_dropout),
    "identity": (nn.Identity, "contiguous", "clone", "float", "detach"),
}


def _register_same_shape() -> None:
    import torch

    extra = {"relu": (torch.relu, torch.relu_), "sigmoid": (torch.sigmoid,), "tanh": (torch.tanh,),
             "softmax": (torch.softmax,), "clamp": (torch.clamp, torch.clip), "dropout": (torch.dropout,)}
    for op, targets in _ACTIVATIONS.items():
        register_shape_rule(*targets, *extra.get(op, ()), op=op)(_same_shape)


_register_same_shape()
