"""hwnas: hardware-aware neural architecture search for PyTorch.

Profile FLOPs, parameters and latency of any subnet of a model space in microseconds, constrain search
with them, and export the chosen subnet as a plain PyTorch model or ONNX file.

``hwnas.profile`` and ``hwnas.search`` are packages that can also be called:
``hwnas.profile(space, dummy_input, constraints)`` prints the profile table
(:func:`hwnas.report.summary.profile`) and ``hwnas.search(space, dummy_input, constraints, score_func)``
runs a search and exports the best subnet (:func:`hwnas.search.run` with ``export_fn=hwnas.export``);
``hwnas.profile.FlopsProfiler`` and ``hwnas.search.Random`` are their parts.
"""

import types

from hwnas import nn, profile, search, spaces
from hwnas import prune as _prune_module
from hwnas.convert import convert, restore, save
from hwnas.export import apply_arch, export, load_arch, save_arch, to_onnx
from hwnas.hw.adapt import adapt
from hwnas.hw.latency import LatencyProfiler
from hwnas.predict import predict_latency
from hwnas.profile import FlopsProfiler, NumParamsProfiler
from hwnas.report.summary import profile as _profile_table

__version__ = "0.1.0"


class _CallablePackage(types.ModuleType):
    """A package that is also a function (the layers below export cannot import it, so it is joined here)."""

    def __call__(self, *args, **kwargs):
        return self.__dict__["_hwnas_call"](*args, **kwargs)


def _search(space, dummy_input, constraints=None, score_func=None, **kwargs):
    kwargs.setdefault("export_fn", export)
    return search.run(space, dummy_input, constraints, score_func, **kwargs)


prune = _prune_module  # hwnas.prune(model, dummy_input, constraints, data, ...) is hwnas.prune.prune

for _pkg, _fn in ((profile, _profile_table), (search, _search), (prune, _prune_module.prune)):
    _pkg.__class__ = _CallablePackage
    _pkg._hwnas_call = _fn

__all__ = ["FlopsProfiler", "LatencyProfiler", "NumParamsProfiler", "adapt", "apply_arch", "convert", "export", "load_arch",
           "nn", "predict_latency", "profile", "prune", "restore", "save", "save_arch", "search", "spaces", "to_onnx",
           "__version__"]
