"""ONNX Runtime's own view of a model: per-node kernel times and the graph it really runs.

- :func:`profile_run` / :func:`profile_nodes` turn on ``SessionOptions.enable_profiling``, run the model,
  parse the JSON trace (``end_profiling()``) and return one row per node ORT ran, with the median
  kernel time over the runs, next to the end-to-end time of the same runs. On this machine class the
  node times of a whole model sum to its unprofiled end-to-end time within a few percent, which is
  why LUTs harvest kernel times from whole-model profiles (see ``benchmarks/measure_methods.py``).
- :func:`optimized_graph` returns the model after ORT's graph optimisations (fusions, NCHWc layout),
  the ground truth for kernel signatures.

Node times include no session overhead; the profiler adds a few microseconds per node to the
profiled runs themselves, so compare node sums with an unprofiled :func:`~hwnas.hw.measure.measure`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hwnas.hw.device import Device, get_device
from hwnas.hw.session import BoundRunner, check_counts, create_session, make_feed

if TYPE_CHECKING:  # onnx and pandas load when used: a measurement agent's light install has neither
    import onnx
    import pandas as pd

__all__ = ["NodeProfile", "profile_run", "profile_nodes", "optimized_graph", "NODE_COLUMNS", "fused_nodes"]

#: The columns of :attr:`NodeProfile.nodes`.
NODE_COLUMNS = ["node", "op_type", "provider", "median_ms", "p10_ms", "p90_ms", "node_index", "input_shapes",
                "output_shapes"]

logger = logging.getLogger(__name__)


@dataclass
class NodeProfile:
    """Per-node kernel times from ORT's profiler, and the end-to-end time of the same runs.

    Attributes:
        nodes: One row per node ORT ran, in execution order: ``node`` (ORT node name), ``op_type``,
            ``provider``, ``median_ms``, ``p10_ms``, ``p90_ms``, ``node_index``, ``input_shapes``,
            ``output_shapes``.
        end_to_end_median_ms: Median of ORT's ``model_run`` events over the same runs.
        wall_median_ms: Median wall-clock time of those runs seen from Python (profiler overhead included).
        runs: Number of runs kept (after warm-up).
        device: Device name.
        speeds: With a reference model, the machine's speed during each run (its time over the
            reference time; the node times are divided by it); ``None`` without one.
    """

    nodes: pd.DataFrame
    end_to_end_median_ms: float
    wall_median_ms: float
    runs: int
    device: str
    speeds: list[float] | None = None

    @property
    def sum_nodes_ms(self) -> float:
        """Sum over nodes of their median kernel time."""
        return float(self.nodes["median_ms"].sum())


def _shapes(entries: Any) -> list[list[int]]:
    out = []
    for entry in entries or []:
        for _dtype, shape in dict(entry).items():
            out.append([int(d) for d in shape])
    return out


def _parse_trace(events: list[dict], runs: int, speed: np.ndarray | None = None) -> tuple[list[dict], np.ndarray]:
    """Per-node times over the last ``runs`` runs of a trace (rows of :data:`NODE_COLUMNS`); each run's times
    divided by ``speed[run]``."""
    run_events = sorted(
        (e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"),
        key=lambda e: e["ts"],
    )[-runs:]
    if not run_events:
        raise RuntimeError(
            "ORT profile trace has no 'model_run' events; cannot attribute node times to runs."
        )
    starts = np.array([e["ts"] for e in run_events], dtype=np.int64)
    ends = starts + np.array([e["dur"] for e in run_events], dtype=np.int64)
    per_node: dict[str, list[float]] = defaultdict(lambda: [0.0] * len(run_events))
    meta: dict[str, dict[str, Any]] = {}
    order: dict[str, tuple[int, int]] = {}
    for e in events:
        name = e.get("name", "")
        if e.get("cat") != "Node" or not name.endswith("_kernel_time"):
            continue
        i = int(np.searchsorted(starts, e["ts"], side="right")) - 1
        if i < 0 or e["ts"] > ends[i]:
            continue  # a warm-up run, or outside any run
        node = name[: -len("_kernel_time")]
        per_node[node][i] += e["dur"] / 1e3  # trace durations are in microseconds
        if node not in meta:
            args = e.get("args", {})
            meta[node] = {
                "op_type": args.get("op_name", ""),
                "provider": args.get("provider", ""),
                "node_index": int(args["node_index"]) if "node_index" in args else -1,
                "input_shapes": _shapes(args.get("input_type_shape")),
                "output_shapes": _shapes(args.get("output_type_shape")),
            }
        order.setdefault(node, (i, e["ts"]))
    rows = []
    scale = np.ones(len(run_events)) if speed is None else np.asarray(speed, float)[-len(run_events):]
    for node in sorted(per_node, key=lambda n: (order[n][1] - starts[order[n][0]], meta[n]["node_index"])):
        times = np.asarray(per_node[node]) / scale
        rows.append(
            {
                "node": node,
                "op_type": meta[node]["op_type"],
                "provider": meta[node]["provider"],
                "median_ms": float(np.median(times)),
                "p10_ms": float(np.percentile(times, 10)),
                "p90_ms": float(np.percentile(times, 90)),
                "node_index": meta[node]["node_index"],
                "input_shapes": meta[node]["input_shapes"],
                "output_shapes": meta[node]["output_shapes"],
            }
        )
    return rows, (ends - starts) / 1e3


def reference_means(ref_ns: np.ndarray) -> np.ndarray:
    """The mean of the reference runs just before and just after each timed run of a paired measurement.

    ``ref_ns`` holds one more reference run than there are timed runs along its last axis. The paired
    statistic divides each run by its mean and takes its level as the median of these means
    (:mod:`hwnas.hw.measure`).
    """
    return (ref_ns[..., :-1] + ref_ns[..., 1:]) / 2.0


def profile_run(
    onnx_path: str | os.PathLike,
    device: str | Device,
    dummy_input_or_feed: Any = None,
    runs: int = 50,
    warmup: int = 10,
    *,
    seed: int = 0,
    reference: Any = None,
    reference_ms: float | None = None,
) -> NodeProfile:
    """Run ``onnx_path`` with ORT profiling on and return per-node and end-to-end times.

    All runs are profiled; the first ``warmup`` (and the untimed shape-finding run) are dropped from
    the trace. The trace file is deleted afterwards.

    Args:
        reference: a :class:`~hwnas.hw.session.BoundRunner` of a reference model, run (unprofiled) before
            the first and after every profiled run: each run's node times are divided by the speed of the
            machine at that moment, the mean of the reference runs around it over ``reference_ms``, which
            removes the machine's slow phases from the profile (see :mod:`hwnas.hw.measure`). The speeds are
            in ``NodeProfile.speeds``.
        reference_ms: the reference's time at the speed the node times should be expressed in (default:
            the median of the means around the runs here, the level of :attr:`~hwnas.hw.measure.LatencyRecord.paired_ms`).
    """
    import pandas as pd

    dev = get_device(device)
    if dev.agent:  # on the measurement agent
        from hwnas.hw.remote import remote_profile_run

        return remote_profile_run(onnx_path, dev, dummy_input_or_feed, runs=runs, warmup=warmup, seed=seed,
                                  reference=reference, reference_ms=reference_ms)
    out = profile_rows(onnx_path, dev, dummy_input_or_feed, runs, warmup, seed=seed, reference=reference,
                       reference_ms=reference_ms)
    nodes = pd.DataFrame(out["rows"], columns=NODE_COLUMNS)
    nodes.attrs.update(end_to_end_median_ms=out["end_to_end_median_ms"], runs=runs, device=dev.name)
    return NodeProfile(nodes, out["end_to_end_median_ms"], out["wall_median_ms"], runs, dev.name, out["speeds"])


def profile_rows(onnx_path: str | os.PathLike, device: str | Device, dummy_input_or_feed: Any = None, runs: int = 50,
                 warmup: int = 10, *, seed: int = 0, reference: Any = None,
                 reference_ms: float | None = None) -> dict[str, Any]:
    """:func:`profile_run` on this machine without pandas: ``{"rows": [...], "end_to_end_median_ms",
    "wall_median_ms", "speeds"}`` (the measurement agent sends this back)."""
    check_counts(runs=runs, warmup=warmup)
    dev = get_device(device)
    tmp = tempfile.mkdtemp(prefix="hwnas_profile_")
    ref_ns = np.zeros(runs + 1) if reference is not None else None
    try:
        session = create_session(
            onnx_path, dev, enable_profiling=True, profile_prefix=os.path.join(tmp, "ort")
        )
        runner = BoundRunner(
            session, make_feed(session, dummy_input_or_feed, seed=seed, source=str(onnx_path))
        )
        for _ in range(warmup):
            runner.run()
        wall = np.empty(runs)
        clock = time.perf_counter_ns
        if reference is not None:
            t0 = clock()
            reference.run()
            ref_ns[0] = clock() - t0
        for k in range(runs):
            t0 = clock()
            runner.run()
            wall[k] = (clock() - t0) / 1e6
            if reference is not None:
                t0 = clock()
                reference.run()
                ref_ns[k + 1] = clock() - t0
        trace_path = session.end_profiling()
        with open(trace_path, encoding="utf-8") as fh:
            events = json.load(fh)
        os.remove(trace_path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    speeds = None
    if ref_ns is not None:
        around = reference_means(ref_ns) / 1e6
        base = float(np.median(around)) if reference_ms is None else float(reference_ms)
        speeds = around / base
    nodes, run_ms = _parse_trace(events, runs, speeds)
    if speeds is not None:
        run_ms = run_ms / speeds[-len(run_ms):]
        wall = wall / speeds
    logger.debug("profiled %s on %s: %d nodes, %d runs", onnx_path, dev.name, len(nodes), runs)
    return {"rows": nodes, "end_to_end_median_ms": float(np.median(run_ms)), "wall_median_ms": float(np.median(wall)),
            "speeds": None if speeds is None else [float(v) for v in speeds]}


def profile_nodes(
    onnx_path: str | os.PathLike,
    device: str | Device,
    dummy_input_or_feed: Any = None,
    runs: int = 50,
    warmup: int = 10,
) -> pd.DataFrame:
    """Per-node kernel times (one row per node ORT ran); see :func:`profile_run`.

    The end-to-end median of the same runs is in ``df.attrs["end_to_end_median_ms"]``.
    """
    return profile_run(onnx_path, device, dummy_input_or_feed, runs=runs, warmup=warmup).nodes


def optimized_graph(onnx_path: str | os.PathLike, device: str | Device) -> onnx.ModelProto:
    """The model as ORT runs it on ``device``, after its graph optimisations (fusions, layout changes).

    At ``graph_optimization="all"`` the result can hold ORT-internal ops (``FusedConv``,
    ``com.microsoft.nchwc`` ``Conv``/``ReorderInput``/``ReorderOutput``); it is loaded unchecked. For a device behind
    a measurement agent, the agent writes it with its provider and sends it back.
    """
    import onnx

    dev = get_device(device)
    if dev.agent:
        from hwnas.hw.remote import remote_optimized_bytes

        return onnx.load_from_string(remote_optimized_bytes(onnx_path, dev))
    return onnx.load_from_string(optimized_bytes(onnx_path, dev))


def optimized_bytes(onnx_path: str | os.PathLike, device: str | Device) -> bytes:
    """The bytes of the model ORT writes after optimising it for ``device`` (``optimized_model_filepath``)."""
    with tempfile.TemporaryDirectory(prefix="hwnas_optimized_") as tmp:
        out = Path(tmp) / "optimized.onnx"
        create_session(onnx_path, device, optimized_model_path=str(out), log_severity_level=3)
        return out.read_bytes()


def fused_nodes(original: onnx.ModelProto, optimized: onnx.ModelProto) -> list[tuple[list[str], list[str]]]:
    """What a provider fused: groups of the optimised model's nodes and the original nodes each group computes.

    Read from the models alone, for any execution provider (no rules per provider): the optimised model
    (:func:`optimized_graph`) keeps the names of the original tensors it still computes. Its nodes joined by tensors
    of their own (an NCHWc convolution and its reorders, a compiled subgraph's parts) form a group; a group computes
    the original nodes between the original tensors it reads and those it writes. A ``FusedConv`` of a Conv and a
    Relu is one group of one node standing for both; a provider that compiles the whole graph (TensorRT, OpenVINO)
    gives one group that stands for every node.

    Returns:
        ``[(optimised node names, original node names)]`` in the optimised model's order; groups that compute no
        original node (a copy ORT inserted) have an empty second list.
    """
    orig_nodes = list(original.graph.node)
    producer = {out: i for i, n in enumerate(orig_nodes) for out in n.output if out}
    known = {t.name for t in original.graph.input} | {t.name for t in original.graph.initializer} | set(producer)
    opt_nodes = list(optimized.graph.node)
    present = {t.name for t in optimized.graph.input} | {t.name for t in optimized.graph.initializer}
    present |= {out for n in opt_nodes for out in n.output} | {i for n in opt_nodes for i in n.input}
    boundary = known & present  # original tensors the optimised model still has
    parent = list(range(len(opt_nodes)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    made_by = {out: i for i, n in enumerate(opt_nodes) for out in n.output if out and out not in known}
    for i, n in enumerate(opt_nodes):  # joined by a tensor of the optimised model's own
        for t in n.input:
            if t in made_by:
                parent[find(i)] = find(made_by[t])
    groups: dict[int, list[int]] = {}
    for i in range(len(opt_nodes)):
        groups.setdefault(find(i), []).append(i)
    out = []
    for members in groups.values():
        reads = {t for i in members for t in opt_nodes[i].input if t in boundary}
        stack = [t for i in members for t in opt_nodes[i].output if t in producer]
        covered: set[int] = set()
        while stack:
            t = stack.pop()
            j = producer.get(t)
            if j is None or j in covered:
                continue
            covered.add(j)
            stack.extend(x for x in orig_nodes[j].input if x and x not in reads and x in producer)
        out.append(([opt_nodes[i].name for i in members], [orig_nodes[j].name for j in sorted(covered)]))
    return out
