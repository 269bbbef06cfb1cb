"""Hostile and careless input to LUTs, LUT builds and predictors (issue 18, the hardware part).

Every edited file ends in a :class:`~hwnas.hw.lut.LUTError` / :class:`~hwnas.predict.PredictorError` that names the
file, the key path, what was expected and what was found, or loads to the same predictions as the file it came
from (checked against the unedited LUT's own :class:`~hwnas.hw.latency.LatencyProfiler`). Builds into one file are
locked, refuse other settings on resume, leave no temporary files and add up their time.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import textwrap
import time
import warnings
import zipfile

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hwnas
from hwnas.artifacts import lut_path
from hwnas.hw.build import build_lut
from hwnas.hw.latency import LatencyProfiler
from hwnas.hw.lut import LUT, FingerprintWarning, LUTError
from hwnas.hw.scratch import remove_stale_scratch
from hwnas.io import FileInUseError, lock_file

X = torch.randn(1, 1, 8, 8)
TINY = dict(repeats_per_kernel=1, runs=3, warmup=1, progress=False, random_subnets=0, calibrate=0, max_subnets=1)
SHIPPED = json.loads(lut_path("digits").read_text())
SIG = sorted(SHIPPED["entries"])[5]


@pytest.fixture(scope="module")
def space():
    return hwnas.spaces.create("digits").eval()


def _edit(tmp_path, edit, name="edited.json"):
    data = json.loads(json.dumps(SHIPPED))
    edit(data)
    path = tmp_path / name
    path.write_text(json.dumps(data))  # NaN and Infinity as JSON's extensions, as Python writes them
    return path


def _set(keys, value):
    def edit(data):
        parent = data
        for k in keys[:-1]:
            parent = parent[k]
        if value is KeyError:
            del parent[keys[-1]]
        else:
            parent[keys[-1]] = value
    return edit


# ------------------------------------------------------------------------------------------- LUT loader
@pytest.mark.parametrize("keys, value, where, expected", [
    (("calibration", "scale"), -1, "calibration.scale", "> 0"),
    (("calibration", "scale"), "big", "calibration.scale", "a finite number"),
    (("calibration",), KeyError, "calibration", "got missing"),
    (("calibration", "overhead_ms"), float("nan"), "calibration.overhead_ms", "a finite number"),
    (("calibration", "overhead_ms"), 1.0, "calibration.overhead_ms", "<= 0.501"),
    (("entries", SIG, "normalized_ms"), -0.01, "normalized_ms", "> 0"),
    (("entries", SIG, "times_ms", 0), -1.0, "times_ms[0]", ">= 0"),
    (("entries", SIG, "times_ms", 0), float("inf"), "times_ms[0]", "a finite number"),
    (("entries", SIG, "times_ms"), KeyError, "times_ms", "got missing"),
    (("entries", SIG, "adjust_ms"), -5.0, "adjust_ms", ">= -0.501"),
    (("entries", SIG, "subnets", 0), 10**6, "subnets[0]", "<= 206"),
    (("entries", SIG, "nodes", 0), 1.5, "nodes[0]", "an int >= 0"),
    (("subnets", 3, "end_to_end_ms"), 0, "subnets[3].end_to_end_ms", "> 0"),
    (("subnets", 3, "kernels"), {"x": True}, "subnets[3].kernels['x']", "an int >= 0"),
    (("device", "intra_op_threads"), "2", "device.intra_op_threads", "int"),
    (("device", "allow_spinning"), 1, "device.allow_spinning", "bool"),
    (("settings", "input_shape"), [1, -1], "settings.input_shape", "positive ints"),
    (("spaces",), "digits", "spaces", "a list"),
])
def test_a_bad_number_or_field_is_refused_naming_file_key_expected_and_got(tmp_path, keys, value, where, expected):
    path = _edit(tmp_path, _set(keys, value))
    with pytest.raises(LUTError) as err:
        LUT.load(path)
    msg = str(err.value)
    assert "edited.json" in msg and f"malformed at {where}" in msg.replace("entries['", "").replace(SIG + "'].", "")
    assert expected in msg and "got " in msg
    filled = "digits --input 1,1,8,8" if keys != ("spaces",) else "<space> --input <input>"
    assert f"hwnas lut build --space {filled} --device cpu-ort-1t --out <new file>" in msg


def test_a_lut_that_predicts_a_negative_time_for_its_own_build_subnet_is_refused(tmp_path):
    smallest = min(r["end_to_end_ms"] for r in SHIPPED["subnets"])
    path = _edit(tmp_path, _set(("calibration", "overhead_ms"), -smallest))  # finite, and within 10x any subnet
    with pytest.raises(LUTError, match=r"edited\.json' is malformed: it predicts -[\d.e-]+ ms for its own build "
                                       r"subnet subnets\[\d+\] .*expected a time >= 0"):
        LUT.load(path)


def test_a_partial_build_is_checked_for_types_only_when_the_build_resumes_it(tmp_path):
    def partial(data):  # a build's first subnets can fit a negative scale; the build fits it again
        data["calibration"]["scale"] = -0.5
        del data["settings"]["interleaved_end_to_end"]

    path = _edit(tmp_path, partial)
    assert LUT.load(path, strict=False).calibration["scale"] == -0.5
    with pytest.raises(LUTError, match=r"calibration\.scale: expected a finite number > 0 and <= 100, got -0\.5 .* "
                                       r"it is a build that has not reached its end-to-end pass: to finish it, resume "
                                       r"the build with --out '.*edited\.json'"):
        LUT.load(path)


def test_an_edited_time_no_longer_matches_its_stored_median(tmp_path):
    entry = SHIPPED["entries"][SIG]
    assert "normalized_ms" in entry and entry["median_ms"] == pytest.approx(entry["normalized_ms"], abs=1e-6)
    path = _edit(tmp_path, _set(("entries", SIG, "normalized_ms"), 2 * entry["normalized_ms"]))
    with pytest.raises(LUTError, match=r"median_ms: expected the median of the entry's own times"):
        LUT.load(path)


def test_unknown_version_names_it_and_the_rebuild(tmp_path):
    with pytest.raises(LUTError, match=r"has version 2; this hwnas reads version 1 only\. Build it again with this "
                                       r"hwnas: hwnas lut build --space digits"):
        LUT.load(_edit(tmp_path, _set(("version",), 2)))


def test_an_unedited_copy_predicts_exactly_as_the_shipped_lut(space, tmp_path):
    shipped = LatencyProfiler(space, X, lut="digits")
    copy = LatencyProfiler(space, X, lut=_edit(tmp_path, lambda d: None))
    for seed in range(5):
        s = space.random_sample(seed)
        assert copy.profile(s) == shipped.profile(s) > 0


# ------------------------------------------------------------------------------------------- fingerprint
@pytest.mark.parametrize("edit", [_set(("fingerprint",), {}), _set(("fingerprint",), KeyError)])
def test_an_empty_or_missing_fingerprint_warns(tmp_path, edit):
    with pytest.warns(FingerprintWarning, match=r"has no machine fingerprint .* hwnas adapt"):
        LUT.load(_edit(tmp_path, edit))


def test_a_thread_count_mismatch_names_both_devices(tmp_path):
    path = _edit(tmp_path, lambda d: None, "mine.json")
    with pytest.raises(LUTError, match=r"measured on device 'cpu-ort-1t', not on the requested 'cpu-ort-2t': "
                                       r"name 'cpu-ort-1t' \(the file's\) vs 'cpu-ort-2t' \(requested\); "
                                       r"intra_op_threads 1 \(the file's\) vs 2 \(requested\)"):
        LUT.load(path, device="cpu-ort-2t")
    path = _edit(tmp_path, _set(("device", "intra_op_threads"), 2), "threads.json")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FingerprintWarning)
        with pytest.raises(LUTError, match=r"'cpu-ort-1t', not on the requested 'cpu-ort-1t': intra_op_threads 2 "
                                           r"\(the file's\) vs 1 \(requested\)"):
            LUT.load(path, device="cpu-ort-1t")


# ------------------------------------------------------------------------------------------- builds
@pytest.fixture(scope="module")
def partial(space, tmp_path_factory):
    """A LUT build stopped after one subnet (resumable), and its file's text."""
    path = tmp_path_factory.mktemp("partial") / "digits.json"
    build_lut(space, X, "cpu-ort-1t", path, space_name="digits", **TINY)
    return path.read_text()


