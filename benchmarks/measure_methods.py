"""How should hwnas measure latency with ONNX Runtime? Experiments on this machine.

Run from the repository root::

    python benchmarks/measure_methods.py            # ~3-5 minutes on 2 shared cores
    python benchmarks/measure_methods.py --quick    # fewer trials, for a smoke test

On a MobileNetV2-like and a small ResNet-like model (plain torch, written below), at 1 intra-op thread:

(a) stability: coefficient of variation of the end-to-end median over repeated trials (rounds);
(b) ORT profiler: sum of per-node kernel times over the end-to-end time (unprofiled and profiled);
(c) decomposition: sum of the end-to-end times of blocks (and of single conv layers) exported alone
    over the whole model's, with and without subtracting the per-run session overhead;
(d) fusions: which ops ORT really runs for common patterns, alone and between two convs;
(e) per block: kernel time when the block runs alone vs the same kernels harvested from the profile of
    the whole model (cache warmth, layout reorders and context-dependent fusions);
(f) statistics: how well two measurements of the same 12 random mobilenet_v3 subnets agree, for the
    median, the lower quartile and the paired statistic (each run between two runs of a reference subnet,
    ``measure_many(reference=)``): between the even and the odd rounds of one measurement, and between two
    measurements a minute apart (shape, after dividing out the common speed change, and that change);
(g) sessions: 30 random mobilenet_v3 subnets (15 of them entered twice) measured twice, interleaved and
    paired: how far the even and odd rounds of one measurement agree, the same file's two sessions in one
    measurement, and the two measurements.

Prints tables and writes ``benchmarks/results/measure_methods.csv`` (experiment, model, metric, value).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hwnas.hw import (  # noqa: E402
    export_onnx,
    get_device,
    measure,
    measure_many,
    optimized_graph,
    profile_run,
    register_device,
    session_overhead_ms,
)

RESULTS = Path(__file__).resolve().parent / "results" / "measure_methods.csv"


# ------------------------------------------------------------------------------------------- models


class ConvBNAct(nn.Sequential):
    def __init__(self, c_in, c_out, k=3, s=1, groups=1, act=nn.ReLU6):
        layers = [nn.Conv2d(c_in, c_out, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(c_out)]
        if act is not None:
            layers.append(act())
        super().__init__(*layers)


class InvertedResidual(nn.Module):
    def __init__(self, c_in, c_out, s, expand):
        super().__init__()
        hidden = c_in * expand
        layers = [] if expand == 1 else [ConvBNAct(c_in, hidden, 1)]
        layers += [ConvBNAct(hidden, hidden, 3, s, groups=hidden), ConvBNAct(hidden, c_out, 1, act=None)]
        self.body = nn.Sequential(*layers)
        self.residual = s == 1 and c_in == c_out

    def forward(self, x):
        y = self.body(x)
        return x + y if self.residual else y


class Head(nn.Module):
    def __init__(self, c_in, c_mid, classes=1000, act=nn.ReLU6):
        super().__init__()
        self.conv = ConvBNAct(c_in, c_mid, 1, act=act) if c_mid else nn.Identity()
        self.fc = nn.Linear(c_mid or c_in, classes)

    def forward(self, x):
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(self.conv(x), 1), 1))


def mobilenet_v2_like(width=1.0):
    cfg = [
        (1, 16, 1, 1),
        (6, 24, 2, 2),
        (6, 32, 3, 2),
        (6, 64, 4, 2),
        (6, 96, 3, 1),
        (6, 160, 3, 2),
        (6, 320, 1, 1),
    ]
    c = int(32 * width)
    blocks = [ConvBNAct(3, c, 3, 2)]
    for t, ch, n, s in cfg:
        for i in range(n):
            blocks.append(InvertedResidual(c, int(ch * width), s if i == 0 else 1, t))
            c = int(ch * width)
    blocks.append(Head(c, 1280))
    return nn.Sequential(*blocks)


class BasicBlock(nn.Module):
    def __init__(self, c_in, c_out, s):
        super().__init__()
        self.conv1 = ConvBNAct(c_in, c_out, 3, s, act=nn.ReLU)
        self.conv2 = ConvBNAct(c_out, c_out, 3, 1, act=None)
        self.down = ConvBNAct(c_in, c_out, 1, s, act=None) if (s != 1 or c_in != c_out) else nn.Identity()

    def forward(self, x):
        return torch.relu(self.conv2(self.conv1(x)) + self.down(x))


def resnet_like(widths=(32, 64, 128, 256)):
    blocks = [ConvBNAct(3, widths[0], 3, 2, act=nn.ReLU)]
    c = widths[0]
    for i, w in enumerate(widths):
        for j in range(2):
            blocks.append(BasicBlock(c, w, 2 if (i > 0 and j == 0) else 1))
            c = w
    blocks.append(Head(c, 0))
    return nn.Sequential(*blocks)


def _randomize_bn(model, seed=0):
    """Give BatchNorm layers non-trivial statistics (like a trained net), then eval mode."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.1)
    return model.eval()


