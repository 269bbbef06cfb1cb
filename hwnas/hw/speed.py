"""Speed checks: how much faster or slower the machine runs now than when a LUT was built.

A shared machine (a cloud VM, a laptop on battery, a box with other jobs) changes speed by a few percent
from hour to hour, all kernels alike. A LUT holds the build's subnets with their end-to-end times
(measured interleaved at the end of the build); :func:`speed_check` exports a few of them, measures them
again, and returns the median ratio now / at build (and a size term when models of different sizes moved
differently, see :class:`SpeedCheck`). ``lut.with_speed(check)`` then gives a LUT whose every kernel cost and
overhead is scaled by it (whole-model totals by the factor for their size), and ``hwnas lut speed-check
--write`` stores it in the LUT file (it loads with it from then on). The relative accuracy of the LUT does not depend
on this; absolute milliseconds on a drifting machine do.

The check compares paired runs with paired runs (each build subnet keeps its paired time in
``end_to_end_paired_ms``); the LUT's level is the steady-state median, hwnas's definition of latency, mapped from the
paired one at the build (:func:`calibrate_definition`). A speed check is one factor for every kernel: to carry a
LUT to another machine or runtime configuration, where kernel families move apart, use :func:`hwnas.hw.adapt`.

Example:
    >>> import torch, hwnas
    >>> from hwnas.hw import LUT, speed_check
    >>> space = hwnas.spaces.create("digits")
    >>> lut = LUT.load("digits")  # the shipped digits LUT (cpu-ort-1t)
    >>> check = speed_check(lut, space, torch.randn(1, 1, 8, 8), n=4)   # a few seconds
    >>> 0.5 < check.factor < 2.0
    True
    >>> profiler = hwnas.LatencyProfiler(space, torch.randn(1, 1, 8, 8), lut=lut.with_speed(check))
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hwnas.graph.subnet import export
from hwnas.hw.build import export_subnets, input_for
from hwnas.hw.lut import LUT, LUTError, now
from hwnas.hw.measure import measure_many, usable_cores
from hwnas.hw.session import export_onnx
from hwnas.space.space import collect_choices, validate_sample

__all__ = ["SpeedCheck", "size_factor", "at_model_speed", "copy_at_speed", "reference_subnets", "pairing_reference",
           "paired_speed_factor", "speed_check", "measure_subnets", "compare_with_build", "calibrate_definition",
           "fit_level"]

log = logging.getLogger(__name__)


@dataclass
class SpeedCheck:
    """The outcome of a speed check: :func:`speed_check` for a LUT, :func:`hwnas.predict.speed_check` for a
    predictor.

    Drift need not be uniform: on this project's host, models of a few ms slowed by 10-15% while models of 70-120
    ms kept their speed, in two runs a day apart (docs/predictor.md). When the models' times then are
    given, the check also fits a size term, ``ln(ratio) = intercept + slope * ln(time then)`` (Theil-Sen: the
    median of pairwise slopes, robust to a few odd models), and keeps it only if it predicts each model's ratio
    from the others' (leave-one-out) better than their median does; :meth:`factor_at` applies it.

    Attributes:
        factor: median over the models measured again of (end-to-end now) / (end-to-end then: at the LUT's
            build, or in the predictor's training).
        ratios: that ratio for each model.
        spread: half the interquartile range of the ratios (how consistently they moved).
        measured: when (ISO time).
        samples: the reference subnets' samples (a LUT) or the training models' configs (a predictor).
        times_ms: each model's time then (empty when not given).
        slope: the size term's slope (0: no size term, the factor is the same for every model).
        intercept: the size term's intercept (``ln(factor)`` without one).
        range_ms: the shortest and longest time then; :meth:`factor_at` holds the factor flat outside it.
        loo_rmse: leave-one-out RMS error of ``ln(ratio)``: ``{"median": ..., "size": ...}`` (empty when no size
            term was tried: fewer than :attr:`MIN_MODELS_FOR_SIZE` models or times within a factor of 2).
        level: the steady-state level over the paired one that the ratios include (a predictor's check with
            ``definition="steady"``, :func:`hwnas.predict.speed_check`); 1 for none.
    """

    factor: float
    ratios: list[float]
    spread: float
    measured: str
    samples: list[dict[str, Any]] = field(repr=False, default_factory=list)
    times_ms: list[float] = field(repr=False, default_factory=list)
    slope: float = 0.0
    intercept: float = float("nan")
    range_ms: tuple[float, float] = (0.0, float("inf"))
    loo_rmse: dict[str, float] = field(default_factory=dict)
    level: float = 1.0

    MIN_MODELS_FOR_SIZE = 8

    @classmethod
    def from_ratios(cls, ratios: Sequence[float], samples: Sequence[Any] = (),
                    times_ms: Sequence[float] | None = None) -> SpeedCheck:
        """The check of these ratios (time now / time then, one per model), measured now; with ``times_ms`` (each
        model's time then) it may also keep a size term (see the class docstring)."""
        r = np.asarray(ratios, dtype=float)
        if r.size == 0 or not np.all(np.isfinite(r) & (r > 0)):
            raise ValueError(f"a speed check needs positive finite time ratios (now / then), got {list(ratios)!r}.")
        q1, q3 = np.percentile(r, [25, 75])
        factor = float(np.median(r))
        out = cls(factor, [float(v) for v in r], float((q3 - q1) / 2), now(), list(samples),
                  intercept=float(np.log(factor)))
        if times_ms is None:
            return out
        t = np.asarray(times_ms, dtype=float)
        if t.shape != r.shape or not np.all(np.isfinite(t) & (t > 0)):
            raise ValueError(f"a speed check's times then must be one positive time per ratio: got {t.size} times "
                             f"for {r.size} ratios ({list(times_ms)[:5]!r}...).")
        out.times_ms = [float(v) for v in t]
        out.range_ms = (float(t.min()), float(t.max()))
        if r.size < cls.MIN_MODELS_FOR_SIZE or t.max() < 2 * t.min():
            return out
        x, y = np.log(t), np.log(r)
        keep = np.ones(r.size, dtype=bool)
        err_med, err_size = [], []
        for i in range(r.size):
            keep[i] = False
            err_med.append(y[i] - np.median(y[keep]))
            b, a = _theil_sen(x[keep], y[keep])
            err_size.append(y[i] - (a + b * x[i]))
            keep[i] = True
        out.loo_rmse = {"median": float(np.sqrt(np.mean(np.square(err_med)))),
                        "size": float(np.sqrt(np.mean(np.square(err_size))))}
        slope, intercept = _theil_sen(x, y)
        if out.loo_rmse["size"] < out.loo_rmse["median"] and slope > -1:  # > -1: times now grow with times then
            out.slope, out.intercept = slope, intercept
        return out

    def factor_at(self, ms: Any) -> Any:
        """The factor for a model whose time then (at the LUT's build or in training) is ``ms`` (a number or an
        array): :attr:`factor` without a size term, else the size term at ``ms`` held within :attr:`range_ms`."""
        return size_factor(self.curve(), ms, self.factor)

    def curve(self) -> dict[str, float]:
        """The size term as stored with a predictor (:meth:`~hwnas.predict.LatencyPredictor.with_speed`): empty
        without one."""
        if not self.slope:
            return {}
        return {"slope": self.slope, "intercept": self.intercept, "min_ms": self.range_ms[0],
                "max_ms": self.range_ms[1]}

    def describe(self) -> str:
        """One line for people: the factor, its spread and the size term if any."""
        text = f"{self.factor:.4f} x (+-{self.spread:.4f} over {len(self.ratios)} models)"
        if self.slope:
            lo, hi = self.range_ms
            text += (f"; by size {self.factor_at(lo):.4f} x at {lo:.3g} ms to {self.factor_at(hi):.4f} x at "
                     f"{hi:.3g} ms (leave-one-out error {self.loo_rmse['size']:.4f} against "
                     f"{self.loo_rmse['median']:.4f} for one factor)")
        return text

    def record(self) -> dict[str, Any]:
        """The fields stored in a LUT's ``"speed"`` entry."""
        return {"measured": self.measured, "subnets": len(self.ratios), "spread": round(self.spread, 5),
                **({"level": round(self.level, 5)} if self.level != 1.0 else {})}


def size_factor(curve: dict[str, float], ms: Any, factor: float) -> Any:
    """A speed check's factor for models whose time then is ``ms`` (a number or an array): its size term
    (:meth:`SpeedCheck.curve`) at ``ms`` held within ``[min_ms, max_ms]``, or ``factor`` when ``curve`` is empty."""
    if not curve:
        return factor if np.ndim(ms) == 0 else np.full(np.shape(ms), factor)
    at = np.clip(np.asarray(ms, dtype=float), curve["min_ms"], curve["max_ms"])
    f = np.exp(curve["intercept"] + curve["slope"] * np.log(at))
    return float(f) if np.ndim(ms) == 0 else f


def at_model_speed(total_ms: Any, speed: dict[str, Any] | None) -> Any:
    """Whole-model totals computed with ``speed["factor"]`` (a number or an array), at the factor of the speed
    check's size term for their size instead (``speed["curve"]``, see :meth:`SpeedCheck.curve`); unchanged
    without one. ``speed`` is a LUT's or a predictor's speed record."""
    curve = (speed or {}).get("curve")
    if not curve:
        return total_ms
    factor = float(speed["factor"])
    then = np.asarray(total_ms, dtype=float) / factor
    out = then * size_factor(curve, then, factor)
    return float(out) if np.ndim(total_ms) == 0 else out


def copy_at_speed(obj: Any, factor: Any, record: dict[str, Any], error: type[Exception]) -> Any:
    """What ``with_speed(factor, **record)`` of a LUT or a predictor returns: a shallow copy of ``obj`` whose
    ``speed`` record holds ``factor``, a :class:`SpeedCheck` (its record and size term are kept) or a number (time
    now / time then, 0.2 to 5); anything else raises ``error``."""
    import copy

    if isinstance(factor, SpeedCheck):
        record = {**factor.record(), **({"curve": factor.curve()} if factor.slope else {}), **record}
        factor = factor.factor
    if not (isinstance(factor, (int, float)) and 0.2 < float(factor) < 5.0):
        raise error(f"speed factor must be a number between 0.2 and 5 (time now / time then) or a SpeedCheck, "
                    f"got {factor!r}.")
    out = copy.copy(obj)
    out.speed = {"factor": float(factor), **record}
    return out


def _theil_sen(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Slope and intercept of the Theil-Sen line through ``(x, y)`` (``scipy.stats.theilslopes``): the median of
    the slopes between all pairs of points with different ``x``, and the median of ``y - slope * x`` (its
    ``method="joint"``); a flat line through the median of ``y`` when every ``x`` is the same."""
    from scipy.stats import theilslopes

    if x.size < 2 or np.all(x == x[0]):
        return 0.0, float(np.median(y))
    res = theilslopes(y, x, method="joint")
    return float(res.slope), float(res.intercept)


def _belongs(space: Any, sample: dict[str, Any]) -> bool:
    try:
        validate_sample(collect_choices(space), sample)
    except (ValueError, KeyError, TypeError):
        return False
    return True


def pairing_reference(lut: LUT, space: Any, dummy_input: torch.Tensor) -> dict[str, Any] | None:
    """The sample of the reference subnet that the LUT's end-to-end times were paired with (see
    :func:`hwnas.hw.build.interleave_end_to_end`), for ``space`` at ``dummy_input``'s shape; ``None`` if none."""
    shape = "x".join(str(d) for d in dummy_input.shape)
    for tag, sample in lut.settings.get("references", {}).items():
        if str(tag).endswith("@" + shape) and _belongs(space, sample):
            return sample
    return None


def paired_speed_factor(lut: LUT, dummy_input: torch.Tensor, records: Sequence[Any]) -> float | None:
    """How much slower (> 1) the machine runs now than at the LUT's build, from measurements paired with the
    LUT's pairing reference (:func:`pairing_reference`): the median of the records' ``reference_ms`` over the
    reference's time at the build (``settings["reference_ms"]`` for ``dummy_input``'s shape). ``None`` when the
    LUT has no such time (built before paired end-to-end passes)."""
    shape = "x".join(str(d) for d in dummy_input.shape)
    basis = next((v for tag, v in lut.settings.get("reference_ms", {}).items() if str(tag).endswith("@" + shape)),
                 None)
    if not basis:
        return None
    return float(np.median([r.reference_ms for r in records])) / float(basis)


def reference_subnets(lut: LUT, space: Any, dummy_input: torch.Tensor, n: int = 8,
                      seed: int = 0) -> list[dict[str, Any]]:
    """Up to ``n`` build subnets of ``space`` at ``dummy_input``'s shape whose end-to-end time was measured
    interleaved (uniformly random ones first), as the LUT's records (``sample``, ``end_to_end_ms``, ...).

    Raises:
        LUTError: the LUT holds no such subnet (built by an older hwnas, or for another space or input).
    """
    shape = "x".join(str(d) for d in dummy_input.shape)
    rows = [r for r in lut.subnets if r.get("interleaved") and r.get("end_to_end_ms")
            and str(r.get("space", "")).endswith("@" + shape) and _belongs(space, r["sample"])]
    if not rows:
        raise LUTError(f"LUT {str(lut.path or '')!r} holds no build subnet of this space at input {shape} with an "
                       "interleaved end-to-end time, which a speed check compares against; run the build again "
                       "(hwnas.hw.build_lut or benchmarks/build_lut.py with the same --out: it only adds that pass).")
    rng = np.random.default_rng(seed)
    random_rows = [r for r in rows if r.get("random")]
    others = [r for r in rows if not r.get("random")]
    order = [random_rows[i] for i in rng.permutation(len(random_rows))] + [others[i] for i in rng.permutation(len(others))]
    return order[:n]


def speed_check(lut: LUT, space: Any, dummy_input: torch.Tensor, n: int = 8, rounds: int = 20, repeats: int = 3,
                seed: int = 0, progress: bool = False, export_fn: Any = None) -> SpeedCheck:
    """Measure ``n`` of the LUT's build subnets now and compare with their times at build.

    Args:
        lut: the LUT (its device settings are used).
        space, dummy_input: the space and input shape the LUT was built for.
        n: how many reference subnets (see :func:`reference_subnets`).
        rounds, repeats: interleaved rounds and runs per round (see :func:`~hwnas.hw.measure.measure_many`).
        seed: which reference subnets, and the round order.
        progress: show a progress bar.
        export_fn: ``(space, sample) -> nn.Module`` (default :func:`hwnas.export`).

    A LUT at the steady-state level (:attr:`~hwnas.hw.lut.LUT.definition` ``"steady"``) is checked in that
    definition: its build subnets measured now with the steady protocol against their steady-level times in the
    LUT. (The paired protocol's level relative to the steady one moves with what else runs on the machine: on a
    core of its own next to a busy one, mobilenet_v2 subnets ran 9.6% slower paired than at the build while their
    steady times had not moved, so a paired check would have scaled a right LUT 10% off.) An adapted LUT
    (:func:`hwnas.hw.adapt`) is checked against the subnets its adaptation measured on this device
    (``adapted["measurements"]``), with the same steady protocol. Otherwise (a LUT still at the paired level) the
    subnets are measured as the build measured them.

    Returns:
        A :class:`SpeedCheck`; ``lut.with_speed(check)`` applies it.
    """
    if lut.adapted:
        rows = lut.adapted.get("measurements") or []
        rows = [rows[i] for i in np.random.default_rng(seed).permutation(len(rows))[:n] if _belongs(space, rows[i]["sample"])]
        if not rows:
            raise LUTError(f"adapted LUT {str(lut.path or '')!r} lists no measured subnet of this space; adapt it "
                           "again (hwnas adapt) instead of a speed check.")
        return _steady_check(lut, space, dummy_input, [r["sample"] for r in rows], [r["measured_ms"] for r in rows],
                             seed, progress, export_fn)
    refs = reference_subnets(lut, space, dummy_input, n=n, seed=seed)
    if lut.definition == "steady":
        check = _steady_check(lut, space, dummy_input, [r["sample"] for r in refs],
                              [r["end_to_end_ms"] for r in refs], seed, progress, export_fn)
        log.info("speed check on %s (steady state): %s the build's times", lut.device.name, check.describe())
        return check
    records = measure_subnets(lut, space, dummy_input, [r["sample"] for r in refs], rounds=rounds, repeats=repeats,
                              seed=seed, progress=progress, export_fn=export_fn)
    check = compare_with_build(lut, refs, records)
    log.info("speed check on %s: %s the build's times", lut.device.name, check.describe())
    return check


def _steady_check(lut: LUT, space: Any, dummy_input: torch.Tensor, samples: Sequence[dict[str, Any]],
                  then_ms: Sequence[float], seed: int, progress: bool, export_fn: Any) -> SpeedCheck:
    """Subnets measured now with the steady protocol (3 rounds) against their steady-level times ``then_ms``."""
    with tempfile.TemporaryDirectory(prefix="hwnas-speed-") as work:
        paths, inputs = export_subnets(space, samples, dummy_input, work, "ref", export_fn or export)
        recs = measure_many(paths, lut.device, dummy_inputs=inputs, method="steady", rounds=3, seed=seed,
                            progress=progress)
    return SpeedCheck.from_ratios([rec.median_ms / t for rec, t in zip(recs, then_ms)], samples,
                                  times_ms=list(then_ms))


def measure_subnets(lut: LUT, space: Any, dummy_input: torch.Tensor, samples: Sequence[dict[str, Any]],
                    rounds: int = 20, repeats: int = 3, seed: int = 0, progress: bool = False,
                    export_fn: Any = None) -> list[Any]:
    """Measure subnets of ``space`` now as the LUT's end-to-end times were measured: with its device, interleaved,
    each run paired with its pairing reference (:func:`pairing_reference`) when it has one. Returns one
    :class:`~hwnas.hw.measure.LatencyRecord` per sample."""
    export_fn = export_fn or export
    pair = pairing_reference(lut, space, dummy_input)
    with tempfile.TemporaryDirectory(prefix="hwnas-speed-") as work:
        paths, inputs = export_subnets(space, samples, dummy_input, work, "ref", export_fn)
        kw: dict[str, Any] = {}
        if pair is not None:
            kw["reference_input"] = input_for(space, pair, dummy_input)
            kw["reference"] = export_onnx(export_fn(space, pair).eval(), kw["reference_input"],
                                          Path(work) / "pairing.onnx")
        return measure_many(paths, lut.device, dummy_inputs=inputs, rounds=rounds, repeats=repeats, seed=seed,
                            progress=progress, min_turn_ms=2.0, method="paired" if pair is not None else "interleaved",
                            **kw)


def compare_with_build(lut: LUT, refs: Sequence[dict[str, Any]], records: Sequence[Any]) -> SpeedCheck:
    """The :class:`SpeedCheck` of build subnets ``refs`` (:func:`reference_subnets`) measured now (``records``, from
    :func:`measure_subnets`): the median of their times now over their ``end_to_end_ms`` at the build, in the
    LUT's statistic (the lower quartile where the LUT is paired but the records are not)."""
    if len(refs) != len(records) or not refs:
        raise ValueError(f"compare_with_build: got {len(records)} measurements for {len(refs)} build subnets; pass "
                         "one record per subnet, in the same order.")
    stat = lut.settings.get("statistic", "median")  # what the LUT's end-to-end times are
    if stat == "paired" and not all(np.isfinite(rec.paired_ms) for rec in records):
        stat = "p25"
    # paired against paired: a LUT calibrated to the steady-state level keeps each build subnet's paired time
    then = [r.get("end_to_end_paired_ms", r["end_to_end_ms"]) for r in refs]
    return SpeedCheck.from_ratios([rec.stat(stat) / t for rec, t in zip(records, then)],
                                  [r["sample"] for r in refs], times_ms=then)


def fit_level(paired_ms: Sequence[float], steady_ms: Sequence[float]) -> dict[str, Any]:
    """The map from paired times onto steady-state medians of the same models, measured in the same run:
    ``steady = ratio * paired + offset_ms``. The ratio alone (the median of steady / paired) unless a ratio and an
    offset (least squares on relative error) predict each model from the others (leave-one-out) better.

    Returns:
        ``{"ratio", "offset_ms", "loo_rms": {"ratio": ..., "ratio+offset": ...}, "spread"}`` (``spread``: half the
        interquartile range of steady / paired).
    """
    x, y = np.asarray(paired_ms, dtype=float), np.asarray(steady_ms, dtype=float)
    if x.shape != y.shape or x.size < 3 or not np.all(np.isfinite(x) & (x > 0) & np.isfinite(y) & (y > 0)):
        raise ValueError(f"fit_level: needs at least 3 pairs of positive paired and steady times of the same models, "
                         f"got {x.size} paired and {y.size} steady ({list(x)[:3]!r}, {list(y)[:3]!r}...).")

    def affine(xs: np.ndarray, ys: np.ndarray) -> tuple[float, float]:
        a = np.stack([xs / ys, 1.0 / ys], axis=1)
        (r, b), *_ = np.linalg.lstsq(a, np.ones_like(ys), rcond=None)
        return float(r), float(b)

    keep = np.ones(x.size, dtype=bool)
    err_ratio, err_affine = [], []
    for i in range(x.size):
        keep[i] = False
        err_ratio.append(np.log(np.median(y[keep] / x[keep]) * x[i] / y[i]))
        r, b = affine(x[keep], y[keep])
        err_affine.append(np.log(max(r * x[i] + b, 1e-9) / y[i]))
        keep[i] = True
    loo = {"ratio": float(np.sqrt(np.mean(np.square(err_ratio)))),
           "ratio+offset": float(np.sqrt(np.mean(np.square(err_affine))))}
    ratio, offset = float(np.median(y / x)), 0.0
    r, b = affine(x, y)
    if x.size >= 6 and loo["ratio+offset"] < loo["ratio"] and 0.5 < r < 2.0 and abs(b) < 0.5 * float(y.min()):
        ratio, offset = r, b
    q1, q3 = np.percentile(y / x, [25, 75])
    return {"ratio": ratio, "offset_ms": offset, "loo_rms": {k: round(v, 5) for k, v in loo.items()},
            "spread": float((q3 - q1) / 2), "se": _level_se(x, y, offset != 0.0)}


def _level_se(x: np.ndarray, y: np.ndarray, with_offset: bool, draws: int = 400) -> float:
    """Standard error of the fitted level itself (not of one model's time): the bootstrap spread of
    ``ln(level / paired)`` at the median paired time, refitting the same form (ratio, or ratio and offset) on
    models drawn with replacement. Per-model scatter of steady / paired shrinks here with the number of models."""
    rng = np.random.default_rng(0)
    at = float(np.median(x))
    out = []
    for _ in range(draws):
        i = rng.integers(0, x.size, x.size)
        if with_offset and np.unique(x[i]).size >= 3:
            a = np.stack([x[i] / y[i], 1.0 / y[i]], axis=1)
            (r, b), *_ = np.linalg.lstsq(a, np.ones(x.size), rcond=None)
            level = (r * at + b) / at
        else:
            level = float(np.median(y[i] / x[i]))
        if level > 0:
            out.append(np.log(level))
    return round(float(np.std(out, ddof=1)), 5)


def calibrate_definition(lut: LUT, space: Any, dummy_input: torch.Tensor, n: int = 16, rounds: int = 4,
                         paired_rounds: int = 20, turn_ms: float = 100.0, seed: int = 0, progress: bool = False,
                         export_fn: Any = None, apply: bool = True, max_error: float = 0.01) -> dict[str, Any]:
    """Measure ``n`` of the LUT's build subnets both paired (as the build measured them) and with the steady
    protocol (hwnas's definition of latency, :mod:`hwnas.hw.measure`) in the same run, fit the level
    (:func:`fit_level`) and, with ``apply``, bring the LUT to the steady-state definition
    (:meth:`~hwnas.hw.lut.LUT.set_definition`: its build subnets' times are mapped, the LUT is refitted).

    The steady pass is split around the paired one (half of ``rounds`` before, half after; a subnet's steady time
    is the geometric mean of the two), so that a drift of the machine during the calibration cancels. The subnets
    are spread over the build's range of times.

    A steady measurement is not noise-cancelled: on a loaded machine (load average above the cores) other processes
    preempt its long turns, and the level comes out wrong by several percent (mobilenet_v2 at load 16 on 2 cores:
    steady 1.14x paired, leave-one-out error 20%, where a quiet machine gives below 1). So the level is applied only
    when its own standard error (``se``: bootstrap over the subnets, :func:`fit_level`) is at most ``max_error``;
    otherwise :class:`~hwnas.hw.lut.LUTError` says to measure again on a quieter machine or with more subnets.
    (The leave-one-out error, also recorded, is the scatter of one subnet around the level; it does not shrink
    with more subnets, so it is reported, not used as the guard.)

    Returns:
        The definition record (``ratio``, ``offset_ms``, ``subnets``, ``measured``, ``loo_rms``, ``spread``,
        ``load_avg``, the protocol settings), as stored in ``settings["definition"]``.

    Raises:
        LUTError: the LUT's end-to-end times are not paired, or it has no pairing reference for this space
            and input, or too few build subnets, or the level was too noisy (``max_error``; nothing is applied).
    """
    if lut.adapted:
        raise LUTError(f"LUT {str(lut.path or '')!r} was adapted (hwnas adapt) to steady-state measurements on "
                       f"{lut.device.name}; its level needs no calibration. Adapt the source LUT again instead.")
    if lut.settings.get("statistic") != "paired" or pairing_reference(lut, space, dummy_input) is None:
        raise LUTError(f"LUT {str(lut.path or '')!r} has no paired end-to-end times of this space at input "
                       f"{tuple(dummy_input.shape)} (statistic {lut.settings.get('statistic')!r}); its level cannot be "
                       "calibrated from them. Check --space/--input, or rebuild the LUT with this hwnas (hwnas lut "
                       "build), which calibrates it.")
    if n < 3:
        raise ValueError(f"calibrate_definition: n must be at least 3 subnets, got {n}; 16 take about 10 s on digits.")
    rows = reference_subnets(lut, space, dummy_input, n=10 ** 9, seed=seed)
    rows = sorted(rows, key=lambda r: r.get("end_to_end_paired_ms", r["end_to_end_ms"]))
    pick = sorted({int(round(i)) for i in np.linspace(0, len(rows) - 1, min(n, len(rows)))})
    rows = [rows[i] for i in pick]
    if len(rows) < 3:
        raise LUTError(f"LUT {str(lut.path or '')!r} has {len(rows)} build subnets of this space with interleaved "
                       "times; the level needs at least 3. Finish the build (hwnas lut build, same --out).")
    export_fn = export_fn or export
    samples = [r["sample"] for r in rows]
    with tempfile.TemporaryDirectory(prefix="hwnas-level-") as work:
        paths, inputs = export_subnets(space, samples, dummy_input, work, "level", export_fn)
        steady_kw = dict(dummy_inputs=inputs, method="steady", turn_ms=turn_ms, progress=progress)
        first = measure_many(paths, lut.device, rounds=max(1, rounds // 2), seed=seed, **steady_kw)
        paired = measure_subnets(lut, space, dummy_input, samples, rounds=paired_rounds, seed=seed,
                                 progress=progress, export_fn=export_fn)
        second = measure_many(paths, lut.device, rounds=max(1, rounds - rounds // 2), seed=seed + 1, **steady_kw)
    steady = [float(np.sqrt(a.median_ms * b.median_ms)) for a, b in zip(first, second)]
    level = fit_level([p.paired_ms for p in paired], steady)
    record = {"ratio": round(level["ratio"], 6), "offset_ms": round(level["offset_ms"], 7), "subnets": len(rows),
              "measured": now(), "loo_rms": level["loo_rms"], "spread": round(level["spread"], 5), "se": level["se"],
              "steady": {"rounds": rounds, "turn_ms": turn_ms}, "paired": {"rounds": paired_rounds},
              "load_avg": round(max(r.load_avg for r in [*first, *paired, *second]), 2),
              "steady_ms": [round(t, 6) for t in steady], "paired_ms": [round(p.paired_ms, 6) for p in paired]}
    log.info("level of %s: steady = %.4f x paired %+.4f ms over %d subnets (standard error %.2f%%, LOO error %s, "
             "load %.2f)", lut.path or "the LUT", record["ratio"], record["offset_ms"], len(rows),
             100 * level["se"], level["loo_rms"], record["load_avg"])
    if not level["se"] <= max_error:
        raise LUTError(f"the level of LUT {str(lut.path or '')!r} came out too noisy to apply: steady = "
                       f"{record['ratio']:.4f} x paired with a standard error of {100 * level['se']:.2f}% over "
                       f"{len(rows)} subnets (at most {100 * max_error:.2f}%; one subnet's scatter, leave-one-out, "
                       f"{level['loo_rms']}), load average {record['load_avg']} with {usable_cores()} cores to run on. The LUT is "
                       "unchanged; measure again on a quieter machine (hwnas lut recalibrate FILE --space NAME), or "
                       "with more subnets (--subnets).")
    if apply:
        lut.set_definition(record)
    return record
