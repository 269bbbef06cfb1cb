"""One-shot NAS: train a weight-sharing supernet once, then score any subnet with the shared weights.

- :class:`SupernetTrainer` trains the supernet with uniform single-path sampling (Guo et al. 2020,
  SPOS) or the *sandwich rule* (Yu & Huang 2019; Yu et al. 2020, BigNAS): every step trains the
  largest subnet, the smallest and ``num_random`` random ones, with optional *in-place distillation*:
  the others learn the largest subnet's soft predictions.
- :class:`SubnetEvaluator` scores a sample: apply it, recalibrate batch norm on a few fixed training
  batches, measure validation accuracy. It is a ``score_func`` for :func:`hwnas.search.run`.

Example:
    >>> import torch, hwnas
    >>> from hwnas.search import SupernetTrainer, SubnetEvaluator, TensorBatches
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> space = hwnas.spaces.create("digits")
    >>> data = TensorBatches(torch.randn(64, 1, 8, 8), torch.randint(0, 10, (64,)), batch_size=32)
    >>> trainer = SupernetTrainer(space, sampling="sandwich", num_random=1, seed=0).fit(data, epochs=1,
    ...                                                                                 progress=False)
    >>> score = SubnetEvaluator(space, data, calib_loader=data)(space.min_sample())
    >>> 0.0 <= score <= 1.0
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

from hwnas.search.training import evaluate_accuracy, first_batches, recalibrate_bn
from hwnas.space.space import as_rng, collect_choices

__all__ = ["SupernetTrainer", "SubnetEvaluator", "distill_loss", "random_sample"]

logger = logging.getLogger(__name__)

SAMPLING = ("sandwich", "uniform", "progressive")


def random_sample(choices: dict[str, tuple], rng: np.random.Generator) -> dict[str, Any]:
    """A uniform random sample from precomputed choices (one generator call)."""
    idx = rng.integers(0, [len(v) for v in choices.values()])
    return {lab: values[int(i)] for (lab, values), i in zip(choices.items(), idx)}


def distill_loss(student_logits: torch.Tensor, teacher_probs: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Soft cross entropy with the teacher's (detached) probabilities, times ``temperature**2`` (Hinton et al.)."""
    logp = F.log_softmax(student_logits / temperature, dim=1)
    return -(teacher_probs * logp).sum(1).mean() * temperature**2


