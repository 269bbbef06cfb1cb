"""Learned latency predictors: kernels and whole models never measured.

- :class:`KernelLatencyPredictor`: a scikit-learn regressor from kernel signatures to in-context milliseconds,
  one regressor per kernel family chosen by grouped cross-validation (:mod:`hwnas.predict.estimator`), blended
  with a physical model of non-negative work terms (:mod:`hwnas.predict.physical`).
- :class:`LatencyPredictor`: a trained kernel predictor for one device with the calibration of whole models,
  saved safely with skops and its metadata (:mod:`hwnas.predict.predictor`); :func:`load_predictor`.
- :func:`train`: adaptive sampling of random whole models on a device, resumable (:mod:`hwnas.predict.train`).
- :func:`predict_latency`: a PyTorch model or an ONNX file -> total ms and a per-layer table
  (:mod:`hwnas.predict.whole`); ONNX files of any exporter are read by :mod:`hwnas.predict.onnx_graph` (symbolic
  dims bound, static shapes of the graph ORT runs; :class:`UnknownOpError` for an op it cannot cost).
- :func:`speed_check`: the machine's speed now against the training session, from some training models
  measured again (:mod:`hwnas.predict.speed`); ``predictor.with_speed(check)`` applies it.
- :func:`adapt`: a predictor carried to another machine or device, one factor per kernel family fitted from
  20-60 generator models measured there (:mod:`hwnas.predict.adapt`; ``hwnas adapt NAME_OR_FILE``).

A predictor also plugs into the cost-table engine: ``hwnas.LatencyProfiler(space, x, predictor=p)``, alone or
as the fallback for kernels a LUT lacks.
"""

from hwnas.predict.adapt import adapt
from hwnas.predict.estimator import CANDIDATES, KernelLatencyPredictor
from hwnas.predict.features import FAMILIES, family_of, featurize
from hwnas.predict.onnx_graph import ShapeError, UnknownOpError
from hwnas.predict.physical import physical_terms
from hwnas.predict.predictor import (
    TRUSTED_TYPES,
    LatencyPredictor,
    PredictorError,
    default_predictor_path,
    load_predictor,
)
from hwnas.predict.speed import speed_check
from hwnas.predict.train import model_signatures, train
from hwnas.predict.whole import ModelLatency, UnseenKernelWarning, onnx_kernels, predict_latency

__all__ = [
    "CANDIDATES",
    "FAMILIES",
    "KernelLatencyPredictor",
    "LatencyPredictor",
    "ModelLatency",
    "PredictorError",
    "ShapeError",
    "TRUSTED_TYPES",
    "UnknownOpError",
    "UnseenKernelWarning",
    "adapt",
    "default_predictor_path",
    "family_of",
    "featurize",
    "load_predictor",
    "model_signatures",
    "onnx_kernels",
    "physical_terms",
    "predict_latency",
    "speed_check",
    "train",
]
