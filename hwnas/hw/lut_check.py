"""Checks of a LUT file's content on load: every number hwnas reads from it, and the fields it needs.

:func:`check_lut_data` walks the JSON a LUT file holds (the format of :mod:`hwnas.hw.lut`) before anything is
built from it. Times must be finite and non-negative, counts non-negative ints, the calibration's scale a
positive number, indices in range; the ``median_ms`` and ``n`` that :meth:`~hwnas.hw.lut.LUT.to_dict` writes
beside each entry's times must still agree with them (an edited time is caught). Each failure is a
:class:`~hwnas.hw.lut.LUTError` that names the file, the key path (``entries["conv|..."].times_ms[2]``), what was
expected, what the file holds and how to get a good file again (the ``hwnas lut build`` command for it).

:func:`device_difference` words a difference between two devices, each field with both values, so that a
device that differs from the requested one in thread count alone does not read as "not on 'cpu-ort-1t'" for
'cpu-ort-1t'.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

__all__ = ["check_lut_data", "device_difference", "rebuild_command", "Where"]

#: Device fields, each with the JSON types it may have (bool is not an int here).
_DEVICE_FIELDS: dict[str, tuple[type, ...]] = {
    "name": (str,), "provider": (str,), "intra_op_threads": (int,), "inter_op_threads": (int,),
    "graph_optimization": (str,), "allow_spinning": (bool,), "denormal_as_zero": (bool,),
    "provider_options": (list, tuple), "description": (str,), "agent": (str,),
}


def device_difference(have: Any, want: Any, have_as: str = "the file's", want_as: str = "requested") -> str:
    """``"intra_op_threads 2 (the file's) vs 1 (requested)"``, for every field in which two devices differ."""
    a, b = dict(have.__dict__), dict(want.__dict__)
    keys = [k for k in b if k != "description" and a.get(k) != b.get(k)]
    return "; ".join(f"{k} {a.get(k)!r} ({have_as}) vs {b.get(k)!r} ({want_as})" for k in keys)


def rebuild_command(data: Any, path: Any) -> str:
    """The ``hwnas lut build`` command that measures a LUT like this one again, filled in from what the file says
    where that can be read (the space, the input shape, the device), into a new file."""
    spaces = data.get("spaces") if isinstance(data, dict) else None
    tag = spaces[0] if isinstance(spaces, list) and spaces and isinstance(spaces[0], str) else "<space>@<input>"
    name, _, shape = tag.partition("@")
    dev = data.get("device") if isinstance(data, dict) else None
    dev_name = dev.get("name") if isinstance(dev, dict) and isinstance(dev.get("name"), str) else "<device>"
    shape = shape.replace("x", ",") if shape else "<input>"
    return (f"hwnas lut build --space {name or '<space>'} --input {shape} --device {dev_name} "
            f"--out <new file> (or restore {str(path)!r} from version control)")


class Where:
    """Raises the LUT's error for a key path: ``fail(key, expected, got)``."""

    def __init__(self, path: Any, data: Any, error: type[Exception]):
        self.path, self.error = path, error
        self.fix = rebuild_command(data, path)
        settings = data.get("settings") if isinstance(data, dict) else None
        if isinstance(settings, dict) and "interleaved_end_to_end" not in settings:
            self.fix += (f"; it is a build that has not reached its end-to-end pass: to finish it, resume the build "
                         f"with --out {str(path)!r}")

    def fail(self, key: str, expected: str, got: Any) -> Exception:
        got_text = "missing" if got is _MISSING else f"{_short(got)} ({type(got).__name__})"
        return self.error(f"LUT {str(self.path)!r} is malformed at {key}: expected {expected}, got {got_text}. "
                          f"A LUT hwnas wrote has none of this; rebuild it: {self.fix}.")

    def number(self, obj: dict, key: str, where: str, *, low: float | None = 0.0, open_low: bool = False,
               high: float | None = None, required: bool = True) -> float | None:
        """``obj[key]``: a finite number within the bounds (``low`` < or <= value <= ``high``); ``None`` when
        absent and not ``required``."""
        if key not in obj:
            if required:
                raise self.fail(f"{where}.{key}" if where else key, _expect(low, open_low, high), _MISSING)
            return None
        return self.value(obj[key], f"{where}.{key}" if where else key, low=low, open_low=open_low, high=high)

    def value(self, v: Any, key: str, *, low: float | None = 0.0, open_low: bool = False,
              high: float | None = None) -> float:
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        if ok and low is not None:
            ok = v > low if open_low else v >= low
        if ok and high is not None:
            ok = v <= high
        if not ok:
            raise self.fail(key, _expect(low, open_low, high), v)
        return float(v)

    def integer(self, v: Any, key: str, low: int = 0, high: int | None = None) -> int:
        if not (isinstance(v, int) and not isinstance(v, bool) and v >= low and (high is None or v <= high)):
            raise self.fail(key, f"an int >= {low}" + (f" and <= {high}" if high is not None else ""), v)
        return v

    def numbers(self, seq: list, key: str, low: float = 0.0) -> None:
        """Every item of ``seq`` a finite number >= ``low`` (checked fast; the first bad one is named)."""
        try:
            ok = all(type(v) in (float, int) for v in seq) and all(math.isfinite(v) and v >= low for v in seq)
        except OverflowError:  # an int too large for a float
            ok = False
        if not ok:
            for j, v in enumerate(seq):
                self.value(v, f"{key}[{j}]", low=low)

    def integers(self, seq: Any, key: str, low: int = 0, high: int | None = None) -> None:
        """Every item (or value, for a dict) of ``seq`` an int within ``[low, high]``."""
        items = seq.values() if isinstance(seq, dict) else seq
        if not all(type(v) is int and v >= low and (high is None or v <= high) for v in items):
            for j, v in (seq.items() if isinstance(seq, dict) else enumerate(seq)):
                self.integer(v, f"{key}[{j!r}]", low=low, high=high)

    def kind(self, v: Any, key: str, types: tuple[type, ...], expected: str) -> Any:
        if not isinstance(v, types) or (bool not in types and isinstance(v, bool)):
            raise self.fail(key, expected, v)
        return v


