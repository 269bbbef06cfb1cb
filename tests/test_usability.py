"""What a newcomer meets (issue 21): the CLI's input shapes, help, version and export; warnings once; no
subnet scored twice; one atomic writer with ordinary permissions; plain top-level functions; and the library
parts (scipy's Theil-Sen, scikit-learn's Ridge, py-cpuinfo, rich tables) giving the numbers of the code they
replaced."""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import inspect
import json
import logging
import os
import re
import sys
import warnings

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

import hwnas
from hwnas.artifacts import lut_path
from hwnas.cli import build_parser, main

X = torch.zeros(1, 1, 8, 8)

USER_SPACE = (
    "import hwnas.nn as hnn\n\n\n"
    "class MySpace(hnn.Space):\n"
    "{attr}"
    "    def __init__(self):\n"
    "        super().__init__()\n"
    "        w = hnn.Choice([8, 16], label='w')\n"
    "        self.stem = hnn.ConvBNAct(3, w, 3, stride=2)\n"
    "        self.head = hnn.Linear(w, 5)\n\n"
    "    def forward(self, x):\n"
    "        return self.head(self.stem(x).mean((2, 3)))\n")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _flops_row(out: str) -> list[str]:
    line = next(line for line in out.splitlines() if " flops " in line)
    return [c.strip() for c in line.strip("│| ").replace("|", "│").split("│")]


# ------------------------------------------------------------------------------------------ input shapes
def test_a_user_space_without_input_is_refused_not_given_224(tmp_path, capsys):
    path = tmp_path / "myspace.py"
    path.write_text(USER_SPACE.format(attr=""))
    assert main(["profile", "--space", f"{path}:MySpace"]) == 2
    err = capsys.readouterr().err
    assert "no input shape" in err and "--input" in err and "224" not in err.split("e.g.")[0]


def test_a_user_space_declares_its_input_shape(tmp_path, capsys):
    path = tmp_path / "myspace.py"
    path.write_text(USER_SPACE.format(attr="    input_shape = (1, 3, 16, 16)\n\n"))
    assert main(["profile", "--space", f"{path}:MySpace"]) == 0
    row = _flops_row(capsys.readouterr().out)
    # the smallest subnet at 16x16 (8x8 out): conv 3->8 3x3 (8*8*8*27 = 13824) + BN, mean, linear 8->5 (40)
    space = hwnas.spaces.create(f"{path}:MySpace")
    ref = hwnas.FlopsProfiler(space, torch.zeros(1, 3, 16, 16)).profile(space.min_sample())
    from conftest import fvcore_flops

    assert ref == fvcore_flops(hwnas.export(space, space.min_sample()), torch.zeros(1, 3, 16, 16))
    assert row[1] == hwnas.report.summary.format_number(ref)


