"""Helpers shared by the benchmark scripts: timing with medians and writing result tables."""

from __future__ import annotations

import csv
import os
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def pin_threads(n: int = 1) -> None:
    """Fix intra-op threads for torch (and numpy's BLAS through the environment of child processes)."""
    import torch

    torch.set_num_threads(n)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(var, str(n))


def register_basic_device() -> str:
    """Register ``cpu-ort-1t-basic`` (1 thread at ORT's basic graph level: no NCHWc layouts, no fused activations),
    the "other device" of the adapt benchmarks, once; returns its name."""
    from hwnas.hw import Device, list_devices, register_device

    if "cpu-ort-1t-basic" not in list_devices():
        register_device(Device("cpu-ort-1t-basic", intra_op_threads=1, graph_optimization="basic",
                               description="1 thread, basic graph optimisations (benchmarks/adapt.py)"))
    return "cpu-ort-1t-basic"


def median_time(fn: Callable[[], object], repeats: int = 7, number: int = 1) -> float:
    """Median over ``repeats`` of the seconds per call of ``fn`` (each repeat calls it ``number`` times)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        times.append((time.perf_counter() - t0) / number)
    return statistics.median(times)


def fvcore_count(module, x) -> float:
    """fvcore's FLOP count of ``module`` in eval mode: the independent reference for hwnas's FLOPs."""
    import logging

    from fvcore.nn import FlopCountAnalysis

    logging.getLogger("fvcore").setLevel(logging.ERROR)
    fca = FlopCountAnalysis(module.eval(), x)
    fca.unsupported_ops_warnings(False)
    fca.uncalled_modules_warnings(False)
    return fca.total()


def append_row(name: str, header: Sequence[str], row: Sequence[object]) -> Path:
    """Append ``row`` to ``benchmarks/results/<name>.csv`` (a log of runs), writing ``header`` first if new."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.csv"
    new = not path.exists()
    with path.open("a", newline="") as f:
        w = csv.writer(f)
        if new:
            w.writerow(header)
        w.writerow(row)
    return path


def write_table(name: str, header: Sequence[str], rows: Sequence[Sequence[object]]) -> Path:
    """Print ``rows`` as a table and write them to ``benchmarks/results/<name>.csv``."""
    widths = [max(len(str(h)), *(len(_fmt(r[i])) for r in rows)) for i, h in enumerate(header)]
    print("  ".join(str(h).ljust(w) for h, w in zip(header, widths)))
    for r in rows:
        print("  ".join(_fmt(v).ljust(w) for v, w in zip(r, widths)))
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    print(f"\nwritten: {path}")
    return path


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)
