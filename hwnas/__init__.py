"""hwnas: hardware-aware neural architecture search for PyTorch.

Profile FLOPs, parameters and latency of any subnet of a model space in microseconds, constrain search
with them, and export the chosen subnet as a plain PyTorch model or ONNX file.

``hwnas.profile(space, dummy_input, constraints)`` prints the profile table and returns its record
(:func:`hwnas.report.summary.profile`); ``hwnas.search(space, dummy_input, constraints, score_func)`` runs a
search and exports the best subnet (:func:`hwnas.api.search`); ``hwnas.prune(model, ...)`` prunes a trained
model (:func:`hwnas.prune.prune`). They are plain functions; their parts are imported from their packages:
``from hwnas.profile import FlopsProfiler``, ``from hwnas.search import RegularizedEvolution``.
"""

import importlib.metadata as _metadata

from hwnas import nn, spaces
from hwnas.api import profile, search  # after it has loaded the packages hwnas.profile and hwnas.search
from hwnas.convert import convert, restore, save
from hwnas.export import apply_arch, export, load_arch, save_arch, to_onnx
from hwnas.hw.adapt import adapt
from hwnas.hw.latency import LatencyProfiler
from hwnas.predict import predict_latency
from hwnas.profile import FlopsProfiler, NumParamsProfiler
from hwnas.prune import prune


def _version() -> str:
    """The installed distribution's version (pyproject.toml), or ``0+unknown`` from a bare source tree."""
    try:
        return _metadata.version("hwnas")
    except _metadata.PackageNotFoundError:
        return "0+unknown"


__version__ = _version()

__all__ = ["FlopsProfiler", "LatencyProfiler", "NumParamsProfiler", "adapt", "apply_arch", "convert", "export", "load_arch",
           "nn", "predict_latency", "profile", "prune", "restore", "save", "save_arch", "search", "spaces", "to_onnx",
           "__version__"]