class SupernetTrainer:
    """Train a supernet's shared weights so that every subnet works without retraining.

    Args:
        space: the supernet (a :class:`hwnas.nn.Space`).
        optimizer: a torch optimizer over ``space.parameters()`` (default: SGD, lr 0.05, Nesterov momentum 0.9,
            weight decay 3e-5).
        sampling: ``"sandwich"`` (largest + smallest + ``num_random`` random per step), ``"uniform"``
            (one random subnet per step) or ``"progressive"`` (Once-for-All's progressive shrinking: the
            epochs of :meth:`fit` are split into the phases largest, kernel, depth, width, see
            :mod:`hwnas.search.oneshot_progressive`; each step trains the largest and ``num_random`` subnets
            sampled over the labels unlocked so far, distilled from the largest).
        num_random: random subnets per sandwich step.
        distill: in-place distillation: subnets other than the largest learn from its soft predictions
            (sandwich only).
        temperature: distillation temperature.
        loss_fn: ``(logits, y) -> loss`` for the largest subnet (and all subnets without distillation).
        grad_clip: clip the gradient norm to this value (``None``: no clipping).
        cosine: anneal the learning rate to 0 with a cosine over all steps of :meth:`fit`.
        seed: seed (or generator) for subnet sampling.

    Attributes:
        losses_: mean training loss (of the largest or the sampled subnet) per epoch.
        steps_: optimizer steps taken.
    """

    def __init__(self, space: nn.Module, optimizer: torch.optim.Optimizer | None = None, sampling: str = "sandwich",
                 num_random: int = 2, distill: bool = True, temperature: float = 1.0,
                 loss_fn: Callable | None = None, grad_clip: float | None = 5.0, cosine: bool = True,
                 seed: np.random.Generator | int | None = 0):
        if sampling not in SAMPLING:
            raise ValueError(f"SupernetTrainer: sampling must be one of {SAMPLING}, got {sampling!r}.")
        if not isinstance(num_random, int) or num_random < 0:
            raise ValueError(f"SupernetTrainer: num_random must be an int >= 0, got {num_random!r}.")
        self.space, self.sampling, self.num_random = space, sampling, num_random
        self.distill, self.temperature, self.grad_clip, self.cosine = distill, temperature, grad_clip, cosine
        self.loss_fn = loss_fn or F.cross_entropy
        self.optimizer = optimizer or torch.optim.SGD(space.parameters(), lr=0.05, momentum=0.9, nesterov=True,
                                                      weight_decay=3e-5)
        self.rng = as_rng(seed)
        self.choices = {lab: tuple(c.values) for lab, c in collect_choices(space).items()}
        self.largest, self.smallest = space.max_sample(), space.min_sample()
        self.losses_: list[float] = []
        self.steps_ = 0
        self.phase_ = 0
        if sampling == "progressive":
            from hwnas.search.oneshot_progressive import progressive_phases
            self.phases = progressive_phases(space)

    def subnets_for_step(self) -> list[dict[str, Any]]:
        """The samples one step trains, the largest first under the sandwich rule."""
        if self.sampling == "uniform":
            return [random_sample(self.choices, self.rng)]
        if self.sampling == "progressive":
            unlocked = {lab for p in self.phases[: self.phase_] for lab in p}
            sub = {lab: v for lab, v in self.choices.items() if lab in unlocked}
            n = self.num_random if sub else 0
            return [self.largest, *({**self.largest, **random_sample(sub, self.rng)} for _ in range(n))]
        return [self.largest, self.smallest, *(random_sample(self.choices, self.rng) for _ in range(self.num_random))]

    def step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        """One optimizer step on one batch; returns the loss of the first subnet (the largest when sandwiching)."""
        space, opt = self.space, self.optimizer
        space.train()
        opt.zero_grad(set_to_none=True)
        teacher = None
        first = None
        for i, sample in enumerate(self.subnets_for_step()):
            space.apply_arch(sample)
            out = space(x)
            if teacher is not None:
                loss = distill_loss(out, teacher, self.temperature)
            else:
                loss = self.loss_fn(out, y)
            loss.backward()
            if i == 0:
                first = float(loss.detach())
                if self.sampling != "uniform" and self.distill:
                    teacher = F.softmax(out.detach() / self.temperature, dim=1)
        if self.grad_clip is not None:
            nn.utils.clip_grad_norm_(space.parameters(), self.grad_clip)
        opt.step()
        self.steps_ += 1
        return first

    def fit(self, loader: Iterable, epochs: int = 1, progress: bool = True) -> SupernetTrainer:
        """Train for ``epochs`` passes over ``loader`` (re-iterable ``(x, y)`` batches); returns ``self``."""
        if not isinstance(epochs, int) or epochs < 1:
            raise ValueError(f"SupernetTrainer.fit: epochs must be an int >= 1, got {epochs!r}.")
        sched = None
        if self.cosine and hasattr(loader, "__len__"):
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, max(1, epochs * len(loader)))
        bar = tqdm(range(epochs), desc=f"supernet ({self.sampling})", unit="epoch", disable=not progress, leave=False)
        for epoch in bar:
            self.phase_ = min(3, epoch * 4 // epochs) if epochs >= 4 else 3 - (epochs - 1 - epoch)
            total, n = 0.0, 0
            for x, y in loader:
                total += self.step(x, y) * len(y)
                n += len(y)
                if sched is not None:
                    sched.step()
            if not n:
                raise ValueError("SupernetTrainer.fit: the loader yielded no batches.")
            self.losses_.append(total / n)
            bar.set_postfix(loss=f"{self.losses_[-1]:.4f}", refresh=False)
            logger.info("supernet epoch %d: loss %.4f", epoch + 1, self.losses_[-1])
        self.space.apply_arch(self.largest)
        return self


class SubnetEvaluator:
    """Score a sample with the supernet's shared weights: BN recalibration, then validation accuracy.

    The recalibration batches are taken once from ``calib_loader`` and reused for every sample, so a
    sample's score does not depend on when it is evaluated. The evaluator changes the supernet's active
    subnet and BN statistics: do not train or evaluate the supernet from another thread meanwhile.

    Args:
        space: the trained supernet.
        val_loader: re-iterable ``(x, y)`` validation batches.
        calib_loader: ``(x, y)`` batches for BN recalibration (usually training data; default ``val_loader``).
        calib_batches: how many batches to recalibrate on.
        metric: ``(model, val_loader) -> float`` (default: top-1 accuracy).
    """

    def __init__(self, space: nn.Module, val_loader: Iterable, calib_loader: Iterable | None = None,
                 calib_batches: int = 4, metric: Callable[[Any, Iterable], float] | None = None):
        self.space, self.val_loader = space, val_loader
        self.calib = first_batches(calib_loader if calib_loader is not None else val_loader, calib_batches)
        self.metric = metric or evaluate_accuracy

    def prepare(self, sample: dict[str, Any]) -> nn.Module:
        """Apply ``sample`` and recalibrate BN; returns the supernet computing that subnet."""
        self.space.apply_arch(sample)
        recalibrate_bn(self.space, self.calib)
        return self.space

    def __call__(self, sample: dict[str, Any]) -> float:
        """The sample's validation metric (higher is better)."""
        return float(self.metric(self.prepare(sample), self.val_loader))
