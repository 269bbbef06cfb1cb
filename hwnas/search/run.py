"""The multi-trial search loop: constraints, strategies, executors, checkpoints and history.

``run(space, dummy_input, constraints, score_func)`` (also reachable as ``hwnas.search(...)``, which
exports the best subnet too) proposes samples with a strategy, rejects those that break a hard
constraint *before* evaluating them (a profiler lookup of a few microseconds), scores the rest with
``score_func(sample)``, and returns the best. Guarantees:

- **No returned sample breaks a hard constraint.** Every trial in the history is re-checked with the
  profilers at the end; if no candidate met the constraints, :class:`~hwnas.search.errors.SearchError`
  or :class:`~hwnas.search.errors.RejectionError` says how many were tried and what each constraint
  rejected.
- **Reproducible.** Everything random draws from one ``numpy.random.Generator`` seeded by ``seed``;
  the same seed, strategy and scores give the same history. Batches of ``executor.max_workers`` trials
  are proposed together and their results are told back in order, so parallel runs are reproducible too.
- **Resumable.** With ``checkpoint=path``, the history is written atomically (at most every
  ``checkpoint_every_s`` seconds, at the end, and when the loop stops on an error or Ctrl-C). Running
  the same call again replays the recorded trials through the strategy (checking that it proposes
  exactly the recorded samples) and carries on: no trial is lost or repeated, and the final history
  equals that of an uninterrupted run. A checkpoint is read with care: every number is checked and every
  trial's profiled metrics are recomputed and must match (see :func:`~hwnas.search.checkpoint.replay`); an advisory lock
  (``<checkpoint>.lock``, the ``filelock`` package) refuses a second search on the same file while the
  first runs; temporary files left by a killed write are removed on the next start.
- **No subnet is scored twice.** A proposal whose canonical sample (the same subnet, see
  :func:`~hwnas.space.space.canonical_sample`) was scored before is recorded as a trial that reuses that
  score (:attr:`Trial.repeat_of`), without calling ``score_func``.
- **Non-finite metrics break constraints.** A profiler returning NaN or infinity for a sample rejects it
  (logged once, naming the profiler and the sample, and counted in rejection messages).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from hwnas.graph.trace import build_graph
from hwnas.io import remove_stale_temps
from hwnas.profile.constraints import Constraint, parse_constraints
from hwnas.profile.profilers import FlopsProfiler, NumParamsProfiler
from hwnas.search.checkpoint import Saver, jsonable, lock, replay
from hwnas.search.errors import RejectionError, SearchError
from hwnas.search.executor import make_executor, timed_call
from hwnas.search.history import History, Trial
from hwnas.search.strategies import (
    Chain,
    ConstraintFilter,
    RegularizedEvolution,
    Strategy,
    has_cost_model,
    profiler_range,
)
from hwnas.space.space import as_rng, canonicalizer, collect_choices

__all__ = ["SearchResult", "run", "build_profilers"]

logger = logging.getLogger(__name__)

@dataclass
class SearchResult:
    """What a search returns.

    Attributes:
        best_sample: the best sample found (meets every hard constraint).
        best_score: its score.
        best_metrics: its profiled metrics (``flops``, ``params``, ``latency_ms``, ...).
        history: every evaluated trial, in order.
        constraints: the hard constraints as absolute bounds.
        strategy: the strategy, as text (with the filters and constraints it ran with).
        num_proposed: candidates proposed, including those rejected before evaluation.
        num_rejected: candidates rejected by filters or constraints.
        stopped: ``"max_trials"`` or ``"exhausted"`` (the strategy had nothing left, e.g. a finished grid).
        resumed_trials: trials replayed from the checkpoint rather than evaluated in this call.
        subnet: the best subnet as a plain ``nn.Module`` when an ``export_fn`` was given
            (``hwnas.search(...)`` passes ``hwnas.export``), else ``None``.
    """

    best_sample: dict[str, Any]
    best_score: float
    best_metrics: dict[str, float]
    history: History
    constraints: list[Constraint]
    strategy: str
    num_proposed: int
    num_rejected: int
    stopped: str
    resumed_trials: int = 0
    subnet: Any = field(default=None, repr=False)

    def pareto_front(self, x: str, y: str = "score", x_mode: str = "min", y_mode: str = "max") -> list[Trial]:
        """See :meth:`History.pareto_front`."""
        return self.history.pareto_front(x, y, x_mode, y_mode)


def build_profilers(space: Any, dummy_input: Any, profilers: dict[str, Any] | None = None) -> dict[str, Any]:
    """``{"flops": FlopsProfiler, "params": NumParamsProfiler}`` over one traced graph, plus ``profilers``.

    Profilers given by the caller win over the defaults of the same name. With ``dummy_input=None``
    only the given profilers are used.
    """
    out: dict[str, Any] = {}
    if dummy_input is not None:
        graph = build_graph(space, dummy_input)
        out = {"flops": FlopsProfiler(space, graph=graph), "params": NumParamsProfiler(space, graph=graph)}
    elif not profilers:
        raise ValueError("search needs dummy_input (e.g. torch.randn(1, 3, 224, 224)) to build the FLOPs and "
                         "params profilers, or profilers={'metric': profiler, ...}.")
    out.update(profilers or {})
    return out


def _check_profilers(profilers: dict[str, Any], labels: set[str]) -> None:
    for metric, prof in profilers.items():
        if not callable(getattr(prof, "profile", None)):
            raise TypeError(f"profilers[{metric!r}] is a {type(prof).__name__} without .profile(sample) -> float; "
                            "pass a hwnas profiler (FlopsProfiler, NumParamsProfiler, LatencyProfiler, ...).")
        theirs = getattr(prof, "labels", None)
        if theirs is not None and set(theirs) != labels:
            raise ValueError(f"profilers[{metric!r}] was built for a space with labels {sorted(theirs)[:6]}..., not "
                             f"this one ({sorted(labels)[:6]}...); build it from the same space.")


def _parse_constraints(constraints: Any, profs: dict[str, Any], choices: dict[str, tuple]) -> list[Constraint]:
    """Absolute bounds; profilers without a cost model get a probed range, and an estimate never refuses."""
    if not isinstance(constraints, dict):
        return parse_constraints(constraints, profs)
    out: list[Constraint] = []
    for metric, spec in constraints.items():
        prof = profs.get(metric)
        if prof is None or has_cost_model(prof):
            out += parse_constraints({metric: spec}, profs)
            continue
        lo, mid, hi = profiler_range(prof, choices)
        (c,) = parse_constraints({metric: spec}, profs, {metric: (lo, mid, hi)}, check_feasible=False)
        if c.bound < lo:
            logger.warning("constraint %s=%r (= %.6g) is below every %s seen when probing the space (smallest "
                           "%.6g); the search may find no candidate that meets it.", metric, spec, c.bound, metric, lo)
        out.append(c)
    return out


def _parse_score(out: Any, index: int, sample: dict[str, Any]) -> tuple[float, dict[str, float]]:
    extra: dict[str, float] = {}
    if isinstance(out, dict):
        if "score" not in out:
            raise TypeError(f"score_func returned a dict without a 'score' key for trial {index} (keys "
                            f"{sorted(out)}); return a number, or a dict with 'score' and other numbers.")
        extra = {}
        for k, v in out.items():
            if k == "score":
                continue
            try:
                extra[str(k)] = float(v)
            except (TypeError, ValueError):
                raise TypeError(f"score_func returned {k!r}: {v!r} ({type(v).__name__}) next to 'score' for trial "
                                f"{index}; every value of the dict must be a number.") from None
        out = out["score"]
    try:
        score = float(out)
    except (TypeError, ValueError):
        raise TypeError(f"score_func returned {out!r} ({type(out).__name__}) for trial {index}; return a number "
                        "(e.g. validation accuracy) or a dict with a 'score' key.") from None
    if not math.isfinite(score):
        logger.warning("score_func returned %s for trial %d (%s); it counts as the worst score.", score, index,
                       json.dumps(sample))
        score = float("nan")
    return score, extra


def _canonical_of(space: Any) -> Callable[[dict[str, Any]], dict[str, Any]] | None:
    """The space's canonical form of a sample (for strategies that enumerate), if its structure is readable."""
    try:
        return canonicalizer(space)
    except (TypeError, ValueError, AttributeError):  # pragma: no cover - an exotic user space
        return None


