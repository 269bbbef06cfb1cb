"""Shapes from PyTorch itself, for every op without a hand-written rule.

An op without a shape rule is run on meta tensors (``device="meta"``: shapes and dtypes, no data, no
arithmetic) of its concrete input shapes. When some input dims depend on choices (they are
:class:`~hwnas.graph.larray.LArray`), the op is run once at every point of the grid over the labels
involved, and the outputs are assembled back into labelled dims; the grid is bounded
(:data:`MAX_GRID_POINTS`). This runs once, while the op graph is built: profiling a sample never runs it.

Three kinds of ops take this path (:func:`fallback_rule`):

- torch functions and tensor methods (``F.pad``, ``.tile``, ``torch.zeros``, ...): run on meta tensors.
  They cost 0 FLOPs and are listed in ``FlopsProfiler.uncounted_ops``, exactly as fvcore leaves them out:
  every op that fvcore counts has a hand-written rule (:data:`FVCORE_COUNTED` is the safety net);
- plain Python functions (``math.ceil`` on sizes, ``operator.lt``): evaluated at each grid point;
- *fixed blocks*: leaf modules without a rule (a module torch.fx cannot trace, a timm not-traceable
  module, ``nn.TransformerEncoderLayer``) and functions from outside torch (timm's or torchvision's wrapped
  helpers). Their shapes come from meta tensors (meta copies of the parameters) or, for data-dependent
  code, from real runs on random inputs; their FLOPs from a one-off fvcore count (:mod:`hwnas.profile.blocks`).

Fake tensors (``FakeTensorMode``) are used only when meta tensors fail, to tell a data-dependent op (a clear
error) from one that merely lacks a meta kernel.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import operator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hwnas.graph.larray import LArray
from hwnas.graph.registry import Call, TensorMeta, UnsupportedOpError

__all__ = ["MAX_GRID_POINTS", "MAX_BLOCK_POINTS", "FVCORE_COUNTED", "DataDependentOpError", "fallback_rule",
           "evaluate", "meta_tensor", "real_tensor", "labels_in", "op_label"]

MAX_GRID_POINTS = 4096  # meta evaluations of one op (microseconds each)
MAX_BLOCK_POINTS = 64  # fake or real runs of one fixed block, and one-off fvcore counts of it

# Python-level entry points of the aten ops fvcore counts. Each has a hand-written rule; reaching the fallback
# with one of them (a rule removed or overwritten by a rule that defers) would count 0 where fvcore does not.
FVCORE_COUNTED = frozenset({
    torch.addmm, torch.bmm, torch.mm, torch.matmul, operator.matmul, torch.einsum, F.linear, torch.conv1d,
    torch.conv2d, torch.conv3d, torch.conv_transpose1d, torch.conv_transpose2d, torch.conv_transpose3d,
    torch.convolution, torch.batch_norm, F.batch_norm, torch.group_norm, F.group_norm, torch.layer_norm,
    F.layer_norm, torch.instance_norm, F.instance_norm, F.interpolate, F.upsample, F.upsample_nearest,
    F.upsample_bilinear, F.adaptive_avg_pool2d, F.grid_sample, torch.grid_sampler, F.multi_head_attention_forward,
    "addmm", "bmm", "mm", "matmul", "__matmul__",
})

# torch.nn layers that run one op fvcore leaves out: shapes from meta tensors, 0 FLOPs (listed as uncounted),
# no fvcore run needed. Any other leaf module without a rule is a fixed block counted by fvcore.
_UNCOUNTED_MODULES: tuple[type, ...] = (
    nn.RNNBase, nn.Unfold, nn.Fold, nn.Embedding, nn.EmbeddingBag, nn.PixelShuffle, nn.PixelUnshuffle,
    nn.ChannelShuffle, nn.Unflatten, nn.modules.padding._ConstantPadNd, nn.modules.padding._ReflectionPadNd,
    nn.modules.padding._ReplicationPadNd, nn.PReLU, nn.Softplus, nn.Softsign, nn.SELU, nn.CELU, nn.GLU,
    nn.LogSigmoid, nn.Softmin, nn.Softmax2d, nn.Threshold, nn.Hardshrink, nn.Softshrink, nn.Tanhshrink,
)
_PURE_MODULES = ("math", "operator", "_operator", "builtins")


class DataDependentOpError(UnsupportedOpError):
    """An op's output shape depends on tensor values, so it cannot be inferred from shapes."""


