"""``hwnas.convert``: an ordinary PyTorch CNN or transformer as a searchable space."""

from __future__ import annotations

import contextlib
import copy
import gc
import inspect
import logging
import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import fx, nn

from hwnas.convert.analysis import Analyzer, record_shapes
from hwnas.convert.blocks import find_runs
from hwnas.convert.build import Options, build
from hwnas.convert.rules import RuleBook, RuleError, normalize_rules
from hwnas.convert.space import Conversion, ConvertedSpace, make_space
from hwnas.graph.inputs import positional_inputs
from hwnas.graph.leaves import auto_leaf_reason
from hwnas.graph.registry import _LEAVES, is_registered_leaf
from hwnas.graph.trace import HwnasTracer, none_defaults, trace_module
from hwnas.space.modules import HwnasModule

__all__ = ["convert", "ConversionError", "MODES", "MODE_PARTS", "default_ratios", "as_model", "guess_input_shape"]

log = logging.getLogger(__name__)

MODES = ("width", "width+kernel", "width+depth", "width+kernel+depth", "fastnas", "autonas")
#: What each mode searches; ``"fastnas"`` (pruning: widths of importance-sorted channels, searchable without
#: training) and ``"autonas"`` (NAS: width, kernel and depth) are named after ModelOpt's modes.
MODE_PARTS = {"fastnas": "width", "autonas": "width+kernel+depth"}
#: Default channel ratios per mode (ModelOpt's defaults for its two modes).
_DEFAULT_RATIOS = {"fastnas": tuple(round(0.05 * i, 2) for i in range(1, 21)), "autonas": (0.5, 0.67, 1.0)}


def default_ratios(mode: str) -> tuple[float, ...]:
    """The channel ratios ``convert`` offers in ``mode`` when none are given."""
    return _DEFAULT_RATIOS.get(mode, (0.25, 0.5, 0.75, 1.0))


def as_model(model_or_factory: Any, who: str = "hwnas.convert") -> nn.Module:
    """A model from an instance, a function returning one, or a ``(function, args, kwargs)`` tuple."""
    if isinstance(model_or_factory, nn.Module):
        return model_or_factory
    if isinstance(model_or_factory, tuple) and model_or_factory and callable(model_or_factory[0]):
        fn, args, kwargs = (tuple(model_or_factory) + ((), {}))[:3]
        model = fn(*(args or ()), **(kwargs or {}))
    elif callable(model_or_factory):
        model = model_or_factory()
    else:
        raise ConversionError(f"{who}: model must be a torch.nn.Module, a function returning one, or a (function, "
                              f"args, kwargs) tuple; got {type(model_or_factory).__name__}.")
    if not isinstance(model, nn.Module):
        raise ConversionError(f"{who}: the model factory returned a {type(model).__name__}, not a torch.nn.Module; "
                              "pass a function that builds the model (e.g. torchvision.models.resnet50).")
    return model


def guess_input_shape(model: nn.Module) -> tuple[int, ...]:
    """An input shape for a model given without a dummy input, when the model tells it.

    In order: a timm-style ``pretrained_cfg`` / ``default_cfg`` ``input_size``; an ``image_size`` attribute
    (torchvision's ViT) with the first convolution's input channels; the first layer, when it is a
    ``Conv2d`` (``(1, in_channels, 224, 224)``, ImageNet's size) or a ``Linear`` (``(1, in_features)``).

    Raises:
        ConversionError: the model does not tell its input (an embedding, a 1-D/3-D convolution first, ...).
    """
    first = next((m for m in model.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear,
                                                                nn.Embedding, nn.LSTM, nn.GRU, nn.RNN))), None)
    for cfg_name in ("pretrained_cfg", "default_cfg"):
        cfg = getattr(model, cfg_name, None)
        if isinstance(cfg, dict) and isinstance(cfg.get("input_size"), (tuple, list)):
            return (1, *(int(v) for v in cfg["input_size"]))
    size = getattr(model, "image_size", None)
    if isinstance(size, int) and isinstance(first, nn.Conv2d):
        return (1, first.in_channels, size, size)
    if isinstance(first, nn.Conv2d):
        return (1, first.in_channels, 224, 224)
    if isinstance(first, nn.Linear):
        return (1, first.in_features)
    what = f"its first layer is a {type(first).__name__}" if first is not None else "it has no conv or linear layer"
    raise ConversionError(f"hwnas.convert: no dummy_input was given and {type(model).__name__} does not tell its "
                          f"input shape ({what}); pass dummy_input=torch.randn(...) or input_shape=(1, ...).")


