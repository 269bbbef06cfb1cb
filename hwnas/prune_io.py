"""Save and restore a pruned model (from :func:`hwnas.prune` or an exported search result) without pickle.

The file holds the recipe (the conversion record and the chosen sample, JSON) and the pruned model's own
weights (e.g. after fine-tuning), with a SHA-256 digest, in the same safe container as :func:`hwnas.save`
(read back with ``torch.load(weights_only=True)``). :func:`restore_pruned` converts the *original* model
again with the recorded options, checks that it gives the same space, exports the recorded subnet (which
fixes the pruned architecture) and loads the saved weights into it.

Example:
    >>> import os, tempfile, torch, hwnas
    >>> from hwnas import zoo
    >>> from hwnas.prune_io import save_pruned, restore_pruned
    >>> model = zoo.create("resnet18", num_classes=10).eval()
    >>> x = torch.randn(1, 3, 32, 32)
    >>> space = hwnas.convert(model, x)
    >>> small = mark_pruned(export_pruned(space, space.min_sample()), space, space.min_sample())
    >>> path = save_pruned(small, os.path.join(tempfile.mkdtemp(), "pruned.pt"))
    >>> again = restore_pruned(lambda: zoo.create("resnet18", num_classes=10), path).eval()
    >>> torch.allclose(again(x), small(x))
    True
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hwnas.convert.api import as_model, convert
from hwnas.convert.space import Conversion, ConvertedSpace
from hwnas.convert.store import ConvertedFileError, _first_difference, _load, write_weights
from hwnas.export import export

__all__ = ["save_pruned", "restore_pruned", "export_pruned", "mark_pruned", "is_pruned", "file_format",
           "PRUNED_FORMAT"]

PRUNED_FORMAT = "hwnas.pruned_model"
_VERSION = 1


def export_pruned(space: ConvertedSpace, sample: dict[str, Any]) -> nn.Module:
    """The subnet ``sample`` of a converted space as a plain model named after the original model's class
    (:func:`hwnas.export` of the space's network)."""
    return export(space.net, sample)


def mark_pruned(pruned: nn.Module, space: ConvertedSpace, sample: dict[str, Any], **extra: Any) -> nn.Module:
    """Record on ``pruned`` (exported from ``space`` at ``sample``) the recipe that :func:`save_pruned` stores."""
    pruned.hwnas_origin = {"conversion": space.conversion.to_dict(), "sample": dict(sample), **extra}
    return pruned


def is_pruned(model: Any) -> bool:
    """Whether ``model`` carries a pruning recipe (from :func:`hwnas.prune` or :func:`mark_pruned`)."""
    origin = getattr(model, "hwnas_origin", None)
    return isinstance(origin, dict) and "conversion" in origin and "sample" in origin


def save_pruned(pruned: nn.Module, path: str | os.PathLike) -> Path:
    """Write a pruned model: its recipe and its current weights (atomically, no pickled objects).

    Raises:
        TypeError: ``pruned`` carries no recipe (it was not made by :func:`hwnas.prune` or marked with
            :func:`mark_pruned`), or the recipe is not JSON-able.
    """
    if not is_pruned(pruned):
        raise TypeError(f"save_pruned expects a model from hwnas.prune (or hwnas.export marked with mark_pruned), got a "
                        f"{type(pruned).__name__} without its recipe; for a converted space use hwnas.save.")
    origin = pruned.hwnas_origin
    try:
        recipe = json.dumps(origin)
    except TypeError as e:
        raise TypeError(f"save_pruned: the pruning recipe must be JSON-able: {e}") from e
    return write_weights(path, PRUNED_FORMAT, _VERSION, recipe, pruned.state_dict())


def file_format(path: str | os.PathLike) -> str | None:
    """The ``format`` of an hwnas file (converted space or pruned model), or ``None`` when it is neither."""
    try:
        payload = torch.load(Path(path), map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - not one of ours
        return None
    return payload.get("format") if isinstance(payload, dict) else None


def restore_pruned(model: Any, path: str | os.PathLike) -> nn.Module:
    """Rebuild a pruned model saved by :func:`save_pruned` from the original (unpruned) model.

    Args:
        model: the original model (an instance, a function returning one, or ``(function, args, kwargs)``).
        path: the file.

    Returns:
        The pruned model with the saved weights and its recipe (``hwnas_origin``).

    Raises:
        FileNotFoundError, ConvertedFileError: no such file, not a pruned-model file, changed after saving, or
            the model does not convert to the recorded space (the error names the first difference).
    """
    model = as_model(model, "hwnas.prune_io.restore_pruned")
    path = Path(path)
    payload = _load(path, PRUNED_FORMAT)
    if payload.get("version") != _VERSION:
        raise ConvertedFileError(f"restore_pruned: {str(path)!r} has version {payload.get('version')!r}; this hwnas "
                                 f"reads version {_VERSION}.")
    origin = json.loads(payload["recipe"])
    saved = Conversion.from_dict(origin["conversion"])
    if type(model).__name__ != saved.model:
        raise ConvertedFileError(f"restore_pruned: {str(path)!r} holds a pruned {saved.model}, but the model given is "
                                 f"a {type(model).__name__}; pass the original (unpruned) {saved.model}.")
    dummy = tuple(torch.zeros(i["shape"], dtype=getattr(torch, i["dtype"])) for i in saved.inputs)
    space = convert(model, dummy if len(dummy) > 1 else dummy[0], saved.mode, saved.channel_ratios,
                    saved.channel_divisor, rules=saved.rules, _permute=False)
    diff = _first_difference(saved.structure(), space.conversion.structure())
    if diff:
        raise ConvertedFileError(f"restore_pruned: the model given does not convert to the space recorded in "
                                 f"{str(path)!r}; first difference at conversion{diff}. Pass the same model class "
                                 "built with the same arguments as when it was pruned.")
    pruned = export_pruned(space, origin["sample"])
    try:
        pruned.load_state_dict(payload["state_dict"], strict=True)
    except RuntimeError as e:
        raise ConvertedFileError(f"restore_pruned: the weights in {str(path)!r} do not fit the pruned model: {e}") \
            from e
    pruned.hwnas_origin = origin
    return pruned
