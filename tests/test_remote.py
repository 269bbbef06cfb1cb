"""The measurement agent on loopback in a subprocess (the packed .pyz, with torch, pandas, onnx, ... blocked: the
light install), and the remote device that sends work to it: measurements, a digits LUT build, and the faults
(wrong token, too large, not ONNX, pickled arrays, concurrent clients, a run over its time limit)."""

from __future__ import annotations

import http.client
import io
import json
import os
import threading
import time
import urllib.request

import numpy as np
import onnxruntime as ort
import pytest
import torch

import hwnas
from hwnas.hw import remote, remote_wire
from hwnas.hw.build import build_lut, space_signatures
from hwnas.hw.device import get_device
from hwnas.hw.lut import LUT
from hwnas.hw.measure import measure_many
from hwnas.hw.profiling import optimized_graph, profile_run
from hwnas.hw.remote_local import HEAVY, spawn_agent
from hwnas.hw.session import export_onnx

X = torch.randn(1, 1, 8, 8)
FAST = dict(repeats_per_kernel=1, runs=3, warmup=1, progress=False, random_subnets=3, calibrate=0,
            end_to_end_rounds=4)
TOKEN = "test-token-0123"


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    a = spawn_agent(TOKEN, args=("--max-request-mb", "1", "--max-model-mb", "0.5", "--timeout", "120"),
                    block_imports=HEAVY, workdir=tmp_path_factory.mktemp("agent"))
    yield a
    a.stop()


@pytest.fixture
def dev(agent, monkeypatch):
    monkeypatch.setenv(remote.TOKEN_ENV, TOKEN)
    return get_device(agent.device("cpu-ort-1t"))


def _model(tmp_path, cout=16, name="m.onnx", size=16):
    x = torch.randn(1, 3, size, size)
    m = torch.nn.Sequential(torch.nn.Conv2d(3, cout, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(cout, 8, 1))
    return export_onnx(m, x, tmp_path / name), x


def _plain_ort_ms(path, x, runs=200):
    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    feed = {s.get_inputs()[0].name: x.numpy()}
    for _ in range(50):
        s.run(None, feed)
    t = []
    for _ in range(runs):
        t0 = time.perf_counter()
        s.run(None, feed)
        t.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(t))


def test_agent_device_and_fingerprint(dev, agent):
    assert dev.agent == f"{agent.url}/cpu-ort-1t" and dev.intra_op_threads == 1
    fp = hwnas.hw.fingerprint(dev)
    local = hwnas.hw.fingerprint("cpu-ort-1t")
    assert fp["cpu_model"] == local["cpu_model"] and fp["onnxruntime"] == ort.__version__
    assert get_device(agent.device("cpu-ort-2t")).intra_op_threads == 2
    with pytest.raises(remote.RemoteError, match="no device 'gpu-x'"):
        get_device(agent.device("gpu-x"))


def test_remote_measurement_matches_plain_ort(dev, tmp_path):
    path, x = _model(tmp_path, cout=64, size=64)  # about 1 ms: the Python call around a plain run is negligible
    rec = measure_many([path], dev, x, rounds=3, method="steady")[0]
    plain = [_plain_ort_ms(path, x) for _ in range(2)]
    assert rec.device == dev.name and rec.times_ms.shape[0] == 3 and rec.fingerprint["cpu_model"]
    assert min(plain) * 0.75 < rec.median_ms < max(plain) * 1.33, (rec.median_ms, plain)
    prof = profile_run(path, dev, x, runs=5, warmup=2)
    local = profile_run(path, "cpu-ort-1t", x, runs=5, warmup=2)
    assert list(prof.nodes["op_type"]) == list(local.nodes["op_type"])
    assert [n.op_type for n in optimized_graph(path, dev).graph.node] == \
        [n.op_type for n in optimized_graph(path, "cpu-ort-1t").graph.node]


@pytest.fixture(scope="module")
def remote_lut(agent, tmp_path_factory):
    os.environ[remote.TOKEN_ENV] = TOKEN
    dev = get_device(agent.device("cpu-ort-1t"))
    path = tmp_path_factory.mktemp("rlut") / "remote.json"
    return build_lut(hwnas.spaces.create("digits").eval(), X, dev, path, **FAST), path