def _inputs_of(model, x, kinds):
    """Run ``model`` once; return [(module, input tensor)] for every submodule of the given kinds."""
    found, hooks = [], []
    for m in model.modules():
        if isinstance(m, kinds):
            hooks.append(m.register_forward_hook(lambda mod, inp, out: found.append((mod, inp[0].detach()))))
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return found


# ------------------------------------------------------------------------------------- experiments

rows: list[dict] = []


def record(experiment, model, metric, value, note=""):
    rows.append({"experiment": experiment, "model": model, "metric": metric, "value": value, "note": note})


def _load():
    return "load avg {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def exp_stability(models, tmp, trials):
    print(
        f"\n(a) stability: CV of the end-to-end median of 50 runs over {trials} trials (interleaved) [{_load()}]"
    )
    paths = {name: export_onnx(m, x, tmp / f"{name}.onnx") for name, (m, x) in models.items()}
    nospin = register_device(
        get_device("cpu-ort-2t").replace(name="cpu-ort-2t-nospin", allow_spinning=False), overwrite=True
    )
    for dev in ("cpu-ort-1t", "cpu-ort-2t", nospin.name):
        recs = measure_many(list(paths.values()), dev, warmup=20, repeats=50, rounds=trials, seed=1)
        for name, rec in zip(paths, recs):
            p10s = np.percentile(rec.times_ms, 10, axis=1)
            mins = rec.times_ms.min(axis=1)
            cv_p10 = float(np.std(p10s, ddof=1) / np.mean(p10s))
            cv_min = float(np.std(mins, ddof=1) / np.mean(mins))
            print(
                f"  {name:12s} {dev:18s}: median {rec.median_ms:8.3f} ms  p10 {rec.p10_ms:8.3f}  "
                f"p90 {rec.p90_ms:8.3f}  CV over trials: of medians {100 * rec.cv:5.2f}%, "
                f"of p10 {100 * cv_p10:5.2f}%, of min {100 * cv_min:5.2f}%"
            )
            record("a_stability", name, f"median_ms[{dev}]", rec.median_ms)
            record("a_stability", name, f"p10_ms[{dev}]", rec.p10_ms)
            record("a_stability", name, f"p90_ms[{dev}]", rec.p90_ms)
            record("a_stability", name, f"cv_median[{dev}]", rec.cv, f"{trials} trials x 50 runs; {_load()}")
            record("a_stability", name, f"cv_p10[{dev}]", cv_p10, "CV over trials of each trial's p10")
            record("a_stability", name, f"cv_min[{dev}]", cv_min, "CV over trials of each trial's minimum")
    return paths


