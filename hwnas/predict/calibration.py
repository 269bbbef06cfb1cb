"""The whole-model calibration of a learned predictor, fitted in one step, and ``refit`` from stored data.

A predictor's kernel regressors predict each kernel's time as ONNX Runtime's profiler reports it inside a whole
model (:mod:`hwnas.predict.train`). A model's end-to-end time (the steady-state median, hwnas's definition of
latency) is not their plain sum: the profiler adds a few microseconds to every node it times, kernel families
run at other speeds in a steady loop than in profiled runs, data movement costs time, and every session run has
a fixed overhead. :func:`fit_whole_calibration` fits all of it at once on the training models' end-to-end times,
with each model's kernels predicted out of fold (in-sample predictions of the trees fit their own kernels too
closely to show a family's bias on kernels never seen)::

    model ms = sum over kernels k of  factor[family(k)] * max(p_k - delta, 0.1 * p_k)
               + per_copied_melement_ms * copied elements / 1e6 + overhead_ms

- ``delta``: the profiler's cost per timed kernel (subtracted, never taking a kernel below a tenth of its time);
- ``factor``: one per kernel family of the regressors (:func:`hwnas.predict.features.family_of`), bounded to
  [0.25, 4] times the common factor and pulled towards it by a ridge (families with little time in the
  training models stay near it);
- ``per_copied_melement_ms`` and ``overhead_ms``: non-negative.

Least squares on relative error (``scipy.optimize.lsq_linear``), each model weighted 1 from
:data:`FULL_WEIGHT_MS` (2 ms) up and in proportion to its time below (the training set holds models of 0.2 ms,
whose time is mostly per-run and per-kernel costs; users' models are longer); ``delta`` and the ridge are chosen
by leave-one-model-out error (weighted RMS of ln(predicted / measured)) among :data:`DELTAS_MS` x :data:`RIDGES`,
the common factor alone being a candidate too. On the shipped predictor's 43 training models (2026-12-07) this
chose delta 6 us and ridge 0.003. Leave-one-model-out with the choice nested in each fold: 92% of the 25 models
of 2 ms and more within +-10%, 68% within +-5% (the two-step calibration before it: 76% and 64%), and 67% / 44%
of all 43 models (before: 56% / 47%; RMS percentage error 10.9% against 23.6%). The result is stored in the predictor's two records: ``calibration``
(``scale`` = the common factor, ``per_kernel_ms`` = -scale * delta, movement, overhead) and
``family_calibration`` (``factors`` = each family's factor / scale, ``rest`` = 1), which
:meth:`hwnas.predict.LatencyPredictor.calibrate` applies as ``factor * max(scale * p + per_kernel_ms, 0.1 * scale
* p)``, exactly the fitted form.

:func:`refit` recomputes this calibration for an existing predictor from its stored training data
(``<file>.data.json``), without measuring anything: ``python benchmarks/train_predictor.py --refit FILE``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import lsq_linear
from scipy.stats import kendalltau

from hwnas.predict.features import family_of

__all__ = ["fit_whole_calibration", "design_rows", "DELTAS_MS", "RIDGES", "FACTOR_BOUNDS", "FULL_WEIGHT_MS", "refit",
           "loo_whole_calibration"]

log = logging.getLogger(__name__)

#: profiler cost per timed kernel tried (ms)
DELTAS_MS = (0.0, 0.002, 0.004, 0.006, 0.008, 0.010, 0.012, 0.015)
#: ridge strengths pulling family factors towards the common factor (relative-error units)
RIDGES = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
#: a family factor stays within these multiples of the common factor
FACTOR_BOUNDS = (0.25, 4.0)
#: a kernel never costs less than this share of its prediction
FLOOR = 0.1
#: models from this end-to-end time up (ms) count fully in the fit; shorter ones in proportion to their time
FULL_WEIGHT_MS = 2.0


def design_rows(data: Any, predicted: np.ndarray, families: Sequence[str], delta: float) -> tuple[np.ndarray,
                                                                                                  np.ndarray]:
    """``(x, y)``: per training model with an end-to-end time, the predicted kernel time per family after the
    per-kernel ``delta`` (``max(p - delta, 0.1 p)``), then copied elements / 1e6 and 1 (the overhead); ``y`` its
    end-to-end ms less its lead. ``predicted`` is in :meth:`~hwnas.predict.train.TrainingData.arrays` order."""
    sigs, _, groups, _ = data.arrays()
    fams = np.array([family_of(s) for s in sigs])
    cost = np.maximum(predicted - delta, FLOOR * predicted)
    rows, ys = [], []
    for i, m in enumerate(data.models):
        if not m.get("end_to_end_ms"):
            continue
        sel = groups == i
        rows.append([float(cost[sel][fams[sel] == f].sum()) for f in families]
                    + [m.get("movement", {}).get("copy_elements", 0.0) / 1e6, 1.0])
        ys.append(m["end_to_end_ms"] - m.get("lead_ms", 0.0))
    return np.array(rows, dtype=float).reshape(len(ys), len(families) + 2), np.array(ys, dtype=float)


def _fit(x: np.ndarray, y: np.ndarray, n_fam: int, ridge: float | None, w: np.ndarray) -> tuple[np.ndarray, float]:
    """``(coefficients, common factor)``: the family factors, movement and overhead, and the factor of the fit with
    one factor for all families (the ridge's prior); ``ridge=None``: that fit's coefficients."""
    a = x / y[:, None] * w[:, None]
    one = w
    common = lsq_linear(np.column_stack([a[:, :n_fam].sum(axis=1), a[:, n_fam:]]), one,
                        bounds=(np.zeros(x.shape[1] - n_fam + 1), np.full(x.shape[1] - n_fam + 1, np.inf)), method="bvls").x
    c = max(float(common[0]), 1e-6)
    if ridge is None:
        return np.concatenate([np.full(n_fam, c), common[1:]]), c
    reg = np.zeros((n_fam, x.shape[1]))
    reg[:, :n_fam] = np.sqrt(ridge) * np.eye(n_fam)
    lo = np.concatenate([np.full(n_fam, FACTOR_BOUNDS[0] * c), np.zeros(x.shape[1] - n_fam)])
    hi = np.concatenate([np.full(n_fam, FACTOR_BOUNDS[1] * c), np.full(x.shape[1] - n_fam, np.inf)])
    return lsq_linear(np.vstack([a, reg]), np.concatenate([one, np.full(n_fam, np.sqrt(ridge) * c)]),
                      bounds=(lo, hi), method="bvls").x, c


def _loo(x: np.ndarray, y: np.ndarray, n_fam: int, ridge: float | None, w: np.ndarray) -> np.ndarray:
    """Leave-one-model-out predictions."""
    out = np.empty(len(y))
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        out[i] = float(x[i] @ _fit(x[keep], y[keep], n_fam, ridge, w[keep])[0])
    return out


def _rms_log(pred: np.ndarray, y: np.ndarray, w: np.ndarray | None = None) -> float:
    """(Weighted) RMS of ln(predicted / measured)."""
    w = np.ones(len(y)) if w is None else w
    return float(np.sqrt(np.sum(w ** 2 * np.log(np.maximum(pred, 1e-9) / y) ** 2) / np.sum(w ** 2)))


def _weights(y: np.ndarray, full_weight_ms: float) -> np.ndarray:
    """A model's weight in the relative-error fit: 1 from ``full_weight_ms`` up, in proportion to its time below."""
    return np.minimum(1.0, y / full_weight_ms) if full_weight_ms > 0 else np.ones(len(y))


def fit_whole_calibration(data: Any, predicted: np.ndarray, deltas: Sequence[float] = DELTAS_MS,
                          ridges: Sequence[float] = RIDGES, full_weight_ms: float = FULL_WEIGHT_MS
                          ) -> tuple[dict[str, float], dict[str, Any]]:
    """Fit the whole-model calibration (see the module docstring) on ``data``'s models with end-to-end times.

    Args:
        data: a :class:`~hwnas.predict.train.TrainingData` (or anything with its ``arrays()`` and ``models``).
        predicted: each kernel's out-of-fold prediction (ms), in ``data.arrays()`` order.
        deltas, ridges: the candidates chosen among by leave-one-model-out error.
        full_weight_ms: models from this time up weigh 1 in the fit and in the choice, shorter ones in
            proportion to their time (0: all alike).

    Returns:
        ``(calibration, family_calibration)``, the predictor's two records. ``family_calibration`` also holds the
        choice (``delta_ms``, ``ridge``: ``None`` for the common factor alone), the leave-one-model-out RMS of
        ln(predicted / measured) of the choice (``cv_rms_log``) and of the common factor with ``delta`` 0
        (``cv_rms_log_single``), and the choice's leave-one-model-out shares within 5% and 10% and Kendall tau.

    Raises:
        ValueError: fewer than 8 models with an end-to-end time, or ``predicted`` of another length.
    """
    sigs = data.arrays()[0]
    predicted = np.asarray(predicted, dtype=float)
    if predicted.shape != (len(sigs),) or not np.all(np.isfinite(predicted)) or np.any(predicted < 0):
        raise ValueError(f"fit_whole_calibration: expected one finite prediction >= 0 per training kernel "
                         f"({len(sigs)}), got an array of shape {predicted.shape}; pass the out-of-fold predictions "
                         "of hwnas.predict.train.validate(data, oof_out=...).")
    families = sorted({family_of(s) for s in sigs})
    n_fam = len(families)
    best = None
    cv: dict[str, float] = {}
    for delta in deltas:
        x, y = design_rows(data, predicted, families, delta)
        if len(y) < 8:
            raise ValueError(f"fit_whole_calibration: {len(y)} training models have an end-to-end time; at least 8 "
                             "are needed. Measure more (hwnas.predict.train with a larger budget).")
        w = _weights(y, full_weight_ms)
        for ridge in (None, *ridges):
            pred = _loo(x, y, n_fam, ridge, w)
            err = _rms_log(pred, y, w)
            cv[f"delta={1000 * delta:g}us " + ("common" if ridge is None else f"ridge={ridge:g}")] = round(err, 6)
            if best is None or err < best[0] - 1e-12:
                best = (err, delta, ridge, pred, x, y, w)
    err, delta, ridge, pred, x, y, w = best
    coef, scale = _fit(x, y, n_fam, ridge, w)
    single = cv[f"delta={1000 * deltas[0]:g}us common"] if deltas else float("nan")
    rel_fit = x @ coef / y - 1
    rel = pred / y - 1
    calibration = {"scale": scale, "per_kernel_ms": -scale * float(delta),
                   "per_copied_melement_ms": float(coef[n_fam]), "per_movement_node_ms": 0.0,
                   "overhead_ms": float(coef[n_fam + 1]), "models": int(len(y)),
                   "median_abs_rel_err": float(np.median(np.abs(rel_fit)))}
    family = {"factors": {f: round(float(v) / scale, 6) for f, v in zip(families, coef[:n_fam])}, "rest": 1.0,
              "method": "joint", "delta_ms": float(delta), "ridge": ridge, "bounds": list(FACTOR_BOUNDS),
              "full_weight_ms": full_weight_ms, "cv_rms_log": round(err, 6), "cv_rms_log_single": single,
              "cv_rms_log_unweighted": round(_rms_log(pred, y), 6),
              "cv_long_within_5pct": round(float(np.mean(np.abs(rel[y >= full_weight_ms]) <= 0.05)), 4)
              if np.any(y >= full_weight_ms) else None,
              "cv_long_within_10pct": round(float(np.mean(np.abs(rel[y >= full_weight_ms]) <= 0.10)), 4)
              if np.any(y >= full_weight_ms) else None,
              "cv_within_5pct": round(float(np.mean(np.abs(rel) <= 0.05)), 4),
              "cv_within_10pct": round(float(np.mean(np.abs(rel) <= 0.10)), 4),
              "cv_kendall_tau": round(float(kendalltau(pred, y)[0]), 4), "models": int(len(y)), "cv": cv}
    log.info("whole-model calibration: delta %.1f us, ridge %s, LOMO RMS log error %.4f (common factor %.4f)",
             1000 * delta, ridge, err, single)
    return calibration, family


def loo_whole_calibration(data: Any, predicted: np.ndarray, **kw: Any) -> np.ndarray:
    """Each model's end-to-end time predicted by :func:`fit_whole_calibration` fitted, choice included, without it
    (nested leave-one-model-out; in the order of the models with an end-to-end time). For benchmarks."""
    sigs, _, groups, _ = data.arrays()
    families = sorted({family_of(s) for s in sigs})
    keep = [i for i, m in enumerate(data.models) if m.get("end_to_end_ms")]
    out = []
    for i in keep:
        sub = _Subset(data, [j for j in keep if j != i])
        cal, fam = fit_whole_calibration(sub, predicted[groups != i], **kw)
        x, _ = design_rows(_Subset(data, [i]), predicted[groups == i], families, fam["delta_ms"])
        coef = np.array([cal["scale"] * fam["factors"].get(f, 1.0) for f in families]
                        + [cal["per_copied_melement_ms"], cal["overhead_ms"]])
        out.append(float(x[0] @ coef))
    return np.array(out)


class _Subset:
    """Some models of a TrainingData-like object, with ``arrays()`` and ``models`` restricted to them."""

    def __init__(self, data: Any, index: Sequence[int]):
        self.models = [data.models[i] for i in index]
        sigs, ms, groups, ctx = data.arrays()
        pick = np.isin(groups, index)
        renum = {g: k for k, g in enumerate(index)}
        self._arrays = ([s for s, p in zip(sigs, pick) if p], ms[pick], np.array([renum[g] for g in groups[pick]]),
                        ctx[pick])

    def arrays(self):
        return self._arrays


def refit(path: str | os.PathLike, out: str | os.PathLike, folds: int = 5) -> Any:
    """A predictor with its whole-model calibration fitted again from its stored training data (no measurement).

    Reads ``path`` (a predictor file or a shipped predictor's name) and ``<path>.data.json``, predicts every
    training kernel out of fold with the predictor's own regressor choice (``folds`` groups of models, as
    :func:`hwnas.predict.train.train` does), fits :func:`fit_whole_calibration` and writes the predictor, its
    kernel regressors unchanged, to ``out`` (with the training data next to it).

    Raises:
        PredictorError: the file or its training data are missing or malformed.
    """
    from hwnas.predict.predictor import LatencyPredictor, PredictorError, training_data_path
    from hwnas.predict.train import TrainingData, validate

    t0 = time.perf_counter()
    pred = LatencyPredictor.load(path)
    data_path = training_data_path(pred.path)
    if not data_path.is_file():
        raise PredictorError(f"refit needs the predictor's training data at {str(data_path)!r} (written by "
                             "hwnas.predict.train next to the .skops file); it is not there.")
    data = TrainingData(data_path, pred.device, {})
    oof: list = []
    validation = validate(data, folds=folds, oof_out=oof, **{"candidates": dict(pred.kernels.choice_),
                                                            **_params(pred)})
    calibration, family = fit_whole_calibration(data, oof[0])
    meta = dict(pred.metadata)
    meta["validation"] = validation
    meta["family_calibration"] = family
    meta["refit"] = {"from": str(Path(path)), "from_sha256": pred.metadata.get("sha256"),
                     "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "folds": folds,
                     "seconds": round(time.perf_counter() - t0, 2),
                     "command": f"python benchmarks/train_predictor.py --refit {path} --out {out}"}
    new = LatencyPredictor(pred.kernels, pred.device, calibration, meta, pred.path)
    new.save(out)
    return LatencyPredictor.load(out)


def _params(pred: Any) -> dict[str, Any]:
    """The kernel regressor's constructor parameters that validation refits with (as trained)."""
    keep = ("n_estimators", "min_family_size", "work_baseline", "random_state", "nchwc_block", "physical_weight",
            "cv")
    return {k: v for k, v in pred.kernels.get_params().items() if k in keep}
