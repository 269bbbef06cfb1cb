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

``--unseen`` (issue 17): an unseen zoo of CNNs and transformers instead: the hwnas.zoo models at 224 and the
hand-written look-alikes of :mod:`lookalikes` (ViT/DeiT, Swin-like window attention, MobileViT, LeViT,
EfficientFormer, BERT, GPT-2, ConvNeXt, RegNetY, DenseNet-like), each exported to ONNX and predicted from the
file (and from the module), against the conventional steady-state median of ONNX Runtime at the predictor's
device settings (warm-up, then consecutive runs in turns of >= 150 ms, turns interleaved across models, the
median; :data:`hwnas.predict.train.STEADY_SETTINGS`), measured twice in this run with sessions of their own
(geometric mean). Several predictors (``--predictor`` and ``--compare``) are scored on the same measurements. Each
predictor's own training models (8 of them) are measured in the same turns: ``speed_factor`` (median of now over
then) says how the machine's speed differs from the training session's, ``corrected_*`` columns apply it.
Writes benchmarks/results/predictor_accuracy_unseen[_TAG].csv (summary) and ..._models.csv (per model).

    python benchmarks/predictor_accuracy.py --unseen --predictor new.skops --compare predictors/cpu-ort-1t.skops

``--unseen --rescore RUN_models.csv [...]`` measures nothing: the unseen zoo is exported again (the same models,
seeded) and predicted by ``--predictor`` (and ``--compare``), against the times stored by earlier runs (each
file, and all of them pooled: the geometric mean of a model's times). Writes
benchmarks/results/predictor_accuracy_unseen_rescored[_TAG].csv and ..._models.csv.

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
from hwnas.hw.measure import measure_many
from hwnas.hw.session import export_onnx
from hwnas.predict import load_predictor, predict_latency, speed
from hwnas.predict.predictor import PredictorError
from hwnas.predict.train import LONG_MS, Reference, export_training_model, measure_interleaved

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


def unseen_models(work: Path) -> list[dict]:
    """The unseen zoo: hwnas.zoo at 224 and the look-alikes, exported to ONNX."""
    import lookalikes

    rows = []
    for name in UNSEEN_ZOO:
        torch.manual_seed(0)
        model, x = zoo.create(name).eval(), torch.randn(1, 3, 224, 224)
        rows.append({"model": name, "family": "cnn" if not name.startswith("vit") else "transformer",
                     "module": model, "x": x, "path": export_onnx(model, x, work / f"{name}.onnx")})
    for name in lookalikes.LOOKALIKES:
        model, x = lookalikes.create(name)
        kind = "cnn" if name.split("_")[0] in ("convnext", "regnety", "densenet") else "transformer"
        rows.append({"model": name, "family": kind, "module": model, "x": x,
                     "path": export_onnx(model, x, work / f"{name}.onnx")})
    return rows


UNSEEN_ZOO = ["resnet18", "resnet50", "mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small", "efficientnet_b0",
              "shufflenet_v2_x1_0", "squeezenet1_0", "densenet121", "regnet_x_400mf", "vit_tiny"]


def _unseen_names() -> list[str]:
    import lookalikes

    return [*UNSEEN_ZOO, *lookalikes.LOOKALIKES]


def run_unseen(args: argparse.Namespace) -> None:
    """``--unseen``: see the module docstring."""
    import os

    from hwnas.predict.train import STEADY_SETTINGS

    paths = [args.predictor, *(args.compare or [])]
    preds = [load_predictor(p, device=args.device) for p in paths]
    labels = [f"{Path(str(p)).parent.name}-{Path(str(p)).stem}" if p else "shipped" for p in paths]
    dev = get_device(args.device)
    t0 = time.perf_counter()
    load = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory(prefix="hwnas-unseen-") as tmp:
        work = Path(tmp)
        rows = unseen_models(work)
        for r in rows:
            r["pred"], r["pred_torch"], r["notes"] = {}, {}, {}
            for lab, pred in zip(labels, preds):
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    try:
                        r["pred"][lab] = predict_latency(r["path"], device=args.device, predictor=pred).total_ms
                        # from the module too, for the first predictor (the same kernels for the others)
                        r["pred_torch"][lab] = predict_latency(r["module"], r["x"], device=args.device,
                                                               predictor=pred).total_ms \
                            if lab == labels[0] else float("nan")
                    except Exception as e:  # an unreadable model is a result, not a crash of the benchmark
                        r["pred"].setdefault(lab, float("nan"))
                        r["pred_torch"][lab] = float("nan")
                        r["notes"][lab] = f"{type(e).__name__}: {str(e)[:160]}"
                    if caught and lab not in r["notes"]:
                        r["notes"][lab] = "; ".join(sorted({str(w.message)[:80] for w in caught}))
        checks = []
        for lab, pred in zip(labels, preds):
            try:
                models = speed.training_models(pred)[:8]
            except PredictorError as e:
                print(f"{lab}: no speed check ({e})")
                continue
            for i, m in enumerate(models):
                path, x = export_training_model(m["config"], work / f"{lab}_training_{i}.onnx")
                checks.append({"label": lab, "then_ms": m["end_to_end_ms"], "path": path, "x": x})
        both = rows + checks
        expected = [max(v for v in r["pred"].values() if np.isfinite(v)) if "pred" in r and
                    any(np.isfinite(v) for v in r["pred"].values()) else r.get("then_ms", 10.0) for r in both]
        each: list[list[float]] = [[] for _ in both]
        low: list[list[float]] = [[] for _ in both]  # p10: less inflated by other processes on a loaded host
        for c in range(args.measurements):
            for g, name in enumerate(("short", "long")):
                idx = [i for i, e in enumerate(expected) if (e < LONG_MS) == (name == "short")]
                if not idx:
                    continue
                recs = measure_many([both[i]["path"] for i in idx], dev, dummy_inputs=[both[i]["x"] for i in idx],
                                    seed=args.seed + 100 * c + g, progress=True, **STEADY_SETTINGS[name])
                for i, rec in zip(idx, recs):
                    each[i].append(rec.median_ms)
                    low[i].append(rec.p10_ms)
            load.append(os.getloadavg()[0])
    for r, v, lo in zip(both, each, low):
        r["measured_ms"] = float(np.exp(np.mean(np.log(v))))
        r["measured_p10_ms"] = float(np.exp(np.mean(np.log(lo))))
        r["measurements_ms"] = v
    minutes = (time.perf_counter() - t0) / 60
    tag = "predictor_accuracy_unseen" + (f"_{args.tag}" if args.tag else "")
    summary = []
    meas = np.array([r["measured_ms"] for r in rows])
    meas_p10 = np.array([r["measured_p10_ms"] for r in rows])
    for lab, pred in zip(labels, preds):
        own = [c for c in checks if c["label"] == lab]
        factor = float(np.median([c["measured_ms"] / c["then_ms"] for c in own])) if own else float("nan")
        for subset in ("all", "cnn", "transformer"):
            sel = np.array([subset == "all" or r["family"] == subset for r in rows])
            for source, key in (("onnx", "pred"), ("torch", "pred_torch")):
                p = np.array([r[key][lab] for r in rows])[sel]
                ok = np.isfinite(p)
                st = accuracy_stats(p[ok], meas[sel][ok])
                sc = accuracy_stats(p[ok] * factor, meas[sel][ok]) if own else {k: float("nan") for k in st}
                lo = accuracy_stats(p[ok], meas_p10[sel][ok])
                tr = pred.metadata.get("training", {})
                summary.append([lab, subset, source, int(sel.sum()), int(ok.sum()), st["within_5pct"],
                                st["within_10pct"], st["kendall_tau"], st["rmspe"], st["mean_err_pct"], factor,
                                sc["within_5pct"], sc["within_10pct"], sc["kendall_tau"], sc["mean_err_pct"],
                                lo["within_5pct"], lo["within_10pct"], lo["kendall_tau"], lo["mean_err_pct"],
                                tr.get("kernel_measurements"), round(float(tr.get("minutes", float("nan"))), 2),
                                round(min(load), 2), round(max(load), 2)])
    header = ["predictor", "models", "source", "n", "readable", "within_5pct", "within_10pct", "kendall_tau", "rmspe",
              "mean_err_pct", "speed_factor", "corrected_within_5pct", "corrected_within_10pct",
              "corrected_kendall_tau", "corrected_mean_err_pct", "vs_p10_within_5pct", "vs_p10_within_10pct",
              "vs_p10_kendall_tau", "vs_p10_mean_err_pct", "kernel_measurements", "training_minutes",
              "load_min", "load_max"]
    write_table(tag, header, summary)
    with (RESULTS / f"{tag}_models.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["model", "family", "measured_ms", "measured_p10_ms", "measurements_ms",
                    *[f"{k}_{lab}" for lab in labels for k in ("pred_onnx_ms", "pred_torch_ms", "err_onnx_pct")],
                    "notes"])
        for r in rows:
            w.writerow([r["model"], r["family"], round(r["measured_ms"], 5), round(r["measured_p10_ms"], 5), json.dumps([round(v, 5) for v in
                                                                                           r["measurements_ms"]]),
                        *[v for lab in labels for v in (round(r["pred"][lab], 5), round(r["pred_torch"][lab], 5),
                                                         round(100 * (r["pred"][lab] / r["measured_ms"] - 1), 2))],
                        " | ".join(f"{lab}: {n}" for lab, n in r["notes"].items())])
    print(f"unseen zoo: {len(rows)} models, measured twice (steady-state median, 1 thread) in {minutes:.1f} min; "
          f"load average {min(load):.2f}-{max(load):.2f} on {os.cpu_count()} cores")
    for r in rows:
        errs = "  ".join(f"{lab} {r['pred'][lab]:8.3f} ({100 * (r['pred'][lab] / r['measured_ms'] - 1):+6.1f}%)"
                         for lab in labels)
        print(f"  {r['model']:22s} {r['family']:11s} measured {r['measured_ms']:8.3f} ms  {errs}")
    print(f"written: {RESULTS / (tag + '.csv')} and {RESULTS / (tag + '_models.csv')}")


