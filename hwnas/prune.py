"""``hwnas.prune``: a trained model in, a smaller plain model with sliced weights out, within constraints.

Pruning is search without training: the model is converted (:func:`hwnas.convert`) with its channels
sorted by importance, so every subnet keeps the most important channels of each layer; candidates that meet
the constraints are proposed by a search strategy, each is made the supernet's active subnet, its batch-norm
statistics are re-estimated on a few batches of ``data``, and it is scored; the best is exported as a plain
``nn.Module``.

Two modes, named after ModelOpt's:

- ``"fastnas"``: channels sorted by the L1 norms of their filters; candidates scored by
  ``score_func(model)`` (e.g. validation accuracy of the model as it computes now).
- ``"gradnas"``: channels sorted by gradient scores, ``|w * dL/dw|`` summed over a few backward passes of
  ``loss_func`` (first-order Taylor importance, :func:`gradnas_scores`); candidates scored by ``score_func``
  when given, else by minus the mean of ``loss_func`` over the calibration batches.

Example:
    >>> import torch, hwnas
    >>> from hwnas import zoo
    >>> torch.manual_seed(0) and None
    >>> model = zoo.create("resnet18", num_classes=10).eval()
    >>> x = torch.randn(8, 3, 32, 32)
    >>> data = [(x, torch.arange(8) % 10)]
    >>> pruned = hwnas.prune(model, x[:1], {"params": "50%"}, data, score_func=lambda m: -float(m(x).var()),
    ...                      max_trials=4, progress=False)
    >>> sum(p.numel() for p in pruned.parameters()) <= 0.5 * sum(p.numel() for p in model.parameters())
    True
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hwnas.convert.api import as_model, convert
from hwnas.graph.inputs import positional_inputs
from hwnas.profile.blocks import fvcore_available
from hwnas.profile.constraints import parse_constraints
from hwnas.prune_io import export_pruned, mark_pruned, save_pruned
from hwnas.search import RegularizedEvolution, SearchError, build_profilers
from hwnas.search import run as run_search
from hwnas.search.training import bn_layers, first_batches, recalibrate_bn

__all__ = ["prune", "gradnas_scores", "default_collect", "uniform_seeds", "sensitivity_seed", "recalibrate_bn_with",
           "PRUNE_MODES"]

log = logging.getLogger(__name__)

PRUNE_MODES = ("fastnas", "gradnas")


def default_collect(batch: Any) -> Any:
    """The model's input in a batch: the first item of a tuple/list batch, else the batch itself."""
    return batch[0] if isinstance(batch, (tuple, list)) else batch


def _call(model: nn.Module, inputs: Any) -> Any:
    if isinstance(inputs, dict):
        return model(**inputs)
    if isinstance(inputs, tuple):
        return model(*inputs)
    return model(inputs)


@torch.no_grad()
def recalibrate_bn_with(model: nn.Module, forward_loop: Callable[[nn.Module], Any]) -> nn.Module:
    """Re-estimate batch-norm statistics by running ``forward_loop(model)`` (which feeds the model its data):
    statistics are reset and averaged over every batch it runs (cumulative average), other layers stay in
    their mode, and the modes and momenta are restored afterwards."""
    layers = bn_layers(model)
    modes = {m: m.training for m in model.modules()}
    momenta = [m.momentum for m in layers]
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average over the batches forward_loop runs
    model.eval()
    for m in layers:
        m.train()
    try:
        forward_loop(model)
    finally:
        for m, mom in zip(layers, momenta):
            m.momentum = mom
        for m, mode in modes.items():
            m.training = mode
    return model


