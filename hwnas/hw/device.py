"""Devices: named ONNX Runtime configurations, a registry, and machine fingerprints.

A :class:`Device` is everything that decides how fast a kernel runs apart from the kernel itself:
the execution provider, the thread counts, the graph optimisation level, thread spinning. Its
:func:`fingerprint` adds what the machine and the software stack are (CPU model and flags, ONNX
Runtime version, ...), so that a latency table measured on one machine can warn when it is used on
another (:func:`fingerprint_matches`).

Example:
    >>> from hwnas.hw.device import get_device, list_devices
    >>> "cpu-ort-1t" in list_devices()
    True
    >>> get_device("cpu-ort-1t").intra_op_threads
    1
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.metadata
import logging
import os
import platform
from dataclasses import dataclass
from typing import Any

import onnxruntime as ort

__all__ = [
    "OPSET",
    "GRAPH_OPTIMIZATION_LEVELS",
    "Device",
    "register_device",
    "get_device",
    "list_devices",
    "fingerprint",
    "fingerprint_matches",
    "hwnas_version",
]

logger = logging.getLogger(__name__)

#: ONNX opset that hwnas exports with; part of every fingerprint.
OPSET = 17

#: Accepted values of :attr:`Device.graph_optimization` and the ORT level each one means.
GRAPH_OPTIMIZATION_LEVELS = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "layout": "ORT_ENABLE_LAYOUT",
    "all": "ORT_ENABLE_ALL",
}

# CPU flags that change which kernels MLAS / ORT pick (vector width, FMA, int8 dot products, bf16, AMX).
_KERNEL_FLAGS = (
    "sse4_1", "sse4_2", "avx", "avx2", "fma", "f16c",
    "avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512_vnni", "avx_vnni", "avx512_bf16",
    "amx_tile", "amx_int8", "amx_bf16",
    "asimd", "asimddp", "sve", "sve2", "i8mm", "bf16",  # aarch64 names
)  # fmt: skip


@dataclass(frozen=True)
class Device:
    """A named ONNX Runtime configuration.

    Args:
        name: Registry key, e.g. ``"cpu-ort-1t"``.
        provider: Execution provider, e.g. ``"CPUExecutionProvider"``.
        intra_op_threads: Threads inside one operator (``SessionOptions.intra_op_num_threads``).
        inter_op_threads: Threads across operators (``inter_op_num_threads``); execution is always
            sequential, so 1 is the sensible value.
        graph_optimization: One of ``"disable"``, ``"basic"``, ``"extended"``, ``"layout"``, ``"all"``.
        allow_spinning: Let pool threads spin while waiting for work
            (``session.intra_op.allow_spinning``); changes the time of short kernels.
        denormal_as_zero: Flush denormals to zero in ORT's threads (``session.set_denormal_as_zero``).
        provider_options: Extra options for the provider, as ``((key, value), ...)`` pairs.
        description: Free text for reports.
    """

    name: str
    provider: str = "CPUExecutionProvider"
    intra_op_threads: int = 1
    inter_op_threads: int = 1
    graph_optimization: str = "all"
    allow_spinning: bool = True
    denormal_as_zero: bool = False
    provider_options: tuple[tuple[str, str], ...] = ()
    description: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"Device name must be a non-empty string, got {self.name!r}.")
        if self.graph_optimization not in GRAPH_OPTIMIZATION_LEVELS:
            raise ValueError(
                f"Device {self.name!r}: graph_optimization={self.graph_optimization!r} is not known; "
                f"expected one of {sorted(GRAPH_OPTIMIZATION_LEVELS)}."
            )
        for field_name in ("intra_op_threads", "inter_op_threads"):
            value = getattr(self, field_name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(
                    f"Device {self.name!r}: {field_name} must be an int >= 1 (explicit thread counts make "
                    f"measurements repeatable), got {value!r}."
                )

    def check_available(self) -> None:
        """Raise if the installed ONNX Runtime lacks this device's execution provider."""
        available = ort.get_available_providers()
        if self.provider not in available:
            raise RuntimeError(
                f"Device {self.name!r} needs execution provider {self.provider!r}, but the installed "
                f"onnxruntime {ort.__version__} only has {available}. Install an onnxruntime build with "
                f"that provider, or use a device that runs on one of these (see list_devices())."
            )

    def providers(self) -> list:
        """The ``providers=`` argument for ``onnxruntime.InferenceSession``."""
        if self.provider_options:
            return [(self.provider, dict(self.provider_options))]
        return [self.provider]

    def session_options(
        self,
        *,
        enable_profiling: bool = False,
        profile_prefix: str | None = None,
        optimized_model_path: str | None = None,
        log_severity_level: int | None = None,
    ) -> ort.SessionOptions:
        """Build ``onnxruntime.SessionOptions`` for this device.

        Threads are always explicit, execution is sequential, and spinning / denormal handling are
        set as config entries, so that two sessions of one device behave alike.

        Args:
            enable_profiling: Turn on ORT's per-node profiler (``end_profiling()`` gives the trace).
            profile_prefix: Path prefix of the profiling JSON file.
            optimized_model_path: If given, ORT writes the model as it runs it (after fusions) there.
            log_severity_level: ORT log level for this session (0 verbose .. 4 fatal).
        """
        so = ort.SessionOptions()
        so.intra_op_num_threads = self.intra_op_threads
        so.inter_op_num_threads = self.inter_op_threads
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = getattr(
            ort.GraphOptimizationLevel, GRAPH_OPTIMIZATION_LEVELS[self.graph_optimization]
        )
        spin = "1" if self.allow_spinning else "0"
        so.add_session_config_entry("session.intra_op.allow_spinning", spin)
        so.add_session_config_entry("session.inter_op.allow_spinning", spin)
        if self.denormal_as_zero:
            so.add_session_config_entry("session.set_denormal_as_zero", "1")
        if enable_profiling:
            so.enable_profiling = True
            if profile_prefix is not None:
                so.profile_file_prefix = str(profile_prefix)
        if optimized_model_path is not None:
            so.optimized_model_filepath = str(optimized_model_path)
        if log_severity_level is not None:
            so.log_severity_level = int(log_severity_level)
        return so

    def replace(self, **changes: Any) -> Device:
        """A copy with some fields changed (e.g. ``dev.replace(name="x", intra_op_threads=4)``)."""
        return dataclasses.replace(self, **changes)