# ----------------------------------------------------------------------------- walking nested values
def labels_in(value: Any, found: dict[str, int] | None = None) -> dict[str, int]:
    """The labels (and their numbers of choices) that the dims and numbers inside ``value`` depend on."""
    found = {} if found is None else found
    if isinstance(value, LArray):
        found.update(value.sizes())
    elif isinstance(value, TensorMeta):
        for d in value.shape:
            labels_in(d, found)
    elif isinstance(value, (tuple, list)):
        for v in value:
            labels_in(v, found)
    elif isinstance(value, dict):
        for v in value.values():
            labels_in(v, found)
    elif isinstance(value, slice):
        labels_in((value.start, value.stop, value.step), found)
    return found


def _at(value: Any, point: dict[str, int], make) -> Any:
    """``value`` at one grid point: labelled numbers become plain ones, TensorMetas tensors (from ``make``)."""
    if isinstance(value, LArray):
        return value.data[tuple(point[lab] for lab in value.labels)].item()
    if isinstance(value, TensorMeta):
        return make(tuple(_at(d, point, make) for d in value.shape), value.dtype)
    if isinstance(value, tuple) and not hasattr(value, "_fields"):
        return tuple(_at(v, point, make) for v in value)
    if isinstance(value, list):
        return [_at(v, point, make) for v in value]
    if isinstance(value, dict):
        return {k: _at(v, point, make) for k, v in value.items()}
    if isinstance(value, slice):
        return slice(*(_at(v, point, make) for v in (value.start, value.stop, value.step)))
    return value