def gradnas_scores(model: nn.Module, batches: Iterable, loss_func: Callable[[Any, Any], torch.Tensor],
                   num_batches: int = 4, collect_func: Callable[[Any], Any] = default_collect) -> dict[str, torch.Tensor]:
    """Per-element gradient scores ``sum_b |w * dL_b/dw|`` of every parameter over a few batches.

    The model is not changed (a copy runs the backward passes, in the model's train/eval mode).

    Args:
        model: the trained model.
        batches: an iterable of batches (``(x, y)`` or inputs).
        loss_func: ``(output, batch) -> scalar loss`` (ModelOpt's GradNAS signature).
        num_batches: backward passes to sum over.
        collect_func: ``batch -> model input`` (a tensor, a tuple of positional inputs, or a dict of keywords).

    Returns:
        ``{parameter name: non-negative scores of the parameter's shape}``, for :func:`hwnas.convert`'s
        ``importance``.
    """
    if not callable(loss_func):
        raise TypeError(f"gradnas needs loss_func(output, batch) -> loss, got {type(loss_func).__name__}; pass e.g. "
                        "lambda out, batch: torch.nn.functional.cross_entropy(out, batch[1]).")
    work = copy.deepcopy(model)
    params = dict(work.named_parameters())
    scores = {name: torch.zeros_like(p, dtype=torch.float64) for name, p in params.items()}
    seen = 0
    for batch in first_batches(batches, num_batches):
        work.zero_grad(set_to_none=True)
        loss = loss_func(_call(work, collect_func(batch)), batch)
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            raise TypeError(f"loss_func must return a scalar tensor, got {type(loss).__name__} "
                            f"{tuple(getattr(loss, 'shape', ()))}.")
        loss.backward()
        for name, p in params.items():
            if p.grad is not None:
                scores[name] += (p.grad.detach() * p.detach()).abs().to(torch.float64)
        seen += 1
    log.info("gradnas: channel scores from %d backward passes", seen)
    return scores


class _Seeded(RegularizedEvolution):
    """Regularized evolution whose first random proposals are given samples (uniformly shrunk subnets that
    fill the budget), so that the search starts where good pruned models are."""

    def __init__(self, seeds: list[dict[str, Any]], **kwargs: Any):
        super().__init__(**kwargs)
        self.seeds = [dict(s) for s in seeds]

    def _start(self) -> None:
        super()._start()
        self.seeds_left_ = list(self.seeds)

    def _random_sample(self) -> dict[str, Any]:
        return self.seeds_left_.pop(0) if getattr(self, "seeds_left_", None) else super()._random_sample()

    def __repr__(self) -> str:
        return f"Seeded({len(self.seeds)} uniform subnets, {super().__repr__()})"


def uniform_seeds(space: nn.Module, profilers: dict[str, Any], bounds: dict[str, float], steps: int = 40,
                  count: int = 3) -> list[dict[str, Any]]:
    """Subnets with every width at about the same fraction of its largest value, the widest ones that meet
    ``bounds``: the largest fraction on a grid of ``steps``, then the ``count - 1`` grid points below it."""
    choices = space.choices()

    def at(f: float) -> dict[str, Any]:
        return {k: min(v, key=lambda c: abs(c - f * max(v)) if isinstance(c, (int, float)) else 0)
                for k, v in choices.items()}

    def fits(s: dict[str, Any]) -> bool:
        return all(profilers[m].profile(s) <= b for m, b in bounds.items() if m in profilers)

    fractions = [i / steps for i in range(steps, 0, -1)]
    out: list[dict[str, Any]] = []
    for f in fractions:
        s = at(f)
        if fits(s) and s not in out:
            out.append(s)
            if len(out) >= count:
                break
    return out


def sensitivity_seed(space: nn.Module, profilers: dict[str, Any], bounds: dict[str, float],
                     score: Callable[[dict[str, Any]], float], probes: tuple[float, ...] = (0.25, 0.5, 0.75)
                     ) -> dict[str, Any] | None:
    """A subnet that meets ``bounds`` by shrinking the least sensitive widths first (FastNAS's idea).

    Each label is scored alone at about ``probes`` of its largest value (the others at their largest):
    ``len(probes)`` scores per label. Then, from the largest subnet, the label whose next probed value loses the
    least score per cost saved (summed over the bounds, each relative to its bound) is lowered, until every bound
    holds. Returns ``None`` when even the probed values cannot meet the bounds.
    """
    top = space.max_sample()
    choices = space.choices()
    base = score(top)
    options: dict[str, list[Any]] = {}
    drop: dict[tuple[str, Any], float] = {}
    for label, values in choices.items():
        if len(values) < 2 or not all(isinstance(v, (int, float)) for v in values):
            continue
        probed = sorted({min(values, key=lambda c, f=f: abs(c - f * max(values))) for f in probes} - {top[label]})
        for v in probed:
            drop[(label, v)] = base - score({**top, label: v})
        drop[(label, top[label])] = 0.0
        options[label] = sorted(probed + [top[label]])

    def cost(s: dict[str, Any]) -> float:
        return sum(profilers[m].profile(s) / b for m, b in bounds.items() if m in profilers)

    def fits(s: dict[str, Any]) -> bool:
        return all(profilers[m].profile(s) <= b for m, b in bounds.items() if m in profilers)

    current = dict(top)
    while not fits(current):
        best, best_rate = None, None
        now = cost(current)
        for label, opts in options.items():
            i = opts.index(current[label])
            if i == 0:
                continue
            cand = {**current, label: opts[i - 1]}
            saved = now - cost(cand)
            if saved <= 0:
                continue
            rate = (drop[(label, opts[i - 1])] - drop[(label, current[label])]) / saved
            if best_rate is None or rate < best_rate:
                best, best_rate = cand, rate
        if best is None:
            return None
        current = best
    log.info("prune: sensitivity seed from %d single-label scores", len(drop) - len(options))
    return current


