"""The top-level functions ``hwnas.search`` and ``hwnas.profile`` (plain functions; their parts live in the
packages :mod:`hwnas.search` and :mod:`hwnas.profile`, which ``from hwnas.search import Random`` reaches as before).

``import hwnas`` binds the names ``hwnas.search``, ``hwnas.profile`` and ``hwnas.prune`` to the functions here,
so ``hwnas.search(...)`` calls and ``help(hwnas.search)`` documents the function; import the parts from their
modules: ``from hwnas.search import RegularizedEvolution``, ``from hwnas.profile import register_cost_rule``.
(``import hwnas.search as hs`` binds the function, as ``hwnas.search`` is; ``from hwnas import search`` too.
Attribute paths through the function, ``hwnas.search.Random``, do not exist: import the part.)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hwnas.export import export
from hwnas.report.summary import profile
from hwnas.search.run import SearchResult
from hwnas.search.run import run as _run

__all__ = ["search", "profile"]


def search(space: Any, dummy_input: Any, constraints: dict[str, Any] | None = None,
           score_func: Callable[[dict], Any] | None = None, **kwargs: Any) -> SearchResult:
    """Search ``space`` for the best-scoring subnet within ``constraints`` and export it.

    This is :func:`hwnas.search.run.run` with ``export_fn=hwnas.export``, so the result's ``subnet`` is the
    plain PyTorch model of the best sample; every keyword (``strategy``, ``max_trials``, ``seed``,
    ``profilers``, ``checkpoint``, ``history_csv``, ``executor``, ``mode``, ``progress``) is passed on.

    Args:
        space: the model space.
        dummy_input: an input tensor (its shape is what FLOPs and latency are counted at).
        constraints: upper bounds per metric, e.g. ``{"flops": "60%", "params": 3e6, "latency_ms": 4.0}``.
        score_func: ``sample -> score`` (higher is better unless ``mode="min"``).
        **kwargs: see :func:`hwnas.search.run.run`.

    Returns:
        A :class:`~hwnas.search.SearchResult` (``best_sample``, ``best_score``, ``best_metrics``, ``history``,
        ``subnet``).

    Example:
        >>> import torch, hwnas
        >>> from hwnas.search import Random
        >>> space = hwnas.spaces.create("digits")
        >>> result = hwnas.search(space, torch.randn(1, 1, 8, 8), {"params": "40%"},
        ...                       lambda s: s["s2.width"] + s["s1.width"], strategy=Random(), max_trials=20,
        ...                       progress=False)
        >>> sum(p.numel() for p in result.subnet.parameters()) == result.best_metrics["params"]
        True
    """
    if score_func is None:
        raise TypeError("hwnas.search needs score_func (sample -> score), e.g. a proxy such as "
                        "hwnas.FlopsProfiler(space, x).profile, or your validation accuracy after fine-tuning.")
    kwargs.setdefault("export_fn", export)
    return _run(space, dummy_input, constraints, score_func, **kwargs)
