"""Latency lookup tables: kernel signature -> milliseconds on one device, built with ONNX Runtime.

File format (JSON, human-readable, written atomically after every measured subnet)::

    {
      "format": "hwnas-lut", "version": 1,
      "device": {...the Device's fields...}, "fingerprint": {...the machine...},
      "settings": {"runs": 30, "warmup": 10, "repeats_per_kernel": 3, ...},
      "spaces": ["mobilenet_v3@1x3x224x224"],
      "calibration": {"scale": 0.98, "per_node_ms": -0.001, "overhead_ms": 0.05, "r2": 0.999, ...},
      "subnets": [{"sample": {...}, "end_to_end_ms": 7.1, "sum_nodes_ms": 7.2, "nodes": 120}, ...],
      "entries": {"conv|in=1x24x56x56|out=...|act=relu|add=0": {"times_ms": [...], "nodes": [...]}, ...}
    }

Kernel times are harvested from ONNX Runtime's profile of whole exported subnets (per-node times sum
to the end-to-end time; kernels timed alone pay layout conversions a whole model does not), see
:mod:`hwnas.hw.kernels`. The calibration maps the sum of a subnet's profiled kernel times to its
unprofiled end-to-end time: ``end_to_end = scale * sum(kernels) + per_node_ms * nodes + overhead_ms``,
fitted by least squares over the build's subnets (the profiler adds a little per node; the session run
adds a fixed overhead). The builder measures those end-to-end times once more at the end, all subnets
interleaved (:func:`hwnas.hw.build.interleave_end_to_end`), so that the whole LUT stands for one state of
the machine rather than for its drift over the build.

``"speed"`` (optional) records a re-measurement of the machine's speed against the build:
``{"factor": 1.03, "measured": "2026-...", "subnets": 8, "spread": 0.004}`` multiplies every kernel cost and
the overhead (see :func:`hwnas.hw.drift.speed_check`); without it the factor is 1.
"""

from __future__ import annotations

import logging
import os
import statistics
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hwnas.hw.device import Device, fingerprint, fingerprint_matches, get_device
from hwnas.io import atomic_write_json, read_json

__all__ = ["LUT", "LUTEntry", "LUTError", "FingerprintWarning"]

log = logging.getLogger(__name__)

FORMAT = "hwnas-lut"
VERSION = 1


class LUTError(ValueError):
    """A LUT file is malformed or does not fit what it is used for."""


class FingerprintWarning(UserWarning):
    """A LUT is used on a machine or runtime other than the one that measured it."""


@dataclass
class LUTEntry:
    """All measurements of one kernel signature."""

    times_ms: list[float] = field(default_factory=list)
    nodes: list[int] = field(default_factory=list)
    adjust_ms: float = 0.0

    @property
    def median_ms(self) -> float:
        return float(statistics.median(self.times_ms))

    @property
    def median_nodes(self) -> float:
        return float(statistics.median(self.nodes)) if self.nodes else 1.0

    @property
    def n(self) -> int:
        return len(self.times_ms)


