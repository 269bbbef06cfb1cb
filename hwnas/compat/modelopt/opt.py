"""``modelopt.torch.opt`` over hwnas: ``import hwnas.compat.modelopt.opt as mto``.

- :func:`save` -> :func:`hwnas.save` for a searchable model (recipe, weights, search state with the active
  subnet), :func:`hwnas.prune_io.save_pruned` for a pruned / exported one. No pickled objects.
- :func:`restore` -> :func:`hwnas.restore` / :func:`hwnas.prune_io.restore_pruned`, from the original model
  or a function that builds it; the active subnet of a saved search space is made active again.
- :func:`modelopt_state` / :func:`restore_from_modelopt_state`: the recipe alone (JSON), then
  ``model.load_state_dict(weights)`` as in ModelOpt.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from hwnas.convert import ConvertedSpace
from hwnas.convert.api import as_model
from hwnas.convert.api import convert as _convert
from hwnas.convert.space import Conversion
from hwnas.convert.store import FORMAT as SPACE_FORMAT
from hwnas.convert.store import ConvertedFileError
from hwnas.convert.store import restore as _restore_space
from hwnas.convert.store import save as _save_space
from hwnas.prune_io import PRUNED_FORMAT, export_pruned, file_format, is_pruned, restore_pruned, save_pruned

__all__ = ["save", "restore", "modelopt_state", "restore_from_modelopt_state", "is_converted"]


def is_converted(model: Any) -> bool:
    """Whether ``model`` is a searchable (converted) model or a pruned model with its recipe."""
    return isinstance(model, ConvertedSpace) or is_pruned(model)


def save(model: nn.Module, f: str | os.PathLike) -> None:
    """Save a converted or pruned model (architecture recipe and weights) to the file ``f``."""
    if isinstance(model, ConvertedSpace):
        state = dict(model.search_state)
        active = getattr(model, "_hwnas_active", None)
        if active is not None:
            state["active"] = dict(active)
        _save_space(model, f, state)
    elif is_pruned(model):
        save_pruned(model, f)
    else:
        raise TypeError(f"mto.save expects a model from mtn.convert, mtn.search, mtn.export or mtp.prune, got a "
                        f"{type(model).__name__} that hwnas did not convert; torch.save(model.state_dict(), f) saves "
                        "a plain model.")


def restore(model: Any, f: str | os.PathLike) -> nn.Module:
    """Rebuild the saved model from the original model (an instance or a function that builds it).

    Returns:
        The searchable model (with its saved active subnet active) or the pruned model, with the saved weights.
    """
    fmt = file_format(f)
    if fmt == PRUNED_FORMAT:
        return restore_pruned(model, f)
    if fmt != SPACE_FORMAT and os.path.exists(f):
        raise ConvertedFileError(f"mto.restore: {str(f)!r} was not written by mto.save (format {fmt!r}); a plain "
                                 "state_dict loads with model.load_state_dict(torch.load(f)).")
    space = _restore_space(as_model(model, "mto.restore"), f)
    active = space.search_state.get("active")
    if active:
        space.apply_arch(active)
    return space


def modelopt_state(model: nn.Module) -> dict[str, Any]:
    """The recipe of a converted or pruned model (JSON-able; the weights are ``model.state_dict()``)."""
    if isinstance(model, ConvertedSpace):
        active = getattr(model, "_hwnas_active", None)
        return {"kind": "space", "conversion": model.conversion.to_dict(),
                "search_state": {**model.search_state, **({"active": dict(active)} if active else {})}}
    if is_pruned(model):
        return {"kind": "pruned", **model.hwnas_origin}
    raise TypeError(f"mto.modelopt_state expects a model from mtn.convert, mtn.search, mtn.export or mtp.prune, got "
                    f"a {type(model).__name__}.")


def restore_from_modelopt_state(model: Any, modelopt_state: dict[str, Any]) -> nn.Module:
    """Rebuild the architecture recorded by :func:`modelopt_state` on the original model; load the weights
    afterwards with ``model.load_state_dict(...)``."""
    if not isinstance(modelopt_state, dict) or modelopt_state.get("kind") not in ("space", "pruned"):
        raise ValueError("mto.restore_from_modelopt_state expects the dict returned by mto.modelopt_state(model).")
    conv = Conversion.from_dict(modelopt_state["conversion"])
    dummy = tuple(torch.zeros(i["shape"], dtype=getattr(torch, i["dtype"])) for i in conv.inputs)
    space = _convert(as_model(model, "mto.restore_from_modelopt_state"), dummy if len(dummy) > 1 else dummy[0],
                     conv.mode, conv.channel_ratios, conv.channel_divisor, rules=conv.rules, _permute=False)
    if modelopt_state["kind"] == "pruned":
        out = export_pruned(space, modelopt_state["sample"])
        out.hwnas_origin = {k: v for k, v in modelopt_state.items() if k != "kind"}
        return out
    space.search_state = dict(modelopt_state.get("search_state") or {})
    if space.search_state.get("active"):
        space.apply_arch(space.search_state["active"])
    return space
