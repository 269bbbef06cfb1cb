"""A ResNet bottleneck space with depth, width and bottleneck-ratio choices.

Modelled on the Once-for-All ResNet-50 space (Cai et al., ICLR 2020): per stage a depth choice and a
width multiplier {0.65, 0.8, 1.0}, per block a bottleneck ratio {0.2, 0.25, 0.35} of the stage width.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from hwnas.space.blocks import Bottleneck, ConvBNAct
from hwnas.space.choice import Choice, make_divisible
from hwnas.space.modules import Linear, Repeat
from hwnas.space.space import Space
from hwnas.spaces.registry import register_space

__all__ = ["ResNetSpace", "resnet"]


class ResNetSpace(Space):
    """Stem (7x7 conv + max-pool), four bottleneck stages with searchable depth/width/ratio, classifier."""

    def __init__(self, depths: Sequence[Sequence[int]], base_widths: Sequence[int], width_mults: Sequence[float],
                 ratios: Sequence[float], stem: int = 64, num_classes: int = 1000,
                 resolutions: Sequence[int] | None = None):
        super().__init__()
        if resolutions is not None:
            self.resolution = Choice(resolutions, label="resolution")
        self.stem = nn.Sequential(ConvBNAct(3, stem, 7, 2), nn.MaxPool2d(3, 2, 1))
        cin = stem
        stages = []
        for s, (ds, base) in enumerate(zip(depths, base_widths), start=1):
            width = Choice(sorted({make_divisible(base * m, 8) for m in width_mults}), label=f"s{s}.width")

            def block(i: int, s=s, cin=cin, width=width) -> nn.Module:
                ratio = Choice(ratios, label=f"s{s}.b{i + 1}.ratio")
                mid = make_divisible(width * ratio, 8)
                return Bottleneck(cin if i == 0 else width, mid, width, stride=(1 if s == 1 else 2) if i == 0 else 1)

            stages.append(Repeat(block, Choice(ds, label=f"s{s}.depth")))
            cin = width
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = Linear(cin, num_classes)

    def forward(self, x):
        return self.fc(self.pool(self.stages(self.stem(x))).flatten(1))


@register_space("resnet")
def resnet(num_classes: int = 1000, depths: Sequence[Sequence[int]] = ((2, 3, 4), (2, 3, 4), (4, 5, 6), (2, 3, 4)),
           base_widths: Sequence[int] = (256, 512, 1024, 2048), width_mults: Sequence[float] = (0.65, 0.8, 1.0),
           ratios: Sequence[float] = (0.2, 0.25, 0.35), stem: int = 64,
           resolutions: Sequence[int] | None = None) -> ResNetSpace:
    """The OFA-like ResNet-50 space; pass smaller ``base_widths``/``depths`` for a quick space."""
    return ResNetSpace(depths, base_widths, width_mults, ratios, stem, num_classes, resolutions)
