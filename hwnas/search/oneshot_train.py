"""``train_oneshot``: the one entry point that trains every one-shot strategy.

Example:
    >>> import torch, hwnas
    >>> from hwnas.search import DARTS, ExpectationProfilerPenalty, TensorBatches, train_oneshot
    >>> space = hwnas.spaces.create("digits")
    >>> flops = hwnas.FlopsProfiler(space, torch.zeros(1, 1, 8, 8))
    >>> data = TensorBatches(torch.randn(32, 1, 8, 8), torch.randint(0, 10, (32,)), batch_size=16)
    >>> result = train_oneshot(space, DARTS(ExpectationProfilerPenalty(flops, "40%")), data, data, epochs=1,
    ...                        progress=False)
    >>> sorted(result.sample) == sorted(space.choices())
    True
    >>> len(result.history), sum(p.numel() for p in result.export().parameters()) > 0
    (1, True)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from hwnas.graph.subnet import export
from hwnas.search.oneshot import SubnetEvaluator
from hwnas.search.oneshot_strategies import OneShotStrategy, RandomOneShot
from hwnas.search.training import evaluate_accuracy
from hwnas.space.mixed import clear_mixed
from hwnas.space.space import as_rng

__all__ = ["train_oneshot", "OneShotResult", "OneShotEpoch"]

logger = logging.getLogger(__name__)


@dataclass
class OneShotEpoch:
    """One epoch of one-shot training.

    Attributes:
        epoch: 1-based.
        train_loss: mean training loss of the weight steps.
        val_loss: mean validation loss seen by the architecture steps (NaN without them).
        expected_cost: the penalty's cost under the architecture distribution at the epoch's end (exact for
            logits, a Monte-Carlo mean for ENAS's controller; NaN without a penalty or a distribution).
        temperature: the Gumbel temperature (NaN for other strategies).
        seconds: wall time of the epoch.
        chosen: the sample the strategy would export now (``None`` for RandomOneShot before its search).
    """

    epoch: int
    train_loss: float
    val_loss: float
    expected_cost: float
    temperature: float
    seconds: float
    chosen: dict[str, Any] | None = None


@dataclass
class OneShotResult:
    """What :func:`train_oneshot` returns.

    Attributes:
        sample: the chosen sample.
        arch_state: the architecture logits (label -> list) or the controller's state dict (as lists).
        history: one :class:`OneShotEpoch` per epoch.
        strategy: the trained strategy (its ``alpha`` or ``controller`` live on).
        space: the supernet (its weights trained; it computes ``sample`` on return).
        steps: per architecture step, what the strategy recorded (validation loss, expected cost, reward).
    """

    sample: dict[str, Any]
    arch_state: dict[str, Any]
    history: list[OneShotEpoch]
    strategy: OneShotStrategy
    space: nn.Module
    steps: list[dict[str, float]] = field(default_factory=list)

    def export(self) -> nn.Module:
        """The chosen subnet as a plain ``nn.Module`` with the supernet's weights."""
        return export(self.space, self.sample)


def _cycle(loader: Iterable):
    while True:
        n = 0
        for batch in loader:
            n += 1
            yield batch
        if not n:
            raise ValueError("train_oneshot: val_data yielded no batches.")


def train_oneshot(space: nn.Module, strategy: OneShotStrategy, train_data: Iterable, val_data: Iterable,
                  epochs: int = 5, warmup_epochs: int = 0, optimizer: torch.optim.Optimizer | None = None,
                  lr: float = 0.05, loss_fn: Callable | None = None, seed: np.random.Generator | int | None = 0,
                  progress: bool = True) -> OneShotResult:
    """Train ``space``'s weights and ``strategy``'s architecture; return the chosen sample.

    Weight steps run on ``train_data``, architecture steps on ``val_data`` (one after each weight step, the
    validation batches cycled), the data split of DARTS's bilevel problem. The first ``warmup_epochs`` train
    weights only (in the strategy's weight mode) and do not count in ``epochs``.

    Args:
        space: the supernet.
        strategy: :class:`~hwnas.search.DARTS`, :class:`~hwnas.search.GumbelDARTS`,
            :class:`~hwnas.search.ProxylessNAS`, :class:`~hwnas.search.ENAS` or :class:`~hwnas.search.RandomOneShot`.
        train_data, val_data: re-iterable ``(x, y)`` batches.
        epochs: epochs with architecture steps.
        warmup_epochs: weight-only epochs first.
        optimizer: of the weights (default SGD, ``lr``, Nesterov momentum 0.9, weight decay 3e-5, cosine-annealed).
        lr: the default optimizer's learning rate.
        loss_fn: ``(logits, y) -> loss`` (default cross entropy).
        seed: seed or generator for every draw.
        progress: show a progress bar.
    """
    if not isinstance(strategy, OneShotStrategy):
        raise TypeError(f"train_oneshot: strategy must be a one-shot strategy (DARTS(), GumbelDARTS(), ENAS(), "
                        f"ProxylessNAS(), RandomOneShot()), got {type(strategy).__name__}.")
    if not isinstance(epochs, int) or epochs < 1 or not isinstance(warmup_epochs, int) or warmup_epochs < 0:
        raise ValueError(f"train_oneshot: epochs must be an int >= 1 and warmup_epochs an int >= 0, got {epochs!r} "
                         f"and {warmup_epochs!r}.")
    rng = as_rng(seed)
    loss_fn = loss_fn or F.cross_entropy
    optimizer = optimizer or torch.optim.SGD(space.parameters(), lr=lr, momentum=0.9, nesterov=True,
                                             weight_decay=3e-5)
    strategy.setup(space, optimizer, rng, epochs, loss_fn)
    total = warmup_epochs + epochs
    sched = None
    if hasattr(train_data, "__len__"):
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(1, total * len(train_data)))
    learns_arch = type(strategy).arch_step is not OneShotStrategy.arch_step
    val_iter = _cycle(val_data)
    history: list[OneShotEpoch] = []
    steps: list[dict[str, float]] = []
    bar = tqdm(range(total), desc=f"one-shot ({type(strategy).__name__})", unit="epoch", disable=not progress,
               leave=False)
    for e in bar:
        start = time.perf_counter()
        arch_epoch = e - warmup_epochs
        strategy.start_epoch(max(0, arch_epoch))
        tl, n, vl = 0.0, 0, []
        for x, y in train_data:
            tl += strategy.weight_step(x, y) * len(y)
            n += len(y)
            if sched is not None:
                sched.step()
            if arch_epoch >= 0 and learns_arch:
                xv, yv = next(val_iter)
                rec = strategy.arch_step(xv, yv)
                rec["epoch"] = e + 1
                steps.append(rec)
                vl.append(rec.get("val_loss", float("nan")))
        if not n:
            raise ValueError("train_oneshot: train_data yielded no batches.")
        clear_mixed(space)
        chosen = None if isinstance(strategy, RandomOneShot) else strategy.export()
        tau = strategy.tau() if hasattr(strategy, "tau") else float("nan")
        history.append(OneShotEpoch(e + 1, tl / n, float(np.mean(vl)) if vl else float("nan"),
                                    strategy.expected_cost(), tau, time.perf_counter() - start, chosen))
        bar.set_postfix(loss=f"{tl / n:.3f}", refresh=False)
        logger.info("one-shot epoch %d: %s", e + 1, history[-1])
    clear_mixed(space)
    if isinstance(strategy, RandomOneShot):
        strategy.chosen_ = _spos_search(space, strategy, train_data, val_data, loss_fn, rng, progress)
    elif strategy.derive_samples:
        strategy.chosen_ = _derive(space, strategy, train_data, val_data, loss_fn, rng)
    sample = strategy.export()
    space.apply_arch(sample)
    return OneShotResult(sample, strategy.state(), history, strategy, space, steps)