def _checks(strategy: Any, max_trials: Any, mode: str, score_func: Any, checkpoint_every_s: float) -> None:
    if not callable(score_func):
        raise TypeError(f"score_func must be a function sample -> score, got {type(score_func).__name__}.")
    if not isinstance(strategy, Strategy):
        raise TypeError(f"strategy must be a hwnas.search strategy (Random(), Grid(), RegularizedEvolution(), "
                        f"Chain(...)), got {type(strategy).__name__}.")
    if isinstance(max_trials, bool) or not isinstance(max_trials, (int, np.integer)) or max_trials < 1:
        raise ValueError(f"max_trials must be an int >= 1, got {max_trials!r}.")
    if mode not in ("max", "min"):
        raise ValueError(f"mode must be 'max' (higher score is better) or 'min', got {mode!r}.")
    if isinstance(checkpoint_every_s, bool) or not isinstance(checkpoint_every_s, (int, float)) or \
            not checkpoint_every_s >= 0:
        raise ValueError(f"checkpoint_every_s must be a number >= 0, got {checkpoint_every_s!r}.")


def run(space: Any, dummy_input: Any, constraints: dict[str, Any] | None, score_func: Callable[[dict], Any], *,
        strategy: Strategy | None = None, max_trials: int = 100, seed: int = 0,
        profilers: dict[str, Any] | None = None, checkpoint: str | os.PathLike | None = None,
        checkpoint_every_s: float = 1.0, history_csv: str | os.PathLike | None = None, executor: Any = None,
        address: str | None = None, mode: str = "max", progress: bool = True,
        export_fn: Callable[[Any, dict], Any] | None = None) -> SearchResult:
    """Search ``space`` for the best-scoring sample that meets every hard constraint.

    Args:
        space: the model space.
        dummy_input: an input tensor, used to build the FLOPs and params profilers (``None`` when
            ``profilers`` covers every metric).
        constraints: upper bounds per metric, e.g. ``{"flops": "60%", "params": 3e6, "latency_ms": 4.0}``
            (a percentage is of the largest subnet). Checked before any work: an unknown metric, a
            malformed value or a bound below the smallest subnet raises ``ConstraintError``.
        score_func: ``sample -> score`` (a number, or a dict with ``"score"`` and other numbers to record).
        strategy: default ``RegularizedEvolution()``; filters compose with :class:`Chain`.
        max_trials: trials to run (a resumed search counts the recorded ones; a checkpoint holding more than
            ``max_trials`` returns its first ``max_trials`` trials and is left unchanged on disk).
        seed: an int >= 0 that seeds the one ``numpy.random.Generator`` everything draws from.
        profilers: extra profilers by metric name (``{"latency_ms": LatencyProfiler(...)}``); every
            profiler's metric is recorded for each trial. Any object with ``profile(sample) -> float``
            works; without a hwnas cost model its range (for percentages and the feasibility check) is
            estimated by probing the space (:func:`~hwnas.search.strategies.profiler_range`), so a bound
            below that estimate is only warned about.
        checkpoint: a JSON file to save the search state to and resume from when it exists.
        checkpoint_every_s: least seconds between checkpoint writes (0: after every batch).
        history_csv: write the history as CSV here (whenever the checkpoint is written, and at the end).
        executor: ``None`` (in-process), ``"ray"`` (with ``address``), a ``concurrent.futures`` pool, or
            an object with ``map(fn, samples)`` and ``max_workers``.
        address: the Ray cluster address for ``executor="ray"`` (``None``: a local instance).
        mode: ``"max"`` when a higher score is better, ``"min"`` when lower is.
        progress: show a tqdm progress bar.
        export_fn: ``(space, sample) -> nn.Module`` to build :attr:`SearchResult.subnet`.

    Returns:
        A :class:`SearchResult`.

    Raises:
        ConstraintError: a malformed or impossible constraint (before any evaluation).
        RejectionError: filters/constraints rejected ``max_rejects`` candidates in a row.
        SearchError: no candidate met the constraints.
        CheckpointError: ``checkpoint`` holds another search's state, was edited or damaged (a field that is
            missing or not a valid number, metrics that the profilers do not reproduce), or another process
            is using it.
        ValueError: ``seed`` is not an int >= 0, or another argument is malformed.

    Example:
        >>> import torch, hwnas
        >>> space = hwnas.spaces.create("digits")
        >>> flops = hwnas.FlopsProfiler(space, torch.randn(1, 1, 8, 8))
        >>> from hwnas.search import RegularizedEvolution, run
        >>> result = run(space, torch.randn(1, 1, 8, 8), {"flops": "50%"},
        ...              lambda s: -flops.profile(s) / 1e6 + s["s2.width"] / 16,
        ...              strategy=RegularizedEvolution(10, 3), max_trials=30, progress=False)
        >>> result.best_metrics["flops"] <= 0.5 * 1947776
        True
    """
    strategy = RegularizedEvolution() if strategy is None else strategy
    _checks(strategy, max_trials, mode, score_func, checkpoint_every_s)
    rng = as_rng(seed, "seed")
    choice_objs = collect_choices(space)
    choices = {label: tuple(c.values) for label, c in choice_objs.items()}
    profs = build_profilers(space, dummy_input, profilers)
    _check_profilers(profs, set(choices))
    parsed = _parse_constraints(constraints, profs, choices)
    guard = ConstraintFilter(parsed, profs)
    chain = Chain(strategy, guard) if not isinstance(strategy, Chain) else \
        Chain(strategy, guard, max_rejects=strategy.max_rejects)
    canonical = _canonical_of(space)
    chain.bind(choices, rng, canonical=canonical)
    sign = 1.0 if mode == "max" else -1.0
    config = {"space": type(space).__name__, "choices": jsonable({k: list(v) for k, v in choices.items()}),
              "seed": int(seed) if isinstance(seed, (int, np.integer)) else None, "mode": mode,
              "strategy": repr(chain), "metrics": sorted(profs)}
    path = Path(checkpoint) if checkpoint is not None else None
    held = lock(path) if path is not None else None
    try:
        if path is not None:
            for stale in remove_stale_temps(path):
                logger.info("removed %s, left by a write to %s that was killed", stale, path)
        if history_csv is not None:
            remove_stale_temps(history_csv, min_age_s=60.0)
        history = History()
        truncated = False
        if path is not None and path.exists():
            truncated = replay(path, config, chain, choices, history, sign, profs, max_trials)
        loop = _Loop(chain, profs, score_func, canonical, sign, mode, history, executor, address, progress)
        saver = Saver(None if truncated else path, history_csv, config, chain, history)
        with logging_redirect_tqdm() if progress else contextlib.nullcontext():  # log lines above the bar
            stopped = loop.run(max_trials, saver, checkpoint_every_s, path)
    finally:
        if held is not None:
            held.release()
    return _finish(space, history, parsed, guard, chain, mode, stopped, loop.resumed, export_fn)


