"""ResNet (He et al. 2016, "Deep Residual Learning for Image Recognition", CVPR).

The ImageNet variants of Table 1 of the paper, with the stride-2 convolution of each
bottleneck on the 3x3 conv (the common "ResNet v1.5" placement) and 1x1 projection
shortcuts (option B) only where the shape changes.
"""

from __future__ import annotations

import torch
from torch import nn

from hwnas.zoo._layers import ConvNormAct, init_cnn_weights_, relu
from hwnas.zoo._registry import register_model

__all__ = ["BasicBlock", "Bottleneck", "ResNet", "resnet18", "resnet50"]


def _shortcut(in_channels: int, out_channels: int, stride: int) -> nn.Module:
    """Identity when shapes match, else a strided 1x1 conv + BN projection."""
    if stride == 1 and in_channels == out_channels:
        return nn.Identity()
    return ConvNormAct(in_channels, out_channels, 1, stride=stride, act=None)


class BasicBlock(nn.Module):
    """Two 3x3 convs with an identity/projection shortcut (ResNet-18/34).

    Args:
        in_channels: Input channels.
        width: Channels of both 3x3 convs (and of the output).
        stride: Stride of the first 3x3 conv.
    """

    expansion = 1

    def __init__(self, in_channels: int, width: int, stride: int = 1) -> None:
        super().__init__()
        out_channels = width * self.expansion
        self.conv1 = ConvNormAct(in_channels, width, 3, stride=stride)
        self.conv2 = ConvNormAct(width, out_channels, 3, act=None)
        self.shortcut = _shortcut(in_channels, out_channels, stride)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv2(self.conv1(x)) + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 (strided) -> 1x1 expand (x4), with a shortcut (ResNet-50+).

    Args:
        in_channels: Input channels.
        width: Channels of the 3x3 conv; the output has ``4 * width`` channels.
        stride: Stride of the 3x3 conv.
    """

    expansion = 4

    def __init__(self, in_channels: int, width: int, stride: int = 1) -> None:
        super().__init__()
        out_channels = width * self.expansion
        self.conv1 = ConvNormAct(in_channels, width, 1)
        self.conv2 = ConvNormAct(width, width, 3, stride=stride)
        self.conv3 = ConvNormAct(width, out_channels, 1, act=None)
        self.shortcut = _shortcut(in_channels, out_channels, stride)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv3(self.conv2(self.conv1(x))) + self.shortcut(x))


class ResNet(nn.Module):
    """ImageNet ResNet: 7x7 stem, max-pool, four stages, global pool, linear head.

    Args:
        block: ``BasicBlock`` or ``Bottleneck``.
        depths: Number of blocks in each of the four stages.
        num_classes: Classifier outputs.
        widths: Base width of each stage (the paper's 64, 128, 256, 512).
    """

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        depths: tuple[int, int, int, int],
        num_classes: int = 1000,
        widths: tuple[int, int, int, int] = (64, 128, 256, 512),
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            ConvNormAct(3, 64, 7, stride=2, act=relu),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
        )
        stages: list[nn.Module] = []
        in_channels = 64
        for i, (depth, width) in enumerate(zip(depths, widths)):
            blocks: list[nn.Module] = []
            for j in range(depth):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(block(in_channels, width, stride))
                in_channels = width * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_channels, num_classes)
        init_cnn_weights_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x))
        return self.fc(torch.flatten(self.pool(x), 1))


@register_model("resnet18")
def resnet18(num_classes: int = 1000) -> ResNet:
    """ResNet-18: basic blocks, depths (2, 2, 2, 2); 11.7M params, 1.8 GMACs at 224."""
    return ResNet(BasicBlock, (2, 2, 2, 2), num_classes=num_classes)


@register_model("resnet50")
def resnet50(num_classes: int = 1000) -> ResNet:
    """ResNet-50: bottleneck blocks, depths (3, 4, 6, 3); 25.6M params, 4.1 GMACs at 224."""
    return ResNet(Bottleneck, (3, 4, 6, 3), num_classes=num_classes)
