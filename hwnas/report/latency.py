"""Per-layer latency reports: one row per kernel, predicted from the LUT and optionally measured.

Example:
    >>> import torch, hwnas
    >>> from hwnas.report import latency_report
    >>> space = hwnas.spaces.create("digits")
    >>> df = latency_report(space, space.random_sample(0), torch.randn(1, 1, 8, 8),
    ...                     lut="digits")
    >>> list(df.columns)
    ['layer', 'kind', 'signature', 'predicted_ms', 'measured_ms', 'profiled_ms', 'share']
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
        measure: also export the subnet, run ONNX Runtime's profiler on it and measure it unprofiled. ORT's
            profiler reports whole microseconds per node and its own per-node cost, so its times (column
            ``profiled_ms``) add up to more than the model takes (about twice, for the small kernels of
            ``digits``). ``measured_ms`` is each kernel's share of the profiled time times the unprofiled
            end-to-end time, so that the kernels and ``(model overhead)`` (all the rest: ops that are not
            kernels, the session's own cost) add up to the ``(total)`` row, the end-to-end time.
        profiler: a :class:`LatencyProfiler` to reuse.
        runs: profiled runs when measuring.

    Returns:
        A DataFrame with rows per kernel in execution order, then ``(model overhead)`` and ``(total)``.
        ``share`` is the kernel's share of the predicted total. Write it with ``.to_csv(path, index=False)``.
    """
    prof = profiler or LatencyProfiler(space, dummy_input, lut=lut)
    nan = float("nan")
    rows = [{"layer": k.name, "kind": k.kind if k.kind not in ("conv", "linear") else f"{k.kind}+{k.act}",
             "signature": sig, "predicted_ms": ms, "measured_ms": nan, "profiled_ms": nan}
            for k, sig, ms in prof.kernel_costs(sample)]
    overhead = prof.overhead_ms
    total = prof.profile(sample)
    measured_total = profiled_total = measured_rest = nan
    if measure:
        with tempfile.TemporaryDirectory(prefix="hwnas-report-") as work:
            res = measure_subnet_kernels(space, prof.graph, prof.kernels, sample, dummy_input, prof.lut.device,
                                         runs=runs, warmup=10, export_fn=export, workdir=work)
        measured_total, profiled_total = float(res["end_to_end_ms"]), float(res["sum_nodes_ms"])
        scale = measured_total / profiled_total if profiled_total > 0 else nan
        for row, (_, _, ms, _) in zip(rows, res["kernels"]):
            row["profiled_ms"], row["measured_ms"] = ms, ms * scale
        measured_rest = measured_total - sum(r["measured_ms"] for r in rows)
    rows.append({"layer": "(model overhead)", "kind": "overhead", "signature": "", "predicted_ms": overhead,
                 "measured_ms": measured_rest, "profiled_ms": nan})
    df = pd.DataFrame(rows)
    df["share"] = df["predicted_ms"] / total
    df.loc[len(df)] = {"layer": "(total)", "kind": "total", "signature": "", "predicted_ms": total,
                       "measured_ms": measured_total, "profiled_ms": profiled_total, "share": 1.0}
    return df
