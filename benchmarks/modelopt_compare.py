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
  subnet, a trace per candidate); hwnas's mean time of ``FlopsProfiler.profile(sample)`` over 1,000 random
  samples of ``hwnas.convert(model, x, "fastnas")``. Ratio = ModelOpt / hwnas.
- ``violate``: per seed (``--seeds``, at ``--violate-size``) and model: ``mtp.prune`` and ``hwnas.prune`` with
  ``{"flops": "60%"}`` and a cheap seeded score (the constraint, not the ranking, is under test); the returned
  model's FLOPs by fvcore over the original's. For hwnas also every scored candidate's FLOPs (its search
  history) and whether its profiled FLOPs of the returned subnet equal fvcore's count.
- ``accuracy``: sklearn's digits upscaled to ``--acc-size`` px, 3 channels; a zoo ``resnet18`` trained
  ``--epochs`` epochs (the same weights for both), pruned to ``{"flops": "60%"}`` by each with validation
  accuracy as ``score_func``, fine-tuned ``--ft-epochs`` epochs identically, test accuracy; ``--acc-seeds``.

Writes ``benchmarks/results/modelopt_compare.csv`` (``--out``), one row per part, model, size, seed, side and
metric, with the host load and the run (UTC time and commit). A case run again replaces its rows and the
others stay, so parts and seeds can run separately (even in parallel processes); the summary printed at the
end covers the whole file (``--summary-only`` prints it alone). ``--sides hwnas`` skips ModelOpt.
"""

from __future__ import annotations

import argparse
import csv
import fcntl
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
import zlib
from pathlib import Path
from typing import Any

import torch
from _common import RESULTS, fvcore_count, pin_threads

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from hwnas import zoo  # noqa: E402

MODELS = ["resnet50", "mobilenet_v2", "efficientnet_b0", "densenet121"]
BUDGET = 0.6  # {"flops": "60%"} in every part
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


_BASE: dict[tuple[str, int], float] = {}


def base_flops(name: str, size: int) -> float:
    """fvcore's FLOPs of the unpruned model (counted once per model and size)."""
    if (name, size) not in _BASE:
        _BASE[(name, size)] = fvcore_count(make(name), torch.randn(1, 3, size, size))
    return _BASE[(name, size)]


def hw_violate(name: str, size: int, seed: int) -> dict:
    """hwnas.prune with a seeded random score; the returned model counted by fvcore, every scored candidate's
    FLOPs read from the search history. No batch-norm recalibration: the score does not look at the outputs."""
    import hwnas
    from hwnas.search import read_history_csv

    x = torch.randn(1, 3, size, size)
    base = base_flops(name, size)
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        pruned = hwnas.prune(make(name), x, {"flops": "60%"}, None, score_func=cheap_score(seed), max_trials=20,
                             seed=seed, progress=False, save_dir=out)
        seconds = time.perf_counter() - t0
        trials = list(read_history_csv(Path(out) / "history.csv"))
    flops = fvcore_count(pruned, x)
    return {"ratio": flops / base, "s": seconds, "trials": len(trials),
            "trials_over": sum(t.metrics["flops"] > BUDGET * base * (1 + 1e-9) for t in trials),
            "max_trial_ratio": max(t.metrics["flops"] for t in trials) / base,
            "profiled_eq_fvcore": int(abs(pruned.hwnas_origin["metrics"]["flops"] - flops) <= 1e-6 * flops)}


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


# ------------------------------------------------------------------------------------------- results file
COLUMNS = ["part", "model", "size", "seed", "side", "metric", "value", "load", "run"]


def _key(row: dict) -> tuple:
    return row["part"], row["model"], str(row["size"]), str(row["seed"]), row["side"]


def read_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def store(path: Path, rows: list[dict]) -> None:
    """Put ``rows`` into the results file: they replace the rows of the same part, model, size, seed and side
    (an earlier run of that case); other rows stay. Locked, so parts run in parallel processes may share it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock_path = Path(tempfile.gettempdir()) / f"modelopt_compare-{zlib.crc32(str(path.resolve()).encode())}.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        keys = {_key(r) for r in rows}
        kept = [r for r in read_rows(path) if _key(r) not in keys]
        order = {"check": 0, "violate": 1, "accuracy": 2}
        merged = sorted(kept + [{c: r.get(c, "") for c in COLUMNS} for r in rows],
                        key=lambda r: (order.get(r["part"], 9), r["model"], int(r["size"] or 0),
                                       int(r["seed"]) if str(r["seed"]).isdigit() else -1, r["side"]))
        tmp = path.with_suffix(".tmp")
        with tmp.open("w", newline="") as f:
            w = csv.DictWriter(f, COLUMNS, lineterminator="\n")
            w.writeheader()
            w.writerows(merged)
        os.replace(tmp, path)


def record(path: Path, part: str, model: str, size: int, seed: Any, side: str, values: dict, run: str) -> None:
    """One case's figures (``metric -> value``; an ``error`` is kept as text) as rows of the results file."""
    load = f"{os.getloadavg()[0]:.1f}"
    rows = [{"part": part, "model": model, "size": size, "seed": seed, "side": side, "metric": k,
             "value": f"{v:.6g}" if isinstance(v, float) else v, "load": load, "run": run} for k, v in values.items()]
    store(path, rows)
    print(f"{part:8s} {model:16s} {size:4d} seed {seed!s:3s} {side:8s} "
          + ", ".join(f"{r['metric']}={r['value']}" for r in rows) + f"  (load {load})", flush=True)