def test_the_lut_gives_the_input_shape(tmp_path, capsys):
    """A LUT stores the input shape it was built at; a space without one takes it from --lut."""
    data = json.loads(lut_path("digits").read_text())
    assert data["settings"]["input_shape"] == [1, 1, 8, 8]
    path = tmp_path / "dspace.py"
    path.write_text("from hwnas.spaces.digits import DigitsSpace\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["profile", "--space", f"{path}:DigitsSpace", "--lut", "digits"]) == 0
    out = capsys.readouterr().out
    space = hwnas.spaces.create("digits")
    assert _flops_row(out)[1] == hwnas.report.summary.format_number(
        hwnas.FlopsProfiler(space, X).profile(space.min_sample()))


def test_missing_kernels_name_the_command_with_the_right_shape():
    from hwnas.hw.latency import MissingKernelsError

    space = hwnas.spaces.create("digits", num_classes=7)  # a head the shipped LUT has never measured
    with pytest.raises(MissingKernelsError) as e:
        hwnas.LatencyProfiler(space, torch.zeros(1, 1, 8, 8), lut="digits")
    text = str(e.value)
    assert "<name>" not in text and "hwnas lut build --space digits --input 1,1,8,8 --device cpu-ort-1t" in text
    assert "--out digits_cpu-ort-1t.json" in text  # a file of the user's, never the shipped LUT


# ----------------------------------------------------------------------------------- version and help
def test_version_from_the_package_metadata(capsys):
    want = importlib.metadata.version("hwnas")
    assert hwnas.__version__ == want
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"hwnas {want}"


def _parsers(p: argparse.ArgumentParser, name: str = "hwnas"):
    yield name, p
    for a in p._actions:
        if isinstance(a, argparse._SubParsersAction):
            for sub_name, sub in a.choices.items():
                yield from _parsers(sub, f"{name} {sub_name}")


def test_every_option_has_help_and_shows_its_default():
    missing, no_default = [], []
    for name, p in _parsers(build_parser()):
        text = p.format_help()
        for a in p._actions:
            if not a.option_strings or isinstance(a, (argparse._HelpAction, argparse._VersionAction)):
                continue
            if not a.help:
                missing.append(f"{name} {a.option_strings[0]}")
            elif a.default not in (None, False, []) and "default" not in p.formatter_class(name)._get_help_string(a):
                no_default.append(f"{name} {a.option_strings[0]}")
        assert "show this help" in text
    assert not missing, f"options without help: {missing}"
    assert not no_default, f"options whose help hides the default: {no_default}"
    lut_build = dict(_parsers(build_parser()))["hwnas lut build"].format_help()
    assert re.search(r"--runs RUNS\s+timed runs of each measured model \(default: 30\)", lut_build)


def test_predict_advice_names_the_flag():
    from hwnas.cli import _as_flag
    from hwnas.predict.onnx_graph import ShapeError

    path = "/tmp/x.onnx"
    msg = _as_flag(str(ShapeError(f"{path!r}: no static shape for tensor 'a' of Conv node 'c' (shapes of its inputs: "
                                  "{}); pass dummy_input with the shape to predict for, or report the model")))
    assert "dummy_input" not in msg and "pass --input (e.g. --input 1,3,224,224) with the shape" in msg


# --------------------------------------------------------------------------------------------- export
def test_cli_export_writes_the_subnet_as_pt_and_dynamic_batch_onnx(tmp_path, capsys):
    space = hwnas.spaces.create("digits").eval()
    sample = space.random_sample(3)
    hwnas.save_arch(sample, tmp_path / "arch.json")
    torch.manual_seed(0)
    for p in space.parameters():  # trained-looking weights, so that --weights is checked
        p.data.normal_()
    torch.save(space.state_dict(), tmp_path / "space.pt")
    assert main(["export", "--space", "digits", "--arch", str(tmp_path / "arch.json"), "--weights",
                 str(tmp_path / "space.pt"), "--out", str(tmp_path / "s.pt"), "--onnx", str(tmp_path / "s.onnx"),
                 "--dynamic-batch"]) == 0
    assert "DigitsSubnet" in capsys.readouterr().out
    model = torch.load(tmp_path / "s.pt", weights_only=False).eval()
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        want = space.apply_arch(sample)(x)  # the supernet itself, under the sample
        assert torch.allclose(model(x), want, atol=1e-5)
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in hwnas.export(space, sample).parameters())
    sess = ort.InferenceSession(str(tmp_path / "s.onnx"), providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].shape[0] == "batch"
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    assert got.shape == (3, 10) and np.allclose(got, want.numpy(), atol=1e-4)
    assert (tmp_path / "s.onnx").stat().st_mode & 0o777 == 0o666 & ~_umask()
    assert main(["export", "--space", "digits", "--arch", str(tmp_path / "arch.json")]) == 2
    assert "--out subnet.pt and/or --onnx" in capsys.readouterr().err


def test_exported_subnet_is_named_for_a_subnet_and_prints_in_forward_order():
    space = hwnas.spaces.create("digits").eval()
    subnet = hwnas.export(space, space.max_sample())
    assert type(subnet).__name__ == "DigitsSubnet"
    code = subnet.code
    used = sorted(dict(subnet.named_children()), key=lambda n: code.index(f"self.{n}"))
    assert list(dict(subnet.named_children())) == used
    for module in subnet.modules():  # the containers fx made: children 0, 1, 2, ... in order
        keys = list(module._modules)
        if type(module) is nn.Module and all(k.isdigit() for k in keys):
            assert keys == sorted(keys, key=int)


# --------------------------------------------------------------------------------------------- warnings
def test_the_load_warning_is_logged_once_and_counts_the_affinity(caplog, monkeypatch):
    measure = importlib.import_module("hwnas.hw.measure")  # hwnas.hw.measure is also a function's name
    monkeypatch.setattr(measure, "_load_warned", False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {1}, raising=False)
    cores = os.cpu_count() or 1
    with caplog.at_level(logging.DEBUG, logger="hwnas.hw.measure"):
        measure._warn_load(0.5, "cpu-ort-1t")  # below the one core this process may use: nothing
        measure._warn_load(1.5, "cpu-ort-1t")
        measure._warn_load(1.7, "cpu-ort-1t")
    records = [r for r in caplog.records if "load average" in r.getMessage()]
    assert [r.levelno for r in records] == [logging.WARNING, logging.DEBUG]
    assert ("the 1 logical cores this process may run on" in records[0].getMessage()) == (cores > 1)


