"""``LatencyProfiler``: milliseconds on a device, from a LUT, through the same cost-table engine.

Example:
    >>> import torch, hwnas
    >>> space = hwnas.spaces.create("digits")
    >>> lat = hwnas.LatencyProfiler(space, torch.randn(1, 1, 8, 8), lut="lut/digits_cpu-ort-1t.json")
    >>> lat.profile(space.random_sample(0)) > 0
    True
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from hwnas.graph.larray import LArray
from hwnas.graph.trace import OpGraph
from hwnas.hw.kernels import Kernel, map_kernels
from hwnas.hw.lut import LUT
from hwnas.profile.profilers import Profiler

__all__ = ["LatencyProfiler", "MissingKernelsError"]


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
        lut: a :class:`~hwnas.hw.lut.LUT` or the path of a LUT file.
        predictor: optional fallback for kernels missing from the LUT: an object with
            ``predict_signatures(list[str]) -> np.ndarray`` of milliseconds (see ``hwnas.predict``).

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
        if lut is None:
            raise ValueError("LatencyProfiler needs lut= (a LUT file such as lut/digits_cpu-ort-1t.json, or a "
                             "hwnas.hw.LUT); build one with benchmarks/build_lut.py.")
        self.lut = lut if isinstance(lut, LUT) else LUT.load(lut)
        self.predictor = predictor
        self.kernels: list[Kernel] = []
        self.predicted: set[str] = set()
        super().__init__(space, dummy_input, graph)

    def _costs(self):
        self.kernels = map_kernels(self.graph)
        tables = [k.signature_table(self.graph) for k in self.kernels]
        needed = {s for _, tab in tables for s in tab.ravel() if s is not None}
        missing = sorted(s for s in needed if s not in self.lut.entries)
        fallback: dict[str, float] = {}
        if missing and self.predictor is not None:
            fallback = dict(zip(missing, np.asarray(self.predictor.predict_signatures(missing), dtype=float)))
            self.predicted = set(missing)
        elif missing:
            where = self.lut.path or "the LUT"
            shape = "x".join(str(d) for d in self._input_shape())
            raise MissingKernelsError(
                f"{len(missing)} of this space's {len(needed)} kernel signatures are missing from {str(where)!r} "
                f"(device {self.lut.device.name}); for example:\n  " + "\n  ".join(missing[:8]) +
                f"\nMeasure them (resumable; only what is missing) with:\n  python benchmarks/build_lut.py --space "
                f"<name> --input {shape} --device {self.lut.device.name} --out {where}\nor "
                f"hwnas.hw.build_lut(space, dummy_input, {self.lut.device.name!r}, {str(where)!r}); or pass "
                "predictor= to predict them."
            )
        for k, (labels, tab) in zip(self.kernels, tables):
            cost = np.zeros(tab.shape)
            for cell in np.ndindex(tab.shape):
                sig = tab[cell]
                if sig is not None:
                    cost[cell] = self.lut.cost_ms(sig) if sig in self.lut.entries else \
                        self.lut.calibration["scale"] * fallback[sig]
            yield k.anchor, (LArray(labels, cost) if labels else float(cost)), 1
        yield None, self.lut.overhead_ms, 1

    def _input_shape(self) -> tuple:
        inp = self.graph.input
        return tuple(d if isinstance(d, int) else "R" for d in inp.shape) if hasattr(inp, "shape") else ()

    def kernel_costs(self, sample: dict[str, Any]) -> list[tuple[Kernel, str, float]]:
        """``(kernel, signature, predicted ms)`` of every kernel that runs in ``sample``, in order."""
        from hwnas.hw.kernels import active_kernels

        self.model.encode(sample)
        rows = []
        for k, sig in active_kernels(self.kernels, self.graph, sample):
            s = str(sig)
            ms = self.lut.cost_ms(s) if s in self.lut.entries else \
                self.lut.calibration["scale"] * float(self.predictor.predict_signatures([s])[0])
            rows.append((k, s, ms))
        return rows
