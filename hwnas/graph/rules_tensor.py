"""Shape rules for tensor operations: arithmetic, reshaping, indexing, reductions, concatenation."""

from __future__ import annotations

import builtins
import operator
from typing import Any

import torch
from torch import nn

from hwnas.graph.larray import LArray, dims_equal
from hwnas.graph.registry import Call, TensorMeta, numel, register_shape_rule

__all__ = ["broadcast_shapes", "normalize_dim", "result_dtype"]


def normalize_dim(d: int, ndim: int) -> int:
    return d + ndim if d < 0 else d


def _broadcast_dim(a: Any, b: Any, call: Call) -> Any:
    if isinstance(a, int) and a == 1:
        return b
    if isinstance(b, int) and b == 1:
        return a
    if dims_equal(a, b, call.activity):
        return a if not isinstance(a, LArray) else b if not isinstance(b, LArray) else a
    raise ValueError(f"{call.path!r}: cannot broadcast dims {a!r} and {b!r} in {call.op_type!r}; the operands' "
                     "shapes must agree for every sample (use the same Choice for both channel counts).")


def broadcast_shapes(shapes: list[tuple], call: Call) -> tuple:
    nd = max(len(s) for s in shapes)
    out: list[Any] = [1] * nd
    for s in shapes:
        pad = (1,) * (nd - len(s)) + tuple(s)
        out = [_broadcast_dim(a, b, call) for a, b in zip(out, pad)]
    return tuple(out)


_PY_OPS = {
    "add": (operator.add, operator.iadd, torch.add, "add", "add_", "__add__", "__radd__"),
    "sub": (operator.sub, operator.isub, torch.sub, "sub", "sub_", "__sub__", "__rsub__"),
    "mul": (operator.mul, operator.imul, torch.mul, "mul", "mul_", "__mul__", "__rmul__"),
    "div": (operator.truediv, operator.itruediv, torch.div, "div", "div_", "__truediv__"),
}
_PY_FN = {"add": operator.add, "sub": operator.sub, "mul": operator.mul, "div": operator.truediv}


def result_dtype(call: Call) -> torch.dtype:
    """The dtype of an elementwise op's result, by PyTorch's promotion (a Python float makes integers float)."""
    dtype = None
    for a in list(call.args) + list(call.kwargs.values()):
        if isinstance(a, TensorMeta):
            dtype = a.dtype if dtype is None else torch.promote_types(dtype, a.dtype)
    if dtype is not None and not dtype.is_floating_point and not dtype.is_complex and \
            any(isinstance(a, float) for a in call.args):
        dtype = torch.get_default_dtype()
    return dtype if dtype is not None else torch.get_default_dtype()


def _elementwise(op: str):
    def rule(call: Call) -> Any:
        tensors = call.tensors()
        if not tensors:  # arithmetic on sizes: compute it
            return _PY_FN[op](call.args[0], call.args[1])
        call.attrs["operands"] = builtins.len(tensors)
        dtype = result_dtype(call)
        if op == "div" and not dtype.is_floating_point:
            dtype = torch.get_default_dtype()  # true division
        return TensorMeta(broadcast_shapes([t.shape for t in tensors], call), dtype)

    rule.__name__ = op
    return rule


for _op, _targets in _PY_OPS.items():
    register_shape_rule(*_targets, op=_op)(_elementwise(_op))

_UNARY = {"neg": (operator.neg, torch.neg, "neg", "neg_", "__neg__"),
          "abs": (operator.abs, builtins.abs, torch.abs, "abs", "abs_", "__abs__")}
_BINARY = {"floordiv": (operator.floordiv, torch.floor_divide, "floor_divide", "__floordiv__", "__rfloordiv__"),
           "mod": (operator.mod, torch.remainder, "remainder", "__mod__", "__rmod__"),
           "pow": (operator.pow, torch.pow, "pow", "pow_", "__pow__", "__rpow__")}


def _arith(name: str, fn):
    """Elementwise on tensors (broadcast shapes), plain arithmetic on sizes (ints or labelled dims)."""
    def rule(call: Call) -> Any:
        tensors = call.tensors()
        if not tensors:
            return fn(*call.args)
        call.attrs["operands"] = builtins.len(tensors)
        return TensorMeta(broadcast_shapes([t.shape for t in tensors], call), result_dtype(call))

    rule.__name__ = name
    return rule


for _name, _targets in {**_UNARY, **_BINARY}.items():
    register_shape_rule(*_targets, op=_name)(_arith(_name, _targets[0]))