def exp_profiler(paths, runs, reps=3):
    print(f"\n(b) ORT profiler: sum of per-node kernel medians / end-to-end median (1 thread) [{_load()}]")
    for name, path in paths.items():
        ratios, ratios_run, overheads = [], [], []
        for _ in range(reps):  # alternate unprofiled and profiled measurement, take the median ratio
            e2e = measure(path, "cpu-ort-1t", warmup=5, repeats=30, rounds=3).median_ms
            prof = profile_run(path, "cpu-ort-1t", runs=runs, warmup=10)
            ratios.append(prof.sum_nodes_ms / e2e)
            ratios_run.append(prof.sum_nodes_ms / prof.end_to_end_median_ms)
            overheads.append(prof.end_to_end_median_ms / e2e)
        nodes = prof.nodes
        reorder = nodes[nodes.op_type.str.startswith("Reorder")]["median_ms"].sum()
        r, rr, ov = (float(np.median(v)) for v in (ratios, ratios_run, overheads))
        print(
            f"  {name:14s} nodes {len(nodes):3d}  sum {prof.sum_nodes_ms:7.3f} ms  / unprofiled e2e {r:5.3f} "
            f"(trials {', '.join(f'{x:.3f}' for x in ratios)})  / profiled model_run {rr:5.3f}  "
            f"profiled run / e2e {ov:5.3f}  reorders {reorder:.3f} ms"
        )
        record("b_profiler", name, "nodes", len(nodes))
        record("b_profiler", name, "sum_nodes_ms", prof.sum_nodes_ms)
        record("b_profiler", name, "ratio_sum_nodes_to_e2e", r, f"median of {reps}; e2e without profiling")
        record("b_profiler", name, "ratio_sum_nodes_to_profiled_run", rr)
        record("b_profiler", name, "profiled_run_over_e2e", ov, "profiler overhead")
        record("b_profiler", name, "reorder_ms", reorder, "NCHWc ReorderInput/ReorderOutput")
        top = nodes.groupby("op_type")["median_ms"].sum().sort_values(ascending=False)
        print("    time by op type:", ", ".join(f"{k} {v:.3f}" for k, v in top.items()))
        fused = nodes[nodes.op_type == "Conv"]["input_shapes"].map(len).eq(4).sum()
        print(f"    NCHWc convs with a fused Sum (residual add) input: {fused}")
        record("b_profiler", name, "convs_with_fused_sum", int(fused))


def _kernels_alone_vs_in_model(name, whole, part_paths, runs=20, reps=3):
    """(e) Per block: kernel time when the block runs alone vs harvested from the whole model's profile.

    Whole-model nodes are assigned to block i by their ONNX name prefix ``/i/`` (the legacy exporter
    names nodes by module path; ORT keeps it in the fused node's name).
    """
    is_reorder = "ReorderInput|ReorderOutput"
    alone_kernels, alone_reorders, harvested = [], [], []
    for _ in range(reps):  # alternate whole and parts; median over the repetitions
        whole_nodes = profile_run(whole, "cpu-ort-1t", runs=runs, warmup=5).nodes
        ak, ar, hv = [], [], []
        for i, p in enumerate(part_paths):
            nodes = profile_run(p, "cpu-ort-1t", runs=runs, warmup=5).nodes
            reorder = nodes.op_type.str.fullmatch(is_reorder)
            ak.append(nodes.loc[~reorder, "median_ms"].sum())
            ar.append(nodes.loc[reorder, "median_ms"].sum())
            hv.append(whole_nodes.loc[whole_nodes.node.str.startswith(f"/{i}/"), "median_ms"].sum())
        alone_kernels.append(ak), alone_reorders.append(ar), harvested.append(hv)
    alone_kernels, alone_reorders, harvested = (
        np.median(np.array(v), axis=0) for v in (alone_kernels, alone_reorders, harvested)
    )
    alone_kernels, harvested = np.array(alone_kernels), np.array(harvested)
    per_block = alone_kernels / harvested
    unassigned = whole_nodes.loc[~whole_nodes.node.str.match(r"^/\d+/"), "median_ms"].sum()
    print(
        f"  {'':14s} (e) kernels alone / same kernels in the whole-model profile: total "
        f"{alone_kernels.sum() / harvested.sum():5.3f}, per block min {per_block.min():5.3f} "
        f"median {np.median(per_block):5.3f} max {per_block.max():5.3f}; NCHWc reorders paid alone "
        f"{sum(alone_reorders):.3f} ms vs {whole_nodes.loc[whole_nodes.op_type.str.fullmatch(is_reorder), 'median_ms'].sum():.3f} "
        f"ms in the whole model; unassigned whole-model nodes {unassigned:.3f} ms"
    )
    print(f"  {'':14s}     per block: " + " ".join(f"{r:.2f}" for r in per_block))
    record("e_kernels_alone", name, "ratio_total", alone_kernels.sum() / harvested.sum(), "excl. reorders")
    record("e_kernels_alone", name, "ratio_per_block_min", per_block.min())
    record("e_kernels_alone", name, "ratio_per_block_median", float(np.median(per_block)))
    record("e_kernels_alone", name, "ratio_per_block_max", per_block.max())
    record("e_kernels_alone", name, "per_block", " ".join(f"{r:.3f}" for r in per_block))
    record("e_kernels_alone", name, "reorder_ms_blocks_alone", float(sum(alone_reorders)))


