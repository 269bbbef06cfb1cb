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
the machine rather than for its drift over the build. ``settings["statistic"]`` names the statistic of those
runs (``"paired"``: each run between two runs of the space's reference subnet, the median ratio times the
reference's level, the median of the reference means around the runs, the most repeatable on a shared machine, see :mod:`hwnas.hw.measure`); the
refined LUT predicts that statistic of a subnet's end-to-end runs.

**Which latency a LUT predicts.** hwnas predicts the steady-state median (warm-up, then consecutive runs; see
:mod:`hwnas.hw.measure`). The build measures its end-to-end times paired (for noise cancellation) and maps their
level onto steady state: ``settings["definition"] = {"latency": "steady", "from": "paired", "ratio": r,
"offset_ms": b, ...}`` says that a set of build subnets was also measured with the steady protocol in the same
run and ``steady = r * paired + b`` was fitted (:func:`hwnas.hw.speed.calibrate_definition`); each subnet keeps
its paired time in ``end_to_end_paired_ms`` and its ``end_to_end_ms`` is the steady-state level the LUT is fitted
to. A LUT without that record (built before it) predicts its ``settings["statistic"]``, the paired protocol's
level, and says so on load (:attr:`LUT.definition`); ``hwnas lut recalibrate FILE --space NAME`` brings it to
the steady-state definition.

``"adapted"`` (optional, written by :func:`hwnas.hw.adapt`): ``{"families": {"dense_conv": 1.1, ...},
"overhead_ms": ..., "adapted_from": {...}}`` scales each kernel's cost by its family's factor (:func:`family_of`)
and replaces the per-run overhead, to carry a LUT to another machine or runtime configuration.

``"speed"`` (optional) records a re-measurement of the machine's speed against the build:
``{"factor": 1.03, "measured": "2026-...", "subnets": 8, "spread": 0.004}`` multiplies every kernel cost and
the overhead (see :func:`hwnas.hw.speed_check`); without it the factor is 1. When the check kept a size term
(:class:`hwnas.hw.SpeedCheck`), ``"curve": {"slope", "intercept", "min_ms", "max_ms"}`` gives whole-model totals
the factor ``exp(intercept + slope * ln(t))`` for their time ``t`` at build, ``t`` held within ``[min_ms,
max_ms]``, instead.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import statistics
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hwnas.artifacts import _is_path, adapt_command, resolve_lut, shipped_name
from hwnas.hw.device import Device, fingerprint, fingerprint_matches, get_device
from hwnas.hw.lut_check import check_lut_data, device_difference, rebuild_command
from hwnas.io import atomic_write_json, read_json

__all__ = ["LUT", "LUTEntry", "LUTError", "FingerprintWarning", "FAMILIES", "family_of", "warn_fingerprint"]

log = logging.getLogger(__name__)

FORMAT = "hwnas-lut"
VERSION = 1


#: Kernel families that :func:`hwnas.hw.adapt` scales separately (the per-run overhead is a term of its own).
FAMILIES = ("dense_conv", "depthwise_conv", "pointwise_conv", "gemm", "pooling", "elementwise", "movement")

_GEMM_OPS = {"linear", "matmul", "bmm", "gemm", "attention", "scaled_dot_product_attention", "baddbmm", "addmm",
             "einsum"}
_MOVEMENT_OPS = {"cat", "concat", "reshape", "view", "flatten", "transpose", "permute", "pad", "slice", "split",
                 "chunk", "upsample", "interpolate", "resize", "expand", "gather", "contiguous", "pixel_shuffle",
                 "roll", "stack"}


@functools.lru_cache(maxsize=65536)
def family_of(signature: str) -> str:
    """The kernel family (:data:`FAMILIES`) of a LUT signature: convolutions split into depthwise (groups equal
    to the input channels), pointwise (1x1, ungrouped) and dense (the rest); linear/MatMul/attention are
    ``"gemm"``; ``*pool*`` is ``"pooling"``; reshapes and copies are ``"movement"``; anything else (activations,
    arithmetic, normalisation, reductions) ``"elementwise"``."""
    parts = str(signature).split("|")
    op = parts[0]
    if op.startswith("conv"):
        attrs = dict(p.split("=", 1) for p in parts[1:] if "=" in p)
        groups = int(attrs.get("g", "1"))
        dims = attrs.get("in", "").split(",")[0].split("x")
        c_in = int(dims[1]) if len(dims) > 1 and dims[1].isdigit() else 0
        if groups > 1 and groups == c_in:
            return "depthwise_conv"
        if groups == 1 and set(attrs.get("k", "").split("x")) == {"1"}:
            return "pointwise_conv"
        return "dense_conv"
    if op in _GEMM_OPS:
        return "gemm"
    if "pool" in op:
        return "pooling"
    if op in _MOVEMENT_OPS:
        return "movement"
    return "elementwise"


_noted: set[Any] = set()


def _note_once(key: Any) -> bool:
    """True the first time ``key`` is seen in this process (a note logged on every load would repeat itself)."""
    if key in _noted:
        return False
    _noted.add(key)
    return True


class LUTError(ValueError):
    """A LUT file is malformed or does not fit what it is used for."""


class FingerprintWarning(UserWarning):
    """A LUT is used on a machine or runtime other than the one that measured it."""


_fingerprint_shown: set[str] = set()


def warn_fingerprint(message: str) -> None:
    """Issue a :class:`FingerprintWarning` once per process per message, attributed to ``hwnas`` (no source line
    of the caller is printed with it).

    The warnings filters decide as usual: under ``"error"`` it raises and under ``"always"`` (``pytest.warns``,
    ``catch_warnings(record=True)``) it is issued every time; otherwise a message is issued only the first time.
    """
    action = _filter_action(message)
    if action == "ignore" or (action not in ("always", "error") and message in _fingerprint_shown):
        return
    _fingerprint_shown.add(message)
    warnings.warn_explicit(message, FingerprintWarning, "hwnas", 0, module="hwnas", registry={})


def _filter_action(message: str) -> str:
    """The action of the first warnings filter that matches a FingerprintWarning with ``message`` from hwnas."""
    for action, msg, cat, mod, lineno in warnings.filters:
        if (issubclass(FingerprintWarning, cat) and (msg is None or msg.match(message))
                and (mod is None or mod.match("hwnas")) and lineno == 0):
            return action
    return warnings.defaultaction


@dataclass
class LUTEntry:
    """All measurements of one kernel signature.

    ``subnets[j]`` is the index (in :attr:`LUT.subnets`) of the profiled subnet that ``times_ms[j]`` came
    from, so that each time can be divided by its profile's speed factor (see :meth:`LUT.fit_profile_speeds`).
    """

    times_ms: list[float] = field(default_factory=list)
    nodes: list[int] = field(default_factory=list)
    adjust_ms: float = 0.0
    subnets: list[int] = field(default_factory=list)
    normalized_ms: float | None = None

    @property
    def median_ms(self) -> float:
        """The kernel's profiled time: the median of its times, each divided by the speed of the profile it
        came from when those are known (:meth:`LUT.fit_profile_speeds`), else the plain median."""
        if self.normalized_ms is not None:
            return self.normalized_ms
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
    adapted: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ construction and files
    @classmethod
    def new(cls, device: str | Device, settings: dict[str, Any] | None = None) -> LUT:
        dev = get_device(device)
        return cls(dev, fingerprint(dev), dict(settings or {}))

    @classmethod
    def load(cls, path: str | os.PathLike, check_fingerprint: bool = True, device: str | None = None,
             strict: bool = True) -> LUT:
        """Read a LUT by name or file; warns (:class:`FingerprintWarning`) when it was measured on another machine.

        Args:
            path: a file, or the name of a shipped LUT: its space (``"mobilenet_v3"``, on ``device``) or space
                and device (``"mobilenet_v3_cpu-ort-2t"``), see :mod:`hwnas.artifacts`.
            check_fingerprint: warn when the LUT's machine fingerprint differs from this machine's, or when it
                has none.
            device: the device of a LUT given by space name (default ``cpu-ort-1t``); for a LUT given as a file,
                the device it must have been measured on (same settings; the error names each that differs).
            strict: also check that the fitted calibration is plausible and that the LUT predicts a non-negative
                time for every build subnet; a build resuming its own file (which it fits again) passes ``False``.

        Raises:
            LUTError: not a LUT, another version, a malformed field (the error names the key path, see
                :mod:`hwnas.hw.lut_check`), or another device than ``device``.
        """
        device_asked = device if device is not None and _is_path(path, ".json") else None
        path = resolve_lut(path, device)
        data = read_json(path, "LUT file")
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise LUTError(f"{str(path)!r} is not an hwnas LUT (expected \"format\": \"{FORMAT}\"); build one with "
                           "hwnas.hw.build_lut or benchmarks/build_lut.py.")
        if data.get("version") != VERSION:
            raise LUTError(f"LUT {str(path)!r} has version {data.get('version')!r}; this hwnas reads version {VERSION} "
                           f"only. Build it again with this hwnas: {rebuild_command(data, path)}.")
        check_lut_data(data, path, LUTError, strict)  # every number and field read below, with its key path
        try:
            dev_fields = dict(data["device"])
            dev_fields["provider_options"] = tuple(tuple(p) for p in dev_fields.get("provider_options", ()))
            device = Device(**dev_fields)
        except (TypeError, ValueError) as e:
            raise LUTError(f"LUT {str(path)!r} is malformed at device: {e} Rebuild it: "
                           f"{rebuild_command(data, path)}.") from None
        entries = {k: LUTEntry([float(t) for t in v["times_ms"]], [int(n) for n in v.get("nodes", [])],
                               float(v.get("adjust_ms", 0.0)), [int(i) for i in v.get("subnets", [])],
                               float(v["normalized_ms"]) if v.get("normalized_ms") is not None else None)
                   for k, v in data["entries"].items()}
        lut = cls(device, data.get("fingerprint", {}), data.get("settings", {}), entries, data.get("subnets", []),
                  data.get("spaces", []), data["calibration"], Path(path),
                  dict(data.get("speed") or {}), dict(data.get("adapted") or {}))
        _check_definition(lut, path)
        _check_adapted(lut, path)
        if strict:
            _check_build_totals(lut, path, data)
        factor = lut.speed.get("factor", 1.0)
        if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not 0.2 < factor < 5.0:
            raise LUTError(f"LUT {str(path)!r} has a speed factor of {lut.speed.get('factor')!r}; expected a number "
                           "between 0.2 and 5 (from hwnas.hw.speed_check). Delete the \"speed\" field to use the "
                           "LUT as built.")
        curve = lut.speed.get("curve")
        keys = ("slope", "intercept", "min_ms", "max_ms")
        if curve is not None and not (isinstance(curve, dict) and all(
                isinstance(curve.get(k), (int, float)) and math.isfinite(curve[k]) for k in keys)
                and 0 < curve["min_ms"] <= curve["max_ms"]):
            raise LUTError(f"LUT {str(path)!r} has a speed size term {curve!r}; expected "
                           "{\"slope\", \"intercept\", \"min_ms\", \"max_ms\"} numbers with 0 < min_ms <= max_ms "
                           "(from hwnas.hw.speed_check). Delete the \"speed\" field to use the LUT as built.")
        if lut.definition != "steady" and _note_once(("definition", str(Path(path).resolve()))):
            log.warning("LUT %r predicts the %r protocol's level (%s), not the steady-state median hwnas now "
                        "predicts (warm-up, then consecutive runs; see hwnas.hw.measure); bring it to the steady-state "
                        "definition with: %s", str(path), lut.definition,
                        _paired_note(device) if lut.definition == "paired" else "an older protocol",
                        _recalibrate_command(lut, path))
        if device_asked is not None:
            want = get_device(device_asked)
            if {k: v for k, v in want.__dict__.items() if k != "description"} != \
                    {k: v for k, v in device.__dict__.items() if k != "description"}:
                raise LUTError(f"LUT {str(path)!r} was measured on device {device.name!r}, not on the requested "
                               f"{want.name!r}: {device_difference(device, want)}. Use a LUT of {want.name!r} (hwnas "
                               f"lut list) or build one: {rebuild_command(data, path).replace(device.name, want.name)}.")
        if check_fingerprint:
            if not lut.fingerprint:
                warn_fingerprint(f"LUT {shipped_name(path) or str(path)!r} has no machine fingerprint (its \"fingerprint\" "
                                 "field is empty or missing), so hwnas cannot tell which machine and runtime measured "
                                 "it; its latencies may not hold here. Rebuild it here (hwnas lut build) or adapt it "
                                 f"(about 2 minutes): {adapt_command(path)}.")
            diffs = fingerprint_matches(lut.fingerprint, fingerprint(device))
            if diffs:
                warn_fingerprint(f"LUT {shipped_name(path) or str(path)!r} was measured on another machine or runtime: "
                                 f"{'; '.join(diffs)}. Its latencies may not hold here; adapt it to this machine "
                                 f"(about 2 minutes): {adapt_command(path)}, or rebuild it here (hwnas lut build).")
        return lut

    def to_dict(self) -> dict[str, Any]:
        dev = dict(self.device.__dict__)
        return {
            "format": FORMAT, "version": VERSION, "device": dev, "fingerprint": self.fingerprint,
            "settings": self.settings, "spaces": self.spaces, "calibration": self.calibration,
            "subnets": self.subnets, **({"speed": self.speed} if self.speed else {}),
            **({"adapted": self.adapted} if self.adapted else {}),
            "entries": {k: {"median_ms": round(e.median_ms, 6), "n": e.n, "adjust_ms": round(e.adjust_ms, 7),
                            "times_ms": [round(t, 6) for t in e.times_ms], "nodes": e.nodes,
                            **({"subnets": e.subnets} if e.subnets else {}),
                            **({"normalized_ms": round(e.normalized_ms, 7)} if e.normalized_ms is not None else {})}
                        for k, e in sorted(self.entries.items())},
        }

    def save(self, path: str | os.PathLike | None = None) -> Path:
        """Write the LUT atomically (a kill mid-write leaves the previous file intact)."""
        target = Path(path) if path is not None else self.path
        if target is None:
            raise LUTError("LUT.save needs a path (this LUT was not loaded from a file).")
        if path is None and shipped_name(target) is not None:
            raise LUTError(f"LUT.save() would write over the shipped LUT {shipped_name(target)!r} inside the installed "
                           "package; save it to a file of yours: lut.save('my_lut.json').")
        atomic_write_json(target, self.to_dict())
        self.path = target
        return target

    # ------------------------------------------------------------------ content
    def __contains__(self, signature: object) -> bool:
        return str(signature) in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def add(self, signature: str, ms: float, nodes: int = 1, subnet: int | None = None) -> None:
        """Record one profiled time of ``signature`` (from build subnet number ``subnet``, if known)."""
        e = self.entries.setdefault(str(signature), LUTEntry())
        if subnet is None and e.subnets:
            raise LUTError(f"LUT.add({signature!r}): the entry records the subnet of every time; pass subnet=.")
        e.times_ms.append(float(ms))
        e.nodes.append(int(nodes))
        if subnet is not None:
            if len(e.subnets) != len(e.times_ms) - 1:
                raise LUTError(f"LUT.add({signature!r}, subnet={subnet}): the entry has times without their subnet "
                               "(an older LUT); rebuild it to record subnets.")
            e.subnets.append(int(subnet))

    def prior_ms(self, signature: str) -> float:
        """The calibrated profiled cost of one kernel: ``scale * median + per_node_ms * median nodes``."""
        e = self.entries[str(signature)]
        c = self.calibration
        return c["scale"] * e.median_ms + c["per_node_ms"] * e.median_nodes

    def _built_cost_ms(self, signature: str) -> float:
        return max(0.0, self.prior_ms(signature) + self.entries[str(signature)].adjust_ms)

    def family_scale(self, signature: str) -> float:
        """The adaptation's factor for the signature's kernel family (:func:`family_of`); 1 when not adapted."""
        fams = self.adapted.get("families") if self.adapted else None
        return float(fams.get(family_of(str(signature)), 1.0)) if fams else 1.0

    def cost_ms(self, signature: str) -> float:
        """The kernel's cost: its calibrated profiled cost plus the end-to-end refinement (see :meth:`fit`),
        times its family's adaptation factor (:attr:`adapted`) and :attr:`speed_factor`."""
        return self.speed_factor * self.family_scale(signature) * self._built_cost_ms(signature)

    @property
    def _built_overhead_ms(self) -> float:
        return float(self.calibration.get("overhead_ms", 0.0))

    @property
    def overhead_ms(self) -> float:
        """The fixed per-model cost (session run, inputs and outputs), times :attr:`speed_factor`: the adapted
        overhead when the LUT was adapted (:attr:`adapted`), else the build's."""
        base = float(self.adapted["overhead_ms"]) if self.adapted else self._built_overhead_ms
        return self.speed_factor * base

    @property
    def definition(self) -> str:
        """Which latency the LUT predicts: ``"steady"`` (the steady-state median, hwnas's definition: its level
        was calibrated, ``settings["definition"]``, or it was adapted to steady measurements), else the statistic of its end-to-end times (``"paired"`` for
        LUTs built before the calibration, ``"median"`` for older ones)."""
        if (self.settings.get("definition") or {}).get("latency") == "steady":
            return "steady"
        if self.adapted and self.adapted.get("adapted_from", {}).get("definition") == "steady":
            return "steady"  # fitted to steady-state medians measured on its device
        return str(self.settings.get("statistic", "median"))

    def steady_level(self, paired_ms: Any) -> Any:
        """A paired end-to-end time (or an array) at the steady-state level: ``ratio * paired + offset_ms`` of the
        LUT's definition record; unchanged without one."""
        d = self.settings.get("definition") or {}
        if d.get("latency") != "steady":
            return paired_ms
        out = float(d["ratio"]) * np.asarray(paired_ms, dtype=float) + float(d.get("offset_ms", 0.0))
        return float(out) if np.ndim(paired_ms) == 0 else out

    def set_definition(self, record: dict[str, Any], refit: bool = True) -> None:
        """Map the build subnets' paired end-to-end times onto the steady-state median with ``record`` (``ratio``,
        ``offset_ms`` and how they were measured, from :func:`hwnas.hw.speed.calibrate_definition`), store it in
        ``settings["definition"]`` and refit the LUT to those times. Each subnet keeps its paired time in
        ``end_to_end_paired_ms``; applying another record later starts from those again."""
        _validate_definition(record, "set_definition")
        if self.adapted:
            raise LUTError(f"LUT {str(self.path or '')!r} was adapted (hwnas adapt) to steady-state measurements on "
                           f"{self.device.name}; its level needs no calibration. Adapt the source LUT again instead.")
        if self.settings.get("statistic", "median") != "paired":
            raise LUTError(f"LUT {str(self.path or '')!r}: its end-to-end times are {self.settings.get('statistic')!r}"
                           " times, not paired ones; only a paired LUT's level is calibrated this way. Rebuild it "
                           "with this hwnas.")
        self.settings["definition"] = {"latency": "steady", "from": "paired", **record}
        for r in self.subnets:
            if r.get("interleaved") and r.get("end_to_end_ms"):
                paired = r.setdefault("end_to_end_paired_ms", r["end_to_end_ms"])
                r["end_to_end_ms"] = self.steady_level(paired)
        if refit:
            self.fit()

    @property
    def speed_factor(self) -> float:
        """How much slower (> 1) or faster the machine ran at the last speed check than during the build."""
        return float(self.speed.get("factor", 1.0)) if self.speed else 1.0

    def with_speed(self, factor: Any, **record: Any) -> LUT:
        """A copy of this LUT at the machine's speed now: ``factor`` is a :class:`~hwnas.hw.speed.SpeedCheck`
        (:func:`hwnas.hw.speed_check`; its record and size term are kept) or a number, measured now / at build.
        Every cost is multiplied by the factor; whole-model totals (``LatencyProfiler.profile``) by the size
        term's factor for their size, when the check kept one (:meth:`at_model_speed`)."""
        from hwnas.hw.speed import copy_at_speed  # hwnas.hw.speed builds on this module

        return copy_at_speed(self, factor, record, LUTError)

    def at_model_speed(self, total_ms: Any) -> Any:
        """Whole-model totals at the speed check's factor for their size (:func:`hwnas.hw.speed.at_model_speed`);
        unchanged without a size term."""
        from hwnas.hw.speed import at_model_speed

        return at_model_speed(total_ms, self.speed)

    def merge(self, other: LUT) -> LUT:
        """Add ``other``'s measurements to this LUT (same device settings required); returns ``self``."""
        mine, theirs = self.device.__dict__, other.device.__dict__
        diff = {k for k in mine if k not in ("name", "description") and mine[k] != theirs.get(k)}
        if diff:
            raise LUTError(f"cannot merge LUTs measured with different device settings ({sorted(diff)}); merge only "
                           "LUTs of the same device.")
        diffs = fingerprint_matches(self.fingerprint, other.fingerprint)
        if diffs:
            warn_fingerprint(f"merging LUTs from different machines: {'; '.join(diffs)}")
        offset = len(self.subnets)
        for sig, e in other.entries.items():
            fresh = sig not in self.entries
            mine_e = self.entries.setdefault(sig, LUTEntry())
            keep_subnets = (fresh or bool(mine_e.subnets)) and len(e.subnets) == len(e.times_ms)
            mine_e.times_ms.extend(e.times_ms)
            mine_e.nodes.extend(e.nodes)
            mine_e.subnets = mine_e.subnets + [i + offset for i in e.subnets] if keep_subnets else []
        self.subnets.extend(other.subnets)
        self.spaces.extend(s for s in other.spaces if s not in self.spaces)
        self.fit()
        return self

    def fit_profile_speeds(self, iterations: int = 20) -> dict[int, float]:
        """Estimate how fast the machine ran during each subnet's profile, and each kernel's time at a common
        speed.

        A shared machine changes speed by several percent from one second to the next, so the profile of one
        subnet (a fraction of a second) finds every kernel of that subnet faster or slower alike. Every kernel
        is profiled in several subnets, and every subnet holds many kernels, so both are identified:
        ``time[k, i] = kernel[k] * speed[i]``, fitted by alternating medians in log space (robust to a few
        odd times). Each entry's :attr:`LUTEntry.median_ms` then becomes the median of its times divided by
        their profiles' speeds; the speeds (median 1) are stored in each subnet's ``"profile_speed"``.
        Entries that do not record their subnets keep their plain median.

        Returns:
            subnet index -> speed factor.
        """
        obs = [(k, i, math.log(t)) for k, e in self.entries.items() if len(e.subnets) == len(e.times_ms)
               for t, i in zip(e.times_ms, e.subnets) if t > 0]
        for e in self.entries.values():
            e.normalized_ms = None
        if not obs:
            return {}
        subnet_ids = sorted({i for _, i, _ in obs})
        speed = dict.fromkeys(subnet_ids, 0.0)
        kern: dict[str, float] = {}
        by_k: dict[str, list[tuple[int, float]]] = {}
        by_i: dict[int, list[tuple[str, float]]] = {}
        for k, i, lt in obs:
            by_k.setdefault(k, []).append((i, lt))
            by_i.setdefault(i, []).append((k, lt))
        for _ in range(iterations):
            kern = {k: float(np.median([lt - speed[i] for i, lt in v])) for k, v in by_k.items()}
            speed = {i: float(np.median([lt - kern[k] for k, lt in v])) if len(v) >= 3 else 0.0
                     for i, v in by_i.items()}
            center = float(np.median(list(speed.values())))
            speed = {i: v - center for i, v in speed.items()}
        for k in by_k:
            self.entries[k].normalized_ms = float(math.exp(kern[k]))
        for i, v in speed.items():
            if 0 <= i < len(self.subnets):
                self.subnets[i]["profile_speed"] = round(math.exp(v), 5)
        return {i: math.exp(v) for i, v in speed.items()}

    #: ridge penalties :meth:`select_fit` tries (with and without the per-node term)
    RIDGES = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3)

    def fit(self, ridge: float | None = None, select: bool = True) -> dict[str, float]:
        """Normalise the profiles' speeds, fit the calibration, then refine kernel costs to the measured
        end-to-end times (see below).

        Args:
            ridge: the refinement's ridge penalty; ``None`` takes ``settings["ridge"]`` if set, else the
                choice of :meth:`select_fit` (with ``select``), else 0.1.
            select: choose the ridge penalty and whether to fit a per-node term by cross-validation over the
                build subnets (:meth:`select_fit`); the builder skips it while measuring and selects at the end.
        """
        self.fit_profile_speeds()
        fixed = self.settings.get("ridge") if ridge is None else ridge
        choice = self.select_fit() if fixed is None and select else None
        self.fit_calibration(per_node=choice["per_node"] if choice else True)
        self.refine(choice["ridge"] if choice else (0.1 if fixed is None else fixed))
        if choice:
            self.calibration["selected"] = choice
        return self.calibration

    def select_fit(self, folds: int = 5, seed: int = 0) -> dict[str, Any] | None:
        """Choose the refinement's ridge penalty (:attr:`RIDGES`) and whether the calibration has a per-node
        term, by ``folds``-fold cross-validation over the build subnets: calibrate and refine on the others,
        predict each held-out subnet from its kernels, and keep the setting with the least RMS of ln(predicted /
        end-to-end). ``None`` (the defaults apply) with fewer than 20 subnets with kernels and end-to-end times.

        The choice differs between LUTs and builds: the `digits` LUT of the morning of 2026-12-03 chose ridge 0.001
        without the per-node term (CV error 0.8% against 2.1% for the old fixed 0.1 with the term), its rebuild
        that afternoon 0.01 with the term (1.5% against 1.8%); `mobilenet_v3`'s is nearly indifferent (docs/latency.md,
        "Latency on a device").
        """
        import copy

        rows = [r for r in self.subnets if r.get("kernels") and r.get("end_to_end_ms") and r.get("sum_nodes_ms")]
        if len(rows) < 20:
            return None
        fold = np.random.default_rng(seed).permutation(len(rows)) % folds
        saved = (self.subnets, self.calibration, {k: e.adjust_ms for k, e in self.entries.items()})
        errors: dict[tuple[bool, float], list[float]] = {}
        try:
            for per_node in (True, False):
                for ridge in self.RIDGES:
                    err = errors.setdefault((per_node, ridge), [])
                    for f in range(folds):
                        self.subnets = [r for r, g in zip(rows, fold) if g != f]
                        self.calibration = copy.deepcopy(saved[1])
                        self.fit_calibration(per_node=per_node)
                        self.refine(ridge)
                        for r in (r for r, g in zip(rows, fold) if g == f):
                            ms = sum(n * self._built_cost_ms(k) for k, n in r["kernels"].items() if k in self.entries)
                            err.append(math.log(max(ms + self._built_overhead_ms, 1e-6) / r["end_to_end_ms"]))
        finally:
            self.subnets, self.calibration = saved[0], saved[1]
            for k, a in saved[2].items():
                self.entries[k].adjust_ms = a
        rms = {key: float(np.sqrt(np.mean(np.square(v)))) for key, v in errors.items()}
        per_node, ridge = min(rms, key=rms.get)
        return {"per_node": per_node, "ridge": ridge, "cv_rms": round(rms[(per_node, ridge)], 5),
                "cv_rms_default": round(rms[(True, 0.1)], 5), "folds": folds, "subnets": len(rows)}

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
        # in u_k = d_k / c_k the penalty is ridge * |u|^2, and the weights 1 / e_i^2 make the residuals relative:
        # scikit-learn's Ridge with the unpenalised intercept as db (the SVD solver, as accurate as lstsq)
        from sklearn.linear_model import Ridge

        model = Ridge(alpha=ridge, fit_intercept=True, solver="svd").fit(n * scale, resid, sample_weight=1.0 / e2e ** 2)
        for k, d in zip(keys, model.coef_ * scale):
            self.entries[k].adjust_ms = float(d)
        self.calibration["overhead_ms"] = self._built_overhead_ms + float(model.intercept_)
        pred = n @ np.array([self._built_cost_ms(k) for k in keys]) + self._built_overhead_ms
        self.calibration["refined"] = {"ridge": ridge, "subnets": len(rows),
                                       "median_abs_rel_err": float(np.median(np.abs(pred - e2e) / e2e))}

    def fit_calibration(self, per_node: bool = True) -> dict[str, float]:
        """Fit ``end_to_end = scale * sum_kernels + per_node_ms * nodes + overhead_ms`` over the measured
        subnets (least squares on relative error, so small and large models weigh alike); ``per_node=False``
        fixes ``per_node_ms`` at 0."""
        rows = [s for s in self.subnets if s.get("end_to_end_ms") and s.get("sum_nodes_ms")]
        if len(rows) < 4:
            return self.calibration
        y = np.array([r["end_to_end_ms"] for r in rows])
        # a profile taken while the machine ran slow (profile_speed > 1) has a proportionally larger sum
        x = np.array([[r["sum_nodes_ms"] / r.get("profile_speed", 1.0), r["nodes"] if per_node else 0.0, 1.0]
                      for r in rows])
        w = 1.0 / y
        coef, *_ = np.linalg.lstsq(x * w[:, None], y * w, rcond=None)
        if not coef[0] > 0:  # a longer kernel sum never makes a model faster: too few or too noisy subnets for
            if per_node:     # this many terms (4 tiny subnets gave -0.23); fewer terms, or scale 1 and the overhead
                return self.fit_calibration(per_node=False)
            coef = np.array([1.0, 0.0, float(np.sum(w * w * (y - x[:, 0])) / np.sum(w * w))])
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
        d = self.settings.get("definition") or {}
        definition = ("predicts the steady-state median (adapted to it)" if self.definition == "steady" and not d else
                      f"predicts the steady-state median (level: {d.get('ratio', 1.0):.4f} x paired "
                      f"{1000 * d.get('offset_ms', 0.0):+.2f} us, {d.get('subnets', '?')} subnets, {d.get('measured', '?')})"
                      if self.definition == "steady" else
                      f"predicts the {self.definition!r} protocol's level (hwnas lut recalibrate brings it to steady "
                      "state)")
        adapted = ""
        if self.adapted:
            src = self.adapted.get("adapted_from", {})
            adapted = (f"; adapted from {src.get('device', '?')} ({src.get('cpu_model', '?')}) with "
                       f"{src.get('n', '?')} measurements, CV error {100 * src.get('cv_rms', float('nan')):.1f}%")
        return (f"LUT for {self.device.name}: {len(self.entries)} kernels (measured {min(n)}-{max(n)} times), "
                f"{len(self.subnets)} subnets, {definition}{adapted}, calibration {self.calibration}{speed}")


