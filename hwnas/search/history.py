"""Search history: one :class:`Trial` per evaluated sample, CSV in and out, the Pareto front.

The CSV has one row per trial: ``trial``, ``batch``, ``score``, one column per profiled metric
(``flops``, ``params``, ``latency_ms``, ...), any extra values the score function returned, the
seconds the evaluation took (``eval_s``) and the sample as a JSON object (``sample``).

Example:
    >>> h = History([Trial(0, {"w": 8}, 0.5, {"flops": 10.0}), Trial(1, {"w": 16}, 0.9, {"flops": 30.0}),
    ...              Trial(2, {"w": 12}, 0.4, {"flops": 20.0})])
    >>> [t.index for t in h.pareto_front(x="flops", y="score")]
    [0, 1]
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hwnas.io import atomic_write_text

__all__ = ["Trial", "History", "read_history_csv"]


@dataclass
class Trial:
    """One evaluated sample.

    Attributes:
        index: 0-based position in the search.
        sample: the sample (label -> value).
        score: what the score function returned (NaN when it returned a non-finite value).
        metrics: metric name -> profiled value (``flops``, ``params``, ``latency_ms``, ...).
        eval_s: seconds the score function took.
        batch: which batch of parallel evaluations it belonged to (the strategy proposes a whole batch
            before it hears any of its scores).
        extra: further numbers the score function returned next to ``"score"``.
        repeat_of: ``-1``, or the index of an earlier trial of the same subnet (same canonical sample) whose
            score and extra values this trial reuses: a search never calls the score function twice for a
            subnet (``eval_s`` is then 0). The history CSV has it in the column ``cached_from`` (empty for a
            trial that was scored).
    """

    index: int
    sample: dict[str, Any]
    score: float
    metrics: dict[str, float] = field(default_factory=dict)
    eval_s: float = 0.0
    batch: int = 0
    extra: dict[str, float] = field(default_factory=dict)
    repeat_of: int = -1

    @property
    def cached(self) -> bool:
        """Whether this trial is a cache hit: a subnet scored before, whose score it reuses (:attr:`repeat_of`)."""
        return self.repeat_of >= 0

    def value(self, name: str) -> float:
        """``"score"``, a metric, an extra value, ``"eval_s"`` or ``"trial"`` by name."""
        if name == "score":
            return self.score
        if name in ("trial", "index"):
            return float(self.index)
        if name == "eval_s":
            return self.eval_s
        if name in self.metrics:
            return self.metrics[name]
        if name in self.extra:
            return self.extra[name]
        raise KeyError(name)

    def to_json(self) -> dict[str, Any]:
        out = {"trial": self.index, "batch": self.batch, "sample": self.sample, "score": self.score,
               "metrics": self.metrics, "extra": self.extra, "eval_s": self.eval_s}
        if self.repeat_of >= 0:
            out["repeat_of"] = self.repeat_of
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Trial:
        """A trial from :meth:`to_json` (unchecked: the search checks checkpoints field by field)."""
        return cls(int(d["trial"]), dict(d["sample"]), float(d["score"]), dict(d.get("metrics", {})),
                   float(d.get("eval_s", 0.0)), int(d.get("batch", 0)), dict(d.get("extra", {})),
                   int(d.get("repeat_of", -1)))


class History(Sequence):
    """The trials of a search, in order (a read-only sequence of :class:`Trial`)."""

    def __init__(self, trials: Iterable[Trial] = ()):
        self._trials = list(trials)

    def __len__(self) -> int:
        return len(self._trials)

    def __getitem__(self, i):
        return History(self._trials[i]) if isinstance(i, slice) else self._trials[i]

    def __iter__(self) -> Iterator[Trial]:
        return iter(self._trials)

    def __repr__(self) -> str:
        return f"History({len(self)} trials)"

    def _append(self, trial: Trial) -> None:
        self._trials.append(trial)

    @property
    def columns(self) -> list[str]:
        """Column names: score, metrics and extras seen in any trial."""
        cols: list[str] = ["score"]
        for t in self._trials:
            for name in (*t.metrics, *t.extra):
                if name not in cols:
                    cols.append(name)
        return cols

    def best(self, mode: str = "max") -> Trial | None:
        """The trial with the best finite score (the first one on ties), or ``None``."""
        finite = [t for t in self._trials if math.isfinite(t.score)]
        if not finite:
            return None
        sign = 1.0 if mode == "max" else -1.0
        return max(finite, key=lambda t: (sign * t.score, -t.index))

    def pareto_front(self, x: str, y: str = "score", x_mode: str = "min", y_mode: str = "max") -> list[Trial]:
        """Trials that no other trial beats in both ``x`` and ``y``, sorted by ``x``.

        Args:
            x, y: column names (``"score"``, a metric such as ``"latency_ms"``, an extra value).
            x_mode, y_mode: ``"min"`` or ``"max"``: which direction is better on each axis.
        """
        for name in (x, y):
            if name not in self.columns and name not in ("trial", "eval_s"):
                raise KeyError(f"history has no column {name!r}; it has {self.columns}.")
        sx = 1.0 if x_mode == "min" else -1.0
        sy = -1.0 if y_mode == "max" else 1.0
        pts = [(sx * t.value(x), sy * t.value(y), t) for t in self._trials
               if math.isfinite(t.value(x)) and math.isfinite(t.value(y))]
        pts.sort(key=lambda p: (p[0], p[1], p[2].index))
        front, best_y = [], math.inf
        for _, py, t in pts:
            if py < best_y:
                front.append(t)
                best_y = py
        return front

    def to_rows(self) -> tuple[list[str], list[list[Any]]]:
        """Header and rows of the CSV."""
        metrics: list[str] = []
        extras: list[str] = []
        for t in self._trials:
            metrics += [m for m in t.metrics if m not in metrics]
            extras += [e for e in t.extra if e not in extras and e not in t.metrics]
        header = ["trial", "batch", "score", *metrics, *extras, "eval_s", "cached_from", "sample"]
        rows = [[t.index, t.batch, t.score, *(t.metrics.get(m, "") for m in metrics),
                 *(t.extra.get(e, "") for e in extras), t.eval_s, t.repeat_of if t.repeat_of >= 0 else "",
                 json.dumps(t.sample)] for t in self._trials]
        return header, rows

    def to_csv(self, path: str | os.PathLike) -> Path:
        """Write the history as CSV (atomically) and return the path."""
        header, rows = self.to_rows()
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)
        return atomic_write_text(path, buf.getvalue())

    def to_dataframe(self) -> Any:
        """The CSV's table as a ``pandas.DataFrame``."""
        import pandas as pd

        header, rows = self.to_rows()
        return pd.DataFrame(rows, columns=header)