def test_fingerprint_warning_once_without_a_source_line():
    from hwnas.hw.lut import FingerprintWarning, warn_fingerprint

    msg = f"test message {os.getpid()} {id(object())}"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        for _ in range(3):
            warn_fingerprint(msg)
    assert [str(w.message) for w in caught] == [msg]
    text = warnings.formatwarning(caught[0].message, FingerprintWarning, caught[0].filename, caught[0].lineno)
    assert text.count("\n") == 1 and "warn_fingerprint(msg)" not in text
    with warnings.catch_warnings(record=True) as caught:  # "always" (pytest.warns) sees each
        warnings.simplefilter("always")
        warn_fingerprint(msg)
        warn_fingerprint(msg)
    assert len(caught) == 2
    with warnings.catch_warnings(), pytest.raises(FingerprintWarning):
        warnings.simplefilter("error", FingerprintWarning)
        warn_fingerprint(msg)


# ---------------------------------------------------------------------------------------------- search
def test_search_scores_each_subnet_once_and_records_cache_hits(tmp_path):
    from hwnas.search import Random, read_history_csv
    from hwnas.search import run as search_run

    space = hwnas.spaces.create("digits")
    calls = []

    def score(sample):
        calls.append(json.dumps(space.canonical(dict(sample)), sort_keys=True))
        return float(sample["s2.width"])

    narrow = lambda s: s["s1.depth"] == 1 and s["s2.depth"] == 1 and s["stem.width"] == 8  # noqa: E731
    from hwnas.search import Chain

    res = search_run(space, X, None, score, strategy=Chain(Random(), narrow), max_trials=60, seed=0,
                     progress=False, history_csv=tmp_path / "h.csv")
    keys = [json.dumps(space.canonical(dict(t.sample)), sort_keys=True) for t in res.history]
    assert len(calls) == len(set(calls)) == len(set(keys)) < len(keys)  # each distinct subnet scored once
    back = read_history_csv(tmp_path / "h.csv")
    for t, b in zip(res.history, back):
        assert b.repeat_of == t.repeat_of and b.cached == (keys.index(keys[t.index]) != t.index)
        if b.cached:
            assert keys[b.repeat_of] == keys[b.index] and b.score == back[b.repeat_of].score and b.eval_s == 0.0


# ---------------------------------------------------------------------------------------- atomic writes
def test_every_writer_gives_ordinary_permissions(tmp_path):
    from hwnas.demo import _save_state_dict
    from hwnas.device_agent import pack_agent
    from hwnas.report.plots import plot_pareto
    from hwnas.search import History, Trial

    want = 0o666 & ~_umask()
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    space = hwnas.convert(model, torch.zeros(1, 3, 8, 8))
    paths = [hwnas.save(space, tmp_path / "space.pt"),
             plot_pareto(History([Trial(i, {"w": i}, float(i), {"flops": 1.0 + i}) for i in range(3)]), x="flops",
                         path=tmp_path / "p.png"),
             _save_state_dict(model, tmp_path / "w.pt"), pack_agent(tmp_path / "agent.pyz")]
    for p in paths:
        assert p.stat().st_mode & 0o777 == want, p
    assert sorted(p.name for p in tmp_path.iterdir()) == ["agent.pyz", "p.png", "space.pt", "w.pt"]  # no temps
    assert torch.load(tmp_path / "w.pt", weights_only=True)["0.weight"].shape == (4, 3, 3, 3)


def test_a_failed_write_leaves_the_old_file(tmp_path):
    from hwnas.io import atomic_writer

    path = tmp_path / "f.bin"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_writer(path) as f:
        f.write(b"new, half")
        raise RuntimeError("killed")
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["f.bin"]


# ------------------------------------------------------------------------------------------ top level
def test_profile_and_search_are_plain_functions_and_their_parts_import(capsys):
    import hwnas.profile  # noqa: F401  (the package stays importable by name)
    from hwnas.profile import FlopsProfiler, register_cost_rule  # noqa: F401
    from hwnas.search import Random, RegularizedEvolution  # noqa: F401

    for fn in (hwnas.profile, hwnas.search, hwnas.prune):
        assert inspect.isfunction(fn) and fn.__doc__
    assert inspect.ismodule(sys.modules["hwnas.search"]) and inspect.ismodule(sys.modules["hwnas.profile"])
    summary = hwnas.profile(hwnas.spaces.create("digits"), X, {"flops": "60%"})
    out = capsys.readouterr().out
    assert out.count("centroid") == 1 and summary.table() in out
    assert "\n" not in repr(summary) and "centroid" not in repr(summary)  # a notebook's echo: no second table