def _read_unseen(path: Path) -> dict[str, dict[str, float | str]]:
    """``{model: {"family", "measured_ms"}}`` of an unseen run's per-model file, every time checked."""
    out: dict[str, dict[str, float | str]] = {}
    with path.open(newline="") as f:
        for i, row in enumerate(csv.DictReader(f)):
            try:
                ms = float(row["measured_ms"])
            except (KeyError, TypeError, ValueError):
                raise SystemExit(f"{path}: row {i + 2} has no number in column measured_ms (got "
                                 f"{row.get('measured_ms')!r}); pass a predictor_accuracy_unseen*_models.csv.") from None
            if not (np.isfinite(ms) and ms > 0) or row.get("model") not in _unseen_names():
                raise SystemExit(f"{path}: row {i + 2}: expected an unseen zoo model ({', '.join(_unseen_names())}) with "
                                 f"a finite measured_ms > 0, got {row.get('model')!r} and {ms!r}.")
            out[row["model"]] = {"family": row["family"], "measured_ms": ms}
    return out


def run_unseen_rescore(args: argparse.Namespace) -> None:
    """``--unseen --rescore``: see the module docstring."""
    paths = [args.predictor, *(args.compare or [])]
    preds = [load_predictor(p, device=args.device) for p in paths]
    labels = [Path(str(p)).stem if p else "shipped" for p in paths]
    runs = {Path(r).stem.replace("predictor_accuracy_unseen_", "").replace("_models", ""): _read_unseen(Path(r))
            for r in args.rescore}
    with tempfile.TemporaryDirectory(prefix="hwnas-unseen-") as tmp:
        rows = unseen_models(Path(tmp))
        for r in rows:
            r["pred"] = {}
            for lab, pred in zip(labels, preds):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    r["pred"][lab] = predict_latency(r["path"], device=args.device, predictor=pred).total_ms
    names = [r["model"] for r in rows]
    for run, meas in runs.items():
        if set(meas) != set(names):
            raise SystemExit(f"run {run}: its models differ from the unseen zoo's: missing "
                             f"{sorted(set(names) - set(meas))}, extra {sorted(set(meas) - set(names))}.")
    runs["pooled"] = {n: {"measured_ms": float(np.exp(np.mean([np.log(m[n]["measured_ms"])
                                                                for k, m in runs.items()])))} for n in names}
    summary = []
    for lab in labels:
        p_all = np.array([r["pred"][lab] for r in rows])
        for run, meas in runs.items():
            m_all = np.array([meas[n]["measured_ms"] for n in names])
            for subset in ("all", "cnn", "transformer"):
                sel = np.array([subset == "all" or r["family"] == subset for r in rows])
                st = accuracy_stats(p_all[sel], m_all[sel])
                summary.append([lab, run, subset, int(sel.sum()), round(st["within_5pct"], 4),
                                round(st["within_10pct"], 4), round(st["kendall_tau"], 4), round(st["rmspe"], 5),
                                round(st["mean_err_pct"], 3)])
    tag = "predictor_accuracy_unseen_rescored" + (f"_{args.tag}" if args.tag else "")
    write_table(tag, ["predictor", "run", "models", "n", "within_5pct", "within_10pct", "kendall_tau", "rmspe",
                      "mean_err_pct"], summary)
    with (RESULTS / f"{tag}_models.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["model", "family", *[f"measured_ms_{run}" for run in runs],
                    *[f"pred_onnx_ms_{lab}" for lab in labels]])
        for r in rows:
            w.writerow([r["model"], r["family"], *[round(m[r["model"]]["measured_ms"], 5) for m in runs.values()],
                        *[round(r["pred"][lab], 5) for lab in labels]])
    for row in summary:
        if row[2] == "all":
            print(f"  {row[0]:28s} {row[1]:24s} within 10% {100 * row[5]:5.1f}%  within 5% {100 * row[4]:5.1f}%  "
                  f"tau {row[6]:.3f}  mean error {row[8]:+.2f}%")
    print(f"written: {RESULTS / (tag + '.csv')} and {RESULTS / (tag + '_models.csv')}")


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
    ap.add_argument("--rescore", metavar="MODELS_CSV", default=None, nargs="+",
                    help="measure nothing: score the models of an earlier run (a predictor_accuracy*_models.csv) "
                         "again with this hwnas's speed check, into the same name with _rescored for _models; with "
                         "--unseen, one or more predictor_accuracy_unseen*_models.csv, predicted again")
    ap.add_argument("--unseen", action="store_true", help="the unseen zoo of CNNs and transformers (issue 17)")
    ap.add_argument("--compare", nargs="*", default=None, help="more predictor files scored on the same measurements")
    ap.add_argument("--tag", default="",
                    help="suffix of the result files, for scratch runs; not for committed results")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    pin_threads(1)
    if args.unseen and args.rescore:
        run_unseen_rescore(args)
        return
    if args.unseen:
        run_unseen(args)
        return
    pred = load_predictor(args.predictor, device=args.device)
    if args.rescore:
        tag = Path(args.rescore[0]).stem.replace("_models", "_rescored")
        summarize(*read_models(Path(args.rescore[0])), float("nan"), pred.metadata["training"], args.device, 2, tag)
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
