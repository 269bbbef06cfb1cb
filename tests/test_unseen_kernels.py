"""UnseenKernelWarning: predict_latency warns exactly when a model has kernels of a family its predictor was not
trained on, and predicts those kernels from their sizes only (the family-independent fallback).

The condition is checked independently of hwnas's family mapping: the training kernels are real measurements
from the shipped predictor's data file, split by reading the signature strings here (a depthwise convolution is
a ``conv`` whose group count equals its input channels), and the test model's depthwise layers are counted from
its ``nn.Conv2d`` modules.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from hwnas.hw import get_device
from hwnas.predict import (
    KernelLatencyPredictor,
    LatencyPredictor,
    UnseenKernelWarning,
    default_predictor_path,
    predict_latency,
)

X = torch.randn(1, 3, 24, 24, generator=torch.Generator().manual_seed(0))


def _is_depthwise(signature: str) -> bool:
    """A depthwise convolution, read from the signature string alone: ``conv|in=NxCxHxW|...|g=C|...``."""
    op, *fields = signature.split("|")
    attrs = dict(f.split("=", 1) for f in fields)
    if op != "conv":
        return False
    cin, groups = int(attrs["in"].split("x")[1]), int(attrs["g"])
    return groups > 1 and groups == cin


@pytest.fixture(scope="module")
def training():
    """The shipped predictor's measured kernels (signature, ms), depthwise convolutions apart from the rest."""
    path = default_predictor_path("cpu-ort-1t")
    data = json.loads(path.with_name(path.name + ".data.json").read_text())
    kernels = [(s, t) for m in data["models"] for s, t, _ in m["kernels"] if t > 0]
    depthwise = [k for k in kernels if _is_depthwise(k[0])]
    rest = [k for k in kernels if not _is_depthwise(k[0])]
    assert len(depthwise) >= 20 and len(rest) > 500  # the data hold both, or this test checks nothing
    return depthwise, rest


def _predictor(kernels, device) -> LatencyPredictor:
    """A small predictor fitted on ``kernels`` (fast settings), with an identity calibration."""
    est = KernelLatencyPredictor(candidates={}, n_estimators=10, physical_weight=0.0)
    est.fit([s for s, _ in kernels], np.array([t for _, t in kernels]))
    return LatencyPredictor(est, device, {"scale": 1.0, "per_kernel_ms": 0.0, "overhead_ms": 0.01}, {})


def _model(depthwise: bool) -> nn.Module:
    torch.manual_seed(0)
    mid = nn.Conv2d(16, 16, 3, padding=1, groups=16) if depthwise else nn.Conv2d(16, 16, 3, padding=1)
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), mid, nn.ReLU(), nn.Conv2d(16, 32, 1),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10)).eval()


def _predict(model_or_path, pred, x=X):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rec = predict_latency(model_or_path, x, device=pred.device, predictor=pred)
    return rec, [w for w in caught if issubclass(w.category, UnseenKernelWarning)]


@pytest.fixture(scope="module")
def device():
    return get_device("cpu-ort-1t")


def test_a_family_missing_from_training_warns_and_names_the_kernels(training, device, tmp_path):
    depthwise, rest = training
    pred = _predictor(rest, device)
    model = _model(depthwise=True)
    n_dw = sum(isinstance(m, nn.Conv2d) and m.groups == m.in_channels > 1 for m in model.modules())
    assert n_dw == 1
    rec, warned = _predict(model, pred)
    assert len(warned) == 1
    msg = str(warned[0].message)
    assert f"{n_dw} kernels of op(s) ['conv']" in msg and "regressor='fallback'" in msg
    assert msg in rec.notes
    fallback = rec.layers[rec.layers["regressor"] == "fallback"]
    assert len(fallback) == n_dw and all(_is_depthwise(s) for s in fallback["signature"])
    assert np.isfinite(fallback["predicted_ms"]).all() and (fallback["predicted_ms"] > 0).all()
    # the same model read from its ONNX file, as ONNX Runtime runs it: the same kernels fall back
    onnx_path = tmp_path / "dw.onnx"
    torch.onnx.export(model, X, str(onnx_path), dynamo=False, opset_version=17)
    rec_onnx, warned_onnx = _predict(onnx_path, pred)
    assert len(warned_onnx) == 1 and (rec_onnx.layers["regressor"] == "fallback").sum() == n_dw


def test_a_model_of_trained_families_does_not_warn(training, device):
    _, rest = training
    pred = _predictor(rest, device)
    rec, warned = _predict(_model(depthwise=False), pred)
    assert warned == [] and (rec.layers["regressor"] != "fallback").all()
    assert not any("fallback" in n for n in rec.notes)


def test_the_warning_follows_the_minimum_family_size(training, device):
    """A family with fewer training kernels than ``min_family_size`` gets no regressor of its own: one kernel
    short warns, exactly enough does not."""
    depthwise, rest = training
    need = KernelLatencyPredictor().min_family_size
    model = _model(depthwise=True)
    _, warned = _predict(model, _predictor(rest + depthwise[:need - 1], device))
    assert len(warned) == 1
    rec, warned = _predict(model, _predictor(rest + depthwise[:need], device))
    assert warned == [] and (rec.layers["regressor"] != "fallback").all()
