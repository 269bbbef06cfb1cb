"""The one-shot examples in examples/ run end to end (slow: each trains, derives and fine-tunes on digits)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.slow
@pytest.mark.parametrize("script,extra", [
    ("spos.py", []), ("darts.py", []), ("darts.py", ["--order2"]), ("gdas.py", []), ("gdas.py", ["--soft"]),
    ("proxylessnas.py", []), ("proxylessnas.py", ["--uniform"]), ("enas.py", []),
])
def test_example_runs_and_returns_a_subnet_within_the_budget(script, extra):
    # short settings: the defaults' timings are in docs/oneshot.md; this checks that each script works
    args = [sys.executable, str(EXAMPLES / script), "--epochs", "1", "--finetune-epochs", "1", *extra]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(EXAMPLES.parent), os.environ.get("PYTHONPATH", "")])}
    start = time.perf_counter()
    done = subprocess.run(args, cwd=EXAMPLES, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "chosen: {" in out and "(budget" in out, out
    lat, budget = map(float, re.search(r"exported subnet: ([\d.]+) ms \(budget ([\d.]+) ms", out).groups())
    assert 0 < lat <= budget * (1 + 1e-9) and ", within)" in out, out
    acc = float(re.search(r"fine-tuning epochs: ([\d.]+);", out).group(1))
    assert 0.0 <= acc <= 1.0
    assert time.perf_counter() - start < 900
