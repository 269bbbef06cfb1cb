"""The shipped parts an experiment names, registered in :mod:`hwnas.registry`.

- ``strategies``: ``random``, ``grid``, ``evolution`` (regularized/aging), ``evolution_plain``, ``policy_rl``
  (multi-trial); ``darts``, ``gumbel_darts``, ``proxylessnas``, ``enas``, ``spos`` (one-shot);
- ``penalties``: ``sample``, ``expectation`` (the config names the metric: ``metric: latency_ms``);
- ``filters``: ``range`` (``metric``, ``min``, ``max``), ``function`` (``module:function`` sample -> bool);
- ``profilers``: ``flops``, ``params``, ``latency`` (a LUT and/or predictor);
- ``estimators``: ``supernet`` (train a weight-sharing supernet once, score subnets by validation accuracy),
  ``oneshot`` (the trainer of the one-shot strategies), ``metric`` (a profiled metric is the score),
  ``function`` (``module:function`` sample -> score);
- ``trainers``: ``supernet`` (:class:`~hwnas.search.SupernetTrainer`), ``oneshot`` (:func:`~hwnas.search.train_oneshot`);
- ``exporters``: ``arch``, ``onnx``, ``weights``; ``reports``: ``history``, ``pareto``, ``latency_layers``,
  ``summary``;
- ``datasets``: ``digits`` (scikit-learn's 8x8 digits, the demo's split).

An exporter or report is a function ``(ctx, **params) -> {name: path}``; ``ctx`` is the run's
:class:`~hwnas.experiment.runner.Context`. Register your own the same way::

    @hwnas.registry.register("reports", "my_table")
    def my_table(ctx, file: str = "table.csv"): ...
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field

from hwnas import registry
from hwnas.experiment.schema import DataConfig, Strict
from hwnas.io import atomic_write_json

search = importlib.import_module("hwnas.search")  # the package (the attribute hwnas.search is the function)

__all__ = ["SupernetEstimator", "OneShotEstimator", "MetricEstimator", "FunctionEstimator", "Data", "load_data",
           "STRATEGIES", "ONESHOT"]

#: multi-trial strategies by name
STRATEGIES = {"random": search.Random, "grid": search.Grid, "evolution": search.RegularizedEvolution,
              "evolution_plain": search.Evolution, "policy_rl": search.PolicyBasedRL}
#: one-shot strategies by name
ONESHOT = {"darts": search.DARTS, "gumbel_darts": search.GumbelDARTS, "proxylessnas": search.ProxylessNAS,
           "enas": search.ENAS, "spos": search.RandomOneShot}

for _name, _cls in {**STRATEGIES, **ONESHOT}.items():
    registry.register("strategies", _name, _cls)
registry.register("penalties", "sample", search.SampleProfilerPenalty)
registry.register("penalties", "expectation", search.ExpectationProfilerPenalty)
registry.register("filters", "range", search.RangeProfilerFilter)
registry.register("trainers", "supernet", search.SupernetTrainer)
registry.register("trainers", "oneshot", search.train_oneshot)


@registry.register("filters", "function")
def function_filter(function: str) -> search.Filter:
    """A filter from ``module:function`` (sample -> bool)."""
    return search.Filter(registry.import_object(function, "filter function"), name=function)


# ------------------------------------------------------------------------------------------------- profilers
@registry.register("profilers", "flops")
def flops_profiler(space: Any, dummy_input: Any = None, graph: Any = None) -> Any:
    """FLOPs (one multiply-add is one FLOP, like fvcore)."""
    from hwnas.profile import FlopsProfiler

    return FlopsProfiler(space, dummy_input, graph=graph)


@registry.register("profilers", "params")
def params_profiler(space: Any, dummy_input: Any = None, graph: Any = None) -> Any:
    """Parameters of the exported subnet."""
    from hwnas.profile import NumParamsProfiler

    return NumParamsProfiler(space, dummy_input, graph=graph)


@registry.register("profilers", "latency")
def latency_profiler(space: Any, dummy_input: Any = None, graph: Any = None, lut: Any = None,
                     predictor: Any = None, device: str | None = None) -> Any:
    """Milliseconds on a device from a LUT (a file or a shipped name) and/or a learned predictor."""
    from hwnas.artifacts import resolve_lut, resolve_predictor
    from hwnas.hw.latency import LatencyProfiler

    if isinstance(lut, str):
        lut = resolve_lut(lut, device)
    if isinstance(predictor, str):
        predictor = resolve_predictor(predictor)
    return LatencyProfiler(space, dummy_input, lut=lut, graph=graph, predictor=predictor)


# ------------------------------------------------------------------------------------------------- data sets
class Data:
    """A data set as tensors: train, validation and (optional) test inputs and integer labels."""

    def __init__(self, x_train, y_train, x_val, y_val, x_test=None, y_test=None):
        self.x_train, self.y_train, self.x_val, self.y_val = x_train, y_train, x_val, y_val
        self.x_test, self.y_test = x_test, y_test


@registry.register("datasets", "digits")
def digits(split_seed: int = 0) -> Any:
    """scikit-learn's 8x8 digits, normalised, split 60/20/20 (the demo's :func:`hwnas.demo.load_digits_data`)."""
    from hwnas.demo import load_digits_data

    return load_digits_data(split_seed)


def load_data(cfg: DataConfig) -> Data:
    """The data set of an evaluator's ``data`` block, as :class:`Data` (checked: tensors, one label per input)."""
    raw = registry.build("datasets", {"name": cfg.name, **cfg.args})
    if isinstance(raw, dict):
        missing = [k for k in ("x_train", "y_train", "x_val", "y_val") if k not in raw]
        if missing:
            raise ValueError(f"data set {cfg.name!r} returned a dict without {missing}; return x_train, y_train, "
                             "x_val, y_val (and optionally x_test, y_test) as tensors.")
        raw = Data(**{k: raw.get(k) for k in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")})
    elif isinstance(raw, (tuple, list)):
        if len(raw) not in (4, 6):
            raise ValueError(f"data set {cfg.name!r} returned {len(raw)} items; return (x_train, y_train, x_val, "
                             "y_val) or those and (x_test, y_test).")
        raw = Data(*raw)
    for part in ("train", "val"):
        x, y = getattr(raw, f"x_{part}", None), getattr(raw, f"y_{part}", None)
        if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor) or len(x) != len(y) or not len(x):
            raise ValueError(f"data set {cfg.name!r}: x_{part} and y_{part} must be non-empty tensors of equal "
                             f"length, got {type(x).__name__} and {type(y).__name__}.")
    return raw


# ------------------------------------------------------------------------------------------------ estimators
@registry.register("estimators", "supernet")
class SupernetEstimator:
    """Train the space as a weight-sharing supernet once; score a subnet by its validation accuracy with the
    shared weights after BN recalibration (the demo's evaluator). The weights are saved to ``supernet.pt``
    and a resumed run loads them instead of training again."""

    class Config(Strict):
        name: Literal["supernet"] = "supernet"
        data: DataConfig = Field(default_factory=DataConfig)
        epochs: int = Field(2, ge=0)
        batch_size: int = Field(32, ge=1)
        lr: float = Field(0.1, gt=0)
        momentum: float = Field(0.9, ge=0)
        weight_decay: float = Field(5e-5, ge=0)
        sampling: Literal["sandwich", "uniform"] = "sandwich"
        num_random: int = Field(1, ge=0)
        distill: bool = True
        calib_batches: int = Field(2, ge=1)
        calib_batch_size: int = Field(128, ge=1)
        val_batch_size: int = Field(512, ge=1)

    needs_data = True

    def __init__(self, cfg: Config):
        self.cfg = cfg

    def prepare(self, ctx: Any) -> Any:
        c, data, space = self.cfg, ctx.data, ctx.space
        train = search.TensorBatches(data.x_train, data.y_train, c.batch_size, shuffle=True, seed=ctx.seed)
        val = search.TensorBatches(data.x_val, data.y_val, c.val_batch_size)
        weights = ctx.out / "supernet.pt"
        if ctx.resuming and weights.exists():
            space.load_state_dict(torch.load(weights, weights_only=True))
            ctx.say(f"loaded the trained supernet of the interrupted run ({weights})")
        elif c.epochs:
            ctx.say(f"training the supernet ({c.epochs} epochs, {c.sampling} sampling)")
            opt = torch.optim.SGD(space.parameters(), lr=c.lr, momentum=c.momentum, nesterov=c.momentum > 0,
                                  weight_decay=c.weight_decay)
            search.SupernetTrainer(space, opt, sampling=c.sampling, num_random=c.num_random, distill=c.distill,
                                   seed=ctx.seed).fit(train, c.epochs, progress=ctx.progress)
            _save_state(space, weights)
        calib = search.TensorBatches(data.x_train, data.y_train, c.calib_batch_size, shuffle=True, seed=ctx.seed + 1)
        ctx.val_loader = val
        return search.SubnetEvaluator(space, val, calib_loader=calib, calib_batches=c.calib_batches)


@registry.register("estimators", "oneshot")
class OneShotEstimator:
    """Train a one-shot strategy's supernet and architecture together (:func:`hwnas.search.train_oneshot`);
    the chosen subnet's score is its validation accuracy with the trained weights."""

    class Config(Strict):
        name: Literal["oneshot"] = "oneshot"
        data: DataConfig = Field(default_factory=DataConfig)
        epochs: int = Field(2, ge=1)
        warmup_epochs: int = Field(0, ge=0)
        batch_size: int = Field(32, ge=1)
        lr: float = Field(0.05, gt=0)
        val_batch_size: int = Field(64, ge=1)

    needs_data = True

    def __init__(self, cfg: Config):
        self.cfg = cfg


@registry.register("estimators", "metric")
class MetricEstimator:
    """The score is a profiled metric (``flops``, ``params``, ``latency_ms``): e.g. the largest subnet that
    meets a latency budget (``metric: params``, strategy ``mode: max``). Nothing is trained."""

    class Config(Strict):
        name: Literal["metric"] = "metric"
        metric: str = "params"

    needs_data = False

    def __init__(self, cfg: Config):
        self.cfg = cfg

    def prepare(self, ctx: Any) -> Any:
        return ctx.profilers[self.cfg.metric].profile


@registry.register("estimators", "function")
class FunctionEstimator:
    """The score is ``module:function(sample)`` (a number, or a dict with ``score``), with ``args`` as keywords."""

    class Config(Strict):
        name: Literal["function"] = "function"
        function: str
        args: dict[str, Any] = Field(default_factory=dict)

    needs_data = False

    def __init__(self, cfg: Config):
        self.cfg = cfg

    def prepare(self, ctx: Any) -> Any:
        fn = registry.import_object(self.cfg.function, "score function")
        args = dict(self.cfg.args)
        return (lambda sample: fn(sample, **args)) if args else fn


def _save_state(model: torch.nn.Module, path: Path) -> Path:
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, tmp)
    os.replace(tmp, path)
    return path


