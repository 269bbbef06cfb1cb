"""Safe save/restore of converted spaces: the recipe (JSON), the weights (tensors) and the search state.

The file is written with ``torch.save`` but holds only a dict of strings and tensors, and is read back
with ``torch.load(weights_only=True)``, which refuses any other pickled object. A SHA-256 digest over the
recipe and every tensor detects a changed or truncated file. :func:`restore` does not unpickle a model:
it converts the *model you pass* again with the recorded options, checks that the conversion found the
same groups, choices, kernels and depths, and loads the saved weights into it.

Example:
    >>> import torch, hwnas, tempfile, os
    >>> from hwnas import zoo
    >>> model = zoo.create("squeezenet1_0", num_classes=10).eval()
    >>> space = hwnas.convert(model, torch.randn(1, 3, 64, 64))
    >>> space.search_state["best"] = space.min_sample()
    >>> path = hwnas.save(space, os.path.join(tempfile.mkdtemp(), "space.pt"))
    >>> again = hwnas.restore(zoo.create("squeezenet1_0", num_classes=10), path)
    >>> again.search_state["best"] == space.min_sample()
    True
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hwnas.convert.api import as_model, convert
from hwnas.convert.space import Conversion, ConvertedSpace
from hwnas.io import atomic_writer

__all__ = ["save", "restore", "ConvertedFileError", "FORMAT", "VERSION"]

FORMAT = "hwnas.converted_space"
VERSION = 1


class ConvertedFileError(ValueError):
    """A file is not a converted space written by :func:`hwnas.save`, is damaged, or does not fit the model."""


def _digest(recipe: str, state: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256(recipe.encode("utf-8"))
    for key in sorted(state):
        t = state[key].detach().cpu().contiguous()
        h.update(f"\0{key}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def save(space: ConvertedSpace, path: str | os.PathLike, search_state: dict[str, Any] | None = None) -> Path:
    """Write a converted space: its recipe, weights and search state (atomically, no pickled objects).

    Args:
        space: a space from :func:`hwnas.convert`.
        path: the file to write (conventionally ``.pt``).
        search_state: a JSON-able dict (e.g. ``{"best": sample, "history": [...]}``); defaults to
            ``space.search_state``.

    Returns:
        The path written.

    Raises:
        TypeError: ``space`` is not a converted space, or the search state is not JSON-able.
    """
    if not isinstance(space, ConvertedSpace):
        raise TypeError(f"hwnas.save expects a space from hwnas.convert (a ConvertedSpace), got "
                        f"{type(space).__name__}; for a sample use hwnas.save_arch, for a plain model torch.save its "
                        "state_dict.")
    state = space.search_state if search_state is None else search_state
    try:
        recipe = json.dumps({"conversion": space.conversion.to_dict(), "search_state": state})
    except TypeError as e:
        raise TypeError(f"hwnas.save: the search state must be JSON-able (dicts, lists, strings, numbers): {e}; "
                        "store samples as plain dicts and numbers as int/float.") from e
    return write_weights(path, FORMAT, VERSION, recipe, space.state_dict())


def write_weights(path: str | os.PathLike, fmt: str, version: int, recipe: str,
                  state_dict: dict[str, torch.Tensor]) -> Path:
    """Write ``{"format", "version", "recipe", "state_dict", "sha256"}`` with ``torch.save`` atomically
    (:func:`hwnas.io.atomic_writer`: ordinary permissions, no temp file left on any exit). Shared by :func:`save` and
    :func:`hwnas.prune_io.save_pruned`."""
    tensors = {k: v.detach().cpu().clone() for k, v in state_dict.items()}
    payload = {"format": fmt, "version": version, "recipe": recipe, "state_dict": tensors,
               "sha256": _digest(recipe, tensors)}
    with atomic_writer(path) as f:
        torch.save(payload, f)
    return Path(path)


def _load(path: Path, fmt: str = FORMAT) -> dict[str, Any]:
    if not path.exists():
        raise FileNotFoundError(f"hwnas.restore: {str(path)!r} does not exist; pass the path written by hwnas.save.")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, AttributeError) as e:
        raise ConvertedFileError(f"hwnas.restore: {str(path)!r} is not a converted space written by hwnas.save (it "
                                 f"cannot be read as plain tensors and strings: {type(e).__name__}: "
                                 f"{str(e).splitlines()[0] if str(e) else ''}). Files holding other pickled objects "
                                 "are refused on purpose.") from e
    if not isinstance(payload, dict) or payload.get("format") != fmt:
        got = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise ConvertedFileError(f"hwnas.restore: {str(path)!r} is not a converted space: expected format {fmt!r}, "
                                 f"got {got!r}. Write it with hwnas.save(space, path) (a pruned model: "
                                 "hwnas.prune_io.save_pruned).")
    if payload.get("version") != VERSION:
        raise ConvertedFileError(f"hwnas.restore: {str(path)!r} has format version {payload.get('version')!r}; this "
                                 f"hwnas reads version {VERSION}. Re-save it with this hwnas version.")
    recipe, tensors, digest = payload.get("recipe"), payload.get("state_dict"), payload.get("sha256")
    if not isinstance(recipe, str) or not isinstance(tensors, dict) or not isinstance(digest, str) or \
            not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in tensors.items()):
        raise ConvertedFileError(f"hwnas.restore: {str(path)!r} misses its recipe, weights or digest, or holds "
                                 "something else; the file is damaged. Save the space again.")
    if _digest(recipe, tensors) != digest:
        raise ConvertedFileError(f"hwnas.restore: {str(path)!r} was changed after it was saved (its SHA-256 digest "
                                 "does not match its content); refusing to load it. Save the space again.")
    return payload


def _first_difference(a: Any, b: Any, where: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in list(a) + [k for k in b if k not in a]:
            if k not in a or k not in b:
                return f"{where}.{k}: saved {a.get(k)!r}, got {b.get(k)!r}"
            d = _first_difference(a[k], b[k], f"{where}.{k}")
            if d:
                return d
        return ""
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"{where}: saved {len(a)} entries, got {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            d = _first_difference(x, y, f"{where}[{i}]")
            if d:
                return d
        return ""
    return "" if a == b else f"{where}: saved {a!r}, got {b!r}"


def restore(model: nn.Module, path: str | os.PathLike, dummy_input: Any = None) -> ConvertedSpace:
    """Rebuild a converted space saved by :func:`save` from the original model, and load its weights.

    Args:
        model: an instance of the model class that was converted (its weights are replaced by the saved ones),
            or a function (or ``(function, args, kwargs)``) that builds one.
        path: the file written by :func:`hwnas.save`.
        dummy_input: an input for tracing; defaults to zeros of the recorded input shapes.

    Returns:
        The converted space with the saved weights, recipe (``conversion``) and ``search_state``.

    Raises:
        FileNotFoundError: no such file.
        ConvertedFileError: not a file written by :func:`hwnas.save`, changed after saving, or the model does
            not convert to the same space (the error names the first difference).
    """
    model = as_model(model, "hwnas.restore")
    path = Path(path)
    payload = _load(path)
    recipe = json.loads(payload["recipe"])
    saved = Conversion.from_dict(recipe["conversion"])
    if dummy_input is None:
        dummy_input = tuple(torch.zeros(i["shape"], dtype=getattr(torch, i["dtype"])) for i in saved.inputs)
        dummy_input = dummy_input[0] if len(dummy_input) == 1 else dummy_input
    if type(model).__name__ != saved.model:
        raise ConvertedFileError(f"hwnas.restore: {str(path)!r} holds a converted {saved.model}, but the model given is "
                                 f"a {type(model).__name__}; pass an instance of {saved.model}.")
    space = convert(model, dummy_input, saved.mode, saved.channel_ratios, saved.channel_divisor, rules=saved.rules,
                    _permute=False)
    diff = _first_difference(saved.structure(), space.conversion.structure())
    if diff:
        raise ConvertedFileError(f"hwnas.restore: the model given does not convert to the space saved in {str(path)!r}; "
                                 f"first difference at conversion{diff}. Pass the same model class built with the "
                                 "same arguments (e.g. num_classes) as when it was saved.")
    try:
        space.load_state_dict(payload["state_dict"], strict=True)
    except RuntimeError as e:
        raise ConvertedFileError(f"hwnas.restore: the weights in {str(path)!r} do not fit the rebuilt space: {e}") from e
    space.conversion = saved
    space.search_state = recipe.get("search_state") or {}
    return space
