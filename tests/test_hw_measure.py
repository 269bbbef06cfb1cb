"""Devices, fingerprints and ONNX Runtime measurement (real measurements, no mocks; < 30 s)."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from conftest import check_paired, plain_steady_ms, rel_spread, retry_once
from torch import nn

from hwnas.hw import (
    OPSET,
    Device,
    LatencyRecord,
    export_onnx,
    fingerprint,
    fingerprint_matches,
    get_device,
    list_devices,
    measure,
    measure_many,
    open_reference,
    optimized_graph,
    profile_nodes,
    profile_run,
    register_device,
    session_overhead_ms,
)
from hwnas.hw import device as device_module

# ------------------------------------------------------------------------------------------- helpers


def convs(n: int, c: int = 16) -> nn.Module:
    """``n`` 3x3 Conv+BN+ReLU layers at ``c`` channels (the input has 3 channels)."""
    layers, c_in = [], 3
    for _ in range(n):
        layers += [nn.Conv2d(c_in, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU()]
        c_in = c
    return nn.Sequential(*layers).eval()


X = torch.randn(1, 3, 32, 32)


@pytest.fixture(scope="module")
def onnx_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("hw")
    torch.manual_seed(0)
    return {
        "small": export_onnx(convs(1), X, d / "small.onnx"),
        "big": export_onnx(convs(10), X, d / "big.onnx"),
    }


@pytest.fixture
def scratch_devices():
    """Names registered by a test are removed afterwards (the registry is process-global)."""
    before = set(device_module._REGISTRY)
    yield
    for name in set(device_module._REGISTRY) - before:
        del device_module._REGISTRY[name]


# -------------------------------------------------------------------------------------------- devices


def test_builtin_devices():
    assert {"cpu-ort-1t", "cpu-ort-2t"} <= set(list_devices())
    one, two = get_device("cpu-ort-1t"), get_device("cpu-ort-2t")
    assert (one.intra_op_threads, two.intra_op_threads) == (1, 2)
    assert one.provider == two.provider == "CPUExecutionProvider"
    assert one.graph_optimization == "all"
    assert get_device(one) is one


def test_session_options_are_explicit():
    dev = Device("x", intra_op_threads=3, allow_spinning=False, denormal_as_zero=True)
    so = dev.session_options(enable_profiling=True)
    assert so.intra_op_num_threads == 3 and so.inter_op_num_threads == 1
    assert so.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert so.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert so.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert so.get_session_config_entry("session.set_denormal_as_zero") == "1"
    assert so.enable_profiling


def test_register_duplicate_and_overwrite(scratch_devices):
    register_device(Device("test-dup"))
    with pytest.raises(ValueError, match=r"'test-dup' is already registered.*overwrite=True"):
        register_device(Device("test-dup", intra_op_threads=2))
    register_device(Device("test-dup", intra_op_threads=2), overwrite=True)
    assert get_device("test-dup").intra_op_threads == 2


def test_unknown_device_error_names_it_and_lists_known():
    with pytest.raises(KeyError) as info:
        get_device("no-such-device")
    text = str(info.value)
    assert "no-such-device" in text and "cpu-ort-1t" in text and "register_device" in text


def test_invalid_device_fields():
    with pytest.raises(ValueError, match="graph_optimization='fast'"):
        Device("bad", graph_optimization="fast")
    with pytest.raises(ValueError, match="intra_op_threads"):
        Device("bad", intra_op_threads=0)


def test_missing_provider_error(onnx_files):
    dev = Device("test-gpu", provider="NoSuchExecutionProvider")
    with pytest.raises(RuntimeError) as info:
        measure(onnx_files["small"], dev, repeats=1, rounds=1)
    text = str(info.value)
    assert "NoSuchExecutionProvider" in text and "CPUExecutionProvider" in text


# ---------------------------------------------------------------------------------------- fingerprint


def test_fingerprint_keys_and_matches():
    fp = fingerprint("cpu-ort-1t")
    for key in ("cpu_model", "cpu_flags", "logical_cores", "onnxruntime", "onnx_opset", "torch", "hwnas",
                "provider", "intra_op_threads", "inter_op_threads"):  # fmt: skip
        assert key in fp, key
    assert fp["onnxruntime"] == ort.__version__ and fp["onnx_opset"] == OPSET == 17
    assert fp["logical_cores"] >= 1 and isinstance(fp["cpu_flags"], list)
    assert fingerprint_matches(fp, dict(fp)) == []
    other = dict(fp, onnxruntime="0.0.1")
    diffs = fingerprint_matches(fp, other)
    assert len(diffs) == 1 and "onnxruntime" in diffs[0] and "0.0.1" in diffs[0]
    threads = fingerprint_matches(fp, fingerprint("cpu-ort-2t"))
    assert any("intra-op threads" in d for d in threads)
    # flags: two fingerprints built here, so the host's own flags (AMX or not) do not matter
    zen4 = dict(fp, cpu_flags=["avx2", "avx512f", "fma"])
    spr = dict(fp, cpu_flags=["amx_tile", "avx2", "avx512f", "fma"])
    assert fingerprint_matches(zen4, dict(zen4, cpu_flags=["fma", "avx512f", "avx2"])) == []  # order does not matter
    flags = fingerprint_matches(zen4, spr)
    assert len(flags) == 1 and "CPU kernel flags" in flags[0] and "only in second: ['amx_tile']" in flags[0]
    back = fingerprint_matches(spr, dict(zen4, cpu_flags=["avx2", "fma"]))
    assert len(back) == 1 and "only in first: ['amx_tile', 'avx512f']" in back[0] and "second" not in back[0]


# ------------------------------------------------------------------------------------------- measure


def test_measure_tiny_conv_module():
    rec = measure(convs(1), "cpu-ort-1t", X, warmup=3, repeats=20, rounds=3)
    assert isinstance(rec, LatencyRecord)
    assert rec.device == "cpu-ort-1t" and rec.repeats == 20 and rec.rounds == 3
    assert rec.times_ms.shape == (3, 20) and np.all(rec.times_ms > 0)
    # the statistics are those of the timed runs, as the record's docstring defines them
    assert rec.median_ms == pytest.approx(float(np.median(np.median(rec.times_ms, axis=1))))
    assert (rec.p10_ms, rec.p25_ms, rec.p90_ms) == pytest.approx(tuple(np.percentile(rec.times_ms, [10, 25, 90])))
    rounds = np.median(rec.times_ms, axis=1)
    assert rec.cv == pytest.approx(float(np.std(rounds, ddof=1) / np.mean(rounds)))  # std / mean of round medians
    assert rec.fingerprint["device"] == "cpu-ort-1t"


@retry_once
def test_interleaved_medians_are_ordered(onnx_files):
    small, big = measure_many(
        [onnx_files["small"], onnx_files["big"]], "cpu-ort-1t", warmup=5, repeats=30, rounds=5, seed=0
    )
    assert small.model.endswith("small.onnx") and big.model.endswith("big.onnx")
    # 10 conv layers against 1: at least twice the time, less what the two measurements' own spread allows
    noise = 1 + rel_spread(small) + rel_spread(big)
    assert big.median_ms > 2 / noise * small.median_ms, (small.median_ms, big.median_ms, noise)


@retry_once
def test_paired_measurement_against_the_unpaired_one(onnx_files):
    """Paired with the small model itself, the small model's ratios are about 1; paired with it, the big model's
    paired time agrees with the median of its own runs in the same measurement (the pairing only cancels the
    machine's slow phases; a plain measurement taken afterwards can meet another phase of the shared machine,
    which moved the big model 15% in either direction)."""
    kw = dict(warmup=5, repeats=3, rounds=10, seed=0)
    small, big = measure_many([onnx_files["small"], onnx_files["big"]], "cpu-ort-1t", **kw,
                              reference=onnx_files["small"])
    assert small.ratios.shape == (10, 3) and np.isfinite(small.paired_ms)
    assert big.reference_times_ms.shape == (10, 4)
    # tolerances: at least 15% and 1.2x (a 10% bound was once hit with another test run alongside), wider by the
    # measurements' own spread on a busy host
    assert small.paired_ms == pytest.approx(small.reference_ms, rel=max(0.15, 2 * rel_spread(small)))
    check_paired(big, within=max(1.2, 1 + 2 * rel_spread(big)))
    plain = measure_many([onnx_files["big"]], "cpu-ort-1t", warmup=5, repeats=10, rounds=5)[0]
    assert big.stat("paired") == big.paired_ms and plain.stat("p25") == plain.p25_ms
    assert np.isnan(plain.paired_ms) and plain.reference_times_ms is None
    with pytest.raises(ValueError, match="unknown latency statistic 'mean'"):
        plain.stat("mean")


@retry_once
def test_session_overhead_is_small_and_positive():
    overhead = session_overhead_ms("cpu-ort-1t", repeats=100, rounds=3)
    assert 0 < overhead < 1.0  # an empty run costs microseconds, not milliseconds


# -------------------------------------------------------------------------------------------- profile


@retry_once
def test_profile_nodes_one_row_per_node_and_sum(onnx_files):
    path = onnx_files["big"]
    prof = profile_run(path, "cpu-ort-1t", runs=20, warmup=5)
    df = prof.nodes
    ran = optimized_graph(path, "cpu-ort-1t")
    assert len(df) == len(ran.graph.node) and df["node"].is_unique
    assert set(df["node"]) == {n.name for n in ran.graph.node}
    assert {"node", "op_type", "provider", "median_ms", "input_shapes", "output_shapes"} <= set(df.columns)
    assert (df["provider"] == "CPUExecutionProvider").all()
    assert df.loc[df["op_type"] == "Conv", "output_shapes"].iloc[-1] == [[1, 16, 32, 32]]
    total = df["median_ms"].sum()
    # profiled runs contain their nodes, and a chain of ten convolutions is almost all nodes (the notes measured a
    # ratio of 1.00): the sum of node medians is the end-to-end median within the nodes' own spread (half their
    # summed p10-p90 range over the sum of medians; ORT's model_run event also holds a few microseconds of overhead)
    spread = 0.5 * float((df["p90_ms"] - df["p10_ms"]).sum()) / total
    e2e_run = prof.end_to_end_median_ms
    assert (1 - 0.1 - spread) * e2e_run <= total <= (1 + 0.02 + spread) * e2e_run, (total, e2e_run, spread)
    e2e = measure(path, "cpu-ort-1t", warmup=5, repeats=30, rounds=3)
    assert total <= 1.5 * (1 + rel_spread(e2e)) * e2e.median_ms, (total, e2e.median_ms, rel_spread(e2e))
    plain = profile_nodes(path, "cpu-ort-1t", runs=5, warmup=1)
    assert list(plain["node"]) == list(df["node"]) and plain.attrs["end_to_end_median_ms"] > 0


def test_optimized_graph_shows_fusions(onnx_files):
    ops = [n.op_type for n in optimized_graph(onnx_files["small"], "cpu-ort-1t").graph.node]
    assert "BatchNormalization" not in ops and "Relu" not in ops  # folded at export, fused by ORT
    basic = Device("test-basic", graph_optimization="disable")
    assert [n.op_type for n in optimized_graph(onnx_files["small"], basic).graph.node] == ["Conv", "Relu"]


# --------------------------------------------------------------------------------------------- errors


def test_missing_file_error(tmp_path):
    missing = tmp_path / "nope.onnx"
    with pytest.raises(FileNotFoundError, match=r"nope\.onnx.*not found.*export_onnx"):
        measure(missing, "cpu-ort-1t")
    with pytest.raises(FileNotFoundError, match=r"nope\.onnx"):
        profile_nodes(missing, "cpu-ort-1t")


def test_wrong_input_name_error(onnx_files):
    feed = {"image": np.zeros((1, 3, 32, 32), np.float32)}
    with pytest.raises(ValueError, match=r"\['image'\] not in the model.*\['input'\]"):
        measure(onnx_files["small"], "cpu-ort-1t", feed, repeats=1, rounds=1)
    with pytest.raises(ValueError, match=r"'input' expects shape \[1, 3, 32, 32\] but got \[1, 3, 8, 8\]"):
        profile_nodes(onnx_files["small"], "cpu-ort-1t", np.zeros((1, 3, 8, 8), np.float32), runs=1)


def test_module_without_dummy_input_error():
    with pytest.raises(ValueError, match=r"<Sequential>.*dummy_input is required"):
        measure(convs(1), "cpu-ort-1t")


def test_export_error_is_wrapped(tmp_path):
    class Bad(nn.Module):
        def forward(self, x):
            return torch.linalg.eig(x)[0].real  # not exportable to ONNX

    with pytest.raises(RuntimeError, match=r"export_onnx: could not export Bad .*bad\.onnx"):
        export_onnx(Bad(), torch.randn(4, 4), tmp_path / "bad.onnx")


@retry_once
def test_an_open_reference_is_shared_by_measurements(onnx_files):
    """A reference session opened once (open_reference) pairs two measurements: the same session runs in both,
    so their ratios share its speed basis; paired times agree with the models' own medians."""
    ref = open_reference(onnx_files["small"], "cpu-ort-1t")
    recs = [measure_many([onnx_files["big"]], "cpu-ort-1t", warmup=3, repeats=3, rounds=6, seed=s, reference=ref)[0]
            for s in (0, 1)]
    for rec in recs:
        assert rec.reference_times_ms.shape == (6, 4)
        check_paired(rec)
    with pytest.raises(TypeError, match="expected a path to an .onnx file"):
        open_reference(42, "cpu-ort-1t")