_MISSING = object()


def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def _expect(low: float | None, open_low: bool, high: float | None) -> str:
    parts = ["a finite number"]
    if low is not None:
        parts.append(f"{'>' if open_low else '>='} {low:g}")
    if high is not None:
        parts.append(f"<= {high:g}")
    return " ".join(parts[:1]) + (" " + " and ".join(parts[1:]) if len(parts) > 1 else "")


def _key(sig: str) -> str:
    return f"entries[{sig!r}]"


def check_lut_data(data: dict[str, Any], path: Any, error: type[Exception], strict: bool = True) -> None:
    """Check every field of a LUT file's JSON that hwnas reads (see the module docstring); raise ``error``.

    ``strict=False`` (a build resuming its own file, which fits the calibration and refinement again) checks types,
    finiteness and counts, not whether the fitted calibration and adjustments are plausible: a build's first few
    subnets can fit anything.
    """
    w = Where(path, data, error)
    dev = data.get("device", _MISSING)
    w.kind(dev, "device", (dict,), "an object with the device's fields (name, intra_op_threads, ...)")
    for key, value in dev.items():
        if key not in _DEVICE_FIELDS:
            raise w.fail(f"device.{key}", f"one of the device fields {sorted(_DEVICE_FIELDS)}", key)
        w.kind(value, f"device.{key}", _DEVICE_FIELDS[key], " or ".join(t.__name__ for t in _DEVICE_FIELDS[key]))
    w.kind(dev.get("name", _MISSING), "device.name", (str,), "the device's name, a string")
    for key in ("intra_op_threads", "inter_op_threads"):
        if key in dev:
            w.integer(dev[key], f"device.{key}", low=1)
    for i, pair in enumerate(dev.get("provider_options", ())):
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(p, str) for p in pair)):
            raise w.fail(f"device.provider_options[{i}]", "a [key, value] pair of strings", pair)
    for key, types, what in (("fingerprint", (dict,), "an object (the machine's fingerprint)"),
                             ("settings", (dict,), "an object (the build's settings)"),
                             ("spaces", (list,), "a list of \"space@input\" strings"),
                             ("subnets", (list,), "a list of the build's subnets"),
                             ("speed", (dict, type(None)), "an object (a speed check's record) or null"),
                             ("adapted", (dict, type(None)), "an object (hwnas adapt's record) or null")):
        if key in data:
            w.kind(data[key], key, types, what)
    for key, value in data.get("fingerprint", {}).items():  # compared with this machine's on load
        if key == "cpu_flags":
            if not (isinstance(value, list) and all(isinstance(f, str) for f in value)):
                raise w.fail("fingerprint.cpu_flags", "a list of CPU flag names (strings)", value)
        elif key == "provider_options":
            if not (isinstance(value, list) and all(isinstance(p, list) and len(p) == 2
                                                    and all(isinstance(x, str) for x in p) for p in value)):
                raise w.fail("fingerprint.provider_options", "a list of [key, value] pairs of strings", value)
        elif not isinstance(value, (str, int, float, bool, type(None))):
            raise w.fail(f"fingerprint.{key}", "a string or number (as hwnas.hw.fingerprint writes it)", value)
    for i, tag in enumerate(data.get("spaces", [])):
        w.kind(tag, f"spaces[{i}]", (str,), "a \"space@input\" string")
    _check_settings(w, data.get("settings", {}))
    cal = data.get("calibration", _MISSING)
    w.kind(cal, "calibration", (dict,), "the calibration object {\"scale\", \"per_node_ms\", \"overhead_ms\", ...}")
    subnets = data.get("subnets", [])
    e2e = [_check_subnet(w, r, i) for i, r in enumerate(subnets)]
    longest = max((t for t in e2e if t is not None), default=None)
    # plausible fits: profiled kernel sums scale to end-to-end times by a positive factor; a per-run overhead and a
    # kernel's adjustment stay within 10x the longest build subnet's time
    bound = 10 * longest if strict and longest is not None else None
    w.number(cal, "scale", "calibration", low=0.0 if strict else None, open_low=True, high=100.0 if strict else None)
    w.number(cal, "per_node_ms", "calibration", low=None)
    w.number(cal, "overhead_ms", "calibration", low=-bound if bound else None, high=bound)
    entries = data.get("entries", _MISSING)
    w.kind(entries, "entries", (dict,), "an object: kernel signature -> its measurements")
    for sig, e in entries.items():
        _check_entry(w, sig, e, len(subnets), bound)


