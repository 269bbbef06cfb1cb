"""EfficientNet-B0 (Tan and Le 2019, "EfficientNet: Rethinking Model Scaling for
Convolutional Neural Networks", ICML, Table 1).

Stochastic depth (drop-connect) is a training-time regulariser without parameters and
is omitted, so the module has the same parameters and inference graph as the paper's B0.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from hwnas.zoo._layers import ConvNormAct, InvertedResidual, init_cnn_weights_, make_divisible
from hwnas.zoo._registry import register_model

__all__ = ["B0_STAGES", "EfficientNet", "efficientnet_b0"]

# Table 1: expansion, kernel, first stride, output channels, repeats.
B0_STAGES: tuple[tuple[int, int, int, int, int], ...] = (
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
)


class EfficientNet(nn.Module):
    """EfficientNet: SiLU stem, MBConv stages with SE, 1x1 head conv, linear classifier.

    Each MBConv's SE gate squeezes to a quarter of the *block input* channels (SE ratio
    0.25), uses SiLU inside and a sigmoid gate.

    Args:
        stages: Stage table like :data:`B0_STAGES`.
        num_classes: Classifier outputs.
        width_mult: Channel multiplier (1.0 for B0), rounded to multiples of 8.
        depth_mult: Repeat multiplier (1.0 for B0), rounded up.
        dropout: Dropout before the classifier.
    """

    def __init__(
        self,
        stages: tuple[tuple[int, int, int, int, int], ...] = B0_STAGES,
        num_classes: int = 1000,
        width_mult: float = 1.0,
        depth_mult: float = 1.0,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        in_channels = make_divisible(32 * width_mult)
        layers: list[nn.Module] = [ConvNormAct(3, in_channels, 3, stride=2, act=nn.SiLU)]
        for expansion, kernel, stride, channels, repeats in stages:
            out_channels = make_divisible(channels * width_mult)
            for i in range(int(math.ceil(repeats * depth_mult))):
                layers.append(
                    InvertedResidual(
                        in_channels,
                        make_divisible(in_channels * expansion),
                        out_channels,
                        kernel_size=kernel,
                        stride=stride if i == 0 else 1,
                        act=nn.SiLU,
                        se_channels=max(1, in_channels // 4),
                        se_act=nn.SiLU,
                        se_gate=nn.Sigmoid,
                    )
                )
                in_channels = out_channels
        head_channels = 4 * in_channels
        layers.append(ConvNormAct(in_channels, head_channels, 1, act=nn.SiLU))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(head_channels, num_classes))
        init_cnn_weights_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


@register_model("efficientnet_b0")
def efficientnet_b0(num_classes: int = 1000, dropout: float = 0.2) -> EfficientNet:
    """EfficientNet-B0: 5.3M params, 390 MMACs at 224."""
    return EfficientNet(B0_STAGES, num_classes=num_classes, dropout=dropout)