def _validate_definition(d: Any, where: str) -> None:
    ok = (isinstance(d, dict) and isinstance(d.get("ratio"), (int, float)) and 0.5 < d["ratio"] < 2.0
          and isinstance(d.get("offset_ms", 0.0), (int, float)) and math.isfinite(d.get("offset_ms", 0.0)))
    if not ok:
        raise LUTError(f"{where}: a latency definition record needs \"ratio\" (steady / paired, between 0.5 and 2) "
                       f"and a finite \"offset_ms\", got {d!r}; measure one with hwnas.hw.speed.calibrate_definition "
                       "(hwnas lut recalibrate FILE --space NAME).")


def _check_build_totals(lut: LUT, path: Any, data: dict[str, Any]) -> None:
    """Refuse a LUT that predicts a negative or non-finite time for one of its own build subnets (an edited
    calibration or adjustment: a fitted one predicts them near their measured times)."""
    overhead = lut._built_overhead_ms
    for i, r in enumerate(lut.subnets):
        kernels = r.get("kernels") or {}
        if not kernels or not all(k in lut.entries for k in kernels):
            continue
        total = sum(n * lut._built_cost_ms(k) for k, n in kernels.items()) + overhead
        if not (math.isfinite(total) and total >= 0):
            raise LUTError(f"LUT {str(path)!r} is malformed: it predicts {total:.6g} ms for its own build subnet "
                           f"subnets[{i}] (measured {r.get('end_to_end_ms')!r} ms), from calibration {lut.calibration!r}"
                           f"; expected a time >= 0, as a fitted LUT predicts. Rebuild it: "
                           f"{rebuild_command(data, path)}.")