_REGISTRY: dict[str, Device] = {}


def register_device(device: Device, overwrite: bool = False) -> Device:
    """Add ``device`` to the registry under ``device.name`` and return it.

    Raises:
        ValueError: if the name is taken and ``overwrite`` is false.
    """
    if not isinstance(device, Device):
        raise TypeError(f"register_device expects a Device, got {type(device).__name__}.")
    if device.name in _REGISTRY and not overwrite:
        raise ValueError(
            f"A device named {device.name!r} is already registered ({_REGISTRY[device.name]}). "
            f"Choose another name, or pass overwrite=True to replace it."
        )
    _REGISTRY[device.name] = device
    return device


def get_device(name_or_device: str | Device) -> Device:
    """Look a device up by name (a :class:`Device` is returned unchanged)."""
    if isinstance(name_or_device, Device):
        return name_or_device
    if not isinstance(name_or_device, str):
        raise TypeError(f"get_device expects a device name or a Device, got {type(name_or_device).__name__}.")
    try:
        return _REGISTRY[name_or_device]
    except KeyError:
        raise KeyError(
            f"Unknown device {name_or_device!r}. Known devices: {list_devices()}. "
            f"Register it first with register_device(Device({name_or_device!r}, ...))."
        ) from None


def list_devices() -> list[str]:
    """Names of the registered devices, sorted."""
    return sorted(_REGISTRY)