@pytest.mark.parametrize("change, message", [
    (dict(dummy_input=torch.randn(1, 1, 16, 16)), r"made with input_shape = \[1, 1, 8, 8\], and this call asks for "
                                                  r"\[1, 1, 16, 16\] \(set by dummy_input's shape \(--input\)\)"),
    (dict(space_name="other"), r"is a LUT build of \['digits@1x1x8x8'\] and this call builds 'other@1x1x8x8'"),
    (dict(space=dict(num_classes=3)), r"made with space_digest = .* \(set by the space and its arguments"),
    (dict(runs=5), r"made with runs = 3, and this call asks for 5 \(set by runs= \(--runs\)\)"),
    (dict(repeats_per_kernel=2), r"repeats_per_kernel = 1, and this call asks for 2"),
    (dict(device="cpu-ort-2t"), r"a LUT build for device 'cpu-ort-1t', and this call measures on 'cpu-ort-2t': .*"
                                r"intra_op_threads 1 \(the file\) vs 2 \(this call\)"),
])
def test_resuming_with_other_settings_is_refused_naming_the_setting(space, partial, tmp_path, change, message):
    path = tmp_path / "digits.json"
    path.write_text(partial)
    kw = {**TINY, "space_name": "digits"}
    kw.update({k: v for k, v in change.items() if k not in ("dummy_input", "space", "device")})
    sp = hwnas.spaces.create("digits", **change["space"]).eval() if "space" in change else space
    with pytest.raises(LUTError, match=message) as err:
        build_lut(sp, change.get("dummy_input", X), change.get("device", "cpu-ort-1t"), path, **kw)
    assert "start fresh: delete" in str(err.value)
    assert path.read_text() == partial  # nothing was merged or refitted