def _sample_key(sample: dict[str, Any]) -> str:
    return json.dumps(sample, sort_keys=True, default=repr)


class _Loop:
    """The propose / evaluate / tell loop, with a score cache so that no subnet is scored twice."""

    def __init__(self, chain: Chain, profs: dict[str, Any], score_func: Callable, canonical: Callable | None,
                 sign: float, mode: str, history: History, executor: Any, address: str | None, progress: bool):
        self.chain, self.profs, self.score_func, self.sign, self.mode = chain, profs, score_func, sign, mode
        self.canonical = canonical or (lambda s: s)
        self.history, self.executor, self.address, self.progress = history, executor, address, progress
        self.resumed = len(history)
        self.cache: dict[str, Trial] = {}
        for t in history:
            self.cache.setdefault(self.key(t.sample), t if t.repeat_of < 0 else history[t.repeat_of])

    def key(self, sample: dict[str, Any]) -> str:
        return _sample_key(self.canonical(sample))

    def run(self, max_trials: int, save: Callable[[], None], checkpoint_every_s: float, path: Path | None) -> str:
        chain, history, sign = self.chain, self.history, self.sign
        ex = make_executor(self.executor, self.address)
        owned = ex is not self.executor
        work = functools.partial(timed_call, self.score_func)
        batch_size = max(1, int(ex.max_workers))
        metrics = list(self.profs.items())
        stopped = "max_trials"
        best = history.best(self.mode)
        bar = tqdm(total=max_trials, initial=min(self.resumed, max_trials), desc="search", unit="trial",
                   disable=not self.progress, dynamic_ncols=True)
        last_save = time.monotonic()
        try:
            batch_no = history[-1].batch + 1 if len(history) else 0
            while len(history) < max_trials:
                n = min(batch_size, max_trials - len(history))
                proposals = []
                for _ in range(n):
                    try:
                        s = chain.propose()
                    except RejectionError as e:
                        if not len(history):
                            raise
                        where = f"; they are saved in the checkpoint {str(path)!r}" if path is not None else ""
                        raise RejectionError(f"{e} This happened after {len(history)} evaluated trials{where}.") \
                            from None
                    if s is None:
                        break
                    proposals.append(s)
                if not proposals:
                    stopped = "exhausted"
                    break
                keys = [self.key(s) for s in proposals]
                fresh: dict[str, dict[str, Any]] = {}  # first proposal of each subnet not scored before
                for k, s in zip(keys, proposals):
                    if k not in self.cache and k not in fresh:
                        fresh[k] = s
                outputs = dict(zip(fresh, ex.map(work, list(fresh.values()))))
                # parse the whole batch before recording any of it: a checkpoint only ever holds whole batches
                parsed = {k: _parse_score(outputs[k][0], len(history) + keys.index(k), fresh[k]) for k in fresh}
                for k, s in zip(keys, proposals):
                    first = self.cache.get(k)
                    if first is not None:  # this subnet was scored before: reuse its score, do not call score_func
                        trial = Trial(len(history), s, first.score, {m: float(p.profile(s)) for m, p in metrics},
                                      0.0, batch_no, dict(first.extra), repeat_of=first.index)
                    else:
                        score, extra = parsed[k]
                        trial = Trial(len(history), s, score, {m: float(p.profile(s)) for m, p in metrics},
                                      outputs[k][1], batch_no, extra)
                        self.cache[k] = trial
                    history._append(trial)
                    chain.tell(s, sign * trial.score)
                    if math.isfinite(trial.score) and (best is None or sign * trial.score > sign * best.score):
                        best = trial
                batch_no += 1
                bar.update(len(proposals))
                if best is not None:
                    bar.set_postfix(best=f"{best.score:.4g}", rejected=chain.num_rejected_, refresh=False)
                if time.monotonic() - last_save >= checkpoint_every_s:
                    save()
                    last_save = time.monotonic()
                if len(proposals) < n:
                    stopped = "exhausted"
                    break
        finally:
            bar.close()
            if owned:
                ex.close()
            save()  # also when stopped by an error or Ctrl-C: no finished trial is lost
        return stopped


