"""Small training utilities shared by one-shot training, evaluation and fine-tuning.

- :class:`TensorBatches`: a re-iterable, seeded mini-batch loader over in-memory tensors.
- :func:`recalibrate_bn`: reset batch-norm statistics and re-estimate them for the active subnet.
- :func:`evaluate_accuracy`: top-1 accuracy of a model over batches.
- :func:`finetune`: SGD with a cosine schedule, for an exported subnet (a plain ``nn.Module``).

Example:
    >>> import torch
    >>> x, y = torch.randn(10, 3), torch.arange(10) % 2
    >>> loader = TensorBatches(x, y, batch_size=4, shuffle=True, seed=0)
    >>> [len(b[0]) for b in loader]
    [4, 4, 2]
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from hwnas.space.modules import BatchNorm2d as HwnasBatchNorm2d
from hwnas.space.space import as_rng

__all__ = ["TensorBatches", "recalibrate_bn", "evaluate_accuracy", "finetune", "bn_layers", "first_batches"]

logger = logging.getLogger(__name__)


class TensorBatches:
    """Mini-batches of ``(x[i], y[i])`` over in-memory tensors; each pass reshuffles from a seeded generator.

    Args:
        x, y: tensors with the same first dimension.
        batch_size: samples per batch (the last batch may be smaller unless ``drop_last``).
        shuffle: reshuffle at every pass.
        seed: seed or ``numpy.random.Generator`` for the shuffles.
        drop_last: leave out a last, smaller batch.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int = 128, shuffle: bool = False,
                 seed: np.random.Generator | int | None = 0, drop_last: bool = False):
        if len(x) != len(y):
            raise ValueError(f"TensorBatches: x has {len(x)} rows but y has {len(y)}; give one label per input.")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"TensorBatches: batch_size must be an int >= 1, got {batch_size!r}.")
        self.x, self.y, self.batch_size, self.shuffle, self.drop_last = x, y, batch_size, shuffle, drop_last
        self.rng = as_rng(seed)

    def __len__(self) -> int:
        n = len(self.x)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self):
        n = len(self.x)
        order = torch.from_numpy(self.rng.permutation(n)) if self.shuffle else torch.arange(n)
        for b in range(len(self)):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            yield self.x[idx], self.y[idx]


def _inputs(batch: Any) -> Any:
    return batch[0] if isinstance(batch, (tuple, list)) else batch


def first_batches(loader: Iterable, num_batches: int) -> list[Any]:
    """The first ``num_batches`` batches of ``loader`` as a list (to reuse them identically)."""
    out = []
    for batch in loader:
        if len(out) >= num_batches:
            break
        out.append(batch)
    if not out:
        raise ValueError("the loader yielded no batches; give it at least one (x, y) batch.")
    return out


def bn_layers(model: nn.Module) -> list[nn.Module]:
    """Every batch-norm layer of ``model`` (torch's and hwnas's)."""
    return [m for m in model.modules() if isinstance(m, (nn.modules.batchnorm._BatchNorm, HwnasBatchNorm2d))]


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: Iterable, num_batches: int | None = None) -> nn.Module:
    """Re-estimate batch-norm running statistics for the model as it computes now (e.g. one subnet).

    Shared-weight supernets mix the statistics of every subnet trained; before a subnet is evaluated its
    statistics must be its own (Yu et al. 2019; Cai et al. 2020). This resets every BN layer's running
    mean and variance and sets them to the exact average over the batches' statistics (momentum
    ``1/(k+1)`` at batch ``k``), running the model in train mode for BN only, without gradients.

    Args:
        model: a supernet with the subnet applied (``space.apply_arch(sample)``) or any module.
        batches: ``(x, y)`` batches or input tensors.
        num_batches: use at most this many batches (default: all).

    Returns:
        ``model``, with its previous train/eval mode restored.
    """
    layers = bn_layers(model)
    if not layers:
        return model
    modes = {m: m.training for m in model.modules()}
    momenta = [m.momentum for m in layers]
    for m in layers:
        m.running_mean.zero_()
        m.running_var.fill_(1.0)
        m.num_batches_tracked.zero_()
    model.eval()
    for m in layers:
        m.train()
    seen = 0
    try:
        for k, batch in enumerate(batches):
            if num_batches is not None and k >= num_batches:
                break
            for m in layers:
                m.momentum = 1.0 / (k + 1)
            model(_inputs(batch))
            seen += 1
    finally:
        for m, mom in zip(layers, momenta):
            m.momentum = mom
        for m, mode in modes.items():
            m.training = mode
    if not seen:
        raise ValueError("recalibrate_bn got no batches; pass the training loader (or a few of its batches).")
    return model


@torch.no_grad()
def evaluate_accuracy(model: Callable[[torch.Tensor], torch.Tensor], batches: Iterable) -> float:
    """Top-1 accuracy (0..1) of ``model`` over ``(x, y)`` batches, in eval mode (the mode is restored)."""
    was = getattr(model, "training", None)
    if was is not None:
        model.eval()
    correct = total = 0
    try:
        for x, y in batches:
            correct += int((model(x).argmax(1) == y).sum())
            total += len(y)
    finally:
        if was is not None:
            model.train(was)
    if not total:
        raise ValueError("evaluate_accuracy got no samples; pass a non-empty loader of (x, y) batches.")
    return correct / total


def finetune(model: nn.Module, loader: Iterable, epochs: int = 5, lr: float = 0.01, momentum: float = 0.9,
             weight_decay: float = 5e-5, loss_fn: Callable | None = None, progress: bool = True,
             desc: str = "fine-tune") -> nn.Module:
    """Train ``model`` (e.g. an exported subnet) with SGD, Nesterov momentum and a cosine schedule.

    Args:
        model: a plain ``nn.Module``.
        loader: re-iterable ``(x, y)`` batches (one pass per epoch).
        epochs: passes over ``loader``.
        lr: the initial learning rate (annealed to 0 by a cosine over all steps).
        momentum, weight_decay: SGD settings.
        loss_fn: ``(logits, y) -> loss`` (default: cross entropy).
        progress: show a tqdm bar over epochs.
        desc: the bar's label.

    Returns:
        ``model``, trained, in eval mode.
    """
    if not isinstance(epochs, int) or epochs < 0:
        raise ValueError(f"finetune: epochs must be an int >= 0, got {epochs!r}.")
    loss_fn = loss_fn or F.cross_entropy
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=momentum > 0, weight_decay=weight_decay)
    steps = max(1, epochs * len(loader)) if hasattr(loader, "__len__") else None
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps) if steps else None
    model.train()
    bar = tqdm(range(epochs), desc=desc, unit="epoch", disable=not progress, leave=False)
    for _ in bar:
        total, n = 0.0, 0
        for x, y in loader:
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            total, n = total + float(loss.detach()) * len(y), n + len(y)
        bar.set_postfix(loss=f"{total / max(n, 1):.4f}", refresh=False)
    model.eval()
    return model
