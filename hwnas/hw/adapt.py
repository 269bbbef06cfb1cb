"""Carry a LUT to another machine or runtime configuration in minutes: ``hwnas adapt``.

A LUT holds when it is used where it was built. On another CPU (or with other threads, another graph
optimisation level) its kernels do not all change speed alike: dense convolutions, depthwise convolutions and
the per-run overhead move by different factors (LATENCY_NOTES: +30% for plain conv nets against +6% for
depthwise-heavy ones between two hosts). One speed factor cannot carry that; a full rebuild takes many minutes.

:func:`adapt` measures ``n`` (20-60) of the LUT's build subnets on the target with hwnas's definition of latency
(the steady-state median, interleaved; :mod:`hwnas.hw.measure`), splits each subnet's predicted time into kernel
families (:data:`~hwnas.hw.lut.FAMILIES`: dense, depthwise and 1x1 convolutions, GEMM/attention, pooling,
elementwise, data movement) plus the per-run overhead, and fits one non-negative factor per family and for the
overhead (``scipy.optimize.nnls`` on relative error) with a ridge that pulls every factor towards a prior:
``"shipped"`` (each factor 1, the artefact as it is) or ``"common"`` (one factor for all, what a single speed check
would give), so that families with little signal in the measured subnets stay at the prior. The ridge strength and
the prior are chosen by leave-one-out cross-validation over the measured subnets; the single factor is a
candidate too. The result is a new LUT for the target device that carries this host's fingerprint and an
``adapted`` record (:mod:`hwnas.hw.lut`): the factors, the source's fingerprint, ``n``, the CV errors and the time.

Example:
    >>> from hwnas.hw import adapt
    >>> lut = adapt("digits", "cpu-ort-2t", n=20, out="digits_2t.json")   # doctest: +SKIP
    >>> print(lut.summary())                                                                    # doctest: +SKIP
"""

from __future__ import annotations

import copy
import logging
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import nnls

from hwnas.hw.device import Device, fingerprint, get_device
from hwnas.hw.lut import FAMILIES, LUT, LUTError, family_of, now

__all__ = ["adapt", "adapt_lut", "AdaptFit", "fit_families", "family_factors", "family_matrix", "is_predictor",
           "ridge_factors", "RIDGES", "PRIORS"]

log = logging.getLogger(__name__)

