"""Carry a learned latency predictor to another machine or runtime configuration in minutes: ``hwnas adapt``.

A predictor's kernel regressors hold where they were trained. On another CPU (or with more threads) kernel
families do not all change speed alike: dense convolutions, depthwise convolutions, GEMMs and the per-run overhead
move by different factors, so one speed factor (:func:`hwnas.predict.speed_check`) cannot carry them, and training
again takes 1,500 kernel measurements and many minutes.

:func:`adapt` draws ``n`` (20-60) fresh models from the predictor's own training-model generator
(:mod:`hwnas.predict.generator`), cycling through its block styles (:data:`~hwnas.predict.generator.STYLE_CYCLE`:
inverted residuals, ResNet blocks, plain, grouped and wide convolutions, ShuffleNet, fire modules, ViT/BERT-like
transformers, MobileViT-like hybrids, ConvNeXt, DenseNet and RegNetY-like blocks) so that every kernel family shows
up, at sizes that keep each one to milliseconds. Each model is read as ONNX Runtime runs it and its predicted
time split into the families of :data:`hwnas.hw.lut.FAMILIES` (dense, depthwise and 1x1 convolutions,
GEMM/attention/matmul, pooling, elementwise, data movement; :func:`hwnas.hw.lut.family_of`) plus the per-run
overhead (:func:`family_split`). All are measured on the target with hwnas's definition of latency (the steady-state
median, interleaved; :mod:`hwnas.hw.measure`), and one non-negative factor per family is fitted by the same
function that adapts LUTs (:func:`hwnas.hw.adapt.fit_families`: NNLS on relative error, a ridge towards one common
factor chosen by leave-one-out CV, the single factor a candidate too). A family with no time in the measured
models keeps the single factor. The result (:func:`adapt_from_measurements`) is a new predictor for the target
device carrying this host's fingerprint and an ``adapted`` record (:mod:`hwnas.predict.predictor`): the factors,
the source's fingerprint, ``n``, the CV errors, the time and the models measured (a later
:func:`~hwnas.predict.speed_check` of the adapted predictor measures those again).

Example:
    >>> from hwnas.predict import adapt
    >>> p = adapt("cpu-ort-1t", "cpu-ort-2t", n=40, out="cpu-ort-2t.adapted.skops")   # doctest: +SKIP
    >>> print(p.summary())                                                             # doctest: +SKIP
"""

from __future__ import annotations

import copy
import logging
import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from hwnas.hw.adapt import family_factors, fit_families
from hwnas.hw.device import Device, fingerprint, get_device
from hwnas.hw.lut import FAMILIES, family_of, now
from hwnas.predict.generator import STYLE_CYCLE, random_config
from hwnas.predict.predictor import LatencyPredictor, PredictorError, load_predictor

__all__ = ["adapt", "adapt_from_measurements", "draw_models", "family_split", "COLUMNS", "MAX_MACS", "N_RANGE"]

log = logging.getLogger(__name__)

#: The columns of a model's predicted time: the kernel families, then the per-run overhead.
COLUMNS = (*FAMILIES, "overhead")
#: The multiply-adds cap of an adaptation model per style (transformer styles run slower per multiply-add; the
#: others at 2e8): each model takes milliseconds, so that 40 of them are measured within the budget.
MAX_MACS = {"vit": 3e7, "seq": 3e7, "hybrid": 4e7, "convnext": 4e7, "wide": 3e8, "plain": 3e8}
#: A leave-one-out error (RMS of ln(predicted / measured)) above this is reported as disturbed measurements.
NOISY_CV = 0.25
#: How many models :func:`adapt` measures.
N_RANGE = (20, 60)