def summary(path: Path) -> str:
    """The figures of the whole results file, per part (what the README quotes)."""
    rows = read_rows(path)
    table: dict[tuple, dict[str, str]] = {}
    for r in rows:
        table.setdefault(_key(r), {})[r["metric"]] = r["value"]
    lines = []

    def num(d: dict, k: str) -> float:
        try:
            return float(d.get(k, "nan"))
        except ValueError:
            return float("nan")

    for model in sorted({k[1] for k in table if k[0] == "check"}):
        mo = next((v for k, v in table.items() if k[:2] == ("check", model) and k[4] == "modelopt"), {})
        hw = next((v for k, v in table.items() if k[:2] == ("check", model) and k[4] == "hwnas"), {})
        ratio = num(mo, "check_ms") * 1e3 / num(hw, "check_us")
        lines.append(f"check    {model:16s} modelopt " + (mo.get("error") or f"{num(mo, 'check_ms'):.1f} ms")
                     + f" / hwnas {num(hw, 'check_us'):.1f} us per candidate"
                     + (f": {ratio:.3g}x" if ratio == ratio else ""))
    for model in sorted({k[1] for k in table if k[0] == "violate"}):
        for side in ("modelopt", "hwnas"):
            runs = [v for k, v in table.items() if k[:2] == ("violate", model) and k[4] == side]
            ok = [num(v, "flops_ratio") for v in runs if "flops_ratio" in v]
            if not runs:
                continue
            errors = len(runs) - len(ok)
            text = (f"violate  {model:16s} {side:8s} {len(ok)} seeds: flops/base {min(ok):.3f}-{max(ok):.3f}, "
                    f"{sum(r > BUDGET + 1e-9 for r in ok)} over {BUDGET:.0%}" if ok else
                    f"violate  {model:16s} {side:8s} 0 seeds")
            if side == "hwnas" and ok:
                text += (f"; scored candidates {sum(int(num(v, 'trials')) for v in runs)}, over the bound "
                         f"{sum(int(num(v, 'trials_over')) for v in runs)}; profiled == fvcore in "
                         f"{sum(int(num(v, 'profiled_eq_fvcore')) for v in runs)} of {len(ok)}")
            lines.append(text + (f"; {errors} failed" if errors else ""))
    acc = sorted({k[3] for k in table if k[0] == "accuracy"}, key=int)
    diffs = []
    for seed in acc:
        mo = next((v for k, v in table.items() if k[0] == "accuracy" and k[3] == seed and k[4] == "modelopt"), {})
        hw = next((v for k, v in table.items() if k[0] == "accuracy" and k[3] == seed and k[4] == "hwnas"), {})
        diff = num(hw, "acc_ft") - num(mo, "acc_ft")
        if diff == diff:  # both sides ran
            diffs.append(diff)
        lines.append(f"accuracy seed {seed}: base {num(hw if 'base_acc' in hw else mo, 'base_acc'):.4f}; modelopt {num(mo, 'flops_ratio'):.3f} "
                     f"of the FLOPs, {num(mo, 'acc_pruned'):.4f} pruned, {num(mo, 'acc_ft'):.4f} fine-tuned"
                     + (f" ({mo['error']})" if "error" in mo else "")
                     + f"; hwnas {num(hw, 'flops_ratio'):.3f}, {num(hw, 'acc_pruned'):.4f}, {num(hw, 'acc_ft'):.4f}; "
                     f"hwnas - modelopt {diff * 100:+.2f} points")
    if diffs:
        lines.append(f"accuracy {len(diffs)} seeds with both sides: hwnas - modelopt after fine-tuning, mean "
                     f"{statistics.fmean(diffs) * 100:+.2f} points, worst {min(diffs) * 100:+.2f} (target >= -0.5)")
    return "\n".join(lines)