class ConversionError(ValueError):
    """A model cannot be converted as asked (bad arguments, or the model fails on the dummy input)."""


def _check(mode: str, channel_ratios: Sequence[float] | None, channel_divisor: int | None) -> tuple[float, ...]:
    if mode not in MODES:
        raise ConversionError(f"hwnas.convert: unknown mode {mode!r}; expected one of {list(MODES)}. Use 'width' or "
                              "'fastnas' for channel choices only, or 'width+kernel+depth' / 'autonas' to also search "
                              "kernels and depth.")
    if channel_ratios is None:
        channel_ratios = default_ratios(mode)
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


def _inputs(model: nn.Module, dummy_input: Any, input_shape: Any) -> tuple[torch.Tensor, ...]:
    if dummy_input is None:
        shapes = input_shape if input_shape is not None else guess_input_shape(model)
        shapes = [shapes] if shapes and all(isinstance(v, int) for v in shapes) else list(shapes)
        try:
            gen = torch.Generator().manual_seed(0)
            return tuple(torch.randn(tuple(int(v) for v in s), generator=gen) for s in shapes)
        except (TypeError, ValueError, RuntimeError):
            raise ConversionError(f"hwnas.convert: input_shape must be a shape like (1, 3, 224, 224) or a tuple of "
                                  f"shapes, got {input_shape!r}.") from None
    if input_shape is not None:
        raise ConversionError("hwnas.convert: give dummy_input or input_shape, not both.")
    try:
        return positional_inputs(model, dummy_input)
    except TypeError as e:
        raise ConversionError(f"hwnas.convert: {e}") from None


def _importance_by_id(work: nn.Module, importance: dict[str, torch.Tensor] | None) -> dict[int, torch.Tensor] | None:
    if importance is None:
        return None
    params = dict(work.named_parameters())
    out = {}
    for name, score in importance.items():
        p = params.get(name)
        if p is None or not isinstance(score, torch.Tensor) or score.shape != p.shape:
            got = "no such parameter" if p is None else f"shape {tuple(getattr(score, 'shape', ()))} for {tuple(p.shape)}"
            raise ConversionError(f"hwnas.convert: importance[{name!r}]: {got}; give one non-negative tensor per "
                                  "parameter name of model.named_parameters(), of the parameter's shape (e.g. from "
                                  "hwnas.prune.gradnas_scores).")
        out[id(p)] = score.detach().abs().to(torch.float64)
    return out


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


