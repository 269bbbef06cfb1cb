"""Dummy inputs given as positional arguments and keyword arguments (the ``torch.onnx.export`` convention).

A dummy input is one of:

1. a tensor: ``model(x)``;
2. a tuple of tensors: ``model(*dummy_input)``;
3. a tuple whose last item is a dict: ``model(*dummy_input[:-1], **dummy_input[-1])`` (an empty dict means
   no keyword arguments; ``(x, {})`` is ``model(x)``).

hwnas traces and profiles a model with positional inputs only, so :func:`positional_inputs` sorts keyword
arguments into their places in ``forward``'s signature.

Example:
    >>> import torch
    >>> class Two(torch.nn.Module):
    ...     def forward(self, x, y=None):
    ...         return x + y
    >>> x, y = torch.zeros(1, 2), torch.ones(1, 2)
    >>> [tuple(t.shape) for t in positional_inputs(Two(), (x, {"y": y}))]
    [(1, 2), (1, 2)]
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

__all__ = ["positional_inputs", "split_dummy_input"]


def split_dummy_input(dummy_input: Any) -> tuple[tuple, dict[str, Any]]:
    """``(args, kwargs)`` of a dummy input in any of the three forms of this module."""
    if isinstance(dummy_input, list):
        dummy_input = tuple(dummy_input)
    if not isinstance(dummy_input, tuple):
        return (dummy_input,), {}
    if dummy_input and isinstance(dummy_input[-1], dict):
        kwargs = dummy_input[-1]
        bad = [k for k in kwargs if not isinstance(k, str)]
        if bad:
            raise TypeError(f"dummy_input's keyword arguments (its last item, a dict) must have str keys naming "
                            f"forward's parameters, got {bad[:3]!r}; pass e.g. (x, {{'mask': mask}}).")
        return tuple(dummy_input[:-1]), dict(kwargs)
    return dummy_input, {}


def _parameter_names(module: nn.Module) -> list[str] | None:
    names = getattr(module, "input_names", None)  # a converted space records its model's input names
    if names:
        return list(names)
    try:
        params = list(inspect.signature(module.forward).parameters.values())
    except (TypeError, ValueError):
        return None
    if any(p.kind in (p.VAR_KEYWORD, p.KEYWORD_ONLY) for p in params):
        return None
    return [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


def positional_inputs(module: nn.Module, dummy_input: Any, who: str = "dummy_input") -> tuple[torch.Tensor, ...]:
    """The tensors of ``dummy_input`` in ``module.forward``'s positional order.

    Args:
        module: the model the input is for (its ``forward`` signature places keyword arguments).
        dummy_input: a tensor, a tuple of tensors, or a tuple ending in a dict of keyword arguments.
        who: how to name the input in errors.

    Returns:
        A tuple of tensors, one per positional parameter up to the last one given.

    Raises:
        TypeError: a keyword that ``forward`` does not take, a keyword given twice, a gap before the last given
            input, or an item that is not a tensor.
    """
    args, kwargs = split_dummy_input(dummy_input)
    if kwargs:
        names = _parameter_names(module)
        if names is None:
            raise TypeError(f"{who} gives keyword arguments {sorted(kwargs)}, but {type(module).__name__}.forward "
                            "takes *args/**kwargs or keyword-only parameters, which cannot be sorted into positions; "
                            "pass every input positionally as a tuple of tensors.")
        unknown = [k for k in kwargs if k not in names]
        if unknown:
            raise TypeError(f"{who} gives keyword argument(s) {unknown} that {type(module).__name__}.forward does not "
                            f"take (its parameters: {names}); fix the names in the dict.")
        twice = [k for k in kwargs if names.index(k) < len(args)]
        if twice:
            raise TypeError(f"{who} gives {twice} both positionally and as keywords; give each input once.")
        last = max(names.index(k) for k in kwargs)
        filled = list(args) + [kwargs.get(n) for n in names[len(args):last + 1]]
        gaps = [n for n, v in zip(names[len(args):last + 1], filled[len(args):]) if v is None]
        if gaps:
            raise TypeError(f"{who} leaves {gaps} out but gives a later input; hwnas traces inputs by position, so "
                            f"give every input of {type(module).__name__}.forward up to the last one used (as a "
                            "tensor), or reorder forward's parameters.")
        args = tuple(filled)
    for i, t in enumerate(args):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{who}[{i}] must be a torch.Tensor, got {type(t).__name__}; pass a tensor of the "
                            "input's shape, e.g. torch.randn(1, 3, 224, 224), or keyword arguments as a dict at "
                            "the end: (x, {'mask': mask}).")
    if not args:
        raise TypeError(f"{who} holds no tensor; pass e.g. torch.randn(1, 3, 224, 224).")
    return tuple(args)
