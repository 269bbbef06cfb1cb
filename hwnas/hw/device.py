"""Devices: named ONNX Runtime configurations, a registry, and machine fingerprints.

A :class:`Device` is everything that decides how fast a kernel runs apart from the kernel itself:
the execution provider (any ONNX Runtime EP, with its provider options), the thread counts, the graph
optimisation level, thread spinning, and where it runs: on this machine, or behind a measurement agent
(``agent``: ``hwnas device serve`` on the target, see :mod:`hwnas.hw.remote`). Its :func:`fingerprint` adds
what the machine and the software stack are (CPU model and flags, GPU name and driver for a GPU provider,
ONNX Runtime version, ...), so that a latency table measured on one machine can warn when it is used on
another (:func:`fingerprint_matches`).

Devices come from code (:func:`register_device`) or from a device file, JSON or TOML
(:func:`load_device_file`, the command line's ``--device-file``); see ``docs/devices.md``.

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
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnxruntime as ort

from hwnas import registry as _registry
from hwnas.registry import closest as _closest

__all__ = [
    "OPSET",
    "GRAPH_OPTIMIZATION_LEVELS",
    "Device",
    "register_device",
    "load_device_file",
    "get_device",
    "device_pool",
    "list_devices",
    "fingerprint",
    "fingerprint_matches",
    "hwnas_version",
    "EP_PACKAGES",
    "GPU_PROVIDERS",
    "check_provider",
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
        provider_options: Options for the provider (a dict, or ``((key, value), ...)`` pairs; stored as sorted
            string pairs, as ONNX Runtime reads them), e.g. ``{"device_type": "CPU"}`` for OpenVINO.
        description: Free text for reports.
        agent: URL of the measurement agent that runs this device on its machine
            (``http://host:port/<device name on the agent>``, :mod:`hwnas.hw.remote`); ``""`` for this machine.
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
    agent: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"Device name must be a non-empty string, got {self.name!r}.")
        if not isinstance(self.provider, str) or not self.provider.endswith("ExecutionProvider"):
            raise ValueError(
                f"Device {self.name!r}: provider must be an ONNX Runtime execution provider name such as "
                f"'CPUExecutionProvider' or 'CUDAExecutionProvider', got {self.provider!r}."
            )
        object.__setattr__(self, "provider_options", _normalise_options(self.name, self.provider_options))
        if not isinstance(self.agent, str) or (self.agent and not self.agent.startswith(("http://", "https://"))):
            raise ValueError(f"Device {self.name!r}: agent must be '' (this machine) or an http:// URL of a "
                             f"measurement agent, got {self.agent!r}.")
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
        """Raise if this device cannot run here: the installed ONNX Runtime lacks its execution provider (the
        message names the package to install), or, for a device behind an agent, the agent is unreachable,
        refuses the token or lacks the provider."""
        if self.agent:
            from hwnas.hw.remote import check_agent_device  # the client of hwnas device serve

            check_agent_device(self)
            return
        check_provider(self.provider, self.name)

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


def _normalise_options(name: str, options: Any) -> tuple[tuple[str, str], ...]:
    """Provider options as sorted ``(str, str)`` pairs (ORT turns every key and value into a string itself)."""
    if isinstance(options, Mapping):
        pairs = list(options.items())
    else:
        try:
            pairs = [tuple(p) for p in (options or ())]
        except TypeError:
            pairs = [()]
        if any(len(p) != 2 for p in pairs):
            raise ValueError(f"Device {name!r}: provider_options must be a dict or (key, value) pairs, got {options!r}.")
    for key, value in pairs:
        if not isinstance(value, (str, int, float, bool)):
            raise ValueError(f"Device {name!r}: provider option {key!r} must be a string, number or bool (ONNX Runtime "
                             f"reads options as strings), got {type(value).__name__} {value!r}.")
    return tuple(sorted((str(k), str(v)) for k, v in pairs))


#: The pip package that brings each ONNX Runtime execution provider (one ``onnxruntime*`` package at a time).
EP_PACKAGES = {
    "CPUExecutionProvider": "onnxruntime",
    "AzureExecutionProvider": "onnxruntime",
    "CUDAExecutionProvider": "onnxruntime-gpu",
    "TensorrtExecutionProvider": "onnxruntime-gpu (with NVIDIA TensorRT; on a Jetson, NVIDIA's JetPack wheel)",
    "OpenVINOExecutionProvider": "onnxruntime-openvino",
    "DmlExecutionProvider": "onnxruntime-directml",
    "ROCMExecutionProvider": "onnxruntime-rocm",
    "MIGraphXExecutionProvider": "onnxruntime-migraphx",
    "QNNExecutionProvider": "onnxruntime-qnn",
    "CANNExecutionProvider": "onnxruntime-cann",
    "VitisAIExecutionProvider": "onnxruntime-vitisai",
    "CoreMLExecutionProvider": "onnxruntime (the macOS wheel)",
    "DnnlExecutionProvider": "an onnxruntime built with --use_dnnl",
    "NnapiExecutionProvider": "onnxruntime-android (ORT mobile on Android)",
    "XnnpackExecutionProvider": "onnxruntime-android / onnxruntime built with --use_xnnpack",
    "WebGpuExecutionProvider": "onnxruntime-web / onnxruntime built with --use_webgpu",
}


def check_provider(provider: str, device_name: str = "") -> None:
    """Raise a clear error unless the installed ONNX Runtime has ``provider`` (naming the package that has it)."""
    available = ort.get_available_providers()
    if provider in available:
        return
    who = f"Device {device_name!r} needs execution provider" if device_name else "Execution provider"
    known = ort.get_all_providers()
    if provider not in known:
        raise RuntimeError(
            f"{who} {provider!r}, which onnxruntime {ort.__version__} does not know. Known providers: {known}. "
            f"Check the spelling (e.g. 'CUDAExecutionProvider')."
        )
    package = EP_PACKAGES.get(provider, "an onnxruntime build with that provider")
    raise RuntimeError(
        f"{who} {provider!r}, but the installed onnxruntime {ort.__version__} only has {available}. "
        f"Install {package} in place of onnxruntime (pip uninstall onnxruntime, then pip install "
        f"{package.split()[0]}; only one onnxruntime package may be installed at a time), or use a device "
        f"on one of these providers (see list_devices())."
    )


def _unknown_device(name: str) -> KeyError:
    near = _closest(name, sorted(_REGISTRY))
    return KeyError(
        f"Unknown device {name!r}. Known devices: {list_devices()}. "
        + (f"Did you mean {' or '.join(repr(n) for n in near)}? " if near else "")
        + f"Register it first with register_device(Device({name!r}, ...))."
    )


# The kind "devices" of hwnas.registry (hwnas.registry.build("devices", name)); its table is _REGISTRY.
_KIND = _registry.kind("devices").configure(unknown=_unknown_device)
_REGISTRY: dict[str, Device] = _KIND.table

#: Keyword aliases that :func:`register_device` accepts.
_ALIASES = {"threads": "intra_op_threads", "inter_threads": "inter_op_threads"}


def register_device(device: Device | str, overwrite: bool = False, **fields: Any) -> Device:
    """Add a device to the registry under its name and return it.

    Either pass a :class:`Device`, or a name and its fields::

        register_device("gpu-trt", provider="TensorrtExecutionProvider",
                        provider_options={"trt_fp16_enable": "True"}, threads=1, graph_optimization="all")

    (``threads`` is ``intra_op_threads``.) Registering the same device twice is allowed.

    Raises:
        ValueError: if the name is taken by another configuration and ``overwrite`` is false, or a field is bad.
    """
    if isinstance(device, str):
        fields = {_ALIASES.get(k, k): v for k, v in fields.items()}
        unknown = sorted(set(fields) - {f.name for f in dataclasses.fields(Device)} - {"name"})
        if unknown:
            raise ValueError(f"register_device({device!r}): unknown field(s) {unknown}; expected some of "
                             f"{sorted(f.name for f in dataclasses.fields(Device) if f.name != 'name')} "
                             f"(or threads=).")
        device = Device(device, **fields)
    elif fields:
        raise TypeError("register_device: pass either a Device or a name with fields, not both.")
    if not isinstance(device, Device):
        raise TypeError(f"register_device expects a Device or a name, got {type(device).__name__}.")
    if device.name in _REGISTRY and _REGISTRY[device.name] == device:
        return device
    if device.name in _REGISTRY and not overwrite:
        raise ValueError(
            f"A device named {device.name!r} is already registered ({_REGISTRY[device.name]}). "
            f"Choose another name, or pass overwrite=True to replace it."
        )
    _KIND.register(device.name, device, replace=True)
    return device


def get_device(name_or_device: str | Device) -> Device:
    """Look a device up by name (a :class:`Device` is returned unchanged).

    ``"remote:http://host:port/<name>"`` is the device ``<name>`` of the measurement agent at ``host:port``
    (:func:`hwnas.hw.remote.connect`; the token comes from the ``HWNAS_DEVICE_TOKEN`` environment variable).
    """
    if isinstance(name_or_device, Device):
        return name_or_device
    if not isinstance(name_or_device, str):
        raise TypeError(f"get_device expects a device name or a Device, got {type(name_or_device).__name__}.")
    if name_or_device.startswith("remote:"):
        from hwnas.hw.remote import connect

        return connect(name_or_device[len("remote:"):])
    return _KIND.get(name_or_device)


#: Fields that may differ between the members of a device pool (the rest is the configuration they share).
_WHERE = ("name", "agent", "description")


def device_pool(devices: Any) -> list[Device]:
    """Devices of one configuration that can share a LUT build (several measurement agents of one kind).

    ``devices`` is a device, a name, names joined by commas (``"remote:http://a:8765/cpu-ort-1t,remote:..."``) or a
    list of them. Their provider, options, threads and optimisation must agree, and so must their machines where
    their fingerprints are known (:func:`fingerprint_matches`).
    """
    if isinstance(devices, str):
        devices = [d.strip() for d in devices.split(",") if d.strip()]
    elif isinstance(devices, Device):
        devices = [devices]
    pool = [get_device(d) for d in devices]
    if not pool:
        raise ValueError("device_pool: no device given; pass a device name, a Device or a list of them.")
    head = {k: v for k, v in pool[0].__dict__.items() if k not in _WHERE}
    for other in pool[1:]:
        diff = sorted(k for k, v in other.__dict__.items() if k not in _WHERE and head[k] != v)
        if diff:
            raise ValueError(f"device pool: {other.name!r} differs from {pool[0].name!r} in {diff}; a pool shares one "
                             "configuration (a LUT holds one device's times). Build a LUT per device instead "
                             "(hwnas.hw.remote_pool.build_luts).")
        machine = fingerprint_matches(fingerprint(pool[0]), fingerprint(other))
        if machine:
            raise ValueError(f"device pool: {other.name!r} runs on another machine or runtime than {pool[0].name!r} "
                             f"({'; '.join(machine)}); a pool must be machines of one kind.")
    if len({d.name for d in pool}) != len(pool):
        raise ValueError(f"device pool: a device is listed twice ({[d.name for d in pool]}); each measures one "
                         "subnet at a time, so list each once.")
    return pool


def list_devices() -> list[str]:
    """Names of the registered devices, sorted."""
    return sorted(_REGISTRY)


register_device(Device("cpu-ort-1t", intra_op_threads=1, description="ORT CPU provider, 1 intra-op thread"))
register_device(Device("cpu-ort-2t", intra_op_threads=2, description="ORT CPU provider, 2 intra-op threads"))


def load_device_file(path: str | os.PathLike, overwrite: bool = False) -> list[Device]:
    """Register the devices of a JSON or TOML file and return them.

    The file holds a list of devices, as ``{"devices": [{...}, ...]}`` (JSON) or ``[[device]]`` tables (TOML);
    each has a ``name`` and any :func:`register_device` fields::

        [[device]]
        name = "ov-cpu-4t"
        provider = "OpenVINOExecutionProvider"
        threads = 4
        [device.provider_options]
        device_type = "CPU"
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"device file '{path}' not found; expected a .json or .toml file listing devices "
                                "(see docs/devices.md).")
    text = path.read_bytes()
    try:
        if path.suffix.lower() == ".toml":
            import tomllib

            data = tomllib.loads(text.decode("utf-8"))
        else:
            data = json.loads(text)
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"device file '{path}' is not valid {'TOML' if path.suffix.lower() == '.toml' else 'JSON'}: "
                         f"{e}. Expected e.g. {{\"devices\": [{{\"name\": \"cpu-ort-4t\", \"threads\": 4}}]}}.") \
            from None
    entries = data.get("devices", data.get("device")) if isinstance(data, dict) else data
    if isinstance(entries, dict):
        entries = [entries]
    if not isinstance(entries, list) or not entries or not all(isinstance(e, dict) for e in entries):
        raise ValueError(f"device file '{path}': expected a non-empty list of devices under \"devices\" (JSON) or "
                         f"[[device]] tables (TOML), got {type(entries).__name__} {str(entries)[:80]}.")
    out = []
    for i, entry in enumerate(entries):
        entry = dict(entry)
        name = entry.pop("name", None)
        if not isinstance(name, str) or not name:
            raise ValueError(f"device file '{path}': device {i} has no \"name\" (got {entry}).")
        try:
            out.append(register_device(name, overwrite=overwrite, **entry))
        except (TypeError, ValueError) as e:
            raise ValueError(f"device file '{path}', device {name!r}: {e}") from None
    return out