def test_partial_remote_build_holds_the_kernels_of_its_subnets(dev, tmp_path):
    """A few subnets of a digits LUT built through the agent: each subnet's kernels (hwnas.hw.kernels of the subnet
    sampled) are in the file, each with a positive time; the file resumes on the same remote device."""
    from hwnas.graph.trace import build_graph
    from hwnas.hw.kernels import active_kernels, map_kernels

    space = hwnas.spaces.create("digits").eval()
    path = tmp_path / "part.json"
    lut = build_lut(space, X, dev, path, max_subnets=2, **FAST)
    graph = build_graph(space, X)
    kernels = map_kernels(graph)
    assert len(lut.subnets) == 2
    for rec in lut.subnets:
        sigs = {str(sig) for _, sig in active_kernels(kernels, graph, rec["sample"])}
        assert sigs == set(rec["kernels"]) and all(lut.entries[s].median_ms > 0 for s in sigs)
    lut = build_lut(space, X, dev, path, max_subnets=1, **FAST)
    assert len(lut.subnets) == 3


@pytest.mark.slow  # 45 s on a loaded host
def test_remote_lut_build_of_digits(dev, remote_lut, tmp_path):
    space = hwnas.spaces.create("digits").eval()
    lut, path = remote_lut
    assert space_signatures(space, X) <= set(lut.entries)
    loaded = LUT.load(path)  # no contact with the agent, no fingerprint warning on the same configuration
    assert loaded.device == dev and loaded.fingerprint["agent"] == dev.agent
    again = build_lut(space, X, dev, path, **FAST)  # resumes: nothing left to measure
    assert len(again.subnets) == len(lut.subnets)
    # the remote LUT's predictions against plain ORT timings of the same subnets, here (same machine)
    prof = hwnas.LatencyProfiler(space, X, lut=loaded)
    rng = np.random.default_rng(1)
    pred, meas = [], []
    for _ in range(4):
        sample = {k: c.values[int(rng.integers(len(c.values)))] for k, c in prof.graph.choices.items()}
        p = export_onnx(hwnas.export(space, sample).eval(), X, tmp_path / "s.onnx")
        pred.append(prof.profile(sample))
        meas.append(_plain_ort_ms(p, X, runs=500))
    ratio = np.median(np.array(pred) / np.array(meas))
    assert 0.6 < ratio < 1.6, (pred, meas)


@pytest.mark.slow  # 20 s
def test_cli_commands_on_the_agent(dev, agent, remote_lut, tmp_path, capsys):
    """lut build, lut speed-check, report latency --measure and adapt run on the agent (its job count grows)."""
    from hwnas.cli import main

    _, path = remote_lut
    state = remote.agent_of(dev)
    jobs = lambda: state.call("GET", "/v1/info")["jobs"]  # noqa: E731
    n0 = jobs()
    out = tmp_path / "cli.json"
    assert main(["lut", "build", "--space", "digits", "--device", agent.device("cpu-ort-1t"), "--out", str(out),
                 "--max-subnets", "1", "--runs", "3"]) == 0
    assert LUT.load(out).device == dev and jobs() >= n0 + 2
    n1 = jobs()
    assert main(["lut", "speed-check", "--space", "digits", "--lut", str(path), "--subnets", "3"]) == 0
    assert "the machine runs at" in capsys.readouterr().out and jobs() > n1
    n2 = jobs()
    arch = tmp_path / "arch.json"
    hwnas.save_arch(LUT.load(path).subnets[0]["sample"], arch)
    assert main(["report", "latency", "--space", "digits", "--arch", str(arch), "--lut", str(path), "--csv",
                 str(tmp_path / "r.csv"), "--measure"]) == 0
    assert "measured" in capsys.readouterr().out and jobs() > n2
    n3 = jobs()
    adapted = tmp_path / "adapted.json"
    assert main(["adapt", "digits", "--device", agent.device("cpu-ort-1t"), "--n", "5", "--budget", "10",
                 "--out", str(adapted)]) == 0
    assert LUT.load(adapted).device == dev and jobs() > n3


@pytest.mark.slow  # about a minute: a build, the agent killed and started again
def test_agent_killed_mid_build_loses_nothing(remote_lut, tmp_path, monkeypatch):
    """kill -9 of the agent during a build: the build waits, retries and ends with the uninterrupted build's
    subnets; every measurement saved before the kill is still in the file."""
    monkeypatch.setenv(remote.TOKEN_ENV, TOKEN)
    first = spawn_agent(TOKEN, block_imports=HEAVY, workdir=tmp_path / "a")
    spec = first.device("cpu-ort-1t")
    dev = remote.connect(spec[len("remote:"):], retry_s=300)
    path = tmp_path / "killed.json"
    result, errors = {}, []

    def build():
        try:
            result["lut"] = build_lut(hwnas.spaces.create("digits").eval(), X, dev, path, **FAST)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    t = threading.Thread(target=build)
    t.start()
    snapshot, second = None, None
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and t.is_alive():
            if path.exists():
                data = json.loads(path.read_text())
                if len(data["subnets"]) >= 4:
                    first.kill()
                    snapshot = json.loads(path.read_text())
                    time.sleep(1.0)
                    second = spawn_agent(TOKEN, port=first.port, block_imports=HEAVY, workdir=tmp_path / "a")
                    break
            time.sleep(0.02)
        t.join(600)
    finally:
        first.kill()
        if second is not None:
            second.stop()
    assert snapshot is not None and not errors, errors
    lut = result["lut"]
    for sig, entry in snapshot["entries"].items():
        assert lut.entries[sig].times_ms[: len(entry["times_ms"])] == pytest.approx(entry["times_ms"])
    reference, _ = remote_lut
    assert [r["sample"] for r in lut.subnets] == [r["sample"] for r in reference.subnets]
    assert set(lut.entries) == set(reference.entries)


