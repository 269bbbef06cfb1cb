"""Train (or resume) the learned latency predictor of a device, and print what it cost.

    python benchmarks/train_predictor.py --device cpu-ort-1t --budget 1500 --out cpu-ort-1t.skops

(To ship a predictor, train it into hwnas/data/predictors/<device>.skops of the checkout, with its .data.json.)

    python benchmarks/train_predictor.py --refit hwnas/data/predictors/cpu-ort-1t.skops --out refit.skops

refits the whole-model calibration of an existing predictor from its stored training data (<file>.data.json),
measuring nothing (hwnas.predict.calibration.refit: kernels predicted out of fold, 5 folds of models, the
calibration chosen by leave-one-model-out); its kernel regressors stay as they are. Under a minute.

Measures random whole training models (hwnas.predict.generator) adaptively: an initial spread, then the
models whose latency the current predictor is least sure of, until the budget of kernel measurements or the
target error is reached. Resumable: the measurements go to <out>.data.json after every model; run the same
command again after a kill. Prints the number of kernel measurements, models and minutes, the regressor
chosen per kernel family with its cross-validated error, and the out-of-fold error on whole training models,
and appends a row to benchmarks/results/predictor_train.csv.
"""

from __future__ import annotations

import argparse
import logging
import time

from _common import append_row, pin_threads

from hwnas.predict import train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu-ort-1t")
    ap.add_argument("--out", default=None, help="predictor file (default ./<device>.skops, never the shipped one)")
    ap.add_argument("--budget", type=int, default=1500, help="kernel measurements at most")
    ap.add_argument("--initial", type=int, default=24,
                    help="models of the initial spread (24: one of each style of generator.STYLE_CYCLE)")
    ap.add_argument("--batch", type=int, default=4, help="models measured per adaptive round")
    ap.add_argument("--pool", type=int, default=16,
                    help="candidate models per adaptive round (each is exported and read as ONNX Runtime runs it)")
    ap.add_argument("--runs", type=int, default=20, help="profiled runs per model")
    ap.add_argument("--target-rmspe", type=float, default=0.02,
                    help="stop early at this out-of-fold RMSPE of whole training models")
    ap.add_argument("--max-macs", type=float, default=2.5e9, help="size cap of training models (multiply-adds)")
    ap.add_argument("--e2e-measurements", type=int, default=4,
                    help="separate interleaved end-to-end measurements of the training models (calibration target)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--refit", metavar="PREDICTOR", default=None,
                    help="measure nothing: fit the whole-model calibration of this predictor (file or shipped name) "
                         "again from its stored training data, into --out")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    pin_threads(1)
    if args.refit:
        refit_only(args)
        return
    out = args.out or f"{args.device}.skops"
    t0 = time.perf_counter()
    pred = train(args.device, budget=args.budget, path=out, initial=args.initial, batch=args.batch, pool=args.pool,
                 runs=args.runs, target_rmspe=args.target_rmspe, seed=args.seed,
                 max_macs=args.max_macs, e2e_measurements=args.e2e_measurements)
    minutes_here = (time.perf_counter() - t0) / 60
    tr, val = pred.metadata["training"], pred.metadata["validation"]
    print(f"\ndevice {args.device}: {tr['kernel_measurements']} kernel measurements (budget {args.budget}, "
          f"{tr['distinct_signatures']} distinct signatures) from {tr['models']} whole models; stopped by {tr['stop']}")
    print(f"building time, all runs of this file: {tr['minutes']:.2f} min (measuring {tr['measuring_minutes']:.2f} "
          f"min); this call {minutes_here:.2f} min (target <= 20)")
    for fam, kind in tr["regressors"].items():
        errs = tr["cv_weighted_rmspe"].get(fam, {})
        shown = ", ".join(f"{k} {100 * v:.1f}%" for k, v in errs.items())
        print(f"  {fam:8s} n={tr['families'][fam]:4d}  chosen {kind:14s} (time-weighted CV RMSPE: {shown})")
    print(f"out-of-fold on whole training models: {100 * val['model_within_10pct']:.1f}% within +-10%, "
          f"{100 * val['model_within_5pct']:.1f}% within +-5%, RMSPE {100 * val['model_rmspe']:.2f}%; kernels: "
          f"time-weighted RMSPE {100 * val['kernel_weighted_rmspe']:.1f}%")
    cal = pred.calibration
    print(f"calibration: scale {cal['scale']:.4f}, per kernel {cal['per_kernel_ms'] * 1000:.2f} us, overhead "
          f"{cal['overhead_ms'] * 1000:.1f} us")
    path = append_row("predictor_train", [
        "device", "budget", "kernel_measurements", "models", "minutes_total", "measuring_minutes",
        "oof_model_within_10pct", "oof_model_rmspe", "oof_kernel_weighted_rmspe", "regressors"], [
        args.device, args.budget, tr["kernel_measurements"], tr["models"], round(tr["minutes"], 3),
        round(tr["measuring_minutes"], 3), round(val["model_within_10pct"], 4), round(val["model_rmspe"], 5),
        round(val["kernel_weighted_rmspe"], 5), ";".join(f"{k}={v}" for k, v in tr["regressors"].items())])
    print(f"written: {out} and {path}")


def refit_only(args: argparse.Namespace) -> None:
    """``--refit``: the calibration fitted again from the stored data (see the module docstring)."""
    from hwnas.predict.calibration import refit

    if not args.out:
        raise SystemExit("--refit needs --out FILE (the refitted predictor; its training data are copied next to it)")
    t0 = time.perf_counter()
    pred = refit(args.refit, args.out)
    cal, fam = pred.calibration, pred.family_calibration
    print(f"refitted {args.refit} -> {args.out} in {time.perf_counter() - t0:.1f} s (no measurement)")
    print(f"calibration: common factor {cal['scale']:.4f}, profiler cost per kernel {1000 * fam['delta_ms']:.1f} us, "
          f"movement {cal['per_copied_melement_ms']:.4f} ms per million elements copied, overhead "
          f"{1000 * cal['overhead_ms']:.1f} us; ridge {fam['ridge']}")
    print("family factors (x common): " + ", ".join(f"{k} {v:.3f}" for k, v in fam["factors"].items()))
    print(f"models of {fam['full_weight_ms']:g} ms and more, leave-one-model-out: {100 * fam['cv_long_within_10pct']:.1f}% "
          f"within +-10%, {100 * fam['cv_long_within_5pct']:.1f}% within +-5%")
    print(f"leave-one-model-out on the {fam['models']} training models: {100 * fam['cv_within_10pct']:.1f}% within "
          f"+-10%, {100 * fam['cv_within_5pct']:.1f}% within +-5%, RMS log error {100 * fam['cv_rms_log_unweighted']:.2f}% "
          f"(weighted {100 * fam['cv_rms_log']:.2f}%, common factor alone {100 * fam['cv_rms_log_single']:.2f}%), "
          f"Kendall tau {fam['cv_kendall_tau']:.3f}")


if __name__ == "__main__":
    main()
