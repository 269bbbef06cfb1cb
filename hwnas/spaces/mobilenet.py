"""MobileNet spaces: an Once-for-All-like MobileNetV3 space and a ProxylessNAS-like MobileNetV2 space.

``mobilenet_v3`` follows Once-for-All (Cai et al., ICLR 2020): five searchable stages with depth
{2, 3, 4}, and per block kernel {3, 5, 7} and expand ratio {3, 4, 6}: ``(9^2 + 9^3 + 9^4)^5``, about
2 x 10^19 subnets. ``mobilenet_v2`` follows the MobileNetV2 backbone (Sandler et al., CVPR 2018) with
the per-block kernel/expand choices of ProxylessNAS (Cai et al., ICLR 2019) and a depth choice per stage.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from hwnas.space.blocks import ConvBNAct, InvertedResidual, make_activation
from hwnas.space.choice import Choice, make_divisible
from hwnas.space.modules import Linear, Repeat
from hwnas.space.space import Space
from hwnas.spaces.registry import register_space

__all__ = ["MobileNetSpace", "mobilenet_v3", "mobilenet_v2"]


class MobileNetSpace(Space):
    """A MobileNet-style space: stem, fixed first block, searchable stages, head.

    Args:
        stages: per stage ``(width, stride, activation, squeeze_excite, depths)``.
        kernels, expands: the per-block kernel and expand-ratio choices.
        stem: stem width; first: the fixed first block's ``(width, activation)``.
        head: ``(final expand width, feature-mix width or None)``.
        num_classes: classifier outputs.
        resolutions: input resolutions to search over, or ``None`` to take the input as given.
        width_mult: multiplies every width (rounded to a multiple of 8).
    """

    def __init__(self, stages: Sequence[tuple], kernels: Sequence[int], expands: Sequence[float],
                 stem: int, first: tuple[int, str], head: tuple[int, int | None], head_act: str,
                 num_classes: int = 1000, resolutions: Sequence[int] | None = None, width_mult: float = 1.0,
                 dropout: float = 0.1):
        super().__init__()
        w = lambda c: make_divisible(c * width_mult, 8)  # noqa: E731
        if resolutions is not None:
            self.resolution = Choice(resolutions, label="resolution")
        self.stem = ConvBNAct(3, w(stem), 3, 2, act=head_act)
        cin = w(stem)
        self.first = InvertedResidual(cin, w(first[0]), 3, 1, 1, act=first[1])
        cin = w(first[0])
        stages_out = []
        for s, (width, stride, act, se, depths) in enumerate(stages, start=1):
            cout = w(width)

            def block(i: int, s=s, cin=cin, cout=cout, stride=stride, act=act, se=se) -> nn.Module:
                return InvertedResidual(cin if i == 0 else cout, cout,
                                        Choice(kernels, label=f"s{s}.b{i + 1}.kernel"),
                                        Choice(expands, label=f"s{s}.b{i + 1}.expand"),
                                        stride if i == 0 else 1, act=act, se=se)

            stages_out.append(Repeat(block, Choice(depths, label=f"s{s}.depth")))
            cin = cout
        self.stages = nn.Sequential(*stages_out)
        final, mix = head
        self.final = ConvBNAct(cin, w(final), 1, act=head_act)
        self.pool = nn.AdaptiveAvgPool2d(1)
        if mix is not None:
            self.mix = nn.Sequential(nn.Conv2d(w(final), mix, 1, bias=True), make_activation(head_act))
            feats = mix
        else:
            self.mix = nn.Identity()
            feats = w(final)
        self.dropout = nn.Dropout(dropout)
        self.classifier = Linear(feats, num_classes)

    def forward(self, x):
        x = self.stages(self.first(self.stem(x)))
        x = self.mix(self.pool(self.final(x)))
        return self.classifier(self.dropout(x.flatten(1)))


@register_space("mobilenet_v3")
def mobilenet_v3(num_classes: int = 1000, resolutions: Sequence[int] | None = None, width_mult: float = 1.0,
                 kernels: Sequence[int] = (3, 5, 7), expands: Sequence[int] = (3, 4, 6),
                 depths: Sequence[int] = (2, 3, 4)) -> MobileNetSpace:
    """The Once-for-All MobileNetV3 space (Cai et al. 2020), about 2 x 10^19 subnets."""
    stages = [(24, 2, "relu", False, depths), (40, 2, "relu", True, depths), (80, 2, "hswish", False, depths),
              (112, 1, "hswish", True, depths), (160, 2, "hswish", True, depths)]
    return MobileNetSpace(stages, kernels, expands, stem=16, first=(16, "relu"), head=(960, 1280),
                          head_act="hswish", num_classes=num_classes, resolutions=resolutions,
                          width_mult=width_mult)


@register_space("mobilenet_v2")
def mobilenet_v2(num_classes: int = 1000, resolutions: Sequence[int] | None = None, width_mult: float = 1.0,
                 kernels: Sequence[int] = (3, 5, 7), expands: Sequence[int] = (3, 6)) -> MobileNetSpace:
    """MobileNetV2 (Sandler et al. 2018) with ProxylessNAS-style kernel {3,5,7} x expand {3,6} per block
    and a depth choice per stage (up to the original depth)."""
    table = [(24, 2, 2), (32, 2, 3), (64, 2, 4), (96, 1, 3), (160, 2, 3), (320, 1, 1)]
    stages = [(c, s, "relu6", False, tuple(range(max(1, n - 2), n + 1))) for c, s, n in table]
    return MobileNetSpace(stages, kernels, expands, stem=32, first=(16, "relu6"), head=(1280, None),
                          head_act="relu6", num_classes=num_classes, resolutions=resolutions,
                          width_mult=width_mult, dropout=0.2)
