"""One-shot strategies on ``digits`` under a latency budget (issue 19's targets), and the mixed modes' cost.

For each strategy (DARTS, GDAS, ProxylessNAS, ENAS, SPOS + evolution) and seed: train with
``hwnas.search.train_oneshot`` under a latency penalty from the shipped 1-thread LUT and a filter at the budget
(60% of the largest subnet's LUT latency), recheck the chosen subnet's latency on the *exported* model (a new
``LatencyProfiler`` over its own graph, so the space's cost tables are not reused), fine-tune it, and take its
test accuracy. Every strategy gets the same weight-training epochs: the ones that learn an architecture spend
the first ``--warmup`` of them on weights only (uniform paths), as ProxylessNAS and FBNet do.

The penalty is a hinge (``nonlinear="positive"``) at 45% of the largest subnet's latency: the uniform
distribution's expected latency is 49% of it, so the penalty acts from the first step (a hinge at 50% would
not act until the accuracy term had raised the expected latency, and "falls while the penalty is on" would
say little). The strategies that learn a distribution derive their subnet from it as ENAS does: the most
probable sample and 16 samples drawn from the distribution, scored ``-penalty(val_loss)`` on the validation
data (SPOS's evolution: 40 trials with the same score). Per run it records whether the expected
latency under the architecture distribution fell while the penalty was on: on a 2-epoch moving average of the
values at the start and at the end of each epoch, every step that starts above the hinge must not rise (1e-6
ms tolerance); steps that start at or under it are free (the penalty is 0 there).

Then it times one training epoch of a 3-candidate ``LayerChoice`` supernet in each mixed mode, interleaved
over rounds (medians), relative to ``index``.

    python benchmarks/oneshot.py [--seeds 0 1 2] [--epochs 4] [--finetune-epochs 8] [--quick]

Writes benchmarks/results/oneshot.csv (one row per run), oneshot_modes.csv and oneshot.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import hwnas
import hwnas.nn as hnn
from hwnas.demo import load_digits_data
from hwnas.search import (
    DARTS,
    ENAS,
    ExpectationProfilerPenalty,
    GumbelDARTS,
    ProxylessNAS,
    RandomOneShot,
    RangeProfilerFilter,
    SampleProfilerPenalty,
    TemperatureSchedule,
    TensorBatches,
    evaluate_accuracy,
    finetune,
    train_oneshot,
)
from hwnas.search.oneshot_modes import mixed_state
from hwnas.search.strategies import profiler_range
from hwnas.space.mixed import set_mixed

RESULTS = Path(__file__).resolve().parent / "results"
X1 = torch.zeros(1, 1, 8, 8)
BUDGET = "60%"
PENALTY_AT = 0.45  # the hinge, as a share of the largest subnet's latency
DERIVE = 16  # samples from the learned distribution scored on validation data at the end (SPOS: 40 trials)


def strategies(lat, flt, epochs):
    at = f"{100 * PENALTY_AT:g}%"
    pen = ExpectationProfilerPenalty(lat, at, scale=2.0, nonlinear="positive")
    spen = SampleProfilerPenalty(lat, at, scale=2.0, nonlinear="positive")
    return {
        "DARTS": lambda: DARTS(pen, flt, arch_lr=0.05, derive_samples=DERIVE),
        "GDAS": lambda: GumbelDARTS(pen, flt, TemperatureSchedule(5.0, 0.5, epochs), arch_lr=0.05,
                                    derive_samples=DERIVE),
        "ProxylessNAS": lambda: ProxylessNAS(pen, flt, arch_lr=0.01, derive_samples=DERIVE),
        "ENAS": lambda: ENAS(spen, flt, derive_samples=DERIVE),
        "SPOS": lambda: RandomOneShot(spen, flt, search_trials=40),
    }


def falls_while_on(values: list[float], hinge: float, window: int = 2, tol: float = 1e-6) -> bool:
    """Whether the moving average of ``values`` never rises over a step that starts above ``hinge``."""
    v = np.asarray(values, dtype=float)
    if len(v) < 2 or not np.isfinite(v).all():
        return False
    smooth = np.convolve(v, np.ones(window) / window, mode="valid") if len(v) >= window else v
    on = smooth[:-1] > hinge
    return bool(np.all(np.diff(smooth)[on] <= tol))


def run_strategy(name: str, seed: int, args) -> dict:
    torch.manual_seed(seed)
    d = load_digits_data()
    space = hwnas.spaces.create("digits")
    lat = hwnas.LatencyProfiler(space, X1, lut="digits")
    largest = profiler_range(lat)[2]
    budget_ms = 0.6 * largest
    flt = RangeProfilerFilter(lat, max=BUDGET)
    train = TensorBatches(d.x_train, d.y_train, batch_size=64, shuffle=True, seed=seed)
    val = TensorBatches(d.x_val, d.y_val, batch_size=64, shuffle=True, seed=seed + 1)
    test = TensorBatches(d.x_test, d.y_test, batch_size=256)
    warmup = 0 if name in ("SPOS", "DARTS") else args.warmup
    strategy = strategies(lat, flt, args.epochs - warmup)[name]()
    t0 = time.perf_counter()
    result = train_oneshot(space, strategy, train, val, epochs=args.epochs - warmup, warmup_epochs=warmup, lr=0.08,
                           seed=seed, progress=False)
    search_s = time.perf_counter() - t0
    subnet = result.export()
    independent = hwnas.LatencyProfiler(subnet, X1, lut="digits").profile({})
    torch.manual_seed(seed)
    tuned = finetune(subnet, train, epochs=args.finetune_epochs, lr=0.02, progress=False)
    acc = evaluate_accuracy(tuned.eval(), test)
    costs = [h.expected_cost for h in result.history[warmup:]]
    start = [float(lat.expectation({k: torch.full((len(v),), 1 / len(v)) for k, v in space.choices().items()}))]
    hinge = PENALTY_AT * largest
    return {
        "strategy": name, "seed": seed, "epochs": args.epochs, "warmup": warmup, "search_s": round(search_s, 1),
        "epoch_s": round(statistics.median(h.seconds for h in result.history), 2),
        "budget_ms": budget_ms, "lut_latency_ms": independent, "space_lut_ms": lat.profile(result.sample),
        "within_budget": independent <= budget_ms * (1 + 1e-9), "test_acc": acc,
        "penalty_hinge_ms": hinge, "expected_ms_first": costs[0], "expected_ms_last": costs[-1],
        "expected_monotone": falls_while_on(start + costs, hinge) if name != "SPOS" else "",
        "expected_ms_per_epoch": json.dumps([round(c, 6) for c in start + costs]),
        "sample": json.dumps(result.sample),
    }


class ThreeOps(hnn.Space):
    """A supernet with one 3-candidate LayerChoice between a fixed stem and head."""

    def __init__(self, width: int = 32):
        super().__init__()
        self.stem = hnn.ConvBNAct(3, width, 3)
        self.op = hnn.LayerChoice([hnn.ConvBNAct(width, width, 3), hnn.ConvBNAct(width, width, 5),
                                   hnn.ConvBNAct(width, width, 1)], label="op")
        self.fc = hnn.Linear(width, 10)

    def forward(self, x):
        return self.fc(self.op(self.stem(x)).mean((2, 3)))


def mode_costs(rounds: int, batches: int) -> list[dict]:
    """Median seconds of one epoch (``batches`` forward+backward steps) per mode, interleaved over rounds."""
    torch.manual_seed(0)
    space = ThreeOps().train()
    choices = space.choices()
    alpha = {lab: torch.zeros(len(v), requires_grad=True) for lab, v in choices.items()}
    x, y = torch.randn(64, 3, 16, 16), torch.randint(0, 10, (64,))
    rng = np.random.default_rng(0)
    modes = {"index": ("index", True, False), "weighted_sum": ("weighted_sum", True, False),
             "gumbel_hard": ("gumbel", True, False), "gumbel_hard_full": ("gumbel", True, True),
             "gumbel_soft": ("gumbel", False, False), "binary_gate": ("binary_gate", True, False)}
    times = {m: [] for m in modes}

    def epoch(mode, hard, full):
        for _ in range(batches):
            set_mixed(space, mixed_state(mode, choices, alpha, rng, temperature=1.0, hard=hard, full=full))
            space.zero_grad(set_to_none=True)
            F.cross_entropy(space(x), y).backward()

    for spec in modes.values():  # warm-up
        epoch(*spec)
    for _ in range(rounds):
        for m, spec in modes.items():
            t = time.perf_counter()
            epoch(*spec)
            times[m].append(time.perf_counter() - t)
    base = statistics.median(times["index"])
    limits = {"weighted_sum": 3.5, "gumbel_hard": 2.2, "gumbel_hard_full": 2.2, "binary_gate": 2.2}
    return [{"mode": m, "epoch_s": statistics.median(v), "ratio_vs_index": statistics.median(v) / base,
             "target": limits.get(m, ""), "meets": (statistics.median(v) / base <= limits[m]) if m in limits else ""}
            for m, v in times.items()]


def write(rows: list[dict], path: Path) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def read_rows(path: Path) -> list[dict]:
    """Rows of an earlier run's CSV, with the numbers and flags the summary needs."""
    if not path.exists():
        return []
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        for k in ("test_acc", "epoch_s", "lut_latency_ms", "budget_ms"):
            r[k] = float(r[k])
        r["within_budget"] = r["within_budget"] == "True"
        r["expected_monotone"] = {"True": True, "False": False}.get(r["expected_monotone"], "")
    return rows


