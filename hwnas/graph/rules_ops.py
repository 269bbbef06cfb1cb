"""Shape rules for the ops real models add: attention (``unbind``, scaled-dot-product attention, ``einsum``,
``addmm``), padding, tiling, the ``*_as`` methods, the functional and ``torch.*`` forms of the normalisations
and upsampling that fvcore counts, ``grid_sample``, and torchvision's ``stochastic_depth``.

Every op fvcore counts has a rule here or in :mod:`hwnas.graph.rules_nn` / :mod:`hwnas.graph.rules_tensor`
(its FLOPs need the shapes the rule records); the other ops here have rules so that dims over choices flow
through them symbolically instead of through a grid of meta-tensor runs (:mod:`hwnas.graph.fallback`).
"""

from __future__ import annotations

import operator
from typing import Any

import torch
import torch.nn.functional as F

from hwnas.graph.larray import LArray
from hwnas.graph.registry import Call, TensorMeta, register_shape_rule
from hwnas.graph.rules_nn import _layer_norm_f, upsample
from hwnas.graph.rules_tensor import broadcast_shapes, normalize_dim

__all__ = ["einsum_output"]


@register_shape_rule(torch.unbind, "unbind", op="unbind")
def _unbind(call: Call) -> tuple:
    x = call.tensor(0)
    d = normalize_dim(call.arg(1, "dim", 0), x.ndim)
    n = x.shape[d]
    if isinstance(n, LArray):
        raise NotImplementedError("unbind over a dim that depends on choices")
    return tuple(TensorMeta(x.shape[:d] + x.shape[d + 1:], x.dtype) for _ in range(n))


@register_shape_rule(F.scaled_dot_product_attention, op="scaled_dot_product_attention")
def _sdpa(call: Call) -> TensorMeta:
    """``(..., L, E)``, ``(..., S, E)``, ``(..., S, Ev)`` -> ``(..., L, Ev)``."""
    q, k, v = call.tensor(0, "query"), call.tensor(1, "key"), call.tensor(2, "value")
    call.attrs.update(q=q, k=k, v=v)
    return TensorMeta((*q.shape[:-1], v.shape[-1]), q.dtype)


def _operands(call: Call) -> list[TensorMeta]:
    rest = list(call.args[1:])
    if len(rest) == 1 and isinstance(rest[0], (list, tuple)):
        rest = list(rest[0])
    if not rest or not all(isinstance(t, TensorMeta) for t in rest):
        raise NotImplementedError("einsum in sublist form")
    return rest


def einsum_output(equation: str, shapes: list[tuple]) -> tuple:
    """The output shape of ``torch.einsum(equation, *operands)`` from the operands' shapes (dims may be
    labelled); size-1 dims broadcast, ``...`` is supported, an implicit output lists the letters used once."""
    eq = equation.replace(" ", "")
    lhs, arrow, rhs = eq.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(shapes):
        raise ValueError(f"einsum {equation!r} names {len(terms)} operands but got {len(shapes)}.")
    sizes: dict[str, Any] = {}
    ellipsis: list[tuple] = []
    for term, shape in zip(terms, shapes):
        if "..." in term:
            pre, post = term.split("...")
            n = len(shape) - len(pre) - len(post)
            ellipsis.append(tuple(shape[len(pre):len(pre) + n]))
            letters, dims = pre + post, tuple(shape[:len(pre)]) + tuple(shape[len(pre) + n:])
        else:
            letters, dims = term, tuple(shape)
        if len(letters) != len(dims):
            raise ValueError(f"einsum {equation!r}: operand {term!r} has {len(dims)} dims.")
        for letter, d in zip(letters, dims):
            if letter not in sizes or (isinstance(sizes[letter], int) and sizes[letter] == 1):
                sizes[letter] = d
    if not arrow:
        once = sorted(c for c in set(lhs) if c.isalpha() and lhs.count(c) == 1)
        rhs = ("..." if ellipsis else "") + "".join(once)
    ell = _broadcast(ellipsis)
    if "..." in rhs:
        pre, post = rhs.split("...")
        return tuple(sizes[c] for c in pre) + ell + tuple(sizes[c] for c in post)
    return tuple(sizes[c] for c in rhs)


def _broadcast(shapes: list[tuple]) -> tuple:
    """Broadcast shapes: right-aligned, a size-1 dim takes the other's size."""
    n = max((len(s) for s in shapes), default=0)
    out: list[Any] = [1] * n
    for s in shapes:
        for i, d in enumerate((1,) * (n - len(s)) + tuple(s)):
            if isinstance(out[i], int) and out[i] == 1:
                out[i] = d
    return tuple(out)


@register_shape_rule(torch.einsum, op="einsum")
def _einsum(call: Call) -> TensorMeta:
    equation = call.arg(0, "equation")
    ops = _operands(call)
    shapes = [t.shape for t in ops]
    call.attrs.update(equation=equation, shapes=shapes)
    return TensorMeta(einsum_output(equation, shapes), ops[0].dtype)


@register_shape_rule(torch.addmm, "addmm", op="addmm")
def _addmm(call: Call) -> TensorMeta:
    """``addmm(input, mat1, mat2)`` (a method's ``self`` is ``input``): ``(n, m) @ (m, p) + input``."""
    a, b = call.tensor(1, "mat1"), call.tensor(2, "mat2")
    call.attrs.update(a=a, b=b)
    return TensorMeta((a.shape[0], b.shape[1]), a.dtype)


