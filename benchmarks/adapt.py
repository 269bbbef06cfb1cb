"""How well ``hwnas adapt`` carries a LUT to another device, against a single speed factor and a full rebuild.

There is one machine here, so "another device" is another ONNX Runtime *configuration of the same CPU*: the
1-thread LUT adapted to 2 intra-op threads (``cpu-ort-2t``), and/or to a lower graph optimisation level
(``cpu-ort-1t-basic``, registered here: ``graph_optimization="basic"``, no NCHWc layouts or fused activations).
That changes kernel speeds unevenly (threading helps large convolutions and not the per-run overhead; without
fusions activations cost a node of their own), which is what a CPU of another family does too; it is not a
different CPU, and the printed output says so.

For each target, on ``--held-out`` random subnets of the space that none of the artefacts measured:

- ``unadapted``: the source LUT as it ships;
- ``speed-check``: the source LUT scaled by the old single-factor speed check (``hwnas.hw.speed_check``: 8 build
  subnets measured paired on the target against their times at the build);
- ``adapt``: ``hwnas.hw.adapt(source, target, n=--n)``, a refit per kernel family (at most ``--budget`` s);
- ``rebuild``: a full LUT build for the target (``hwnas lut build``; reused from ``--rebuilt`` if given);

all against plain steady-state measurements (hwnas's definition: warm-up, then consecutive runs, interleaved in
turns of 100 ms; ``measure_many(method="steady")``), two separate measurements taken right after the artefacts
(geometric mean; their disagreement is printed as ``retest``). Columns: % within +-5% / +-10%, Kendall tau, median
absolute error, mean error, and the seconds each artefact took on the target.

    python benchmarks/adapt.py --space digits --source digits --targets cpu-ort-2t --n 40

Writes benchmarks/results/adapt.csv (one row per target and method), adapt_subnets.csv and adapt.md.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _common import RESULTS, pin_threads, register_basic_device, write_table
from scipy.stats import kendalltau

import hwnas
from hwnas.hw import LUT, adapt, build_lut, get_device, measure_many
from hwnas.hw.build import input_for
from hwnas.hw.latency import LatencyProfiler
from hwnas.hw.session import export_onnx
from hwnas.hw.speed import speed_check


def stats(pred: np.ndarray, meas: np.ndarray) -> dict[str, float]:
    rel = (pred - meas) / meas
    return {"within_5pct": float(np.mean(np.abs(rel) <= 0.05)), "within_10pct": float(np.mean(np.abs(rel) <= 0.10)),
            "kendall_tau": float(kendalltau(pred, meas).statistic),
            "median_abs_err_pct": float(100 * np.median(np.abs(rel))), "mean_err_pct": float(100 * np.mean(rel))}


def held_out(space, luts: list[LUT], n: int, seed: int) -> list[dict]:
    seen = {json.dumps(r["sample"], sort_keys=True) for lut in luts for r in lut.subnets}
    rng = np.random.default_rng(seed)
    out: list[dict] = []
    while len(out) < n:
        s = space.random_sample(rng)
        key = json.dumps(s, sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append(s)
    return out


def run_target(args, space, x, source: LUT, target: str) -> tuple[list, list]:
    dev = get_device(target)
    timings: dict[str, float] = {"unadapted": 0.0}
    luts: dict[str, LUT] = {"unadapted": source}

    t0 = time.perf_counter()
    on_target = copy.copy(source)
    on_target.device = dev
    check = speed_check(on_target, space, x, n=8, progress=False)
    luts["speed-check"] = source.with_speed(check)
    timings["speed-check"] = time.perf_counter() - t0
    print(f"[{target}] speed check: {check.describe()} ({timings['speed-check']:.0f} s)")

    t0 = time.perf_counter()
    luts["adapt"] = adapt(source, dev, n=args.n, budget_s=args.budget, seed=args.seed, progress=False,
                          out=RESULTS / f"adapt_{Path(args.source).stem}_to_{target}.json")
    timings["adapt"] = time.perf_counter() - t0
    info = luts["adapt"].adapted["adapted_from"]
    print(f"[{target}] adapt: {info['factors']} prior {info['prior']} ridge {info['ridge']}; LOO error "
          f"{100 * info['cv_rms']:.2f}% (one factor {100 * info['cv_rms_one_factor']:.2f}%, unadapted "
          f"{100 * info['rms_unadapted']:.2f}%), {timings['adapt']:.0f} s")

    rebuilt_path = Path(args.rebuilt.format(target=target)) if args.rebuilt else \
        RESULTS / f"adapt_rebuild_{args.space}_{target}.json"
    t0 = time.perf_counter()
    if rebuilt_path.exists() and (LUT.load(rebuilt_path, check_fingerprint=False).settings.get("finished")):
        rebuilt = LUT.load(rebuilt_path)
        timings["rebuild"] = float(rebuilt.settings.get("build_seconds", float("nan")))
        print(f"[{target}] rebuild: reused {rebuilt_path} (built in {timings['rebuild']:.0f} s)")
    else:
        rebuilt = build_lut(space, x, dev, rebuilt_path, repeats_per_kernel=source.settings.get("repeats_per_kernel", 3),
                            space_name=args.space, progress=False, seed=args.seed)
        timings["rebuild"] = time.perf_counter() - t0
        print(f"[{target}] rebuild: {timings['rebuild']:.0f} s -> {rebuilt_path}")
    luts["rebuild"] = rebuilt

    samples = held_out(space, list(luts.values()), args.held_out, args.seed + 1000)
    preds = {k: LatencyProfiler(space, x, lut=lut).profile_batch(samples) for k, lut in luts.items()}
    with tempfile.TemporaryDirectory(prefix="hwnas-adapt-bench-") as work:
        paths, inputs = [], []
        for i, s in enumerate(samples):
            xi = input_for(space, s, x)
            paths.append(export_onnx(hwnas.export(space, s).eval(), xi, Path(work) / f"h{i}.onnx"))
            inputs.append(xi)
        meas_runs = [np.array([r.median_ms for r in measure_many(paths, dev, dummy_inputs=inputs, method="steady",
                                                                 rounds=args.rounds, seed=args.seed + k)])
                     for k in range(2)]
    meas = np.sqrt(meas_runs[0] * meas_runs[1])
    retest = stats(meas_runs[0], meas_runs[1])
    load = os.getloadavg()[0]
    rows, detail = [], []
    for k, pred in preds.items():
        s = stats(pred, meas)
        rows.append([args.space, source.device.name, target, k, len(samples),
                     args.n if k == "adapt" else (8 if k == "speed-check" else
                                                  (len(rebuilt.subnets) if k == "rebuild" else 0)),
                     round(100 * s["within_5pct"], 1), round(100 * s["within_10pct"], 1), round(s["kendall_tau"], 4),
                     round(s["median_abs_err_pct"], 2), round(s["mean_err_pct"], 2), round(timings[k], 1),
                     round(retest["kendall_tau"], 4), round(retest["median_abs_err_pct"], 2), round(load, 2),
                     time.strftime("%Y-%m-%dT%H:%M")])
    for i, smp in enumerate(samples):
        detail.append([target, i, round(float(meas[i]), 6)] + [round(float(preds[k][i]), 6) for k in preds] +
                      [json.dumps(smp, sort_keys=True)])
    return rows, detail


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--space", default="digits")
    p.add_argument("--source", default="digits", help="a shipped LUT name or a LUT file")
    p.add_argument("--targets", default="cpu-ort-2t", help="comma-separated devices (cpu-ort-2t, cpu-ort-1t-basic)")
    p.add_argument("--n", type=int, default=40, help="subnets hwnas adapt measures")
    p.add_argument("--budget", type=float, default=120.0)
    p.add_argument("--held-out", type=int, default=60)
    p.add_argument("--rounds", type=int, default=3, help="rounds of each steady measurement of the held-out subnets")
    p.add_argument("--rebuilt", default=None, help="an existing rebuilt LUT ({target} is replaced); else build one")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tag", default="",
                   help="suffix for the result files, for scratch runs; not for committed results")
    args = p.parse_args()
    pin_threads(1)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    register_basic_device()
    space = hwnas.spaces.create(args.space).eval()
    x = torch.randn(hwnas.spaces.input_shape(args.space))
    source = LUT.load(args.source)
    print(f"source: {args.source} ({source.device.name}, {source.fingerprint.get('cpu_model')}, predicts "
          f"{source.definition}); load {os.getloadavg()}")
    print("NOTE: one machine here: each 'other device' is another ONNX Runtime configuration of the same CPU "
          "(threads / graph optimisation level), not another CPU.")
    rows, detail = [], []
    for target in args.targets.split(","):
        r, d = run_target(args, space, x, source, target.strip())
        rows += r
        detail += d
    header = ["space", "source_device", "target_device", "method", "held_out", "measurements", "within_5pct",
              "within_10pct", "kendall_tau", "median_abs_err_pct", "mean_err_pct", "seconds", "retest_kendall_tau",
              "retest_median_abs_err_pct", "load_avg", "when"]
    write_table(f"adapt{args.tag}", header, rows)
    import csv

    with (RESULTS / f"adapt_subnets{args.tag}.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["target_device", "subnet", "measured_ms", "unadapted_ms", "speed_check_ms", "adapt_ms",
                    "rebuild_ms", "sample"])
        w.writerows(detail)
    lines = ["# hwnas adapt against a single speed factor and a full rebuild", "",
             f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, `python benchmarks/adapt.py --space "
             f"{args.space} --source {args.source} --targets {args.targets} --n {args.n} --seed {args.seed}"
             f"{' --rebuilt ' + args.rebuilt if args.rebuilt else ''}`; host "
             f"{source.fingerprint.get('cpu_model')} ({hwnas.hw.fingerprint('cpu-ort-1t').get('cpu_id')}), 2 cores, "
             f"load average {rows[-1][14]} at the end.", "",
             "**The 'other device' is another ONNX Runtime configuration of the same CPU** (there is one machine "
             "here), not another CPU.", "",
             "| target | method | measurements | within ±5% | within ±10% | Kendall τ | median abs err | mean err | "
             "seconds |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r[2]} | {r[3]} | {r[5]} | {r[6]}% | {r[7]}% | {r[8]} | {r[9]}% | {r[10]}% | {r[11]} |")
    lines += ["", f"Retest (two steady measurements of the held-out subnets against each other): Kendall τ "
              f"{rows[-1][12]}, median abs difference {rows[-1][13]}%.", ""]
    (RESULTS / f"adapt{args.tag}.md").write_text("\n".join(lines))
    print(f"written: {RESULTS / f'adapt_subnets{args.tag}.csv'}, {RESULTS / f'adapt{args.tag}.md'}")


if __name__ == "__main__":
    main()
