"""Reference model spaces, by name: ``hwnas.spaces.create("mobilenet_v3")``.

Example:
    >>> import hwnas
    >>> hwnas.spaces.list()
    ['digits', 'mobilenet_v2', 'mobilenet_v3', 'resnet']
    >>> space = hwnas.spaces.create("digits")
"""

from hwnas.spaces.registry import create, input_shape, list, register_space

# Importing the modules registers their spaces.
from hwnas.spaces import digits, mobilenet, resnet  # noqa: E402,F401  isort: skip

__all__ = ["create", "list", "register_space", "input_shape"]