def test_a_second_build_into_a_locked_file_is_refused(space, partial, tmp_path):
    path = tmp_path / "digits.json"
    path.write_text(partial)
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from filelock import FileLock   # the lock hwnas.io.lock_file takes
        lock = FileLock({str(path) + ".lock"!r}, timeout=0)
        lock.acquire()
        print("locked", flush=True)
        time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(FileInUseError, match=r"LUT file '.*digits\.json' is in use by another process"):
            build_lut(space, X, "cpu-ort-1t", path, space_name="digits", **TINY)
    finally:
        holder.kill()
        holder.wait()
    assert path.read_text() == partial


def test_a_build_leaves_no_temporary_files_and_adds_up_its_seconds(space, partial, tmp_path, monkeypatch):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = scratch / f"hwnas-lut-{int(dead.stdout)}-abc123"  # a killed build's scratch folder: its process is gone
    (stale / "subnets-x").mkdir(parents=True)
    (stale / "subnets-x" / "subnet-0.onnx").write_bytes(b"\0" * 1000)
    mine = scratch / f"hwnas-lut-{os.getpid()}-live"  # a running build's (this process): kept
    mine.mkdir()
    path = tmp_path / "out" / "digits.json"
    path.parent.mkdir()
    path.write_text(partial)
    half_written = path.parent / ".digits.json.x1y2z3.tmp"  # a killed atomic write
    half_written.write_text("{")
    before = json.loads(partial)["settings"]["build_seconds"]
    t0 = time.perf_counter()
    lut = build_lut(space, X, "cpu-ort-1t", path, space_name="digits", **TINY)
    wall = time.perf_counter() - t0
    assert not stale.exists() and mine.exists() and not half_written.exists()
    assert sorted(p.name for p in scratch.iterdir()) == [mine.name]  # the build's own scratch folder is gone too
    assert sorted(p.name for p in path.parent.iterdir()) == ["digits.json", "digits.json.lock"]
    assert len(lut.subnets) == 2 and before < lut.settings["build_seconds"] <= before + wall + 0.001
    assert json.loads(path.read_text())["settings"]["build_seconds"] == lut.settings["build_seconds"]
    mine.rmdir()

    def fail(space, sample):  # an error mid-build: the scratch folder and the lock go with it
        raise RuntimeError("export failed")

    with pytest.raises(RuntimeError, match="export failed"):
        build_lut(space, X, "cpu-ort-1t", path, space_name="digits", export_fn=fail, **TINY)
    assert list(scratch.iterdir()) == []
    lock_file(path).release()  # free again
    assert remove_stale_scratch("lut", scratch) == []


