"""A tiny space for 8x8 grey images (scikit-learn's digits), the demo's space.

Two stages; each block chooses its operator (an inverted residual with kernel and expand choices, or a
plain 3x3 conv-BN-ReLU), stage width and depth are choices, and the stem width is a choice.
"""

from __future__ import annotations

from torch import nn

from hwnas.space.blocks import ConvBNAct, InvertedResidual
from hwnas.space.choice import Choice
from hwnas.space.modules import LayerChoice, Linear, Repeat
from hwnas.space.space import Space
from hwnas.spaces.registry import register_space

__all__ = ["DigitsSpace", "digits"]


class DigitsSpace(Space):
    """Input ``(N, 1, 8, 8)``; output ``(N, num_classes)``."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        stem = Choice([8, 16, 24], label="stem.width")
        self.stem = ConvBNAct(1, stem, 3, 1)
        cin = stem
        stages = []
        for s, (widths, stride) in enumerate((((16, 24, 32), 1), ((32, 48, 64), 2)), start=1):
            width = Choice(widths, label=f"s{s}.width")

            def block(i: int, s=s, cin=cin, width=width, stride=stride) -> nn.Module:
                c_in, st, tag = (cin if i == 0 else width), (stride if i == 0 else 1), f"s{s}.b{i + 1}"
                return LayerChoice({
                    "mbconv": InvertedResidual(c_in, width, Choice([3, 5], label=f"{tag}.kernel"),
                                               Choice([2, 3], label=f"{tag}.expand"), st, act="relu"),
                    "conv": ConvBNAct(c_in, width, 3, st),
                }, label=f"{tag}.op")

            stages.append(Repeat(block, Choice([1, 2], label=f"s{s}.depth")))
            cin = width
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = Linear(cin, num_classes)

    def forward(self, x):
        return self.classifier(self.pool(self.stages(self.stem(x))).flatten(1))


@register_space("digits", input_shape=(1, 1, 8, 8))
def digits(num_classes: int = 10) -> DigitsSpace:
    """The demo's space for 8x8 digits."""
    return DigitsSpace(num_classes)
