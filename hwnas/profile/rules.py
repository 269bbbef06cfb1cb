"""Cost rules: one op (with symbolic shapes) -> its FLOPs or parameter count, as a labelled table.

FLOPs follow fvcore's convention (one multiply-add is one FLOP) and its per-op formulas, for the ops
fvcore counts (``by_default=True``): convolution ``N * Cout * Cin/groups * prod(kernel) * prod(out spatial)``
(bias not counted); linear ``numel(input) * out_features``; batch norm in inference ``numel * 2`` (``* 1``
without affine; with batch statistics, i.e. ``training=True`` passed to ``F.batch_norm`` or a layer without
running statistics, ``* 5`` / ``* 4`` like the other norms: FLOPs are those of inference whatever a layer's
training flag); layer/group/instance norm ``numel * 5`` (``* 4`` without affine); 2-D adaptive average
pooling ``numel(input)``; 2-D nearest / bilinear upsampling ``numel(output) * 1 / * 4`` (``mode="area"``
runs adaptive average pooling: ``numel(input)``); matmul ``numel(a) * b.shape[-1]`` (mm, bmm, ``@``; einsum,
addmm, grid_sample and scaled-dot-product attention are in :mod:`hwnas.profile.rules_ops`); multi-head attention: its input and output projections, plus the two
attention matmuls ``2 * N * L * S * E`` (``S`` key positions, one more each for ``bias_k`` and
``add_zero_attn``) when it returns weights (fvcore sees those as ``bmm``; with
``need_weights=False`` PyTorch runs scaled-dot-product attention, which fvcore does not count).

Ops fvcore does not count get documented rules, used only with ``elementwise=True`` and otherwise listed
in ``FlopsProfiler.uncounted_ops``: activations ``numel(output)`` (softmax and log-softmax ``3 *
numel``); add/sub/mul/div ``numel(output)``; max/average pooling ``numel(output) * prod(kernel)``;
other adaptive pooling, mean, sum and amax ``numel(input)``; the attention matmuls of scaled-dot-product
attention ``2 * N * L * S * E``. Data movement (reshape, flatten, permute, cat, split, indexing, dropout
at inference, identity, unbind, pad, tile) is zero by definition. Ops without a shape rule of their own
(:mod:`hwnas.graph.fallback`) cost 0 and are listed in ``uncounted_ops``; fixed blocks cost what fvcore
counts for them (:mod:`hwnas.profile.blocks`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hwnas.graph.registry import numel
from hwnas.graph.trace import Op

__all__ = ["FlopRule", "register_cost_rule", "flop_rule", "param_count", "is_builtin", "MOVEMENT_OPS"]


@dataclass(frozen=True)
class FlopRule:
    """A FLOP rule; whether it counts by default (a bool or a predicate of the op; built-in rules count by
    default exactly where fvcore counts); and optionally ``extra``, a part of the op that fvcore leaves out
    (counted only with ``elementwise=True``)."""

    fn: Callable[[Op], Any]
    by_default: bool | Callable[[Op], bool]
    extra: Callable[[Op], Any] | None = None

    def counts_by_default(self, op: Op) -> bool:
        return self.by_default(op) if callable(self.by_default) else self.by_default


MOVEMENT_OPS = frozenset({"flatten", "reshape", "permute", "transpose", "unsqueeze", "squeeze", "expand", "cat",
                          "stack", "split", "getitem", "size", "getattr", "identity", "dropout", "parameter",
                          "param_slice", "unbind", "pad", "tile"})

_FLOPS: dict[str, FlopRule] = {}
_PARAMS: dict[str, Callable[[Op], Any]] = {}


def register_cost_rule(metric: str, op_type: str, by_default: bool | Callable[[Op], bool] = True,
                       extra: Callable[[Op], Any] | None = None, overwrite: bool = False):
    """Register a cost rule for ``metric`` (``"flops"`` or ``"params"``) and a canonical op name.

    The rule takes an :class:`~hwnas.graph.trace.Op` and returns a number or an
    :class:`~hwnas.graph.larray.LArray` (write it with ``+ - * //`` on the op's dims). A FLOP rule with
    ``by_default=False`` counts only when the profiler is built with ``elementwise=True`` (the built-in rules
    for ops that fvcore leaves out are registered that way).

    Example:
        >>> from hwnas.graph import numel
        >>> @register_cost_rule("flops", "my_gate", overwrite=True)
        ... def _my_gate(op):
        ...     return 2 * numel(op.out)
    """
    table: dict = {"flops": _FLOPS, "params": _PARAMS}.get(metric)
    if table is None:
        raise ValueError(f"unknown metric {metric!r}; cost rules are registered for 'flops' or 'params'.")

    def deco(fn: Callable[[Op], Any]) -> Callable[[Op], Any]:
        if op_type in table and not overwrite:
            raise ValueError(f"op {op_type!r} already has a {metric} rule; pass overwrite=True to replace it.")
        table[op_type] = FlopRule(fn, by_default, extra) if metric == "flops" else fn
        return fn

    return deco


def flop_rule(op_type: str) -> FlopRule | None:
    return _FLOPS.get(op_type)


def param_count(op_type: str) -> Callable[[Op], Any] | None:
    return _PARAMS.get(op_type)


_BUILTIN: set[str] = set()  # op types of hwnas's own FLOP rules (filled when the rule modules are imported)


def is_builtin(op_type: str) -> bool:
    """Whether ``op_type`` names one of hwnas's own FLOP rules (not one a user registered)."""
    return op_type in _BUILTIN


def _prod(values) -> Any:
    out: Any = 1
    for v in values:
        out = out * v
    return out


# ----------------------------------------------------------------------------- FLOPs counted by fvcore
@register_cost_rule("flops", "conv", by_default=True)
def _conv_flops(op: Op) -> Any:
    a, x, out = op.attrs, op.inputs[0], op.out
    if a["transposed"]:  # fvcore: batch * prod(weight shape) * prod(input spatial)
        return x.shape[0] * a["in_channels"] * (a["out_channels"] // a["groups"]) * _prod(a["kernel"]) * \
            _prod(x.shape[2:])
    return out.shape[0] * a["out_channels"] * (a["in_channels"] // a["groups"]) * _prod(a["kernel"]) * \
        _prod(out.shape[2:])


@register_cost_rule("flops", "linear", by_default=True)
def _linear_flops(op: Op) -> Any:
    return numel(op.inputs[0]) * op.attrs["out_features"]


@register_cost_rule("flops", "batch_norm", by_default=True)
def _bn_flops(op: Op) -> Any:
    if op.attrs.get("training"):  # batch statistics: fvcore counts it as the other normalisations
        return _norm_flops(op)
    return numel(op.inputs[0]) * (2 if op.attrs["affine"] else 1)


def _norm_flops(op: Op) -> Any:
    return numel(op.inputs[0]) * (5 if op.attrs["affine"] else 4)


for _name in ("layer_norm", "group_norm", "instance_norm"):
    register_cost_rule("flops", _name, by_default=True)(_norm_flops)


@register_cost_rule("flops", "adaptive_avg_pool", by_default=lambda op: op.attrs.get("spatial_dims") == 2)
def _adaptive_avg_flops(op: Op) -> Any:
    return numel(op.inputs[0])


@register_cost_rule("flops", "upsample",
                    by_default=lambda op: op.out.ndim == 4 and op.attrs["mode"] in ("nearest", "bilinear", "area"))
def _upsample_flops(op: Op) -> Any:
    if op.attrs["mode"] == "area":  # F.interpolate runs adaptive average pooling
        return numel(op.inputs[0])
    return numel(op.out) * (4 if op.attrs["mode"] in ("bilinear", "bicubic") else 1)


@register_cost_rule("flops", "matmul", by_default=True)
def _matmul_flops(op: Op) -> Any:
    b = op.attrs["b"]
    return numel(op.attrs["a"]) * (b.shape[-1] if b.ndim > 1 else 1)


def _mha_flops(op: Op) -> Any:
    a = op.attrs
    n, lq, s, e = a["batch"], a["q_len"], a["kv_len"], a["embed_dim"]
    proj = n * lq * e * e + n * s * e * a["kdim"] + n * s * e * a["vdim"] + n * lq * e * e
    return proj + (2 * n * lq * a.get("attn_len", s) * e if a["need_weights"] else 0)


def _mha_sdpa_flops(op: Op) -> Any:
    a = op.attrs
    return 0 if a["need_weights"] else 2 * a["batch"] * a["q_len"] * a.get("attn_len", a["kv_len"]) * a["embed_dim"]


# ----------------------------------------------------------------------------- FLOPs fvcore leaves out
def _out_numel(op: Op) -> Any:
    return numel(op.out)


def _in_numel(op: Op) -> Any:
    return numel(op.inputs[0])


for _name in ("relu", "relu6", "hardswish", "hardsigmoid", "silu", "gelu", "sigmoid", "tanh", "leaky_relu", "elu",
              "mish", "clamp", "add", "sub", "mul", "div"):
    register_cost_rule("flops", _name, by_default=False)(_out_numel)
for _name in ("softmax", "log_softmax"):
    register_cost_rule("flops", _name, by_default=False)(lambda op: 3 * numel(op.out))
for _name in ("adaptive_max_pool", "mean", "sum", "amax"):
    register_cost_rule("flops", _name, by_default=False)(_in_numel)


def _window_flops(op: Op) -> Any:
    return numel(op.out) * math.prod(op.attrs["kernel"])


register_cost_rule("flops", "max_pool", by_default=False)(_window_flops)
register_cost_rule("flops", "avg_pool", by_default=False)(_window_flops)
register_cost_rule("flops", "multihead_attention", by_default=True, extra=_mha_sdpa_flops)(_mha_flops)


# ----------------------------------------------------------------------------- parameters of dynamic layers
@register_cost_rule("params", "conv")
def _conv_params(op: Op) -> Any:
    a = op.attrs
    w = a["out_channels"] * (a["in_channels"] // a["groups"]) * _prod(a["kernel"])
    return w + (a["out_channels"] if a["bias"] else 0)


@register_cost_rule("params", "linear")
def _linear_params(op: Op) -> Any:
    a = op.attrs
    return a["in_features"] * a["out_features"] + (a["out_features"] if a["bias"] else 0)


@register_cost_rule("params", "batch_norm")
def _bn_params(op: Op) -> Any:
    return 2 * op.attrs["channels"] if op.attrs["affine"] else 0


_BUILTIN.update(_FLOPS)
