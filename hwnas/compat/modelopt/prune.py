"""``modelopt.torch.prune`` over hwnas: ``import hwnas.compat.modelopt.prune as mtp``.

:func:`prune` -> :func:`hwnas.prune` (FastNAS: channels sorted by L1 norms, candidates scored by
``score_func(model)``; GradNAS: channels sorted by gradient scores from ``loss_func``); returns
``(pruned_model, state)``. ``mtp.fastnas.FastNASConfig()`` / ``mtp.gradnas.GradNASConfig()`` are the mode
configs (per-layer rules).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from hwnas.compat.modelopt import config as _config
from hwnas.compat.modelopt.config import FastNASConfig, GradNASConfig
from hwnas.convert.api import as_model
from hwnas.prune import default_collect
from hwnas.prune import prune as _prune

__all__ = ["prune", "fastnas", "gradnas", "FastNASConfig", "GradNASConfig"]


class fastnas:  # noqa: N801 - ModelOpt's module name: mtp.fastnas.FastNASConfig()
    """``mtp.fastnas.FastNASConfig``."""

    FastNASConfig = FastNASConfig


class gradnas:  # noqa: N801
    """``mtp.gradnas.GradNASConfig``."""

    GradNASConfig = GradNASConfig


def prune(model: Any, mode: Any, constraints: dict[str, Any], dummy_input: Any,
          config: dict[str, Any] | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """ModelOpt's ``mtp.prune``: the pruned model and the search state.

    Config keys (ModelOpt's): ``score_func`` (``model -> score``; required for ``"fastnas"``), ``loss_func``
    (``(output, batch) -> loss``; ``"gradnas"``), ``data_loader`` with ``collect_func`` and
    ``max_iter_data_loader`` (batch-norm recalibration, GradNAS's backward passes), or ``forward_loop``,
    ``checkpoint``, ``verbose``. hwnas's own: ``num_iters`` / ``max_trials`` (candidates, default 50),
    ``seed``, ``save_dir``.

    Returns:
        ``(pruned_model, state)``: a plain model with sliced weights that meets ``constraints`` (checked with
        fvcore and ``sum(numel)``), and ``{"best": {"config", "score", "metrics"}, "checked": ..., "mode": ...}``.
    """
    name, rules = _config.parse_mode(mode, "mtp.prune")
    cfg = dict(config or {})
    loader = cfg.get("data_loader")
    iters = int(cfg.get("max_iter_data_loader", 50))
    pruned = _prune(as_model(model, "mtp.prune"), dummy_input, constraints, loader, cfg.get("score_func"),
                    "gradnas" if name == "gradnas" else "fastnas", loss_func=cfg.get("loss_func"),
                    collect_func=cfg.get("collect_func") or default_collect, calib_batches=iters,
                    grad_batches=min(iters, int(cfg.get("num_grad_batches", 8))),
                    forward_loop=cfg.get("forward_loop"), max_trials=int(cfg.get("num_iters", cfg.get("max_trials", 50))),
                    seed=int(cfg.get("seed", 0)), rules=rules, checkpoint=cfg.get("checkpoint"),
                    save_dir=cfg.get("save_dir"), progress=bool(cfg.get("verbose", True)))
    origin = pruned.hwnas_origin
    state = {"best": {"config": dict(origin["sample"]), "score": origin["score"], "metrics": origin["metrics"]},
             "checked": origin["checked"], "mode": name, "num_trials": origin["trials"]}
    return pruned, state
