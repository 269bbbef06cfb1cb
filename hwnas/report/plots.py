"""Plots of a search: every trial and the Pareto front of a cost against the score, as a PNG.

Drawn with matplotlib's object API on an Agg canvas, so it works without a display and never changes
the caller's pyplot backend.

Example:
    >>> import os, tempfile
    >>> from hwnas.search import History, Trial
    >>> h = History([Trial(i, {"w": i}, 0.5 + 0.1 * i, {"flops": 10.0 + i * i}) for i in range(5)])
    >>> path = plot_pareto(h, x="flops", y="score", path=os.path.join(tempfile.mkdtemp(), "pareto.png"))
    >>> path.stat().st_size > 1000
    True
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hwnas.search.history import History, Trial, read_history_csv

__all__ = ["plot_pareto", "save_figure"]


def _as_history(history: Any) -> History:
    if isinstance(history, History):
        return history
    if isinstance(history, (str, os.PathLike)):
        return read_history_csv(history)
    if hasattr(history, "history") and isinstance(history.history, History):  # a SearchResult
        return history.history
    if hasattr(history, "to_dict") and hasattr(history, "columns"):  # a DataFrame of History.to_csv's layout
        import json

        trials = []
        for i, row in enumerate(history.to_dict("records")):
            metrics = {k: float(v) for k, v in row.items()
                       if k not in ("trial", "batch", "score", "eval_s", "sample") and isinstance(v, (int, float))}
            sample = json.loads(row["sample"]) if isinstance(row.get("sample"), str) else {}
            trials.append(Trial(int(row.get("trial", i)), sample, float(row["score"]), metrics))
        return History(trials)
    if isinstance(history, Sequence) and all(isinstance(t, Trial) for t in history):
        return History(history)
    raise TypeError(f"plot_pareto needs a History, a SearchResult, a list of Trials, a DataFrame or the path of a "
                    f"history CSV, got {type(history).__name__}.")


def plot_pareto(history: Any, x: str = "latency_ms", y: str = "score", path: str | os.PathLike = "pareto.png",
                x_mode: str = "min", y_mode: str = "max", title: str | None = None,
                highlight: dict[str, dict[str, Any]] | None = None, budget: float | None = None,
                dpi: int = 120, x_label: str | None = None, y_label: str | None = None) -> Path:
    """Scatter every trial's ``x`` against ``y``, draw the Pareto front, and write a PNG.

    Args:
        history: a :class:`~hwnas.search.History`, a search result, a list of trials, a DataFrame or a CSV path
            (as written by ``History.to_csv``).
        x, y: column names: ``"score"``, a metric (``"latency_ms"``, ``"flops"``, ``"params"``) or an extra value.
        path: the PNG to write (folders are created).
        x_mode, y_mode: which direction is better on each axis (``"min"`` / ``"max"``).
        title: the plot's title (default: ``"<y> vs <x>"``).
        highlight: extra labelled points, name -> ``{x: value, y: value}`` (e.g. the largest and smallest
            subnets); points missing either value are skipped.
        budget: draw a dashed vertical line at this ``x`` (e.g. the latency constraint).
        dpi: resolution.
        x_label, y_label: axis labels (default: the column names), e.g. ``"latency_ms (LUT build speed)"`` or
            ``"params"`` for a search whose score is the parameter count.

    Returns:
        The path written.

    Raises:
        KeyError: ``x`` or ``y`` is not a column of the history (the message lists the columns).
        ValueError: the history has no trial with finite ``x`` and ``y``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    h = _as_history(history)
    front = h.pareto_front(x, y, x_mode, y_mode)
    pts = [(t.value(x), t.value(y)) for t in h if math.isfinite(t.value(x)) and math.isfinite(t.value(y))]
    if not pts:
        raise ValueError(f"plot_pareto: no trial has finite {x!r} and {y!r} ({len(h)} trials); nothing to plot.")
    fig = Figure(figsize=(6.4, 4.4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=14, c="#9aa5b1", alpha=0.7,
               label=f"trials ({len(pts)})")
    ax.plot([t.value(x) for t in front], [t.value(y) for t in front], "-o", color="#d1495b", ms=5, lw=1.5,
            drawstyle="steps-post" if x_mode == "min" and y_mode == "max" else "default",
            label=f"Pareto front ({len(front)})")
    for name, point in (highlight or {}).items():
        px, py = point.get(x), point.get(y)
        if px is None or py is None or not (math.isfinite(px) and math.isfinite(py)):
            continue
        ax.scatter([px], [py], s=60, marker="*", zorder=5, label=name)
        ax.annotate(name, (px, py), textcoords="offset points", xytext=(5, 5), fontsize=8)
    if budget is not None:
        ax.axvline(budget, ls="--", lw=1, color="#444444", label=f"budget {budget:.4g}")
    ax.set_xlabel(x_label or x)
    ax.set_ylabel(y_label or y)
    ax.set_title(title or f"{y_label or y} vs {x_label or x}")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return save_figure(fig, path, dpi=dpi)


def save_figure(fig: Any, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Write a matplotlib figure atomically (:func:`hwnas.io.atomic_writer`), in the format of the file's suffix."""
    from hwnas.io import atomic_writer

    path = Path(path)
    with atomic_writer(path) as f:
        fig.savefig(f, dpi=dpi, format=path.suffix.lstrip(".").lower() or "png")
    return path