# ------------------------------------------------------------------------------------------- predictors
@pytest.fixture(scope="module")
def predictor_parts():
    """A small forest predictor fitted on the shipped predictor's own training kernels (real measurements)."""
    from hwnas.artifacts import predictor_path
    from hwnas.hw.device import get_device
    from hwnas.predict import KernelLatencyPredictor
    from hwnas.predict.predictor import training_data_path
    from hwnas.predict.train import TrainingData

    data = TrainingData(training_data_path(predictor_path("cpu-ort-1t")), get_device("cpu-ort-1t"), {})
    sigs, ms, _, _ = data.arrays()
    est = KernelLatencyPredictor(candidates=("forest",), n_estimators=4, cv=2, physical_weight=0.0)
    return est.fit(sigs[:400], ms[:400]), sigs[400:420], data


def _predictor(tmp_path, parts, name="p.skops", tree_edit=None, meta_edit=None, device="cpu-ort-1t"):
    """Save the fixture's predictor, with a tree or its metadata edited and the digest computed again (the
    SHA-256 has no key: anyone can recompute it)."""
    import copy

    from hwnas.hw.device import Device, get_device
    from hwnas.predict.predictor import META, LatencyPredictor, _digest

    est = copy.deepcopy(parts[0])
    if tree_edit is not None:
        tree = est.models_["conv"]["model"].estimators_[0].tree_
        state = tree.__getstate__()
        tree_edit(state)
        tree.__setstate__(state)
    dev = device if isinstance(device, Device) else get_device(device)
    path = LatencyPredictor(est, dev, {"scale": 1.0, "per_kernel_ms": 0.0, "overhead_ms": 0.02},
                            {"training": {"kernel_measurements": 400}}).save(tmp_path / name)
    if meta_edit is not None:
        with zipfile.ZipFile(path) as z:
            members = {n: z.read(n) for n in z.namelist()}
        meta = json.loads(members.pop(META))
        meta_edit(meta)
        meta["sha256"] = _digest(members, meta)
        with zipfile.ZipFile(path, "w") as z:
            for n, data in members.items():
                z.writestr(n, data)
            z.writestr(META, json.dumps(meta))
    return path


def test_an_unedited_predictor_file_predicts_as_the_estimator(predictor_parts, tmp_path):
    from hwnas.predict import load_predictor

    est, sigs, _ = predictor_parts
    loaded = load_predictor(_predictor(tmp_path, predictor_parts), device="cpu-ort-1t")
    assert np.array_equal(loaded.predict_signatures(sigs), est.predict(sigs))


