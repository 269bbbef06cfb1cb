"""``hwnas adapt``: a LUT refitted per kernel family from a few steady-state measurements on this machine (digits
space, real ONNX Runtime measurements; the accuracy check is against an independent plain measurement)."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from conftest import plain_steady_ms

import hwnas
from hwnas.artifacts import lut_path
from hwnas.cli import main
from hwnas.hw import FAMILIES, LUT, FingerprintWarning, LUTError, adapt, family_of, fingerprint
from hwnas.hw.adapt import fit_families
from hwnas.hw.latency import LatencyProfiler

SHIPPED = lut_path("digits")  # package data, addressed by name (hwnas.artifacts), wherever the tests run from
X = torch.randn(1, 1, 8, 8)


def test_kernel_families_follow_the_signature():
    conv = "conv|in=1x{c}x8x8|out=1x{o}x8x8|k={k}|s=1x1|g={g}|p=1x1|act=relu|add=0"
    assert family_of(conv.format(c=24, o=24, k="3x3", g=24)) == "depthwise_conv"
    assert family_of(conv.format(c=24, o=48, k="1x1", g=1)) == "pointwise_conv"
    assert family_of(conv.format(c=24, o=48, k="3x3", g=1)) == "dense_conv"
    assert family_of(conv.format(c=24, o=48, k="3x3", g=4)) == "dense_conv"  # grouped, not depthwise
    assert family_of("linear|in=1x32|out=1x10|act=none") == "gemm"
    assert family_of("adaptive_avg_pool|in=1x32x4x4|out=1x32x1x1") == "pooling"
    assert family_of("mul|in=1x32x4x4,1x32x1x1|out=1x32x4x4") == "elementwise"
    assert family_of("cat|in=1x8x4x4,1x8x4x4|out=1x16x4x4") == "movement"
    assert set(FAMILIES) >= {"dense_conv", "depthwise_conv", "pointwise_conv", "gemm", "pooling", "elementwise",
                             "movement"}


def test_family_fit_recovers_known_factors_and_keeps_unseen_ones_near_the_prior():
    rng = np.random.default_rng(0)
    n = 40
    x = np.column_stack([rng.uniform(0.005, 0.02, n), rng.uniform(0.002, 0.01, n), rng.uniform(0.0, 1e-5, n),
                         np.full(n, 0.007)])  # dense, depthwise, a family with almost no time, overhead
    true = np.array([0.7, 1.3, 3.0, 1.8])
    y = x @ true * np.exp(rng.normal(0, 0.003, n))
    fit = fit_families(x, y, ["dense_conv", "depthwise_conv", "gemm", "overhead"])
    assert fit.factors[0] == pytest.approx(0.7, rel=0.03) and fit.factors[1] == pytest.approx(1.3, rel=0.03)
    assert fit.factors[3] == pytest.approx(1.8, rel=0.05)
    assert fit.cv_rms < 0.01 < fit.cv_rms_one_factor  # one factor cannot carry families that moved apart
    assert fit.factors[2] < 2.0  # no signal: the ridge keeps it near its prior, not at the true 3.0
    assert all(f >= 0 for f in fit.factors)


@pytest.mark.slow  # measures on this host (12-20 s): the default suite stays within 6 minutes
def test_adapt_writes_a_lut_for_this_host_that_predicts_held_out_subnets(tmp_path, capsys):
    """The shipped digits LUT adapted on this machine (12 measurements, through the CLI) against an independent
    plain steady-state measurement of subnets neither the build nor the adaptation ran, in the same run: the
    tolerance comes from the measurement's own spread (two passes), with one retry."""
    out = tmp_path / "adapted.json"
    assert main(["adapt", str(SHIPPED), "--device", "cpu-ort-1t", "--n", "12", "--budget", "40", "--out",
                 str(out)]) == 0
    assert "adapted" in capsys.readouterr().out
    with warnings.catch_warnings():
        warnings.simplefilter("error", FingerprintWarning)  # carries this host's fingerprint
        lut = LUT.load(out)
    source = LUT.load(SHIPPED, check_fingerprint=False)
    info = lut.adapted["adapted_from"]
    assert lut.device.name == "cpu-ort-1t" and lut.fingerprint == fingerprint("cpu-ort-1t")
    assert info["fingerprint"] == source.fingerprint and info["n"] == 12 and info["definition"] == "steady"
    assert np.isfinite(info["cv_rms"]) and info["cv_rms"] <= info["cv_rms_one_factor"] + 1e-12
    assert set(lut.adapted["families"]) == set(FAMILIES) and len(lut.adapted["measurements"]) == 12
    assert "adapted from cpu-ort-1t" in lut.summary()

    space = hwnas.spaces.create("digits").eval()
    prof = LatencyProfiler(space, X, lut=lut)
    # an adapted LUT's speed check measures the subnets its adaptation measured, steady, against their times then
    from hwnas.hw import speed_check

    check = speed_check(lut, space, X, n=4)
    measured = {json.dumps(m["sample"], sort_keys=True) for m in lut.adapted["measurements"]}
    assert len(check.ratios) == 4 and all(json.dumps(s, sort_keys=True) in measured for s in check.samples)
    # the factor is the median of its ratios now / then (the host's speed against the adaptation is not tested)
    assert check.factor == pytest.approx(float(np.median(check.ratios))) and all(r > 0 for r in check.ratios)
    used = {json.dumps(r["sample"], sort_keys=True) for r in source.subnets}
    rng = np.random.default_rng(11)
    samples = []
    while len(samples) < 8:
        s = space.random_sample(rng)
        if json.dumps(s, sort_keys=True) not in used:
            samples.append(s)
    paths = [hwnas.to_onnx(hwnas.export(space, s), X, tmp_path / f"h{i}.onnx") for i, s in enumerate(samples)]
    pred = prof.profile_batch(samples)
    for attempt in range(2):
        a, b = plain_steady_ms(paths, seed=attempt), plain_steady_ms(paths, seed=attempt + 10)
        spread = float(np.median(np.abs(np.log(a / b))))
        err = np.abs(np.log(pred / np.sqrt(a * b)))
        tol = 0.06 + 3 * spread
        if np.median(err) <= tol:
            break
    assert np.median(err) <= tol, f"median error {np.median(err):.3f} > tolerance {tol:.3f} (spread {spread:.4f})"


