"""ONNX export and ONNX Runtime sessions: the plumbing under :mod:`hwnas.hw.measure`.

- :func:`export_onnx` writes a torch module as ONNX the way hwnas measures it (eval mode, legacy
  TorchScript exporter, opset :data:`~hwnas.hw.device.OPSET`, constant folding so Conv+BN fold).
- :func:`create_session` opens a model for a :class:`~hwnas.hw.device.Device` with clear errors.
- :func:`make_feed` builds (and checks) the input arrays once, before any timing.
- :class:`BoundRunner` runs a session through IOBinding with preallocated inputs and outputs, so a
  timed run does no Python-side allocation or copying.
"""

from __future__ import annotations

import logging
import os
import threading
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from hwnas.hw.device import OPSET, Device, get_device

__all__ = ["export_onnx", "create_session", "make_feed", "BoundRunner", "EXPORT_LOCK"]

#: Held around every ``torch.onnx.export`` (the exporter keeps global state; builds of several devices run in threads).
EXPORT_LOCK = threading.RLock()

logger = logging.getLogger(__name__)

_ORT_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}


def export_onnx(
    module: Any,
    dummy_input: Any,
    path: str | os.PathLike,
    *,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    opset: int = OPSET,
    dynamic_axes: dict[str, dict[int, str]] | None = None,
) -> Path:
    """Export ``module`` to ONNX at ``path`` and return the path.

    The module is put in eval mode for the export (and restored afterwards), so BatchNorm folds into
    the preceding convolution under constant folding. Inputs are named ``input`` (one input) or
    ``input_0``, ``input_1``, ... unless ``input_names`` is given; ``dynamic_axes`` is torch.onnx.export's.

    Example:
        >>> import torch, tempfile, os
        >>> p = export_onnx(torch.nn.Conv2d(3, 8, 3), torch.randn(1, 3, 8, 8),
        ...                 os.path.join(tempfile.mkdtemp(), "conv.onnx"))
        >>> p.suffix
        '.onnx'
    """
    import torch

    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"export_onnx expects a torch.nn.Module, got {type(module).__name__}.")
    args = tuple(dummy_input) if isinstance(dummy_input, (tuple, list)) else (dummy_input,)
    if not args or not all(isinstance(a, torch.Tensor) for a in args):
        raise TypeError(
            f"export_onnx({type(module).__name__}): dummy_input must be a tensor or a tuple of tensors, "
            f"got {type(dummy_input).__name__}. Pass e.g. torch.randn(1, 3, 224, 224)."
        )
    if input_names is None:
        input_names = ["input"] if len(args) == 1 else [f"input_{i}" for i in range(len(args))]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training = module.training
    module.eval()
    try:
        with EXPORT_LOCK, torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice
            torch.onnx.export(
                module,
                args,
                str(path),
                dynamo=False,
                opset_version=opset,
                do_constant_folding=True,
                input_names=list(input_names),
                output_names=list(output_names) if output_names is not None else None,
                dynamic_axes=dynamic_axes,
            )
    except Exception as err:
        shapes = [tuple(a.shape) for a in args]
        raise RuntimeError(
            f"export_onnx: could not export {type(module).__name__} with input shapes {shapes} to "
            f"'{path}' (torch.onnx.export, dynamo=False, opset {opset}): {type(err).__name__}: {err}. "
            f"Check that the module runs on dummy_input in eval mode and uses only ONNX-exportable ops."
        ) from err
    finally:
        module.train(was_training)
    logger.debug("exported %s to %s", type(module).__name__, path)
    return path


def create_session(
    onnx_path: str | os.PathLike,
    device: str | Device,
    **session_options: Any,
) -> ort.InferenceSession:
    """Open ``onnx_path`` as an ``InferenceSession`` configured by ``device``.

    Extra keyword arguments go to :meth:`Device.session_options` (profiling, optimised-model path).
    """
    dev = get_device(device)
    path = Path(onnx_path)
    if not path.is_file():
        raise FileNotFoundError(
            f"ONNX model '{path}' not found (expected an existing .onnx file for device {dev.name!r}). "
            f"Check the path, or export a torch module first with hwnas.hw.export_onnx()."
        )
    if dev.agent:
        raise ValueError(f"device {dev.name!r} runs behind the measurement agent {dev.agent}: it has no session on this "
                         "machine. Measure through hwnas.hw.measure_many / profile_run, which send the model there.")
    dev.check_available()
    options = dev.session_options(**session_options)
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=dev.providers())
    except Exception as err:
        raise RuntimeError(
            f"ONNX Runtime could not load '{path}' on device {dev.name!r} ({dev.provider}, "
            f"optimisation {dev.graph_optimization!r}): {err}. Check the file with onnx.checker.check_model "
            f"and that its opset is supported by onnxruntime {ort.__version__}."
        ) from err
    if dev.provider not in session.get_providers():  # ORT falls back to the CPU when a provider fails to start
        raise RuntimeError(
            f"device {dev.name!r}: ONNX Runtime opened '{path}' without {dev.provider} (it runs on "
            f"{session.get_providers()}): the provider is installed but could not start (no GPU, missing driver "
            f"or libraries, or bad provider_options {dict(dev.provider_options)}). Run with ORT logging "
            f"(log_severity_level=0) to see why; a measurement would time another provider."
        )
    return session


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # torch.Tensor, without importing torch
        value = value.detach().cpu().numpy()
    return np.ascontiguousarray(np.asarray(value))


