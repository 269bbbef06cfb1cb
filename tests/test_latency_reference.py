"""Latency against an independent reference: measured end-to-end times, never hwnas's own totals.

Default suite (deterministic, host-free): every shipped LUT predicts the end-to-end times stored with it (real ONNX
Runtime measurements of whole subnets on its build host) for subnets held out of its fit, through the full
LatencyProfiler path (the space traced, its kernels mapped, the cost tables summed). The LUT's calibration and
refinement are fitted again without the held-out fold, from the stored measurements.

``-m slow`` (this host): each shipped LUT is adapted to this machine as docs/latency.md says (``hwnas adapt``), then
about 8 exported subnets it never measured are timed by a plain steady-state ONNX Runtime loop (conftest's
plain_steady_ms) and compared with its prediction; and the latency constraint of a search is checked by measuring
the subnet it chose against the largest subnet, side by side.
"""

from __future__ import annotations

import copy
import json
import warnings

import numpy as np
import pytest
import torch
from conftest import plain_steady_ms

import hwnas
from hwnas.artifacts import list_artifacts
from hwnas.hw.lut import LUT, FingerprintWarning
from hwnas.search import Grid, Random

SHIPPED_LUTS = sorted(a.name for a in list_artifacts() if a.kind == "lut")

# The stated bounds on held-out subnets, as |ln(predicted / measured)|: the published anchors for a kernel-level
# predictor on a CPU are 99% of models within +-10% (nn-Meter) and 90.5% within +-5% (LitePred, ONNX Runtime CPU).
# A one-thread LUT must do at least as well: RMS <= 3%, every subnet within 10%. At two threads the second
# core is shared with every other process of a 2-core build host: RMS <= 10%, 90% of subnets within 15%.
BOUNDS = {1: dict(rms=0.03, share=1.0, within=0.10), 2: dict(rms=0.10, share=0.9, within=0.15)}


def _load(name: str) -> LUT:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FingerprintWarning)
        return LUT.load(name, check_fingerprint=False)


def _space_of(lut: LUT):
    """The registered space and dummy input a LUT was built for (``"mobilenet_v3@1x3x224x224"``)."""
    name, _, shape = lut.spaces[0].partition("@")
    return hwnas.spaces.create(name).eval(), torch.zeros([int(d) for d in shape.split("x")])


@pytest.mark.parametrize("name", SHIPPED_LUTS)
def test_shipped_lut_reproduces_stored_end_to_end_times_of_held_out_subnets(name):
    lut = _load(name)
    space, x = _space_of(lut)
    rows = [r for r in lut.subnets if r.get("kernels") and r.get("end_to_end_ms")]
    assert len(rows) >= 50, f"{name}: only {len(rows)} measured subnets"
    graph = hwnas.LatencyProfiler(space, x, lut=lut).graph
    sel = lut.calibration.get("selected") or {"per_node": True, "ridge": 0.1}
    logs = np.empty(len(rows))
    for fold in range(5):  # every fifth subnet held out, the fit done again on the others
        work = copy.deepcopy(lut)
        work.subnets = [r for i, r in enumerate(rows) if i % 5 != fold]
        work.fit_calibration(per_node=sel["per_node"])
        work.refine(sel["ridge"])
        held = [i for i in range(len(rows)) if i % 5 == fold]
        pred = hwnas.LatencyProfiler(space, x, lut=work, graph=graph).profile_batch([rows[i]["sample"] for i in held])
        logs[held] = np.log(pred / np.array([rows[i]["end_to_end_ms"] for i in held]))
    bound = BOUNDS[lut.device.intra_op_threads]
    rms, share = float(np.sqrt(np.mean(logs ** 2))), float(np.mean(np.abs(logs) <= bound["within"]))
    worst = rows[int(np.argmax(np.abs(logs)))]["sample"]
    assert rms <= bound["rms"] and share >= bound["share"], (
        f"{name}: held-out RMS error {rms:.4f} (bound {bound['rms']}), {share:.0%} of {len(rows)} subnets within "
        f"{bound['within']:.0%} (bound {bound['share']:.0%}); worst {np.max(np.abs(logs)):.3f} on {worst}")
    # the shipped fit itself, through the profiler, on every stored subnet: no worse than held out
    pred = hwnas.LatencyProfiler(space, x, lut=lut, graph=graph).profile_batch([r["sample"] for r in rows])
    insample = np.log(pred / np.array([r["end_to_end_ms"] for r in rows]))
    assert float(np.sqrt(np.mean(insample ** 2))) <= bound["rms"], name


def test_a_binding_latency_constraint_holds_by_an_independent_kernel_mapping(tmp_path):
    """A search whose score (FLOPs) pushes against latency_ms <= 40%: every evaluated trial meets the bound, and the
    chosen subnet's latency is summed again from the kernels ONNX Runtime itself runs in its exported ONNX file
    (hwnas.predict.onnx_kernels reads ORT's optimised graph, a mapping independent of the traced space's), each
    costed by the LUT file loaded anew."""
    from hwnas.predict import onnx_kernels
    from hwnas.profile.constraints import metric_range

    space, x = hwnas.spaces.create("digits").eval(), torch.zeros(1, 1, 8, 8)
    latency = hwnas.LatencyProfiler(space, x, lut="digits")
    flops = hwnas.FlopsProfiler(space, x, graph=latency.graph)
    hi = metric_range(latency)[2]
    res = hwnas.search(space, x, {"latency_ms": "40%"}, flops.profile, strategy=Random(),
                       max_trials=40, seed=0, profilers={"latency_ms": latency}, progress=False)
    lut = _load("digits")
    path = hwnas.to_onnx(hwnas.export(space, res.best_sample), x, tmp_path / "best.onnx")
    ran = [r["signature"] for r in onnx_kernels(path, "cpu-ort-1t")]
    assert ran and all(sig in lut.entries for sig in ran)
    best = sum(lut.cost_ms(sig) for sig in ran) + lut.overhead_ms
    assert best == pytest.approx(res.best_metrics["latency_ms"], rel=1e-9)
    assert 0.3 * hi < best <= 0.4 * hi  # it binds: the best subnet sits just under the bound
    assert all(t.metrics["latency_ms"] <= 0.4 * hi * (1 + 1e-12) for t in res.history)
    # a shuffled grid proposes whatever comes next (no feasible-region draws): the constraint check alone rejects
    grid = hwnas.search(space, x, {"latency_ms": "40%"}, flops.profile, strategy=Grid(shuffle=True),
                        max_trials=40, seed=0, profilers={"latency_ms": latency}, progress=False)
    assert grid.num_rejected > 0 and all(t.metrics["latency_ms"] <= 0.4 * hi * (1 + 1e-12) for t in grid.history)