def meta_tensor(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    return torch.empty(shape, dtype=dtype, device="meta")


def real_tensor(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """A seeded random tensor (zeros for integer and boolean dtypes, valid as indices)."""
    if dtype.is_floating_point or dtype.is_complex:
        return torch.randn(shape, dtype=dtype, generator=torch.Generator().manual_seed(0))
    return torch.zeros(shape, dtype=dtype)


def _fake_tensor_maker():
    from torch._subclasses.fake_tensor import FakeTensorMode

    mode = FakeTensorMode(allow_non_fake_inputs=True)

    def make(shape, dtype):
        with mode:
            return torch.empty(shape, dtype=dtype)

    return make, mode


class _Mismatch(Exception):
    pass


def _assemble(outs: list, labels: tuple[str, ...], shape: tuple[int, ...]) -> Any:
    """One symbolic value from the op's outputs at every grid point (same structure everywhere)."""
    first = outs[0]
    if isinstance(first, torch.Tensor):
        if not all(isinstance(o, torch.Tensor) and o.dim() == first.dim() and o.dtype == first.dtype for o in outs):
            raise _Mismatch("a tensor output changes rank or dtype between samples")
        return TensorMeta(tuple(_numbers([o.shape[i] for o in outs], labels, shape) for i in range(first.dim())),
                          first.dtype)
    if isinstance(first, (bool, int, float, np.integer, np.floating)):
        if not all(isinstance(o, (bool, int, float, np.integer, np.floating)) for o in outs):
            raise _Mismatch("an output is a number for some samples only")
        return _numbers(outs, labels, shape)
    if isinstance(first, (tuple, list)):
        if not all(type(o) is type(first) and len(o) == len(first) for o in outs):
            raise _Mismatch("an output sequence changes length between samples")
        items = [_assemble([o[i] for o in outs], labels, shape) for i in range(len(first))]
        if hasattr(first, "_fields"):  # a namedtuple
            return type(first)(*items)
        if hasattr(type(first), "n_fields"):  # torch.return_types (values, indices)
            return type(first)(items)
        return tuple(items) if isinstance(first, tuple) else items
    if isinstance(first, dict):
        if not all(isinstance(o, dict) and o.keys() == first.keys() for o in outs):
            raise _Mismatch("an output dict changes keys between samples")
        return {k: _assemble([o[k] for o in outs], labels, shape) for k in first}
    if not all(o is first or o == first for o in outs):
        raise _Mismatch(f"an output ({type(first).__name__}) differs between samples")
    return first


def _numbers(values: list, labels: tuple[str, ...], shape: tuple[int, ...]) -> Any:
    if len(values) == 1:
        v = values[0]
        return v.item() if isinstance(v, np.generic) else v
    return LArray(labels, np.asarray(values).reshape(shape)).squeeze()


def evaluate(fn, args: tuple, kwargs: dict, where: str, make=meta_tensor, context=contextlib.nullcontext,
             max_points: int = MAX_GRID_POINTS) -> Any:
    """``fn(*args, **kwargs)`` over symbolic values: once per grid point of the labels involved, assembled.

    Args:
        fn: the op (any callable).
        args, kwargs: interpreted arguments (TensorMetas, labelled numbers, plain values, nested).
        where: the op and its module path, for error messages.
        make: ``(shape, dtype) -> tensor`` for the TensorMetas (meta tensors by default).
        context: a context manager entered around each run.
        max_points: the largest grid allowed.

    Raises:
        UnsupportedOpError: the grid is too large, or the output's structure depends on the choices.
    """
    sizes = labels_in((args, kwargs))
    labels = tuple(sorted(sizes))
    shape = tuple(sizes[lab] for lab in labels)
    n = math.prod(shape)
    if n > max_points:
        raise UnsupportedOpError(
            f"{where}: its input shapes depend on labels {list(labels)} ({n:,} combinations, more than {max_points:,}"
            " that hwnas evaluates through PyTorch). Register a shape rule for this op "
            "(@hwnas.graph.register_shape_rule) so its shapes are computed symbolically.")
    outs = []
    for idx in itertools.product(*(range(k) for k in shape)):
        point = dict(zip(labels, idx))
        with context():
            outs.append(fn(*_at(args, point, make), **_at(kwargs, point, make)))
    try:
        return _assemble(outs, labels, shape)
    except _Mismatch as e:
        raise UnsupportedOpError(
            f"{where}: {e} (over labels {list(labels)}); hwnas needs the same structure for every sample. "
            "Register a shape rule for this op (@hwnas.graph.register_shape_rule).") from None


# ----------------------------------------------------------------------------- the rule for ops without one
def op_label(kind: str, target: Any) -> str:
    """The op type of an op without a rule: the function's, method's or module class's name."""
    if kind == "call_module":
        return type(target).__name__
    if kind == "call_method":
        return str(target)
    return getattr(target, "__name__", type(target).__name__)


def _qualified(kind: str, target: Any) -> str:
    if kind == "call_module":
        return f"module {type(target).__module__}.{type(target).__name__}"
    if kind == "call_method":
        return f"tensor method .{target}()"
    return f"function {getattr(target, '__module__', None) or ''}.{op_label(kind, target)}".replace(" .", " ")


def _is_torch(target: Any) -> bool:
    return (getattr(target, "__module__", None) or "").split(".")[0] == "torch"


def _is_pure(target: Any) -> bool:
    return (getattr(target, "__module__", None) or "") in _PURE_MODULES


def _counted_by_fvcore(target: Any) -> bool:
    try:
        return target in FVCORE_COUNTED
    except TypeError:  # unhashable target
        return False


def fallback_rule(kind: str, target: Any):
    """``(op type, shape rule)`` for an op that has no rule of its own (see the module docstring)."""
    name = op_label(kind, target)
    if kind == "call_module":
        fn = _on_meta(target)
        block = not isinstance(target, _UNCOUNTED_MODULES)
    elif kind == "call_method":
        def fn(self, *a, **k):
            return getattr(self, target)(*a, **k)
        block = False
    else:
        fn = target
        block = not (_is_torch(target) or _is_pure(target))

    def rule(call: Call) -> Any:
        where = f"{_qualified(kind, target)} at {call.path or '<root>'!r}"
        if _counted_by_fvcore(target):
            raise UnsupportedOpError(
                f"{where} has no shape rule, and fvcore counts its FLOPs, so taking its shapes from PyTorch and "
                f"counting 0 would be a silent wrong number. Register a shape rule "
                f"(@hwnas.graph.register_shape_rule({name}, op='my_op')) and a FLOP rule that matches fvcore "
                "(from hwnas.profile import register_cost_rule; @register_cost_rule('flops', 'my_op')).")
        if block:
            real = target if kind == "call_module" else fn
            out = _run_block(fn, real, call, where)
            call.attrs.update(fallback="block", callable=real, args=call.args, kwargs=call.kwargs)
            return out
        call.attrs["fallback"] = "meta"
        return _run_meta(fn, call, where, name)

    return name, rule


def _on_meta(module: nn.Module):
    """``module`` as a function that runs with meta copies of its parameters and buffers (no data copied)."""
    from torch.func import functional_call

    def run(*args, **kwargs):
        state = {n: torch.empty_like(t, device="meta") for n, t in
                 [*module.named_parameters(remove_duplicate=False), *module.named_buffers(remove_duplicate=False)]}
        return functional_call(module, state, args, kwargs, tie_weights=False, strict=False)

    run.__name__ = type(module).__name__
    return run


def _run_meta(fn, call: Call, where: str, name: str) -> Any:
    try:
        with torch.device("meta"), torch.no_grad():
            return evaluate(fn, call.args, call.kwargs, where)
    except UnsupportedOpError:
        raise
    except Exception as meta_error:  # tell a data-dependent op from one that fails or lacks a meta kernel
        make, mode = _fake_tensor_maker()
        try:
            with torch.no_grad():
                return evaluate(fn, call.args, call.kwargs, where, make=make, context=lambda: mode)
        except UnsupportedOpError:
            raise
        except Exception as e:
            raise _explain(e, meta_error, where, name) from e


def _explain(error: Exception, meta_error: Exception, where: str, name: str) -> UnsupportedOpError:
    from torch._subclasses.fake_tensor import DataDependentOutputException, DynamicOutputShapeException

    fix = (f"Register a shape rule (@hwnas.graph.register_shape_rule({name}, op='my_op') on a function of a "
           "hwnas.graph.Call returning its hwnas.graph.TensorMeta), or move the code into a module and make it a "
           "leaf with hwnas.graph.register_leaf(ThatModule).")
    if isinstance(error, (DataDependentOutputException, DynamicOutputShapeException)):
        return DataDependentOpError(f"{where} depends on tensor values (its output shape, or a Python value it "
                                    f"returns, is data-dependent: {error}), so hwnas cannot infer it from shapes. {fix}")
    return UnsupportedOpError(f"{where} has no shape rule and fails on meta tensors of its input shapes "
                              f"({type(meta_error).__name__}: {meta_error}; with fake tensors: "
                              f"{type(error).__name__}: {error}). {fix}")


def _run_block(fn, real_fn, call: Call, where: str) -> Any:
    """Output of a fixed block: meta tensors first; for data-dependent code, real runs on two different random
    inputs, which must give the same shapes (the block's shapes must not depend on tensor values)."""
    try:
        with torch.device("meta"), torch.no_grad():
            return evaluate(fn, call.args, call.kwargs, where, max_points=MAX_BLOCK_POINTS)
    except UnsupportedOpError:
        raise
    except Exception as meta_error:
        try:
            with torch.no_grad():
                runs = [evaluate(real_fn, call.args, call.kwargs, where, make=_seeded(seed),
                                 max_points=MAX_BLOCK_POINTS) for seed in (0, 1)]
        except UnsupportedOpError:
            raise
        except Exception as e:
            key = type(real_fn).__name__ if isinstance(real_fn, nn.Module) else getattr(real_fn, "__name__", "fn")
            raise UnsupportedOpError(
                f"{where} is profiled as a fixed block but fails on inputs of its shapes ({type(e).__name__}: {e}; "
                f"with meta tensors: {type(meta_error).__name__}: {meta_error}). Check the input shapes, or register "
                f"a shape rule with @hwnas.graph.register_shape_rule({key}, op='my_op').") from e
        if repr(runs[0]) != repr(runs[1]):
            raise DataDependentOpError(
                f"{where} is profiled as a fixed block, but its output shapes depend on tensor values ({runs[0]!r} on "
                f"one random input, {runs[1]!r} on another), so hwnas cannot infer them. Register a shape rule for it "
                "(@hwnas.graph.register_shape_rule).") from meta_error
        return runs[0]


def _seeded(seed: int):
    def make(shape, dtype):
        if dtype.is_floating_point or dtype.is_complex:
            return torch.randn(shape, dtype=dtype, generator=torch.Generator().manual_seed(seed))
        return torch.zeros(shape, dtype=dtype)

    return make