def _random_array(shape: Sequence[int], dtype: Any, rng: np.random.Generator) -> np.ndarray:
    if np.issubdtype(dtype, np.floating):
        # Magnitudes in [0.1, 1) with random sign: far from the denormal range, no exact zeros.
        mag = rng.uniform(0.1, 1.0, size=shape)
        sign = np.where(rng.random(size=shape) < 0.5, -1.0, 1.0)
        return np.ascontiguousarray((mag * sign).astype(dtype))
    if dtype == np.bool_:
        return np.zeros(shape, dtype=np.bool_)
    return np.zeros(shape, dtype=dtype)


def make_feed(
    session: ort.InferenceSession,
    dummy_input: Any = None,
    *,
    seed: int = 0,
    source: str = "model",
) -> dict[str, np.ndarray]:
    """Build the ``{input name: array}`` feed for ``session``, checked against its inputs.

    Args:
        session: The session whose inputs to feed.
        dummy_input: ``None`` (random arrays from the model's static input shapes), a tensor or array
            (one input), a tuple/list of them (positional), or a dict keyed by input name.
        seed: Seed of the ``numpy.random.Generator`` used when arrays are generated.
        source: Name of the model in error messages (usually its path).
    """
    inputs = session.get_inputs()
    names = [i.name for i in inputs]
    if dummy_input is None:
        rng = np.random.default_rng(seed)
        feed = {}
        for inp in inputs:
            dynamic = [d for d in inp.shape if not isinstance(d, int)]
            if dynamic:
                raise ValueError(
                    f"{source}: input {inp.name!r} has dynamic dimensions {dynamic} (shape {inp.shape}), so "
                    f"hwnas cannot make an input for it. Pass dummy_input (an array of the shape to measure)."
                )
            dtype = _ORT_DTYPES.get(inp.type)
            if dtype is None:
                raise ValueError(
                    f"{source}: input {inp.name!r} has type {inp.type}, which hwnas cannot generate; "
                    f"expected one of {sorted(_ORT_DTYPES)}. Pass dummy_input as a dict of arrays."
                )
            feed[inp.name] = _random_array(inp.shape, dtype, rng)
        return feed
    if isinstance(dummy_input, Mapping):
        unknown = [k for k in dummy_input if k not in names]
        if unknown:
            raise ValueError(
                f"{source}: input name(s) {unknown} not in the model; the model's inputs are {names}. "
                f"Key dummy_input by these names (or pass arrays positionally)."
            )
        missing = [n for n in names if n not in dummy_input]
        if missing:
            raise ValueError(
                f"{source}: dummy_input lacks model input(s) {missing}; the model needs {names}."
            )
        feed = {n: _to_numpy(dummy_input[n]) for n in names}
    else:
        values = list(dummy_input) if isinstance(dummy_input, (tuple, list)) else [dummy_input]
        if len(values) != len(names):
            raise ValueError(
                f"{source}: got {len(values)} input array(s) but the model has {len(names)} inputs {names}. "
                f"Pass one array per input, or a dict keyed by input name."
            )
        feed = {n: _to_numpy(v) for n, v in zip(names, values)}
    for inp in inputs:
        arr = feed[inp.name]
        expected_dtype = _ORT_DTYPES.get(inp.type)
        if expected_dtype is not None and arr.dtype != expected_dtype:
            raise ValueError(
                f"{source}: input {inp.name!r} expects {inp.type} but got an array of dtype {arr.dtype}. "
                f"Convert it, e.g. x.astype(np.{np.dtype(expected_dtype).name})."
            )
        static = [d if isinstance(d, int) else None for d in inp.shape]
        if len(static) != arr.ndim or any(s is not None and s != a for s, a in zip(static, arr.shape)):
            raise ValueError(
                f"{source}: input {inp.name!r} expects shape {inp.shape} but got {list(arr.shape)}. "
                f"Pass an array of the shape the model was exported with."
            )
    return feed


def check_counts(**counts: int) -> None:
    """Raise a clear ValueError unless each count is an int (>= 0 for ``warmup``, else >= 1)."""
    for name, value in counts.items():
        minimum = 0 if name == "warmup" else 1
        if not isinstance(value, (int, np.integer)) or value < minimum:
            raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}.")


class BoundRunner:
    """Run one session through IOBinding with preallocated input and output buffers.

    One untimed ``session.run`` finds the output shapes; the outputs are then bound to fixed
    ``OrtValue`` buffers (ORT writes into them), so :meth:`run` costs only the session run.
    """

    def __init__(self, session: ort.InferenceSession, feed: Mapping[str, np.ndarray]):
        self.session = session
        self.feed = dict(feed)  # keep the arrays alive: the binding points at their memory
        first = session.run(None, self.feed)
        self.binding = session.io_binding()
        for name, arr in self.feed.items():
            self.binding.bind_cpu_input(name, arr)
        self.outputs = []
        for meta, value in zip(session.get_outputs(), first):
            value = np.asarray(value)
            ov = ort.OrtValue.ortvalue_from_shape_and_type(list(value.shape), value.dtype)
            self.binding.bind_ortvalue_output(meta.name, ov)
            self.outputs.append(ov)

    def run(self) -> None:
        """One inference into the bound buffers."""
        self.session.run_with_iobinding(self.binding)