def draw_models(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` training-generator configs for an adaptation, styles in the order of
    :data:`~hwnas.predict.generator.STYLE_CYCLE` (the first 20 hold all 13 styles), seeded."""
    rng = np.random.default_rng(seed + 7919)
    return [random_config(rng, STYLE_CYCLE[i % len(STYLE_CYCLE)], max_macs=MAX_MACS.get(STYLE_CYCLE[i % len(
        STYLE_CYCLE)], 2e8), min_macs=5e6) for i in range(n)]


def family_split(predictor: LatencyPredictor, model: Any, dummy_input: Any = None,
                 device: str | Device | None = None) -> np.ndarray:
    """A model's predicted time split into :data:`COLUMNS` (ms, without a speed factor; an earlier adaptation's
    factors included): each kernel's calibrated cost under its family (:func:`hwnas.hw.lut.family_of` of its
    signature), data movement under ``"movement"``, the overhead last. ``model`` is an ONNX path or a module (with
    ``dummy_input``), read by :func:`hwnas.predict.predict_latency` as ONNX Runtime runs it on ``device`` (default:
    the predictor's; an adaptation reads on its target, whose graph level may fuse otherwise); the columns add up
    to its total."""
    from hwnas.predict.whole import predict_latency

    base = copy.copy(predictor)
    base.speed = {}
    if device is not None:
        base.device = get_device(device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # families the predictor predicts from sizes only are split all the same
        rec = predict_latency(model, dummy_input, device=base.device, predictor=base)
    out = np.zeros(len(COLUMNS))
    col = {c: i for i, c in enumerate(COLUMNS)}
    for kind, sig, ms in zip(rec.layers["kind"], rec.layers["signature"], rec.layers["predicted_ms"]):
        out[col["movement" if kind == "movement" else family_of(str(sig))]] += float(ms)
    out[col["overhead"]] = rec.overhead_ms
    return out


def _check_n(n: Any, low: int = N_RANGE[0], high: int = N_RANGE[1]) -> int:
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or not low <= n <= high:
        raise ValueError(f"adapt: n must be an int from {low} to {high} (models measured on the target), got {n!r}; "
                         "40 (the default) takes about 2 minutes, 20 about one.")
    return int(n)


def _check_out(out: Any) -> None:
    from hwnas.artifacts import shipped_name

    if out is None:
        return
    if Path(out).suffix != ".skops":
        raise PredictorError(f"adapt: out={str(out)!r} must end in .skops (a predictor file), e.g. "
                             f"{Path(out).with_suffix('.skops').name}.")
    if Path(out).exists() and shipped_name(out) is not None:
        raise PredictorError(f"adapt: out={str(out)!r} is the shipped predictor {shipped_name(out)!r}; it is not "
                             "written over. Write the adapted predictor to a file of yours.")


def _source(artefact: Any) -> LatencyPredictor:
    if isinstance(artefact, LatencyPredictor):
        return artefact
    if not isinstance(artefact, (str, os.PathLike)):
        raise TypeError(f"adapt: artefact must be a LatencyPredictor, a predictor file (.skops) or the name of a "
                        f"shipped predictor (e.g. 'cpu-ort-1t'), got {type(artefact).__name__}.")
    return load_predictor(artefact, check_fingerprint=False)


def adapt(artefact: LatencyPredictor | str | os.PathLike, device: str | Device | None = None, n: int = 40, *,
          out: str | os.PathLike | None = None, budget_s: float = 120.0, turn_ms: float = 100.0, seed: int = 0,
          progress: bool = True) -> LatencyPredictor:
    """Adapt a learned predictor to ``device`` on this machine from ``n`` steady-state measurements (see the
    module docstring).

    Args:
        artefact: a :class:`LatencyPredictor`, a predictor file (``.skops``) or a shipped predictor's name
            (``"cpu-ort-1t"``), typically from another machine.
        device: the target device (a registered name or a :class:`~hwnas.hw.device.Device`), measured here;
            ``None``: the predictor's own (the same runtime set-up on this machine).
        n: how many generator models to measure, 20 to 60.
        out: write the adapted predictor here (atomically); ``None`` only returns it.
        budget_s: the whole call's time budget in seconds (at least 30). Preparing the models (export, reading)
            stops at 55% of it with at least 20 ready; the measurement runs rounds (1 to 5) while it lasts.
        turn_ms: the steady protocol's turn length (:func:`~hwnas.hw.measure.measure_many`).
        seed: which models, and the round order.
        progress: show progress bars.

    Returns:
        The adapted predictor (device ``device``, this host's fingerprint, ``adapted`` record).

    Raises:
        ValueError: ``n`` or ``budget_s`` out of range.
        PredictorError / FileNotFoundError: not a predictor, or no such file or name.
        KeyError: unknown device.
    """
    from tqdm.auto import tqdm

    from hwnas.hw.measure import measure_many
    from hwnas.predict.train import export_training_model

    t0 = time.perf_counter()
    n = _check_n(n)
    if isinstance(budget_s, bool) or not isinstance(budget_s, (int, float)) or budget_s < 30:
        raise ValueError(f"adapt: budget_s must be at least 30 seconds, got {budget_s!r} (default 120).")
    _check_out(out)
    source = _source(artefact)
    dev = get_device(device if device is not None else source.device)
    dev.check_available()
    configs = draw_models(n, seed)
    rows, paths, inputs = [], [], []
    with tempfile.TemporaryDirectory(prefix="hwnas-adapt-predictor-") as work:
        for i, cfg in enumerate(tqdm(configs, desc="adapt: export and read models", disable=not progress,
                                     leave=False)):
            if i >= N_RANGE[0] and time.perf_counter() - t0 > 0.55 * budget_s:
                log.warning("adapt: preparing the models took %.0f s of the %.0f s budget; measuring %d of %d",
                            time.perf_counter() - t0, budget_s, i, n)
                break
            path, x = export_training_model(cfg, Path(work) / f"adapt{i}.onnx")
            rows.append(family_split(source, path, device=dev))
            paths.append(path)
            inputs.append(x)
        left = 0.92 * budget_s - (time.perf_counter() - t0)
        log.info("adapt: measuring %d models on %s (steady, up to 5 rounds in %.0f s)", len(paths), dev.name, left)
        recs = measure_many(paths, dev, dummy_inputs=inputs, method="steady", rounds=5, turn_ms=turn_ms, seed=seed,
                            progress=progress, time_limit_s=max(1.0, left))
    return adapt_from_measurements(
        source, dev, np.array(rows), [r.median_ms for r in recs], configs[: len(paths)], out=out, t0=t0,
        rounds=recs[0].rounds, turn_ms=turn_ms, load_avg=round(max(r.load_avg for r in recs), 2), n_requested=n)


def adapt_from_measurements(source: LatencyPredictor, device: str | Device, splits: Any, measured_ms: Any,
                            configs: list[dict[str, Any]] | None = None, *, out: str | os.PathLike | None = None,
                            t0: float | None = None, **info: Any) -> LatencyPredictor:
    """The adapted predictor from models measured on ``device``: ``splits`` (one row per model, its predicted time
    over :data:`COLUMNS`, :func:`family_split`) and ``measured_ms`` (their steady-state medians there).

    Args:
        source: the predictor adapted.
        device: the device the models were measured on; the result is a predictor for it, fingerprinted here.
        splits: array ``(models, len(COLUMNS))``, each row of positive total.
        measured_ms: one positive time per model.
        configs: the models' generator configs, kept in the record (a speed check of the result measures them).
        out: write the result here (atomically).
        t0: ``time.perf_counter()`` when the adaptation began (for the record's seconds).
        info: more fields for the record's ``adapted_from``.

    Raises:
        ValueError: shapes do not match, fewer than 5 models, or a time or split that is not finite and positive.
    """
    x = np.asarray(splits, dtype=float)
    y = np.asarray(measured_ms, dtype=float)
    if x.ndim != 2 or x.shape[1] != len(COLUMNS) or x.shape[0] != y.size:
        raise ValueError(f"adapt_from_measurements: splits must be (models, {len(COLUMNS)}) over {COLUMNS} with one "
                         f"measured time per model; got splits {x.shape} and {y.size} times.")
    if y.size < 5 or not np.all(np.isfinite(y) & (y > 0)) or not np.all(np.isfinite(x)) \
            or not np.all(x.sum(axis=1) > 0):
        raise ValueError(f"adapt_from_measurements: need at least 5 models with finite positive times and finite "
                         f"predicted splits of positive total; got {y.size} models, times "
                         f"{np.round(y, 4).tolist()[:8]}, predicted totals {np.round(x.sum(axis=1), 4).tolist()[:8]}.")
    if configs is not None and len(configs) != y.size:
        raise ValueError(f"adapt_from_measurements: {len(configs)} configs for {y.size} measured models.")
    dev = get_device(device)
    # a calibrated data-movement term can be negative (its per-element cost is fitted freely in training)
    keep = [j for j in range(x.shape[1]) if np.any(x[:, j] != 0)]
    columns = [COLUMNS[j] for j in keep]
    fit = fit_families(x[:, keep], y, columns, priors=("common",))
    every = family_factors(fit, x[:, keep], y, COLUMNS, absent="one factor")
    old = source.adapted
    adapted = copy.copy(source)
    adapted.device, adapted.speed, adapted.path = dev, {}, None
    meta = copy.deepcopy(source.metadata)
    meta["fingerprint"] = fingerprint(dev)
    share = x.sum(axis=0) / x.sum()
    seconds = time.perf_counter() - t0 if t0 is not None else float("nan")
    meta["adapted"] = {
        "families": {f: round(float(old["families"].get(f, 1.0) if old else 1.0) * every[f], 6) for f in FAMILIES},
        "overhead": round(float(old["overhead"] if old else 1.0) * every["overhead"], 6),
        "adapted_from": {
            "device": source.device.name, "fingerprint": source.metadata.get("fingerprint", {}),
            "cpu_model": source.metadata.get("fingerprint", {}).get("cpu_model"),
            "path": str(source.path) if source.path else None, "n": int(y.size), "definition": "steady",
            "prior": fit.prior, "ridge": fit.ridge, "cv_rms": round(fit.cv_rms, 5),
            "cv_rms_one_factor": round(fit.cv_rms_one_factor, 5), "rms_unadapted": round(fit.rms_shipped, 5),
            "cv": fit.cv, "factors": {c: round(every[c], 6) for c in COLUMNS},
            "share": {c: round(float(v), 5) for c, v in zip(COLUMNS, share)},
            "seconds": round(seconds, 1), "measured": now(), **info,
        },
        "measurements": [{"config": c, "measured_ms": round(float(t), 6), "predicted_ms": round(float(s), 6)}
                         for c, t, s in zip(configs or [None] * y.size, y, x.sum(axis=1))],
    }
    if fit.cv_rms > NOISY_CV:
        meta["adapted"]["adapted_from"]["warning"] = note = (
            f"the measured models do not follow the predictor's families: leave-one-out error {100 * fit.cv_rms:.0f}% "
            f"(one factor {100 * fit.cv_rms_one_factor:.0f}%); the measurements were probably disturbed (load "
            f"{info.get('load_avg', '?')}) or the device runs the kernels unlike any factor of them. Measure again on a "
            "quiet machine before relying on the factors.")
        log.warning("adapt: %s", note)
    adapted.metadata = meta
    log.info("adapted the predictor of %s to %s in %.0f s: %s; LOO error %.2f%% (one factor %.2f%%, unadapted "
             "%.2f%%)", source.device.name, dev.name, seconds, meta["adapted"]["adapted_from"]["factors"],
             100 * fit.cv_rms, 100 * fit.cv_rms_one_factor, 100 * fit.rms_shipped)
    if out is not None:
        _check_out(out)
        adapted.save(out)
    return adapted