def test_adapt_refuses_bad_input_clearly(tmp_path, capsys):
    with pytest.raises(ValueError, match="n must be an int from 5 to 200"):
        adapt(LUT.new("cpu-ort-1t"), "cpu-ort-1t", n=3)
    with pytest.raises(KeyError, match="no-such-device"):
        adapt(LUT.new("cpu-ort-1t"), "no-such-device", n=20)
    empty = LUT.new("cpu-ort-1t")
    empty.spaces = ["digits@1x1x8x8"]
    with pytest.raises(LUTError, match="0 build subnets of digits@1x1x8x8.*fewer than n=20"):
        adapt(empty, "cpu-ort-1t", n=20)
    empty.spaces = ["mine@1x3x8x8"]
    with pytest.raises(LUTError, match="none of them a registered space.*pass space= and dummy_input="):
        adapt(empty, "cpu-ort-1t", n=20)
    assert main(["adapt", str(tmp_path / "none.json"), "--device", "cpu-ort-1t"]) == 2
    assert "is not a file" in capsys.readouterr().err
    (tmp_path / "p.skops").write_text("x")
    assert main(["adapt", str(tmp_path / "p.skops"), "--device", "cpu-ort-1t"]) == 2
    assert "is not an hwnas latency predictor" in capsys.readouterr().err  # a .skops is adapted as a predictor
    data = LUT.new("cpu-ort-1t").to_dict()
    data["adapted"] = {"families": {"dense_conv": -1.0}, "overhead_ms": 0.01, "adapted_from": {}}
    (tmp_path / "bad.json").write_text(json.dumps(data))
    with pytest.raises(LUTError, match="malformed \"adapted\" record"):
        LUT.load(tmp_path / "bad.json")
