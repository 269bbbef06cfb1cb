"""What a predictor's speed check reads from files is validated before use (hwnas.predict.speed.training_models):
the training data next to the predictor (``<file>.data.json``) and an adapted predictor's measurements. Independent
reference: the interleaved models counted straight from the shipped JSON file."""

from __future__ import annotations

import copy
import json
import types

import pytest

from hwnas.predict import PredictorError
from hwnas.predict.predictor import default_predictor_path, training_data_path
from hwnas.predict.speed import training_models

SHIPPED_DATA = training_data_path(default_predictor_path("cpu-ort-1t"))


def _predictor(tmp_path, data: object | None = None, adapted: dict | None = None) -> types.SimpleNamespace:
    """What training_models reads of a LatencyPredictor: its file's path and its adaptation record."""
    path = tmp_path / "p.skops"
    if data is not None:
        training_data_path(path).write_text(json.dumps(data))
    return types.SimpleNamespace(path=path, adapted=adapted or {})


@pytest.fixture(scope="module")
def shipped_data() -> dict:
    return json.loads(SHIPPED_DATA.read_text())


def test_the_shipped_training_data_are_read(shipped_data, tmp_path):
    models = training_models(_predictor(tmp_path, shipped_data))
    want = [m for m in shipped_data["models"] if m.get("interleaved") and m.get("end_to_end_ms")]
    assert len(models) == len(want) >= 40
    assert [m["end_to_end_ms"] for m in models] == [m["end_to_end_ms"] for m in want]


@pytest.mark.parametrize("field, value, expected", [
    ("end_to_end_ms", "fast", "models[3].end_to_end_ms"),
    ("end_to_end_ms", -1.0, "models[3].end_to_end_ms"),
    ("config", [1, 2], "models[3].config"),
    ("interleaved", "yes", "models[3].interleaved"),
    ("end_to_end_measurements_ms", [1.0, 0.0], "models[3].end_to_end_measurements_ms"),
])
def test_a_malformed_number_in_the_training_data_is_named(shipped_data, tmp_path, field, value, expected):
    bad = copy.deepcopy(shipped_data)
    bad["models"][3][field] = value
    with pytest.raises(PredictorError, match="malformed at " + expected.replace("[", r"\[").replace("]", r"\]")):
        training_models(_predictor(tmp_path, bad))


def test_a_file_that_is_not_training_data_is_refused(shipped_data, tmp_path):
    with pytest.raises(PredictorError, match="not hwnas predictor training data"):
        training_models(_predictor(tmp_path, {**shipped_data, "format": "something else"}))
    with pytest.raises(PredictorError, match="not hwnas predictor training data"):
        training_models(_predictor(tmp_path, [1, 2, 3]))
    (tmp_path / "none").mkdir()
    with pytest.raises(PredictorError, match="not there"):
        training_models(_predictor(tmp_path / "none"))


def test_an_adapted_predictors_measurements_are_checked(tmp_path):
    good = {"measurements": [{"config": {"input": [1, 3, 32, 32]}, "measured_ms": 1.5}]}
    assert training_models(_predictor(tmp_path, adapted=good))[0]["end_to_end_ms"] == 1.5
    for bad in ({"measurements": [{"config": {"input": [1]}, "measured_ms": float("nan")}]},
                {"measurements": [{"config": {"input": [1]}, "measured_ms": "1.5"}]},
                {"measurements": [{"config": {"input": [1]}, "measured_ms": 0}]},
                {"measurements": {"config": {}}}):
        with pytest.raises(PredictorError, match="measure"):
            training_models(_predictor(tmp_path, adapted=bad))