def _post(agent, body, token=TOKEN):
    req = urllib.request.Request(agent.url + "/v1/job", data=body, method="POST",
                                 headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_wrong_token_is_refused(agent, tmp_path, monkeypatch):
    monkeypatch.setenv(remote.TOKEN_ENV, "not-the-token")
    remote._AGENTS.pop(agent.url, None)
    with pytest.raises(remote.RemoteError, match="401.*wrong or missing token"):
        get_device(agent.device())
    monkeypatch.delenv(remote.TOKEN_ENV)
    with pytest.raises(ValueError, match="HWNAS_DEVICE_TOKEN"):
        get_device(agent.device())
    status, answer = _post(agent, b"x", token="")
    assert status == 401 and "token" in answer["message"]
    remote._AGENTS.pop(agent.url, None)


def test_too_large_and_not_onnx_are_refused(dev, agent, tmp_path):
    big, x = _model(tmp_path, cout=5000, name="big.onnx")  # 0.7 MB of weights: over the 0.5 MB model limit
    with pytest.raises(remote.RemoteError, match="400.*larger than this agent's limit"):
        measure_many([big], dev, x)
    huge = export_onnx(torch.nn.Linear(1024, 1024), torch.randn(1, 1024), tmp_path / "huge.onnx")  # 4 MB
    with pytest.raises(remote.RemoteError, match="larger than the agent's request limit of 1048576 bytes \\(413\\)"):
        measure_many([huge], dev, torch.randn(1, 1024))
    # the agent itself answers 413 from the header alone, without reading the body
    conn = http.client.HTTPConnection("127.0.0.1", agent.port, timeout=30)
    conn.putrequest("POST", "/v1/job")
    conn.putheader("Authorization", f"Bearer {TOKEN}")
    conn.putheader("Content-Length", str(50 * 2 ** 20))
    conn.endheaders()
    resp = conn.getresponse()
    assert resp.status == 413 and "larger than this agent's limit" in json.loads(resp.read())["message"]
    conn.close()
    text = tmp_path / "notes.onnx"
    text.write_text("this is not a model\n" * 20)
    with pytest.raises(remote.RemoteError, match="not an ONNX model"):
        measure_many([text], dev, x)
    # an array pickled into the .npy is refused (never unpickled)
    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    body = remote_wire.pack_job({"protocol": remote_wire.PROTOCOL, "op": "check", "device": "cpu-ort-1t"},
                                [("npy", buf.getvalue())])
    status, answer = _post(agent, body)
    assert status == 400 and "not a plain .npy" in answer["message"]
    status, answer = _post(agent, b"GET / HTTP/1.0")
    assert status == 400 and "not an hwnas job" in answer["message"]


def test_concurrent_clients_are_serialised(dev, tmp_path):
    paths = [_model(tmp_path, cout=16 + 8 * i, name=f"c{i}.onnx") for i in range(2)]
    agent = remote.agent_of(dev)
    runs, errors = [], []
    original = agent.call

    def call(*a, **kw):
        out = original(*a, **kw)
        if "run" in out:
            runs.append(out["run"])
        return out

    agent.call = call
    try:
        def client(i):
            try:
                measure_many([paths[i][0]], dev, paths[i][1], method="steady", rounds=4, turn_ms=150)
            except Exception as e:  # pragma: no cover - reported below
                errors.append(e)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(2)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.monotonic() - t0
    finally:
        del agent.call
    assert not errors and len(runs) == 2
    a, b = sorted(runs, key=lambda r: r["started"])
    assert a["finished"] <= b["started"], runs  # never overlapping
    assert b["started"] - b["asked"] > 0.3  # the second client waited for the first
    assert wall >= 0.9 * ((a["finished"] - a["started"]) + (b["finished"] - b["started"]))


def test_run_over_its_time_limit_is_stopped(dev, agent, tmp_path):
    path, x = _model(tmp_path)
    state = remote.agent_of(dev)
    state.run_timeout_s = 1.0
    try:
        t0 = time.monotonic()
        with pytest.raises(remote.RemoteError, match="504.*time limit of 1 s"):
            measure_many([path], dev, x, method="steady", rounds=20, turn_ms=500)  # ~10 s of runs
        assert time.monotonic() - t0 < 8
    finally:
        state.run_timeout_s = 600.0
    assert measure_many([path], dev, x, rounds=2)[0].median_ms > 0  # a new worker serves the next job


def test_a_pool_of_agents_shares_one_build(dev, agent, tmp_path):
    """Two agents of one device kind: the build's subnets go to both (each agent's job count grows), one at a time on
    each, and the LUT holds every kernel of every subnet."""
    from hwnas.hw.device import device_pool

    second = spawn_agent(TOKEN, block_imports=HEAVY, workdir=tmp_path / "b")
    try:
        dev2 = get_device(second.device("cpu-ort-1t"))
        with pytest.raises(ValueError, match="differs from"):
            device_pool([dev, get_device(second.device("cpu-ort-2t"))])
        jobs = [remote.agent_of(d).call("GET", "/v1/info")["jobs"] for d in (dev, dev2)]
        space = hwnas.spaces.create("digits").eval()
        lut = build_lut(space, X, f"{agent.device('cpu-ort-1t')},{second.device('cpu-ort-1t')}", tmp_path / "p.json",
                        max_subnets=4, **FAST)
        after = [remote.agent_of(d).call("GET", "/v1/info")["jobs"] for d in (dev, dev2)]
        assert len(lut.subnets) == 4 and all(b >= a + 2 for a, b in zip(jobs, after)), (jobs, after)
        assert lut.device == dev
        assert len({json.dumps(r["sample"], sort_keys=True) for r in lut.subnets}) == 4
        assert all(lut.entries[s].n >= 1 for r in lut.subnets for s in r["kernels"])
    finally:
        second.stop()


@pytest.mark.parametrize("executor", ["threads", pytest.param("ray", marks=pytest.mark.slow)])
def test_luts_of_several_devices_in_parallel(dev, agent, tmp_path, executor):
    from hwnas.hw.remote_pool import build_luts

    space = hwnas.spaces.create("digits").eval()
    luts = build_luts(space, X, {"one": agent.device("cpu-ort-1t"), "two": agent.device("cpu-ort-2t")},
                      tmp_path / "{name}.json", executor=executor, max_subnets=2,
                      **{k: v for k, v in FAST.items() if k != "progress"})
    assert sorted(luts) == ["one", "two"]
    assert luts["one"].device.intra_op_threads == 1 and luts["two"].device.intra_op_threads == 2
    assert all(len(lut.subnets) == 2 and lut.device.agent for lut in luts.values())


@pytest.mark.slow  # 30-60 s
def test_predictor_training_on_the_agent(tmp_path, monkeypatch):
    """predict.train on a remote device (an agent with the default limits: training models reach a few MB): every
    profile and timing runs on the agent (its job count grows), and the predictor records the agent's device."""
    from hwnas.predict import LatencyPredictor
    from hwnas.predict.train import train

    monkeypatch.setenv(remote.TOKEN_ENV, TOKEN)
    big = spawn_agent(TOKEN, block_imports=HEAVY, workdir=tmp_path / "agent")
    try:
        dev = get_device(big.device("cpu-ort-1t"))
        state = remote.agent_of(dev)
        kw = dict(initial=2, batch=1, pool=3, runs=3, warmup=1, max_macs=3e6, min_macs=1e5, progress=False,
                  params={"n_estimators": 20, "cv": 2, "min_family_size": 4}, e2e_measurements=2)
        pred = train(dev, budget=60, path=tmp_path / "remote.skops", **kw)
        assert state.call("GET", "/v1/info")["jobs"] >= 4
        loaded = LatencyPredictor.load(tmp_path / "remote.skops")
        assert loaded.metadata["training"]["models"] >= 1 and pred.device.agent == dev.agent
    finally:
        big.stop()


def test_the_client_settings_of_a_device_travel_with_the_job(dev, tmp_path):
    """dev.replace(graph_optimization=...) on a remote device is what the agent runs (optimised graph as locally)."""
    from hwnas.hw.device import Device

    path, _ = _model(tmp_path)
    for level in ("basic", "all"):
        got = [n.op_type for n in optimized_graph(path, dev.replace(graph_optimization=level)).graph.node]
        want = [n.op_type for n in optimized_graph(path, Device("t", graph_optimization=level)).graph.node]
        assert got == want, (level, got, want)