@pytest.mark.parametrize("edit, message", [
    (lambda s: s["nodes"]["left_child"].__setitem__(0, 0), r"node 0: children 0 and \d+, feature \d+; expected "
                                                          r"children after the node itself \(> 0, < \d+: a tree has no "
                                                          r"cycle\)"),
    (lambda s: s["nodes"]["right_child"].__setitem__(2, 1), r"node 2: children \d+ and 1"),
    (lambda s: s["nodes"]["feature"].__setitem__(0, 99), r"node 0: .* feature 99; .* a feature below"),
    (lambda s: s["values"].__setitem__((3, 0, 0), np.nan), r"a threshold or leaf value that is NaN or infinite"),
])
def test_a_crafted_tree_with_a_recomputed_digest_is_refused_before_it_can_loop(predictor_parts, tmp_path, edit,
                                                                               message):
    from hwnas.predict import PredictorError, load_predictor

    path = _predictor(tmp_path, predictor_parts, tree_edit=edit)
    with pytest.raises(PredictorError, match=r"'.*p\.skops': tree 0 of a RandomForestRegressor.*" + message):
        load_predictor(path)


@pytest.mark.parametrize("key, value, message", [
    ("scale", -1.0, r"calibration\.scale: expected a finite number > 0, got -1\.0"),
    ("scale", "big", r"calibration\.scale: expected a finite number > 0, got 'big'"),
    ("overhead_ms", None, r"calibration\.overhead_ms: expected a finite number, got None"),
    ("kernel_measurements", "many", r"training\.kernel_measurements: expected an int >= 0, got 'many'"),
])
def test_predictor_metadata_numbers_are_checked(predictor_parts, tmp_path, key, value, message):
    from hwnas.predict import PredictorError, load_predictor

    def edit(meta):
        (meta["training"] if key == "kernel_measurements" else meta["calibration"])[key] = value

    with pytest.raises(PredictorError, match=r"'.*p\.skops' is malformed at hwnas\.json " + message):
        load_predictor(_predictor(tmp_path, predictor_parts, meta_edit=edit))


def test_predictor_fingerprint_and_thread_count_messages(predictor_parts, tmp_path):
    from hwnas.hw.device import Device
    from hwnas.predict import PredictorError, load_predictor

    path = _predictor(tmp_path, predictor_parts, meta_edit=lambda m: m.__setitem__("fingerprint", {}))
    with pytest.warns(FingerprintWarning, match=r"has no machine fingerprint .*train_predictor\.py --device "
                                                r"cpu-ort-1t"):
        load_predictor(path)
    two = Device("cpu-ort-1t", intra_op_threads=2)  # named like the requested device, other threads
    path = _predictor(tmp_path, predictor_parts, name="t.skops", device=two)
    with pytest.raises(PredictorError, match=r"on device 'cpu-ort-1t', not on 'cpu-ort-1t' \(the requested one\): "
                                             r"intra_op_threads 2 \(the file's\) vs 1 \(requested\)"):
        load_predictor(path, device="cpu-ort-1t", check_fingerprint=False)


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["models"][2]["kernels"][3].__setitem__(1, -0.5), r"models\[2\]\.kernels\[3\]: expected \[signature "
                                                                  r"string, finite ms >= 0, node count int >= 0\]"),
    (lambda d: d["models"][0].__setitem__("end_to_end_ms", float("nan")), r"models\[0\]\.end_to_end_ms: expected a "
                                                                          r"finite number > 0 \(ms\), got nan"),
    (lambda d: d["models"][1].__setitem__("config", "mobile"), r"models\[1\]\.config: expected the model's generator"),
    (lambda d: d.__setitem__("models", {}), r"models: expected a list"),
])
def test_predictor_training_data_is_checked(predictor_parts, tmp_path, edit, message):
    from hwnas.hw.device import get_device
    from hwnas.predict import PredictorError
    from hwnas.predict.train import TrainingData

    data = json.loads(json.dumps({"format": "hwnas-predictor-data", "version": 1,
                                  "device": _device_json(),
                                  "fingerprint": {}, "settings": {}, "reference": None, "seconds": 1.0,
                                  "models": predictor_parts[2].models[:4]}))
    edit(data)
    path = tmp_path / "p.skops.data.json"
    path.write_text(json.dumps(data))
    with pytest.raises(PredictorError, match=r"'.*p\.skops\.data\.json' is malformed at " + message):
        TrainingData(path, get_device("cpu-ort-1t"), {})
    other = dict(data, device={**_device_json(), "intra_op_threads": 2})
    path.write_text(json.dumps(other))
    with pytest.raises(PredictorError, match=r"intra_op_threads 2 \(the file's\) vs 1 \(requested\)"):
        TrainingData(path, get_device("cpu-ort-1t"), {})


