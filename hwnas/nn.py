"""The building blocks users write spaces with: ``import hwnas.nn as hnn``.

Example:
    >>> import torch
    >>> import hwnas.nn as hnn
    >>> class Tiny(hnn.Space):
    ...     def __init__(self):
    ...         super().__init__()
    ...         width = hnn.Choice([8, 16], label="width")
    ...         self.conv = hnn.Conv2d(3, width, hnn.Choice([3, 5], label="kernel"))
    ...         self.bn = hnn.BatchNorm2d(width)
    ...         self.fc = hnn.Linear(width, 10)
    ...     def forward(self, x):
    ...         return self.fc(self.bn(self.conv(x)).mean((2, 3)))
    >>> Tiny().num_subnets()
    4
"""

from hwnas.space.blocks import Bottleneck, ConvBNAct, InvertedResidual, SqueezeExcite
from hwnas.space.choice import Choice, ChoiceExpr, make_divisible
from hwnas.space.input_choice import InputChoice
from hwnas.space.modules import BatchNorm2d, Conv2d, HwnasModule, LayerChoice, Linear, Repeat
from hwnas.space.space import Space

__all__ = ["BatchNorm2d", "Bottleneck", "Choice", "ChoiceExpr", "Conv2d", "ConvBNAct", "HwnasModule",
           "InputChoice", "InvertedResidual", "LayerChoice", "Linear", "Repeat", "Space", "SqueezeExcite", "make_divisible"]
