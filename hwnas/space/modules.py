"""Weight-sharing (dynamic) layers and structural choices.

Every layer here owns the weights of its largest configuration; under a sample it computes with the
active slice, and :meth:`HwnasModule.export` copies that slice into a plain ``torch.nn`` layer (the idea
of Once-for-All's dynamic layers, Cai et al. 2020). Which sample is active is set by
:meth:`hwnas.nn.Space.apply_arch`; before that, every layer runs at its largest configuration.

Channel counts are declared on both sides (``in_channels`` and ``out_channels`` may each be an int, a
:class:`Choice` or an expression); symbolic shape inference checks that the declared input channels
match what actually flows in, so export never has to run the model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hwnas.space.choice import Choice, ChoiceError, ChoiceExpr, evaluate, is_choice, leaf_choices, value_range

__all__ = ["HwnasModule", "Conv2d", "BatchNorm2d", "Linear", "LayerChoice", "Repeat"]


def _largest(value: Any) -> Any:
    """``value`` at the largest value of every label it depends on."""
    return evaluate(value, {c.label: max(c.values) for c in leaf_choices(value)})


class HwnasModule(nn.Module):
    """Base of every hwnas layer with choices: holds the active sample and resolves values under it."""

    _hwnas_mixed: Any = None

    def __init__(self) -> None:
        super().__init__()
        self._hwnas_sample: dict[str, Any] | None = None
        self._hwnas_mixed: Any = None  # a hwnas.space.mixed.MixedState while a one-shot strategy relaxes choices

    def choice_values(self) -> list[Any]:
        """The choice-valued settings of this layer (used to collect the space's labels)."""
        return []

    def active(self, value: Any) -> Any:
        """``value`` under the active sample (or at its largest before any sample is applied)."""
        if self._hwnas_sample is None:
            return _largest(value)
        return evaluate(value, self._hwnas_sample)

    def export(self, sample: dict[str, Any]) -> nn.Module:  # pragma: no cover - abstract
        raise NotImplementedError


def _copy(dst: torch.Tensor, src: torch.Tensor) -> None:
    with torch.no_grad():
        dst.copy_(src)


class Conv2d(HwnasModule):
    """A 2-D convolution whose channels and (square, odd) kernel size may be choices.

    Args:
        in_channels: input channels (int, :class:`Choice` or expression); must match the input.
        out_channels: output channels.
        kernel_size: odd int or choice of odd ints; smaller kernels use the centre of the largest.
        stride: int.
        padding: int, or ``None`` for "same" padding ``dilation * (k - 1) // 2`` that follows the kernel.
        dilation: int.
        groups: int, choice or expression; ``groups=in_channels`` (the same value) is depthwise.
        bias: whether the layer has a bias.
    """

    def __init__(self, in_channels: Any, out_channels: Any, kernel_size: Any = 3, stride: int = 1,
                 padding: int | None = None, dilation: int = 1, groups: Any = 1, bias: bool = False):
        super().__init__()
        for k in value_range(kernel_size):
            if not isinstance(k, int) or k < 1:
                raise ChoiceError(f"Conv2d kernel_size must be positive ints, got {value_range(kernel_size)!r}.")
        if padding is None and any(k % 2 == 0 for k in value_range(kernel_size)):
            raise ChoiceError(
                f"Conv2d kernel_size {value_range(kernel_size)!r} has an even size; 'same' padding (padding=None) "
                "needs odd kernels: use odd sizes or give an int padding."
            )
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.stride, self.padding, self.dilation, self.groups = stride, padding, dilation, groups
        max_k = max(value_range(kernel_size))
        per_group = max(value_range(_div(in_channels, groups)))
        self.weight = nn.Parameter(torch.empty(max(value_range(out_channels)), per_group, max_k, max_k))
        nn.init.kaiming_normal_(self.weight, mode="fan_out")
        self.bias = nn.Parameter(torch.zeros(max(value_range(out_channels)))) if bias else None

    def choice_values(self) -> list[Any]:
        return [self.in_channels, self.out_channels, self.kernel_size, self.groups]

    def padding_for(self, k: Any) -> Any:
        return self.dilation * (k - 1) // 2 if self.padding is None else self.padding

    def _slice(self, cin: int, cout: int, groups: int, k: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        start = (self.weight.shape[-1] - k) // 2
        w = self.weight[:cout, : cin // groups, start:start + k, start:start + k]
        return w, (self.bias[:cout] if self.bias is not None else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._hwnas_mixed is not None:
            return self._hwnas_mixed.conv(self, x)
        k, groups = self.active(self.kernel_size), self.active(self.groups)
        w, b = self._slice(x.shape[1], self.active(self.out_channels), groups, k)
        return F.conv2d(x, w, b, self.stride, self.padding_for(k), self.dilation, groups)

    def export(self, sample: dict[str, Any]) -> nn.Conv2d:
        cin, cout = evaluate(self.in_channels, sample), evaluate(self.out_channels, sample)
        k, groups = evaluate(self.kernel_size, sample), evaluate(self.groups, sample)
        out = nn.Conv2d(cin, cout, k, self.stride, self.padding_for(k), self.dilation, groups, self.bias is not None)
        w, b = self._slice(cin, cout, groups, k)
        _copy(out.weight, w)
        if b is not None:
            _copy(out.bias, b)
        return out


def _div(a: Any, b: Any) -> Any:
    if is_choice(a) or is_choice(b):
        return ChoiceExpr(lambda x, y: x // y, a, b)
    return a // b


class BatchNorm2d(HwnasModule):
    """Batch normalisation over a choice of channel counts (the first ``C`` channels are used)."""

    def __init__(self, num_features: Any, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__()
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        c = max(value_range(num_features))
        self.weight = nn.Parameter(torch.ones(c))
        self.bias = nn.Parameter(torch.zeros(c))
        self.register_buffer("running_mean", torch.zeros(c))
        self.register_buffer("running_var", torch.ones(c))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def choice_values(self) -> list[Any]:
        return [self.num_features]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._hwnas_mixed is not None:
            return self._hwnas_mixed.batch_norm(self, x)
        c = x.shape[1]
        if self.training:
            self.num_batches_tracked += 1
        return F.batch_norm(x, self.running_mean[:c], self.running_var[:c], self.weight[:c], self.bias[:c],
                            self.training, self.momentum, self.eps)

    def export(self, sample: dict[str, Any]) -> nn.BatchNorm2d:
        c = evaluate(self.num_features, sample)
        out = nn.BatchNorm2d(c, eps=self.eps, momentum=self.momentum)
        for name in ("weight", "bias", "running_mean", "running_var"):
            _copy(getattr(out, name), getattr(self, name)[:c])
        _copy(out.num_batches_tracked, self.num_batches_tracked)
        return out


class Linear(HwnasModule):
    """A fully connected layer over a choice of input and output features."""

    def __init__(self, in_features: Any, out_features: Any, bias: bool = True):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        fo, fi = max(value_range(out_features)), max(value_range(in_features))
        self.weight = nn.Parameter(torch.empty(fo, fi))
        nn.init.normal_(self.weight, 0, 0.01)
        self.bias = nn.Parameter(torch.zeros(fo)) if bias else None

    def choice_values(self) -> list[Any]:
        return [self.in_features, self.out_features]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._hwnas_mixed is not None:
            return self._hwnas_mixed.linear(self, x)
        fo = self.active(self.out_features)
        b = self.bias[:fo] if self.bias is not None else None
        return F.linear(x, self.weight[:fo, : x.shape[-1]], b)

    def export(self, sample: dict[str, Any]) -> nn.Linear:
        fi, fo = evaluate(self.in_features, sample), evaluate(self.out_features, sample)
        out = nn.Linear(fi, fo, bias=self.bias is not None)
        _copy(out.weight, self.weight[:fo, :fi])
        if self.bias is not None:
            _copy(out.bias, self.bias[:fo])
        return out


class LayerChoice(HwnasModule):
    """One of several candidate modules, chosen per sample under ``label``.

    Args:
        candidates: a list (sample values are the indices 0..n-1) or a dict (sample values are its keys).
        label: the decision's name.
    """

    def __init__(self, candidates: Iterable[nn.Module] | dict[str, nn.Module], label: str):
        super().__init__()
        if isinstance(candidates, dict):
            keys, mods = list(candidates), list(candidates.values())
        else:
            mods = list(candidates)
            keys = list(range(len(mods)))
        if not mods:
            raise ChoiceError(f"LayerChoice {label!r} has no candidates; give at least one module.")
        self.candidates = nn.ModuleList(mods)
        self.choice = Choice(keys, label=label)
        self.label = label

    def choice_values(self) -> list[Any]:
        return [self.choice]

    def index(self, value: Any) -> int:
        return self.choice.values.index(value)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if self._hwnas_mixed is not None:
            return self._hwnas_mixed.layer_choice(self, *args, **kwargs)
        return self.candidates[self.index(self.active(self.choice))](*args, **kwargs)


class Repeat(HwnasModule):
    """A sequence of blocks of which the first ``depth`` run (``depth`` may be a choice).

    Args:
        blocks: a function ``i -> nn.Module`` called for i = 0 .. max depth - 1, or a list of modules.
        depth: int or :class:`Choice` of ints between 0 and the number of blocks.
    """

    def __init__(self, blocks: Callable[[int], nn.Module] | Iterable[nn.Module], depth: Any):
        super().__init__()
        depths = value_range(depth)
        if any(not isinstance(d, int) or d < 0 for d in depths):
            raise ChoiceError(f"Repeat depth must be non-negative ints, got {depths!r}.")
        mods = [blocks(i) for i in range(max(depths))] if callable(blocks) else list(blocks)
        if len(mods) < max(depths):
            raise ChoiceError(f"Repeat has {len(mods)} blocks but depth can be {max(depths)}; give more blocks.")
        self.blocks = nn.ModuleList(mods)
        self.depth = depth

    def choice_values(self) -> list[Any]:
        return [self.depth]

    def forward(self, x: Any) -> Any:
        if self._hwnas_mixed is not None:
            return self._hwnas_mixed.repeat(self, x)
        for block in self.blocks[: self.active(self.depth)]:
            x = block(x)
        return x
