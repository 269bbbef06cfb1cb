r"""Differentiable architecture search over labels: architecture logits, a hardware penalty, ``export_best``.

Each label gets a vector of architecture logits :math:`\alpha_\ell`; the architecture distribution is
:math:`p_\ell = \mathrm{softmax}(\alpha_\ell)`, independent across labels. Training alternates, as in
DARTS's first-order bilevel scheme (Liu et al. 2019) and ProxylessNAS (Cai et al. 2019):

- a **weight step** on a training batch, with a subnet drawn from :math:`p` (path sampling, so only one
  subnet's activations live in memory);
- an **architecture step** on a validation batch that minimises :math:`E_p[L_{val}]` plus the
  hardware penalty. hwnas's dynamic layers compute one subnet at a time (channel and kernel choices are
  slices, not a weighted sum of candidate ops), so the gradient of :math:`E_p[L_{val}]` is the REINFORCE
  estimate of ProxylessNAS's §3.2.2, :math:`(L_{val} - b)\nabla \log p(\text{sample})` with a moving
  baseline :math:`b`, while the penalty's gradient is **exact**:
  :class:`~hwnas.search.penalty.ExpectationProfilerPenalty` contracts the cost tables with :math:`p`.

:meth:`DifferentiableTrainer.export_best` returns the arg-max sample.

Example:
    >>> import torch, hwnas
    >>> from hwnas.search import DifferentiableTrainer, ExpectationProfilerPenalty, TensorBatches
    >>> space = hwnas.spaces.create("digits")
    >>> flops = hwnas.FlopsProfiler(space, torch.randn(1, 1, 8, 8))
    >>> data = TensorBatches(torch.randn(32, 1, 8, 8), torch.randint(0, 10, (32,)), batch_size=16)
    >>> trainer = DifferentiableTrainer(space, ExpectationProfilerPenalty(flops, "30%", scale=1.0), seed=0)
    >>> trainer.fit(data, data, epochs=1, progress=False).export_best()["s2.width"] in (32, 48, 64)
    True
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from hwnas.search.oneshot_strategies import _Logits
from hwnas.search.penalty import ExpectationProfilerPenalty
from hwnas.space.space import as_rng

__all__ = ["DifferentiableTrainer"]

logger = logging.getLogger(__name__)


class DifferentiableTrainer(_Logits):
    """Learn architecture logits per label jointly with the supernet's weights.

    It is a one-shot strategy with the logits, their Adam optimizer and :meth:`probs` of the others
    (:class:`~hwnas.search.DARTS`, :class:`~hwnas.search.ProxylessNAS`), bound to ``space`` at construction; it
    trains with its own :meth:`fit` or with :func:`~hwnas.search.train_oneshot`.

    Args:
        space: the supernet.
        penalty: an :class:`ExpectationProfilerPenalty` on the expected hardware cost (``None``: accuracy only).
        optimizer: optimizer of the weights (default: SGD, lr 0.05, Nesterov momentum 0.9, weight decay 3e-5).
        arch_lr: Adam learning rate of the architecture logits.
        loss_fn: ``(logits, y) -> loss``.
        baseline_decay: decay of the REINFORCE moving-average baseline.
        seed: seed or generator for sampling subnets from the distribution.

    Attributes:
        alpha: label -> logits tensor (``requires_grad``).
        history_: per architecture step: validation loss, expected cost, penalised objective.
    """

    why_not_other = "Its gradient must reach the logits; use ExpectationProfilerPenalty(profiler, baseline)."

    def __init__(self, space: nn.Module, penalty: ExpectationProfilerPenalty | None = None,
                 optimizer: torch.optim.Optimizer | None = None, arch_lr: float = 0.05,
                 loss_fn: Callable | None = None, baseline_decay: float = 0.9,
                 seed: np.random.Generator | int | None = 0):
        super().__init__(penalty, None, arch_lr=arch_lr, arch_weight_decay=0.0)
        if not 0.0 <= baseline_decay < 1.0:
            raise ValueError(f"DifferentiableTrainer: baseline_decay must be in [0, 1), got {baseline_decay!r}.")
        self.baseline_decay = baseline_decay
        optimizer = optimizer or torch.optim.SGD(space.parameters(), lr=0.05, momentum=0.9, nesterov=True,
                                                 weight_decay=3e-5)
        self.setup(space, optimizer, as_rng(seed), 1, loss_fn or F.cross_entropy)

    def _setup(self) -> None:
        super()._setup()
        self.baseline_: float | None = None
        self.history_: list[dict[str, float]] = []

    def sample(self) -> tuple[dict[str, Any], dict[str, int]]:
        """A sample drawn from the current distribution, and its choice indices."""
        idx = {}
        with torch.no_grad():
            for lab, p in self.probs().items():
                q = p.double().numpy()
                idx[lab] = int(self.rng.choice(len(q), p=q / q.sum()))
        return {lab: self.choices[lab][i] for lab, i in idx.items()}, idx

    def weight_step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        """Train the weights of one subnet drawn from the distribution."""
        sample, _ = self.sample()
        self.space.train()
        self.space.apply_arch(sample)
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss_fn(self.space(x), y)
        loss.backward()
        nn.utils.clip_grad_norm_(self.space.parameters(), 5.0)
        self.optimizer.step()
        return float(loss.detach())

    def arch_step(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        """Update the logits: REINFORCE on the validation loss plus the exact penalty gradient."""
        sample, idx = self.sample()
        self.space.apply_arch(sample)
        self.space.train()  # batch statistics, as the weights were trained with
        with torch.no_grad():
            val_loss = float(self.loss_fn(self.space(x), y))
        b = val_loss if self.baseline_ is None else self.baseline_
        logp = sum(torch.log_softmax(self.alpha[lab], 0)[i] for lab, i in idx.items())
        # value = the sampled loss (an unbiased estimate of E[L]); gradient = (L - b) * grad log p
        objective = val_loss + (val_loss - b) * (logp - logp.detach())
        expected = float("nan")
        if self.penalty is not None:
            objective = self.penalty(objective, self.probs())
            expected = float(self.penalty.last_cost_)
        self.arch_optimizer.zero_grad(set_to_none=True)
        objective.backward()
        self.arch_optimizer.step()
        d = self.baseline_decay
        self.baseline_ = val_loss if self.baseline_ is None else d * self.baseline_ + (1 - d) * val_loss
        record = {"val_loss": val_loss, "expected_cost": expected, "objective": float(objective.detach())}
        self.history_.append(record)
        return record

    def fit(self, train_loader: Iterable, val_loader: Iterable, epochs: int = 1, warmup_epochs: int = 0,
            progress: bool = True) -> DifferentiableTrainer:
        """Alternate weight and architecture steps; the first ``warmup_epochs`` train weights only.

        Validation batches are cycled alongside the training batches. Returns ``self``.
        """
        if not isinstance(epochs, int) or epochs < 1 or not isinstance(warmup_epochs, int) or warmup_epochs < 0:
            raise ValueError(f"DifferentiableTrainer.fit: epochs must be an int >= 1 and warmup_epochs an int >= 0, "
                             f"got {epochs!r} and {warmup_epochs!r}.")
        bar = tqdm(range(warmup_epochs + epochs), desc="differentiable search", unit="epoch", disable=not progress,
                   leave=False)
        for epoch in bar:
            val_iter = iter(val_loader)
            for x, y in train_loader:
                self.weight_step(x, y)
                if epoch < warmup_epochs:
                    continue
                try:
                    xv, yv = next(val_iter)
                except StopIteration:
                    val_iter = iter(val_loader)
                    xv, yv = next(val_iter)
                self.arch_step(xv, yv)
            if self.history_:
                bar.set_postfix(val_loss=f"{self.history_[-1]['val_loss']:.3f}", refresh=False)
        self.space.apply_arch(self.export_best())
        return self

    def export_best(self) -> dict[str, Any]:
        """The arg-max sample: each label's most probable value."""
        return {lab: self.choices[lab][int(torch.argmax(a.detach()))] for lab, a in self.alpha.items()}
