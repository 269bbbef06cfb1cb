"""Shared set-up of the one-shot examples: scikit-learn's digits, the shipped 1-thread LUT, fine-tuning.

Each example trains one strategy with :func:`hwnas.search.train_oneshot` under a latency penalty from the
shipped ``digits`` LUT (a hinge at 45% of the largest subnet's latency) and a filter at 60% of it, then
fine-tunes the chosen subnet and prints its test accuracy and its LUT latency, rechecked on the exported
model. Each finishes in well under 3 minutes on 2 cores (see docs/oneshot.md for measured times).
"""

from __future__ import annotations

import argparse
import time

import torch

import hwnas
from hwnas.demo import load_digits_data
from hwnas.search import RangeProfilerFilter, TensorBatches, evaluate_accuracy, finetune
from hwnas.search.strategies import profiler_range

X1 = torch.zeros(1, 1, 8, 8)


PENALTY_AT = "45%"


def parse(description: str, epochs: int = 3, warmup: int = 1, flags: tuple[str, ...] = ()) -> argparse.Namespace:
    """The examples' command line: ``--epochs`` (with architecture steps), ``--warmup`` (weights only, first),
    ``--finetune-epochs``, ``--seed``, ``--budget`` and the given boolean ``flags``."""
    ap = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=epochs, help="search epochs")
    ap.add_argument("--warmup", type=int, default=warmup, help="weight-only epochs before them")
    ap.add_argument("--finetune-epochs", type=int, default=6)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--budget", default="60%", help="latency budget (share of the largest subnet)")
    for flag in flags:
        ap.add_argument(f"--{flag}", action="store_true")
    return ap.parse_args()


def setup(seed: int, budget: str = "60%"):
    """(space, data loaders, LUT latency profiler, latency filter at ``budget``, budget in ms)."""
    torch.manual_seed(seed)
    torch.set_num_threads(1)
    d = load_digits_data()
    space = hwnas.spaces.create("digits")
    lat = hwnas.LatencyProfiler(space, X1, lut="digits")
    train = TensorBatches(d.x_train, d.y_train, batch_size=64, shuffle=True, seed=seed)
    val = TensorBatches(d.x_val, d.y_val, batch_size=64, shuffle=True, seed=seed + 1)
    test = TensorBatches(d.x_test, d.y_test, batch_size=256)
    flt = RangeProfilerFilter(lat, max=budget)
    limit = float(budget.rstrip("%")) / 100 * profiler_range(lat)[2]
    return space, train, val, test, lat, flt, limit


def report(result, train, test, lat_budget_ms: float, finetune_epochs: int, start: float) -> dict:
    """Fine-tune the chosen subnet, recheck its latency on the exported model, print and return a summary."""
    subnet = result.export()
    tuned = finetune(subnet, train, epochs=finetune_epochs, lr=0.02, progress=False) if finetune_epochs else subnet
    acc = evaluate_accuracy(tuned.eval(), test)
    latency = hwnas.LatencyProfiler(subnet, X1, lut="digits").profile({})
    costs = [h.expected_cost for h in result.history]
    print(f"chosen: {result.sample}")
    print(f"expected latency per epoch (ms): {[round(c, 5) for c in costs]}")
    print(f"LUT latency of the exported subnet: {latency:.5f} ms (budget {lat_budget_ms:.5f} ms, "
          f"{'within' if latency <= lat_budget_ms * (1 + 1e-9) else 'OVER'})")
    print(f"test accuracy after {finetune_epochs} fine-tuning epochs: {acc:.4f}; {time.perf_counter() - start:.0f} s")
    return {"sample": result.sample, "latency_ms": latency, "test_acc": acc}