@dataclass
class LUT:
    """A latency lookup table for one device (see the module docstring for the file format)."""

    device: Device
    fingerprint: dict[str, Any]
    settings: dict[str, Any] = field(default_factory=dict)
    entries: dict[str, LUTEntry] = field(default_factory=dict)
    subnets: list[dict[str, Any]] = field(default_factory=list)
    spaces: list[str] = field(default_factory=list)
    calibration: dict[str, float] = field(default_factory=lambda: {"scale": 1.0, "per_node_ms": 0.0,
                                                                   "overhead_ms": 0.0})
    path: Path | None = None
    speed: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ construction and files
    @classmethod
    def new(cls, device: str | Device, settings: dict[str, Any] | None = None) -> LUT:
        dev = get_device(device)
        return cls(dev, fingerprint(dev), dict(settings or {}))

    @classmethod
    def load(cls, path: str | os.PathLike, check_fingerprint: bool = True) -> LUT:
        """Read a LUT file; warns (:class:`FingerprintWarning`) when it was measured on another machine."""
        data = read_json(path, "LUT file")
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise LUTError(f"{str(path)!r} is not an hwnas LUT (expected \"format\": \"{FORMAT}\"); build one with "
                           "hwnas.hw.build_lut or benchmarks/build_lut.py.")
        if data.get("version") != VERSION:
            raise LUTError(f"LUT {str(path)!r} has version {data.get('version')!r}; this hwnas reads version {VERSION}.")
        try:
            dev_fields = dict(data["device"])
            dev_fields["provider_options"] = tuple(tuple(p) for p in dev_fields.get("provider_options", ()))
            device = Device(**dev_fields)
            entries = {k: LUTEntry([float(t) for t in v["times_ms"]], [int(n) for n in v.get("nodes", [])],
                                   float(v.get("adjust_ms", 0.0))) for k, v in data["entries"].items()}
        except (KeyError, TypeError, ValueError) as e:
            raise LUTError(f"LUT {str(path)!r} is malformed ({e!r}); rebuild it or restore it from version control.") \
                from e
        lut = cls(device, data.get("fingerprint", {}), data.get("settings", {}), entries, data.get("subnets", []),
                  data.get("spaces", []), data.get("calibration", {"scale": 1.0, "per_node_ms": 0.0,
                                                                    "overhead_ms": 0.0}), Path(path),
                  dict(data.get("speed") or {}))
        factor = lut.speed.get("factor", 1.0)
        if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not 0.2 < factor < 5.0:
            raise LUTError(f"LUT {str(path)!r} has a speed factor of {lut.speed.get('factor')!r}; expected a number "
                           "between 0.2 and 5 (from hwnas.hw.speed_check). Delete the \"speed\" field to use the "
                           "LUT as built.")
        if check_fingerprint:
            diffs = fingerprint_matches(lut.fingerprint, fingerprint(device))
            if diffs:
                warnings.warn(f"LUT {str(path)!r} was measured on another machine or runtime: {'; '.join(diffs)}. "
                              "Its latencies may not hold here; rebuild it on this machine for accurate figures.",
                              FingerprintWarning, stacklevel=2)
        return lut

    def to_dict(self) -> dict[str, Any]:
        dev = dict(self.device.__dict__)
        return {
            "format": FORMAT, "version": VERSION, "device": dev, "fingerprint": self.fingerprint,
            "settings": self.settings, "spaces": self.spaces, "calibration": self.calibration,
            "subnets": self.subnets, **({"speed": self.speed} if self.speed else {}),
            "entries": {k: {"median_ms": round(e.median_ms, 6), "n": e.n, "adjust_ms": round(e.adjust_ms, 7),
                            "times_ms": [round(t, 6) for t in e.times_ms], "nodes": e.nodes}
                        for k, e in sorted(self.entries.items())},
        }

    def save(self, path: str | os.PathLike | None = None) -> Path:
        """Write the LUT atomically (a kill mid-write leaves the previous file intact)."""
        target = Path(path) if path is not None else self.path
        if target is None:
            raise LUTError("LUT.save needs a path (this LUT was not loaded from a file).")
        atomic_write_json(target, self.to_dict())
        self.path = target
        return target

    # ------------------------------------------------------------------ content
    def __contains__(self, signature: object) -> bool:
        return str(signature) in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def add(self, signature: str, ms: float, nodes: int = 1) -> None:
        e = self.entries.setdefault(str(signature), LUTEntry())
        e.times_ms.append(float(ms))
        e.nodes.append(int(nodes))

    def prior_ms(self, signature: str) -> float:
        """The calibrated profiled cost of one kernel: ``scale * median + per_node_ms * median nodes``."""
        e = self.entries[str(signature)]
        c = self.calibration
        return c["scale"] * e.median_ms + c["per_node_ms"] * e.median_nodes

    def _built_cost_ms(self, signature: str) -> float:
        return max(0.0, self.prior_ms(signature) + self.entries[str(signature)].adjust_ms)

    def cost_ms(self, signature: str) -> float:
        """The kernel's cost: its calibrated profiled cost plus the end-to-end refinement (see :meth:`fit`),
        times :attr:`speed_factor`."""
        return self.speed_factor * self._built_cost_ms(signature)

    @property
    def _built_overhead_ms(self) -> float:
        return float(self.calibration.get("overhead_ms", 0.0))

    @property
    def overhead_ms(self) -> float:
        """The fixed per-model cost (session run, inputs and outputs), times :attr:`speed_factor`."""
        return self.speed_factor * self._built_overhead_ms

    @property
    def speed_factor(self) -> float:
        """How much slower (> 1) or faster the machine ran at the last speed check than during the build."""
        return float(self.speed.get("factor", 1.0)) if self.speed else 1.0

    def with_speed(self, factor: float, **record: Any) -> LUT:
        """A copy of this LUT whose costs are multiplied by ``factor`` (see :func:`hwnas.hw.speed_check`)."""
        import copy

        if not (isinstance(factor, (int, float)) and 0.2 < float(factor) < 5.0):
            raise LUTError(f"speed factor must be a number between 0.2 and 5 (measured now / at build), got {factor!r}.")
        out = copy.copy(self)
        out.speed = {"factor": float(factor), **record}
        return out

    def merge(self, other: LUT) -> LUT:
        """Add ``other``'s measurements to this LUT (same device settings required); returns ``self``."""
        mine, theirs = self.device.__dict__, other.device.__dict__
        diff = {k for k in mine if k not in ("name", "description") and mine[k] != theirs.get(k)}
        if diff:
            raise LUTError(f"cannot merge LUTs measured with different device settings ({sorted(diff)}); merge only "
                           "LUTs of the same device.")
        diffs = fingerprint_matches(self.fingerprint, other.fingerprint)
        if diffs:
            warnings.warn(f"merging LUTs from different machines: {'; '.join(diffs)}", FingerprintWarning,
                          stacklevel=2)
        for sig, e in other.entries.items():
            mine_e = self.entries.setdefault(sig, LUTEntry())
            mine_e.times_ms.extend(e.times_ms)
            mine_e.nodes.extend(e.nodes)
        self.subnets.extend(other.subnets)
        self.spaces.extend(s for s in other.spaces if s not in self.spaces)
        self.fit()
        return self

    def fit(self, ridge: float | None = None) -> dict[str, float]:
        """Fit the calibration, then refine kernel costs to the measured end-to-end times (see below)."""
        self.fit_calibration()
        self.refine(self.settings.get("ridge", 0.1) if ridge is None else ridge)
        return self.calibration

    def refine(self, ridge: float = 0.1) -> None:
        """Adjust each kernel's cost so that the build subnets' kernel sums meet their unprofiled
        end-to-end times, with a ridge penalty on each kernel's relative change.

        Minimises ``sum_i ((sum_k n_ik (c_k + d_k) + b + db - e_i) / e_i)^2 + ridge * sum_k (d_k / c_k)^2``
        over the adjustments ``d_k`` (and the overhead change ``db``): ``n_ik`` counts kernel ``k`` in build
        subnet ``i``, ``c_k`` is its calibrated profiled cost and ``e_i`` the subnet's end-to-end time. ORT's
        profiler reports whole microseconds and adds a little per node, which matters for small kernels;
        the end-to-end times do not have that error.
        """
        rows = [r for r in self.subnets if r.get("kernels") and r.get("end_to_end_ms")]
        for e in self.entries.values():
            e.adjust_ms = 0.0
        if len(rows) < 8:
            return
        keys = sorted({k for r in rows for k in r["kernels"] if k in self.entries})
        col = {k: i for i, k in enumerate(keys)}
        n = np.zeros((len(rows), len(keys)))
        for i, r in enumerate(rows):
            for k, c in r["kernels"].items():
                if k in col:
                    n[i, col[k]] = c
        e2e = np.array([r["end_to_end_ms"] for r in rows])
        prior = np.array([self.prior_ms(k) for k in keys])
        resid = e2e - n @ prior - self._built_overhead_ms
        scale = np.maximum(np.abs(prior), 1e-4)
        a = np.vstack([np.hstack([n / e2e[:, None], (1.0 / e2e)[:, None]]),
                       np.hstack([np.diag(np.sqrt(ridge) / scale), np.zeros((len(keys), 1))])])
        y = np.concatenate([resid / e2e, np.zeros(len(keys))])
        sol, *_ = np.linalg.lstsq(a, y, rcond=None)
        for k, d in zip(keys, sol[:-1]):
            self.entries[k].adjust_ms = float(d)
        self.calibration["overhead_ms"] = self._built_overhead_ms + float(sol[-1])
        pred = n @ np.array([self._built_cost_ms(k) for k in keys]) + self._built_overhead_ms
        self.calibration["refined"] = {"ridge": ridge, "subnets": len(rows),
                                       "median_abs_rel_err": float(np.median(np.abs(pred - e2e) / e2e))}

    def fit_calibration(self) -> dict[str, float]:
        """Fit ``end_to_end = scale * sum_kernels + per_node_ms * nodes + overhead_ms`` over the measured
        subnets (least squares on relative error, so small and large models weigh alike)."""
        rows = [s for s in self.subnets if s.get("end_to_end_ms") and s.get("sum_nodes_ms")]
        if len(rows) < 4:
            return self.calibration
        y = np.array([r["end_to_end_ms"] for r in rows])
        x = np.array([[r["sum_nodes_ms"], r["nodes"], 1.0] for r in rows])
        w = 1.0 / y
        coef, *_ = np.linalg.lstsq(x * w[:, None], y * w, rcond=None)
        pred = x @ coef
        ss_res = float(np.sum(((y - pred) * w) ** 2))
        ss_tot = float(np.sum(((y - y.mean()) * w) ** 2)) or 1.0
        self.calibration = {"scale": float(coef[0]), "per_node_ms": float(coef[1]), "overhead_ms": float(coef[2]),
                            "r2": 1.0 - ss_res / ss_tot, "subnets": len(rows),
                            "median_abs_rel_err": float(np.median(np.abs(pred - y) / y))}
        return self.calibration

    def summary(self) -> str:
        n = [e.n for e in self.entries.values()] or [0]
        speed = f", speed factor {self.speed_factor:.4f} ({self.speed.get('measured', '?')})" if self.speed else ""
        return (f"LUT for {self.device.name}: {len(self.entries)} kernels (measured {min(n)}-{max(n)} times), "
                f"{len(self.subnets)} subnets, calibration {self.calibration}{speed}")


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
