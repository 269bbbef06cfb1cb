"""SqueezeNet 1.0 and VGG.

* Iandola et al. 2016, "SqueezeNet: AlexNet-level accuracy with 50x fewer parameters and
  <0.5MB model size", arXiv:1602.07360 (Table 1, without bypass connections).
* Simonyan and Zisserman 2015, "Very Deep Convolutional Networks for Large-Scale Image
  Recognition", ICLR (Table 1, configurations A and D; ``_bn`` adds BatchNorm after every conv).
"""

from __future__ import annotations

import torch
from torch import nn

from hwnas.zoo._layers import init_cnn_weights_
from hwnas.zoo._registry import register_model

__all__ = ["VGG", "VGG_CONFIGS", "Fire", "SqueezeNet", "squeezenet1_0", "vgg11_bn", "vgg16"]


class Fire(nn.Module):
    """SqueezeNet fire module: 1x1 squeeze, then parallel 1x1 and 3x3 expands, concatenated.

    Args:
        in_channels: Input channels.
        squeeze: Channels of the squeeze conv (s1x1).
        expand1x1: Channels of the 1x1 expand conv (e1x1).
        expand3x3: Channels of the 3x3 expand conv (e3x3).
    """

    def __init__(self, in_channels: int, squeeze: int, expand1x1: int, expand3x3: int) -> None:
        super().__init__()
        self.squeeze = nn.Sequential(nn.Conv2d(in_channels, squeeze, 1), nn.ReLU(inplace=True))
        self.expand1x1 = nn.Sequential(nn.Conv2d(squeeze, expand1x1, 1), nn.ReLU(inplace=True))
        self.expand3x3 = nn.Sequential(nn.Conv2d(squeeze, expand3x3, 3, padding=1), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.squeeze(x)
        return torch.cat((self.expand1x1(x), self.expand3x3(x)), dim=1)


class SqueezeNet(nn.Module):
    """SqueezeNet 1.0: 7x7 conv, eight fire modules with three max-pools, 1x1 conv classifier.

    Max-pools use ``ceil_mode=True`` (the original Caffe pooling arithmetic). The classifier
    is dropout -> 1x1 conv to ``num_classes`` -> ReLU -> global average pool.

    Args:
        num_classes: Classifier outputs.
        dropout: Dropout before the classifier conv.
    """

    def __init__(self, num_classes: int = 1000, dropout: float = 0.5) -> None:
        super().__init__()

        def pool() -> nn.MaxPool2d:
            return nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True)

        self.features = nn.Sequential(
            nn.Conv2d(3, 96, kernel_size=7, stride=2),
            nn.ReLU(inplace=True),
            pool(),
            Fire(96, 16, 64, 64),
            Fire(128, 16, 64, 64),
            Fire(128, 32, 128, 128),
            pool(),
            Fire(256, 32, 128, 128),
            Fire(256, 48, 192, 192),
            Fire(384, 48, 192, 192),
            Fire(384, 64, 256, 256),
            pool(),
            Fire(512, 64, 256, 256),
        )
        final_conv = nn.Conv2d(512, num_classes, kernel_size=1)
        self.classifier = nn.Sequential(
            nn.Dropout(dropout),
            final_conv,
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1),
        )
        init_cnn_weights_(self)
        with torch.no_grad():
            nn.init.normal_(final_conv.weight, 0.0, 0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.classifier(self.features(x)), 1)


#: Table 1 of the VGG paper: conv widths, ``0`` marks a 2x2 max-pool.
VGG_CONFIGS: dict[str, tuple[int, ...]] = {
    "A": (64, 0, 128, 0, 256, 256, 0, 512, 512, 0, 512, 512, 0),
    "D": (64, 64, 0, 128, 128, 0, 256, 256, 256, 0, 512, 512, 512, 0, 512, 512, 512, 0),
}


class VGG(nn.Module):
    """VGG: stacks of 3x3 convs (+ optional BatchNorm) and max-pools, then three FC layers.

    A 7x7 adaptive average pool before the classifier lets any input of at least 32x32
    reach the 512*7*7 first FC layer (at 224x224 it is the identity). The TorchScript ONNX
    exporter only supports that pool when 7 divides the last feature map, e.g. at 224x224;
    at 160 or 64 ``torch.onnx.export`` raises.

    Args:
        config: Layer widths like ``VGG_CONFIGS["D"]``; ``0`` is a max-pool.
        num_classes: Classifier outputs.
        batch_norm: Add ``BatchNorm2d`` after every conv.
        dropout: Dropout after each of the two hidden FC layers.
    """

    def __init__(
        self,
        config: tuple[int, ...],
        num_classes: int = 1000,
        batch_norm: bool = False,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_channels = 3
        for width in config:
            if width == 0:
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                continue
            layers.append(nn.Conv2d(in_channels, width, 3, padding=1))
            if batch_norm:
                layers.append(nn.BatchNorm2d(width))
            layers.append(nn.ReLU(inplace=True))
            in_channels = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(in_channels * 7 * 7, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(4096, num_classes),
        )
        init_cnn_weights_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


@register_model("squeezenet1_0")
def squeezenet1_0(num_classes: int = 1000, dropout: float = 0.5) -> SqueezeNet:
    """SqueezeNet 1.0: 1.2M params, 820 MMACs at 224."""
    return SqueezeNet(num_classes=num_classes, dropout=dropout)


@register_model("vgg11_bn")
def vgg11_bn(num_classes: int = 1000, dropout: float = 0.5) -> VGG:
    """VGG-11 (configuration A) with BatchNorm: 132.9M params, 7.6 GMACs at 224."""
    return VGG(VGG_CONFIGS["A"], num_classes=num_classes, batch_norm=True, dropout=dropout)


@register_model("vgg16")
def vgg16(num_classes: int = 1000, dropout: float = 0.5) -> VGG:
    """VGG-16 (configuration D): 138.4M params, 15.5 GMACs at 224."""
    return VGG(VGG_CONFIGS["D"], num_classes=num_classes, batch_norm=False, dropout=dropout)
