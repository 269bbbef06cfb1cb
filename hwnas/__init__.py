"""hwnas: hardware-aware neural architecture search for PyTorch.

Profile FLOPs, parameters and latency of any subnet of a model space in microseconds, constrain search
with them, and export the chosen subnet as a plain PyTorch model or ONNX file.
"""

from hwnas import nn, spaces
from hwnas.export import apply_arch, export, load_arch, save_arch, to_onnx
from hwnas.hw.latency import LatencyProfiler
from hwnas.profile import FlopsProfiler, NumParamsProfiler
from hwnas.report.summary import profile

__version__ = "0.1.0"

__all__ = ["FlopsProfiler", "LatencyProfiler", "NumParamsProfiler", "apply_arch", "export", "load_arch", "nn", "profile", "save_arch",
           "spaces", "to_onnx", "__version__"]
