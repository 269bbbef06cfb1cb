"""``hwnas.convert``: an ordinary PyTorch CNN or transformer as a searchable space."""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import fx, nn

from hwnas.convert.analysis import Analyzer, record_shapes
from hwnas.convert.blocks import find_runs
from hwnas.convert.build import Options, build
from hwnas.convert.space import Conversion, ConvertedSpace, make_space
from hwnas.graph.leaves import auto_leaf_reason
from hwnas.graph.registry import _LEAVES, is_registered_leaf
from hwnas.graph.trace import HwnasTracer, none_defaults, trace_module
from hwnas.space.modules import HwnasModule

__all__ = ["convert", "ConversionError", "MODES"]

log = logging.getLogger(__name__)

MODES = ("width", "width+kernel", "width+depth", "width+kernel+depth")


class ConversionError(ValueError):
    """A model cannot be converted as asked (bad arguments, or the model fails on the dummy input)."""


def _check(mode: str, channel_ratios: Sequence[float], channel_divisor: int | None) -> tuple[float, ...]:
    if mode not in MODES:
        raise ConversionError(f"hwnas.convert: unknown mode {mode!r}; expected one of {list(MODES)}. Use 'width' for "
                              "channel choices only, or 'width+kernel+depth' to also search kernels and depth.")
    try:
        ratios = tuple(sorted({float(r) for r in channel_ratios}))
    except (TypeError, ValueError):
        raise ConversionError(f"hwnas.convert: channel_ratios must be numbers in (0, 1], got {channel_ratios!r}; "
                              "pass e.g. (0.25, 0.5, 0.75, 1.0).") from None
    if not ratios or ratios[0] <= 0 or ratios[-1] > 1:
        raise ConversionError(f"hwnas.convert: channel_ratios must be numbers in (0, 1], got {list(ratios)}; the "
                              "largest subnet is always the original width, so pass e.g. (0.25, 0.5, 0.75, 1.0).")
    if channel_divisor is not None and (not isinstance(channel_divisor, int) or channel_divisor < 1):
        raise ConversionError(f"hwnas.convert: channel_divisor must be a positive int or None, got "
                              f"{channel_divisor!r}; pass e.g. 8 to round every width choice to a multiple of 8.")
    return ratios


def _inputs(dummy_input: Any) -> tuple[torch.Tensor, ...]:
    inputs = tuple(dummy_input) if isinstance(dummy_input, (tuple, list)) else (dummy_input,)
    for i, t in enumerate(inputs):
        if not isinstance(t, torch.Tensor):
            raise ConversionError(f"hwnas.convert: dummy_input[{i}] must be a torch.Tensor, got {type(t).__name__}; "
                                  "pass a tensor of the input's shape, e.g. torch.randn(1, 3, 224, 224).")
    return inputs


