"""Convert an ordinary PyTorch CNN or transformer into a searchable space: :func:`convert`, and save or
restore the result safely with :func:`save` / :func:`restore`.

Example:
    >>> import torch, hwnas
    >>> from hwnas import zoo
    >>> model = zoo.create("mobilenet_v2", num_classes=10).eval()
    >>> space = hwnas.convert(model, torch.randn(1, 3, 32, 32), mode="width+kernel+depth")
    >>> len(space.choices()) > 10 and space.num_subnets() > 10 ** 10
    True
"""

from hwnas.convert import costs  # noqa: F401  (parameter rules of the layers convert inserts)
from hwnas.convert.api import MODES, ConversionError, convert
from hwnas.convert.space import Conversion, ConvertedSpace
from hwnas.convert.store import ConvertedFileError, restore, save

__all__ = ["MODES", "Conversion", "ConversionError", "ConvertedFileError", "ConvertedSpace", "convert", "restore",
           "save"]
