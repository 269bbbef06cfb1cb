"""Every ``hwnas`` command and option group through the installed entry point (conftest.hwnas_command), from a
temporary working directory, on a tiny space: a user's space file with 4 subnets, or the 8x8 digits space.

What each command printed or wrote is checked against an independent reference: the exported subnet's own
parameter count, fvcore's FLOPs, the enumeration of the tiny space, the LUT file read back. Commands that measure
(``lut build``, ``speed-check``, ``recalibrate``, ``report latency --measure``, ``adapt``, ``demo``) are ``slow``.
"""

from __future__ import annotations

import csv
import json
import re

import pytest
import torch
from conftest import fvcore_flops, num_params, run_hwnas

import hwnas
from hwnas.artifacts import list_artifacts, lut_path
from hwnas.hw import size_factor
from hwnas.hw.lut import LUT

TINY = '''
import hwnas.nn as hnn


class Tiny(hnn.Space):
    """4 subnets: width 4 or 8, kernel 1 or 3."""

    def __init__(self, classes=3):
        super().__init__()
        w = hnn.Choice([4, 8], label="w")
        self.conv = hnn.Conv2d(1, w, hnn.Choice([1, 3], label="k"))
        self.fc = hnn.Linear(w, classes)

    def forward(self, x):
        return self.fc(self.conv(x).mean((2, 3)))
'''
SCORE = '''
def score(sample):
    return 10 * sample["w"] - sample["k"]
'''
GRID = [{"w": w, "k": k} for w in (4, 8) for k in (1, 3)]
X = torch.zeros(1, 1, 8, 8)


@pytest.fixture
def work(tmp_path):
    """A fresh working directory with the user's space file and two score files (a module and a path)."""
    (tmp_path / "tiny.py").write_text(TINY)
    (tmp_path / "myscore.py").write_text(SCORE)
    (tmp_path / "scores").mkdir()
    (tmp_path / "scores" / "by_path.py").write_text(SCORE.replace("10 *", "-10 *"))
    return tmp_path


def _tiny(classes: int = 3):
    ns: dict = {}
    exec(TINY, ns)  # the same class the CLI loads from the file
    return ns["Tiny"](classes=classes).eval()


