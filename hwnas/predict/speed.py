"""Speed checks for a predictor: how much faster or slower the machine runs now than when it was trained.

A predictor's milliseconds are at the speed of its training session. A shared machine drifts: on this
project's host the same models ran 11% slower one evening than in training, and within 10 minutes the host had
moved by that much (docs/predictor.md). :func:`speed_check` measures some of the predictor's own
training models again (their configs and end-to-end times ship next to it, in ``<predictor>.data.json``), the
way they were measured in training (interleaved, each run paired with the predictor's reference model), and
returns the median of their times now over their stored times: a :class:`~hwnas.hw.speed.SpeedCheck`, as for a
LUT. The training models span 0.3 to 120 ms, and small ones drift more than large ones here, so the check also
fits a size term when it predicts the models better (leave-one-out). ``predictor.with_speed(check)`` then scales
every calibrated cost by the median factor, and whole-model predictions by the factor for their size. Ranking
models does not need it; absolute milliseconds on a drifting machine do.

Example:
    >>> import torch, hwnas
    >>> from hwnas.predict import load_predictor, speed_check
    >>> predictor = load_predictor(device="cpu-ort-1t")
    >>> check = speed_check(predictor, n=4)                      # about 20 seconds
    >>> 0.5 < check.factor < 2.0
    True
    >>> now = predictor.with_speed(check)
    >>> rec = hwnas.predict_latency(hwnas.zoo.create("resnet18").eval(), torch.randn(1, 3, 160, 160),
    ...                             predictor=now)
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from hwnas.hw.measure import measure_many
from hwnas.hw.speed import SpeedCheck, fit_level
from hwnas.io import read_json
from hwnas.predict.predictor import LatencyPredictor, PredictorError, training_data_path
from hwnas.predict.train import DATA_FORMAT, Reference, export_training_model, measure_interleaved
from hwnas.predict.validate import DATA_FIX, check_training_data

__all__ = ["speed_check", "training_models", "compare_with_training"]

log = logging.getLogger(__name__)


def training_models(predictor: LatencyPredictor) -> list[dict[str, Any]]:
    """The predictor's training models that were measured interleaved (``config``, ``end_to_end_ms``, ...), from
    ``<predictor file>.data.json``; for an adapted predictor (:func:`hwnas.predict.adapt`), the models its
    adaptation measured on its device.

    Raises:
        PredictorError: the predictor has no file, or its training data are not next to it.
    """
    record = predictor.adapted.get("measurements", []) if predictor.adapted else []
    if not isinstance(record, list):
        raise PredictorError(f"predictor {str(predictor.path or '')!r}: its adaptation record's \"measurements\" is "
                             f"a {type(record).__name__}, expected a list of {{\"config\": {{...}}, \"measured_ms\": "
                             "ms > 0}. Adapt the source predictor again (hwnas adapt).")
    measured = [m for m in record if isinstance(m, dict) and m.get("config")]
    for i, m in enumerate(measured):
        if not isinstance(m["config"], dict) or not _positive(m.get("measured_ms")):
            raise PredictorError(f"predictor {str(predictor.path or '')!r}: adaptation measurement {i} is malformed "
                                 f"(expected a config object and \"measured_ms\" a finite number > 0, got config "
                                 f"{type(m['config']).__name__} and measured_ms {m.get('measured_ms')!r}). Adapt the "
                                 "source predictor again (hwnas adapt).")
    if measured:  # an adapted predictor: the models its adaptation measured on this device, steady
        return [{"config": m["config"], "end_to_end_ms": float(m["measured_ms"]), "interleaved": True,
                 "end_to_end_protocol": "steady"} for m in measured]
    data = training_data_path(predictor.path) if predictor.path is not None else None
    if data is None or not data.is_file():
        raise PredictorError(f"a speed check measures the predictor's training models again, which are listed in "
                             f"its training data, expected at {str(data) if data else '<predictor file>.data.json'!r}; "
                             "that file is not there. Keep the .data.json that train() wrote next to the .skops file.")
    content = read_json(data, "predictor training data")
    if not isinstance(content, dict) or content.get("format") != DATA_FORMAT:
        got = content.get("format") if isinstance(content, dict) else type(content).__name__
        raise PredictorError(f"{str(data)!r} is not hwnas predictor training data (expected an object with \"format\": "
                             f"{DATA_FORMAT!r}, got {got!r}). {DATA_FIX}")
    check_training_data(content, data, PredictorError)  # every time and count is checked before one is used
    models = [m for m in content["models"] if m.get("interleaved") and m.get("end_to_end_ms")]
    if not models:
        raise PredictorError(f"{str(data)!r} holds no training model with an interleaved end-to-end time; a "
                             "speed check compares against those. Train the predictor again with this hwnas.")
    return models


def _positive(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and bool(np.isfinite(v)) and v > 0


def compare_with_training(models: list[dict[str, Any]], measured_ms: list[float]) -> SpeedCheck:
    """The :class:`~hwnas.hw.speed.SpeedCheck` of training ``models`` measured now (``measured_ms``, at this
    session's speed, in the same order): the median of now over their stored ``end_to_end_ms``, and the size term
    over those times when it predicts better (see the class)."""
    if len(models) != len(measured_ms):
        raise ValueError(f"compare_with_training: {len(measured_ms)} times for {len(models)} training models; "
                         "pass one time per model, in the same order.")
    return SpeedCheck.from_ratios([t / m["end_to_end_ms"] for m, t in zip(models, measured_ms)],
                                  [m["config"] for m in models], times_ms=[m["end_to_end_ms"] for m in models])


def speed_check(predictor: LatencyPredictor, n: int = 16, measurements: int = 2, seed: int = 0,
                progress: bool = False, definition: str = "steady") -> SpeedCheck:
    """Measure ``n`` of the predictor's training models now and compare with their times in training.

    Args:
        predictor: a loaded :class:`LatencyPredictor` (its device, reference model and training data are used).
        n: how many training models (seeded random choice; all of them if fewer).
        measurements: separate interleaved measurements, as in training (a model's time is their geometric mean).
        seed: which models, and the round order.
        progress: show progress bars.
        definition: ``"steady"`` (default): the check also measures the same models with the steady protocol in
            the same run (hwnas's definition of latency, :mod:`hwnas.hw.measure`) and multiplies every ratio by the
            level steady / paired fitted over them (:func:`hwnas.hw.speed.fit_level`, the ratio), so the checked
            predictor predicts steady-state medians (it was trained on paired times); ``"paired"``: the paired
            level, as trained.

    Returns:
        A :class:`~hwnas.hw.speed.SpeedCheck`; ``predictor.with_speed(check)`` applies it.

    Raises:
        PredictorError: no training data next to the predictor (see :func:`training_models`).
        ValueError: ``n`` or ``measurements`` below 1.
    """
    if definition not in ("steady", "paired"):
        raise ValueError(f"speed_check: definition must be 'steady' (hwnas's definition of latency) or 'paired', "
                         f"got {definition!r}.")
    if n < 1 or measurements < 1:
        raise ValueError(f"speed_check: n and measurements must be at least 1, got n={n}, measurements={measurements}; "
                         "the defaults (n=16, measurements=2) take about a minute, n=4 a few seconds.")
    models = training_models(predictor)
    pick = np.random.default_rng(seed).permutation(len(models))[:n]
    models = [models[i] for i in sorted(pick)]
    ref_meta = predictor.metadata.get("reference")
    with tempfile.TemporaryDirectory(prefix="hwnas-predictor-speed-") as work:
        ref = Reference(predictor.device, work, **ref_meta) if ref_meta else None
        paths, inputs = zip(*[export_training_model(m["config"], Path(work) / f"training-{i}.onnx")
                              for i, m in enumerate(models)])
        # a predictor trained on steady-state end-to-end times (hwnas.predict.train stores the protocol) is checked
        # with the same protocol and already predicts hwnas's definition; one trained on paired times is checked
        # paired and, for definition="steady", mapped onto the steady level below
        stored_steady = all(m.get("end_to_end_protocol") == "steady" for m in models)
        out = measure_interleaved(list(paths), list(inputs), predictor.device, [m["end_to_end_ms"] for m in models],
                                  ref, measurements=measurements, seed=seed, progress=progress, speed_basis=False,
                                  protocol="steady" if stored_steady else "paired")
        level = 1.0
        if definition == "steady" and not stored_steady and ref is not None and len(models) >= 3:
            steady = measure_many(list(paths), predictor.device, dummy_inputs=list(inputs), method="steady",
                                  rounds=2, seed=seed, progress=progress)
            level = fit_level([o["ms"] for o in out], [r.median_ms for r in steady])["ratio"]
            log.info("predictor speed check: steady-state level %.4f x the paired one over %d models", level,
                     len(models))
    check = compare_with_training(models, [level * o["ms"] for o in out])
    check.level = level
    log.info("predictor speed check on %s: %s the training times", predictor.device.name, check.describe())
    return check
