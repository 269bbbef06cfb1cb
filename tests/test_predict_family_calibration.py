"""The whole-model calibration (hwnas.predict.calibration.fit_whole_calibration) and its use in prediction.

Independent reference: end-to-end times made from known per-family factors, a known profiler cost per kernel, a
known movement cost and overhead over the shipped predictor's own training kernels; the fit must recover them,
and a predictor carrying the fitted records must predict those times with its own calibrate/movement/overhead."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from hwnas.hw.device import get_device
from hwnas.io import read_json
from hwnas.predict import KernelLatencyPredictor, LatencyPredictor, PredictorError, load_predictor
from hwnas.predict.calibration import fit_whole_calibration
from hwnas.predict.features import family_of
from hwnas.predict.predictor import default_predictor_path, training_data_path

KNOWN = {"conv": 1.0, "dwconv": 1.45, "eltwise": 0.7, "linear": 1.1, "gconv": 0.9, "matmul": 1.3, "pool": 0.8}
SCALE, DELTA, MOVE, OVERHEAD = 0.9, 0.004, 0.2, 0.03  # common factor, ms per kernel, ms per Melement, ms
CAL = {"scale": 0.9, "per_kernel_ms": 0.0, "per_copied_melement_ms": 0.0, "per_movement_node_ms": 0.0,
       "overhead_ms": 0.05}


class _Data:
    """The two things fit_whole_calibration reads of TrainingData: arrays() and models."""

    def __init__(self, models: list[dict]):
        self.models = models

    def arrays(self):
        sigs = [k[0] for m in self.models for k in m["kernels"]]
        ms = np.array([k[1] for m in self.models for k in m["kernels"]])
        groups = np.array([i for i, m in enumerate(self.models) for _ in m["kernels"]])
        return sigs, ms, groups, np.zeros(len(sigs))


def _truth(m: dict, factors: dict) -> float:
    """A model's end-to-end ms under the known calibration, written out kernel by kernel."""
    kern = sum(factors.get(family_of(k[0]), 1.0) * SCALE * max(k[1] - DELTA, 0.1 * k[1]) for k in m["kernels"])
    return kern + MOVE * m["movement"].get("copy_elements", 0.0) / 1e6 + OVERHEAD


def _models(noise: float, factors: dict = KNOWN, seed: int = 0) -> tuple[_Data, np.ndarray]:
    models = copy.deepcopy(read_json(training_data_path(default_predictor_path("cpu-ort-1t")), "data")["models"])
    rng = np.random.default_rng(seed)
    for m in models:
        m["lead_ms"] = 0.0
        m["end_to_end_ms"] = _truth(m, factors) * float(np.exp(rng.normal(0, noise)))
    data = _Data(models)
    return data, data.arrays()[1]  # the kernels' own times stand in for out-of-fold predictions


def test_known_calibration_is_recovered_from_end_to_end_times():
    data, oof = _models(noise=0.002)
    cal, rec = fit_whole_calibration(data, oof)
    assert rec["delta_ms"] == pytest.approx(DELTA) and rec["ridge"] is not None
    assert rec["cv_rms_log"] < 0.01 < rec["cv_rms_log_single"] and rec["models"] == len(data.models)
    assert cal["per_kernel_ms"] == pytest.approx(-cal["scale"] * DELTA)
    assert cal["overhead_ms"] == pytest.approx(OVERHEAD, abs=0.01)
    assert cal["per_copied_melement_ms"] == pytest.approx(MOVE, rel=0.15)
    # families with enough time in the models to be identified (the shipped training set has these)
    for fam in {"conv", "dwconv", "eltwise", "linear", "matmul"}:
        assert cal["scale"] * rec["factors"][fam] == pytest.approx(SCALE * KNOWN[fam], rel=0.05), fam


def test_a_family_factor_stays_within_its_bounds():
    data, oof = _models(noise=0.002, factors={**KNOWN, "pool": 0.0})  # pooling free: the old fit's factor 0
    cal, rec = fit_whole_calibration(data, oof, deltas=(DELTA,), ridges=(0.01,), full_weight_ms=0.0)
    assert rec["factors"]["pool"] == pytest.approx(rec["bounds"][0], rel=1e-6)
    assert all(rec["bounds"][0] - 1e-9 <= v <= rec["bounds"][1] + 1e-9 for v in rec["factors"].values())


def test_without_a_family_effect_the_factors_stay_near_the_common_one():
    data, oof = _models(noise=0.03, factors={})
    cal, rec = fit_whole_calibration(data, oof, deltas=(0.0, DELTA), ridges=(0.01, 0.1))
    assert cal["scale"] == pytest.approx(SCALE, rel=0.05)
    assert all(abs(v - 1) < 0.15 for f, v in rec["factors"].items() if f != "pool"), rec["factors"]


def test_bad_predictions_are_refused():
    data, oof = _models(noise=0.0)
    with pytest.raises(ValueError, match="one finite prediction"):
        fit_whole_calibration(data, oof[:-1])
    with pytest.raises(ValueError, match="one finite prediction"):
        fit_whole_calibration(data, np.where(np.arange(len(oof)) == 3, np.nan, oof))
    few = _Data(data.models[:5])
    with pytest.raises(ValueError, match="at least 8"):
        fit_whole_calibration(few, few.arrays()[1])


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


def test_a_predictor_with_the_fitted_records_predicts_what_was_fitted(small):
    """calibrate/movement_ms/overhead_ms apply the records in the form they are fitted in: a predictor whose kernel
    predictions are the training kernels' own times predicts the noise-free synthetic times."""
    pred, _ = small
    data, oof = _models(noise=0.0)
    cal, rec = fit_whole_calibration(data, oof, deltas=(DELTA,), ridges=(0.003,))
    fitted = copy.copy(pred)
    fitted.calibration = cal
    fitted.metadata = {**pred.metadata, "family_calibration": rec}
    for m in data.models[:12]:
        sigs = [k[0] for k in m["kernels"]]
        total = (fitted.calibrate(np.array([k[1] for k in m["kernels"]]), sigs).sum()
                 + fitted.movement_ms(m["movement"].get("copy_elements", 0.0), m["movement"].get("nodes", 0))
                 + fitted.overhead_ms)
        assert total == pytest.approx(m["end_to_end_ms"], rel=0.02)


@pytest.mark.slow  # 1-3 min: five folds of the shipped predictor's forests are fitted again
def test_refit_from_stored_data_reproduces_the_shipped_calibration(tmp_path):
    """The shipped predictor is what the documented command makes of its stored data (nothing is measured):
    ``python benchmarks/train_predictor.py --refit <shipped> --out <file>``."""
    from hwnas.predict.calibration import refit

    shipped = load_predictor(default_predictor_path("cpu-ort-1t"), check_fingerprint=False)
    again = refit(default_predictor_path("cpu-ort-1t"), tmp_path / "again.skops")
    assert training_data_path(tmp_path / "again.skops").is_file()
    for key in ("scale", "per_kernel_ms", "per_copied_melement_ms", "overhead_ms"):
        assert again.calibration[key] == pytest.approx(shipped.calibration[key], rel=1e-6, abs=1e-12), key
    assert again.family_calibration["factors"] == pytest.approx(shipped.family_calibration["factors"], rel=1e-5)
    assert again.metadata["refit"]["command"].startswith("python benchmarks/train_predictor.py --refit")
