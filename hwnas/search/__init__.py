"""Hardware-aware search: constraints, strategies, filters, penalties, one-shot and differentiable training.

The function ``hwnas.search(space, dummy_input, constraints, score_func, ...)`` (:func:`hwnas.api.search`) runs a
multi-trial search and exports the best subnet (it is :func:`run` with ``export_fn=hwnas.export``); this
package holds the parts, imported by name (``from hwnas.search import Random``; ``hwnas.search`` itself is
the function):

- strategies: :class:`Random`, :class:`Grid`, :class:`RegularizedEvolution`, composed with filters as
  ``Chain(RegularizedEvolution(...), RangeProfilerFilter(flops, min="20%", max="60%"), Filter(fn))``;
- history and results: :class:`History`, :class:`Trial`, :class:`SearchResult`;
- executors: in-process (default), ``concurrent.futures`` pools, :class:`RayExecutor`;
- penalties: :class:`SampleProfilerPenalty`, :class:`ExpectationProfilerPenalty`;
- one-shot: :class:`SupernetTrainer` (uniform / sandwich, in-place distillation), :class:`SubnetEvaluator`,
  :func:`recalibrate_bn`, :func:`finetune`; differentiable: :class:`DifferentiableTrainer`;
- one-shot strategies over mixed operations: :class:`DARTS`, :class:`GumbelDARTS`, :class:`ProxylessNAS`,
  :class:`ENAS`, :class:`RandomOneShot`, trained by :func:`train_oneshot` (see docs/oneshot.md).

Example:
    >>> import torch, hwnas
    >>> from hwnas.search import Random
    >>> space = hwnas.spaces.create("digits")
    >>> x = torch.randn(1, 1, 8, 8)
    >>> result = hwnas.search(space, x, {"params": "40%"}, lambda s: s["s2.width"] + s["s1.width"],
    ...                       strategy=Random(), max_trials=20, seed=0, progress=False)
    >>> sum(p.numel() for p in result.subnet.parameters()) == result.best_metrics["params"]
    True
"""

from hwnas.profile.constraints import Constraint, ConstraintError
from hwnas.search.differentiable import DifferentiableTrainer
from hwnas.search.errors import CheckpointError, RejectionError, SearchError
from hwnas.search.executor import FuturesExecutor, InProcessExecutor, RayExecutor, make_executor
from hwnas.search.feasible import FeasibleSampler
from hwnas.search.history import History, Trial, read_history_csv
from hwnas.search.oneshot import SubnetEvaluator, SupernetTrainer, distill_loss
from hwnas.search.oneshot_modes import TemperatureSchedule
from hwnas.search.oneshot_strategies import (
    DARTS,
    ENAS,
    GumbelDARTS,
    OneShotStrategy,
    ProxylessNAS,
    RandomOneShot,
)
from hwnas.search.oneshot_train import OneShotEpoch, OneShotResult, train_oneshot
from hwnas.search.penalty import ExpectationProfilerPenalty, SampleProfilerPenalty
from hwnas.search.run import SearchResult, build_profilers, run
from hwnas.search.strategies import (
    Chain,
    ConstraintFilter,
    Filter,
    Grid,
    Random,
    RangeProfilerFilter,
    RegularizedEvolution,
    Strategy,
)
from hwnas.search.strategies_extra import Evolution, PolicyBasedRL
from hwnas.search.training import TensorBatches, evaluate_accuracy, finetune, recalibrate_bn

__all__ = [
    "Chain", "CheckpointError", "Constraint", "ConstraintError", "ConstraintFilter", "DifferentiableTrainer",
    "ExpectationProfilerPenalty", "FeasibleSampler", "Filter", "FuturesExecutor", "Grid", "History", "InProcessExecutor", "Random",
    "RangeProfilerFilter", "RayExecutor", "RegularizedEvolution", "RejectionError", "SampleProfilerPenalty",
    "SearchError", "SearchResult", "Strategy", "SubnetEvaluator", "SupernetTrainer", "TensorBatches", "Trial",
    "build_profilers", "distill_loss", "evaluate_accuracy", "finetune", "make_executor", "read_history_csv",
    "recalibrate_bn", "run",
    "DARTS", "ENAS", "GumbelDARTS", "OneShotEpoch", "OneShotResult", "OneShotStrategy", "ProxylessNAS",
    "RandomOneShot", "TemperatureSchedule", "train_oneshot", "Evolution", "PolicyBasedRL",
]