# ------------------------------------------------------------------------------------------------- exporters
@registry.register("exporters", "arch")
def export_arch(ctx: Any, file: str = "best_arch.json") -> dict[str, Path]:
    """The best architecture as JSON (:func:`hwnas.save_arch`; :func:`hwnas.load_arch` reads it)."""
    from hwnas.export import save_arch

    return {"arch": save_arch(ctx.best_sample, ctx.out / file)}


@registry.register("exporters", "onnx")
def export_onnx(ctx: Any, file: str = "best.onnx") -> dict[str, Path]:
    """The best subnet (with the supernet's weights) as an ONNX file, checked against torch."""
    from hwnas.export import export, to_onnx

    return {"onnx": to_onnx(export(ctx.space, ctx.best_sample).eval(), ctx.x, ctx.out / file)}


@registry.register("exporters", "weights")
def export_weights(ctx: Any, file: str = "best_subnet.pt") -> dict[str, Path]:
    """The best subnet's state dict (tensors only) for ``hwnas.export(space, load_arch(...))``."""
    from hwnas.export import export

    return {"weights": _save_state(export(ctx.space, ctx.best_sample), ctx.out / file)}


# --------------------------------------------------------------------------------------------------- reports
@registry.register("reports", "history")
def report_history(ctx: Any, file: str = "history.csv") -> dict[str, Path]:
    """Every trial (multi-trial) or every epoch (one-shot) as CSV."""
    import pandas as pd

    path = ctx.out / file
    if ctx.history is not None:
        ctx.history.to_csv(path)
    else:
        pd.DataFrame([{k: json.dumps(v) if isinstance(v, dict) else v for k, v in vars(e).items()}
                      for e in ctx.oneshot.history]).to_csv(path, index=False)
    return {"history": path}