def _device_json():
    from hwnas.hw.device import get_device
    from hwnas.predict.train import _device_dict

    return _device_dict(get_device("cpu-ort-1t"))


# ------------------------------------------------------------------------------------------- CLI and convert
def test_cli_predict_of_a_file_that_is_not_onnx_is_one_line_exit_2(tmp_path, capsys):
    from hwnas.cli import main

    (tmp_path / "notonnx.py").write_text("print('hello')\n")
    (tmp_path / "random.onnx").write_bytes(np.random.default_rng(0).bytes(3000))
    for name, message in [("notonnx.py", "is not an ONNX model (protobuf could not parse it: DecodeError)"),
                          ("random.onnx", "is not an ONNX model"),
                          ("missing.onnx", "is neither an ONNX file nor a zoo model: no such file or model name")]:
        assert main(["predict", str(tmp_path / name)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("hwnas predict: error: ") and message in err and err.count("\n") == 1
        assert "Traceback" not in err and "--debug" not in err


@pytest.mark.parametrize("arg, message", [
    ("x=notjson", r"--space-arg 'x=notjson': the value of 'x' is not JSON \('notjson'\); expected KEY=JSON, e\.g\. "
                  r"x=10, x=\[160,192,224\], x=true, or a string in JSON quotes: --space-arg 'x=\"notjson\"'"),
    ("num_classes=ten", r"the value of 'num_classes' is not JSON \('ten'\)"),
    ("novalue", r"--space-arg 'novalue': expected KEY=JSON with a keyword name as KEY"),
])
def test_cli_space_arg_that_is_not_json_names_the_argument_and_the_form(capsys, arg, message):
    import re

    from hwnas.cli import main

    assert main(["profile", "--space", "digits", "--space-arg", arg]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hwnas profile: error: ") and re.search(message, err) and err.count("\n") == 1


def test_a_channel_divisor_that_leaves_no_choice_warns_naming_the_layers():
    from torch import nn

    model = nn.Sequential(nn.Conv2d(3, 64, 3), nn.ReLU(), nn.Conv2d(64, 48, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(48, 10))
    x = torch.randn(1, 3, 16, 16)
    with pytest.warns(UserWarning, match=r"channel_divisor=1000 leaves 2 layer\(s\) with no width choice but their "
                                         r"full width: '0' \(64 channels\), '2' \(48 channels\)"):
        space = hwnas.convert(model, x, channel_divisor=1000)
    assert hwnas.space.collect_choices(space) == {}  # the one-subnet space it warned about
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        space = hwnas.convert(model, x, channel_divisor=8)
    assert {tuple(c.values) for c in hwnas.space.collect_choices(space).values()} == \
        {(16, 32, 48, 64), (16, 24, 40, 48)}  # ratios 0.25-1 of 64 and 48 channels, rounded to multiples of 8


# ------------------------------------------------------------------------------------------- fuzz
def _small_shipped_lut(n_subnets: int = 24) -> dict:
    """The shipped digits LUT cut to its first build subnets and the measurements they made (real data, a file
    small enough to load hundreds of times)."""
    data = json.loads(json.dumps(SHIPPED))
    data["subnets"] = data["subnets"][:n_subnets]
    entries = {}
    for sig, e in data["entries"].items():
        keep = [j for j, i in enumerate(e["subnets"]) if i < n_subnets]
        if keep:
            entries[sig] = {**e, **{k: [e[k][j] for j in keep] for k in ("times_ms", "nodes", "subnets")},
                            "n": len(keep)}
    data["entries"] = entries
    return data


_SMALL = _small_shipped_lut()
_SECTIONS = sorted(_SMALL)
_FUZZ_DIR = tempfile.mkdtemp(prefix="hwnas-lut-fuzz-")
_ODD = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True, allow_infinity=True),
                 st.text(max_size=6), st.sampled_from(["big", "1.0", [], {}, [1.0], {"scale": 1.0}, -1, 0, 1e308]))
_VALUES = st.recursive(_ODD, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                     st.dictionaries(st.text(max_size=6), inner, max_size=3)),
                       max_leaves=6)


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, prefix + (i,))


