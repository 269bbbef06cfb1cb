"""Shared helpers for the tests: independent references (fvcore, the exported subnet) and user spaces."""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import hwnas.nn as hnn


def fvcore_flops(model: nn.Module, x) -> int:
    """fvcore's FLOP count of ``model`` in eval mode (with grad enabled, so attention takes its general path)."""
    from fvcore.nn import FlopCountAnalysis

    logging.getLogger("fvcore").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fca = FlopCountAnalysis(model.eval(), x)
        fca.unsupported_ops_warnings(False)
        fca.uncalled_modules_warnings(False)
        return fca.total()


ROOT = Path(__file__).resolve().parents[1]
#: the hwnas package under test: this tree's, or an installed wheel's when the tests run against an install
PACKAGE = Path(importlib.util.find_spec("hwnas").origin).resolve().parent


def cli_env() -> dict:
    """The environment of a CLI subprocess: one torch thread, and, when the tests run this tree, the tree first on
    PYTHONPATH (hwnas is installed editable from the main checkout, so a worktree's tests must put their own tree
    first). Against an installed hwnas (PACKAGE outside the tree) the subprocesses run that install too."""
    env = dict(os.environ)
    if PACKAGE == ROOT / "hwnas":
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


@functools.cache
def hwnas_command() -> tuple[str, ...]:
    """How the tests run the command line: the ``hwnas`` entry point when it runs the package under test
    (:data:`PACKAGE`), else ``python -m hwnas.cli``. The entry point is looked for next to this Python first (a
    virtual environment's ``bin``), then on PATH; which package it runs is read from the traceback of ``--debug``
    on a bad space name, run from a temporary folder."""
    here = Path(sys.executable).parent / "hwnas"
    for exe in filter(None, dict.fromkeys([str(here) if here.is_file() else None, shutil.which("hwnas")])):
        proc = subprocess.run([exe, "--debug", "profile", "--space", "no-such-space"], env=cli_env(),
                              cwd=tempfile.gettempdir(), capture_output=True, text=True, timeout=600)
        if f'File "{PACKAGE / "cli.py"}"' in proc.stderr:
            return (exe,)
    return (sys.executable, "-m", "hwnas.cli")