@register_shape_rule(F.pad, torch._C._nn.pad, torch.constant_pad_nd, op="pad")
def _pad(call: Call) -> TensorMeta:
    """Each pair of ``pad`` widens one dim from the last backwards (negative widths crop); widths may be
    labelled."""
    x = call.tensor(0)
    pad = list(call.arg(1, "pad"))
    if len(pad) % 2 or len(pad) // 2 > x.ndim:
        raise ValueError(f"{call.path!r}: F.pad needs an even number of widths, at most two per dim; got {pad}.")
    shape = list(x.shape)
    for i in range(len(pad) // 2):
        shape[-1 - i] = shape[-1 - i] + pad[2 * i] + pad[2 * i + 1]
    return TensorMeta(tuple(shape), x.dtype)


@register_shape_rule(torch.tile, "tile", "repeat", op="tile")
def _tile(call: Call) -> TensorMeta:
    x = call.tensor(0)
    reps = list(call.args[1:])
    if len(reps) == 1 and isinstance(reps[0], (tuple, list)):
        reps = list(reps[0])
    if not reps:
        reps = list(call.kwargs.get("dims", call.kwargs.get("repeats", ())))
    shape = [1] * (len(reps) - x.ndim) + list(x.shape)
    reps = [1] * (len(shape) - len(reps)) + reps
    return TensorMeta(tuple(s * r for s, r in zip(shape, reps)), x.dtype)


@register_shape_rule(torch.t, "t", op="transpose")
def _t(call: Call) -> TensorMeta:
    x = call.tensor(0)
    return TensorMeta(tuple(reversed(x.shape)), x.dtype)


@register_shape_rule("reshape_as", "view_as", op="reshape")
def _reshape_as(call: Call) -> TensorMeta:
    return TensorMeta(call.tensor(1, "other").shape, call.tensor(0).dtype)


@register_shape_rule("expand_as", op="expand")
def _expand_as(call: Call) -> TensorMeta:
    return TensorMeta(call.tensor(1, "other").shape, call.tensor(0).dtype)


@register_shape_rule("type_as", op="identity")
def _type_as(call: Call) -> TensorMeta:
    return TensorMeta(call.tensor(0).shape, call.tensor(1, "other").dtype)


def _compare(name: str):
    def rule(call: Call) -> Any:
        tensors = call.tensors()
        if not tensors:  # sizes compared: compute it
            return getattr(operator, name)(*call.args)
        return TensorMeta(broadcast_shapes([t.shape for t in tensors], call), torch.bool)

    return rule


for _name in ("lt", "le", "gt", "ge"):
    register_shape_rule(getattr(operator, _name), getattr(torch, _name), _name, f"__{_name}__", op=_name)(
        _compare(_name))

_CASTS = {"float": torch.float32, "double": torch.float64, "half": torch.float16, "bfloat16": torch.bfloat16,
          "long": torch.int64, "int": torch.int32, "bool": torch.bool}


def _cast(dtype: torch.dtype):
    def rule(call: Call) -> TensorMeta:
        return TensorMeta(call.tensor(0).shape, dtype)

    return rule


for _name, _dtype in _CASTS.items():
    register_shape_rule(_name, op="identity", overwrite=True)(_cast(_dtype))


@register_shape_rule("torchvision.ops.stochastic_depth.stochastic_depth", op="dropout")
def _stochastic_depth(call: Call) -> TensorMeta:
    """torchvision's stochastic depth: the identity at inference, a random row mask in training."""
    return call.tensor(0)


# ----------------------------------------------------------------------------- norms and resampling counted by fvcore
@register_shape_rule(F.group_norm, torch.group_norm, op="group_norm")
def _group_norm_f(call: Call) -> TensorMeta:
    """``group_norm(input, num_groups, weight, bias, eps)``."""
    call.attrs["affine"] = call.arg(2, "weight") is not None
    return call.tensor(0)


@register_shape_rule(F.instance_norm, op="instance_norm")
def _instance_norm_f(call: Call) -> TensorMeta:
    """``F.instance_norm(input, running_mean, running_var, weight, bias, ...)``."""
    call.attrs["affine"] = call.arg(3, "weight") is not None
    return call.tensor(0)


@register_shape_rule(torch.instance_norm, op="instance_norm")
def _instance_norm_t(call: Call) -> TensorMeta:
    """``torch.instance_norm(input, weight, bias, running_mean, running_var, ...)``."""
    call.attrs["affine"] = call.arg(1, "weight") is not None
    return call.tensor(0)


register_shape_rule(torch.layer_norm, op="layer_norm")(_layer_norm_f)


@register_shape_rule(torch.batch_norm, op="batch_norm")
def _batch_norm_t(call: Call) -> TensorMeta:
    """``torch.batch_norm(input, weight, bias, running_mean, running_var, training, ...)``."""
    x = call.tensor(0)
    call.attrs.update(affine=call.arg(1, "weight") is not None, channels=x.shape[1],
                      training=bool(call.arg(5, "training", False)))
    return x


@register_shape_rule(F.grid_sample, torch.grid_sampler, op="grid_sample")
def _grid_sample(call: Call) -> TensorMeta:
    """``(N, C, H, W)`` sampled at a ``(N, Ho, Wo, 2)`` grid -> ``(N, C, Ho, Wo)`` (5-D likewise)."""
    x, grid = call.tensor(0), call.tensor(1, "grid")
    return TensorMeta((*x.shape[:2], *grid.shape[1:-1]), x.dtype)


register_shape_rule(F.upsample, F.upsample_nearest, op="upsample")(upsample)


@register_shape_rule(F.upsample_bilinear, op="upsample")
def _upsample_bilinear(call: Call) -> TensorMeta:
    out = upsample(call)
    call.attrs["mode"] = "bilinear"
    return out
