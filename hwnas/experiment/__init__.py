"""Experiments from one config file: ``hwnas run experiment.yaml``.

An experiment file (YAML) names every part of a search: the space (a registered name, ``module:Class``, or a
model to convert) and its input shape; the device with its LUT or predictor (or the steps that build or adapt
one); the constraints; the strategy with its parameters, penalty and filter; the evaluator (data set, epochs);
the exports and reports; and the output folder. Names are looked up in :mod:`hwnas.registry`, so a part you
register is usable from a file like a shipped one. See ``docs/experiments.md``.

Example:
    >>> import hwnas.experiment as ex
    >>> cfg = ex.resolve_config(preset="digits_tiny", overrides=["strategy.trials=6"])
    >>> cfg["strategy"]["trials"], cfg["space"]["input_shape"]
    (6, [1, 1, 8, 8])
    >>> result = ex.run(preset="digits_tiny", overrides=["strategy.trials=6"], output="/tmp/hwnas-doctest-run",
    ...                 progress=False)                                                   # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from hwnas.experiment.config import apply_overrides, dump, load_config, presets, resolve
from hwnas.experiment.runner import CONFIG_FILE, Context, ExperimentResult, run_resolved
from hwnas.experiment.schema import ConfigError

__all__ = ["run", "resolve_config", "run_resolved", "presets", "dump", "ConfigError", "Context", "ExperimentResult",
           "CONFIG_FILE"]


def resolve_config(config: str | os.PathLike | dict | None = None, *, preset: str | None = None,
                   overrides: Sequence[str] = (), output: str | os.PathLike | None = None,
                   progress: bool | None = None) -> dict[str, Any]:
    """The resolved config (every default filled in) of a file, a dict or a preset, with ``KEY.PATH=VALUE``
    overrides and the output folder / progress set when given.

    Raises:
        ConfigError: the config is malformed; each problem names its key path.
    """
    raw = apply_overrides(load_config(config, preset), overrides)
    if output is not None:
        raw["output"] = str(output)
    if progress is not None:
        raw["progress"] = bool(progress)
    source = f"preset {preset!r}" if preset else (str(config) if not isinstance(config, dict) else "experiment config")
    return resolve(raw, source)


def run(config: str | os.PathLike | dict | None = None, *, preset: str | None = None,
        overrides: Sequence[str] = (), output: str | os.PathLike | None = None,
        progress: bool | None = None) -> ExperimentResult:
    """Run an experiment end to end (resuming an interrupted run of the same config in its output folder).

    Args: as :func:`resolve_config`.
    """
    return run_resolved(resolve_config(config, preset=preset, overrides=overrides, output=output,
                                       progress=progress))
