"""Search checkpoints: written atomically under an advisory lock, read back with every field checked.

A checkpoint is ``{"hwnas_search": 1, "config": {...}, "num_proposed": n, "num_rejected": n, "trials": [...]}``
(each trial as :meth:`~hwnas.search.history.Trial.to_json` writes it). Reading it back
(:func:`replay`) trusts nothing: every number must be a number of the right kind, trials must be numbered
in order, and each trial's profiled metrics are recomputed and must match, so an edited or damaged file
is refused with a :class:`~hwnas.search.errors.CheckpointError` naming the file and the field.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from hwnas.io import FileInUseError, atomic_write_json, lock_file, read_json
from hwnas.search.errors import CheckpointError
from hwnas.search.history import History, Trial
from hwnas.search.strategies import Chain

__all__ = ["CHECKPOINT_VERSION", "Saver", "lock", "replay", "jsonable", "restore_sample"]

logger = logging.getLogger(__name__)

CHECKPOINT_VERSION = 1


def jsonable(v: Any) -> Any:
    """``v`` as it reads back from JSON (tuples become lists, and so on)."""
    return json.loads(json.dumps(v))


def restore_sample(raw: dict[str, Any], choices: dict[str, tuple], where: str) -> dict[str, Any]:
    """A recorded sample with each value replaced by the choice's own value (``[3, 3]`` back to ``(3, 3)``)."""
    out = {}
    for label, values in choices.items():
        if label not in raw:
            raise CheckpointError(f"{where}: the recorded sample has no label {label!r}; the checkpoint belongs to "
                                  "another space. Use another checkpoint path or delete the file.")
        match = [v for v in values if jsonable(v) == raw[label]]
        if not match:
            raise CheckpointError(f"{where}: label {label!r} was recorded as {raw[label]!r}, which is not one of "
                                  f"its choices {list(values)!r}; the checkpoint belongs to another space.")
        out[label] = match[0]
    return out


def lock(path: Path) -> Any:
    """The advisory lock ``<path>.lock`` (held; call ``.release()``), or :class:`CheckpointError` when in use."""
    try:
        return lock_file(path, "search checkpoint")
    except FileInUseError as e:
        raise CheckpointError(f"{e} Two searches on one checkpoint would overwrite each other's progress.") from None


class Saver:
    """Writes the checkpoint and the history CSV (atomically)."""

    def __init__(self, path: Path | None, history_csv: Any, config: dict, chain: Chain, history: History):
        self.path, self.history_csv, self.config, self.chain, self.history = path, history_csv, config, chain, history

    def __call__(self) -> None:
        if self.path is not None:
            atomic_write_json(self.path, {"hwnas_search": CHECKPOINT_VERSION, "config": self.config,
                                          "num_proposed": self.chain.num_proposed_,
                                          "num_rejected": self.chain.num_rejected_,
                                          "trials": [t.to_json() for t in self.history]})
        if self.history_csv is not None:
            self.history.to_csv(self.history_csv)


def _number(value: Any, where: str, field: str, *, allow_nan: bool = False, min_value: float | None = None) -> float:
    """A number read from a checkpoint, or :class:`CheckpointError` naming the file, the field and the value."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CheckpointError(f"{where}: field {field!r} is {value!r} ({type(value).__name__}), not a number; the file "
                              "was edited or damaged. Delete it (or pass another checkpoint path) to start over.")
    value = float(value)
    if math.isnan(value) and allow_nan:
        return value
    if not math.isfinite(value) or (min_value is not None and value < min_value):
        want = "a finite number" + (f" >= {min_value:g}" if min_value is not None else "")
        raise CheckpointError(f"{where}: field {field!r} is {value!r}, expected {want}; the file was edited or "
                              "damaged. Delete it (or pass another checkpoint path) to start over.")
    return value


def _count(value: Any, where: str, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise CheckpointError(f"{where}: field {field!r} is {value!r}, expected an int >= 0; the file was edited or "
                              "damaged. Delete it (or pass another checkpoint path) to start over.")
    return value


def _trial_from_json(raw: Any, position: int, where: str) -> Trial:
    """One recorded trial, every field checked (scores may be NaN: a non-finite score is recorded as NaN)."""
    here = f"{where}, trials[{position}]"
    if not isinstance(raw, dict):
        raise CheckpointError(f"{here} is {type(raw).__name__}, not a JSON object; the file was edited or damaged.")
    for name in ("trial", "sample", "score"):
        if name not in raw:
            raise CheckpointError(f"{here} has no field {name!r}; the file was edited or damaged. Delete it (or pass "
                                  "another checkpoint path) to start over.")
    index = _count(raw["trial"], here, "trial")
    if index != position:
        raise CheckpointError(f"{here}: field 'trial' is {index}, expected {position} (trials are numbered in "
                              "order); the file was edited or damaged.")
    if not isinstance(raw["sample"], dict):
        raise CheckpointError(f"{here}: field 'sample' is {type(raw['sample']).__name__}, not a JSON object.")
    metrics, extra = raw.get("metrics", {}), raw.get("extra", {})
    for name, d in (("metrics", metrics), ("extra", extra)):
        if not isinstance(d, dict):
            raise CheckpointError(f"{here}: field {name!r} is {type(d).__name__}, not a JSON object.")
    repeat_of = raw.get("repeat_of", -1)
    if repeat_of != -1 and _count(repeat_of, here, "repeat_of") >= index:
        raise CheckpointError(f"{here}: field 'repeat_of' is {repeat_of}, not an earlier trial.")
    return Trial(index, dict(raw["sample"]), _number(raw["score"], here, "score", allow_nan=True),
                 {k: _number(v, here, f"metrics.{k}", allow_nan=True) for k, v in metrics.items()},
                 _number(raw.get("eval_s", 0.0), here, "eval_s", min_value=0.0),
                 _count(raw.get("batch", 0), here, "batch"),
                 {k: _number(v, here, f"extra.{k}", allow_nan=True) for k, v in extra.items()}, repeat_of=repeat_of)


def _check_metrics(t: Trial, profs: dict[str, Any], where: str) -> None:
    """The recorded metrics must equal the profilers' values now (a tampered checkpoint is refused)."""
    here = f"{where}, trial {t.index}"
    if set(t.metrics) != set(profs):
        raise CheckpointError(f"{here} records metrics {sorted(t.metrics)}, but this search profiles {sorted(profs)}; "
                              "the file was edited or belongs to another search.")
    for metric, prof in profs.items():
        now, then = float(prof.profile(t.sample)), t.metrics[metric]
        same = (math.isnan(now) and math.isnan(then)) or math.isclose(now, then, rel_tol=1e-9, abs_tol=1e-12)
        if not same:
            raise CheckpointError(
                f"{here}: recorded {metric} = {then!r}, but {type(prof).__name__} gives {now!r} for its sample "
                f"{json.dumps(t.sample)}. The checkpoint was edited, or the profiler (its LUT or predictor) changed "
                "since it was written; resume with the same profilers, or start over with another path.")


