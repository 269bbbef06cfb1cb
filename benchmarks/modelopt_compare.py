"""NVIDIA ModelOpt (0.47, FastNAS) side by side with hwnas on the zoo: constraint-check time per candidate,
constraint violations of the returned subnets, and pruned accuracy at the same FLOPs budget.

ModelOpt is not a dependency of hwnas: the script makes its own venv for it (``--venv``, default
``/tmp/hwnas-modelopt-venv``: ``python -m venv --system-site-packages`` plus ``pip install
nvidia-modelopt==0.47.* huggingface_hub torchprofile==0.0.4``) and runs ModelOpt's parts there in a
subprocess (``--worker``), with this repository first on ``PYTHONPATH`` so both sides build the same zoo
models. hwnas's parts run in the calling Python. Everything is CPU, 1 thread.

Parts (``--parts``, default all):

- ``check``: per model at ``--size`` (224): ModelOpt's ``mtn.convert(model, "fastnas")`` and the median time of
  ``ConstraintsFunc(model, {"flops": "60%"}, x)()`` over ``--candidates`` random subnets (it profiles the
  subnet, a trace per candidate); hwnas's median time of ``FlopsProfiler.profile(sample)`` over 1,000 random
  samples of ``hwnas.convert(model, x, "fastnas")``. Ratio = ModelOpt / hwnas.
- ``violate``: per model and seed (``--seeds``, at ``--violate-size``): ``mtp.prune`` and ``hwnas.prune`` with
  ``{"flops": "60%"}`` and a cheap seeded score; the returned model's FLOPs by fvcore over the original's.
- ``accuracy``: sklearn's digits upscaled to ``--acc-size`` px, 3 channels; a zoo ``resnet18`` trained
  ``--epochs`` epochs (the same weights for both), pruned to ``{"flops": "60%"}`` by each with validation
  accuracy as ``score_func``, fine-tuned ``--ft-epochs`` epochs identically, test accuracy; ``--acc-seeds``.

Writes ``benchmarks/results/modelopt_compare_<part>.csv`` (one row per model/seed, with the host load).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
from _common import RESULTS, fvcore_count, pin_threads, write_table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from hwnas import zoo  # noqa: E402

MODELS = ["resnet50", "mobilenet_v2", "efficientnet_b0", "densenet121"]
PIP = ["nvidia-modelopt==0.47.*", "huggingface_hub", "torchprofile==0.0.4"]


# ----------------------------------------------------------------------------------------------- shared
def make(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return zoo.create(name, num_classes=1000 if name != "resnet18" else 10).eval()


def digits(size: int, seed: int):
    """sklearn's digits as (train, val, test) batches of 3 x size x size images (a seeded split)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32)[:, None] / 16.0
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).repeat(1, 3, 1, 1)
    x = (x - 0.5) / 0.5
    y = torch.tensor(d.target)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    parts = order[:1200], order[1200:1500], order[1500:]

    def batches(idx, bs=64):
        return [(x[idx[i:i + bs]], y[idx[i:i + bs]]) for i in range(0, len(idx), bs)]

    return tuple(batches(p) for p in parts)


@torch.no_grad()
def accuracy(model, loader) -> float:
    model.eval()
    return sum(int((model(a).argmax(1) == b).sum()) for a, b in loader) / sum(len(b) for _, b in loader)


def train(model, loader, epochs: int, lr: float, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    steps = max(1, epochs * len(loader))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    model.train()
    for _ in range(epochs):
        for a, b in loader:
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(a), b).backward()
            opt.step()
            sched.step()
    return model.eval()


def cheap_score(seed: int):
    """A seeded score that needs no data: the constraint check, not the ranking, is under test."""
    import random

    rng = random.Random(seed)
    return lambda model: rng.random()


# ------------------------------------------------------------------------------------------- ModelOpt side
def mo_check(name: str, size: int, n: int) -> dict:
    import modelopt.torch.nas as mtn
    from modelopt.torch.nas.algorithms import ConstraintsFunc

    model, x = make(name), torch.randn(1, 3, size, size)
    t0 = time.perf_counter()
    try:
        model = mtn.convert(model, mode="fastnas")
    except Exception as e:  # reported in the table
        return {"converts": f"fails: {type(e).__name__}: {str(e).splitlines()[0][:60]}"}
    convert_s = time.perf_counter() - t0
    check = ConstraintsFunc(model, {"flops": "60%"}, x)
    times = []
    for _ in range(n):
        mtn.sample(model)
        t0 = time.perf_counter()
        check()
        times.append(time.perf_counter() - t0)
    return {"converts": "yes", "convert_s": convert_s, "check_ms": statistics.median(times) * 1e3}


