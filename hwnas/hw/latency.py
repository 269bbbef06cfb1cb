"""``LatencyProfiler``: milliseconds on a device, from a LUT and/or a learned predictor, through the same
cost-table engine.

Example:
    >>> import torch, hwnas
    >>> space = hwnas.spaces.create("digits")
    >>> lat = hwnas.LatencyProfiler(space, torch.randn(1, 1, 8, 8), lut="digits")
    >>> lat.profile(space.random_sample(0)) > 0
    True
"""

from __future__ import annotations

import functools
import logging
import os
from typing import Any

import numpy as np

from hwnas.graph.larray import LArray
from hwnas.graph.trace import OpGraph
from hwnas.hw.kernels import Kernel, map_kernels
from hwnas.hw.lut import LUT
from hwnas.profile.profilers import Profiler

__all__ = ["LatencyProfiler", "MissingKernelsError"]

log = logging.getLogger(__name__)


class MissingKernelsError(KeyError):
    """Kernels of the space are not in the LUT."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class LatencyProfiler(Profiler):
    """Latency in milliseconds of a sample on the LUT's device.

    Every kernel (see :mod:`hwnas.hw.kernels`) becomes a table of LUT costs over the labels it depends
    on; the LUT's calibrated per-model overhead is a constant. ``profile``, ``profile_batch`` and the
    exact ``expectation`` work as for FLOPs.

    Args:
        space, dummy_input, graph: see :class:`~hwnas.profile.profilers.Profiler`; the input's shape must
            be the one the LUT was built for (batch size and resolution matter).
        lut: a :class:`~hwnas.hw.lut.LUT` or the path of a LUT file; may be ``None`` when ``predictor`` is given.
        predictor: a learned predictor (:class:`hwnas.predict.LatencyPredictor`, or the path of a predictor
            file): with a LUT, it predicts only the kernels missing from the LUT (scaled by the LUT's
            calibration, which is fitted on the same kind of profiled kernel times) and a warning is logged;
            alone, it predicts every kernel, and its own calibration and overhead apply. Any object with
            ``predict_signatures(list[str]) -> np.ndarray`` of milliseconds works as a LUT fallback.

    Attributes:
        kernels: the space's kernels.
        predicted: signatures whose cost came from the predictor, not the LUT.

    Raises:
        MissingKernelsError: kernels missing from the LUT and no predictor; the message lists them and
            the command that measures them.
    """

    metric = "latency_ms"
    unit = "ms"

    def __init__(self, space: Any, dummy_input: Any = None, lut: LUT | str | os.PathLike | None = None,
                 graph: OpGraph | None = None, predictor: Any = None):
        if lut is None and predictor is None:
            raise ValueError("LatencyProfiler needs lut= (a LUT file, or a shipped LUT's name such as 'digits', or a "
                             "hwnas.hw.LUT; build one with benchmarks/build_lut.py) and/or predictor= (a learned "
                             "predictor such as hwnas.predict.load_predictor('cpu-ort-1t'), see hwnas.predict).")
        self.lut = lut if isinstance(lut, LUT) or lut is None else LUT.load(lut)
        shape = getattr(dummy_input, "shape", None)
        self._dummy_shape = tuple(int(d) for d in shape) if shape is not None else None
        if isinstance(predictor, (str, os.PathLike)):
            from hwnas.predict import load_predictor  # lazy: hwnas.predict builds on hwnas.hw

            predictor = load_predictor(predictor, device=self.lut.device if self.lut is not None else None)
        if self.lut is None and not hasattr(predictor, "kernel_costs_ms"):
            raise TypeError(f"LatencyProfiler without a LUT needs a hwnas.predict.LatencyPredictor (with its "
                            f"calibration), got {type(predictor).__name__}; pass lut= too, or load a predictor "
                            "with hwnas.predict.load_predictor.")
        self.predictor = predictor
        self.kernels: list[Kernel] = []
        self.predicted: set[str] = set()
        self._context: float | None = None
        super().__init__(space, dummy_input, graph)

    def _costs(self):
        self.kernels = map_kernels(self.graph)
        tables = [k.signature_table(self.graph) for k in self.kernels]
        needed = {s for _, tab in tables for s in tab.ravel() if s is not None}
        known = self.lut.entries if self.lut is not None else {}
        missing = sorted(s for s in needed if s not in known)
        fallback: dict[str, float] = {}
        if missing and self.predictor is not None:
            fallback = dict(zip(missing, self._predicted_ms(missing)))
            self.predicted = set(missing)
            if self.lut is not None:
                log.warning("%d of this space's %d kernel signatures are not in %s; the predictor predicts them "
                            "(listed in LatencyProfiler.predicted), e.g. %s", len(missing), len(needed),
                            self.lut.path or "the LUT", missing[0])
        elif missing:
            from hwnas.artifacts import shipped_name

            dev = self.lut.device.name
            name = space_spec(self.space)
            where = self.lut.path or "the LUT"
            if self.lut.path is not None and shipped_name(self.lut.path) is not None:  # never written over
                where = f"{name if name and ':' not in name else 'my_space'}_{dev}.json"
            shape = ",".join(str(d) for d in self._input_shape())
            cli = (f"hwnas lut build --space {name} --input {shape} --device {dev} --out {where}\nor "
                   if name is not None else "")
            raise MissingKernelsError(
                f"{len(missing)} of this space's {len(needed)} kernel signatures are missing from "
                f"{str(self.lut.path or 'the LUT')!r} "
                f"(device {dev}); for example:\n  " + "\n  ".join(missing[:8]) +
                f"\nMeasure them (resumable; only what is missing) with:\n  {cli}"
                f"hwnas.hw.build_lut(space, torch.zeros({shape}), {dev!r}, {str(where)!r}); or pass "
                "predictor= to predict them."
            )
        for k, (labels, tab) in zip(self.kernels, tables):
            cost = np.zeros(tab.shape)
            for cell in np.ndindex(tab.shape):
                sig = tab[cell]
                if sig is not None:
                    cost[cell] = self.lut.cost_ms(sig) if sig in known else fallback[sig]
            yield k.anchor, (LArray(labels, cost) if labels else float(cost)), 1
        if self.lut is None and hasattr(self.predictor, "graph_extra_costs"):  # its data-movement term
            for op, cost in self.predictor.graph_extra_costs(self.graph):
                yield op, cost, op.activity
        yield None, self.overhead_ms, 1

    def profile(self, sample: dict[str, Any]) -> float:
        """Predicted ms of one sample (see :attr:`_size_speed` for a speed check's size term)."""
        ms = self.model.profile(sample)
        return self._size_speed(ms) if self._size_speed else ms

    def profile_batch(self, samples: np.ndarray | Any) -> np.ndarray:
        """Predicted ms of many samples (as :meth:`profile`)."""
        ms = self.model.profile_batch(samples)
        return self._size_speed(ms) if self._size_speed else ms

    @functools.cached_property
    def _size_speed(self) -> Any:
        """With a speed check's size term on the LUT (or on a predictor alone; ``with_speed(check)``), the
        function that scales each sample's total by the check's factor for its size, as
        :func:`hwnas.predict_latency` does; else ``None``. Costs, :meth:`expectation` and :meth:`kernel_costs`
        stay at the check's median factor (they are sums of per-kernel costs). Decided once, off the hot path:
        the profiler's LUT and predictor do not change (``with_speed`` returns copies)."""
        source = self.lut if self.lut is not None else self.predictor
        return source.at_model_speed if (getattr(source, "speed", None) or {}).get("curve") else None

    @property
    def overhead_ms(self) -> float:
        """The model's fixed overhead: the LUT's calibrated overhead, or the predictor's without a LUT."""
        return self.lut.overhead_ms if self.lut is not None else float(self.predictor.overhead_ms)

    def _predicted_ms(self, signatures: list[str]) -> np.ndarray:
        """Predicted kernel costs, calibrated by the LUT (a LUT's gaps) or by the predictor itself (no LUT)."""
        ctx = {}
        if hasattr(self.predictor, "space_context"):  # the space's model size (cache context of its kernels)
            if self._context is None:
                self._context = self.predictor.space_context(self.graph, self.kernels)
            ctx = {"context": self._context}
        if self.lut is None:
            return np.asarray(self.predictor.kernel_costs_ms(signatures, **ctx), dtype=float)
        c = self.lut.calibration
        raw = np.asarray(self.predictor.predict_signatures(signatures, **ctx), dtype=float)
        # the raw predictions are at the predictor's training machine: a predictor adapted to this machine carries
        # its own factors per family (hwnas adapt), which apply instead of an adapted LUT's (those carry the LUT's
        # entries, built elsewhere)
        if getattr(self.predictor, "adapted", None):
            family = np.asarray(self.predictor.adapted_factors(signatures), dtype=float)
        elif self.lut.adapted:
            family = np.array([self.lut.family_scale(s) for s in signatures])
        else:
            family = 1.0
        return self.lut.speed_factor * family * (c["scale"] * raw + c.get("per_node_ms", 0.0))

    def _input_shape(self) -> tuple[int, ...]:
        """The concrete input shape the profiler was built at (the largest resolution of a resolution choice)."""
        if self._dummy_shape is not None:
            return self._dummy_shape
        inp = self.graph.input
        dims = getattr(inp, "shape", ())
        return tuple(d if isinstance(d, int) else int(np.max(getattr(d, "values", d))) for d in dims)

    def kernel_costs(self, sample: dict[str, Any]) -> list[tuple[Kernel, str, float]]:
        """``(kernel, signature, predicted ms)`` of every kernel that runs in ``sample``, in order."""
        from hwnas.hw.kernels import active_kernels

        self.model.encode(sample)
        rows = []
        for k, sig in active_kernels(self.kernels, self.graph, sample):
            s = str(sig)
            ms = self.lut.cost_ms(s) if self.lut is not None and s in self.lut.entries else \
                float(self._predicted_ms([s])[0])
            rows.append((k, s, ms))
        return rows


def space_spec(space: Any) -> str | None:
    """How the command line names ``space``: its registered name when exactly one registered factory builds
    its class (by return annotation or being the class), else ``module:Class`` or ``path/file.py:Class`` for a
    class defined in a file; ``None`` when there is no such name (a class made in ``__main__`` or a notebook)."""
    import inspect

    from hwnas.spaces import registry

    cls = type(space)
    names = []
    for name, fn in registry._SPACES.items():
        try:
            ret = inspect.signature(fn).return_annotation if not isinstance(fn, type) else fn
        except (TypeError, ValueError):
            continue
        if ret is cls or ret == cls.__name__:
            names.append(name)
    if len(names) == 1:
        return names[0]
    if names:
        return None
    if cls.__module__ == "__main__" or "." in cls.__qualname__:
        return None
    if cls.__module__.startswith("hwnas."):
        return f"{cls.__module__}:{cls.__qualname__}"
    try:
        file = inspect.getsourcefile(cls)
    except (TypeError, OSError):
        return None
    if not file or not os.path.isfile(file):
        return None
    rel = os.path.relpath(file)
    return f"{file if rel.startswith('..') else rel}:{cls.__qualname__}"
