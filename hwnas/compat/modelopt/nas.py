"""``modelopt.torch.nas`` over hwnas: ``import hwnas.compat.modelopt.nas as mtn``.

- :func:`convert` -> :func:`hwnas.convert` (modes ``"autonas"``, ``"fastnas"``, ``"gradnas"``; the config as
  per-layer rules); returns the searchable model (an :class:`hwnas.convert.ConvertedSpace`, which computes its
  active subnet, the largest at first).
- :func:`profile` -> :func:`hwnas.profile`; returns ``(is_sat, stats)``.
- :func:`search` -> :func:`hwnas.search.run` with ``score_func(model)`` called on the model computing each
  candidate after batch-norm recalibration; returns ``(model, state)`` with the best subnet active.
- :func:`export` -> the active subnet as a plain model (:func:`hwnas.prune_io.export_pruned`).
- :func:`sample`, :func:`select`: set the active subnet.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from hwnas.compat.modelopt import config as _config
from hwnas.compat.modelopt.config import AutoNASConfig, FastNASConfig, GradNASConfig
from hwnas.convert import ConvertedSpace
from hwnas.convert.api import as_model, guess_input_shape
from hwnas.convert.api import convert as _convert
from hwnas.prune import default_collect, recalibrate_bn_with, uniform_seeds
from hwnas.prune_io import export_pruned, mark_pruned
from hwnas.report.summary import profile as _profile
from hwnas.search import RegularizedEvolution, build_profilers
from hwnas.search import run as _run
from hwnas.search.training import bn_layers, first_batches, recalibrate_bn

__all__ = ["convert", "profile", "search", "export", "sample", "select", "AutoNASConfig", "FastNASConfig",
           "GradNASConfig", "autonas"]

log = logging.getLogger(__name__)


class autonas:  # noqa: N801 - ModelOpt's module name: mtn.autonas.AutoNASConfig()
    """``mtn.autonas.AutoNASConfig``."""

    AutoNASConfig = AutoNASConfig


def convert(model: Any, mode: Any = "autonas", dummy_input: Any = None, input_shape: Any = None) -> ConvertedSpace:
    """ModelOpt's ``mtn.convert(model_or_model_factory, mode)``: the model as a search space.

    Args:
        model: a model, a function returning one, or ``(function, args, kwargs)``.
        mode: ``"autonas"``, ``"fastnas"``, ``"gradnas"``, or ``[(name, config)]`` with an ``AutoNASConfig`` /
            ``FastNASConfig`` or a dict of per-layer settings.
        dummy_input: hwnas traces the model on an input; by default one of the model's own input shape
            (:func:`hwnas.convert.api.guess_input_shape`: 224 x 224 for a first ``Conv2d``).
        input_shape: the input shape instead of ``dummy_input``.

    Returns:
        The searchable model (it computes its active subnet; the largest, i.e. the original model, at first).
    """
    name, rules = _config.parse_mode(mode, "mtn.convert")
    hw_mode = _config.MODES[name][0]
    space = _convert(as_model(model, "mtn.convert"), dummy_input, hw_mode, rules=rules, input_shape=input_shape)
    space.search_state["modelopt_mode"] = name
    return space


def _dummy_for(model: nn.Module, dummy_input: Any) -> Any:
    if dummy_input is not None:
        return dummy_input
    if isinstance(model, ConvertedSpace):
        ins = tuple(torch.zeros(i["shape"], dtype=getattr(torch, i["dtype"])) for i in model.conversion.inputs)
        return ins[0] if len(ins) == 1 else ins
    return torch.zeros(guess_input_shape(model))


def profile(model: nn.Module, dummy_input: Any = None, constraints: dict[str, Any] | None = None,
            deployment: Any = None, strict: bool = False, verbose: bool = True,
            use_centroid: bool = False) -> tuple[bool, dict[str, Any]]:
    """ModelOpt's ``mtn.profile``: ``(is_sat, stats)`` of a converted or plain model.

    ``stats`` holds, per metric (``"flops"``, ``"params"``), ``{"min", "centroid", "max", "max/min ratio"}``;
    ``"number_of_configurable_hparams"``, ``"search_space_size"``, and under ``"constraints"`` each
    constraint's ``{"upper_bound", "satisfiable"}``. ``is_sat`` is whether every constraint can be met (by the
    smallest subnet, or the centroid with ``use_centroid``); ``strict`` raises when one cannot.
    ``deployment`` (ModelOpt's latency service) is not supported and only logged: use
    :class:`hwnas.LatencyProfiler` through :func:`hwnas.profile`'s ``profilers``.
    """
    if deployment is not None:
        log.warning("mtn.profile: deployment=%r is ignored (hwnas profiles latency with hwnas.LatencyProfiler)",
                    deployment)
    summary = _profile(model, _dummy_for(model, dummy_input), constraints, verbose=verbose, strict=strict,
                       use_centroid=use_centroid)
    ratios = summary.ratios
    stats: dict[str, Any] = {m: {"min": lo, "centroid": mid, "max": hi, "max/min ratio": ratios[m]}
                             for m, (lo, mid, hi) in summary.metrics.items()}
    stats["number_of_configurable_hparams"] = summary.num_configurable
    stats["search_space_size"] = summary.num_subnets
    stats["constraints"] = {c.metric: {"upper_bound": c.bound, "satisfiable": c.satisfiable}
                            for c in summary.constraints}
    return summary.is_sat, stats


def _need_space(model: Any, who: str) -> ConvertedSpace:
    if not isinstance(model, ConvertedSpace):
        raise TypeError(f"{who} needs a model converted with mtn.convert (or restored with mto.restore), got a "
                        f"{type(model).__name__}; call model = mtn.convert(model, mode='autonas') first.")
    return model


def _calibrator(space: ConvertedSpace, cfg: dict[str, Any]) -> Callable[[], None]:
    """BN recalibration of the active subnet from ``forward_loop`` or ``data_loader`` (ModelOpt's config keys)."""
    forward_loop = cfg.get("forward_loop")
    loader = cfg.get("data_loader")
    collect = cfg.get("collect_func") or default_collect
    if forward_loop is None and loader is None or not bn_layers(space):
        return lambda: None
    if forward_loop is not None:
        return lambda: recalibrate_bn_with(space, forward_loop)
    batches = [collect(b) for b in first_batches(loader, int(cfg.get("max_iter_data_loader", 50)))]
    return lambda: recalibrate_bn(space, batches)


def _scorer(space: ConvertedSpace, cfg: dict[str, Any]) -> Callable[[dict[str, Any]], float]:
    score_func = cfg.get("score_func")
    if not callable(score_func):
        raise ValueError("mtn.search needs config['score_func'], a function model -> score (higher is better), e.g. "
                         "lambda model: validate(model, val_loader).")
    calibrate = _calibrator(space, cfg)
    training = space.training

    def score(sample: dict[str, Any]) -> float:
        space.apply_arch(sample)
        calibrate()
        space.train(training)
        with torch.no_grad():  # scoring builds no autograd graph
            return float(score_func(space))

    return score


def search(model: nn.Module, constraints: dict[str, Any], dummy_input: Any = None,
           config: dict[str, Any] | None = None) -> tuple[ConvertedSpace, dict[str, Any]]:
    """ModelOpt's ``mtn.search``: the best subnet that meets ``constraints``, made the model's active subnet.

    Config keys (ModelOpt's): ``score_func`` (``model -> score``, required), ``data_loader`` with
    ``collect_func`` and ``max_iter_data_loader`` (batch-norm recalibration of each candidate; default 50
    batches), or ``forward_loop`` (``model -> None``) instead, ``checkpoint`` (a file to save the search to
    and resume from), ``verbose`` (progress bar). hwnas's own: ``num_iters`` / ``max_trials`` (candidates to
    score, default 100), ``seed``, ``population_size``, ``candidate_size``, ``mutate_prob``.

    Returns:
        ``(model, state)``: the model itself with the best subnet active and its BN statistics recalibrated;
        ``state`` holds ``"best"`` (``config``, ``score``, ``metrics``), ``"constraints"`` (absolute bounds),
        ``"num_trials"``, ``"history"`` (one dict per trial) and ``"checkpoint"``.
    """
    space = _need_space(model, "mtn.search")
    cfg = dict(config or {})
    trials = int(cfg.get("num_iters", cfg.get("max_trials", 100)))
    dummy = _dummy_for(space, dummy_input)
    profilers = build_profilers(space, dummy)
    pop = int(cfg.get("population_size", max(2, min(50, trials // 4))))
    bounds = {}
    if constraints:
        from hwnas.profile.constraints import parse_constraints

        bounds = {c.metric: c.bound for c in parse_constraints(constraints, profilers)}
    strategy = cfg.get("strategy") or RegularizedEvolution(
        population_size=pop, sample_size=int(cfg.get("candidate_size", max(1, pop // 4))),
        mutation_prob=float(cfg.get("mutate_prob", 0.1)))
    if bounds and "strategy" not in cfg and isinstance(strategy, RegularizedEvolution):
        from hwnas.prune import _Seeded

        strategy = _Seeded(uniform_seeds(space, profilers, bounds), population_size=pop,
                           sample_size=strategy.sample_size, mutation_prob=strategy.mutation_prob)
    result = _run(space, None, constraints, _scorer(space, cfg), strategy=strategy, max_trials=trials,
                  seed=int(cfg.get("seed", 0)), profilers=profilers, checkpoint=cfg.get("checkpoint"),
                  progress=bool(cfg.get("verbose", True)))
    select(space, result.best_sample)
    _calibrator(space, cfg)()
    space.search_state["best"] = {"config": dict(result.best_sample), "score": result.best_score,
                                  "metrics": dict(result.best_metrics)}
    state = {"best": space.search_state["best"], "constraints": {c.metric: c.bound for c in result.constraints},
             "num_trials": len(result.history), "num_proposed": result.num_proposed,
             "history": [{"config": t.sample, "score": t.score, "metrics": t.metrics} for t in result.history],
             "checkpoint": cfg.get("checkpoint")}
    return space, state


def select(model: nn.Module, config: dict[str, Any], strict: bool = True) -> None:
    """ModelOpt's ``mtn.select``: make ``config`` (a sample: label -> value) the active subnet."""
    space = _need_space(model, "mtn.select")
    sample = {**space.max_sample(), **config} if not strict else dict(config)
    space.apply_arch(sample)
    space.search_state["active"] = dict(sample)


def sample(model: nn.Module, sample_func: Callable[[list], Any] = random.choice) -> dict[str, Any]:
    """ModelOpt's ``mtn.sample``: draw a subnet with ``sample_func`` (per label, over its choices), make it
    active and return it (``max`` / ``min`` as ``sample_func`` give the largest / smallest subnet)."""
    space = _need_space(model, "mtn.sample")
    drawn = {label: sample_func(list(values)) for label, values in space.choices().items()}
    select(space, drawn)
    return drawn


def export(model: nn.Module, strict: bool = True, calib: bool = False) -> nn.Module:
    """ModelOpt's ``mtn.export``: the active subnet as a plain model with sliced weights (restorable with
    ``mto.restore(original_model, path)`` after ``mto.save``)."""
    space = _need_space(model, "mtn.export")
    active = getattr(space, "_hwnas_active", None) or space.max_sample()
    out = export_pruned(space, active)
    return mark_pruned(out, space, active, mode=space.search_state.get("modelopt_mode"))
