"""Devices, ONNX Runtime measurement, kernels and latency lookup tables."""

from hwnas.hw.adapt import adapt
from hwnas.hw.build import build_lut, space_signatures
from hwnas.hw.device import (
    OPSET,
    Device,
    fingerprint,
    fingerprint_matches,
    get_device,
    list_devices,
    register_device,
)
from hwnas.hw.kernels import Kernel, KernelSignature, map_kernels
from hwnas.hw.latency import LatencyProfiler, MissingKernelsError
from hwnas.hw.lut import FAMILIES, LUT, FingerprintWarning, LUTError, family_of
from hwnas.hw.measure import (
    METHODS,
    LatencyRecord,
    measure,
    measure_many,
    open_reference,
    session_overhead_ms,
)
from hwnas.hw.profiling import NodeProfile, optimized_graph, profile_nodes, profile_run
from hwnas.hw.session import create_session, export_onnx, make_feed
from hwnas.hw.speed import (
    SpeedCheck,
    calibrate_definition,
    paired_speed_factor,
    pairing_reference,
    reference_subnets,
    size_factor,
    speed_check,
)

__all__ = [
    "OPSET",
    "Device",
    "register_device",
    "get_device",
    "list_devices",
    "fingerprint",
    "fingerprint_matches",
    "export_onnx",
    "create_session",
    "make_feed",
    "LatencyRecord",
    "NodeProfile",
    "measure",
    "measure_many",
    "METHODS",
    "open_reference",
    "profile_run",
    "profile_nodes",
    "session_overhead_ms",
    "optimized_graph",
    "Kernel",
    "KernelSignature",
    "map_kernels",
    "LUT",
    "LUTError",
    "FingerprintWarning",
    "FAMILIES",
    "family_of",
    "adapt",
    "calibrate_definition",
    "build_lut",
    "space_signatures",
    "LatencyProfiler",
    "MissingKernelsError",
    "SpeedCheck",
    "reference_subnets",
    "pairing_reference",
    "paired_speed_factor",
    "size_factor",
    "speed_check",
]