# ------------------------------------------------------------------------------------------ this host (slow)
def _unseen_samples(space, lut: LUT, n: int, seed: int) -> list[dict]:
    """``n`` random subnets that neither the build nor an adaptation measured."""
    seen = {json.dumps(r["sample"], sort_keys=True) for r in lut.subnets}
    seen |= {json.dumps(m["sample"], sort_keys=True) for m in (lut.adapted or {}).get("measurements", [])}
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n:
        s = space.random_sample(rng)
        key = json.dumps(s, sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append(s)
    return out


def _measure_twice(paths, device: str) -> tuple[np.ndarray, float]:
    """Two independent plain steady-state passes: their geometric mean, and their spread (median |ln a/b|)."""
    a = plain_steady_ms(paths, device=device, seed=0)
    b = plain_steady_ms(paths, device=device, seed=10)
    return np.sqrt(a * b), float(np.median(np.abs(np.log(a / b))))


@pytest.mark.slow  # about a minute per LUT: adapt (~30 s) and 8 subnets timed twice
@pytest.mark.parametrize("name", SHIPPED_LUTS)
def test_adapted_shipped_lut_predicts_a_plain_steady_state_timing_of_unseen_subnets(name, tmp_path):
    """The documented way to use a shipped LUT on another machine (docs/latency.md): ``hwnas adapt`` it, then
    predict. Its predictions of 8 subnets it never measured against a plain ONNX Runtime timing loop (warm-up, then
    consecutive runs; the LUT's device's thread settings) in the same run. Bound: median |ln(pred / measured)| <=
    0.10 + 3 x the measurement's own spread, every subnet within 0.25 + 3 x spread; one retry of the measurement."""
    from hwnas.hw.adapt import adapt

    src = _load(name)
    space, x = _space_of(src)
    lut = adapt(src.path, src.device.name, n=20, space=space, dummy_input=x, out=tmp_path / "adapted.json",
                budget_s=90, seed=0, progress=False)
    samples = _unseen_samples(space, lut, 8, seed=3)
    paths = [hwnas.to_onnx(hwnas.export(space, s), x, tmp_path / f"s{i}.onnx") for i, s in enumerate(samples)]
    pred = hwnas.LatencyProfiler(space, x, lut=lut).profile_batch(samples)
    for _attempt in range(2):
        measured, spread = _measure_twice(paths, src.device.name)
        err = np.abs(np.log(pred / measured))
        tol = 0.10 + 3 * spread
        if np.median(err) <= tol and err.max() <= tol + 0.15:
            break
    print(f"{name}: median error {np.median(err):.3f}, worst {err.max():.3f}, spread {spread:.4f}")
    assert np.median(err) <= tol and err.max() <= tol + 0.15, (name, err.round(3), tol)


@pytest.mark.slow  # about a minute: adapt the digits LUT, search, measure two subnets
def test_a_searched_latency_constraint_holds_when_measured(tmp_path):
    """A search under latency_ms <= 50% of the largest subnet's, with the digits LUT adapted to this machine: the
    chosen subnet, timed side by side with the largest subnet, takes at most half its time (within the two
    measurements' spread and the adapted LUT's error on the pair)."""
    from hwnas.hw.adapt import adapt
    from hwnas.profile.constraints import metric_range

    src = _load("digits")
    space, x = _space_of(src)
    lut = adapt(src.path, "cpu-ort-1t", n=20, space=space, dummy_input=x, out=tmp_path / "adapted.json",
                budget_s=60, seed=0, progress=False)
    latency = hwnas.LatencyProfiler(space, x, lut=lut)
    flops = hwnas.FlopsProfiler(space, x, graph=latency.graph)
    res = hwnas.search(space, x, {"latency_ms": "50%"}, lambda s: flops.profile(s), strategy=Random(),
                       max_trials=60, seed=0, profilers={"latency_ms": latency}, progress=False)
    hi, largest = latency.model.extreme(largest=True)
    assert latency.profile(largest) == pytest.approx(hi, rel=1e-9) and hi == metric_range(latency)[2]
    paths = [hwnas.to_onnx(hwnas.export(space, s), x, tmp_path / f"{k}.onnx")
             for k, s in (("best", res.best_sample), ("largest", largest))]
    for _attempt in range(2):
        measured, spread = _measure_twice(paths, "cpu-ort-1t")
        ratio = measured[0] / measured[1]
        if ratio <= 0.5 * np.exp(0.10 + 3 * spread):
            break
    print(f"chosen / largest measured {ratio:.3f} (predicted {latency.profile(res.best_sample) / latency.profile(largest):.3f}), "
          f"spread {spread:.4f}")
    assert ratio <= 0.5 * np.exp(0.10 + 3 * spread), (ratio, spread)
