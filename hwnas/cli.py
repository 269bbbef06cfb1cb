"""The ``hwnas`` command line: thin wrappers over library calls.

Examples::

    hwnas demo --out hwnas-demo
    hwnas search --space digits --score params --constraint flops=40% --trials 200
    hwnas profile --space mobilenet_v3 --input 1,3,224,224 --constraint flops=60% --constraint params=6e6
    hwnas profile --space digits --input 1,1,8,8
    hwnas predict model.onnx --device cpu-ort-1t --csv layers.csv
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

__all__ = ["main", "build_parser"]


def _shape(text: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(t) for t in text.replace("x", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--input must be comma-separated ints like 1,3,224,224, got {text!r}") from None
    if not dims or any(d <= 0 for d in dims):
        raise argparse.ArgumentTypeError(f"--input dims must be positive, got {text!r}")
    return dims


def _constraint(text: str) -> tuple[str, object]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--constraint takes metric=value like flops=60% or params=3e6, got {text!r}")
    key, value = text.split("=", 1)
    value = value.strip()
    if value.endswith("%"):
        return key.strip(), value
    try:
        return key.strip(), float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--constraint value must be a number or a percentage, got {value!r}") from None


def _space_kwargs(items: Sequence[str]) -> dict:
    import json

    out = {}
    for item in items:
        key, _, value = item.partition("=")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hwnas", description="Hardware-aware neural architecture search.")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = p.add_subparsers(dest="command", required=True)

    pr = sub.add_parser("profile", help="FLOPs / params (min, centroid, max) of a space and constraint feasibility")
    pr.add_argument("--space", required=True, help="a registered space (see `hwnas spaces`)")
    pr.add_argument("--input", type=_shape, default=None, help="input shape, e.g. 1,3,224,224 (default per space)")
    pr.add_argument("--constraint", type=_constraint, action="append", default=[],
                    help="metric=bound, repeatable: flops=60%% params=3e6")
    pr.add_argument("--space-arg", action="append", default=[], metavar="KEY=JSON",
                    help="keyword argument for the space constructor, e.g. resolutions=[160,192,224]")

    sub.add_parser("spaces", help="list the registered spaces")

    lut = sub.add_parser("lut", help="latency lookup tables").add_subparsers(dest="lut_command", required=True)
    lb = lut.add_parser("build", help="build or resume a LUT for a space on a device (ONNX Runtime)")
    lb.add_argument("--space", required=True)
    lb.add_argument("--input", type=_shape, default=None)
    lb.add_argument("--device", default="cpu-ort-1t")
    lb.add_argument("--out", required=True, help="LUT file (resumed if it exists)")
    lb.add_argument("--repeats", type=int, default=3, help="measurements per kernel signature")
    lb.add_argument("--runs", type=int, default=30)
    lb.add_argument("--random-subnets", type=int, default=60, help="random subnets profiled for calibration")
    lb.add_argument("--max-subnets", type=int, default=None)
    lb.add_argument("--space-arg", action="append", default=[], metavar="KEY=JSON")
    li = lut.add_parser("info", help="summarise a LUT file")
    li.add_argument("path")
    lr = lut.add_parser("refit", help="fit a LUT's calibration and refinement again from its stored measurements "
                        "(no measuring), as this hwnas fits them; written atomically")
    lr.add_argument("path")
    lr.add_argument("--out", default=None, help="write here instead of over PATH")
    lc = lut.add_parser("recalibrate", help="bring a LUT to hwnas's definition of latency (the steady-state median): "
                        "measure some build subnets paired and steady in the same run, map the level, refit")
    lc.add_argument("path")
    lc.add_argument("--space", required=True)
    lc.add_argument("--input", type=_shape, default=None)
    lc.add_argument("--subnets", type=int, default=16, help="build subnets measured both ways")
    lc.add_argument("--out", default=None, help="write here instead of over PATH")
    lc.add_argument("--max-error", type=float, default=0.03,
                    help="apply the level only if its leave-one-out error is at most this (default 0.03)")
    lc.add_argument("--space-arg", action="append", default=[], metavar="KEY=JSON")
    ls = lut.add_parser("speed-check", help="measure a few of the LUT's build subnets again: how much faster or "
                        "slower the machine runs now than at the build")
    ls.add_argument("--space", required=True)
    ls.add_argument("--lut", required=True)
    ls.add_argument("--input", type=_shape, default=None)
    ls.add_argument("--subnets", type=int, default=8, help="reference subnets to measure")
    ls.add_argument("--write", action="store_true", help="store the factor in the LUT file (atomically)")
    ls.add_argument("--space-arg", action="append", default=[], metavar="KEY=JSON")

    rep = sub.add_parser("report", help="reports").add_subparsers(dest="report_command", required=True)
    rl = rep.add_parser("latency", help="per-layer latency of an architecture as CSV")
    rl.add_argument("--space", required=True)
    rl.add_argument("--arch", required=True, help="architecture JSON (hwnas.save_arch)")
    rl.add_argument("--lut", required=True)
    rl.add_argument("--csv", required=True)
    rl.add_argument("--input", type=_shape, default=None)
    rl.add_argument("--measure", action="store_true", help="also measure each kernel with ONNX Runtime")
    rl.add_argument("--space-arg", action="append", default=[], metavar="KEY=JSON")

    pp = sub.add_parser("predict", help="predict the latency of an ONNX file (or a zoo model) with a learned predictor")
    pp.add_argument("model", help="an .onnx file, or the name of a hwnas.zoo model (e.g. resnet18)")
    pp.add_argument("--device", default="cpu-ort-1t")
    pp.add_argument("--predictor", default=None, help="predictor file (default: the shipped predictors/<device>.skops)")
    pp.add_argument("--input", type=_shape, default=None,
                    help="input shape, e.g. 1,3,224,224 (needed for ONNX files with dynamic shapes; zoo default 224)")
    pp.add_argument("--csv", default=None, help="write the per-layer table here")
    pp.add_argument("--speed-check", type=int, default=0, metavar="N",
                    help="first measure N of the predictor's training models again and scale the prediction by the "
                         "machine's speed now against training (16 take about a minute; default: none)")

    _add_search_parsers(sub)
    _add_adapt_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    import torch

    import hwnas

    if args.command == "spaces":
        print("\n".join(hwnas.spaces.list()))
        return 0
    if args.command == "profile":
        try:
            space = hwnas.spaces.create(args.space, **_space_kwargs(args.space_arg))
            shape = args.input or hwnas.spaces.input_shape(args.space)
            hwnas.profile(space, torch.zeros(shape), constraints=dict(args.constraint) or None)
        except (ValueError, TypeError) as e:
            print(f"hwnas profile: error: {e}", file=sys.stderr)
            return 2
        return 0
    try:
        if args.command == "lut":
            return _lut(args)
        if args.command == "report":
            return _report(args)
        if args.command == "demo":
            return _demo(args)
        if args.command == "search":
            return _search(args)
        if args.command == "predict":
            return _predict(args)
        if args.command == "adapt":
            return _adapt(args)
    except (ValueError, KeyError, FileNotFoundError) as e:
        print(f"hwnas {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 1  # pragma: no cover


def _input(args) -> object:
    import torch

    import hwnas

    return torch.randn(args.input or hwnas.spaces.input_shape(args.space))


def _lut(args) -> int:
    import hwnas
    from hwnas.hw import LUT, build_lut

    if args.lut_command == "info":
        print(LUT.load(args.path).summary())
        return 0
    if args.lut_command == "refit":
        lut = LUT.load(args.path)
        before = dict(lut.calibration)
        lut.fit()
        lut.save(args.out or args.path)
        sel = lut.calibration.get("selected") or {}
        print(f"refitted {args.path}: per-node term {'kept' if sel.get('per_node', True) else 'dropped'}, ridge "
              f"{lut.calibration.get('refined', {}).get('ridge')} (was {before.get('refined', {}).get('ridge')}); "
              f"cross-validated error {100 * sel.get('cv_rms', float('nan')):.2f}% against "
              f"{100 * sel.get('cv_rms_default', float('nan')):.2f}% with the old defaults; "
              f"written: {args.out or args.path}")
        return 0
    if args.lut_command == "recalibrate":
        from hwnas.hw.speed import calibrate_definition

        space = hwnas.spaces.create(args.space, **_space_kwargs(args.space_arg)).eval()
        lut = LUT.load(args.path)
        was = lut.definition
        rec = calibrate_definition(lut, space, _input(args), n=args.subnets, progress=True, max_error=args.max_error)
        lut.save(args.out or args.path)
        print(f"recalibrated {args.path} ({was} -> steady-state median): steady = {rec['ratio']:.4f} x paired "
              f"{1000 * rec['offset_ms']:+.2f} us over {rec['subnets']} build subnets (spread +-{rec['spread']:.4f}, "
              f"leave-one-out error {rec['loo_rms']}, load {rec['load_avg']}); refitted, cross-validated error "
              f"{100 * (lut.calibration.get('selected') or {}).get('cv_rms', float('nan')):.2f}%; written: "
              f"{args.out or args.path}")
        return 0
    if args.lut_command == "speed-check":
        from hwnas.hw import speed_check

        space = hwnas.spaces.create(args.space, **_space_kwargs(args.space_arg)).eval()
        lut = LUT.load(args.lut)
        check = speed_check(lut, space, _input(args), n=args.subnets, progress=True)
        print(f"{args.lut}: the machine runs at {check.describe()} the build's times now (build subnets); LUT "
              f"speed factor was {lut.speed_factor:.4f}")
        if args.write:
            lut.with_speed(check).save(args.lut)
            print(f"written: {args.lut} (its costs are multiplied by {check.factor:.4f} from now on)")
        return 0
    space = hwnas.spaces.create(args.space, **_space_kwargs(args.space_arg)).eval()
    lut = build_lut(space, _input(args), args.device, args.out, repeats_per_kernel=args.repeats, runs=args.runs,
                    max_subnets=args.max_subnets, space_name=args.space, random_subnets=args.random_subnets)
    print(lut.summary())
    return 0


def _report(args) -> int:
    import hwnas
    from hwnas.report import latency_report

    space = hwnas.spaces.create(args.space, **_space_kwargs(args.space_arg)).eval()
    df = latency_report(space, hwnas.load_arch(args.arch), _input(args), lut=args.lut, measure=args.measure)
    df.to_csv(args.csv, index=False)
    total = df.iloc[-1]
    print(f"{len(df) - 2} kernels, predicted {total['predicted_ms']:.4f} ms"
          + (f", measured {total['measured_ms']:.4f} ms" if args.measure else "") + f"; written {args.csv}")
    return 0


def _predict(args) -> int:
    import pathlib

    import torch

    from hwnas import zoo
    from hwnas.predict import load_predictor, predict_latency, speed_check

    is_file = pathlib.Path(args.model).is_file()
    if not is_file and args.model not in zoo.list():
        raise FileNotFoundError(f"{args.model!r} is neither an ONNX file nor a zoo model ({', '.join(zoo.list())}).")
    predictor = load_predictor(args.predictor, device=args.device)
    if args.speed_check:
        check = speed_check(predictor, n=args.speed_check, progress=True)
        print(f"speed check: the machine runs at {check.describe()} the training times now")
        predictor = predictor.with_speed(check)
    if is_file:
        x = torch.randn(args.input) if args.input else None
        rec = predict_latency(args.model, x, device=args.device, predictor=predictor)
    else:
        x = torch.randn(args.input or (1, 3, 224, 224))
        rec = predict_latency(zoo.create(args.model).eval(), x, device=args.device, predictor=predictor)
    top = rec.layers.sort_values("predicted_ms", ascending=False).head(5)
    print(f"{args.model}: predicted {rec.total_ms:.3f} ms on {rec.device} ({len(rec.layers)} kernels, overhead "
          f"{rec.overhead_ms * 1000:.1f} us)")
    for _, row in top.iterrows():
        print(f"  {row['predicted_ms']:8.3f} ms  {100 * row['share']:5.1f}%  {row['layer']}  {row['signature']}")
    if args.csv:
        rec.to_csv(args.csv)
        print(f"written: {args.csv}")
    return 0


# ---------------------------------------------------------------------------------------------------- adapt
def _add_adapt_parser(sub) -> None:
    a = sub.add_parser("adapt", help="carry a LUT to this machine / another device: measure 20-60 of its subnets "
                       "here (steady state, at most ~2 min) and refit one factor per kernel family")
    a.add_argument("artefact", help="a LUT file (e.g. lut/digits_cpu-ort-1t.json), typically from another machine")
    a.add_argument("--device", required=True, help="the target device measured here, e.g. cpu-ort-1t, cpu-ort-2t")
    a.add_argument("--n", type=int, default=40, help="subnets measured (20-60; default 40)")
    a.add_argument("--out", default=None, help="the adapted LUT (default: <artefact stem>_adapted_<device>.json here)")
    a.add_argument("--space", default=None, help="the LUT's space (default: the first registered space it was built for)")
    a.add_argument("--input", type=_shape, default=None, help="input shape with --space (default per space)")
    a.add_argument("--budget", type=float, default=120.0, help="time budget in seconds (default 120)")
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--space-arg", action="append", default=[], metavar="KEY=JSON")


def _adapt(args) -> int:
    import pathlib

    import hwnas
    from hwnas.hw.adapt import adapt

    src = pathlib.Path(args.artefact)
    if not src.is_file():
        raise FileNotFoundError(f"{args.artefact!r} is not a file; pass a LUT file such as lut/digits_cpu-ort-1t.json.")
    if src.suffix != ".json":
        raise ValueError(f"{args.artefact!r}: hwnas adapt takes a LUT file (.json); learned predictors are not "
                         "adapted yet (use hwnas predict --speed-check N for one factor).")
    space = x = None
    if args.space:
        space = hwnas.spaces.create(args.space, **_space_kwargs(args.space_arg)).eval()
        x = _input(args)
    out = pathlib.Path(args.out) if args.out else pathlib.Path(f"{src.stem}_adapted_{args.device}.json")
    lut = adapt(src, args.device, n=args.n, space=space, dummy_input=x, out=out, budget_s=args.budget,
                seed=args.seed, progress=True)
    info = lut.adapted["adapted_from"]
    factors = ", ".join(f"{k} {v:.3f}" for k, v in info["factors"].items())
    print(f"adapted {args.artefact} ({info['device']}, {info['cpu_model']}) to {args.device} on this machine in "
          f"{info['seconds']:.0f} s from {info['n']} subnets: {factors}; prior {info['prior']!r}, ridge "
          f"{info['ridge']:g}; leave-one-out error {100 * info['cv_rms']:.2f}% (one factor "
          f"{100 * info['cv_rms_one_factor']:.2f}%, unadapted {100 * info['rms_unadapted']:.2f}%); load "
          f"{info['load_avg']}; written: {out}")
    return 0


# ---------------------------------------------------------------------------------------- demo and search
def _add_search_parsers(sub) -> None:
    d = sub.add_parser("demo", help="train, search, export and measure on scikit-learn's digits (a few minutes)")
    d.add_argument("--out", default="hwnas-demo", help="output folder (default ./hwnas-demo)")
    d.add_argument("--quick", action="store_true", help="a tiny budget (seconds), e.g. to check an install")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--lut", default=None, help="latency LUT (default: the shipped lut/digits_cpu-ort-1t.json)")
    d.add_argument("--no-progress", action="store_true", help="hide progress bars")

    s = sub.add_parser("search", help="multi-trial search of a space under constraints with your score function")
    s.add_argument("--space", required=True, help="a registered space (see `hwnas spaces`)")
    s.add_argument("--score", required=True,
                   help="module:function or path/to/file.py:function taking a sample dict and returning a score; "
                        "or a metric name (flops, params, latency_ms) to find the largest subnet that fits")
    s.add_argument("--constraint", type=_constraint, action="append", default=[],
                   help="metric=bound, repeatable: flops=60%% params=3e6 latency_ms=4")
    s.add_argument("--lut", default=None, help="latency LUT: adds the latency_ms metric")
    s.add_argument("--strategy", choices=("evolution", "random", "grid"), default="evolution")
    s.add_argument("--trials", type=int, default=100)
    s.add_argument("--population", type=int, default=50)
    s.add_argument("--sample-size", type=int, default=10)
    s.add_argument("--mutation-prob", type=float, default=0.05)
    s.add_argument("--range", action="append", default=[], metavar="METRIC=MIN:MAX",
                   help="range filter, repeatable: flops=20%%:60%% (either end may be empty)")
    s.add_argument("--mode", choices=("max", "min"), default="max", help="is a higher score better (max)?")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--checkpoint", default=None, help="JSON file to resume from / save to")
    s.add_argument("--executor", choices=("inprocess", "ray"), default="inprocess")
    s.add_argument("--address", default=None, help="Ray cluster address (with --executor ray)")
    s.add_argument("--out", default="hwnas-search", help="folder for history.csv, best_arch.json, pareto.png")
    s.add_argument("--input", type=_shape, default=None)
    s.add_argument("--space-arg", action="append", default=[], metavar="KEY=JSON")
    s.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _demo(args) -> int:
    from hwnas.demo import run_demo

    logging.getLogger("hwnas.demo").setLevel(logging.INFO)
    result = run_demo(args.out, quick=args.quick, seed=args.seed, lut=args.lut, progress=not args.no_progress)
    print(result.table())
    return 0


def _load_score(spec: str):
    """``module:function`` or ``path/to/file.py:function`` -> the function."""
    import importlib
    import importlib.util
    import pathlib

    target, _, name = spec.rpartition(":")
    if not target or not name:
        raise ValueError(f"--score {spec!r} should be module:function or path/to/file.py:function (or a metric name).")
    if target.endswith(".py"):
        path = pathlib.Path(target)
        if not path.exists():
            raise FileNotFoundError(f"--score: file {target!r} does not exist.")
        mod_spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(mod_spec)
        mod_spec.loader.exec_module(module)
    else:
        if "" not in sys.path and pathlib.Path.cwd().as_posix() not in sys.path:
            sys.path.insert(0, pathlib.Path.cwd().as_posix())  # like `python -m`: modules of the current folder
        try:
            module = importlib.import_module(target)
        except ImportError as e:
            raise ValueError(f"--score {spec!r}: could not import {target!r} ({e}); give an importable module or a "
                             "file path like path/to/score.py:function.") from None
    fn = getattr(module, name, None)
    if not callable(fn):
        raise ValueError(f"--score: {target!r} has no function {name!r}.")
    return fn


def _range(text: str) -> tuple[str, object, object]:
    metric, eq, rest = text.partition("=")
    lo, colon, hi = rest.partition(":")
    if not eq or not colon:
        raise ValueError(f"--range takes METRIC=MIN:MAX like flops=20%:60% (an end may be empty), got {text!r}.")

    def bound(v: str):
        v = v.strip()
        return None if not v else (v if v.endswith("%") else float(v))

    return metric.strip(), bound(lo), bound(hi)


def _search(args) -> int:
    import pathlib

    import hwnas
    from hwnas.report import plot_pareto
    from hwnas.report.summary import format_number
    from hwnas.search import Chain, Grid, Random, RangeProfilerFilter, RegularizedEvolution, SearchError

    space = hwnas.spaces.create(args.space, **_space_kwargs(args.space_arg)).eval()
    x = _input(args)
    profilers = hwnas.search.build_profilers(space, x)
    if args.lut:
        profilers["latency_ms"] = hwnas.LatencyProfiler(space, x, lut=args.lut, graph=profilers["flops"].graph)
    for metric, _ in args.constraint:
        if metric not in profilers:
            raise ValueError(f"--constraint {metric}=...: no metric {metric!r}; available: {sorted(profilers)}"
                             + (" (latency_ms needs --lut, e.g. --lut lut/digits_cpu-ort-1t.json)."
                                if "latency_ms" not in profilers else "."))
    if args.score in profilers:
        score = profilers[args.score].profile
    else:
        score = _load_score(args.score)
    strategy = {"evolution": lambda: RegularizedEvolution(args.population, args.sample_size, args.mutation_prob),
                "random": Random, "grid": Grid}[args.strategy]()
    filters = []
    for text in args.range:
        metric, lo, hi = _range(text)
        if metric not in profilers:
            raise ValueError(f"--range {text!r}: no metric {metric!r}; available: {sorted(profilers)} "
                             "(latency_ms needs --lut).")
        filters.append(RangeProfilerFilter(profilers[metric], min=lo, max=hi))
    if filters:
        strategy = Chain(strategy, *filters)
    out = pathlib.Path(args.out)
    try:
        result = hwnas.search.run(space, None, dict(args.constraint) or None, score, strategy=strategy,
                                  max_trials=args.trials, seed=args.seed, profilers=profilers,
                                  checkpoint=args.checkpoint, history_csv=out / "history.csv",
                                  executor=None if args.executor == "inprocess" else "ray", address=args.address,
                                  mode=args.mode, progress=not args.no_progress)
    except SearchError as e:
        print(f"hwnas search: error: {e}", file=sys.stderr)
        return 2
    hwnas.save_arch(result.best_sample, out / "best_arch.json")
    x_axis = "latency_ms" if "latency_ms" in profilers else "flops"
    bounds = {c.metric: c.bound for c in result.constraints}
    plot_pareto(result.history, x=x_axis, y="score", path=out / "pareto.png", budget=bounds.get(x_axis),
                             y_mode=args.mode)
    metrics = ", ".join(f"{k} {format_number(v)}" for k, v in result.best_metrics.items())
    print(f"best score {result.best_score:.6g} ({metrics}) after {len(result.history)} trials "
          f"({result.num_proposed} proposed, {result.num_rejected} rejected before evaluation)")
    print("best sample: " + json.dumps(result.best_sample))
    print(f"written: {out / 'history.csv'}, {out / 'best_arch.json'}, {out / 'pareto.png'}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
