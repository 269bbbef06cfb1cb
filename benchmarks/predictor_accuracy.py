"""How well the learned latency predictor predicts models it never saw, measured with ONNX Runtime.

(a) random subnets of the reference spaces (mobilenet_v2, mobilenet_v3 at 224): predicted by
    ``LatencyProfiler(space, x, predictor=...)`` without any LUT; the predictor's training data has no
    subnet of any space (only random models of hwnas.predict.generator).
(b) a zoo of classic architectures written without torchvision (hwnas.zoo: ResNet-18/50, MobileNetV2,
    MobileNetV3-Large/Small, EfficientNet-B0, ShuffleNetV2, SqueezeNet, VGG-11-BN, VGG-16) at 224 and 160
    (VGG only at 224: its 7x7 adaptive pool exports to ONNX only when 7 divides the last feature map), each
    predicted from the PyTorch model (``predict_latency(module, x)``) and from its ONNX file
    (``predict_latency("model.onnx")``, ORT's fused graph).

Every model is exported and measured end to end with the predictor's device settings the way the training
models' end-to-end times were measured (``hwnas.predict.train.measure_interleaved``): all models under 25 ms
interleaved in one measurement, the longer ones in another, each run between two runs of one open session of
the predictor's reference model (the paired statistic of ``hwnas.hw.measure``: a shared machine's slow phases
cancel), and all of it twice (``--measurements``), each time with sessions of its own; a model's time is the
geometric mean of the two, and ``retest_*`` compares them (how far two measurements of the same models agree
here, a ceiling for any prediction). The predictions are at the speed of the training session. The machine's
speed now against then (``speed_factor``) is the speed check of the LUT benchmark done with the predictor's own
training models (``<predictor>.data.json``): all of them are measured again, interleaved with the test models in
the same measurements, and the factor is the median of their times now over their stored times. Small models
drift more than large ones on this host, so the check also fits a size term (``speed_size_slope``: the slope of
ln(ratio) over ln(time then), kept only when it predicts each training model's ratio from the others' better
than the median does; see ``hwnas.hw.SpeedCheck``). The ``corrected_*`` columns compare the predictions times
the check's factor for their size (what ``predictor.with_speed(check)`` gives), ``one_factor_*`` times the
median factor, the raw ones the predictions as they are.
(The reference model timed alone, ``reference_alone_factor``, was 4% to 12% off the other models' change in three
runs: one model alone does not tell the machine's speed.) Prints and writes
benchmarks/results/predictor_accuracy.csv (summary), predictor_accuracy_models.csv (every model) and
predictor_accuracy.png (predicted vs measured).

    python benchmarks/predictor_accuracy.py --device cpu-ort-1t --n 60

Targets at 1 thread (issue 5): (a) >= 95% within +-10%, (b) >= 90% within +-10%, with <= 1,500 kernel
measurements and <= 20 minutes of building.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from _common import RESULTS, pin_threads, write_table
from latency_accuracy import accuracy_stats

import hwnas
from hwnas import zoo
from hwnas.hw.device import get_device
from hwnas.hw.session import export_onnx
from hwnas.predict import load_predictor, predict_latency, speed
from hwnas.predict.predictor import PredictorError
from hwnas.predict.train import Reference, export_training_model, measure_interleaved

ZOO = ["resnet18", "resnet50", "mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small", "efficientnet_b0",
       "shufflenet_v2_x1_0", "squeezenet1_0", "vgg11_bn", "vgg16"]
ONLY_224 = {"vgg11_bn", "vgg16"}


def subnets(device: str, pred, n: int, seed: int, work: Path) -> list[dict]:
    rows = []
    for name in ("mobilenet_v2", "mobilenet_v3"):
        space = hwnas.spaces.create(name).eval()
        x = torch.randn(1, 3, 224, 224)
        prof = hwnas.LatencyProfiler(space, x, predictor=pred)
        rng = np.random.default_rng([seed, len(name)])
        seen = set()
        for _ in range(n):
            s = space.random_sample(rng)
            while json.dumps(s, sort_keys=True) in seen:
                s = space.random_sample(rng)
            seen.add(json.dumps(s, sort_keys=True))
            path = export_onnx(hwnas.export(space, s), x, work / f"{name}_{len(rows)}.onnx")
            rows.append({"set": "a", "model": name, "sample": json.dumps(s), "resolution": 224,
                         "predicted_ms": prof.profile(s), "path": path, "x": x})
        # the cost-table engine and the whole-model API agree (same kernels; the space's mean model size as
        # the cache context instead of the subnet's own)
        sub = hwnas.export(space, json.loads(rows[-1]["sample"]))
        whole = predict_latency(sub, x, device=device, predictor=pred).total_ms
        assert abs(whole - rows[-1]["predicted_ms"]) < 0.02 * whole, (whole, rows[-1]["predicted_ms"])
    return rows


def zoo_models(device: str, pred, work: Path) -> list[dict]:
    rows = []
    for name in ZOO:
        for res in (224, 160):
            if res != 224 and name in ONLY_224:
                continue
            torch.manual_seed(0)
            model = zoo.create(name).eval()
            x = torch.randn(1, 3, res, res)
            path = export_onnx(model, x, work / f"{name}_{res}.onnx")
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                from_torch = predict_latency(model, x, device=device, predictor=pred)
                from_onnx = predict_latency(path, device=device, predictor=pred)
            notes = "; ".join(sorted({str(w.message)[:80] for w in caught}))
            rows.append({"set": "b", "model": name, "sample": "", "resolution": res,
                         "predicted_ms": from_torch.total_ms, "predicted_onnx_ms": from_onnx.total_ms,
                         "kernels": len(from_torch.layers), "kernels_onnx": len(from_onnx.layers),
                         "path": path, "x": x, "notes": notes})
    return rows


def training_models(pred, work: Path) -> list[dict]:
    """The predictor's own training models (:func:`hwnas.predict.speed.training_models`), for the speed check:
    their stored end-to-end times are at the training session's speed, as the predictions are."""
    try:
        models = speed.training_models(pred)
    except PredictorError as e:
        print(f"no speed check: {e}")
        return []
    rows = []
    for i, m in enumerate(models):
        path, x = export_training_model(m["config"], work / f"training_{i}.onnx")
        rows.append({"set": "speed check", "model": f"training model {i} ({m['config']['style']})", "sample": "",
                     "resolution": m["config"]["input"][2], "predicted_ms": m["end_to_end_ms"], "path": path,
                     "x": x, "training_model": m, "notes": "predicted_ms: its stored time in the training data"})
    return rows


