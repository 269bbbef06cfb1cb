"""ShuffleNetV2 (Ma et al. 2018, "ShuffleNet V2: Practical Guidelines for Efficient CNN
Architecture Design", ECCV, Table 5 and Figure 3).
"""

from __future__ import annotations

import torch
from torch import nn

from hwnas.zoo._layers import ConvNormAct, init_cnn_weights_
from hwnas.zoo._registry import register_model

__all__ = ["ShuffleNetV2", "ShuffleUnit", "channel_shuffle", "shufflenet_v2_x1_0"]


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Interleave the channels of ``groups`` equal groups (Zhang et al. 2018, ShuffleNet).

    Written with ``unflatten``/``transpose``/``flatten`` so that no tensor size is read
    in Python: it traces with ``torch.fx`` and exports to ONNX as Reshape/Transpose.

    Args:
        x: Tensor of shape ``(N, C, H, W)`` with ``C`` divisible by ``groups``.
        groups: Number of groups.

    Returns:
        Tensor of the same shape with channel ``g * (C // groups) + i`` moved to
        ``i * groups + g``.
    """
    x = torch.unflatten(x, 1, (groups, -1))
    return torch.flatten(torch.transpose(x, 1, 2), 1, 2)


class ShuffleUnit(nn.Module):
    """ShuffleNetV2 unit (Figure 3c for stride 1, Figure 3d for stride 2).

    Stride 1: split the channels in half, transform one half (1x1 -> 3x3 depthwise ->
    1x1), concatenate and shuffle. Stride 2: both branches see the whole input; the
    left branch is 3x3 depthwise (strided) -> 1x1, so the output channels double.

    Args:
        in_channels: Input channels.
        out_channels: Output channels (even).
        stride: 1 or 2.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"ShuffleUnit stride must be 1 or 2, got {stride}.")
        if stride == 1 and in_channels != out_channels:
            raise ValueError(
                f"ShuffleUnit with stride 1 keeps the width; expected in_channels == out_channels, "
                f"got {in_channels} and {out_channels}."
            )
        branch_channels = out_channels // 2
        self.stride = stride
        if stride == 2:
            self.left = nn.Sequential(
                ConvNormAct(in_channels, in_channels, 3, stride=2, groups=in_channels, act=None),
                ConvNormAct(in_channels, branch_channels, 1),
            )
        else:
            self.left = nn.Identity()
        right_in = in_channels if stride == 2 else branch_channels
        self.right = nn.Sequential(
            ConvNormAct(right_in, branch_channels, 1),
            ConvNormAct(branch_channels, branch_channels, 3, stride=stride, groups=branch_channels, act=None),
            ConvNormAct(branch_channels, branch_channels, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            left, right = torch.chunk(x, 2, dim=1)
            out = torch.cat((self.left(left), self.right(right)), dim=1)
        else:
            out = torch.cat((self.left(x), self.right(x)), dim=1)
        return channel_shuffle(out, 2)


class ShuffleNetV2(nn.Module):
    """ShuffleNetV2: 3x3 conv + max-pool stem, three stages of shuffle units, 1x1 conv, head.

    Args:
        stage_repeats: Units per stage (the paper's 4, 8, 4).
        stage_channels: Channels of the stem, the three stages and the last 1x1 conv.
        num_classes: Classifier outputs.
    """

    def __init__(
        self,
        stage_repeats: tuple[int, int, int] = (4, 8, 4),
        stage_channels: tuple[int, int, int, int, int] = (24, 116, 232, 464, 1024),
        num_classes: int = 1000,
    ) -> None:
        super().__init__()
        in_channels = stage_channels[0]
        self.stem = nn.Sequential(
            ConvNormAct(3, in_channels, 3, stride=2),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
        )
        stages: list[nn.Module] = []
        for repeats, out_channels in zip(stage_repeats, stage_channels[1:4]):
            units = [ShuffleUnit(in_channels, out_channels, 2)]
            units += [ShuffleUnit(out_channels, out_channels, 1) for _ in range(repeats - 1)]
            stages.append(nn.Sequential(*units))
            in_channels = out_channels
        self.stages = nn.Sequential(*stages)
        self.head_conv = ConvNormAct(in_channels, stage_channels[4], 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(stage_channels[4], num_classes)
        init_cnn_weights_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head_conv(self.stages(self.stem(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


@register_model("shufflenet_v2_x1_0")
def shufflenet_v2_x1_0(num_classes: int = 1000) -> ShuffleNetV2:
    """ShuffleNetV2 1.0x: 2.3M params, 146 MMACs at 224."""
    return ShuffleNetV2((4, 8, 4), (24, 116, 232, 464, 1024), num_classes=num_classes)
