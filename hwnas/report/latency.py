"""Per-layer latency reports: one row per kernel, predicted from the LUT and optionally measured.

Example:
    >>> import torch, hwnas
    >>> from hwnas.report import latency_report
    >>> space = hwnas.spaces.create("digits")
    >>> df = latency_report(space, space.random_sample(0), torch.randn(1, 1, 8, 8),
    ...                     lut="digits")
    >>> list(df.columns)
    ['layer', 'kind', 'signature', 'predicted_ms', 'measured_ms', 'share']
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

import pandas as pd

from hwnas.export import export
from hwnas.hw.build import measure_subnet_kernels
from hwnas.hw.latency import LatencyProfiler
from hwnas.hw.lut import LUT

__all__ = ["latency_report"]


def latency_report(space: Any, sample: dict[str, Any], dummy_input: Any, lut: LUT | str | os.PathLike | None = None,
                   measure: bool = False, profiler: LatencyProfiler | None = None, runs: int = 30) -> pd.DataFrame:
    """One row per kernel of ``sample``: layer, kernel signature, predicted ms, measured ms, share.

    Args:
        space, sample, dummy_input: the subnet to report on.
        lut: the LUT (or pass a ready ``profiler``).
        measure: also export the subnet, run ONNX Runtime's profiler on it and fill ``measured_ms`` with each
            kernel's time; the ``(total)`` row then holds the unprofiled end-to-end time.
        profiler: a :class:`LatencyProfiler` to reuse.
        runs: profiled runs when measuring.

    Returns:
        A DataFrame with rows per kernel in execution order, then ``(model overhead)`` and ``(total)``.
        ``share`` is the kernel's share of the predicted total. Write it with ``.to_csv(path, index=False)``.
    """
    prof = profiler or LatencyProfiler(space, dummy_input, lut=lut)
    rows = [{"layer": k.name, "kind": k.kind if k.kind not in ("conv", "linear") else f"{k.kind}+{k.act}",
             "signature": sig, "predicted_ms": ms, "measured_ms": float("nan")}
            for k, sig, ms in prof.kernel_costs(sample)]
    overhead = prof.overhead_ms
    total = prof.profile(sample)
    measured_total = float("nan")
    if measure:
        with tempfile.TemporaryDirectory(prefix="hwnas-report-") as work:
            res = measure_subnet_kernels(space, prof.graph, prof.kernels, sample, dummy_input, prof.lut.device,
                                         runs=runs, warmup=10, export_fn=export, workdir=work)
        for row, (_, _, ms, _) in zip(rows, res["kernels"]):
            row["measured_ms"] = ms
        measured_total = res["end_to_end_ms"]
    rows.append({"layer": "(model overhead)", "kind": "overhead", "signature": "", "predicted_ms": overhead,
                 "measured_ms": float("nan")})
    df = pd.DataFrame(rows)
    df["share"] = df["predicted_ms"] / total
    df.loc[len(df)] = {"layer": "(total)", "kind": "total", "signature": "", "predicted_ms": total,
                       "measured_ms": measured_total, "share": 1.0}
    return df