def _paired_note(device: Device) -> str:
    """How far the paired protocol's level sits from the steady state on ``device``."""
    if device.intra_op_threads > 1 and device.allow_spinning:
        # 2026-12-07, cpu-ort-2t, mobilenet_v3 subnets on an idle 2-core host: paired 1.8-2.5x steady, because the
        # spinning pool threads of the session that ran last compete with the next session's threads
        return ("each run between two runs of a reference model; with several spinning threads that level measured "
                "1.8-2.5x the steady state, not a fixed ratio, so a recalibration may be refused: rebuild it (hwnas lut "
                "build measures such a device steady since 2026-12-07)")
    return "each run between two runs of a reference model, 5-15% above steady state"


def _recalibrate_command(lut: LUT, path: Any) -> str:
    """The ``hwnas lut recalibrate`` command for a LUT: its space filled in, a shipped LUT written to a user file."""
    names = [str(s).split("@", 1)[0] for s in lut.spaces]
    name = shipped_name(path) if path is not None else None
    out = f" --out {name}.json" if name else ""
    return f"hwnas lut recalibrate {name or path} --space {names[0] if names else '<space>'}{out}"


def _check_definition(lut: LUT, path: Any) -> None:
    d = lut.settings.get("definition")
    if d is None:
        return
    if not isinstance(d, dict) or d.get("latency") != "steady" or d.get("from") != "paired":
        raise LUTError(f"LUT {str(path)!r} has settings.definition {d!r}; expected {{\"latency\": \"steady\", "
                       "\"from\": \"paired\", \"ratio\": ..., \"offset_ms\": ...}. Restore the file, or run "
                       f"{_recalibrate_command(lut, path)} to measure it again.")
    _validate_definition(d, f"LUT {str(path)!r}")


def _check_adapted(lut: LUT, path: Any) -> None:
    a = lut.adapted
    if not a:
        return
    fams = a.get("families")
    ok = (isinstance(fams, dict) and set(fams) <= set(FAMILIES)
          and all(isinstance(v, (int, float)) and math.isfinite(v) and 0 <= v < 100 for v in fams.values())
          and isinstance(a.get("overhead_ms"), (int, float)) and math.isfinite(a["overhead_ms"])
          and a["overhead_ms"] >= 0 and isinstance(a.get("adapted_from"), dict))
    if not ok:
        raise LUTError(f"LUT {str(path)!r} has a malformed \"adapted\" record {a!r}; expected {{\"families\": "
                       f"{{family: factor >= 0}} over {FAMILIES}, \"overhead_ms\": >= 0, \"adapted_from\": {{...}}}}"
                       " (from hwnas adapt). Adapt the source LUT again, or delete the field to use it unadapted.")


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