def guarded(fn, *args, **kwargs) -> dict:
    """``fn``'s figures, or its error as a figure (a failing case is a result, not the end of the run)."""
    try:
        return fn(*args, **kwargs)
    except Exception as e:  # reported in the results file
        import traceback

        traceback.print_exc()
        return {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"}


def seeds_arg(text: str) -> list[int]:
    """``"0-19"``, ``"1,2"`` or ``"0-2,5"`` as a list of seeds."""
    out: list[int] = []
    try:
        for part in text.split(","):
            lo, _, hi = part.partition("-")
            out += list(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds must look like '0-19' or '0,1,2', got {text!r}") from None
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--parts", default="check,violate,accuracy", help="comma-separated parts to run")
    ap.add_argument("--sides", default="modelopt,hwnas", help="run ModelOpt's side, hwnas's, or both")
    ap.add_argument("--models", default=",".join(MODELS), help="zoo models of the check and violate parts")
    ap.add_argument("--size", type=int, default=224, help="input resolution of the check part")
    ap.add_argument("--candidates", type=int, default=5, help="random subnets timed per model (ModelOpt)")
    ap.add_argument("--seeds", type=seeds_arg, default="0-19", help="seeds of the violate part")
    ap.add_argument("--violate-size", type=int, default=224, help="input resolution of the violate part")
    ap.add_argument("--acc-size", type=int, default=16, help="digits' resolution in the accuracy part")
    ap.add_argument("--acc-seeds", type=seeds_arg, default="0-2", help="seeds of the accuracy part")
    ap.add_argument("--epochs", type=int, default=4, help="training epochs of the model to prune")
    ap.add_argument("--ft-epochs", type=int, default=1, help="fine-tuning epochs after pruning")
    ap.add_argument("--venv", default="/tmp/hwnas-modelopt-venv", help="ModelOpt's venv (made if missing)")
    ap.add_argument("--out", type=Path, default=RESULTS / "modelopt_compare.csv",
                    help="results file; cases run again replace their rows (another path for scratch runs; "
                         "not for committed results)")
    ap.add_argument("--summary-only", action="store_true", help="print the summary of --out and exit")
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return
    if args.summary_only:
        print(summary(args.out))
        return
    pin_threads(1)
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    sides = args.sides.split(",")
    py = ensure_venv(Path(args.venv)) if "modelopt" in sides else None
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    run = f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime())} {commit}"
    models, parts = args.models.split(","), args.parts.split(",")

    def rec(part, model, size, seed, side, values):
        record(args.out, part, model, size, seed, side, values, run)

    if "check" in parts:
        for m in models:
            if "modelopt" in sides:
                mo = run_modelopt(py, "check", name=m, size=args.size, n=args.candidates)
                rec("check", m, args.size, "", "modelopt", {("error" if k == "converts" and v != "yes" else k): v
                                                            for k, v in mo.items() if k != "converts" or v != "yes"})
            if "hwnas" in sides:
                rec("check", m, args.size, "", "hwnas", hw_check(m, args.size))
    if "violate" in parts:
        for seed in args.seeds:  # seed-major: a run cut short covers every model alike
            for m in models:
                if "modelopt" in sides:
                    mo = run_modelopt(py, "violate", name=m, size=args.violate_size, seed=seed)
                    rec("violate", m, args.violate_size, seed, "modelopt",
                        {"flops_ratio" if k == "ratio" else k: v for k, v in mo.items()})
                if "hwnas" in sides:
                    hw = guarded(hw_violate, m, args.violate_size, seed)
                    rec("violate", m, args.violate_size, seed, "hwnas",
                        {"flops_ratio" if k == "ratio" else k: v for k, v in hw.items()})
    if "accuracy" in parts:
        for seed in args.acc_seeds:
            tr, va, te = digits(args.acc_size, seed)
            base = train(make("resnet18"), tr, args.epochs, 0.05, seed)
            base_acc = accuracy(base, te)
            with tempfile.TemporaryDirectory() as tmp:
                state = os.path.join(tmp, "base.pt")
                torch.save(base.state_dict(), state)
                job = {"state_path": state, "size": args.acc_size, "seed": seed, "ft_epochs": args.ft_epochs}
                for side in sides:
                    got = run_modelopt(py, "accuracy", **job) if side == "modelopt" else guarded(hw_accuracy, **job)
                    rec("accuracy", "resnet18", args.acc_size, seed, side,
                        {"base_acc": base_acc, **{"flops_ratio" if k == "ratio" else k: v for k, v in got.items()}})
    print("\n" + summary(args.out))
    print(f"\nresults in {args.out}")


if __name__ == "__main__":
    main()
