"""How fast hwnas profiles FLOPs and params of mobilenet_v3 subnets at 224, against the way one does it
without hwnas (export the subnet, count with fvcore), measured side by side in one run.

Targets (issue 3): build <= 2 s, >= 50,000 single samples/s, >= 1,000,000 batched samples/s,
>= 1,000x faster than export + fvcore.

    python benchmarks/profile_speed.py [--space mobilenet_v3] [--baseline-samples 20]

Prints a table and writes benchmarks/results/profile_speed.csv. Figures are medians over repeats.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
import warnings

import numpy as np
import torch
from _common import fvcore_count, median_time, pin_threads, write_table

import hwnas


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", default="mobilenet_v3")
    ap.add_argument("--resolution", type=int, default=224)
    ap.add_argument("--single-samples", type=int, default=20000)
    ap.add_argument("--batch", type=int, default=200000)
    ap.add_argument("--baseline-samples", type=int, default=20)
    args = ap.parse_args()
    pin_threads(1)
    warnings.filterwarnings("ignore")
    logging.getLogger("fvcore").setLevel(logging.ERROR)

    space = hwnas.spaces.create(args.space).eval()
    x = torch.randn(1, 3, args.resolution, args.resolution)
    builds = []
    for _ in range(5):
        t0 = time.perf_counter()
        flops = hwnas.FlopsProfiler(space, x)
        params = hwnas.NumParamsProfiler(space, graph=flops.graph)
        builds.append(time.perf_counter() - t0)
    build_s = statistics.median(builds)

    rng = np.random.default_rng(0)
    samples = [space.random_sample(rng) for _ in range(args.single_samples)]

    def run_single():
        for s in samples:
            flops.profile(s)

    single_s = median_time(run_single, repeats=5) / len(samples)
    idx = np.stack([rng.integers(len(v), size=args.batch) for v in space.choices().values()], axis=1)
    batch_s = median_time(lambda: flops.profile_batch(idx), repeats=7) / args.batch
    dict_batch = samples[:20000]
    dict_batch_s = median_time(lambda: flops.profile_batch(dict_batch), repeats=3) / len(dict_batch)

    # the way without hwnas: export the subnet, count with fvcore; interleaved with hwnas on the same samples
    base_times, ours_times, agree = [], [], 0
    for s in samples[: args.baseline_samples]:
        t0 = time.perf_counter()
        subnet = hwnas.export(space, s)
        want = fvcore_count(subnet, x)
        base_times.append(time.perf_counter() - t0)
        want_params = sum(p.numel() for p in subnet.parameters())
        t0 = time.perf_counter()
        for _ in range(1000):
            got = flops.profile(s)
        ours_times.append((time.perf_counter() - t0) / 1000)
        agree += int(got == want and params.profile(s) == want_params)
    base_s = statistics.median(base_times)
    ours_s = statistics.median(ours_times)

    rows = [
        ("build FlopsProfiler + NumParamsProfiler (s)", build_s, "<= 2", build_s <= 2),
        ("single-sample profile (samples/s)", 1 / single_s, ">= 50000", 1 / single_s >= 50000),
        ("batched profile_batch, index array (samples/s)", 1 / batch_s, ">= 1000000", 1 / batch_s >= 1e6),
        ("batched profile_batch, list of dicts (samples/s)", 1 / dict_batch_s, "-", "-"),
        ("export + fvcore per sample (s)", base_s, "-", "-"),
        ("hwnas per sample (s)", ours_s, "-", "-"),
        ("speed-up over export + fvcore (x)", base_s / ours_s, ">= 1000", base_s / ours_s >= 1000),
        (f"FLOPs = fvcore and params = exported ({args.baseline_samples} samples)", f"{agree}/{args.baseline_samples}",
         "all", agree == args.baseline_samples),
    ]
    print(f"space {args.space} at {args.resolution}, {len(space.choices())} labels, "
          f"{space.num_subnets():.3g} subnets, {len(flops.model.tables)} cost tables, params profiler built too\n")
    write_table("profile_speed", ["measure", "value", "target", "met"], rows)


if __name__ == "__main__":
    main()