def mo_violate(name: str, size: int, seed: int) -> dict:
    import modelopt.torch.prune as mtp

    torch.manual_seed(seed)
    x = torch.randn(1, 3, size, size)
    base = fvcore_count(make(name), x)
    data = [(torch.randn(4, 3, size, size), None)]
    t0 = time.perf_counter()
    try:
        pruned, _ = mtp.prune(make(name), "fastnas", {"flops": "60%"}, x,
                              {"data_loader": data, "score_func": cheap_score(seed), "max_iter_data_loader": 1,
                               "checkpoint": os.path.join(tempfile.mkdtemp(), "ck.pth")})
    except Exception as e:  # reported in the table
        return {"ratio": float("nan"), "error": f"{type(e).__name__}: {str(e).splitlines()[0][:80]}"}
    return {"ratio": fvcore_count(pruned, x) / base, "s": time.perf_counter() - t0}


def mo_accuracy(state_path: str, size: int, seed: int, ft_epochs: int) -> dict:
    import modelopt.torch.prune as mtp

    tr, va, te = digits(size, seed)
    model = make("resnet18")
    model.load_state_dict(torch.load(state_path, weights_only=True))
    x = torch.randn(1, 3, size, size)
    t0 = time.perf_counter()
    pruned, _ = mtp.prune(model, "fastnas", {"flops": "60%"}, x,
                          {"data_loader": tr, "score_func": lambda m: accuracy(m, va), "max_iter_data_loader": 4,
                           "checkpoint": os.path.join(tempfile.mkdtemp(), "ck.pth")})
    prune_s = time.perf_counter() - t0
    ratio = fvcore_count(pruned, x) / fvcore_count(make("resnet18"), x)
    before = accuracy(pruned, te)
    train(pruned, tr, ft_epochs, 0.01, seed)
    return {"ratio": ratio, "acc_pruned": before, "acc_ft": accuracy(pruned, te), "prune_s": prune_s}


def worker(args) -> None:
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    pin_threads(1)
    job = json.loads(args.worker)
    fn = {"check": mo_check, "violate": mo_violate, "accuracy": mo_accuracy}[job.pop("part")]
    with open(job.pop("out"), "w") as f:
        json.dump(fn(**job), f)


def ensure_venv(venv: Path) -> Path:
    py = venv / "bin" / "python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", *PIP], check=True)
    return py


def run_modelopt(py: Path, part: str, **job) -> dict:
    fd, out = tempfile.mkstemp(suffix=".json")
    os.close(fd)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([str(py), __file__, "--worker", json.dumps({"part": part, "out": out, **job})], env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1][:120] if proc.stderr.strip() else f"rc {proc.returncode}"}
    with open(out) as f:
        return json.load(f)


# ----------------------------------------------------------------------------------------------- hwnas side
def hw_check(name: str, size: int) -> dict:
    import numpy as np

    import hwnas

    model, x = make(name), torch.randn(1, 3, size, size)
    t0 = time.perf_counter()
    space = hwnas.convert(model, x, "fastnas")
    convert_s = time.perf_counter() - t0
    flops = hwnas.FlopsProfiler(space, x)
    rng = np.random.default_rng(0)
    samples = [space.random_sample(rng) for _ in range(1000)]
    t0 = time.perf_counter()
    for s in samples:
        flops.profile(s)
    return {"convert_s": convert_s, "check_us": (time.perf_counter() - t0) / len(samples) * 1e6}


def hw_violate(name: str, size: int, seed: int) -> dict:
    import hwnas

    torch.manual_seed(seed)
    x = torch.randn(1, 3, size, size)
    base = fvcore_count(make(name), x)
    t0 = time.perf_counter()
    pruned = hwnas.prune(make(name), x, {"flops": "60%"}, [(torch.randn(4, 3, size, size), None)],
                         score_func=cheap_score(seed), max_trials=20, seed=seed, calib_batches=1, progress=False)
    return {"ratio": fvcore_count(pruned, x) / base, "s": time.perf_counter() - t0}


