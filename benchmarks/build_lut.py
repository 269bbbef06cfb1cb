"""Build (or resume) a latency LUT for a reference space on a device, and print how long it took.

    python benchmarks/build_lut.py --space mobilenet_v3 --device cpu-ort-1t --out mobilenet_v3_cpu-ort-1t.json

(To ship a LUT, build it into hwnas/data/lut/<space>_<device>.json of the checkout; hwnas.artifacts finds it by name.)

Resumable: killed and started again with the same --out, it continues with what is missing. Prints the
number of kernel signatures, subnets profiled, build minutes and the calibration fit, and appends a row
to benchmarks/results/build_lut.csv.
"""

from __future__ import annotations

import argparse
import logging
import time

import torch
from _common import append_row, pin_threads

import hwnas
from hwnas.hw.build import build_lut, space_signatures


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", required=True, help=f"one of {hwnas.spaces.list()}")
    ap.add_argument("--input", default=None, help="input shape, e.g. 1,3,224,224 (default per space)")
    ap.add_argument("--device", default="cpu-ort-1t")
    ap.add_argument("--out", required=True)
    ap.add_argument("--repeats", type=int, default=6, help="measurements per kernel signature (each in another subnet)")
    ap.add_argument("--runs", type=int, default=30, help="profiled runs per subnet")
    ap.add_argument("--random-subnets", type=int, default=60,
                    help="uniformly random subnets profiled after coverage, for calibration")
    ap.add_argument("--e2e-rounds", type=int, default=20,
                    help="rounds of the final interleaved end-to-end pass over all build subnets")
    ap.add_argument("--max-subnets", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    pin_threads(1)
    shape = tuple(int(d) for d in args.input.split(",")) if args.input else hwnas.spaces.input_shape(args.space)
    space = hwnas.spaces.create(args.space).eval()
    x = torch.randn(shape)
    n_sigs = len(space_signatures(space, x))
    t0 = time.perf_counter()
    lut = build_lut(space, x, args.device, args.out, repeats_per_kernel=args.repeats, runs=args.runs,
                    max_subnets=args.max_subnets, seed=args.seed, space_name=args.space,
                    random_subnets=args.random_subnets, end_to_end_rounds=args.e2e_rounds)
    minutes = (time.perf_counter() - t0) / 60
    total_minutes = lut.settings.get("build_seconds", 0.0) / 60
    cal = lut.calibration
    print(f"\nspace {args.space} input {shape} device {args.device}")
    print(f"kernel signatures in the space: {n_sigs}; in the LUT: {len(lut)}; subnets profiled: {len(lut.subnets)}")
    print(f"build time this run: {minutes:.2f} min; all runs of this file: {total_minutes:.2f} min (target <= 15)")
    print(f"calibration: scale {cal['scale']:.4f}, per node {cal['per_node_ms'] * 1000:.2f} us, overhead "
          f"{cal['overhead_ms'] * 1000:.1f} us, in-sample median |error| {100 * cal.get('median_abs_rel_err', 0):.2f}%")
    path = append_row("build_lut", ["space", "input", "device", "signatures", "subnets", "minutes_this_run",
                                    "minutes_total", "calibration_median_abs_rel_err", "refined_median_abs_rel_err"],
                      [args.space, "x".join(map(str, shape)), args.device, n_sigs, len(lut.subnets),
                       round(minutes, 3), round(total_minutes, 3), round(cal.get("median_abs_rel_err", 0), 5),
                       round(cal.get("refined", {}).get("median_abs_rel_err", 0), 5)])
    print(f"written: {args.out} and {path}")


if __name__ == "__main__":
    main()