@registry.register("reports", "pareto")
def report_pareto(ctx: Any, file: str = "pareto.png", x: str | None = None) -> dict[str, Path]:
    """Score against a metric (default latency_ms, else flops) with the Pareto front; multi-trial only."""
    from hwnas.report.plots import plot_pareto

    if ctx.history is None:
        raise ValueError("report 'pareto' plots a multi-trial search's trials; a one-shot run has none. Drop it.")
    x = x or ("latency_ms" if "latency_ms" in ctx.profilers else "flops")
    bounds = {c.metric: c.bound for c in ctx.constraints}
    return {"pareto": plot_pareto(ctx.history, x=x, y="score", path=ctx.out / file, budget=bounds.get(x),
                                  y_mode=ctx.mode, title=f"{ctx.config['name']}: {len(ctx.history)} trials")}


@registry.register("reports", "latency_layers")
def report_latency_layers(ctx: Any, file: str = "best_latency_layers.csv", measure: bool = False) -> dict[str, Path]:
    """The best subnet's per-layer predicted latency (and measured, with ``measure: true``) as CSV."""
    from hwnas.report.latency import latency_report

    if "latency_ms" not in ctx.profilers:
        raise ValueError("report 'latency_layers' needs a latency model: give device.lut or device.predictor.")
    df = latency_report(ctx.space, ctx.best_sample, ctx.x, profiler=ctx.profilers["latency_ms"], measure=measure)
    df.to_csv(ctx.out / file, index=False)
    return {"latency_layers": ctx.out / file}


@registry.register("reports", "summary")
def report_summary(ctx: Any, file: str = "summary.json") -> dict[str, Path]:
    """The best sample, its score and metrics, the number of trials and the files written, as JSON."""
    data = {"name": ctx.config["name"], "best_sample": ctx.best_sample, "best_score": ctx.best_score,
            "best_metrics": ctx.best_metrics, "trials": len(ctx.history) if ctx.history is not None else None,
            "epochs": len(ctx.oneshot.history) if ctx.oneshot is not None else None,
            "seconds": ctx.seconds(), "files": {k: str(v) for k, v in ctx.files.items()}}
    return {"summary": atomic_write_json(ctx.out / file, json.loads(json.dumps(data, default=repr)))}
