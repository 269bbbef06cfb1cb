"""A wheel of hwnas works outside the checkout: its LUTs and predictor ship inside it and are found by name.

The wheel is built from a copy of the sources (building writes ``build/`` and ``*.egg-info`` next to them),
installed without dependencies into a fresh virtual environment that reuses this Python's packages (torch,
onnxruntime, ...), and its ``hwnas`` command runs from an empty folder. Everything lives in pytest's tmp_path.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch

import hwnas
from hwnas.artifacts import list_artifacts
from hwnas.hw import LatencyProfiler
from hwnas.profile.constraints import metric_range

ROOT = Path(__file__).resolve().parents[1]


def _run(cmd, cwd, env, timeout=600) -> str:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{cmd} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow  # 34 s: outside the 6-minute default suite; .ci/run runs it as a step of its own
def test_wheel_in_a_fresh_venv_runs_demo_predict_and_profile_outside_the_checkout(tmp_path):
    t0 = time.perf_counter()
    src = tmp_path / "src"
    src.mkdir()
    shutil.copytree(ROOT / "hwnas", src / "hwnas", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    # the subprocesses see neither this checkout (PYTHONPATH) nor user caches outside tmp_path
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PIP_USER")}
    env.update(TMPDIR=str(tmp_path), PIP_NO_CACHE_DIR="1", PIP_DISABLE_PIP_VERSION_CHECK="1", PYTHONNOUSERSITE="1")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", tmp_path / "dist",
          src], tmp_path, env)
    (wheel,) = (tmp_path / "dist").glob("hwnas-*.whl")
    with zipfile.ZipFile(wheel) as z:
        shipped = {n for n in z.namelist() if n.startswith("hwnas/data/")}
    want = {f"hwnas/data/{a.path.parent.name}/{a.path.name}" for a in list_artifacts()}
    assert want and want <= shipped  # every LUT and predictor of the checkout ...
    assert any(n.endswith(".skops.data.json") for n in shipped)  # ... and the predictor's training data

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", venv], tmp_path, env)
    py = venv / "bin" / "python"
    # the system's pip installs into the venv (the interpreter running it); --ignore-installed: the checkout's
    # editable install of the same version is visible through the system site and must not count as installed
    _run([py, "-m", "pip", "install", "--no-deps", "--ignore-installed", "-q", wheel], tmp_path, env)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = _run([py, "-c", "import hwnas, hwnas.artifacts as a; print(hwnas.__file__); "
                  "print('\\n'.join(str(x.path) for x in a.list_artifacts()))"], elsewhere, env).split()
    assert all(Path(p).resolve().is_relative_to(venv.resolve()) for p in where), where  # not the checkout
    installed = {Path(p).name: Path(p) for p in where[1:]}
    for art in list_artifacts():  # the same bytes as the checkout's artefacts, the predictor's data too
        assert _sha(installed[art.path.name]) == _sha(art.path), art.name
    data = installed["cpu-ort-1t.skops"].with_name("cpu-ort-1t.skops.data.json")
    assert _sha(data) == _sha(ROOT / "hwnas" / "data" / "predictors" / "cpu-ort-1t.skops.data.json")

    hw = venv / "bin" / "hwnas"
    out = _run([hw, "profile", "--space", "digits", "--lut", "digits"], elsewhere, env)
    row = re.search(r"^[│|] latency_ms\s+[│|]\s+(\S+)\s+[│|]\s+(\S+)\s+[│|]\s+(\S+)", out, flags=re.M)
    assert row, out
    lo, _, hi = metric_range(LatencyProfiler(hwnas.spaces.create("digits"), torch.zeros(1, 1, 8, 8), lut="digits"))
    assert float(row.group(1)) == pytest.approx(lo, rel=1e-3) and float(row.group(3)) == pytest.approx(hi, rel=1e-3)

    out = _run([hw, "predict", "mobilenet_v3_small", "--input", "1,3,160,160", "--csv", elsewhere / "layers.csv"],
               elsewhere, env)
    assert re.search(r"mobilenet_v3_small: predicted \d+\.\d+ ms on cpu-ort-1t", out), out
    assert (elsewhere / "layers.csv").read_text().count("\n") > 20

    out = _run([hw, "demo", "--quick", "--out", elsewhere / "demo", "--no-progress"], elsewhere, env)
    assert "chosen" in out and (elsewhere / "demo" / "summary.json").stat().st_size > 0
    assert sorted(p.name for p in elsewhere.iterdir()) == ["demo", "layers.csv"]  # nothing else written there
    print(f"wheel build, venv, install and three commands: {time.perf_counter() - t0:.0f} s")