# ----------------------------------------------------------------------------------- library replacements
def test_theil_sen_is_the_median_of_pairwise_slopes():
    from hwnas.hw.speed import _theil_sen

    rng = np.random.default_rng(0)
    for n in (3, 6, 11, 24):
        x = rng.normal(size=n)
        x[1] = x[0]  # a tie in x: that pair has no slope
        y = 0.4 * x + rng.standard_t(2, size=n) * 0.05
        slopes = [(y[j] - y[i]) / (x[j] - x[i]) for i in range(n) for j in range(i + 1, n) if x[j] != x[i]]
        slope = float(np.median(slopes))
        assert _theil_sen(x, y) == pytest.approx((slope, float(np.median(y - slope * x))), rel=1e-12, abs=1e-15)
    assert _theil_sen(np.ones(4), np.arange(4.0)) == (0.0, 1.5)


def test_the_ridge_refinement_equals_the_augmented_least_squares():
    from hwnas.hw.lut import LUT

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lut = LUT.load("digits", check_fingerprint=False)
    ridge = 0.01
    rows = [r for r in lut.subnets if r.get("kernels") and r.get("end_to_end_ms")]
    keys = sorted({k for r in rows for k in r["kernels"] if k in lut.entries})
    n = np.array([[r["kernels"].get(k, 0) for k in keys] for r in rows], dtype=float)
    e2e = np.array([r["end_to_end_ms"] for r in rows])
    for e in lut.entries.values():
        e.adjust_ms = 0.0
    prior = np.array([lut.prior_ms(k) for k in keys])
    base = lut._built_overhead_ms
    scale = np.maximum(np.abs(prior), 1e-4)
    a = np.vstack([np.hstack([n / e2e[:, None], (1 / e2e)[:, None]]),
                   np.hstack([np.diag(np.sqrt(ridge) / scale), np.zeros((len(keys), 1))])])
    y = np.concatenate([(e2e - n @ prior - base) / e2e, np.zeros(len(keys))])
    want, *_ = np.linalg.lstsq(a, y, rcond=None)
    lut.refine(ridge)
    got = np.array([lut.entries[k].adjust_ms for k in keys])
    assert np.abs(got - want[:-1]).max() < 1e-6 * np.abs(prior).max()
    assert lut.calibration["overhead_ms"] == pytest.approx(base + want[-1], abs=1e-9)


@pytest.mark.skipif(not os.path.isfile("/proc/cpuinfo"), reason="compares with Linux's /proc/cpuinfo")
def test_the_cpu_fingerprint_keeps_its_keys_and_values():
    from hwnas.hw.device import _KERNEL_FLAGS, fingerprint, fingerprint_matches

    first = open("/proc/cpuinfo", encoding="utf-8").read().split("\n\n", 1)[0]
    info = {}
    for line in first.splitlines():
        key, _, value = line.partition(":")
        info.setdefault(key.strip().lower(), value.strip())
    fp = fingerprint("cpu-ort-1t")
    if "model name" in info:
        assert fp["cpu_model"] == info["model name"]
    if "cpu family" in info:
        assert fp["cpu_id"] == f"family={info['cpu family']} model={info['model']} stepping={info['stepping']}"
    flags = set((info.get("flags") or info.get("features") or "").split())
    assert fp["cpu_flags"] == sorted(f for f in _KERNEL_FLAGS if f in flags)
    shipped = json.loads(lut_path("digits").read_text())["fingerprint"]
    assert not [d for d in fingerprint_matches(shipped, fp) if "CPU" in d] or shipped["cpu_model"] != fp["cpu_model"]
    assert fingerprint_matches(dict(fp, cpu_id="implementer=0x41 part=0xd0c"), dict(fp, cpu_id="")) == []


@pytest.mark.skipif(not os.path.isfile("/proc/cpuinfo"), reason="compares with Linux's /proc/cpuinfo")
def test_linux_fast_path_agrees_with_py_cpuinfo():
    """On Linux the fingerprint reads /proc/cpuinfo itself (py-cpuinfo costs seconds per process); py-cpuinfo, what
    every other OS uses, must describe the same CPU."""
    cpuinfo = pytest.importorskip("cpuinfo")
    from hwnas.hw.device import _linux_cpu_info

    ours, theirs = _linux_cpu_info(), cpuinfo.get_cpu_info()
    for key in ("brand_raw", "family", "model", "stepping"):
        if key in theirs:
            assert ours.get(key) == theirs[key], key


def test_lut_info_is_a_table_without_long_floats(capsys):
    assert main(["lut", "info", "digits"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("LUT for cpu-ort-1t:") and "calibration scale" in out
    assert not re.search(r"\d\.\d{8,}", out)


def test_the_test_extra_does_not_pull_in_ray():
    from pathlib import Path

    import tomllib

    meta = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    extras = meta["project"]["optional-dependencies"]
    assert not any(r.startswith("ray") for r in extras["test"]) and any(r.startswith("ray") for r in extras["ray"])
    deps = " ".join(meta["project"]["dependencies"])
    assert "py-cpuinfo" in deps and "rich" in deps and "scipy" in deps