def _check_settings(w: Where, s: dict[str, Any]) -> None:
    for key in ("runs", "warmup", "repeats_per_kernel", "random_subnets"):
        if key in s:
            w.integer(s[key], f"settings.{key}")
    if "input_shape" in s:
        shape = s["input_shape"]
        if not (isinstance(shape, list) and shape
                and all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape)):
            raise w.fail("settings.input_shape", "a list of positive ints such as [1, 3, 224, 224]", shape)
    w.number(s, "build_seconds", "settings", required=False)
    for key in ("statistic", "started", "finished", "harvest"):
        if key in s:
            w.kind(s[key], f"settings.{key}", (str,), "a string")
    if "ridge" in s and s["ridge"] is not None:
        w.value(s["ridge"], "settings.ridge", low=0.0, open_low=True)
    levels = s.get("reference_ms", {})
    w.kind(levels, "settings.reference_ms", (dict,), "an object: space@input -> the reference subnet's ms")
    for tag, ms in levels.items():
        w.value(ms, f"settings.reference_ms[{tag!r}]", low=0.0, open_low=True)
    refs = s.get("references", {})
    w.kind(refs, "settings.references", (dict,), "an object: space@input -> the reference subnet's sample")
    for tag, sample in refs.items():
        w.kind(sample, f"settings.references[{tag!r}]", (dict,), "a sample (label -> value)")


