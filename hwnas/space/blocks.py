"""Building blocks for spaces: conv-BN-activation, squeeze-excite, inverted residual, bottleneck.

Every argument that is a number in the usual block may be a :class:`~hwnas.space.choice.Choice` or an
expression here. Blocks are plain ``nn.Module``s made of hwnas layers, so they trace with torch.fx.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from hwnas.space.choice import is_choice, make_divisible
from hwnas.space.modules import BatchNorm2d, Conv2d

__all__ = ["ACTIVATIONS", "make_activation", "ConvBNAct", "SqueezeExcite", "InvertedResidual", "Bottleneck"]

ACTIVATIONS = {
    "relu": lambda: nn.ReLU(inplace=True),
    "relu6": lambda: nn.ReLU6(inplace=True),
    "hswish": lambda: nn.Hardswish(inplace=True),
    "silu": lambda: nn.SiLU(inplace=True),
    "gelu": nn.GELU,
    "none": nn.Identity,
}


def make_activation(name: str | None) -> nn.Module:
    """An activation module by name (``relu``, ``relu6``, ``hswish``, ``silu``, ``gelu``, ``none``)."""
    try:
        return ACTIVATIONS[name or "none"]()
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; use one of {sorted(ACTIVATIONS)}.") from None


class ConvBNAct(nn.Sequential):
    """Convolution, batch norm and an activation."""

    def __init__(self, cin: Any, cout: Any, kernel_size: Any = 3, stride: int = 1, groups: Any = 1,
                 act: str | None = "relu"):
        super().__init__(Conv2d(cin, cout, kernel_size, stride, groups=groups), BatchNorm2d(cout),
                         make_activation(act))


def _same(a: Any, b: Any) -> bool:
    """True when two channel values are the same for every sample (same object or equal constants)."""
    return a is b or (not is_choice(a) and not is_choice(b) and a == b)


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation (Hu et al. 2018) with a hard-sigmoid gate, as in MobileNetV3.

    Args:
        channels: channels of the input (may be a choice or expression).
        reduction: the bottleneck is ``make_divisible(channels / reduction, divisor)``.
    """

    def __init__(self, channels: Any, reduction: int = 4, divisor: int = 8):
        super().__init__()
        mid = make_divisible(channels / reduction, divisor)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce = Conv2d(channels, mid, 1, bias=True)
        self.act = nn.ReLU(inplace=True)
        self.expand = Conv2d(mid, channels, 1, bias=True)
        self.gate = nn.Hardsigmoid(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.expand(self.act(self.reduce(self.pool(x)))))


class InvertedResidual(nn.Module):
    """MobileNetV2/V3 inverted residual (Sandler et al. 2018; Howard et al. 2019).

    1x1 expansion to ``make_divisible(cin * expand, 8)`` channels (skipped when ``expand`` is the
    constant 1), depthwise ``kernel_size`` convolution, optional squeeze-excite, 1x1 projection; a
    residual add when the stride is 1 and the input and output channels are the same value.
    """

    def __init__(self, cin: Any, cout: Any, kernel_size: Any = 3, expand: Any = 6, stride: int = 1,
                 act: str = "relu6", se: bool = False):
        super().__init__()
        hidden = cin if expand == 1 else make_divisible(cin * expand, 8)
        layers: list[nn.Module] = []
        if hidden is not cin:
            layers.append(ConvBNAct(cin, hidden, 1, act=act))
        layers.append(ConvBNAct(hidden, hidden, kernel_size, stride, groups=hidden, act=act))
        if se:
            layers.append(SqueezeExcite(hidden))
        layers += [Conv2d(hidden, cout, 1), BatchNorm2d(cout)]
        self.body = nn.Sequential(*layers)
        self.use_residual = stride == 1 and _same(cin, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        return x + out if self.use_residual else out


class Bottleneck(nn.Module):
    """ResNet bottleneck (He et al. 2016): 1x1 reduce to ``mid``, 3x3, 1x1 to ``cout``, residual.

    A 1x1 projection (with batch norm) joins the shortcut when the stride or the channels change.
    """

    def __init__(self, cin: Any, mid: Any, cout: Any, stride: int = 1):
        super().__init__()
        self.body = nn.Sequential(
            ConvBNAct(cin, mid, 1), ConvBNAct(mid, mid, 3, stride), Conv2d(mid, cout, 1), BatchNorm2d(cout)
        )
        self.shortcut = None if stride == 1 and _same(cin, cout) else \
            nn.Sequential(Conv2d(cin, cout, 1, stride), BatchNorm2d(cout))
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.shortcut is None else self.shortcut(x)
        return self.act(self.body(x) + identity)