def read_models(path: Path) -> tuple[list[dict], list[dict]]:
    """The rows of an earlier run's ``predictor_accuracy*_models.csv``: the test models, and the training models
    of its speed check (their stored time in ``predicted_ms``)."""
    rows, checks = [], []
    with path.open(newline="") as f:
        for r in csv.DictReader(f):
            row = {**r, "predicted_ms": float(r["predicted_ms"]), "predicted_onnx_ms": float(r["predicted_onnx_ms"]),
                   "measured_ms": float(r["measured_ms"]), "measurements_ms": json.loads(r["measurements_ms"])}
            if r["set"] == "speed check":
                row["training_model"] = {"end_to_end_ms": row["predicted_ms"], "config": r["model"]}
                checks.append(row)
            else:
                rows.append(row)
    return rows, checks


def summarize(rows: list[dict], checks: list[dict], alone: float, tr: dict, device: str, measurements: int,
              tag: str) -> None:
    """Score the measured ``rows`` (raw, and corrected by the speed check of the measured ``checks``); print and
    write ``benchmarks/results/<tag>.csv``."""
    factor, slope, check = float("nan"), float("nan"), None  # how much slower (> 1) the machine runs now
    if checks:
        check = speed.compare_with_training([r["training_model"] for r in checks], [r["measured_ms"] for r in checks])
        factor, slope = check.factor, check.slope
        print(f"speed check: {len(checks)} training models measured again run {check.describe()} their stored "
              f"times (spread: half the interquartile range); the reference alone says {alone:.3f}")
    summary = []
    sets = [("a: space subnets", [r for r in rows if r["set"] == "a"], "predicted_ms"),
            ("b: zoo (from torch)", [r for r in rows if r["set"] == "b"], "predicted_ms"),
            ("b: zoo (from ONNX)", [r for r in rows if r["set"] == "b"], "predicted_onnx_ms")]
    for label, rs, key in sets:
        if not rs:
            continue
        pred_ms = np.array([r[key] for r in rs])
        meas_ms = np.array([r["measured_ms"] for r in rs])
        st = accuracy_stats(pred_ms, meas_ms)
        nan = {k: float("nan") for k in st}
        sc = accuracy_stats(pred_ms * check.factor_at(pred_ms), meas_ms) if check else nan  # what with_speed gives
        s1 = accuracy_stats(pred_ms * factor, meas_ms) if check else nan  # one factor for every size
        rt = accuracy_stats(*(np.array([r["measurements_ms"][k] for r in rs]) for k in (0, 1))) \
            if measurements > 1 else {"kendall_tau": float("nan"), "rmspe": float("nan")}
        summary.append((label, device, len(rs), st["within_5pct"], st["within_10pct"], st["rmspe"],
                        st["kendall_tau"], st["median_abs_err_pct"], st["mean_err_pct"], factor, slope, alone,
                        sc["within_5pct"], sc["within_10pct"], sc["rmspe"], sc["mean_err_pct"], s1["within_5pct"],
                        s1["within_10pct"], s1["mean_err_pct"], rt["kendall_tau"], rt["rmspe"],
                        tr["kernel_measurements"], tr["models"], round(tr["minutes"], 2)))
    header = ["set", "device", "models", "within_5pct", "within_10pct", "rmspe", "kendall_tau", "median_abs_err_pct",
              "mean_err_pct", "speed_factor", "speed_size_slope", "reference_alone_factor", "corrected_within_5pct",
              "corrected_within_10pct", "corrected_rmspe", "corrected_mean_err_pct", "one_factor_within_5pct",
              "one_factor_within_10pct", "one_factor_mean_err_pct", "retest_kendall_tau", "retest_rmspe",
              "kernel_measurements", "training_models", "training_minutes"]
    write_table(tag, header, summary)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu-ort-1t")
    ap.add_argument("--predictor", default=None, help="predictor file or shipped name (default: the shipped one of --device)")
    ap.add_argument("--n", type=int, default=60, help="random subnets per reference space")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--skip-zoo", action="store_true")
    ap.add_argument("--no-speed-check", action="store_true",
                    help="do not measure the training models again (no speed factor, no corrected columns)")
    ap.add_argument("--measurements", type=int, default=2,
                    help="separate measurements of all models (the time is their geometric mean; the retest compares "
                         "the first two)")
    ap.add_argument("--rescore", metavar="MODELS_CSV", default=None,
                    help="measure nothing: score the models of an earlier run (a predictor_accuracy*_models.csv) "
                         "again with this hwnas's speed check, into the same name with _rescored for _models")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    pin_threads(1)
    pred = load_predictor(args.predictor, device=args.device)
    if args.rescore:
        tag = Path(args.rescore).stem.replace("_models", "_rescored")
        summarize(*read_models(Path(args.rescore)), float("nan"), pred.metadata["training"], args.device, 2, tag)
        return
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="hwnas-pacc-") as tmp:
        work = Path(tmp)
        rows = subnets(args.device, pred, args.n, args.seed, work)
        if not args.skip_zoo:
            rows += zoo_models(args.device, pred, work)
        checks = [] if args.no_speed_check else training_models(pred, work)
        ref, alone = None, float("nan")
        ref_meta = pred.metadata.get("reference")
        dev = get_device(args.device)
        if ref_meta:  # the model every training measurement was paired with, and its time alone then
            ref = Reference(dev, work, **ref_meta)
            alone = ref.speed_factor
        # at this session's speed: the predictor predicts at the training session's, the speed check tells the two
        both = rows + checks
        meas = measure_interleaved([r["path"] for r in both], [r["x"] for r in both], dev,
                                   [r["predicted_ms"] for r in both], ref, measurements=args.measurements,
                                   seed=args.seed, progress=True, speed_basis=False)
        if ref is not None:  # the speed alone again after measuring: the mean of before and after
            alone = 0.5 * (alone + ref.time_alone(dev) / ref.ms)
    for r, m in zip(both, meas):
        r["measured_ms"], r["measurements_ms"] = m["ms"], m["measurements_ms"]
    minutes = (time.perf_counter() - t0) / 60
    tr = pred.metadata["training"]
    tag = "predictor_accuracy"
    summarize(rows, checks, alone, tr, args.device, args.measurements, tag)
    with (RESULTS / f"{tag}_models.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["set", "model", "resolution", "sample", "predicted_ms", "predicted_onnx_ms", "measured_ms",
                    "error_pct", "measurements_ms", "notes"])
        for r in rows + checks:
            w.writerow([r["set"], r["model"], r["resolution"], r["sample"], round(r["predicted_ms"], 5),
                        round(r.get("predicted_onnx_ms", float("nan")), 5), round(r["measured_ms"], 5),
                        round(100 * (r["predicted_ms"] / r["measured_ms"] - 1), 2),
                        json.dumps([round(v, 5) for v in r["measurements_ms"]]), r.get("notes", "")])
    print(f"predictor: {tr['kernel_measurements']} kernel measurements from {tr['models']} random training models, "
          f"{tr['minutes']:.2f} min of building; training data: {tr.get('data', '')}")
    print(f"this benchmark: {minutes:.2f} min; per-model rows: {RESULTS / (tag + '_models.csv')}")
    for r in rows:
        if r["set"] == "b":
            print(f"  {r['model']:20s} {r['resolution']}  measured {r['measured_ms']:8.3f} ms  torch "
                  f"{r['predicted_ms']:8.3f} ({100 * (r['predicted_ms'] / r['measured_ms'] - 1):+5.1f}%)  onnx "
                  f"{r['predicted_onnx_ms']:8.3f} ({100 * (r['predicted_onnx_ms'] / r['measured_ms'] - 1):+5.1f}%)")
    _plot(rows, args.device, tag)


