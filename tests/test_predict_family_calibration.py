"""The training's per-family calibration (hwnas.predict.train.fit_family_calibration) and its use in prediction.

Independent reference: end-to-end times made from known per-family factors over the shipped predictor's own
training kernels; the fit must recover the factors, and a predictor carrying them must scale each kernel's
calibrated cost by its family's factor."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from hwnas.hw.device import get_device
from hwnas.io import read_json
from hwnas.predict import KernelLatencyPredictor, LatencyPredictor, PredictorError, load_predictor
from hwnas.predict.features import family_of
from hwnas.predict.predictor import default_predictor_path, training_data_path
from hwnas.predict.train import fit_family_calibration

KNOWN = {"conv": 1.0, "dwconv": 1.45, "eltwise": 0.7, "linear": 1.1, "gconv": 0.9, "matmul": 1.3, "pool": 0.8}
CAL = {"scale": 0.9, "per_kernel_ms": 0.0, "per_copied_melement_ms": 0.0, "per_movement_node_ms": 0.0,
       "overhead_ms": 0.05}


class _Data:
    """The two things fit_family_calibration reads of TrainingData: arrays() and models."""

    def __init__(self, models: list[dict]):
        self.models = models

    def arrays(self):
        sigs = [k[0] for m in self.models for k in m["kernels"]]
        ms = np.array([k[1] for m in self.models for k in m["kernels"]])
        groups = np.array([i for i, m in enumerate(self.models) for _ in m["kernels"]])
        return sigs, ms, groups, np.zeros(len(sigs))


def _models(noise: float, seed: int = 0) -> tuple[_Data, np.ndarray]:
    models = copy.deepcopy(read_json(training_data_path(default_predictor_path("cpu-ort-1t")), "data")["models"])
    rng = np.random.default_rng(seed)
    for m in models:
        m["movement"], m["lead_ms"] = {}, 0.0
        kern = sum(KNOWN.get(family_of(k[0]), 1.0) * CAL["scale"] * k[1] for k in m["kernels"])
        m["end_to_end_ms"] = (kern + 1.2 * CAL["overhead_ms"]) * float(np.exp(rng.normal(0, noise)))
    data = _Data(models)
    return data, data.arrays()[1]  # the kernels' own times stand in for out-of-fold predictions


def test_known_family_factors_are_recovered_from_end_to_end_times():
    data, oof = _models(noise=0.002)
    fams = {family_of(s) for s in data.arrays()[0]}
    rec = fit_family_calibration(data, oof, CAL)
    assert rec, "the factors must beat one common scale when the families truly differ"
    assert rec["cv_rmspe"] < rec["cv_rmspe_single"] and rec["models"] == len(data.models)
    # families with enough time in the models to be identified (the shipped training set has these)
    for fam in fams & {"conv", "dwconv", "eltwise", "linear"}:
        assert rec["factors"][fam] == pytest.approx(KNOWN[fam], rel=0.06), fam


def test_without_a_family_effect_no_factors_are_kept():
    data, oof = _models(noise=0.03)
    for m in data.models:  # every family at the common scale: nothing to gain over it
        m["end_to_end_ms"] = (CAL["scale"] * sum(k[1] for k in m["kernels"]) + CAL["overhead_ms"]) * float(
            np.exp(np.random.default_rng(len(m["kernels"])).normal(0, 0.03)))
    rec = fit_family_calibration(data, oof, CAL)
    assert rec == {} or all(abs(v - 1) < 0.15 for v in rec["factors"].values())


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A small predictor (linear regressors on the shipped predictor's training kernels), saved and loaded: the
    shipped one's forests take seconds to load."""
    models = read_json(training_data_path(default_predictor_path("cpu-ort-1t")), "data")["models"]
    kernels = [(k[0], k[1]) for m in models for k in m["kernels"] if k[1] > 0]
    est = KernelLatencyPredictor(candidates=("linear",), cv=2, physical_weight=0.0, nchwc_block=8,
                                 n_estimators=3).fit([k[0] for k in kernels], np.array([k[1] for k in kernels]))
    pred = LatencyPredictor(est, get_device("cpu-ort-1t"), dict(CAL), {"training": {"kernel_measurements": len(kernels)}})
    return load_predictor(pred.save(tmp_path_factory.mktemp("small") / "small.skops")), [k[0] for k in kernels[:60]]


def test_a_predictor_scales_each_kernel_by_its_family_factor(small):
    pred, sigs = small
    factors = {"conv": 2.0, "eltwise": 0.5}
    scaled = copy.copy(pred)
    scaled.metadata = {**pred.metadata, "family_calibration": {"factors": factors, "rest": 3.0}}
    a, b = pred.kernel_costs_ms(sigs), scaled.kernel_costs_ms(sigs)
    want = a * np.array([factors.get(family_of(s), 1.0) for s in sigs])
    assert {family_of(s) for s in sigs} >= {"conv", "eltwise"} and b == pytest.approx(want, rel=1e-12)
    assert scaled.overhead_ms == pytest.approx(3.0 * pred.overhead_ms, rel=1e-12)
    with pytest.raises(PredictorError, match="signatures"):
        scaled.calibrate(np.ones(3))


def test_a_malformed_family_calibration_is_refused_on_load(small, tmp_path):
    pred, _ = small
    bad = copy.copy(pred)
    bad.metadata = {**pred.metadata, "family_calibration": {"factors": {"conv": -1.0}, "rest": 1.0}}
    with pytest.raises(PredictorError, match="family_calibration"):
        load_predictor(bad.save(tmp_path / "bad.skops"))
