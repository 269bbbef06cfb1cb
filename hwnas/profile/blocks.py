"""FLOPs of fixed blocks: one-off fvcore counts of an op that hwnas profiles as a whole.

A *fixed block* (:mod:`hwnas.graph.fallback`) is a leaf module without a shape rule (a module torch.fx cannot
trace, a module timm marks not traceable, ``nn.TransformerEncoderLayer``, ...) or a function from outside
torch kept whole. Its FLOPs are what fvcore counts when it runs the block alone on seeded random inputs of
the block's input shapes: exactly its share of fvcore's count of the whole model, since fvcore counts each
aten op on its own (code whose path depends on the data is counted along the path that those inputs take).
When the block's input shapes depend on choices it is counted at each combination (at most
:data:`~hwnas.graph.fallback.MAX_BLOCK_POINTS`). This runs once, when the profiler is built.

fvcore is an optional dependency (a test extra): without it a block counts 0 FLOPs and is listed in
``FlopsProfiler.uncounted_ops``.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import torch
from torch import nn

from hwnas.graph.fallback import MAX_BLOCK_POINTS, evaluate, real_tensor
from hwnas.graph.trace import Op

__all__ = ["block_flops", "fvcore_available"]


def fvcore_available() -> bool:
    try:
        import fvcore.nn  # noqa: F401
    except ImportError:
        return False
    return True


def _tensors(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _tensors(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _tensors(v)]
    return []


def _replace(value: Any, it) -> Any:
    if isinstance(value, torch.Tensor):
        return next(it)
    if isinstance(value, tuple) and not hasattr(value, "_fields"):
        return tuple(_replace(v, it) for v in value)
    if isinstance(value, list):
        return [_replace(v, it) for v in value]
    if isinstance(value, dict):
        return {k: _replace(v, it) for k, v in value.items()}
    return value


class _Block(nn.Module):
    """The block as a module whose inputs are its tensor arguments (fvcore traces modules with tensor inputs)."""

    def __init__(self, fn: Any, args: tuple, kwargs: dict):
        super().__init__()
        self.fn = fn  # a module is registered as a submodule, so its parameters stay parameters in the trace
        self.template = (args, kwargs)

    def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        args, kwargs = _replace(self.template, iter(tensors))
        return tuple(_tensors(self.fn(*args, **kwargs)))


def _count(fn: Any, *args: Any, **kwargs: Any) -> float:
    from fvcore.nn import FlopCountAnalysis

    block = _Block(fn, args, kwargs)
    inputs = tuple(_tensors((args, kwargs)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        analysis = FlopCountAnalysis(block, inputs)
        analysis.unsupported_ops_warnings(False)
        analysis.uncalled_modules_warnings(False)
        return analysis.total()


def block_flops(op: Op) -> Any:
    """fvcore's FLOPs of a fixed block (a number, or a table over the labels its input shapes depend on),
    or ``None`` when fvcore is not installed."""
    if not fvcore_available():
        return None
    logging.getLogger("fvcore").setLevel(logging.ERROR)
    where = f"fixed block {op.name!r} ({op.op_type}) at {op.path or '<root>'!r}"
    fn = op.attrs["callable"]
    args, kwargs = op.attrs["args"], op.attrs["kwargs"]
    # a block called with sizes only (XCiT's and EdgeNeXt's PositionalEncodingFourier(B, H, W)) computes its
    # tensors itself: fvcore counts it with no tensor input
    return evaluate(lambda *a, **k: _count(fn, *a, **k), args, kwargs, where, make=real_tensor,
                    max_points=MAX_BLOCK_POINTS)