class _ConvertTracer(HwnasTracer):
    """Also traces into subclasses of ``torch.nn`` layers that replace ``forward`` outside torch (timm's
    ``BatchNormAct2d`` calls ``F.batch_norm`` with its own tensors, then an activation): the analysis sees the
    ops they really run instead of an unknown layer."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        mro = type(m).__mro__
        own = [c for c in mro if not c.__module__.startswith("torch.")]
        torch_layer = any(c.__module__.startswith("torch.nn") and c is not nn.Module and "forward" in c.__dict__
                          for c in mro)
        if own and torch_layer and not isinstance(m, HwnasModule) and any("forward" in c.__dict__ for c in own) \
                and not any(c in _LEAVES for c in own):  # a leaf the user registered stays one
            return False
        if self._third_party and isinstance(m, self._third_party) and _traces_alone(m):
            return False  # timm marks it for its feature extraction, but its ops are plain: search inside
        return super().is_leaf_module(m, qualname)


def _traces_alone(m: nn.Module) -> bool:
    """True when :class:`_ConvertTracer` traces ``m`` by itself (timm marks whole blocks, e.g. NF-RegNet's
    ``NormFreeBlock``, not traceable for its own feature extraction although torch.fx traces them)."""
    if is_registered_leaf(m) or auto_leaf_reason(m) is not None:
        return False
    try:
        tracer = _ConvertTracer()
        tracer._third_party = ()  # the marked module itself is the root here
        tracer.trace(m)
    except Exception:  # noqa: BLE001 - any tracing failure: keep it a leaf
        return False
    return True


def _trace(work: nn.Module, inputs: tuple) -> tuple[fx.Graph, list[str]]:
    """Trace with :class:`_ConvertTracer`; where Python control flow on traced values stops it, again with
    that control flow decided by the dummy input (:mod:`hwnas.graph.example`); where that fails too, the usual
    tracer (which makes what it cannot trace a fixed block, or gives its clear error). Returns the graph and
    where the dummy input decided control flow."""
    n_inputs = len(inputs)
    concrete = none_defaults(work, n_inputs)
    try:
        return _ConvertTracer(n_inputs).trace(work, concrete_args=concrete), []
    except Exception:  # noqa: BLE001 - any tracing failure: try the next way
        pass
    tracer = _ConvertTracer(n_inputs, example=inputs)
    try:
        graph = tracer.trace(work, concrete_args=concrete)
        return graph, list(dict.fromkeys(tracer.example_values.decisions if tracer.example_values else []))
    except Exception:  # noqa: BLE001 - fall back to the usual tracer
        return trace_module(work, n_inputs=n_inputs), []


def _run(module: nn.Module, inputs: tuple) -> Any:
    with torch.no_grad():
        return module(*inputs)


def convert(model: nn.Module, dummy_input: Any, mode: str = "width",
            channel_ratios: Sequence[float] = (0.25, 0.5, 0.75, 1.0), channel_divisor: int | None = None,
            *, _permute: bool = True) -> ConvertedSpace:
    """Turn an ordinary PyTorch model into a searchable space, keeping its weights.

    The model is traced once with ``torch.fx`` and run once on ``dummy_input`` for its shapes. Channel
    axes that must keep the same channels (residual adds, depthwise and grouped convolutions, squeeze-excite
    gates, attention inputs) form *groups*; each group gets one width choice
    ``channel_ratios x width`` (rounded to ``channel_divisor``, to whole groups of a grouped convolution and
    to multiples of the attention heads; unique, sorted, always including the original width). A
    concatenation lays its inputs' groups side by side, so DenseNet and SqueezeNet convert; where more than
    three width labels would meet on one axis, inputs of equal width share a label (one growth rate per
    dense block). With ``"kernel"`` in ``mode``, every convolution with an odd square kernel and "same"
    padding also gets kernel choices (the up-to-three largest odd sizes up to its own, weights cropped at the
    centre); with ``"depth"``, runs of residual blocks whose input and output shapes and channels match
    get a depth choice ``0 .. n`` (the first ``d`` blocks run; see :mod:`hwnas.convert.blocks`).

    Splits, chunks and slices along channels cut groups into parts (CSP, DPN, GPT-2's q/k/v); a reshape
    into ``(3, heads, head_dim)`` or ``(heads, head_dim)`` makes the head count a choice shared by q, k and v
    (timm ViT, BERT); functional batch/group norms with the model's own tensors (timm's ``BatchNormAct2d``)
    and GPT-2's ``addmm`` layers are searched like their modules; a module without weights called several
    times is each call on its own. What cannot be searched safely stays fixed and is listed by
    ``summary()`` with the op and module path: channels mixed by a reshape (ShuffleNet's channel shuffle),
    layers of unknown types, layers with weights called more than once, tied weights (kept tied), the
    model's outputs, and channels whose count the model reads and uses as another size (``y.view(b, c)``
    with ``c = x.size(1)`` only couples ``y`` to ``x``; see :mod:`hwnas.convert.sizes`).

    Weights: channels are sorted by importance (the L1 norms of the filters that produce them, see
    :mod:`hwnas.convert.build`) consistently in every tensor, so the largest subnet computes exactly what
    the model computes, and smaller widths keep the most important channels. ``model`` itself is not
    changed (it is copied).

    Args:
        model: a ``torch.nn.Module`` that ``torch.fx`` can trace.
        dummy_input: a tensor (or tuple of tensors) of the input's shape; its batch size counts in FLOPs.
        mode: ``"width"``, ``"width+kernel"``, ``"width+depth"`` or ``"width+kernel+depth"``.
        channel_ratios: fractions of each group's width to offer, in (0, 1].
        channel_divisor: round every width choice to a multiple of this (e.g. 8), or ``None``.

    Returns:
        A :class:`~hwnas.convert.space.ConvertedSpace` (an :class:`hwnas.nn.Space`) in the model's
        train/eval mode.

    Raises:
        ConversionError: bad arguments, or the model fails on ``dummy_input``.
        hwnas.graph.UntraceableError: ``torch.fx`` cannot trace the model (the error names the line).

    Example:
        >>> import torch, hwnas
        >>> from hwnas import zoo
        >>> model = zoo.create("resnet18", num_classes=10).eval()
        >>> x = torch.randn(1, 3, 32, 32)
        >>> space = hwnas.convert(model, x)
        >>> space.choices()["stem.0.0.width"]
        (16, 32, 48, 64)
        >>> with torch.no_grad():
        ...     torch.allclose(space(x), model(x), atol=1e-5)
        True
        >>> flops = hwnas.FlopsProfiler(space, x)
        >>> small = hwnas.export(space, space.min_sample())
        >>> flops.profile(space.min_sample()) < flops.profile(space.max_sample())
        True
    """
    ratios = _check(mode, channel_ratios, channel_divisor)
    inputs = _inputs(dummy_input)
    if not isinstance(model, nn.Module):
        raise ConversionError(f"hwnas.convert: model must be a torch.nn.Module, got {type(model).__name__}.")
    t0 = time.perf_counter()
    name = type(model).__name__
    work = copy.deepcopy(model)
    training = work.training
    work.eval()  # traced in eval mode: code that branches on self.training takes its inference path
    graph, decided = _trace(work, inputs)
    gm = fx.GraphModule(work, graph, class_name=name)
    gm.eval()
    try:
        shapes, reference = record_shapes(gm, inputs)
    except Exception as e:
        shapes_txt = [tuple(t.shape) for t in inputs]
        raise ConversionError(f"hwnas.convert: {name} fails on the dummy input of shape(s) {shapes_txt}: "
                              f"{type(e).__name__}: {e}. Pass an input the model accepts.") from e
    log.debug("traced %s: %d nodes in %.2f s", name, len(gm.graph.nodes), time.perf_counter() - t0)
    an = Analyzer(gm, shapes, kernel="kernel" in mode).run()
    runs = find_runs(gm, an) if "depth" in mode else []
    conversion = Conversion(name, mode, list(ratios), channel_divisor,
                            [{"shape": list(t.shape), "dtype": str(t.dtype).replace("torch.", "")} for t in inputs],
                            decided_by_input=decided)
    net = build(gm, an, runs, Options(mode, ratios, channel_divisor, _permute), conversion)
    space = make_space(net, conversion, len(inputs))
    space.eval()
    got = _run(space, inputs)
    _check_same(reference, got, name)
    space.train(training)
    conversion.convert_s = time.perf_counter() - t0
    log.info("%s", conversion.summary())
    return space


def _check_same(want: Any, got: Any, name: str) -> None:
    if isinstance(want, torch.Tensor):
        scale = max(1.0, float(want.abs().max()))
        err = float((want - got).abs().max()) if want.shape == got.shape else float("inf")
        if not err <= 1e-4 * scale:
            raise ConversionError(f"hwnas.convert: the converted {name} at its largest subnet differs from the model "
                                  f"by {err:.3g} (allowed {1e-4 * scale:.3g}); this is a bug in hwnas.convert: please "
                                  "report it with the model.")
    elif isinstance(want, (tuple, list)):
        for a, b in zip(want, got):
            _check_same(a, b, name)