def _checked_constraints(pruned: nn.Module, model: nn.Module, inputs: tuple, constraints: dict[str, Any],
                         bounds: dict[str, float]) -> dict[str, float]:
    """The pruned model's FLOPs (fvcore) and params (``sum(numel)``), checked against the bounds."""
    got = {"params": float(sum(p.numel() for p in pruned.parameters()))}
    if "flops" in bounds and fvcore_available():
        from fvcore.nn import FlopCountAnalysis

        fl = FlopCountAnalysis(pruned.eval(), inputs)
        fl.unsupported_ops_warnings(False)
        fl.uncalled_modules_warnings(False)
        got["flops"] = float(fl.total())
    for metric, bound in bounds.items():
        if metric in got and got[metric] > bound * (1 + 1e-9):
            raise SearchError(f"hwnas.prune: the pruned model has {metric} = {got[metric]:.6g} by an independent "
                              f"count, above the bound {bound:.6g} ({constraints[metric]!r}); this is a bug in "
                              "hwnas: please report it with the model.")
    return got


def prune(model: nn.Module, dummy_input: Any, constraints: dict[str, Any], data: Iterable | None = None,
          score_func: Callable[[nn.Module], float] | None = None, mode: str = "fastnas", *,
          loss_func: Callable[[Any, Any], torch.Tensor] | None = None,
          collect_func: Callable[[Any], Any] = default_collect, calib_batches: int = 4, grad_batches: int = 4,
          forward_loop: Callable[[nn.Module], Any] | None = None,
          max_trials: int = 50, seed: int = 0, strategy: Any = None, rules: dict[str, Any] | None = None,
          channel_ratios: Any = None, channel_divisor: int | None = None, save_dir: str | os.PathLike | None = None,
          checkpoint: str | os.PathLike | None = None, progress: bool = True, sensitivity: bool = True) -> nn.Module:
    """Prune ``model`` to a plain subnet that meets ``constraints`` (see the module docstring).

    Args:
        model: the trained model (not changed), a function returning it, or ``(function, args, kwargs)``.
        dummy_input: the input whose shape the constraints are measured at (a tensor, a tuple, or a tuple ending
            in a dict of keyword arguments).
        constraints: upper bounds, e.g. ``{"flops": "60%"}`` or ``{"params": 3e6}`` (``%`` of the model).
        data: batches for batch-norm recalibration (and GradNAS's backward passes); ``None`` skips recalibration.
        score_func: ``model -> score`` (higher is better), called with the supernet computing the candidate.
        mode: ``"fastnas"`` or ``"gradnas"``.
        loss_func: ``(output, batch) -> loss`` for ``"gradnas"``.
        collect_func: ``batch -> model input``.
        calib_batches: batches of ``data`` to recalibrate batch norms on (the same ones for every candidate).
        grad_batches: backward passes for GradNAS's scores.
        forward_loop: ``model -> None`` that runs the model over calibration data itself; replaces recalibration
            on ``data`` (:func:`recalibrate_bn_with`).
        max_trials: candidates to score.
        seed: seeds the search.
        strategy: a :mod:`hwnas.search` strategy (default: regularized evolution sized to ``max_trials``).
        rules, channel_ratios, channel_divisor: the search space (see :func:`hwnas.convert`; mode ``"fastnas"``).
        save_dir: write ``search.json`` (the resumable checkpoint), ``history.csv`` and ``pruned.pt``
            (:func:`hwnas.prune_io.save_pruned`) here.
        checkpoint: the search checkpoint file (default ``save_dir/search.json``).
        progress: show a progress bar.
        sensitivity: start the default search from :func:`sensitivity_seed` (3 extra scores per width label)
            besides the uniformly shrunk subnets.

    Returns:
        The pruned model, a plain ``nn.Module`` with sliced weights, in ``model``'s train/eval mode. Its
        attribute ``hwnas_origin`` holds the recipe (conversion, sample, metrics, score) that
        :func:`hwnas.prune_io.save_pruned` stores.

    Raises:
        ValueError: an unknown mode, or a mode without what it needs (``score_func``, ``loss_func``, ``data``).
        ConstraintError: a malformed or unreachable constraint.
        SearchError: no candidate met the constraints.
    """
    if mode not in PRUNE_MODES:
        raise ValueError(f"hwnas.prune: unknown mode {mode!r}; expected one of {list(PRUNE_MODES)}.")
    if mode == "fastnas" and score_func is None:
        raise ValueError("hwnas.prune(mode='fastnas') needs score_func(model) -> score (e.g. validation accuracy of "
                         "the model as it computes now); mode='gradnas' can score by loss_func instead.")
    if mode == "gradnas" and (loss_func is None or data is None):
        raise ValueError("hwnas.prune(mode='gradnas') needs loss_func(output, batch) -> loss and data (batches) for "
                         "its gradient scores.")
    if not isinstance(constraints, dict) or not constraints:
        raise ValueError(f"hwnas.prune needs constraints such as {{'flops': '60%'}}, got {constraints!r}.")
    model = as_model(model, "hwnas.prune")
    importance = gradnas_scores(model, data, loss_func, grad_batches, collect_func) if mode == "gradnas" else None
    space = convert(model, dummy_input, "fastnas", channel_ratios, channel_divisor, rules=rules,
                    importance=importance)
    calib = first_batches(data, calib_batches) if data is not None else []
    training = model.training

    def prepare(sample: dict[str, Any]) -> nn.Module:
        space.apply_arch(sample)
        if forward_loop is not None:
            recalibrate_bn_with(space, forward_loop)
        elif calib:
            recalibrate_bn(space, [collect_func(b) for b in calib])
        space.train(training)
        return space

    def score(sample: dict[str, Any]) -> float:
        m = prepare(sample)
        with torch.no_grad():  # scoring builds no autograd graph
            if score_func is not None:
                return float(score_func(m))
            losses = [float(loss_func(_call(m, collect_func(b)), b)) for b in calib]
        return -sum(losses) / len(losses)

    out = Path(save_dir) if save_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        checkpoint = checkpoint if checkpoint is not None else out / "search.json"
    profilers = build_profilers(space, dummy_input)
    if strategy is None:
        bounds = {c.metric: c.bound for c in parse_constraints(constraints, profilers)}
        pop = max(2, min(20, max_trials // 3))
        seeds = uniform_seeds(space, profilers, bounds)
        if sensitivity:
            seeds = [s for s in [sensitivity_seed(space, profilers, bounds, score)] if s is not None] + seeds
        strategy = _Seeded(seeds, population_size=pop,
                           sample_size=max(1, pop // 3), mutation_prob=0.15)
    result = run_search(space, None, constraints, score, strategy=strategy, max_trials=max_trials, seed=seed,
                        profilers=profilers, checkpoint=checkpoint,
                        history_csv=out / "history.csv" if out is not None else None, progress=progress)
    prepare(result.best_sample)
    pruned = export_pruned(space, result.best_sample)
    pruned.train(training)
    space.apply_arch(space.max_sample())
    inputs = positional_inputs(space, dummy_input)
    bounds = {c.metric: c.bound for c in result.constraints}
    checked = _checked_constraints(pruned, model, inputs, constraints, bounds)
    mark_pruned(pruned, space, result.best_sample, metrics=dict(result.best_metrics), score=result.best_score,
                mode=mode, checked=checked, trials=len(result.history))
    log.info("hwnas.prune(%s): best score %.6g after %d trials; %s (bounds %s)", mode, result.best_score,
             len(result.history), {k: f"{v:.4g}" for k, v in checked.items()},
             {k: f"{v:.4g}" for k, v in bounds.items()})
    if out is not None:
        save_pruned(pruned, out / "pruned.pt")
    return pruned