#: ridge strengths tried by cross-validation (relative-error units; a large one keeps the prior)
RIDGES = (0.0003, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
#: priors a factor is pulled towards: the artefact as it is (1) or one common factor for all
PRIORS = ("shipped", "common")


@dataclass
class AdaptFit:
    """The chosen refit: ``factors`` (one per column: families then the overhead), how it was chosen, and the
    leave-one-out RMS of ln(predicted / measured) of every candidate (``cv``) and of the artefact unchanged."""

    factors: np.ndarray
    columns: list[str]
    prior: str
    ridge: float
    cv_rms: float
    cv: dict[str, float] = field(default_factory=dict)
    cv_rms_one_factor: float = float("nan")
    rms_shipped: float = float("nan")


def family_matrix(lut: LUT, rows: Sequence[dict[str, Any]]) -> tuple[np.ndarray, list[str]]:
    """The predicted time of each build subnet in ``rows`` split by kernel family: shape ``(len(rows), F + 1)``,
    the last column the per-run overhead; columns with no time in any row are dropped. Costs are the LUT's own
    (its adaptation included), without a speed factor."""
    cols = {f: i for i, f in enumerate(FAMILIES)}
    x = np.zeros((len(rows), len(FAMILIES) + 1))
    for i, r in enumerate(rows):
        for sig, count in r["kernels"].items():
            if sig not in lut.entries:
                raise LUTError(f"LUT {str(lut.path or '')!r}: build subnet {i} runs kernel {sig!r}, which has no entry; "
                               "the file is inconsistent. Restore it or rebuild it.")
            x[i, cols[family_of(sig)]] += count * lut.family_scale(sig) * lut._built_cost_ms(sig)
        x[i, -1] = lut.adapted["overhead_ms"] if lut.adapted else lut._built_overhead_ms
    keep = [j for j in range(x.shape[1]) if np.any(x[:, j] > 0)]
    names = [*FAMILIES, "overhead"]
    return x[:, keep], [names[j] for j in keep]


def ridge_factors(x: np.ndarray, y: np.ndarray, prior: np.ndarray, ridge: float) -> np.ndarray:
    """Non-negative factors minimising ``sum((x @ f - y) / y)^2 + ridge * sum((f - prior)^2)``."""
    a = np.vstack([x / y[:, None], np.sqrt(ridge) * np.eye(x.shape[1])])
    b = np.concatenate([np.ones_like(y), np.sqrt(ridge) * prior])
    return nnls(a, b)[0]


def _one_factor(x: np.ndarray, y: np.ndarray) -> float:
    """The single factor for all columns (least squares on relative error)."""
    p = x.sum(axis=1) / y
    return float(np.sum(p) / np.sum(p * p))


def _candidate(x: np.ndarray, y: np.ndarray, prior: str, ridge: float) -> np.ndarray:
    if prior == "one factor":
        return np.full(x.shape[1], _one_factor(x, y))
    base = np.ones(x.shape[1]) * (_one_factor(x, y) if prior == "common" else 1.0)
    return ridge_factors(x, y, base, ridge)


def fit_families(x: np.ndarray, y: np.ndarray, columns: Sequence[str], ridges: Sequence[float] = RIDGES,
                 priors: Sequence[str] = PRIORS) -> AdaptFit:
    """Choose prior (among ``priors``: ``"shipped"``, ``"common"``) and ridge (or a single factor) by leave-one-out
    CV over the measured models (rows of ``x``: predicted time per column; times ``y``) and fit the factors on all
    of them. Serves LUTs (:func:`adapt_lut`) and learned predictors (:func:`hwnas.predict.adapt`) alike."""
    if not set(priors) <= set(PRIORS) or not priors:
        raise ValueError(f"fit_families: priors must be a non-empty subset of {PRIORS}, got {tuple(priors)!r}.")
    n = len(y)
    candidates = [("one factor", 0.0)] + [(p, r) for p in priors for r in ridges]
    cv: dict[str, float] = {}
    best = None
    for prior, ridge in candidates:
        errs = []
        for i in range(n):
            keep = np.arange(n) != i
            f = _candidate(x[keep], y[keep], prior, ridge)
            errs.append(np.log(max(float(x[i] @ f), 1e-9) / y[i]))
        rms = float(np.sqrt(np.mean(np.square(errs))))
        key = prior if prior == "one factor" else f"{prior} ridge={ridge:g}"
        cv[key] = round(rms, 5)
        if best is None or rms < best[0]:
            best = (rms, prior, ridge)
    rms, prior, ridge = best
    shipped = float(np.sqrt(np.mean(np.square(np.log(x.sum(axis=1) / y)))))
    return AdaptFit(_candidate(x, y, prior, ridge), list(columns), prior, ridge, rms, cv, cv["one factor"], shipped)


def family_factors(fit: AdaptFit, x: np.ndarray, y: np.ndarray, names: Sequence[str],
                   absent: str = "prior") -> dict[str, float]:
    """Every name's factor from ``fit`` (columns of ``x``); a name without a column (no time in any measured model)
    takes ``absent``: ``"prior"`` (1 under the ``"shipped"`` prior, else the common factor) or ``"one factor"``
    (always the single factor over all models, what a speed check would give)."""
    if absent not in ("prior", "one factor"):
        raise ValueError(f"family_factors: absent must be 'prior' or 'one factor', got {absent!r}.")
    default = _one_factor(x, y) if absent == "one factor" or fit.prior != "shipped" else 1.0
    got = dict(zip(fit.columns, (float(f) for f in fit.factors)))
    return {name: got.get(name, default) for name in names}


def is_predictor(artefact: Any) -> bool:
    """Whether ``artefact`` is a learned latency predictor (:class:`hwnas.predict.LatencyPredictor`, a ``.skops``
    file or a zip, or the name of a shipped predictor) rather than a LUT (an object, a JSON file or a LUT name).

    Raises:
        ArtifactNotFoundError: a name that no shipped LUT or predictor has (the message lists them).
        TypeError: neither an artefact nor a path or name.
    """
    import zipfile
    from pathlib import Path

    from hwnas.artifacts import find_artifact

    if isinstance(artefact, LUT):
        return False
    if type(artefact).__name__ == "LatencyPredictor":
        return True
    if not isinstance(artefact, (str, os.PathLike)):
        raise TypeError(f"adapt: artefact must be a LUT, a LatencyPredictor, a file path or a shipped name, got "
                        f"{type(artefact).__name__}.")
    path = Path(artefact)
    if path.suffix == ".skops" or (path.is_file() and zipfile.is_zipfile(path)):
        return True
    if path.suffix == ".json" or path.is_file() or "/" in str(artefact) or os.sep in str(artefact):
        return False
    return find_artifact(str(artefact)).kind == "predictor"


def adapt(artefact: Any, device: str | Device | None = None, n: int = 40, **kwargs: Any) -> Any:
    """Adapt a LUT or a learned predictor to ``device`` on this machine: :func:`adapt_lut` for a LUT,
    :func:`hwnas.predict.adapt` for a predictor (:func:`is_predictor` decides; see those for the arguments).
    ``device`` defaults to the artefact's own (the same runtime set-up, on this machine)."""
    if is_predictor(artefact):
        from hwnas.predict.adapt import adapt as adapt_predictor

        return adapt_predictor(artefact, device, n, **kwargs)
    return adapt_lut(artefact, device, n, **kwargs)


def _space_of(lut: LUT, space: Any, dummy_input: Any) -> tuple[Any, Any, str]:
    """(space, dummy input, tag) to adapt: given, or the LUT's first space by its registered name."""
    import torch

    import hwnas.spaces

    if space is not None:
        if dummy_input is None:
            raise ValueError("adapt: with space= pass dummy_input= too (the input shape the LUT was built for).")
        shape = "x".join(str(d) for d in dummy_input.shape)
        tags = [t for t in lut.spaces if t.endswith("@" + shape)]
        if not tags:
            raise LUTError(f"adapt: LUT {str(lut.path or '')!r} was built for {lut.spaces}, none at input {shape}; "
                           "pass the input shape the LUT was built for.")
        return space, dummy_input, tags[0]
    for tag in lut.spaces:
        name, _, shape = tag.rpartition("@")
        if name in hwnas.spaces.list():
            dims = [int(d) for d in shape.split("x")]
            return hwnas.spaces.create(name).eval(), torch.randn(*dims), tag
    raise LUTError(f"adapt: LUT {str(lut.path or '')!r} was built for {lut.spaces}, none of them a registered space "
                   f"({', '.join(hwnas.spaces.list())}); pass space= and dummy_input= (CLI: --space, --input).")


def _pick(lut: LUT, tag: str, n: int, seed: int) -> list[dict[str, Any]]:
    rows = [r for r in lut.subnets if r.get("space") == tag and r.get("kernels") and r.get("end_to_end_ms")]
    if len(rows) < n:
        raise LUTError(f"adapt: LUT {str(lut.path or '')!r} has {len(rows)} build subnets of {tag} with kernels and "
                       f"end-to-end times, fewer than n={n}; pass a smaller n, or finish the build.")
    rng = np.random.default_rng(seed)
    random_rows = [r for r in rows if r.get("random")]
    others = [r for r in rows if not r.get("random")]
    # half uniformly random subnets (what search draws), half covering ones (every kernel family shows up)
    k = max(min(len(random_rows), n // 2), n - len(others))
    chosen = [random_rows[i] for i in rng.permutation(len(random_rows))[:k]]
    return chosen + [others[i] for i in rng.permutation(len(others))[: n - k]]


def adapt_lut(artefact: LUT | str | os.PathLike, device: str | Device | None = None, n: int = 40, *, space: Any = None,
          dummy_input: Any = None, out: str | os.PathLike | None = None, budget_s: float = 120.0,
          turn_ms: float = 100.0, seed: int = 0, progress: bool = True, export_fn: Any = None) -> LUT:
    """Adapt a LUT to ``device`` on this machine from ``n`` steady-state measurements (see the module docstring).

    Args:
        artefact: a :class:`~hwnas.hw.lut.LUT` or the path of a LUT file (typically from another machine).
        device: the target device (a registered name or a :class:`~hwnas.hw.device.Device`), measured here;
            ``None``: the LUT's own.
        n: how many of the LUT's build subnets to measure (20-60 is the intended range; 5 to 200 accepted).
        space, dummy_input: the space and input the LUT was built for (default: its first registered space).
        out: write the adapted LUT here (atomically); ``None`` only returns it.
        budget_s: the whole call's time budget in seconds: the measurement runs rounds (1 to 5) while it lasts.
        turn_ms: the steady protocol's turn length (:func:`~hwnas.hw.measure.measure_many`).
        seed: which subnets, and the round order.
        progress: show progress bars.
        export_fn: ``(space, sample) -> nn.Module`` (default :func:`hwnas.export`).

    Returns:
        The adapted LUT (device ``device``, this host's fingerprint, ``adapted`` record).

    Raises:
        ValueError: ``n`` or ``budget_s`` out of range, or space without dummy_input.
        LUTError: the LUT has too few build subnets for ``n``, or none of the space.
        KeyError: unknown device.
    """
    from hwnas.graph.subnet import export
    from hwnas.hw.build import export_subnets
    from hwnas.hw.measure import measure_many

    t0 = time.perf_counter()
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or not 5 <= n <= 200:
        raise ValueError(f"adapt: n must be an int from 5 to 200 (subnets measured on the target), got {n!r}; "
                         "20-60 is the intended range (40 takes about a minute on digits).")
    if not isinstance(budget_s, (int, float)) or budget_s < 10:
        raise ValueError(f"adapt: budget_s must be at least 10 seconds, got {budget_s!r}.")
    source = artefact if isinstance(artefact, LUT) else LUT.load(artefact, check_fingerprint=False)
    dev = get_device(device if device is not None else source.device)
    dev.check_available()
    space, dummy_input, tag = _space_of(source, space, dummy_input)
    rows = _pick(source, tag, int(n), seed)
    x, columns = family_matrix(source, rows)
    export_fn = export_fn or export
    with tempfile.TemporaryDirectory(prefix="hwnas-adapt-") as work:
        paths, inputs = export_subnets(space, [r["sample"] for r in rows], dummy_input, work, "adapt", export_fn,
                                       progress=progress, desc="adapt: export subnets")
        # as many rounds (up to 5) as the budget leaves, after the exports, the sessions and ~10% for the fit
        left = 0.85 * budget_s - (time.perf_counter() - t0) - 0.1 * len(rows)
        log.info("adapt: measuring %d subnets on %s (steady, up to 5 rounds in %.0f s)", len(rows), dev.name, left)
        recs = measure_many(paths, dev, dummy_inputs=inputs, method="steady", rounds=5, turn_ms=turn_ms,
                            seed=seed, progress=progress, time_limit_s=max(1.0, left))
        rounds = recs[0].rounds
    y = np.array([r.median_ms for r in recs])
    fit = fit_families(x, y, columns)
    factors = dict(zip(columns, fit.factors))
    # families absent from the measured subnets take the prior: 1 ("shipped") or the common factor
    every = family_factors(fit, x, y, [*FAMILIES, "overhead"])
    adapted = copy.deepcopy(source)
    adapted.device = dev
    adapted.fingerprint = fingerprint(dev)
    adapted.speed = {}
    old = source.adapted.get("families", {}) if source.adapted else {}
    old_overhead = source.adapted["overhead_ms"] if source.adapted else source._built_overhead_ms
    seconds = time.perf_counter() - t0
    adapted.adapted = {
        "families": {f: round(float(old.get(f, 1.0)) * every[f], 6) for f in FAMILIES},
        "overhead_ms": round(old_overhead * every["overhead"], 7),
        "adapted_from": {
            "device": source.device.name, "fingerprint": source.fingerprint,
            "cpu_model": source.fingerprint.get("cpu_model"), "path": str(source.path) if source.path else None,
            "space": tag, "n": len(rows), "rounds": rounds, "turn_ms": turn_ms, "definition": "steady",
            "prior": fit.prior, "ridge": fit.ridge, "cv_rms": round(fit.cv_rms, 5),
            "cv_rms_one_factor": round(fit.cv_rms_one_factor, 5), "rms_unadapted": round(fit.rms_shipped, 5),
            "cv": fit.cv, "factors": {c: round(float(v), 6) for c, v in factors.items()},
            "seconds": round(seconds, 1), "measured": now(),
            "load_avg": round(max(r.load_avg for r in recs), 2),
        },
        "measurements": [{"sample": r["sample"], "measured_ms": round(float(t), 6)} for r, t in zip(rows, y)],
    }
    log.info("adapted %s to %s in %.0f s: %s; LOO error %.2f%% (one factor %.2f%%, unadapted %.2f%%)",
             source.path or "the LUT", dev.name, seconds, factors, 100 * fit.cv_rms, 100 * fit.cv_rms_one_factor,
             100 * fit.rms_shipped)
    if out is not None:
        adapted.save(out)
    return adapted