@contextlib.contextmanager
def _gc_paused() -> Any:
    """Python's cyclic garbage collector paused while converting (restored after): a full collection that falls
    inside a conversion walks every object of the program (with timm imported, 0.3-0.4 s of DenseNet-121's or
    MobileOne's 1 s conversion); the conversion's garbage is collected later as usual."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def convert(model: nn.Module, dummy_input: Any = None, mode: str = "width",
            channel_ratios: Sequence[float] | None = None, channel_divisor: int | None = None,
            *, rules: dict[str, Any] | None = None, input_shape: Any = None,
            importance: dict[str, torch.Tensor] | None = None, _permute: bool = True) -> ConvertedSpace:
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
    :mod:`hwnas.convert.build`, or the scores given as ``importance``) consistently in every tensor, so the
    largest subnet computes exactly what the model computes, and smaller widths keep the most important
    channels: the space is ready to search without training (pruning). ``model`` itself is not changed (it
    is copied).

    Args:
        model: a ``torch.nn.Module`` that ``torch.fx`` can trace, a function returning one, or a
            ``(function, args, kwargs)`` tuple.
        dummy_input: a tensor, a tuple of tensors, or a tuple ending in a dict of keyword arguments
            (``(x, {"mask": m})``, the ``torch.onnx.export`` convention; see :mod:`hwnas.graph.inputs`); its
            batch size counts in FLOPs. When ``None``, ``input_shape`` or :func:`guess_input_shape` gives it.
        mode: ``"width"``, ``"width+kernel"``, ``"width+depth"``, ``"width+kernel+depth"``, ``"fastnas"``
            (width, as ``"width"``, with 20 ratios 0.05 .. 1.0 by default) or ``"autonas"`` (width, kernel and
            depth, with ratios (0.5, 0.67, 1.0) by default).
        channel_ratios: fractions of each group's width to offer, in (0, 1] (default: by mode).
        channel_divisor: round every width choice to a multiple of this (e.g. 8), or ``None``.
        rules: per-layer settings by layer type and name pattern (:mod:`hwnas.convert.rules`), e.g.
            ``{"nn.Conv2d": {"*": {"channels_ratio": (0.5, 1.0), "kernel_size": (3, 5)}}}``.
        input_shape: the input's shape (or a tuple of shapes) when no ``dummy_input`` is given.
        importance: ``{parameter name: scores of its shape}`` to sort channels by instead of the weights' L1
            norms (e.g. gradient scores from :func:`hwnas.prune.gradnas_scores`).

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
    model = as_model(model)
    try:
        book = RuleBook(normalize_rules(rules))
    except RuleError as e:
        raise ConversionError(str(e)) from None
    inputs = _inputs(model, dummy_input, input_shape)
    parts = MODE_PARTS.get(mode, mode)
    with _gc_paused():
        t0 = time.perf_counter()
        name = type(model).__name__
        work = copy.deepcopy(model)
        scores = _importance_by_id(work, importance)
        training = work.training
        work.eval()  # traced in eval mode: code that branches on self.training takes its inference path
        graph, decided = _trace(work, inputs)
        gm = fx.GraphModule(work, graph, class_name=name)
        gm.eval()
        try:
            shapes, reference = record_shapes(gm, inputs)
        except Exception as e:
            shapes_txt = [tuple(t.shape) for t in inputs]
            how = "" if dummy_input is not None else \
                " (made from input_shape or guessed, as no dummy_input was given: pass dummy_input or input_shape)"
            raise ConversionError(f"hwnas.convert: {name} fails on the dummy input of shape(s) {shapes_txt}{how}: "
                                  f"{type(e).__name__}: {e}. Pass an input the model accepts.") from e
        log.debug("traced %s: %d nodes in %.2f s", name, len(gm.graph.nodes), time.perf_counter() - t0)
        an = Analyzer(gm, shapes, kernel="kernel" in parts or book.wants_kernels()).run()
        runs = find_runs(gm, an) if "depth" in parts else []
        conversion = Conversion(name, mode, list(ratios), channel_divisor,
                                [{"shape": list(t.shape), "dtype": str(t.dtype).replace("torch.", "")} for t in inputs],
                                decided_by_input=decided, rules=book.rules or None)
        net = build(gm, an, runs, Options(parts, ratios, channel_divisor, _permute, book, scores), conversion)
        space = make_space(net, conversion, len(inputs))
        space.input_names = _input_names(model, len(inputs))
        space.eval()
        got = _run(space, inputs)
        _check_same(reference, got, name)
        space.train(training)
        conversion.convert_s = time.perf_counter() - t0
        log.info("%s", conversion.summary())
        return space


def _input_names(model: nn.Module, n: int) -> list[str] | None:
    try:
        params = [p for p in inspect.signature(model.forward).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        return None
    return [p.name for p in params[:n]] if len(params) >= n else None


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