def _val_loss(loss_fn: Callable) -> Callable:
    def val_loss(model: nn.Module, loader: Iterable) -> float:
        model.eval()
        tot, n = 0.0, 0
        with torch.no_grad():
            for x, y in loader:
                tot += float(loss_fn(model(x), y)) * len(y)
                n += len(y)
        return tot / max(n, 1)
    return val_loss


def _scorer(space: nn.Module, strategy: OneShotStrategy, train_data: Iterable, val_data: Iterable,
            loss_fn: Callable) -> Callable[[dict[str, Any]], float]:
    """``sample -> -penalty(val_loss, sample)`` (or validation accuracy without a penalty), with the sample's own
    batch-norm statistics."""
    metric = _val_loss(loss_fn) if strategy.penalty is not None else evaluate_accuracy
    evaluator = SubnetEvaluator(space, val_data, calib_loader=train_data, metric=metric)

    def score(sample: dict[str, Any]) -> float:
        value = evaluator(sample)
        if strategy.penalty is None:
            return value
        # the sample's own cost (an expectation penalty's profiler profiles one sample as well)
        return -float(strategy.penalty.apply(value, float(strategy.penalty.profiler.profile(sample))))
    return score


def _derive(space: nn.Module, strategy: OneShotStrategy, train_data: Iterable, val_data: Iterable,
            loss_fn: Callable, rng: np.random.Generator) -> dict[str, Any]:
    """The best-scoring of the most probable sample and ``derive_samples`` distinct samples from the learned
    distribution (ENAS's derivation, §2.2; FBNet also samples its final architectures from the distribution)."""
    samples = strategy.candidates(strategy.derive_samples, rng)
    if not samples:
        return strategy.export()
    score = _scorer(space, strategy, train_data, val_data, loss_fn)
    scored = [(score(s), i) for i, s in enumerate(samples)]
    strategy.derived_ = [(samples[i], v) for v, i in scored]
    return samples[max(scored)[1]]


def _spos_search(space: nn.Module, strategy: RandomOneShot, train_data: Iterable, val_data: Iterable,
                 loss_fn: Callable, rng: np.random.Generator, progress: bool) -> dict[str, Any]:
    """SPOS's second stage: evolution over the trained supernet, scoring ``-penalty(val_loss)`` (or accuracy)."""
    from hwnas.search.run import run
    from hwnas.search.strategies import Chain, RegularizedEvolution

    score = _scorer(space, strategy, train_data, val_data, loss_fn)
    evo = RegularizedEvolution(population_size=strategy.population_size, sample_size=strategy.sample_size,
                               mutation_prob=0.1)
    chain = Chain(evo, strategy.filter) if strategy.filter is not None else evo
    x0 = next(iter(train_data))[0][:1]  # the input shape for the search's FLOPs and params records
    result = run(space, x0, None, score, strategy=chain, max_trials=strategy.search_trials,
                 seed=int(rng.integers(2**31)), progress=progress)
    strategy.search_result_ = result
    return dict(result.best_sample)
