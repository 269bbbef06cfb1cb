"""How well LUT latency predicts measured ONNX Runtime latency of whole subnets the build never ran.

For each space: N random subnets not among the LUT build's subnets, exported to ONNX and measured end
to end with the LUT's device settings, against ``LatencyProfiler.profile``. Prints and writes
benchmarks/results/latency_accuracy.csv (summary), latency_accuracy_subnets.csv (every subnet) and
latency_accuracy.png (predicted vs measured).

The subnets are measured in ``--measurements`` (4) separate measurements, each with sessions of its own, of
``rounds / measurements`` interleaved rounds of at least 3 runs per subnet, each run between two runs of the
LUT's reference subnet; a subnet's time is the geometric mean over the measurements. Two measurements of the
same models differ model by model by more than the halves of one (1.3% to 2.7% against 0.5% for
``mobilenet_v3`` subnets, see ``hwnas.hw.measure``), so one measurement is one draw. Each space gets two rows:
``measured_as`` the LUT's own statistic (``paired``: the median ratio of the runs to the reference runs around
them, times the median of those reference means, which the LUT is built to predict and which cancels the slow
phases of a shared machine) and ``median`` (the median of the same runs, which moves with how much of the run
other tenants took).

    python benchmarks/latency_accuracy.py --spaces digits,mobilenet_v2,mobilenet_v3 --device cpu-ort-1t --n 100

The columns ``retest_kendall_tau`` and ``retest_rmspe`` compare the geometric mean of the even measurements
with that of the odd ones (each of half as many measurements as the figure itself): how far two measurements
of the same models agree on this machine, a ceiling for the agreement of any prediction with one of them.
``shape_error_sd`` is the standard deviation of log(predicted / measured) (the error up to a common factor),
``measurement_noise_sd`` the part of it the measurement's own noise explains (the variance of the two halves'
log difference over four is the noise variance of their mean), and ``lut_error_sd`` the rest, the LUT's own.

A third row, ``measured_as`` ``steady``, is hwnas's definition of latency and comes first: the held-out subnets
measured twice more with the steady protocol (``measure_many(method="steady")``: warm-up, then consecutive runs in
turns of 100 ms, ``--steady-rounds`` rounds), the geometric mean of the two; a LUT calibrated to the steady-state
level (``settings["definition"]``) predicts it, an older one the paired level.

The ``corrected_*`` columns scale the predictions by the machine's speed now against the LUT build, as
``hwnas.hw.speed_check`` measures it: the median over ``--refs`` (16) of the build's own subnets, measured in the
same run, of their time now over their time at the build (for the ``steady`` row of a LUT at the steady-state
level: measured steady, against the LUT's steady-level times, as the library's check does; otherwise paired, in
the same rounds) (the pairing reference's time now over its time at
the build gives a second estimate, printed). A shared machine drifts by several percent between a build and a
check, and not always all models alike: when the build subnets' ratios follow their size, the check keeps a
size term (``speed_size_slope``, see ``hwnas.hw.SpeedCheck``) and ``corrected_*`` applies the factor for each
subnet's size, what ``lut.with_speed(check)`` predicts; ``one_factor_*`` apply the median factor to all. The raw
columns are the LUT as it ships. ``--rescore`` predicts the subnets of an earlier run again with other LUTs
(e.g. after ``hwnas lut refit``), keeping that run's measurements and corrections.

Targets at 1 thread (issue 4): >= 95% within +-5%, 100% within +-10%, Kendall tau >= 0.95.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _common import RESULTS, pin_threads, write_table
from scipy.stats import kendalltau

import hwnas
from hwnas.artifacts import lut_path as shipped_lut
from hwnas.hw import SpeedCheck, measure_many, paired_speed_factor, pairing_reference, reference_subnets
from hwnas.hw.build import input_for
from hwnas.hw.latency import LatencyProfiler
from hwnas.hw.session import export_onnx


def accuracy_stats(pred: np.ndarray, meas: np.ndarray) -> dict[str, float]:
    rel = (pred - meas) / meas
    tau = kendalltau(pred, meas).statistic if len(pred) > 1 else float("nan")
    return {"within_5pct": float(np.mean(np.abs(rel) <= 0.05)), "within_10pct": float(np.mean(np.abs(rel) <= 0.10)),
            "rmspe": float(math.sqrt(np.mean(rel ** 2))), "kendall_tau": float(tau),
            "median_abs_err_pct": float(100 * np.median(np.abs(rel))), "mean_err_pct": float(100 * np.mean(rel))}


def run_space(name: str, device: str, lut_path: str, n: int, seed: int, rounds: int, repeats: int,
              n_ref: int, measurements: int, steady_rounds: int = 3) -> tuple:
    shape = hwnas.spaces.input_shape(name)
    space = hwnas.spaces.create(name).eval()
    x = torch.randn(shape)
    prof = LatencyProfiler(space, x, lut=lut_path)
    seen = {json.dumps(s["sample"], sort_keys=True) for s in prof.lut.subnets}
    rng = np.random.default_rng(seed)
    samples = []
    while len(samples) < n:
        s = space.random_sample(rng)
        key = json.dumps(s, sort_keys=True)
        if key not in seen:
            seen.add(key)
            samples.append(s)
    # The LUT's own build subnets, measured in the same interleaved rounds: how much faster or slower the
    # machine runs now than at the build (hwnas.hw.speed_check does the same on its own).
    refs = reference_subnets(prof.lut, space, x, n=n_ref, seed=seed) if n_ref else []
    pair = pairing_reference(prof.lut, space, x)  # the subnet the LUT's own end-to-end times were paired with
    with tempfile.TemporaryDirectory(prefix="hwnas-acc-") as work:
        paths, inputs = [], []
        for i, s in enumerate(samples + [r["sample"] for r in refs]):
            xi = input_for(space, s, x)
            paths.append(export_onnx(hwnas.export(space, s), xi, Path(work) / f"{i}.onnx"))
            inputs.append(xi)
        kw = {}
        if pair is not None:
            kw["reference_input"] = input_for(space, pair, x)
            kw["reference"] = export_onnx(hwnas.export(space, pair), kw["reference_input"], Path(work) / "pair.onnx")
        t0 = time.perf_counter()
        # separate measurements: two measurements of the same models differ by more than the halves of one
        # (hwnas.hw.measure), so the figure is their geometric mean and the retest compares them
        calls = []
        for c in range(measurements):
            print(f"{name}: measurement {c + 1} of {measurements}")
            calls.append(measure_many(paths, device, dummy_inputs=inputs, rounds=rounds // measurements,
                                      repeats=repeats, progress=True, seed=seed + 1000 * c, min_turn_ms=2.0,
                                      **kw))
        # hwnas's definition of latency: the steady-state median (warm-up, then consecutive runs in turns of
        # 100 ms), two separate measurements of the held-out subnets, right after the paired ones
        # (the build subnets too: a steady LUT's speed check measures them steady, as hwnas.hw.speed_check does)
        steady_calls = [measure_many(paths, device, dummy_inputs=inputs, method="steady",
                                     rounds=steady_rounds, progress=True, seed=seed + 7000 + c)
                        for c in range(2 if steady_rounds else 0)]
        seconds = time.perf_counter() - t0
    every = [rec for recs in calls for rec in recs[:n]]
    stat = prof.lut.settings.get("statistic", "median")
    paired = paired_speed_factor(prof.lut, x, every) if pair is not None else None
    names = ("paired", "median") if pair is not None else ("p25", "median")
    # per statistic: (models, measurements)
    each = {name: np.array([[recs[i].stat(name) for recs in calls] for i in range(len(paths))]) for name in names}
    mean = {name: np.exp(np.log(v).mean(axis=1)) for name, v in each.items()}
    # the correction: the build subnets now against at the build, as hwnas.hw.speed_check measures it (the pairing
    # reference alone is one model, with a time of its own in each measurement; printed for comparison)
    # paired now against paired at the build (a LUT at the steady-state level keeps them in end_to_end_paired_ms)
    then = [r.get("end_to_end_paired_ms", r["end_to_end_ms"]) for r in refs]
    # a LUT measured steady from the start (a multi-thread device) has no paired level: its interleaved rounds
    # are compared by their median here, and by the steady check below
    check = SpeedCheck.from_ratios([mean[stat if stat in mean else "median"][n + j] / t for j, t in enumerate(then)],
                                   times_ms=then) if refs else None
    if check is None:
        factor = paired if paired is not None else float("nan")
        check = SpeedCheck.from_ratios([factor]) if math.isfinite(factor) else None
    print(f"{name}: speed factor {check.describe() if check else 'none'} ({len(refs)} build subnets measured "
          f"again), {paired if paired is not None else float('nan'):.4f} (pairing reference)")
    meas = {name: v[:n] for name, v in mean.items()}
    # Repeatability: the even against the odd measurements (the first against the second with two). How
    # well two measurements of the same models agree bounds how well any predictor can agree with one of them.
    halves = {name: np.stack([np.exp(np.log(v[:n, h::2]).mean(axis=1)) for h in (0, 1)], axis=1)
              for name, v in each.items()} if measurements > 1 else \
        {name: np.array([[np.median(r.times_ms[h::2]) if name == "median" else np.median(r.ratios[h::2]) *
                          r.reference_ms for h in (0, 1)] for r in calls[0][:n]]) for name in names}
    checks = {}
    if steady_calls:
        st_all = np.array([[recs[i].median_ms for recs in steady_calls] for i in range(len(paths))])
        meas["steady"] = np.exp(np.log(st_all[:n]).mean(axis=1))
        halves["steady"] = st_all[:n]
        if refs and prof.lut.definition == "steady":  # the steady check of a steady LUT: steady now / LUT's then
            st_ref = np.exp(np.log(st_all[n:]).mean(axis=1))
            checks["steady"] = SpeedCheck.from_ratios([t / r["end_to_end_ms"] for t, r in zip(st_ref, refs)],
                                                      times_ms=[r["end_to_end_ms"] for r in refs])
            print(f"{name}: steady speed factor {checks['steady'].describe()}")
    pred = np.array([prof.profile(s) for s in samples])
    per_call = [json.dumps([round(float(v), 6) for v in each[stat if stat in each else "median"][i]]) for i in range(n)]
    return samples, pred, meas, halves, seconds, check, stat, per_call, checks


def rescore(subnets_csv: Path, lut_dir: str, tag: str) -> None:
    """Score an earlier run's measured subnets against the LUTs in ``lut_dir`` (e.g. refitted ones)."""
    import pandas as pd

    runs = pd.read_csv(subnets_csv)
    rows = []
    for (name, device), d in runs.groupby(["space", "device"], sort=False):
        space = hwnas.spaces.create(name).eval()
        prof = LatencyProfiler(space, torch.randn(hwnas.spaces.input_shape(name)),
                               lut=f"{lut_dir}/{name}_{device}.json")
        pred = prof.profile_batch([json.loads(s) for s in d["sample"]])
        meas = d["measured_ms"].to_numpy()
        factor = (d["speed_corrected_ms"] / d["predicted_ms"]).to_numpy()  # that run's speed factor for each subnet
        st, sc = accuracy_stats(pred, meas), accuracy_stats(pred * factor, meas)
        if "measurements_ms" in d:
            each = np.array([json.loads(v) for v in d["measurements_ms"]])
            halves = [np.exp(np.log(each[:, h::2]).mean(axis=1)) for h in (0, 1)]
            rt, noise = accuracy_stats(*halves), float(np.var(np.log(halves[0] / halves[1])) / 4)
        else:  # runs before the separate measurements were saved: no retest, noise unknown (taken as none)
            rt, noise = {"kendall_tau": float("nan")}, 0.0
        own = math.sqrt(max(0.0, float(np.var(np.log(pred / meas))) - noise))
        sel = prof.lut.calibration.get("selected") or {}
        rows.append((name, device, len(d), st["within_5pct"], st["within_10pct"], st["kendall_tau"],
                     float(np.median(factor)),
                     sc["within_5pct"], sc["within_10pct"], sc["rmspe"], sc["mean_err_pct"], rt["kendall_tau"], own,
                     sel.get("per_node", True), prof.lut.calibration.get("refined", {}).get("ridge")))
    header = ["space", "device", "subnets", "within_5pct", "within_10pct", "kendall_tau", "speed_factor",
              "corrected_within_5pct", "corrected_within_10pct", "corrected_rmspe", "corrected_mean_err_pct",
              "retest_kendall_tau", "lut_error_sd", "per_node_term", "ridge"]
    write_table(f"latency_accuracy_rescored{tag}", header, rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spaces", default="digits,mobilenet_v2,mobilenet_v3")
    ap.add_argument("--device", default="cpu-ort-1t")
    ap.add_argument("--lut-dir", default=str(shipped_lut("digits").parent),
                    help="folder of <space>_<device>.json LUTs (default: the shipped ones, hwnas/data/lut)")
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=40,
                    help="interleaved rounds in all (many short rounds), shared among the measurements")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per subnet per round (each paired)")
    ap.add_argument("--refs", type=int, default=16,
                    help="LUT build subnets measured alongside, for the speed-corrected columns (0: none)")
    ap.add_argument("--measurements", type=int, default=4,
                    help="separate measurements (rounds/measurements rounds each, sessions of their own): the "
                         "time is their geometric mean, the retest compares them")
    ap.add_argument("--steady-rounds", type=int, default=3,
                    help="rounds of each of two steady-state measurements of the held-out subnets (0: none)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--tag", default="",
                    help="suffix for the result files, for scratch runs; not for committed results")
    ap.add_argument("--rescore", metavar="SUBNETS_CSV", default=None,
                    help="measure nothing: predict the subnets of an earlier run (a latency_accuracy_subnets*.csv) "
                         "with the LUTs in --lut-dir, keep that run's measurements and speed factor, and write "
                         "latency_accuracy_rescored<tag>.csv")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    pin_threads(1)
    if args.rescore:
        rescore(Path(args.rescore), args.lut_dir, args.tag)
        return
    rows, per_subnet, plots = [], [], []
    for name in args.spaces.split(","):
        lut_path = f"{args.lut_dir}/{name}_{args.device}.json"
        samples, pred, meas, halves, seconds, paired_check, stat, per_call, checks = run_space(
            name, args.device, lut_path, args.n, args.seed, args.rounds, args.repeats, args.refs, args.measurements,
            args.steady_rounds)
        # the steady-state median first (hwnas's definition, what a calibrated LUT predicts), then the LUT's own
        # build statistic and the median of the paired runs for comparison; each row corrected by the speed check
        # hwnas.hw.speed_check would make for this LUT (steady for a steady LUT, else paired)
        for which in dict.fromkeys([*(["steady"] if "steady" in meas else []), stat, "median"]):
            check = checks["steady"] if which == "steady" and "steady" in checks else paired_check
            factor = check.factor if check else float("nan")
            now = pred * check.factor_at(pred) if check else pred * factor  # what lut.with_speed(check) predicts
            m = meas[which]
            st = accuracy_stats(pred, m)
            nan = {k: float("nan") for k in st}
            sc = accuracy_stats(now, m) if check else nan
            s1 = accuracy_stats(pred * factor, m) if check else nan  # one factor for every size
            rt = accuracy_stats(halves[which][:, 0], halves[which][:, 1])
            # how much of the disagreement the measurement's own noise explains: the two halves' log difference
            # has four times the variance of the noise of their mean (all up to a common factor)
            noise = float(np.var(np.log(halves[which][:, 0] / halves[which][:, 1])) / 4)
            total = float(np.var(np.log(pred / m)))
            own = math.sqrt(max(0.0, total - noise))
            rows.append((name, args.device, which, len(samples), st["within_5pct"], st["within_10pct"], st["rmspe"],
                         st["kendall_tau"], st["median_abs_err_pct"], st["mean_err_pct"], factor,
                         check.slope if check else float("nan"), sc["within_5pct"], sc["within_10pct"], sc["rmspe"],
                         sc["mean_err_pct"], s1["within_5pct"], s1["within_10pct"], float(np.median(m)),
                         rt["kendall_tau"], rt["rmspe"], math.sqrt(total), math.sqrt(noise), own, seconds / 60))
        per_subnet += [(name, args.device, json.dumps(s), p, m_stat, med, c, pc)
                       for s, p, m_stat, med, c, pc in zip(samples, pred, meas[stat], meas["median"], now, per_call)]
        plots.append((name, pred, meas[stat], stat))
    header = ["space", "device", "measured_as", "subnets", "within_5pct", "within_10pct", "rmspe", "kendall_tau",
              "median_abs_err_pct", "mean_err_pct", "speed_factor", "speed_size_slope", "corrected_within_5pct",
              "corrected_within_10pct", "corrected_rmspe", "corrected_mean_err_pct", "one_factor_within_5pct",
              "one_factor_within_10pct", "median_measured_ms",
              "retest_kendall_tau", "retest_rmspe", "shape_error_sd", "measurement_noise_sd", "lut_error_sd",
              "measure_minutes"]
    write_table(f"latency_accuracy{args.tag}", header, rows)
    import csv

    with (RESULTS / f"latency_accuracy_subnets{args.tag}.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["space", "device", "sample", "predicted_ms", "measured_ms", "measured_median_ms",
                    "speed_corrected_ms", "measurements_ms"])
        w.writerows(per_subnet)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(plots), figsize=(4.2 * len(plots), 4), squeeze=False)
    for ax, (name, pred, meas, stat) in zip(axes[0], plots):
        lo, hi = min(pred.min(), meas.min()), max(pred.max(), meas.max())
        ax.plot([lo, hi], [lo, hi], "k-", lw=0.8)
        ax.fill_between([lo, hi], [lo * 0.95, hi * 0.95], [lo * 1.05, hi * 1.05], color="g", alpha=0.15, label="+-5%")
        ax.scatter(meas, pred, s=10)
        ax.set_xlabel(f"measured ms (ONNX Runtime, {stat} of runs)")
        ax.set_ylabel("predicted ms (LUT)")
        ax.set_title(f"{name} ({args.device})")
        ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(RESULTS / f"latency_accuracy{args.tag}.png", dpi=110)
    print(f"written: {RESULTS / f'latency_accuracy{args.tag}.png'}")


if __name__ == "__main__":
    main()
