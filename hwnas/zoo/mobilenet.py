"""MobileNetV2 and MobileNetV3 (Large and Small).

* Sandler et al. 2018, "MobileNetV2: Inverted Residuals and Linear Bottlenecks", CVPR (Table 2).
* Howard et al. 2019, "Searching for MobileNetV3", ICCV (Tables 1 and 2).
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from hwnas.zoo._layers import (
    ActFactory,
    ConvNormAct,
    InvertedResidual,
    init_cnn_weights_,
    make_divisible,
    relu,
)
from hwnas.zoo._registry import register_model

__all__ = [
    "MobileNetV2",
    "MobileNetV3",
    "V3_LARGE",
    "V3_SMALL",
    "mobilenet_v2",
    "mobilenet_v3_large",
    "mobilenet_v3_small",
]

_relu6: ActFactory = partial(nn.ReLU6, inplace=True)
_hswish: ActFactory = nn.Hardswish

# MobileNetV2 stages, Table 2: expansion t, output channels c, repeats n, first stride s.
_V2_STAGES: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


class MobileNetV2(nn.Module):
    """MobileNetV2: 3x3 stem, 17 inverted residual blocks, 1x1 conv to 1280, linear head.

    Args:
        num_classes: Classifier outputs.
        width_mult: Channel multiplier, rounded to multiples of 8.
        dropout: Dropout before the classifier.
    """

    def __init__(self, num_classes: int = 1000, width_mult: float = 1.0, dropout: float = 0.2) -> None:
        super().__init__()
        in_channels = make_divisible(32 * width_mult)
        last_channels = make_divisible(1280 * max(1.0, width_mult))
        layers: list[nn.Module] = [ConvNormAct(3, in_channels, 3, stride=2, act=_relu6)]
        for t, c, n, s in _V2_STAGES:
            out_channels = make_divisible(c * width_mult)
            for i in range(n):
                layers.append(
                    InvertedResidual(
                        in_channels,
                        int(round(in_channels * t)),
                        out_channels,
                        kernel_size=3,
                        stride=s if i == 0 else 1,
                        act=_relu6,
                    )
                )
                in_channels = out_channels
        layers.append(ConvNormAct(in_channels, last_channels, 1, act=_relu6))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(last_channels, num_classes))
        init_cnn_weights_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


# MobileNetV3 blocks, Tables 1 and 2: kernel, expanded channels, output channels,
# squeeze-and-excite, hard-swish (else ReLU), stride.
V3Block = tuple[int, int, int, bool, bool, int]

V3_LARGE: tuple[V3Block, ...] = (
    (3, 16, 16, False, False, 1),
    (3, 64, 24, False, False, 2),
    (3, 72, 24, False, False, 1),
    (5, 72, 40, True, False, 2),
    (5, 120, 40, True, False, 1),
    (5, 120, 40, True, False, 1),
    (3, 240, 80, False, True, 2),
    (3, 200, 80, False, True, 1),
    (3, 184, 80, False, True, 1),
    (3, 184, 80, False, True, 1),
    (3, 480, 112, True, True, 1),
    (3, 672, 112, True, True, 1),
    (5, 672, 160, True, True, 2),
    (5, 960, 160, True, True, 1),
    (5, 960, 160, True, True, 1),
)

V3_SMALL: tuple[V3Block, ...] = (
    (3, 16, 16, True, False, 2),
    (3, 72, 24, False, False, 2),
    (3, 88, 24, False, False, 1),
    (5, 96, 40, True, True, 2),
    (5, 240, 40, True, True, 1),
    (5, 240, 40, True, True, 1),
    (5, 120, 48, True, True, 1),
    (5, 144, 48, True, True, 1),
    (5, 288, 96, True, True, 2),
    (5, 576, 96, True, True, 1),
    (5, 576, 96, True, True, 1),
)


class MobileNetV3(nn.Module):
    """MobileNetV3: hard-swish stem, inverted residuals with optional SE, efficient last stage.

    The last stage is 1x1 conv to ``6 * c_last`` -> global pool -> linear (with bias, no
    norm) to ``last_channels`` -> hard-swish -> dropout -> linear classifier. SE gates
    squeeze to ``make_divisible(expanded / 4)`` channels and use a hard-sigmoid gate.
    BatchNorm uses eps 1e-3 and momentum 0.01 as in the paper's TensorFlow training.

    Args:
        blocks: Block table, :data:`V3_LARGE` or :data:`V3_SMALL`.
        last_channels: Width of the penultimate linear layer (1280 Large, 1024 Small).
        num_classes: Classifier outputs.
        dropout: Dropout before the classifier.
    """

    def __init__(
        self,
        blocks: tuple[V3Block, ...],
        last_channels: int,
        num_classes: int = 1000,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        norm = {"bn_eps": 1e-3, "bn_momentum": 0.01}
        in_channels = 16
        layers: list[nn.Module] = [ConvNormAct(3, in_channels, 3, stride=2, act=_hswish, **norm)]
        for kernel, expanded, out_channels, use_se, use_hs, stride in blocks:
            layers.append(
                InvertedResidual(
                    in_channels,
                    expanded,
                    out_channels,
                    kernel_size=kernel,
                    stride=stride,
                    act=_hswish if use_hs else relu,
                    se_channels=make_divisible(expanded // 4) if use_se else None,
                    se_act=relu,
                    se_gate=nn.Hardsigmoid,
                    **norm,
                )
            )
            in_channels = out_channels
        head_channels = 6 * in_channels
        layers.append(ConvNormAct(in_channels, head_channels, 1, act=_hswish, **norm))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Linear(head_channels, last_channels),
            nn.Hardswish(),
            nn.Dropout(dropout),
            nn.Linear(last_channels, num_classes),
        )
        init_cnn_weights_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


@register_model("mobilenet_v2")
def mobilenet_v2(num_classes: int = 1000, width_mult: float = 1.0, dropout: float = 0.2) -> MobileNetV2:
    """MobileNetV2 1.0: 3.5M params, 300 MMACs at 224."""
    return MobileNetV2(num_classes=num_classes, width_mult=width_mult, dropout=dropout)


@register_model("mobilenet_v3_large")
def mobilenet_v3_large(num_classes: int = 1000, dropout: float = 0.2) -> MobileNetV3:
    """MobileNetV3-Large 1.0: 5.5M params, 217 MMACs at 224."""
    return MobileNetV3(V3_LARGE, 1280, num_classes=num_classes, dropout=dropout)


@register_model("mobilenet_v3_small")
def mobilenet_v3_small(num_classes: int = 1000, dropout: float = 0.2) -> MobileNetV3:
    """MobileNetV3-Small 1.0: 2.5M params, 57 MMACs at 224."""
    return MobileNetV3(V3_SMALL, 1024, num_classes=num_classes, dropout=dropout)