def _ok(proc) -> str:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def _num(text: str) -> float:
    """A number as the profile table prints it: 277, 4.65K, 1.2M."""
    scale = {"K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
    return float(text[:-1]) * scale[text[-1]] if text[-1] in scale else float(text)


def _best(out: str) -> dict:
    return json.loads(re.search(r"^best sample: (\{.*\})$", out, flags=re.M).group(1))


# -------------------------------------------------------------------------------------------- default suite
@pytest.mark.slow  # over 4 s: the default suite stays within 6 minutes
def test_profile_of_a_user_space_file_with_space_arg(work):
    out = _ok(run_hwnas("profile", "--space", "tiny.py:Tiny", "--input", "1,1,8,8", "--space-arg", "classes=5",
                        "--constraint", "params=60", cwd=work))
    cells = [[c.strip() for c in line.strip("│| ").replace("|", "│").split("│")] for line in out.splitlines()]
    rows = {c[0]: c for c in cells if c[0] in ("flops", "params")}
    # smallest and largest against the exported subnets themselves (classes=5 reached the constructor); the table
    # prints 3 significant digits (4.65K)
    small, large = hwnas.export(_tiny(5), GRID[0]), hwnas.export(_tiny(5), GRID[-1])
    assert [_num(rows["params"][1]), _num(rows["params"][3])] == pytest.approx([num_params(small), num_params(large)],
                                                                              rel=5e-3)
    assert [_num(rows["flops"][1]), _num(rows["flops"][3])] == pytest.approx([fvcore_flops(small, X),
                                                                             fvcore_flops(large, X)], rel=5e-3)
    assert "2 labels, 4 subnets" in out
    assert sorted(p.name for p in work.iterdir()) == ["myscore.py", "scores", "tiny.py"]  # nothing written


@pytest.mark.slow  # over 4 s: the default suite stays within 6 minutes
def test_search_score_from_a_file_on_the_grid_with_a_constraint(work):
    """--score path/file.py:fn, --strategy grid, --constraint: the grid visits all 4 subnets; the best is the
    enumerated optimum among those within the bound (params of the exported subnets)."""
    bound = num_params(hwnas.export(_tiny(), {"w": 8, "k": 1}))
    out = _ok(run_hwnas("search", "--space", "tiny.py:Tiny", "--input", "1,1,8,8", "--score",
                        "scores/by_path.py:score", "--strategy", "grid", "--constraint", f"params={bound}",
                        "--trials", "10", "--out", "res", "--no-progress", cwd=work))
    feasible = [s for s in GRID if num_params(hwnas.export(_tiny(), s)) <= bound]
    want = max(feasible, key=lambda s: -10 * s["w"] - s["k"])  # scores/by_path.py's score
    assert _best(out) == want == hwnas.load_arch(work / "res" / "best_arch.json") == {"w": 4, "k": 1}
    history = list(csv.DictReader((work / "res" / "history.csv").open()))
    assert sorted(json.dumps(json.loads(r["sample"]), sort_keys=True) for r in history) == \
        sorted(json.dumps(s, sort_keys=True) for s in feasible)
    assert (work / "res" / "pareto.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow  # over 4 s: the default suite stays within 6 minutes
def test_search_score_from_a_module_at_random_in_min_mode_with_space_arg(work):
    """--score module:fn (a module of the working directory), --strategy random, --mode min, --space-arg."""
    out = _ok(run_hwnas("search", "--space", "tiny.py:Tiny", "--input", "1,1,8,8", "--space-arg", "classes=7",
                        "--score", "myscore:score", "--strategy", "random", "--mode", "min", "--trials", "12",
                        "--seed", "1", "--out", "res", "--no-progress", cwd=work))
    history = list(csv.DictReader((work / "res" / "history.csv").open()))
    scores = {json.dumps(json.loads(r["sample"]), sort_keys=True): float(r["score"]) for r in history}
    best = _best(out)
    assert scores[json.dumps(best, sort_keys=True)] == min(scores.values()) == 10 * best["w"] - best["k"]
    for r in history:  # params from classes=7 (the exported subnet's own count)
        assert float(r["params"]) == num_params(hwnas.export(_tiny(7), json.loads(r["sample"])))


@pytest.mark.slow  # 21 s at load 2-5 (two interpreters); lut list/info also run in-process in test_cli_and_layout
def test_lut_list_and_info_of_shipped_luts(work):
    out = _ok(run_hwnas("lut", "list", cwd=work))
    for art in list_artifacts():
        assert re.search(rf"^[│|] {art.kind}\s+[│|] {re.escape(art.name)}\s", out, flags=re.M), art.name
    out = _ok(run_hwnas("lut", "info", "mobilenet_v3", "--device", "cpu-ort-2t", cwd=work))
    lut = LUT.load(lut_path("mobilenet_v3", "cpu-ort-2t"), check_fingerprint=False)
    assert out.startswith("LUT for cpu-ort-2t: ") and _cell(out, "kernels").startswith(f"{len(lut.entries)} ")
    assert _cell(out, "build subnets") == str(len(lut.subnets)) and not re.search(r"\d\.\d{8,}", out)


@pytest.mark.slow  # 39 s at load 2-5 (two interpreters, each loads the predictor)
def test_predict_with_a_named_and_a_file_predictor(work):
    """predict --predictor NAME and --predictor FILE give the same figure; the total is the CSV's layers plus
    the stated overhead."""
    path = hwnas.to_onnx(hwnas.zoo.create("squeezenet1_0").eval(), torch.randn(1, 3, 64, 64), work / "sq.onnx")
    pred = hwnas.artifacts.predictor_path("cpu-ort-1t")
    a = _ok(run_hwnas("predict", "sq.onnx", "--predictor", "cpu-ort-1t", "--csv", "layers.csv", cwd=work))
    b = _ok(run_hwnas("predict", str(path), "--predictor", str(pred), cwd=work))
    total = re.search(r"predicted (\S+) ms on cpu-ort-1t \((\d+) kernels, overhead (\S+) us\)", a)
    assert total and total.group(0) in b
    rows = list(csv.DictReader((work / "layers.csv").open()))
    assert [r["layer"] for r in rows[-2:]] == ["(model overhead)", "(total)"]
    assert len(rows) - 2 == int(total.group(2))  # one row per kernel, then the overhead and the total
    assert float(rows[-2]["predicted_ms"]) == pytest.approx(float(total.group(3)) / 1000, abs=1e-4)
    assert sum(float(r["predicted_ms"]) for r in rows[:-1]) == pytest.approx(float(total.group(1)), abs=2e-3)


def _cell(table: str, key: str) -> str:
    """The value next to ``key`` in a two-column table that `lut info` prints."""
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip("│| ").replace("|", "│").split("│")]
        if len(cells) == 2 and cells[0] == key:
            return cells[1]
    raise AssertionError(f"no row {key!r} in:\n{table}")


# ------------------------------------------------------------------------------------------------ slow
@pytest.mark.slow  # ~30 s: measures every kernel of the tiny space
def test_lut_build_info_and_refit_of_a_user_space(work):
    out = _ok(run_hwnas("lut", "build", "--space", "tiny.py:Tiny", "--input", "1,1,8,8", "--out", "tiny.json",
                        "--repeats", "1", "--runs", "5", "--random-subnets", "2", cwd=work))
    lut = LUT.load(work / "tiny.json")
    assert out.startswith("LUT for cpu-ort-1t: ") and _cell(out, "kernels").startswith(f"{len(lut.entries)} ")
    # every kernel of the 4 subnets is in it: one conv per (w, k), one linear per w, the mean
    assert {s.split("|")[0] for s in lut.entries} >= {"conv", "linear"}
    assert sum(s.startswith("conv|") for s in lut.entries) == 4 and sum(s.startswith("linear|") for s in lut.entries) == 2
    # whether the build applied its steady-state level depends on the host's noise (a loaded host keeps the paired
    # level and says so): info prints the file's own summary either way
    info = _ok(run_hwnas("lut", "info", "tiny.json", cwd=work))
    assert _cell(info, "kernels") == _cell(out, "kernels") and _cell(info, "build subnets") == str(len(lut.subnets))
    # --max-subnets: a second build stops after that many subnets of this call (resumable)
    _ok(run_hwnas("lut", "build", "--space", "tiny.py:Tiny", "--input", "1,1,8,8", "--out", "part.json",
                  "--repeats", "3", "--runs", "3", "--random-subnets", "0", "--max-subnets", "1", cwd=work))
    assert len(LUT.load(work / "part.json").subnets) == 1
    out = _ok(run_hwnas("lut", "refit", "tiny.json", "--out", "refit.json", cwd=work))
    assert "refitted tiny.json" in out and LUT.load(work / "refit.json").entries.keys() == lut.entries.keys()


@pytest.mark.slow  # ~20 s: measures 3 build subnets twice
def test_lut_speed_check_and_write(work):
    out = _ok(run_hwnas("lut", "speed-check", "--space", "digits", "--lut", "digits", "--subnets", "3", "--write",
                        "--out", "fast.json", cwd=work))
    factor = float(re.search(r"written: fast\.json \(its costs are multiplied by (\S+) from now on\)", out).group(1))
    fast = LUT.load(work / "fast.json")
    assert fast.speed_factor == pytest.approx(factor, abs=1e-4) and fast.speed["subnets"] == 3
    space = hwnas.spaces.create("digits")
    base, now = (hwnas.LatencyProfiler(space, X, lut=p) for p in ("digits", fast))
    s = space.random_sample(0)
    then = base.profile(s)
    assert now.profile(s) == pytest.approx(then * size_factor(fast.speed.get("curve"), then, fast.speed_factor),
                                           rel=1e-9)


@pytest.mark.slow  # ~30 s: measures 4 build subnets paired and steady
def test_lut_recalibrate(work):
    out = _ok(run_hwnas("lut", "recalibrate", "digits", "--space", "digits", "--subnets", "4", "--max-error", "10",
                        "--out", "recal.json", cwd=work))
    lut = LUT.load(work / "recal.json")
    d = lut.settings["definition"]
    assert lut.definition == "steady" and d["subnets"] == 4 and f"steady = {d['ratio']:.4f} x paired" in out


@pytest.mark.slow  # ~15 s: measures every kernel of one subnet
def test_report_latency_with_measure(work):
    space = hwnas.spaces.create("digits")
    sample = space.random_sample(3)
    hwnas.save_arch(sample, work / "arch.json")
    out = _ok(run_hwnas("report", "latency", "--space", "digits", "--arch", "arch.json", "--lut", "digits",
                        "--csv", "r.csv", "--measure", cwd=work))
    rows = list(csv.DictReader((work / "r.csv").open()))
    assert rows[-1]["layer"] == "(total)" and float(rows[-1]["measured_ms"]) > 0
    predicted = hwnas.LatencyProfiler(space, X, lut="digits").profile(sample)
    assert float(rows[-1]["predicted_ms"]) == pytest.approx(predicted, rel=1e-6)
    assert f"predicted {predicted:.4f} ms, measured" in out


@pytest.mark.slow  # ~40 s: 6 subnets measured steady
def test_adapt_a_shipped_lut(work):
    out = _ok(run_hwnas("adapt", "digits", "--n", "6", "--budget", "30", "--out", "mine.json", cwd=work))
    lut = LUT.load(work / "mine.json")
    assert lut.adapted["adapted_from"]["n"] == 6 and "written: mine.json" in out
    assert len(lut.adapted["measurements"]) == 6


@pytest.mark.slow  # ~20 s: a search twice
def test_search_checkpoint_resumes(work):
    args = ["search", "--space", "digits", "--score", "params", "--lut", "digits", "--constraint", "latency_ms=60%",
            "--strategy", "random", "--checkpoint", "c.json", "--out", "res", "--no-progress"]
    _ok(run_hwnas(*args, "--trials", "5", cwd=work))
    first = json.loads((work / "c.json").read_text())["trials"]
    _ok(run_hwnas(*args, "--trials", "8", cwd=work))
    again = json.loads((work / "c.json").read_text())["trials"]
    assert len(first) == 5 and len(again) == 8 and again[:5] == first  # resumed, nothing re-evaluated


@pytest.mark.slow  # ~1 min: the demo's quick budget
def test_demo_quick(work):
    out = _ok(run_hwnas("demo", "--quick", "--out", "d", "--no-progress", cwd=work))
    summary = json.loads((work / "d" / "summary.json").read_text())
    chosen = hwnas.load_arch(work / "d" / "chosen_arch.json")
    row = next(r for r in summary["rows"] if r["name"] == "chosen")
    assert "chosen" in out and row["sample"] == chosen
    assert row["params"] == num_params(hwnas.export(hwnas.spaces.create("digits"), chosen))