# ----------------------------------------------------------------------------------------- fingerprint


def hwnas_version() -> str:
    """Installed hwnas version, or ``"0+unknown"`` when running from a source tree."""
    try:
        return importlib.metadata.version("hwnas")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


def _linux_cpu_info() -> dict[str, Any]:
    """The first logical CPU of ``/proc/cpuinfo`` under py-cpuinfo's key names, or ``{}`` without that file.

    py-cpuinfo reads this file too on Linux, but it first starts a copy of itself to probe CPUID, which costs 1 to
    4 s per process (measured 2026-12-07 at load 2 to 14) in every command that checks a fingerprint."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            first = fh.read().split("\n\n", 1)[0]
    except OSError:
        return {}
    raw: dict[str, str] = {}
    for line in first.splitlines():
        key, _, value = line.partition(":")
        raw.setdefault(key.strip().lower(), value.strip())
    info: dict[str, Any] = {}
    if raw.get("model name") or raw.get("hardware"):
        info["brand_raw" if raw.get("model name") else "hardware_raw"] = raw.get("model name") or raw["hardware"]
    for ours, theirs in (("cpu family", "family"), ("model", "model"), ("stepping", "stepping")):
        if raw.get(ours, "").isdigit():
            info[theirs] = int(raw[ours])
    info["flags"] = (raw.get("flags") or raw.get("features") or "").split()
    return info if info.get("brand_raw") or info.get("hardware_raw") else {}


@functools.lru_cache(maxsize=1)
def _cpu_info() -> dict[str, Any]:
    """The CPU's description under py-cpuinfo's keys: from ``/proc/cpuinfo`` on Linux (fast), else from py-cpuinfo
    (any OS), or ``{}`` where neither can tell (py-cpuinfo is not installed in a measurement agent's light
    install)."""
    if platform.system() == "Linux":
        info = _linux_cpu_info()
        if info:
            return info
    try:
        import cpuinfo
    except ImportError:
        logger.debug("py-cpuinfo is not installed; the CPU fingerprint falls back to platform")
        return {}
    try:
        return dict(cpuinfo.get_cpu_info() or {})
    except Exception as e:  # noqa: BLE001 - it probes the OS in many ways; any failure means "unknown"
        logger.debug("py-cpuinfo failed (%s); the CPU fingerprint falls back to platform", e)
        return {}


@functools.lru_cache(maxsize=1)
def _machine() -> dict[str, Any]:
    """The CPU part of a fingerprint, from py-cpuinfo, with the keys and values the /proc/cpuinfo reading of
    earlier hwnas gave: ``cpu_model`` (the brand string), ``cpu_id`` (``family=F model=M stepping=S`` on x86)
    and ``cpu_flags`` (those of :data:`_KERNEL_FLAGS` present)."""
    info = _cpu_info()
    cpu_model = str(info.get("brand_raw") or info.get("hardware_raw") or "").strip()
    cpu_id = " ".join(f"{key}={info[key]}" for key in ("family", "model", "stepping") if key in info)
    flags = {str(f).lower() for f in info.get("flags") or ()}
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


#: Providers that run on a GPU (their fingerprint names the GPU and its driver).
GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider", "ROCMExecutionProvider",
                 "MIGraphXExecutionProvider", "DmlExecutionProvider", "WebGpuExecutionProvider")


@functools.lru_cache(maxsize=1)
def _gpu() -> dict[str, str]:
    """The first GPU's name and driver version, from nvidia-smi, rocm-smi or the NVIDIA / Tegra driver files."""
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=10, check=True).stdout.strip()
            name, _, driver = out.splitlines()[0].rpartition(",")
            return {"gpu_name": name.strip(), "gpu_driver": driver.strip()}
        except (OSError, subprocess.SubprocessError, IndexError):
            logger.debug("nvidia-smi did not answer")
    gpu: dict[str, str] = {}
    for path, key in (("/proc/device-tree/model", "gpu_name"), ("/etc/nv_tegra_release", "gpu_driver"),
                      ("/proc/driver/nvidia/version", "gpu_driver"), ("/sys/module/amdgpu/version", "gpu_driver")):
        if key not in gpu and os.path.isfile(path):
            try:
                with open(path, encoding="utf-8", errors="replace") as fh:
                    gpu[key] = fh.readline().strip().strip("\x00")[:120]
            except OSError:
                pass
    return gpu