def hw_accuracy(state_path: str, size: int, seed: int, ft_epochs: int) -> dict:
    import hwnas

    tr, va, te = digits(size, seed)
    model = make("resnet18")
    model.load_state_dict(torch.load(state_path, weights_only=True))
    x = torch.randn(1, 3, size, size)
    t0 = time.perf_counter()
    pruned = hwnas.prune(model, x, {"flops": "60%"}, tr, score_func=lambda m: accuracy(m, va), max_trials=50,
                         seed=seed, progress=False)
    prune_s = time.perf_counter() - t0
    ratio = fvcore_count(pruned, x) / fvcore_count(make("resnet18"), x)
    before = accuracy(pruned, te)
    train(pruned, tr, ft_epochs, 0.01, seed)
    return {"ratio": ratio, "acc_pruned": before, "acc_ft": accuracy(pruned, te), "prune_s": prune_s}


def load() -> str:
    return f"{os.getloadavg()[0]:.1f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--parts", default="check,violate,accuracy")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--size", type=int, default=224, help="input resolution of the check part")
    ap.add_argument("--candidates", type=int, default=5, help="random subnets timed per model (ModelOpt)")
    ap.add_argument("--seeds", type=int, default=20, help="seeds of the violate part")
    ap.add_argument("--violate-size", type=int, default=224)
    ap.add_argument("--acc-size", type=int, default=16)
    ap.add_argument("--acc-seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--ft-epochs", type=int, default=1)
    ap.add_argument("--venv", default="/tmp/hwnas-modelopt-venv")
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return
    pin_threads(1)
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    py = ensure_venv(Path(args.venv))
    models = args.models.split(",")
    parts = args.parts.split(",")
    if "check" in parts:
        rows = []
        for m in models:
            mo, hw = run_modelopt(py, "check", name=m, size=args.size, n=args.candidates), hw_check(m, args.size)
            ratio = mo["check_ms"] * 1e3 / hw["check_us"] if "check_ms" in mo else float("nan")
            rows.append((m, args.size, mo.get("converts", mo.get("error")), round(mo.get("check_ms", float("nan")), 1),
                         round(hw["check_us"], 2), f"{ratio:.3g}", round(hw["convert_s"], 2), load()))
            print(rows[-1], flush=True)
        write_table("modelopt_compare_check", ["model", "size", "modelopt converts", "modelopt check ms/cand",
                                               "hwnas check us/cand", "modelopt/hwnas", "hwnas convert s", "load"],
                    rows)
    if "violate" in parts:
        rows = []
        for m in models:
            for seed in range(args.seeds):
                mo = run_modelopt(py, "violate", name=m, size=args.violate_size, seed=seed)
                hw = hw_violate(m, args.violate_size, seed)
                rows.append((m, args.violate_size, seed, f"{mo.get('ratio', float('nan')):.4f}",
                             mo.get("ratio", 1) > 0.6 + 1e-9, mo.get("error", ""), f"{hw['ratio']:.4f}",
                             hw["ratio"] > 0.6 + 1e-9, load()))
                print(rows[-1], flush=True)
                write_table("modelopt_compare_violate", ["model", "size", "seed", "modelopt flops/base",
                                                         "modelopt violates", "modelopt error", "hwnas flops/base",
                                                         "hwnas violates", "load"], rows)
    if "accuracy" in parts:
        rows = []
        for seed in range(args.acc_seeds):
            tr, va, te = digits(args.acc_size, seed)
            base = train(make("resnet18"), tr, args.epochs, 0.05, seed)
            fd, state = tempfile.mkstemp(suffix=".pt")
            os.close(fd)
            torch.save(base.state_dict(), state)
            job = {"state_path": state, "size": args.acc_size, "seed": seed, "ft_epochs": args.ft_epochs}
            mo, hw = run_modelopt(py, "accuracy", **job), hw_accuracy(**job)
            rows.append((seed, args.acc_size, f"{accuracy(base, te):.4f}",
                         f"{mo.get('ratio', float('nan')):.4f}", f"{mo.get('acc_pruned', float('nan')):.4f}",
                         f"{mo.get('acc_ft', float('nan')):.4f}", f"{hw['ratio']:.4f}", f"{hw['acc_pruned']:.4f}",
                         f"{hw['acc_ft']:.4f}", mo.get("error", ""), load()))
            print(rows[-1], flush=True)
            write_table("modelopt_compare_accuracy", ["seed", "size", "base acc", "modelopt flops/base",
                                                      "modelopt acc pruned", "modelopt acc ft", "hwnas flops/base",
                                                      "hwnas acc pruned", "hwnas acc ft", "modelopt error", "load"],
                        rows)
    print(f"results in {RESULTS}")


if __name__ == "__main__":
    main()