register_device(Device("cpu-ort-1t", intra_op_threads=1, description="ORT CPU provider, 1 intra-op thread"))
register_device(Device("cpu-ort-2t", intra_op_threads=2, description="ORT CPU provider, 2 intra-op threads"))


# ----------------------------------------------------------------------------------------- fingerprint


def hwnas_version() -> str:
    """Installed hwnas version, or ``"0+unknown"`` when running from a source tree."""
    try:
        return importlib.metadata.version("hwnas")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


@functools.lru_cache(maxsize=1)
def _machine() -> dict[str, Any]:
    cpu_model, cpu_id, flags = "", "", set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            text = fh.read()
        info: dict[str, str] = {}
        for line in text.split("\n\n", 1)[0].splitlines():  # first logical CPU is enough
            key, _, value = line.partition(":")
            info.setdefault(key.strip().lower(), value.strip())
        cpu_model = info.get("model name") or info.get("hardware") or info.get("cpu part", "")
        cpu_id = " ".join(
            f"{key.split()[-1]}={info[key]}"
            for key in ("cpu family", "model", "stepping", "cpu implementer", "cpu part")
            if key in info
        )
        flags = set((info.get("flags") or info.get("features") or "").split())
    except OSError:
        logger.debug("no /proc/cpuinfo; falling back to platform for the CPU fingerprint")
    if not cpu_model:
        cpu_model = platform.processor() or platform.machine() or "unknown"
    return {
        "cpu_model": cpu_model,
        "cpu_id": cpu_id,
        "cpu_flags": sorted(f for f in _KERNEL_FLAGS if f in flags),
        "logical_cores": os.cpu_count() or 0,
        "machine": platform.machine(),
        "system": platform.system(),
    }


def fingerprint(device: str | Device) -> dict[str, Any]:
    """Describe the machine, the software stack and the ORT configuration of ``device``.

    The result is a flat, JSON-serialisable dict (stored in LUT files and latency records).
    """
    dev = get_device(device)
    try:
        import torch

        torch_version = torch.__version__
    except ImportError:  # pragma: no cover - torch is a dependency
        torch_version = "not installed"
    return {
        **_machine(),
        "python": platform.python_version(),
        "onnxruntime": ort.__version__,
        "onnx_opset": OPSET,
        "torch": torch_version,
        "hwnas": hwnas_version(),
        "device": dev.name,
        "provider": dev.provider,
        "intra_op_threads": dev.intra_op_threads,
        "inter_op_threads": dev.inter_op_threads,
        "graph_optimization": dev.graph_optimization,
        "allow_spinning": dev.allow_spinning,
    }


# Keys whose change can change measured latency, with a readable label.
_MATTERS = {
    "cpu_model": "CPU model",
    "cpu_id": "CPU family/model/stepping",
    "cpu_flags": "CPU kernel flags",
    "onnxruntime": "onnxruntime version",
    "onnx_opset": "ONNX opset",
    "provider": "execution provider",
    "intra_op_threads": "intra-op threads",
    "inter_op_threads": "inter-op threads",
    "graph_optimization": "graph optimisation level",
    "allow_spinning": "thread spinning",
}


def fingerprint_matches(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Human-readable differences between two fingerprints that can change latency.

    An empty list means the fingerprints are compatible (torch, Python or hwnas versions and core
    counts may still differ). A key missing from one side is not reported.
    """
    diffs = []
    for key, label in _MATTERS.items():
        if key not in a or key not in b:
            continue
        va, vb = a[key], b[key]
        if key == "cpu_flags":
            sa, sb = set(va), set(vb)
            if sa != sb:
                parts = []
                if sa - sb:
                    parts.append(f"only in first: {sorted(sa - sb)}")
                if sb - sa:
                    parts.append(f"only in second: {sorted(sb - sa)}")
                diffs.append(f"{label} differ ({'; '.join(parts)})")
        elif va != vb:
            diffs.append(f"{label}: {va!r} != {vb!r}")
    return diffs
