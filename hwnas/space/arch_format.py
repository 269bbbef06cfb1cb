"""Architecture formats: a sample by value, by index, or one-hot (multi-hot for an ``InputChoice``).

- ``"value"``: ``{"s1.width": 24, "s1.b1.op": "mbconv"}``, hwnas's own sample;
- ``"index"``: ``{"s1.width": 2, "s1.b1.op": 0}``, each value's position in its choice (NNI's ``{"op": 1}``);
  an ``InputChoice`` label may also give the list of chosen input indices (``[0, 2]``);
- ``"onehot"``: ``{"s1.width": [0, 0, 1], ...}``; an ``InputChoice`` label takes a multi-hot list over its
  inputs (``[1, 0, 1]`` keeps inputs 0 and 2) or a one-hot list over its combinations.

:func:`decode` reads any of them; without ``format`` it detects it: lists mean one-hot, a mapping whose every
value is one of its label's values is read by value, else by index. A mapping valid both ways (``{"depth": 1}``
with depths ``(1, 2)``) is read by value: pass ``format="index"`` for the other reading.

Example:
    >>> import hwnas
    >>> from hwnas.space.arch_format import decode, encode
    >>> space = hwnas.spaces.create("digits")
    >>> sample = space.random_sample(0)
    >>> decode(space, encode(space, sample, "onehot")) == sample
    True
    >>> decode(space, encode(space, sample, "index"), format="index") == sample
    True
"""

from __future__ import annotations

from typing import Any

import numpy as np
from torch import nn

from hwnas.space.choice import Choice
from hwnas.space.input_choice import InputChoice, combination_key
from hwnas.space.space import SampleError, collect_choices, validate_sample

__all__ = ["FORMATS", "encode", "decode", "detect_format"]

FORMATS = ("value", "index", "onehot")


def _input_choices(space: nn.Module) -> dict[str, InputChoice]:
    return {m.label: m for m in space.modules() if isinstance(m, InputChoice)}


def encode(space: nn.Module, sample: dict[str, Any], format: str = "value") -> dict[str, Any]:  # noqa: A002
    """``sample`` (by value, validated) in ``format``; an ``InputChoice`` is one-hot encoded multi-hot over its inputs."""
    if format not in FORMATS:
        raise ValueError(f"encode: format must be one of {FORMATS}, got {format!r}.")
    choices = collect_choices(space)
    sample = validate_sample(choices, dict(sample))
    if format == "value":
        return sample
    inputs = _input_choices(space)
    out: dict[str, Any] = {}
    for lab, c in choices.items():
        i = c.values.index(sample[lab])
        if format == "index":
            out[lab] = i
        elif lab in inputs:
            chosen = inputs[lab].chosen(sample[lab])
            out[lab] = [int(k in chosen) for k in range(inputs[lab].n_candidates)]
        else:
            out[lab] = [int(k == i) for k in range(len(c.values))]
    return out


def detect_format(choices: dict[str, Choice], arch: dict[str, Any]) -> str:
    """``"onehot"``, ``"value"`` or ``"index"`` for ``arch`` (see the module docs)."""
    if arch and all(isinstance(v, (list, tuple)) for v in arch.values()):
        return "onehot"
    try:
        validate_sample(choices, dict(arch))
        return "value"
    except SampleError:
        return "index"


def _index_of(lab: str, c: Choice, v: Any, inputs: dict[str, InputChoice], where: str) -> int:
    if isinstance(v, (list, tuple)) and lab in inputs:
        key = combination_key(v) if inputs[lab].n_chosen > 1 else (int(v[0]) if len(v) == 1 else None)
        if key in c.values:
            return c.values.index(key)
        raise SampleError(f"{where}: label {lab!r} lists inputs {list(v)!r}; it keeps {inputs[lab].n_chosen} of "
                          f"{inputs[lab].n_candidates} inputs (indices 0..{inputs[lab].n_candidates - 1}).")
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) or not 0 <= v < len(c.values):
        raise SampleError(f"{where}: label {lab!r} has index {v!r}; an index is an int in 0..{len(c.values) - 1} "
                          f"(its values are {list(c.values)!r}).")
    return int(v)


def _hot_index(lab: str, c: Choice, v: Any, inputs: dict[str, InputChoice], where: str) -> int:
    if not isinstance(v, (list, tuple)) or any(isinstance(x, bool) or x not in (0, 1) for x in v):
        raise SampleError(f"{where}: label {lab!r} has {v!r}; a one-hot entry is a list of 0/1 with a single 1 "
                          f"over its {len(c.values)} values {list(c.values)!r}.")
    hot = [k for k, x in enumerate(v) if x == 1]
    if lab in inputs and len(v) == inputs[lab].n_candidates and len(hot) == inputs[lab].n_chosen:
        return _index_of(lab, c, hot, inputs, where)
    if len(v) != len(c.values) or len(hot) != 1:
        raise SampleError(f"{where}: label {lab!r} has {list(v)!r}; a one-hot list has {len(c.values)} entries (one "
                          f"per value of {list(c.values)!r}) with exactly one 1.")
    return hot[0]


def decode(space: nn.Module, arch: dict[str, Any], format: str | None = None,  # noqa: A002
           where: str = "architecture") -> dict[str, Any]:
    """The sample (by value, validated) that ``arch`` describes in ``format`` (``None``: detected).

    Raises:
        SampleError: naming ``where``, the label, what it holds and what the format expects.
    """
    if not isinstance(arch, dict):
        raise SampleError(f"{where}: an architecture is a dict of label -> value, index or one-hot list, got "
                          f"{type(arch).__name__}.")
    if format is not None and format not in FORMATS:
        raise ValueError(f"decode: format must be one of {FORMATS} or None (detect), got {format!r}.")
    choices = collect_choices(space)
    fmt = format or detect_format(choices, arch)
    if fmt == "value":
        return validate_sample(choices, dict(arch))
    unknown = [k for k in arch if k not in choices]
    missing = [k for k in choices if k not in arch]
    if unknown or missing:
        raise SampleError(f"{where} ({fmt} format): unknown label(s) {unknown!r}, missing label(s) {missing!r}; this "
                          f"space's labels are {list(choices)!r}.")
    inputs = _input_choices(space)
    pick = _index_of if fmt == "index" else _hot_index
    return {lab: c.values[pick(lab, c, arch[lab], inputs, where)] for lab, c in choices.items()}