def _plot(rows: list[dict], device: str, tag: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9.5, 4.3))
    for ax, (label, rs) in zip(axes, [("(a) space subnets", [r for r in rows if r["set"] == "a"]),
                                      ("(b) zoo at 224 and 160", [r for r in rows if r["set"] == "b"])]):
        if not rs:
            continue
        meas = np.array([r["measured_ms"] for r in rs])
        pred = np.array([r["predicted_ms"] for r in rs])
        lo, hi = min(meas.min(), pred.min()) * 0.9, max(meas.max(), pred.max()) * 1.1
        ax.plot([lo, hi], [lo, hi], "k-", lw=0.8)
        ax.fill_between([lo, hi], [lo * 0.9, hi * 0.9], [lo * 1.1, hi * 1.1], color="g", alpha=0.12, label="+-10%")
        ax.scatter(meas, pred, s=12, label="from torch")
        if rs[0]["set"] == "b":
            ax.scatter(meas, [r["predicted_onnx_ms"] for r in rs], s=12, marker="x", label="from ONNX")
            ax.set_xscale("log")
            ax.set_yscale("log")
        ax.set_xlabel("measured ms (ONNX Runtime)")
        ax.set_ylabel("predicted ms (learned predictor)")
        ax.set_title(f"{label}, {device}")
        ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(RESULTS / f"{tag}.png", dpi=110)
    print(f"written: {RESULTS / (tag + '.png')}")


if __name__ == "__main__":
    main()