def read_history_csv(path: str | os.PathLike) -> History:
    """Read a CSV written by :meth:`History.to_csv` back into a :class:`History`.

    Raises:
        FileNotFoundError: no such file.
        ValueError: missing columns, or a cell that is not a number (or, for ``sample``, a JSON object),
            naming the file, the line and the column.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"history CSV {str(path)!r} does not exist; check the path.")
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        need = {"trial", "score", "sample"}
        if reader.fieldnames is None or not need <= set(reader.fieldnames):
            raise ValueError(f"{str(path)!r} is not a hwnas history CSV: expected columns {sorted(need)} "
                             f"(and metrics), got {reader.fieldnames}.")
        fixed = {"trial", "batch", "score", "eval_s", "sample", "cached_from"}
        trials = []
        for line, row in enumerate(reader, start=2):
            where = f"history CSV {str(path)!r}, line {line}"

            def num(column: str, cast: Any = float, default: str | None = None, where: str = where,
                    row: dict = row) -> Any:
                text = row.get(column)
                text = default if text in ("", None) and default is not None else text
                try:
                    return cast(text)
                except (TypeError, ValueError):
                    raise ValueError(f"{where}: column {column!r} holds {text!r}, not a number; was the file "
                                     "edited?") from None

            try:
                sample = json.loads(row["sample"] or "")
            except json.JSONDecodeError:
                sample = None
            if not isinstance(sample, dict):
                raise ValueError(f"{where}: column 'sample' holds {row['sample']!r}, not a JSON object of "
                                 "label -> value; was the file edited?")
            values = {k: num(k) for k, v in row.items() if k not in fixed and k is not None and v not in ("", None)}
            trials.append(Trial(num("trial", int), sample, num("score"), values, num("eval_s", default="0"),
                                num("batch", int, default="0"), repeat_of=num("cached_from", int, default="-1")))
    return History(trials)