def exp_decomposition(models, tmp, overhead, rounds):
    print(
        f"\n(c) decomposition: sum of parts timed alone / whole (1 thread; session overhead "
        f"{1e3 * overhead:.1f} µs) [{_load()}]"
    )
    for name, (model, x) in models.items():
        for level, kinds in (("blocks", None), ("layers", (ConvBNAct, nn.Linear))):
            if level == "blocks":
                parts = []
                h = x
                with torch.no_grad():
                    for block in model:
                        parts.append((block, h))
                        h = block(h)
            else:
                parts = _inputs_of(model, x, kinds)
            part_paths = [
                export_onnx(m, inp, tmp / f"{name}_{level}_{i}.onnx") for i, (m, inp) in enumerate(parts)
            ]
            whole = tmp / f"{name}.onnx"
            recs = measure_many(
                [whole, *part_paths], "cpu-ort-1t", warmup=10, repeats=10, rounds=rounds, seed=2
            )
            n = len(part_paths)
            note = (
                "conv+bn+act units and the Linear; adds and pooling not covered" if level == "layers" else ""
            )
            for stat in ("median", "p10"):
                values = [r.median_ms if stat == "median" else r.p10_ms for r in recs]
                t_whole, t_parts = values[0], float(sum(values[1:]))
                raw = t_parts / t_whole
                corrected = (t_parts - n * overhead) / (t_whole - overhead)
                print(
                    f"  {name:12s} {level:6s} n={n:3d} {stat:6s}: whole {t_whole:7.3f} ms  parts {t_parts:7.3f} ms"
                    f"  ratio {raw:5.3f}  minus overhead {corrected:5.3f}"
                )
                record("c_decomposition", name, f"ratio_{level}[{stat}]", raw, note)
                record("c_decomposition", name, f"ratio_{level}_minus_overhead[{stat}]", corrected, f"n={n}")
            if level == "blocks":
                _kernels_alone_vs_in_model(name, whole, part_paths)