def _finish(space: Any, history: History, parsed: list[Constraint], guard: ConstraintFilter, chain: Chain,
            mode: str, stopped: str, resumed: int, export_fn: Callable | None) -> SearchResult:
    for t in history:  # the guarantee, checked independently of how candidates were filtered
        broken = guard.violations(t.sample)
        if broken:
            raise SearchError(f"internal error: trial {t.index} breaks hard constraints ({'; '.join(broken)}); "
                              "please report this with the search settings.")
    best = history.best(mode)
    if best is None:
        if not len(history):
            raise SearchError(
                f"no candidate met the constraints: {chain.num_proposed_:,} proposed by {chain!r}, all rejected ("
                + " | ".join(f.describe() for f in chain.filters) + "). Loosen the constraints or widen the filters.")
        raise SearchError(f"all {len(history)} trials scored NaN or inf; score_func must return finite numbers.")
    subnet = export_fn(space, best.sample) if export_fn is not None else None
    logger.info("search: best score %.6g after %d trials (%d proposed, %d rejected)", best.score, len(history),
                chain.num_proposed_, chain.num_rejected_)
    return SearchResult(dict(best.sample), best.score, dict(best.metrics), history, parsed, repr(chain),
                        chain.num_proposed_, chain.num_rejected_, stopped, resumed, subnet)