# ------------------------------------------------------------------------------ the definition of latency


def test_steady_is_the_default_definition_and_matches_a_plain_timing_loop(onnx_files):
    """measure_many's default is the steady protocol: turns of consecutive runs lasting about turn_ms; its medians
    agree with an independent plain timing loop (ONNX Runtime directly: warm-up, then consecutive runs) in the
    same run, within a tolerance from the plain loop's own spread (two passes), with one retry."""
    paths = [onnx_files["small"], onnx_files["big"]]
    for attempt in range(2):
        recs = measure_many(paths, "cpu-ort-1t", rounds=3, turn_ms=30.0, seed=attempt)
        a, b = plain_steady_ms(paths, seed=attempt), plain_steady_ms(paths, seed=attempt + 10)
        spread = float(np.max(np.abs(np.log(a / b))))
        err = np.abs(np.log(np.array([r.median_ms for r in recs]) / np.sqrt(a * b)))
        tol = 0.05 + 3 * spread
        if np.all(err <= tol):
            break
    assert np.all(err <= tol), (err, tol)
    for rec in recs:
        assert rec.method == "steady" and rec.latency_ms == rec.median_ms and np.isnan(rec.paired_ms)
        done = np.isfinite(rec.times_ms)
        # each turn planned for ~30 ms of runs at warm-up speed (a loaded host may cut it at 60 ms of wall time)
        assert done[:, 0].all() and rec.repeats * rec.median_ms >= 0.3 * 30.0


def test_methods_are_named_and_paired_is_never_silent(onnx_files):
    small, big = onnx_files["small"], onnx_files["big"]
    with pytest.raises(ValueError, match="method='paired' needs reference="):
        measure(big, "cpu-ort-1t", method="paired")
    with pytest.raises(ValueError, match="a reference model was given with method='steady'"):
        measure(big, "cpu-ort-1t", reference=small)
    with pytest.raises(ValueError, match="unknown method 'fast'"):
        measure_many([big], "cpu-ort-1t", method="fast")
    rec = measure(big, "cpu-ort-1t", method="paired", reference=small, repeats=3, rounds=4)
    assert rec.method == "paired" and rec.latency_ms == rec.paired_ms
    check_paired(rec)
    short = measure_many([big], "cpu-ort-1t", method="interleaved", repeats=4, rounds=3)[0]
    assert short.method == "interleaved" and short.times_ms.shape == (3, 4)
    cut = measure_many([small, big], "cpu-ort-1t", rounds=50, turn_ms=5.0, time_limit_s=0.05)
    assert all(1 <= r.rounds < 50 and r.times_ms.shape[0] == r.rounds for r in cut)