class SE(nn.Module):
    def __init__(self, c, reduce_mean=False):
        super().__init__()
        self.reduce_mean = reduce_mean
        self.fc1, self.fc2 = nn.Conv2d(c, c // 4, 1), nn.Conv2d(c // 4, c, 1)

    def forward(self, x):
        s = x.mean((2, 3), keepdim=True) if self.reduce_mean else nn.functional.adaptive_avg_pool2d(x, 1)
        return x * nn.functional.hardsigmoid(self.fc2(torch.relu(self.fc1(s))))


class ConvAdd(nn.Module):
    def __init__(self, c, relu_after=True):
        super().__init__()
        self.conv, self.relu_after = ConvBNAct(c, c, 3, act=None), relu_after

    def forward(self, x):
        y = self.conv(x) + x
        return torch.relu(y) if self.relu_after else y


FUSION_CASES = {
    "Conv+BN+ReLU": (lambda: ConvBNAct(32, 32, 3, act=nn.ReLU), (1, 32, 28, 28)),
    "Conv+BN+ReLU6": (lambda: ConvBNAct(32, 32, 3, act=nn.ReLU6), (1, 32, 28, 28)),
    "DWConv+BN+ReLU6": (lambda: ConvBNAct(32, 32, 3, groups=32, act=nn.ReLU6), (1, 32, 28, 28)),
    "Conv+BN+Hardswish": (lambda: ConvBNAct(32, 32, 3, act=nn.Hardswish), (1, 32, 28, 28)),
    "Conv+BN+SiLU": (lambda: ConvBNAct(32, 32, 3, act=nn.SiLU), (1, 32, 28, 28)),
    "SE(AvgPool)": (lambda: SE(32), (1, 32, 28, 28)),
    "SE(ReduceMean)": (lambda: SE(32, reduce_mean=True), (1, 32, 28, 28)),
    "Conv+BN+Add": (lambda: ConvAdd(32, relu_after=False), (1, 32, 28, 28)),
    "Conv+BN+Add+ReLU": (lambda: ConvAdd(32), (1, 32, 28, 28)),
    "Linear+ReLU": (lambda: nn.Sequential(nn.Linear(256, 128), nn.ReLU()), (1, 256)),
    "Linear+ReLU6": (lambda: nn.Sequential(nn.Linear(256, 128), nn.ReLU6()), (1, 256)),
}


def _ops(model_proto):
    """Op types ORT runs, with the fused activation in brackets and '+Sum' for a fused residual add."""
    out = []
    for n in model_proto.graph.node:
        op = n.op_type
        if n.domain == "com.microsoft.nchwc":
            op = "nchwc." + op
        for a in n.attribute:
            if a.name == "activation":
                op += f"[{a.s.decode()}]"
        if n.op_type in ("Conv", "FusedConv") and len(n.input) > 3 and n.input[3]:
            op += "+Sum"
        out.append(op)
    return out


def _in_context(block):
    """``block`` between two 1x1 Conv+ReLU layers, as in the middle of a network (NCHWc on both sides)."""
    return nn.Sequential(ConvBNAct(32, 32, 1, act=nn.ReLU), block, ConvBNAct(32, 32, 1, act=nn.ReLU))


def exp_fusions(tmp):
    print(
        "\n(d) fusions at ORT_ENABLE_ALL (1 thread): exported ONNX ops -> ops ORT runs; profiler node names"
    )
    import onnx

    for case, (make, shape) in FUSION_CASES.items():
        contexts = [("alone", make)]
        if len(shape) == 4:
            contexts.append(("in context", lambda make=make: _in_context(make())))
        for where, build in contexts:
            model = _randomize_bn(build())
            path = export_onnx(model, torch.randn(*shape), tmp / f"fusion_{case}_{where}.onnx")
            exported = [n.op_type for n in onnx.load(str(path)).graph.node if n.op_type != "Constant"]
            optimized = _ops(optimized_graph(path, "cpu-ort-1t"))
            prof = profile_run(path, "cpu-ort-1t", runs=5, warmup=2).nodes
            names = [f"{r.node}:{r.op_type}" for r in prof.itertuples()]
            label = f"{case} ({where})"
            print(f"  {label:31s} {' '.join(exported):40s} -> {' '.join(optimized)}")
            print(f"  {'':31s} profiler: {', '.join(names)}")
            record("d_fusions", label, "exported_ops", " ".join(exported))
            record("d_fusions", label, "optimized_ops", " ".join(optimized))
            record("d_fusions", label, "profiled_nodes", "; ".join(names))


def exp_statistics(tmp, rounds):
    import hwnas

    print(f"\n(f) statistics: agreement of two measurements of 12 random mobilenet_v3 subnets at 224 [{_load()}]")
    space = hwnas.spaces.create("mobilenet_v3").eval()
    x = torch.randn(1, 3, 224, 224)
    rng = np.random.default_rng(3)
    paths = [export_onnx(hwnas.export(space, space.random_sample(rng)), x, tmp / f"sub{i}.onnx") for i in range(12)]
    ref = export_onnx(hwnas.export(space, space.random_sample(99)), x, tmp / "ref.onnx")
    quant = {"median": lambda r, h: np.median(r.times_ms[h::2]),
             "p25": lambda r, h: np.percentile(r.times_ms[h::2], 25),
             "paired": lambda r, h: np.median(r.ratios[h::2]) * r.reference_ms}
    runs = [measure_many(paths, "cpu-ort-1t", x, rounds=rounds, repeats=3, reference=ref, seed=s) for s in (0, 1)]
    for stat, q in quant.items():
        halves = [np.std(np.log([q(r, 0) / q(r, 1) for r in recs])) for recs in runs]
        ratio = np.log([a.stat(stat) / b.stat(stat) for a, b in zip(*runs)])
        print(f"  {stat:7s}: split-half log sd {100 * np.mean(halves):5.2f}%; second measurement: shape log sd "
              f"{100 * np.std(ratio):5.2f}%, common change {100 * (np.exp(np.mean(ratio)) - 1):+5.2f}%")
        record("f_statistics", "mobilenet_v3 subnets", f"split_half_log_sd[{stat}]", float(np.mean(halves)),
               f"{rounds} rounds x 3 paired runs; {_load()}")
        record("f_statistics", "mobilenet_v3 subnets", f"remeasure_shape_log_sd[{stat}]", float(np.std(ratio)))
        record("f_statistics", "mobilenet_v3 subnets", f"remeasure_common_change[{stat}]",
               float(np.exp(np.mean(ratio)) - 1))


def exp_sessions(tmp, rounds, n=30):
    from scipy.stats import kendalltau

    import hwnas
    from hwnas.profile.constraints import centroid_sample
    from hwnas.space.space import collect_choices

    print(f"\n(g) sessions: {n} random mobilenet_v3 subnets at 224, two measurements [{_load()}]")
    space = hwnas.spaces.create("mobilenet_v3").eval()
    x = torch.randn(1, 3, 224, 224)
    rng = np.random.default_rng(5)
    paths = [export_onnx(hwnas.export(space, space.random_sample(rng)), x, tmp / f"ses{i}.onnx") for i in range(n)]
    ref = export_onnx(hwnas.export(space, centroid_sample(space, collect_choices(space))), x, tmp / "ses_ref.onnx")
    # the first n models entered twice: the same ONNX file, two sessions of one measurement
    calls = [measure_many(paths + paths[:n // 2], "cpu-ort-1t", x, rounds=rounds, repeats=3, reference=ref,
                          seed=1 + c, min_turn_ms=2.0) for c in range(2)]
    first = calls[0]
    halves = np.log([[np.median(r.ratios[h::2]) for h in (0, 1)] for r in first[:n]])
    twice = np.log([first[i].paired_ms / first[n + i].paired_ms for i in range(n // 2)])
    a, b = (np.log([r.paired_ms for r in recs[:n]]) for recs in calls)
    d = a - b
    within, same_file, two = float(np.std(halves[:, 0] - halves[:, 1])), float(np.std(twice)), float(np.std(d))
    tau = float(kendalltau(a, b).statistic)
    print(f"  even against odd rounds of one measurement: log sd of the ratio {100 * within:4.2f}%")
    print(f"  the same file entered twice in one measurement: log sd {100 * same_file:4.2f}%")
    print(f"  two measurements: log sd {100 * two:4.2f}% after the common change {100 * (np.exp(d.mean()) - 1):+.2f}%; "
          f"Kendall tau {tau:.3f}")
    note = f"{rounds} rounds x 3 paired runs; {_load()}"
    record("g_sessions", "mobilenet_v3 subnets", "split_half_log_sd", within, note)
    record("g_sessions", "mobilenet_v3 subnets", "same_file_twice_log_sd", same_file)
    record("g_sessions", "mobilenet_v3 subnets", "two_measurements_log_sd", two)
    record("g_sessions", "mobilenet_v3 subnets", "two_measurements_kendall_tau", tau)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer trials (smoke test)")
    ap.add_argument("--resolution", type=int, default=160)
    ap.add_argument("--only", default=None, help="run only these experiments, e.g. g or a,f (default: all)")
    args = ap.parse_args(argv)
    only = set(args.only.split(",")) if args.only else set("abcdefg")
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("hwnas.hw.measure").setLevel(logging.ERROR)  # load is printed per section instead
    torch.manual_seed(0)
    trials = 5 if args.quick else 15
    r = args.resolution
    models = {
        "mobilenetv2": (_randomize_bn(mobilenet_v2_like()), torch.randn(1, 3, r, r)),
        "resnet": (_randomize_bn(resnet_like()), torch.randn(1, 3, r, r)),
    }
    t0 = time.time()
    print(f"device cpu-ort-1t: {get_device('cpu-ort-1t')}; input 1x3x{r}x{r}")
    with tempfile.TemporaryDirectory(prefix="hwnas_bench_") as tmpdir:
        tmp = Path(tmpdir)
        overhead = session_overhead_ms("cpu-ort-1t", repeats=500, rounds=7)
        print(f"session overhead (Identity on 1 float, IOBinding): {1e3 * overhead:.2f} µs")
        record("overhead", "identity", "session_overhead_ms", overhead)
        if only & {"a", "b"}:
            paths = exp_stability(models, tmp, trials)
            if "b" in only:
                exp_profiler(paths, runs=30 if args.quick else 100)
        if only & {"c", "e"}:
            exp_decomposition(models, tmp, overhead, rounds=5 if args.quick else 15)
        if "d" in only:
            exp_fusions(tmp)
        if "f" in only:
            exp_statistics(tmp, rounds=10 if args.quick else 40)
        if "g" in only:
            exp_sessions(tmp, rounds=8 if args.quick else 24, n=10 if args.quick else 30)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    df = pd.DataFrame(rows)
    if RESULTS.exists() and only != set("abcdefg"):  # keep the other experiments' rows of the last full run
        old = pd.read_csv(RESULTS)
        ran = set(df["experiment"])
        df = pd.concat([old[~old["experiment"].isin(ran)], df], ignore_index=True)
    df["value"] = [f"{v:.6g}" if isinstance(v, (float, np.floating)) else v for v in df["value"]]
    df.to_csv(RESULTS, index=False)
    print(f"\nwrote {RESULTS} ({len(df)} rows) in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
