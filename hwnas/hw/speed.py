"""Speed checks: how much faster or slower the machine runs now than when a LUT was built.

A shared machine (a cloud VM, a laptop on battery, a box with other jobs) changes speed by a few percent
from hour to hour, all kernels alike. A LUT holds the build's subnets with their end-to-end times
(measured interleaved at the end of the build); :func:`speed_check` exports a few of them, measures them
again, and returns the median ratio now / at build. ``lut.with_speed(check.factor)`` then gives a LUT
whose every kernel cost and overhead is scaled by it, and ``hwnas lut speed-check --write`` stores the
factor in the LUT file (it loads with it from then on). The relative accuracy of the LUT does not depend
on this; absolute milliseconds on a drifting machine do.

Example:
    >>> import torch, hwnas
    >>> from hwnas.hw import LUT, speed_check
    >>> space = hwnas.spaces.create("digits")
    >>> lut = LUT.load("lut/digits_cpu-ort-1t.json")
    >>> check = speed_check(lut, space, torch.randn(1, 1, 8, 8), n=4)   # a few seconds
    >>> 0.5 < check.factor < 2.0
    True
    >>> profiler = hwnas.LatencyProfiler(space, torch.randn(1, 1, 8, 8), lut=lut.with_speed(check.factor))
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
from hwnas.hw.build import input_for
from hwnas.hw.lut import LUT, LUTError, now
from hwnas.hw.measure import measure_many
from hwnas.hw.session import export_onnx
from hwnas.space.space import collect_choices, validate_sample

__all__ = ["SpeedCheck", "reference_subnets", "pairing_reference", "paired_speed_factor", "speed_check",
           "measure_subnets", "compare_with_build"]

log = logging.getLogger(__name__)


@dataclass
class SpeedCheck:
    """The outcome of a speed check: :func:`speed_check` for a LUT, :func:`hwnas.predict.speed_check` for a
    predictor.

    Attributes:
        factor: median over the models measured again of (end-to-end now) / (end-to-end then: at the LUT's
            build, or in the predictor's training).
        ratios: that ratio for each model.
        spread: half the interquartile range of the ratios (how consistently they moved).
        measured: when (ISO time).
        samples: the reference subnets' samples (a LUT) or the training models' configs (a predictor).
    """

    factor: float
    ratios: list[float]
    spread: float
    measured: str
    samples: list[dict[str, Any]] = field(repr=False, default_factory=list)

    @classmethod
    def from_ratios(cls, ratios: Sequence[float], samples: Sequence[Any] = ()) -> SpeedCheck:
        """The check of these ratios (time now / time then, one per model), measured now."""
        r = np.asarray(ratios, dtype=float)
        if r.size == 0 or not np.all(np.isfinite(r) & (r > 0)):
            raise ValueError(f"a speed check needs positive finite time ratios (now / then), got {list(ratios)!r}.")
        q1, q3 = np.percentile(r, [25, 75])
        return cls(float(np.median(r)), [float(v) for v in r], float((q3 - q1) / 2), now(), list(samples))

    def record(self) -> dict[str, Any]:
        """The fields stored in a LUT's ``"speed"`` entry."""
        return {"measured": self.measured, "subnets": len(self.ratios), "spread": round(self.spread, 5)}


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

    Returns:
        A :class:`SpeedCheck`; ``lut.with_speed(check.factor, **check.record())`` applies it.
    """
    refs = reference_subnets(lut, space, dummy_input, n=n, seed=seed)
    records = measure_subnets(lut, space, dummy_input, [r["sample"] for r in refs], rounds=rounds, repeats=repeats,
                              seed=seed, progress=progress, export_fn=export_fn)
    check = compare_with_build(lut, refs, records)
    log.info("speed check on %s: %.4f x the build's times (spread %.4f over %d subnets)", lut.device.name,
             check.factor, check.spread, len(refs))
    return check


def measure_subnets(lut: LUT, space: Any, dummy_input: torch.Tensor, samples: Sequence[dict[str, Any]],
                    rounds: int = 20, repeats: int = 3, seed: int = 0, progress: bool = False,
                    export_fn: Any = None) -> list[Any]:
    """Measure subnets of ``space`` now as the LUT's end-to-end times were measured: with its device, interleaved,
    each run paired with its pairing reference (:func:`pairing_reference`) when it has one. Returns one
    :class:`~hwnas.hw.measure.LatencyRecord` per sample."""
    export_fn = export_fn or export
    pair = pairing_reference(lut, space, dummy_input)
    with tempfile.TemporaryDirectory(prefix="hwnas-speed-") as work:
        paths, inputs = [], []
        for i, sample in enumerate(samples):
            x = input_for(space, sample, dummy_input)
            paths.append(export_onnx(export_fn(space, sample).eval(), x, Path(work) / f"ref{i}.onnx"))
            inputs.append(x)
        kw: dict[str, Any] = {}
        if pair is not None:
            kw["reference_input"] = input_for(space, pair, dummy_input)
            kw["reference"] = export_onnx(export_fn(space, pair).eval(), kw["reference_input"],
                                          Path(work) / "pairing.onnx")
        return measure_many(paths, lut.device, dummy_inputs=inputs, rounds=rounds, repeats=repeats, seed=seed,
                            progress=progress, min_turn_ms=2.0, **kw)


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
    return SpeedCheck.from_ratios([rec.stat(stat) / r["end_to_end_ms"] for rec, r in zip(records, refs)],
                                  [r["sample"] for r in refs])