_PATHS = {s: [p for p in _paths(_SMALL[s], (s,))] for s in _SECTIONS}


def _mutate(data, draw):
    where = draw(st.sampled_from(_PATHS[draw(st.sampled_from(_SECTIONS))]))
    parent = data
    for k in where[:-1]:
        parent = parent[k]
    old = parent[where[-1]]
    how = draw(st.sampled_from(["delete", "replace", "scale", "negate"]))
    if how == "delete" and isinstance(parent, dict):
        del parent[where[-1]]
    elif how in ("scale", "negate") and isinstance(old, (int, float)) and not isinstance(old, bool):
        parent[where[-1]] = -old if how == "negate" else old * draw(st.sampled_from([0, 1e-9, 0.5, 3.0, 1e6]))
    else:
        parent[where[-1]] = draw(_VALUES)


def _check_predictions(lut):
    """Kernel costs finite and >= 0; every build subnet's total (its kernels' costs plus the overhead, at the
    speed check's factor for its size) finite and >= 0; the summary prints."""
    costs = {sig: lut.cost_ms(sig) for sig in lut.entries}
    assert all(math.isfinite(c) and c >= 0 for c in costs.values())
    assert math.isfinite(lut.overhead_ms)
    for r in lut.subnets:
        total = sum(n * costs[s] for s, n in r.get("kernels", {}).items() if s in costs) + lut.overhead_ms
        assert math.isfinite(lut.at_model_speed(total)) and lut.at_model_speed(total) >= 0
    assert isinstance(lut.summary(), str)


def _fuzz_lut(data):
    edited = json.loads(json.dumps(_SMALL))
    _mutate(edited, data.draw)
    path = os.path.join(_FUZZ_DIR, "fuzzed.json")
    with open(path, "w") as f:
        json.dump(edited, f)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FingerprintWarning)
        try:
            lut = LUT.load(path)
        except LUTError as e:
            assert "fuzzed.json" in str(e) and "expected" in str(e) or "version" in str(e) or "hwnas LUT" in str(e)
            return
    _check_predictions(lut)


def test_the_small_fuzz_base_loads_and_predicts():
    path = os.path.join(_FUZZ_DIR, "base.json")
    with open(path, "w") as f:
        json.dump(_SMALL, f)
    lut = LUT.load(path)
    _check_predictions(lut)
    assert len(lut.subnets) == 24 and len(lut.entries) > 20


@settings(max_examples=100, deadline=5000, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fuzz_lut_edits_end_in_a_lut_error_or_finite_non_negative_predictions(data):
    _fuzz_lut(data)


@pytest.mark.slow  # the 500 examples (about 15 s on an idle host; 100 run by default)
@settings(max_examples=500, deadline=5000, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fuzz_lut_edits_500(data):
    _fuzz_lut(data)


def test_the_lut_checker_knows_every_device_field():
    """A field added to Device must be known to the LUT checker, or every LUT written since is refused."""
    import dataclasses

    from hwnas.hw.device import Device
    from hwnas.hw.lut_check import _DEVICE_FIELDS

    assert {f.name for f in dataclasses.fields(Device)} == set(_DEVICE_FIELDS)