def replay(path: Path, config: dict, chain: Chain, choices: dict[str, tuple], history: History, sign: float,
            profs: dict[str, Any], max_trials: int) -> bool:
    """Replay a checkpoint's trials through ``chain`` into ``history``; True when it holds more than ``max_trials``.

    Every number read is checked (scores are numbers or NaN, metrics, ``eval_s`` and counts finite and
    non-negative, trials numbered in order), and each trial's profiled metrics are recomputed by the
    profilers (microseconds each) and must equal the recorded ones, so a checkpoint whose metrics were
    edited is refused. The scores cannot be recomputed (that would mean running ``score_func`` again):
    a checkpoint with an edited *score* but true metrics is accepted, as the file is the only record of it.

    A checkpoint with more trials than ``max_trials`` replays only the first ``max_trials`` (the same trials
    an uninterrupted run with that ``max_trials`` would have made) and the file is left as it is: the later
    trials stay on disk for a resume with a larger ``max_trials``.
    """
    where = f"checkpoint {str(path)!r}"
    try:
        data = read_json(path, "search checkpoint")
    except ValueError as e:
        raise CheckpointError(f"{e} Delete it (or pass another checkpoint path) to start over.") from None
    if not isinstance(data, dict) or data.get("hwnas_search") != CHECKPOINT_VERSION:
        raise CheckpointError(f"{str(path)!r} is not a hwnas search checkpoint (version {CHECKPOINT_VERSION}); "
                              "pass another checkpoint path or delete the file.")
    old = data.get("config", {})
    if not isinstance(old, dict):
        raise CheckpointError(f"{where}: field 'config' is {type(old).__name__}, not a JSON object.")
    diff = [k for k in config if old.get(k) != config[k]]
    if diff:
        details = "; ".join(f"{k}: checkpoint has {old.get(k)!r}, this search has {config[k]!r}" for k in diff)
        raise CheckpointError(f"checkpoint {str(path)!r} belongs to another search ({details}). Resume with the "
                              "same settings, or pass another checkpoint path / delete the file to start over.")
    for name in ("num_proposed", "num_rejected"):
        if name in data:
            _count(data[name], where, name)
    raw_trials = data.get("trials", [])
    if not isinstance(raw_trials, list):
        raise CheckpointError(f"{where}: field 'trials' is {raw_trials!r} ({type(raw_trials).__name__}), expected a "
                              "list of trials; the file was edited or damaged. Delete it to start over.")
    trials = [_trial_from_json(t, i, where) for i, t in enumerate(raw_trials)]
    for a, b in zip(trials, trials[1:]):
        if b.batch < a.batch:
            raise CheckpointError(f"{where}, trial {b.index}: field 'batch' is {b.batch}, below the previous trial's "
                                  f"{a.batch}; the file was edited or damaged.")
    truncated = len(trials) > max_trials
    if truncated:
        logger.warning("%s holds %d trials, more than max_trials=%d: returning the first %d; the file is left "
                       "unchanged (resume with a larger max_trials to use the rest).", where, len(trials), max_trials,
                       max_trials)
        trials = trials[:max_trials]
    i = 0
    while i < len(trials):
        batch = [t for t in trials[i:] if t.batch == trials[i].batch]
        for t in batch:
            t.sample = restore_sample(t.sample, choices, f"{where}, trial {t.index}")
            _check_metrics(t, profs, where)
            first = trials[t.repeat_of] if t.repeat_of >= 0 else None
            if first is not None and first.score != t.score and not (math.isnan(t.score) and math.isnan(first.score)):
                raise CheckpointError(f"{where}, trial {t.index}: a repeat of trial {t.repeat_of} with another score "
                                      f"({t.score!r} against {first.score!r}); the file was edited.")
            proposed = chain.propose()
            if proposed != t.sample:
                raise CheckpointError(
                    f"checkpoint {str(path)!r}: replaying trial {t.index}, the strategy proposed {proposed} but the "
                    f"checkpoint recorded {t.sample}. The strategy, its filters or profilers, or the seed changed "
                    "since it was written; resume with the same settings, or start over with another path.")
        for t in batch:
            history._append(t)
            chain.tell(t.sample, sign * t.score if math.isfinite(t.score) else float("nan"))
        i += len(batch)
    logger.info("resumed %d trials from %s", len(history), path)
    return truncated