def _agent_fingerprint(dev: Device) -> dict[str, Any] | None:
    from hwnas.hw.remote import cached_fingerprint

    return cached_fingerprint(dev)


def fingerprint(device: str | Device) -> dict[str, Any]:
    """Describe the machine, the software stack and the ORT configuration of ``device``.

    The result is a flat, JSON-serialisable dict (stored in LUT files and latency records). For a device behind a
    measurement agent it is the agent's fingerprint of its own machine, as last seen by this process; before any
    contact, only the device's configuration (no machine keys, so no difference is reported on them).
    """
    dev = get_device(device)
    if dev.agent:
        seen = _agent_fingerprint(dev)
        if seen is not None:
            return dict(seen)
        return {"device": dev.name, "agent": dev.agent, "provider": dev.provider,
                "provider_options": [list(p) for p in dev.provider_options],
                "intra_op_threads": dev.intra_op_threads, "inter_op_threads": dev.inter_op_threads,
                "graph_optimization": dev.graph_optimization, "allow_spinning": dev.allow_spinning}
    if "torch" in sys.modules:
        torch_version = sys.modules["torch"].__version__
    else:  # without importing it (a measurement agent's worker never needs torch)
        try:
            torch_version = importlib.metadata.version("torch")
        except importlib.metadata.PackageNotFoundError:
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
        "provider_options": [list(p) for p in dev.provider_options],
        **(_gpu() if dev.provider in GPU_PROVIDERS else {}),
    }


# Keys whose change can change measured latency, with a readable label.
_MATTERS = {
    "cpu_model": "CPU model",
    "cpu_id": "CPU family/model/stepping",
    "cpu_flags": "CPU kernel flags",
    "onnxruntime": "onnxruntime version",
    "onnx_opset": "ONNX opset",
    "provider": "execution provider",
    "provider_options": "provider options",
    "gpu_name": "GPU",
    "gpu_driver": "GPU driver",
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
        if key not in a or key not in b or (key == "cpu_id" and not (a[key] and b[key])):
            continue  # an empty cpu_id: py-cpuinfo gives none on this CPU (ARM's implementer/part)
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
        elif key == "provider_options":
            if [list(p) for p in va] != [list(p) for p in vb]:
                diffs.append(f"{label}: {va!r} != {vb!r}")
        elif va != vb:
            diffs.append(f"{label}: {va!r} != {vb!r}")
    return diffs
