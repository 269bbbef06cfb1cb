"""DenseNet-121 (Huang et al. 2017, "Densely Connected Convolutional Networks", CVPR, Table 1).

DenseNet-BC: bottleneck layers (BN-ReLU-1x1 conv to ``4k`` -> BN-ReLU-3x3 conv to ``k``)
and compression 0.5 in the transition layers.
"""

from __future__ import annotations

import torch
from torch import nn

from hwnas.zoo._layers import init_cnn_weights_
from hwnas.zoo._registry import register_model

__all__ = ["DenseBlock", "DenseLayer", "DenseNet", "Transition", "densenet121"]


class DenseLayer(nn.Module):
    """Pre-activation bottleneck layer producing ``growth_rate`` new feature maps.

    Args:
        in_channels: Channels of the concatenated input.
        growth_rate: New channels produced (``k`` in the paper).
        bottleneck: Multiplier of the 1x1 conv width (``4`` gives ``4k``).
        dropout: Dropout on the new features (0 in the paper's ImageNet models).
    """

    def __init__(self, in_channels: int, growth_rate: int, bottleneck: int = 4, dropout: float = 0.0) -> None:
        super().__init__()
        width = bottleneck * growth_rate
        self.layers = nn.Sequential(
            nn.BatchNorm2d(in_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(in_channels, width, 1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, growth_rate, 3, padding=1, bias=False),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class DenseBlock(nn.Module):
    """``num_layers`` dense layers, each fed the concatenation of all earlier outputs.

    Args:
        num_layers: Number of dense layers.
        in_channels: Input channels; the output has ``in_channels + num_layers * growth_rate``.
        growth_rate: Channels added by each layer.
        bottleneck: Bottleneck multiplier of each layer.
        dropout: Dropout of each layer.
    """

    def __init__(
        self, num_layers: int, in_channels: int, growth_rate: int, bottleneck: int = 4, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            DenseLayer(in_channels + i * growth_rate, growth_rate, bottleneck, dropout) for i in range(num_layers)
        )
        self.out_channels = in_channels + num_layers * growth_rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.layers:
            features.append(layer(torch.cat(features, dim=1)))
        return torch.cat(features, dim=1)


class Transition(nn.Sequential):
    """BN -> ReLU -> 1x1 conv (compression) -> 2x2 average pool.

    Args:
        in_channels: Input channels.
        out_channels: Output channels (half the input for compression 0.5).
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.BatchNorm2d(in_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
            nn.AvgPool2d(kernel_size=2, stride=2),
        )


class DenseNet(nn.Module):
    """DenseNet-BC for ImageNet: 7x7 stem, four dense blocks with transitions, BN-ReLU, head.

    Args:
        block_layers: Dense layers per block (6, 12, 24, 16 for DenseNet-121).
        growth_rate: ``k``.
        stem_channels: Channels of the 7x7 stem conv (``2k``).
        bottleneck: Bottleneck multiplier of the dense layers.
        compression: Channel factor of each transition.
        num_classes: Classifier outputs.
        dropout: Dropout inside the dense layers.
    """

    def __init__(
        self,
        block_layers: tuple[int, ...] = (6, 12, 24, 16),
        growth_rate: int = 32,
        stem_channels: int = 64,
        bottleneck: int = 4,
        compression: float = 0.5,
        num_classes: int = 1000,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            nn.Conv2d(3, stem_channels, 7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(stem_channels),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
        ]
        channels = stem_channels
        for i, num_layers in enumerate(block_layers):
            block = DenseBlock(num_layers, channels, growth_rate, bottleneck, dropout)
            layers.append(block)
            channels = block.out_channels
            if i < len(block_layers) - 1:
                out_channels = int(channels * compression)
                layers.append(Transition(channels, out_channels))
                channels = out_channels
        layers += [nn.BatchNorm2d(channels), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)
        init_cnn_weights_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


@register_model("densenet121")
def densenet121(num_classes: int = 1000) -> DenseNet:
    """DenseNet-121 (k=32, blocks 6/12/24/16): 8.0M params, 2.9 GMACs at 224."""
    return DenseNet((6, 12, 24, 16), growth_rate=32, stem_channels=64, num_classes=num_classes)
