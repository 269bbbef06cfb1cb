"""How well ``hwnas adapt`` carries a learned predictor to another device, against one speed factor, on unseen models.

There is one machine here, so "another device" is another ONNX Runtime *configuration of the same CPU*: the
1-thread predictor adapted to 2 intra-op threads (``cpu-ort-2t``; or ``cpu-ort-1t-basic``, 1 thread at ORT's basic
graph optimisation level, registered here as in ``adapt.py``). Threading helps large GEMMs and convolutions
and not the per-run overhead, so kernel families move apart, as they do on a CPU of another family; it is not a
different CPU, and the output says so. (On this project's shared host, helpers' processes are confined to one
core, so two threads share it there; the printed load and affinity say which case a run was.)

For each target, on the unseen zoo of ``predictor_accuracy.py --unseen`` (hwnas.zoo models at 224 and the
hand-written look-alikes of :mod:`lookalikes`: 26 CNNs and transformers, none a training or adaptation model):

- ``unadapted``: the source predictor as it ships;
- ``speed-check``: the source times the single-factor speed check on the target
  (``hwnas.predict.speed_check``: ``--check-n`` of its training models measured there against their times in
  training; with its size term when the check keeps one);
- ``adapt``: ``hwnas.predict.adapt(source, target, n=--n)``, one factor per kernel family (at most ``--budget`` s);

all against the conventional steady-state median (``STEADY_SETTINGS`` of hwnas.predict.train, as
``predictor_accuracy.py --unseen``), measured twice right after the artefacts (geometric mean; ``retest`` compares
the two). Each model is read once: its predicted time split by kernel family (:func:`hwnas.predict.adapt.family_split`)
gives the unadapted total (the sum) and the adapted one (the split times the factors, what the adapted predictor
predicts; checked against ``predict_latency`` on the first model).

    python benchmarks/adapt_predictor.py --source cpu-ort-1t --targets cpu-ort-2t --n 40

Writes benchmarks/results/adapt_predictor.csv (one row per target and method), adapt_predictor_models.csv and
adapt_predictor.md, each with the load average (``uptime``) of the run.
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import logging
import os
import subprocess
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from _common import RESULTS, pin_threads, register_basic_device, write_table
from latency_accuracy import accuracy_stats
from predictor_accuracy import unseen_models

from hwnas.hw.device import fingerprint, get_device
from hwnas.hw.measure import measure_many
from hwnas.hw.speed import at_model_speed
from hwnas.predict import load_predictor, predict_latency, speed_check
from hwnas.predict.adapt import COLUMNS, adapt, family_split
from hwnas.predict.train import LONG_MS, STEADY_SETTINGS


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def measure_steady(rows: list[dict], device, expected: list[float], measurements: int, seed: int) -> np.ndarray:
    """Each model's steady-state median on ``device`` in ``measurements`` separate measurements (short and long
    models apart, as predictor_accuracy.py --unseen), shape ``(measurements, models)``."""
    out = np.zeros((measurements, len(rows)))
    for c in range(measurements):
        for g, name in enumerate(("short", "long")):
            idx = [i for i, e in enumerate(expected) if (e < LONG_MS) == (name == "short")]
            if idx:
                recs = measure_many([rows[i]["path"] for i in idx], device, dummy_inputs=[rows[i]["x"] for i in idx],
                                    seed=seed + 100 * c + g, progress=True, **STEADY_SETTINGS[name])
                for i, r in zip(idx, recs):
                    out[c, i] = r.median_ms
    return out


def run_target(args, source, rows: list[dict], target: str) -> tuple[list, list, dict]:
    dev = get_device(target)
    timings: dict[str, float] = {"unadapted": 0.0}
    load = {"start": uptime()}

    t0 = time.perf_counter()
    on_target = copy.copy(source)
    on_target.device = dev
    check = speed_check(on_target, n=args.check_n, progress=False)
    timings["speed-check"] = time.perf_counter() - t0
    # what source.with_speed(check) applies (its median factor, or its size term when kept), without its 0.2-5
    # range: two ORT threads confined to one shared core run 10-20x slower than one thread here
    speed = {"factor": check.factor, **({"curve": check.curve()} if check.slope else {})}
    print(f"[{target}] speed check: {check.describe()} ({timings['speed-check']:.0f} s)")

    t0 = time.perf_counter()
    adapted = adapt(source, dev, n=args.n, budget_s=args.budget, seed=args.seed, progress=False,
                    out=Path(args.keep) / f"{Path(str(source.path)).stem}_to_{target}.skops" if args.keep else None)
    timings["adapt"] = time.perf_counter() - t0
    info = adapted.adapted["adapted_from"]
    print(f"[{target}] adapt: {info['factors']} prior {info['prior']} ridge {info['ridge']}; LOO error "
          f"{100 * info['cv_rms']:.2f}% (one factor {100 * info['cv_rms_one_factor']:.2f}%, unadapted "
          f"{100 * info['rms_unadapted']:.2f}%), {timings['adapt']:.0f} s, n {info['n']}, load {info['load_avg']}")
    load["after_adapt"] = uptime()

    factors = np.array([adapted.family_factor(c) for c in COLUMNS])
    readable = [r for r in rows if r["split"] is not None]
    total = np.array([r["split"].sum() for r in readable])
    # the adapted predictor reads a model as ORT runs it on the target (another graph level fuses otherwise)
    same_graph = dev.graph_optimization == source.device.graph_optimization
    on_dev = [r["split"] if same_graph else family_split(source, r["path"], device=dev) for r in readable]
    preds = {"unadapted": total, "speed-check": np.asarray(at_model_speed(total * check.factor, speed)),
             "adapt": np.array([s @ factors for s in on_dev])}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        direct = predict_latency(readable[0]["path"], device=target, predictor=adapted).total_ms
    # the adapted predictor floors each kernel at a tenth of its scaled prediction (hwnas.predict.train); the split
    # times the factors does not, so the two may differ by a small fraction where a factor is far below 1
    assert abs(direct / preds["adapt"][0] - 1) < 2e-3, (direct, preds["adapt"][0])

    expected = list(total / (2.0 if dev.intra_op_threads > 1 else 1.0))
    each = measure_steady(readable, dev, expected, args.measurements, args.seed)
    load["after_measuring"] = uptime()
    meas = np.exp(np.mean(np.log(each), axis=0))
    retest = accuracy_stats(each[0], each[1]) if args.measurements > 1 else {}
    out, detail = [], []
    la = os.getloadavg()[0]
    for k, p in preds.items():
        s = accuracy_stats(p, meas)
        used = {"adapt": info["n"], "speed-check": len(check.ratios), "unadapted": 0}[k]
        out.append([source.device.name, target, k, len(readable), used, round(100 * s["within_5pct"], 1),
                    round(100 * s["within_10pct"], 1), round(s["kendall_tau"], 4), round(s["median_abs_err_pct"], 2),
                    round(s["mean_err_pct"], 2), round(timings[k], 1),
                    round(retest.get("kendall_tau", float("nan")), 4),
                    round(retest.get("median_abs_err_pct", float("nan")), 2), round(la, 2),
                    time.strftime("%Y-%m-%dT%H:%M")])
    for i, r in enumerate(readable):
        detail.append([target, r["model"], r["family"], round(float(meas[i]), 5),
                       json.dumps([round(float(v), 5) for v in each[:, i]])]
                      + [round(float(preds[k][i]), 5) for k in preds])
    return out, detail, {"load": load, "check": check.describe(), "info": info}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--source", default="cpu-ort-1t", help="a shipped predictor name or a .skops file")
    p.add_argument("--targets", default="cpu-ort-2t", help="comma-separated devices (cpu-ort-2t, cpu-ort-1t-basic)")
    p.add_argument("--n", type=int, default=40, help="generator models hwnas adapt measures")
    p.add_argument("--budget", type=float, default=120.0)
    p.add_argument("--check-n", type=int, default=8, help="training models the speed check measures")
    p.add_argument("--measurements", type=int, default=2, help="steady measurements of the unseen zoo")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tag", default="",
                   help="suffix for the result files, for scratch runs; not for committed results")
    p.add_argument("--keep", default=None, help="a folder to write the adapted predictors to (megabytes each)")
    args = p.parse_args()
    pin_threads(1)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    register_basic_device()
    source = load_predictor(args.source)
    start = uptime()
    print(f"source: {args.source} ({source.device.name}, {source.metadata['fingerprint'].get('cpu_model')}); {start}; "
          f"this process may run on cores {sorted(os.sched_getaffinity(0))}")
    print("NOTE: one machine here: the 'other device' is another ONNX Runtime configuration of the same CPU "
          "(threads), not another CPU.")
    with tempfile.TemporaryDirectory(prefix="hwnas-adapt-predictor-bench-") as tmp:
        rows = unseen_models(Path(tmp))
        for r in rows:
            try:
                r["split"] = family_split(source, r["path"])
            except Exception as e:  # an unreadable model is a result, not a crash
                r["split"], r["note"] = None, f"{type(e).__name__}: {str(e)[:120]}"
                print(f"  {r['model']}: not readable ({r['note']})")
        table, detail, notes = [], [], {}
        for target in args.targets.split(","):
            t, d, notes[target] = run_target(args, source, rows, target.strip())
            table += t
            detail += d
    tag = "adapt_predictor" + (f"_{args.tag}" if args.tag else "")
    header = ["source_device", "target_device", "method", "models", "measurements", "within_5pct", "within_10pct",
              "kendall_tau", "median_abs_err_pct", "mean_err_pct", "seconds", "retest_kendall_tau",
              "retest_median_abs_err_pct", "load_avg", "when"]
    write_table(tag, header, table)
    with (RESULTS / f"{tag}_models.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["target_device", "model", "family", "measured_ms", "measurements_ms", "unadapted_ms",
                    "speed_check_ms", "adapt_ms"])
        w.writerows(detail)
    fp = fingerprint(source.device)
    lines = ["# hwnas adapt for a learned predictor, against one speed factor, on the unseen zoo", "",
             f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: `python benchmarks/adapt_predictor.py "
             f"--source {args.source} --targets {args.targets} --n {args.n} --budget {args.budget:g} --check-n "
             f"{args.check_n} --seed {args.seed}`; host {fp.get('cpu_model')} ({fp.get('cpu_id', '')}), "
             f"{os.cpu_count()} cores, this process on cores {sorted(os.sched_getaffinity(0))}.", "",
             "**The 'other device' is another ONNX Runtime configuration of the same CPU** (cpu-ort-2t: 2 intra-op "
             "threads instead of 1; cpu-ort-1t-basic: ORT's basic graph level instead of all; there is one machine "
             "here), not another CPU. Figures from a shared host: noisy.", "",
             f"`uptime` at the start: {start}", ""]
    for target, note in notes.items():
        lines += [f"- {target}: after adapt `{note['load']['after_adapt']}`; after measuring "
                  f"`{note['load']['after_measuring']}`; speed check {note['check']}; adapt factors "
                  f"{note['info']['factors']} (prior {note['info']['prior']}, ridge {note['info']['ridge']}, LOO error "
                  f"{100 * note['info']['cv_rms']:.2f}%, one factor {100 * note['info']['cv_rms_one_factor']:.2f}%)"]
    lines += ["", "| target | method | measurements | within ±5% | within ±10% | Kendall τ | median abs err | "
              "mean err | seconds |", "|---|---|---|---|---|---|---|---|---|"]
    for r in table:
        lines.append(f"| {r[1]} | {r[2]} | {r[4]} | {r[5]}% | {r[6]}% | {r[7]} | {r[8]}% | {r[9]}% | {r[10]} |")
    lines += ["", f"Retest (two steady measurements of the unseen zoo against each other): Kendall τ {table[-1][11]}, "
              f"median abs difference {table[-1][12]}%.", ""]
    unread = [f"{r['model']} ({r['note']})" for r in rows if r["split"] is None]
    if unread:
        lines += [f"Not readable by the predictor: {'; '.join(unread)}.", ""]
    (RESULTS / f"{tag}.md").write_text("\n".join(lines))
    print(f"written: {RESULTS / (tag + '.csv')}, {RESULTS / (tag + '_models.csv')}, {RESULTS / (tag + '.md')}")


if __name__ == "__main__":
    main()