@register_shape_rule(torch.flatten, nn.Flatten, "flatten", op="flatten")
def flatten(call: Call) -> TensorMeta:
    x = call.tensor(0)
    if call.module is not None:
        start, end = call.module.start_dim, call.module.end_dim
    else:
        start, end = call.arg(1, "start_dim", 0), call.arg(2, "end_dim", -1)
    start, end = normalize_dim(start, x.ndim), normalize_dim(end, x.ndim)
    merged = TensorMeta(x.shape[start:end + 1])
    return TensorMeta((*x.shape[:start], numel(merged), *x.shape[end + 1:]))


def _sizes(call: Call, first: int = 1) -> list:
    rest = list(call.args[first:])
    if builtins.len(rest) == 1 and isinstance(rest[0], (tuple, list)):
        rest = list(rest[0])
    if not rest:
        rest = list(call.kwargs.get("shape", call.kwargs.get("size", ())))
    return rest


@register_shape_rule(torch.reshape, "reshape", "view", op="reshape")
def reshape(call: Call) -> TensorMeta:
    x = call.tensor(0)
    sizes = _sizes(call)
    if any(isinstance(s, int) and s == -1 for s in sizes):
        known: Any = 1
        for s in sizes:
            if not (isinstance(s, int) and s == -1):
                known = known * s
        sizes = [numel(x) // known if (isinstance(s, int) and s == -1) else s for s in sizes]
    return TensorMeta(tuple(sizes))


@register_shape_rule(torch.permute, "permute", op="permute")
def permute(call: Call) -> TensorMeta:
    x = call.tensor(0)
    dims = _sizes(call)
    return TensorMeta(tuple(x.shape[normalize_dim(d, x.ndim)] for d in dims))


@register_shape_rule(torch.transpose, "transpose", op="transpose")
def transpose(call: Call) -> TensorMeta:
    x = call.tensor(0)
    a, b = normalize_dim(call.arg(1, "dim0"), x.ndim), normalize_dim(call.arg(2, "dim1"), x.ndim)
    shape = list(x.shape)
    shape[a], shape[b] = shape[b], shape[a]
    return TensorMeta(tuple(shape))


@register_shape_rule(torch.unsqueeze, "unsqueeze", op="unsqueeze")
def unsqueeze(call: Call) -> TensorMeta:
    x = call.tensor(0)
    d = normalize_dim(call.arg(1, "dim"), x.ndim + 1)
    return TensorMeta((*x.shape[:d], 1, *x.shape[d:]))


@register_shape_rule(torch.squeeze, "squeeze", op="squeeze")
def squeeze(call: Call) -> TensorMeta:
    x = call.tensor(0)
    d = call.arg(1, "dim")
    if d is None:
        return TensorMeta(tuple(s for s in x.shape if not (isinstance(s, int) and s == 1)))
    d = normalize_dim(d, x.ndim)
    return TensorMeta(x.shape[:d] + x.shape[d + 1:]) if isinstance(x.shape[d], int) and x.shape[d] == 1 else x


@register_shape_rule("expand", op="expand")
def expand(call: Call) -> TensorMeta:
    x = call.tensor(0)
    sizes = _sizes(call)
    lead = builtins.len(sizes) - x.ndim
    return TensorMeta(tuple(x.shape[i - lead] if isinstance(s, int) and s == -1 else s for i, s in enumerate(sizes)))


@register_shape_rule(torch.cat, torch.concat, op="cat")
def cat(call: Call) -> TensorMeta:
    tensors = list(call.arg(0, "tensors"))
    d = normalize_dim(call.arg(1, "dim", 0), tensors[0].ndim)
    total: Any = 0
    for t in tensors:
        total = total + t.shape[d]
    call.attrs["inputs"] = tensors
    return TensorMeta((*tensors[0].shape[:d], total, *tensors[0].shape[d + 1:]))


@register_shape_rule(torch.stack, op="stack")
def stack(call: Call) -> TensorMeta:
    tensors = list(call.arg(0, "tensors"))
    d = normalize_dim(call.arg(1, "dim", 0), tensors[0].ndim + 1)
    s = tensors[0].shape
    return TensorMeta((*s[:d], builtins.len(tensors), *s[d:]))


@register_shape_rule(torch.chunk, "chunk", op="split")
def chunk(call: Call) -> tuple:
    x = call.tensor(0)
    n, d = call.arg(1, "chunks"), normalize_dim(call.arg(2, "dim", 0), x.ndim)
    size = x.shape[d]
    part = -((-size) // n)
    sizes = [part] * n
    if isinstance(size, int) and isinstance(part, int) and part > 0:  # torch: the last part takes the rest
        k = -((-size) // part)
        sizes = [part] * (k - 1) + [size - part * (k - 1)]
    return tuple(TensorMeta((*x.shape[:d], p, *x.shape[d + 1:])) for p in sizes)


@register_shape_rule(torch.split, "split", op="split")
def split(call: Call) -> tuple:
    x = call.tensor(0)
    sizes, d = call.arg(1, "split_size_or_sections"), normalize_dim(call.arg(2, "dim", 0), x.ndim)
    if isinstance(sizes, int):
        full = x.shape[d]
        if not isinstance(full, int):
            raise NotImplementedError(f"{call.path!r}: split by a size over a searched dim; use chunk().")
        sizes = [sizes] * (full // sizes) + ([full % sizes] if full % sizes else [])
    return tuple(TensorMeta((*x.shape[:d], s, *x.shape[d + 1:])) for s in sizes)


def _reduce(call: Call) -> TensorMeta:
    x = call.tensor(0)
    dims = call.arg(1, "dim")
    keep = call.arg(2, "keepdim", False)
    if dims is None:
        return TensorMeta(())
    dims = {normalize_dim(d, x.ndim) for d in (dims if isinstance(dims, (tuple, list)) else (dims,))}
    shape = tuple(1 if i in dims else s for i, s in enumerate(x.shape) if keep or i not in dims)
    return TensorMeta(shape)


register_shape_rule(torch.mean, "mean", op="mean")(_reduce)
register_shape_rule(torch.sum, "sum", op="sum")(_reduce)
register_shape_rule(torch.amax, "amax", op="amax")(_reduce)


@register_shape_rule(torch.matmul, operator.matmul, "matmul", "__matmul__", torch.bmm, "bmm", torch.mm, "mm",
                     op="matmul")
def matmul(call: Call) -> TensorMeta:
    """``torch.matmul`` semantics (1-D operands get a dim added, then removed; batch dims broadcast)."""
    a, b = call.tensor(0), call.tensor(1, "other")
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError(f"{call.path!r}: matmul needs tensors of at least one dim, got shapes {a.shape} and {b.shape}")
    a2 = a.shape if a.ndim > 1 else (1, a.shape[0])
    b2 = b.shape if b.ndim > 1 else (b.shape[0], 1)
    batch = broadcast_shapes([a2[:-2], b2[:-2]], call) if len(a2) > 2 or len(b2) > 2 else ()
    call.attrs.update(a=a, b=b)
    return TensorMeta((*batch, *((a2[-2],) if a.ndim > 1 else ()), *((b2[-1],) if b.ndim > 1 else ())))


@register_shape_rule("size", op="size")
def size(call: Call) -> Any:
    x = call.tensor(0)
    d = call.arg(1, "dim")
    return tuple(x.shape) if d is None else x.shape[normalize_dim(d, x.ndim)]


@register_shape_rule("dim", op="size")
def _dim(call: Call) -> int:
    return call.tensor(0).ndim


@register_shape_rule(builtins.getattr, op="getattr")
def getattr_(call: Call) -> Any:
    obj, name = call.args[0], call.args[1]
    if isinstance(obj, TensorMeta):
        if name == "shape":
            return tuple(obj.shape)
        if name == "ndim":
            return obj.ndim
        if name == "T":
            return TensorMeta(tuple(reversed(obj.shape)), obj.dtype)
        if name == "dtype":
            return obj.dtype
        raise NotImplementedError(f"{call.path!r}: tensor attribute {name!r}: PyTorch's own value is used.")
    return builtins.getattr(obj, name)


def _index_tensor(x: TensorMeta, idx: Any, call: Call) -> TensorMeta:
    items = idx if isinstance(idx, tuple) else (idx,)
    out: list[Any] = []
    dim = 0
    n_real = sum(1 for i in items if i is not None and i is not Ellipsis)
    for it in items:
        if it is Ellipsis:
            skip = x.ndim - n_real
            out.extend(x.shape[dim:dim + skip])
            dim += skip
        elif it is None:
            out.append(1)
        elif isinstance(it, int):
            dim += 1
        elif isinstance(it, slice):
            size = x.shape[dim]
            if it.start is None and it.stop is None and it.step in (None, 1):
                out.append(size)
            elif isinstance(size, int):
                out.append(builtins.len(range(*it.indices(size))))
            else:
                start, stop = it.start or 0, size if it.stop is None else it.stop
                if isinstance(stop, int) and stop < 0:
                    stop = size + stop
                out.append((stop - start + (it.step or 1) - 1) // (it.step or 1))
            dim += 1
        else:
            raise NotImplementedError(f"{call.path!r}: tensor indexing with {type(it).__name__}: shapes from PyTorch.")
    out.extend(x.shape[dim:])
    return TensorMeta(tuple(out))


@register_shape_rule(operator.getitem, op="getitem")
def getitem(call: Call) -> Any:
    obj, idx = call.args
    if isinstance(obj, TensorMeta):
        return _index_tensor(obj, idx, call)
    return obj[idx]
