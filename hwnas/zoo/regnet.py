"""RegNetX-400MF (Radosavovic et al. 2020, "Designing Network Design Spaces", CVPR).

Block widths come from the paper's quantised linear parameterisation (Section 3.3):
``u_j = w_0 + w_a * j`` for ``j < depth``, ``s_j = round(log(u_j / w_0) / log(w_m))``,
``w_j = round_8(w_0 * w_m ** s_j)``; consecutive equal widths form a stage. Stage widths
are then made divisible by the group width (rounding to the nearest multiple, halves up).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from hwnas.zoo._layers import ConvNormAct, init_cnn_weights_, make_divisible
from hwnas.zoo._registry import register_model

__all__ = ["RegNet", "RegNetParams", "XBlock", "regnet_x_400mf"]


@dataclass(frozen=True)
class RegNetParams:
    """The RegNet design-space parameters of one model.

    Attributes:
        depth: Total number of blocks ``d``.
        w_0: Initial width.
        w_a: Width slope.
        w_m: Width multiplier between stages.
        group_width: Channels per group of the 3x3 conv ``g``.
        bottleneck_ratio: ``b`` (1.0 for RegNetX).
    """

    depth: int
    w_0: int
    w_a: float
    w_m: float
    group_width: int
    bottleneck_ratio: float = 1.0

    def stages(self) -> list[tuple[int, int, int]]:
        """Return ``(width, depth, group_width)`` for each stage.

        Example:
            >>> RegNetParams(22, 24, 24.48, 2.54, 16).stages()
            [(32, 1, 16), (64, 2, 16), (160, 7, 16), (400, 12, 16)]
        """
        widths: list[int] = []
        for j in range(self.depth):
            u = self.w_0 + self.w_a * j
            s = round(math.log(u / self.w_0) / math.log(self.w_m))
            widths.append(int(round(self.w_0 * self.w_m**s / 8) * 8))
        stage_widths: list[int] = []
        stage_depths: list[int] = []
        for w in widths:
            if stage_widths and stage_widths[-1] == w:
                stage_depths[-1] += 1
            else:
                stage_widths.append(w)
                stage_depths.append(1)
        out: list[tuple[int, int, int]] = []
        for w, d in zip(stage_widths, stage_depths):
            w_bot = int(w * self.bottleneck_ratio)
            g = min(self.group_width, w_bot)
            w_bot = make_divisible(w_bot, g)
            out.append((int(w_bot / self.bottleneck_ratio), d, g))
        return out


class XBlock(nn.Module):
    """RegNetX residual bottleneck block with a grouped 3x3 conv.

    1x1 conv -> 3x3 grouped conv (strided) -> 1x1 conv, each with BN (ReLU on the first
    two), plus an identity or 1x1-conv projection shortcut, then ReLU.

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        stride: Stride of the 3x3 conv.
        group_width: Channels per group of the 3x3 conv.
        bottleneck_ratio: Width of the inner convs relative to ``out_channels``.
    """

    def __init__(
        self, in_channels: int, out_channels: int, stride: int, group_width: int, bottleneck_ratio: float = 1.0
    ) -> None:
        super().__init__()
        width = int(round(out_channels * bottleneck_ratio))
        self.conv1 = ConvNormAct(in_channels, width, 1)
        self.conv2 = ConvNormAct(width, width, 3, stride=stride, groups=width // group_width)
        self.conv3 = ConvNormAct(width, out_channels, 1, act=None)
        if stride == 1 and in_channels == out_channels:
            self.shortcut: nn.Module = nn.Identity()
        else:
            self.shortcut = ConvNormAct(in_channels, out_channels, 1, stride=stride, act=None)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv3(self.conv2(self.conv1(x))) + self.shortcut(x))


class RegNet(nn.Module):
    """RegNet: 3x3 stride-2 stem (32 channels), stages of X blocks, global pool, linear head.

    The first block of every stage has stride 2.

    Args:
        params: Design-space parameters.
        num_classes: Classifier outputs.
        stem_channels: Channels of the stem conv.
    """

    def __init__(self, params: RegNetParams, num_classes: int = 1000, stem_channels: int = 32) -> None:
        super().__init__()
        self.stem = ConvNormAct(3, stem_channels, 3, stride=2)
        stages: list[nn.Module] = []
        in_channels = stem_channels
        for width, depth, group_width in params.stages():
            blocks = [
                XBlock(in_channels if i == 0 else width, width, 2 if i == 0 else 1, group_width, params.bottleneck_ratio)
                for i in range(depth)
            ]
            stages.append(nn.Sequential(*blocks))
            in_channels = width
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_channels, num_classes)
        init_cnn_weights_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x))
        return self.fc(torch.flatten(self.pool(x), 1))


@register_model("regnet_x_400mf")
def regnet_x_400mf(num_classes: int = 1000) -> RegNet:
    """RegNetX-400MF (d=22, w_0=24, w_a=24.48, w_m=2.54, g=16): 5.5M params, 400 MMACs at 224."""
    return RegNet(RegNetParams(depth=22, w_0=24, w_a=24.48, w_m=2.54, group_width=16), num_classes=num_classes)