def run_hwnas(*args, cwd, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``hwnas ARGS...`` (see :func:`hwnas_command`) in ``cwd``; the completed process, output as text."""
    return subprocess.run([*hwnas_command(), *map(str, args)], cwd=cwd, env=cli_env(), capture_output=True,
                          text=True, timeout=timeout)


@functools.cache
def smallest_digits_flops() -> int:
    """The smallest subnet's FLOPs of the digits space, from fvcore: every cost grows with width, depth, kernel and
    expansion, so the smallest subnet has the smallest stem and stage widths, one block per stage, and in each block
    the cheaper of a plain 3x3 conv and the inverted residual with kernel 3 and expansion 2 (4 candidates)."""
    import hwnas

    space = hwnas.spaces.create("digits")
    base = {lab: c[0] for lab, c in space.choices().items()}  # choices are listed smallest first
    assert base["stem.width"] == 8 and base["s1.depth"] == base["s2.depth"] == 1
    candidates = [{**base, "s1.b1.op": a, "s2.b1.op": b, **{f"s{i}.b1.{k}": v for i in (1, 2)
                                                           for k, v in (("kernel", 3), ("expand", 2))}}
                  for a in ("mbconv", "conv") for b in ("mbconv", "conv")]
    return min(fvcore_flops(hwnas.export(space, c), torch.zeros(1, 1, 8, 8)) for c in candidates)


def num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def retry_once(test):
    """Run a measuring test a second time if an assertion fails: one slow phase of a shared host can spoil one
    measurement, so only a failure of two fresh measurements in a row fails the test."""

    @functools.wraps(test)
    def run(*args, **kwargs):
        try:
            return test(*args, **kwargs)
        except AssertionError as first:
            warnings.warn(f"{test.__name__}: measuring again once after {first!r}", UserWarning, stacklevel=2)
            return test(*args, **kwargs)

    return run


def rel_spread(rec) -> float:
    """A measurement's own spread: the interquartile range of its timed runs over their median (0.02 on a quiet
    machine, 0.3 and more with other work running). Tolerances between measured figures scale with it."""
    times = np.asarray(rec.times_ms, dtype=float).ravel()  # NaN where a steady turn ended early
    q25, q50, q75 = np.nanpercentile(times, [25, 50, 75])
    return float((q75 - q25) / q50)


def check_paired(rec, within: float = 2.0) -> None:
    """A paired measurement record (hwnas.hw.measure) has what it promises, without restating how it is computed:
    one ratio per timed run, one more reference run than timed runs in each turn (a reference run on either side),
    all finite and positive; and its paired time roughly agrees with the plain median of the same runs. Paired
    and plain medians only roughly agree on a shared host (another job slows a model and its reference unalike: a
    tiny subnet's were 38% apart in one CI run), so that is a sanity bound of ``within`` times. The paired level
    itself is checked against an independent plain measurement in test_hw_measure."""
    assert rec.ratios.shape == rec.times_ms.shape
    assert rec.reference_times_ms.shape == (rec.times_ms.shape[0], rec.times_ms.shape[1] + 1)
    for values in (rec.ratios, rec.reference_times_ms, rec.times_ms):
        assert np.all(np.isfinite(values)) and np.all(values > 0)
    assert 1 / within < rec.paired_ms / rec.median_ms < within


class UserCNN(hnn.Space):
    """A space written by a user: shared labels, LayerChoice, Repeat, resolution, functional ops, concat."""

    def __init__(self):
        super().__init__()
        self.resolution = hnn.Choice([16, 24, 32], label="res")
        w1 = hnn.Choice([8, 12, 16], label="w1")
        self.stem = hnn.Conv2d(3, w1, hnn.Choice([3, 5], label="stem.k"), stride=2, bias=True)
        self.bn = hnn.BatchNorm2d(w1)
        self.dw = hnn.Conv2d(w1, w1, 3, groups=w1)
        self.branch = hnn.LayerChoice({"conv": nn.Sequential(hnn.Conv2d(w1, w1, 1), nn.ReLU6()),
                                       "pool": nn.MaxPool2d(3, 1, 1), "id": nn.Identity()}, label="branch")
        self.blocks = hnn.Repeat(lambda i: nn.Sequential(hnn.Conv2d(2 * w1, 2 * w1, hnn.Choice([1, 3], label=f"b{i}.k")),
                                                         hnn.BatchNorm2d(2 * w1), nn.Hardswish()),
                                 depth=hnn.Choice([0, 1, 2], label="depth"))
        self.up = nn.ConvTranspose2d(1, 2, 2, stride=2)
        self.pool = nn.AvgPool2d(2, ceil_mode=True)
        self.head = hnn.Linear(2 * w1, hnn.Choice([10, 20], label="hidden"))
        self.fc = hnn.Linear(hnn.Choice([10, 20], label="hidden"), 5)
        self.gamma = nn.Parameter(torch.ones(1))

    def forward(self, x):
        x = F.relu(self.bn(self.stem(x)))
        x = torch.cat([self.dw(x), self.branch(x)], dim=1)
        x = self.blocks(x) * self.gamma
        side = self.up(x[:, :1].mean(1, keepdim=True))
        x = self.pool(x) + F.adaptive_avg_pool2d(side, 1).sum()
        x = x.view(x.size(0), x.size(1), -1).mean(-1)
        return self.fc(torch.sigmoid(self.head(x)))


class UserTransformer(hnn.Space):
    """Tokens with LayerNorm, multi-head attention (with and without weights), a searchable MLP width."""

    def __init__(self, dim: int = 32):
        super().__init__()
        self.embed = nn.Conv1d(4, dim, 3, padding=1)
        self.norm = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, 4, batch_first=True)
        self.attn2 = nn.MultiheadAttention(dim, 2)
        mlp = hnn.Choice([32, 64, 96], label="mlp")
        self.fc1 = hnn.Linear(dim, mlp)
        self.act = hnn.LayerChoice([nn.GELU(), nn.SiLU(), nn.Tanh()], label="act")
        self.fc2 = hnn.Linear(mlp, dim)
        self.gn = nn.GroupNorm(4, dim)
        self.out = nn.Linear(dim, 3)

    def forward(self, x):  # x: (N, 4, L)
        t = self.embed(x).transpose(1, 2)
        t = t + self.attn(self.norm(t), t, t, need_weights=False)[0]
        a, w = self.attn2(t.permute(1, 0, 2), t.permute(1, 0, 2), t.permute(1, 0, 2))
        t = t + a.permute(1, 0, 2) + torch.matmul(w, t)
        t = t + self.fc2(self.act(self.fc1(t)))
        t = self.gn(t.transpose(1, 2))
        return self.out(F.softmax(t, dim=1).flatten(2).mean(2))


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Pin torch to one thread: on a shared 2-core machine two threads can slow training tests 30x."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def plain_steady_ms(paths, device: str = "cpu-ort-1t", turn_ms: float = 30.0, rounds: int = 3,
                    seed: int = 0) -> np.ndarray:
    """An independent plain steady-state measurement (not hwnas.hw.measure): each ONNX file opened with ONNX
    Runtime directly (the device's thread settings), its input and output bound once; in each round every model in
    a shuffled order runs 20 untimed runs, then consecutive timed runs for ``turn_ms``; a model's time is the median
    of all its timed runs, in ms."""
    import time

    import onnxruntime as ort

    from hwnas.hw import get_device

    dev = get_device(device)
    rng = np.random.default_rng(seed)
    bound = []
    for p in paths:
        sess = ort.InferenceSession(str(p), sess_options=dev.session_options(), providers=dev.providers())
        inp = sess.get_inputs()[0]
        x = rng.uniform(0.1, 1.0, size=inp.shape).astype(np.float32)
        binding = sess.io_binding()
        binding.bind_cpu_input(inp.name, x)
        for out in sess.get_outputs():
            binding.bind_output(out.name, "cpu")
        sess.run_with_iobinding(binding)
        bound.append((sess, binding, x))
    times = [[] for _ in paths]
    for _ in range(rounds):
        for m in rng.permutation(len(paths)):
            sess, binding, _ = bound[m]
            for _ in range(20):
                sess.run_with_iobinding(binding)
            end = time.perf_counter() + turn_ms / 1000
            while True:
                t0 = time.perf_counter()
                sess.run_with_iobinding(binding)
                t1 = time.perf_counter()
                times[m].append(t1 - t0)
                if t1 > end:
                    break
    return np.array([1000 * float(np.median(t)) for t in times])