def _check_subnet(w: Where, r: Any, i: int) -> float | None:
    """Check one build subnet; returns its end-to-end time (``None`` without one)."""
    key = f"subnets[{i}]"
    w.kind(r, key, (dict,), "an object (a build subnet's record)")
    for field in ("end_to_end_ms", "end_to_end_paired_ms", "end_to_end_single_ms", "end_to_end_median_ms"):
        if r.get(field) is not None:
            w.value(r[field], f"{key}.{field}", low=0.0, open_low=True)
    if r.get("sum_nodes_ms") is not None:
        w.value(r["sum_nodes_ms"], f"{key}.sum_nodes_ms")
    if "profile_speed" in r:
        w.value(r["profile_speed"], f"{key}.profile_speed", low=0.0, open_low=True, high=100.0)
    if "nodes" in r:
        w.integer(r["nodes"], f"{key}.nodes")
    if "sample" in r:
        w.kind(r["sample"], f"{key}.sample", (dict,), "a sample (label -> value)")
    if "space" in r:
        w.kind(r["space"], f"{key}.space", (str,), "a \"space@input\" string")
    for flag in ("random", "interleaved"):
        if flag in r:
            w.kind(r[flag], f"{key}.{flag}", (bool,), "true or false")
    kernels = r.get("kernels", {})
    w.kind(kernels, f"{key}.kernels", (dict,), "an object: kernel signature -> how often the subnet runs it")
    w.integers(kernels, f"{key}.kernels")
    return float(r["end_to_end_ms"]) if r.get("end_to_end_ms") is not None else None


def _check_entry(w: Where, sig: str, e: Any, n_subnets: int, bound: float | None) -> None:
    key = _key(sig)
    w.kind(e, key, (dict,), "an object {\"times_ms\": [...], \"nodes\": [...], ...}")
    times = e.get("times_ms", _MISSING)
    w.kind(times, f"{key}.times_ms", (list,), "a list of the kernel's profiled times in ms")
    w.numbers(times, f"{key}.times_ms")
    nodes = e.get("nodes", [])
    w.kind(nodes, f"{key}.nodes", (list,), "a list of ONNX Runtime node counts, one per time")
    w.integers(nodes, f"{key}.nodes")
    if nodes and len(nodes) != len(times):
        raise w.fail(f"{key}.nodes", f"one node count per time ({len(times)})", nodes)
    subnets = e.get("subnets", [])
    w.kind(subnets, f"{key}.subnets", (list,), "a list of build subnet indices, one per time")
    w.integers(subnets, f"{key}.subnets", high=max(n_subnets - 1, 0))
    if subnets and len(subnets) != len(times):
        raise w.fail(f"{key}.subnets", f"one build subnet index per time ({len(times)})", subnets)
    norm = e.get("normalized_ms")
    if norm is not None:
        w.value(norm, f"{key}.normalized_ms", low=0.0, open_low=True)
        positive = [t for t in times if t > 0]
        if positive and not min(positive) / 20 <= norm <= max(positive) * 20:
            raise w.fail(f"{key}.normalized_ms", f"a time near the entry's own times ({min(positive):g} to "
                         f"{max(positive):g} ms, at most 20x off)", norm)
    elif not times:
        raise w.fail(f"{key}.times_ms", "at least one time (or a normalized_ms)", times)
    median = norm if norm is not None else float(statistics.median(times))
    if "median_ms" in e:  # written beside the times by LUT.to_dict, rounded to 1e-6 ms
        stored = w.value(e["median_ms"], f"{key}.median_ms")
        if abs(stored - median) > 1.5e-6 + 1e-9 * median:
            raise w.fail(f"{key}.median_ms", f"the median of the entry's own times, {median:.6f} (a time or the "
                         "median was edited)", e["median_ms"])
    if "n" in e and e["n"] != len(times):
        raise w.fail(f"{key}.n", f"the number of its times ({len(times)})", e["n"])
    w.number(e, "adjust_ms", key, low=-bound if bound is not None else None, high=bound, required=False)