def markdown(rows: list[dict], modes: list[dict], load: str, args) -> str:
    lines = ["# One-shot strategies on digits (benchmarks/oneshot.py)", "",
             f"Load average at the start: {load}. Seeds {args.seeds}, {args.epochs} weight-training epochs (the first "
             f"{args.warmup} weights only for GDAS, ProxylessNAS and ENAS), {args.finetune_epochs} fine-tuning epochs, "
             f"budget {BUDGET} of the largest subnet's LUT latency (digits_cpu-ort-1t), latency penalty a hinge at "
             f"{100 * PENALTY_AT:g}%. Latency rechecked on the exported subnet. Accuracy: medians over the seeds "
             "(mean in brackets).", "",
             "| strategy | within budget | test acc, median (mean) | vs SPOS (points, medians) | expected latency "
             "falls while the penalty is on | epoch s (median) |", "|---|---|---|---|---|---|"]
    by = {}
    for r in rows:
        by.setdefault(r["strategy"], []).append(r)
    spos = statistics.median(r["test_acc"] for r in by.get("SPOS", rows))
    for name, rs in by.items():
        acc = statistics.median(r["test_acc"] for r in rs)
        mean = statistics.mean(r["test_acc"] for r in rs)
        mono = "" if name == "SPOS" else f"{sum(bool(r['expected_monotone']) for r in rs)}/{len(rs)}"
        lines.append(f"| {name} | {sum(r['within_budget'] for r in rs)}/{len(rs)} | {acc:.4f} ({mean:.4f}) | "
                     f"{100 * (acc - spos):+.2f} | {mono} | {statistics.median(r['epoch_s'] for r in rs):.1f} |")
    lines += ["", "Per-epoch cost of each mixed mode on a 3-candidate LayerChoice (forward and backward, interleaved, "
              "medians):", "", "| mode | epoch s | x index | target |", "|---|---|---|---|"]
    for m in modes:
        lines.append(f"| {m['mode']} | {m['epoch_s']:.3f} | {m['ratio_vs_index']:.2f} | "
                     f"{'<= ' + str(m['target']) if m['target'] else ''} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=1, help="of --epochs, weights only (GDAS, ProxylessNAS, ENAS)")
    ap.add_argument("--finetune-epochs", type=int, default=8)
    ap.add_argument("--strategies", nargs="+", default=["SPOS", "DARTS", "GDAS", "ProxylessNAS", "ENAS"])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="1 seed, 1 epoch, 1 fine-tuning epoch, 3 rounds")
    ap.add_argument("--out", default="oneshot")
    ap.add_argument("--resume", action="store_true", help="keep the runs already in the CSV and do the others")
    args = ap.parse_args()
    if args.quick:
        args.seeds, args.epochs, args.warmup, args.finetune_epochs, args.rounds = [0], 2, 1, 1, 3
    if not 0 <= args.warmup < args.epochs:
        ap.error(f"--warmup must be in [0, --epochs), got {args.warmup} with --epochs {args.epochs}")
    torch.set_num_threads(1)
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    modes = mode_costs(args.rounds, batches=8)
    for m in modes:
        print(m)
    RESULTS.mkdir(exist_ok=True)
    write(modes, RESULTS / f"{args.out}_modes.csv")
    rows = read_rows(RESULTS / f"{args.out}.csv") if args.resume else []
    done = {(r["strategy"], int(r["seed"])) for r in rows}
    for seed in args.seeds:  # every strategy at a seed before the next seed: a cut-short run still compares them
        for name in args.strategies:
            if (name, seed) in done:
                continue
            row = run_strategy(name, seed, args)
            print({k: row[k] for k in ("strategy", "seed", "lut_latency_ms", "budget_ms", "within_budget", "test_acc",
                                       "expected_monotone", "search_s")}, flush=True)
            rows.append(row)
            write(rows, RESULTS / f"{args.out}.csv")
            (RESULTS / f"{args.out}.md").write_text(markdown(rows, modes, load, args))
    (RESULTS / f"{args.out}.md").write_text(markdown(rows, modes, load, args))
    print((RESULTS / f"{args.out}.md").read_text())


if __name__ == "__main__":
    main()
