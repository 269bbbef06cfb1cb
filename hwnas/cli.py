"""The ``hwnas`` command line: thin wrappers over library calls.

Examples::

    hwnas demo --out hwnas-demo
    hwnas search --space digits --score params --constraint flops=40% --trials 200
    hwnas profile --space mobilenet_v3 --input 1,3,224,224 --constraint flops=60% --constraint params=6e6
    hwnas profile --space digits --input 1,1,8,8 --lut digits
    hwnas predict model.onnx --device cpu-ort-1t --csv layers.csv
    hwnas export --space digits --arch hwnas-search/best_arch.json --out subnet.pt --onnx subnet.onnx

A LUT (``--lut``) or predictor (``--predictor``) is a file or the name of one that ships with hwnas:
``--lut mobilenet_v3`` (on ``--device``, default cpu-ort-1t), ``--lut mobilenet_v3_cpu-ort-2t``,
``--predictor cpu-ort-1t`` (see :mod:`hwnas.artifacts`). A shipped one is never written over.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import warnings
from collections.abc import Sequence

__all__ = ["main", "build_parser"]

LUT_HELP = ("latency LUT: a file, or the name of a shipped one (its space, e.g. digits, on --device; or space_device, "
            "e.g. mobilenet_v3_cpu-ort-2t; `hwnas lut list` lists them)")
DEVICE_HELP = "device of a LUT given by space name (default cpu-ort-1t)"
_warned: set[str] = set()  # fingerprint warnings this process has printed (each is shown once)


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
    """``--space-arg KEY=JSON`` items as keyword arguments; a missing ``=`` or a value that is not JSON is an error
    naming the argument and the form expected."""
    import json

    out = {}
    for item in items:
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or not key.isidentifier():
            raise ValueError(f"--space-arg {item!r}: expected KEY=JSON with a keyword name as KEY, e.g. "
                             "--space-arg num_classes=10 or --space-arg resolutions=[160,192,224].")
        try:
            out[key] = json.loads(value)
        except (json.JSONDecodeError, RecursionError):
            raise ValueError(f"--space-arg {item!r}: the value of {key!r} is not JSON ({value!r}); expected KEY=JSON, "
                             f"e.g. {key}=10, {key}=[160,192,224], {key}=true, or a string in JSON quotes: "
                             f"--space-arg '{key}=\"{value}\"'.") from None
    return out


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, except where the help names it already or there is none to show."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default in (None, False, [], argparse.SUPPRESS) or not action.option_strings:
            return text
        return text + " (default: %(default)s)"


#: the help of options that many commands share (filled in where a command gives none)
_COMMON_HELP = {
    "space": "a registered space (see `hwnas spaces`), or path/to/file.py:Class or package.module:Class",
    "input": "input shape, batch first, e.g. 1,3,224,224 (default: the space's declared shape, else the LUT's)",
    "space_arg": "keyword argument for the space constructor, repeatable, e.g. num_classes=10",
    "seed": "random seed (an int >= 0)",
}


def _finish(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Give every (sub)command the formatter that shows defaults, and shared options their help."""
    parser.formatter_class = _HelpFormatter
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _finish(sub)
        elif not action.help and action.dest in _COMMON_HELP:
            action.help = _COMMON_HELP[action.dest]
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("hwnas")
    except PackageNotFoundError:
        return "0+unknown"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hwnas", description="Hardware-aware neural architecture search.")
    p.add_argument("--version", action="version", version=f"hwnas {_version()}")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    p.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    p.add_argument("--device-file", default=None, metavar="FILE",
                   help="register the devices of a JSON/TOML file first (any ONNX Runtime provider; docs/devices.md)")
    sub = p.add_subparsers(dest="command", required=True)

    pr = sub.add_parser("profile", help="FLOPs / params (min, centroid, max) of a space and constraint feasibility")
    pr.add_argument("--space", required=True, help="a registered space (see `hwnas spaces`)")
    pr.add_argument("--input", type=_shape, default=None)
    pr.add_argument("--constraint", type=_constraint, action="append", default=[],
                    help="metric=bound, repeatable: flops=60%% params=3e6")
    pr.add_argument("--space-arg", action="append", default=[], metavar="KEY=JSON",
                    help="keyword argument for the space constructor, e.g. resolutions=[160,192,224]")
    pr.add_argument("--lut", default=None, help=LUT_HELP + "; adds the latency_ms metric")
    pr.add_argument("--device", default=None, help=DEVICE_HELP)

    sub.add_parser("spaces", help="list the registered spaces")

    lut = sub.add_parser("lut", help="latency lookup tables").add_subparsers(dest="lut_command", required=True)
    lb = lut.add_parser("build", help="build or resume a LUT for a space on a device (ONNX Runtime)")
    lb.add_argument("--space", required=True)
    lb.add_argument("--input", type=_shape, default=None)
    lb.add_argument("--device", default="cpu-ort-1t", help="a device name, or remote:http://HOST:PORT/DEVICE (a "
                    "measurement agent; token in HWNAS_DEVICE_TOKEN)")
    lb.add_argument("--out", required=True, help="LUT file of yours (resumed if it exists)")
    lb.add_argument("--repeats", type=int, default=3, help="measurements per kernel signature")
    lb.add_argument("--runs", type=int, default=30, help="timed runs of each measured model")
    lb.add_argument("--random-subnets", type=int, default=60, help="random subnets profiled for calibration")
    lb.add_argument("--max-subnets", type=int, default=None,
                    help="stop after this many measured subnets (default: until every kernel is measured)")
    lb.add_argument("--space-arg", action="append", default=[], metavar="KEY=JSON")
    lut.add_parser("list", help="list the LUTs and predictors that ship with hwnas")
    li = lut.add_parser("info", help="summarise a LUT (file or shipped name)")
    li.add_argument("path", help=LUT_HELP)
    li.add_argument("--device", default=None, help=DEVICE_HELP)
    lr = lut.add_parser("refit", help="fit a LUT's calibration and refinement again from its stored measurements "
                        "(no measuring), as this hwnas fits them; written atomically")
    lr.add_argument("path", help=LUT_HELP)
    lr.add_argument("--device", default=None, help=DEVICE_HELP)
    lr.add_argument("--out", default=None, help="write here instead of over PATH (required for a shipped LUT)")
    lc = lut.add_parser("recalibrate", help="bring a LUT to hwnas's definition of latency (the steady-state median): "
                        "measure some build subnets paired and steady in the same run, map the level, refit")
    lc.add_argument("path", help=LUT_HELP)
    lc.add_argument("--device", default=None, help=DEVICE_HELP)
    lc.add_argument("--space", required=True)
    lc.add_argument("--input", type=_shape, default=None)
    lc.add_argument("--subnets", type=int, default=16, help="build subnets measured both ways")
    lc.add_argument("--out", default=None, help="write here instead of over PATH (required for a shipped LUT)")
    lc.add_argument("--max-error", type=float, default=0.01,
                    help="apply the level only if its standard error (bootstrap over the subnets) is at most this")
    lc.add_argument("--space-arg", action="append", default=[], metavar="KEY=JSON")
    ls = lut.add_parser("speed-check", help="measure a few of the LUT's build subnets again: how much faster or "
                        "slower the machine runs now than at the build")
    ls.add_argument("--space", required=True)
    ls.add_argument("--lut", required=True, help=LUT_HELP)
    ls.add_argument("--device", default=None, help=DEVICE_HELP)
    ls.add_argument("--input", type=_shape, default=None)
    ls.add_argument("--subnets", type=int, default=8, help="reference subnets to measure")
    ls.add_argument("--write", action="store_true", help="store the factor in the LUT file (atomically)")
    ls.add_argument("--out", default=None,
                    help="with --write: write the LUT with the factor here instead of over --lut (required for a "
                         "shipped LUT)")
    ls.add_argument("--space-arg", action="append", default=[], metavar="KEY=JSON")

    rep = sub.add_parser("report", help="reports").add_subparsers(dest="report_command", required=True)
    rl = rep.add_parser("latency", help="per-layer latency of an architecture as CSV")
    rl.add_argument("--space", required=True)
    rl.add_argument("--arch", required=True, help="architecture JSON (hwnas.save_arch)")
    rl.add_argument("--lut", required=True, help=LUT_HELP)
    rl.add_argument("--device", default=None, help=DEVICE_HELP)
    rl.add_argument("--csv", required=True, help="the per-kernel table to write (CSV)")
    rl.add_argument("--input", type=_shape, default=None)
    rl.add_argument("--measure", action="store_true", help="also measure each kernel with ONNX Runtime")
    rl.add_argument("--space-arg", action="append", default=[], metavar="KEY=JSON")

    pp = sub.add_parser("predict", help="predict the latency of an ONNX file (or a zoo model) with a learned predictor")
    pp.add_argument("model", help="an .onnx file, or the name of a hwnas.zoo model (e.g. resnet18)")
    pp.add_argument("--device", default="cpu-ort-1t", help="the device to predict for (`hwnas device list`)")
    pp.add_argument("--predictor", default=None,
                    help="predictor file, or the name (device) of a shipped one (default: the shipped one of --device)")
    pp.add_argument("--input", type=_shape, default=None,
                    help="input shape, e.g. 1,3,224,224 (needed for ONNX files with dynamic shapes; zoo models: "
                         "default 1,3,224,224)")
    pp.add_argument("--csv", default=None, help="write the per-layer table here")
    pp.add_argument("--speed-check", type=int, default=0, metavar="N",
                    help="first measure N of the predictor's training models again and scale the prediction by the "
                         "machine's speed now against training (16 take about a minute; default 0: none)")

    _add_search_parsers(sub)
    _add_export_parser(sub)
    _add_adapt_parser(sub)
    _add_device_parser(sub)
    from hwnas.experiment.cli import add_run_parser

    add_run_parser(sub)  # hwnas run (issue 24); the implementation is in hwnas.experiment
    return _finish(p)


def _add_device_parser(sub) -> None:
    from hwnas.device_agent import add_serve_arguments

    dev = sub.add_parser("device", help="devices: list them, serve this machine's to other hwnas (measurement agent)")
    dsub = dev.add_subparsers(dest="device_command", required=True)
    dsub.add_parser("list", help="list the registered devices (with --device-file: those too)")
    add_serve_arguments(dsub.add_parser("serve", help="run the measurement agent: time ONNX models here for hwnas "
                                        "elsewhere (--device remote:http://HOST:PORT/DEVICE there)"))
    pk = dsub.add_parser("pack", help="write the agent as one .pyz file that runs with onnxruntime and numpy only")
    pk.add_argument("--out", default="hwnas-agent.pyz", help="the .pyz file to write")


def _device(args) -> int:
    if args.device_command == "serve":
        from hwnas.device_agent import serve_from_args

        serve_from_args(args)
        return 0
    if args.device_command == "pack":
        from hwnas.device_agent import pack_agent

        print(f"written: {pack_agent(args.out)} (run it with: python {args.out} serve --port 8765 --token T)")
        return 0
    from hwnas.hw.device import get_device, list_devices
    from hwnas.report.tables import render_table

    rows = []
    for name in list_devices():
        d = get_device(name)
        opts = f" {dict(d.provider_options)}" if d.provider_options else ""
        rows.append([name, f"{d.provider}{opts}", f"{d.intra_op_threads} thread(s)", d.graph_optimization,
                     d.description or ""])
    print(render_table(["device", "provider", "threads", "optimisation", "description"], rows, left=5, width=140))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return its exit code (see :func:`_guarded`)."""
    from tqdm.contrib.logging import logging_redirect_tqdm

    args = build_parser().parse_args(argv)
    handler = logging.StreamHandler()
    handler.setFormatter(_LogFormatter("%(message)s"))
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, handlers=[handler])
    with _fingerprint_warnings_once(), logging_redirect_tqdm():  # log lines go above progress bars, not into them
        return _guarded(args, _run)


class _LogFormatter(logging.Formatter):
    """Log lines as the command line shows them: ``hwnas: warning: ...`` for warnings and errors, the message
    alone for progress details (``-v``)."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return f"hwnas: {record.levelname.lower()}: {text}" if record.levelno >= logging.WARNING else text


@contextlib.contextmanager
def _fingerprint_warnings_once():
    """Show each fingerprint warning (an artefact from another machine, with its ``hwnas adapt`` command) once
    per process, as ``hwnas: warning: ...`` on stderr; other warnings as usual."""
    from hwnas.hw.lut import FingerprintWarning

    with warnings.catch_warnings():
        warnings.simplefilter("always", FingerprintWarning)
        default = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):
            if not issubclass(category, FingerprintWarning):
                return default(message, category, filename, lineno, file, line)
            if str(message) not in _warned:
                from tqdm import tqdm

                _warned.add(str(message))
                tqdm.write(f"hwnas: warning: {message}", file=sys.stderr)  # above a progress bar, not into it

        warnings.showwarning = show
        yield


def _lut_path(args, value: str | None = None):
    """The LUT file of ``--lut`` (or ``value``): a path as given, a name resolved among the shipped LUTs."""
    from hwnas.artifacts import resolve_lut

    value = args.lut if value is None else value
    return None if value is None else resolve_lut(value, getattr(args, "device", None))


def _user_target(args, given: str, out: str | None, flag: str):
    """Where a changed LUT goes: ``out``, else the file given, but never over a shipped LUT unasked."""
    from hwnas.artifacts import shipped_name

    if out:
        return out
    name = shipped_name(_lut_path(args, given))
    if name is not None:
        raise ValueError(f"{given!r} is the shipped LUT {name!r} (inside the installed package); it is not written "
                         f"over. Write the result to a file of yours with {flag} FILE, e.g. {flag} {name}.json.")
    return given


def _run(args) -> int:
    if args.device_file:
        from hwnas.hw.device import load_device_file

        load_device_file(args.device_file)
    if args.command == "device":
        return _device(args)
    import torch

    import hwnas

    if args.command == "spaces":
        print("\n".join(hwnas.spaces.list()))
        return 0
    if args.command == "profile":  # errors: see _guarded
        space = hwnas.spaces.create(args.space, **_space_kwargs(args.space_arg))
        x = torch.zeros(input_shape(args, space, _lut_path(args)))
        extra = {"latency_ms": hwnas.LatencyProfiler(space, x, lut=_lut_path(args))} if args.lut else None
        hwnas.profile(space, x, constraints=dict(args.constraint) or None, profilers=extra)
        return 0
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
    if args.command == "run":
        from hwnas.experiment.cli import run_command

        return run_command(args)
    if args.command == "export":
        return _export(args)
    return 1  # pragma: no cover


def input_shape(args, space=None, lut=None) -> tuple[int, ...]:
    """The input shape for ``--space``: ``--input``; else what the space declares (a registered space's
    ``input_shape``, or an ``input_shape`` attribute of a space of your own); else the ``input_shape`` the LUT
    (``lut``: a LUT, or the path of one, e.g. ``--lut``) was built at. Never a guess: with none of these, a
    ``ValueError`` names ``--input``."""
    import hwnas

    if args.input:
        return tuple(args.input)
    if args.space in hwnas.spaces.list():
        return tuple(hwnas.spaces.input_shape(args.space))
    declared = getattr(space, "input_shape", None)
    if declared is not None and not callable(declared):
        return _declared_shape(declared, f"{args.space}'s input_shape")
    built = None
    if lut is not None:
        import os

        from hwnas.hw import LUT

        if isinstance(lut, (str, os.PathLike)) and not os.path.isfile(lut):
            lut = None
        else:
            lut = lut if isinstance(lut, LUT) else LUT.load(lut, check_fingerprint=False)
            built = lut.settings.get("input_shape")
    if built:
        return _declared_shape(built, f"the input_shape of LUT {str(lut.path)!r}")
    where = " nor does the LUT store one" if lut is not None else ""
    raise ValueError(f"--space {args.space}: no input shape: the space declares none (no input_shape attribute)"
                     f"{where}, and hwnas does not guess one. Pass it with --input, e.g. --input 1,3,224,224 (batch, "
                     "channels, height, width), or give the space class an attribute input_shape = (1, 3, 224, 224).")


def _declared_shape(value, what: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(d) for d in value)
    except (TypeError, ValueError):
        dims = ()
    if not dims or any(d <= 0 for d in dims):
        raise ValueError(f"{what} is {value!r}; expected positive ints like (1, 3, 224, 224); pass --input.")
    return dims


def _input(args, space=None, lut=None) -> object:
    import torch

    return torch.randn(input_shape(args, space, lut))


def _lut(args) -> int:
    import hwnas
    from hwnas.hw import LUT, build_lut
    from hwnas.report.tables import lut_table as _lut_table

    if args.lut_command == "list":
        from hwnas.artifacts import list_artifacts
        from hwnas.report.tables import render_table

        rows = [[art.kind, art.name, art.space if art.kind == "lut" else "-", art.device, str(art.path)]
                for art in list_artifacts()]
        print(render_table(["kind", "name", "space", "device", "file"], rows, left=5, width=160))
        return 0
    if args.lut_command == "info":
        lut = LUT.load(_lut_path(args, args.path))
        print(f"LUT for {lut.device.name}: {lut.path}\n{_lut_table(lut)}")
        return 0
    if args.lut_command == "refit":
        target = _user_target(args, args.path, args.out, "--out")
        lut = LUT.load(_lut_path(args, args.path))
        before = dict(lut.calibration)
        lut.fit()
        lut.save(target)
        sel = lut.calibration.get("selected") or {}
        print(f"refitted {args.path}: per-node term {'kept' if sel.get('per_node', True) else 'dropped'}, ridge "
              f"{lut.calibration.get('refined', {}).get('ridge')} (was {before.get('refined', {}).get('ridge')}); "
              f"cross-validated error {100 * sel.get('cv_rms', float('nan')):.2f}% against "
              f"{100 * sel.get('cv_rms_default', float('nan')):.2f}% with the old defaults; "
              f"written: {target}")
        return 0
    if args.lut_command == "recalibrate":
        from hwnas.hw.speed import calibrate_definition

        target = _user_target(args, args.path, args.out, "--out")  # before measuring: never over a shipped LUT
        space = hwnas.spaces.create(args.space, **_space_kwargs(args.space_arg)).eval()
        lut = LUT.load(_lut_path(args, args.path))
        was = lut.definition
        rec = calibrate_definition(lut, space, _input(args, space, lut), n=args.subnets, progress=True, max_error=args.max_error)
        lut.save(target)
        print(f"recalibrated {args.path} ({was} -> steady-state median): steady = {rec['ratio']:.4f} x paired "
              f"{1000 * rec['offset_ms']:+.2f} us over {rec['subnets']} build subnets (standard error "
              f"{100 * rec['se']:.2f}%, spread +-{rec['spread']:.4f}, "
              f"leave-one-out error {rec['loo_rms']}, load {rec['load_avg']}); refitted, cross-validated error "
              f"{100 * (lut.calibration.get('selected') or {}).get('cv_rms', float('nan')):.2f}%; written: "
              f"{target}")
        return 0
    if args.lut_command == "speed-check":
        from hwnas.hw import speed_check

        target = _user_target(args, args.lut, args.out, "--out") if args.write else None
        space = hwnas.spaces.create(args.space, **_space_kwargs(args.space_arg)).eval()
        lut = LUT.load(_lut_path(args))
        check = speed_check(lut, space, _input(args, space, lut), n=args.subnets, progress=True)
        print(f"{args.lut}: the machine runs at {check.describe()} the build's times now (build subnets); LUT "
              f"speed factor was {lut.speed_factor:.4f}")
        if args.write:
            lut.with_speed(check).save(target)
            print(f"written: {target} (its costs are multiplied by {check.factor:.4f} from now on)")
        return 0
    space = hwnas.spaces.create(args.space, **_space_kwargs(args.space_arg)).eval()
    lut = build_lut(space, _input(args, space, args.out), args.device, args.out, repeats_per_kernel=args.repeats, runs=args.runs,
                    max_subnets=args.max_subnets, space_name=args.space, random_subnets=args.random_subnets)
    print(f"LUT for {lut.device.name}: {lut.path}\n{_lut_table(lut)}")
    return 0


def _report(args) -> int:
    import hwnas
    from hwnas.report import latency_report

    space = hwnas.spaces.create(args.space, **_space_kwargs(args.space_arg)).eval()
    lut = _lut_path(args)
    df = latency_report(space, hwnas.load_arch(args.arch), _input(args, space, lut), lut=lut, measure=args.measure)
    from hwnas.io import atomic_write_text

    atomic_write_text(args.csv, df.to_csv(index=False))
    total = df.iloc[-1]
    print(f"{len(df) - 2} kernels, predicted {total['predicted_ms']:.4f} ms"
          + (f", measured {total['measured_ms']:.4f} ms" if args.measure else "") + f"; written {args.csv}")
    if args.measure:
        print(f"measured_ms: ONNX Runtime's per-kernel profile (whole microseconds plus the profiler's own cost; "
              f"{total['profiled_ms']:.4f} ms in all, raw in profiled_ms) scaled to the unprofiled end-to-end time; "
              "(model overhead) holds the rest")
    return 0


def _predict(args) -> int:
    import pathlib

    import torch

    from hwnas import zoo
    from hwnas.predict import ShapeError, load_predictor, predict_latency, speed_check

    is_file = pathlib.Path(args.model).is_file()
    if not is_file and args.model not in zoo.list():
        raise FileNotFoundError(f"{args.model!r} is neither an ONNX file nor a zoo model: no such file or model "
                                f"name; give an .onnx file or one of {', '.join(zoo.list())}.")
    if is_file:
        _check_onnx_file(args.model)
    predictor = load_predictor(args.predictor, device=args.device)
    if args.speed_check:
        check = speed_check(predictor, n=args.speed_check, progress=True)
        print(f"speed check: the machine runs at {check.describe()} the training times now")
        predictor = predictor.with_speed(check)
    if is_file:
        x = torch.randn(args.input) if args.input else None
        try:
            rec = predict_latency(args.model, x, device=args.device, predictor=predictor)
        except ShapeError as e:  # the library's advice names its argument; here it is the flag
            raise ShapeError(_as_flag(str(e))) from None
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


def _as_flag(message: str) -> str:
    """A library message's advice to ``pass dummy_input ...`` as the command line's ``--input``."""
    message = message.replace("pass dummy_input (e.g. torch.zeros(1, 128, dtype=torch.long) for 128 tokens)",
                              "pass --input (e.g. --input 1,128 for 128 tokens)")
    return message.replace("pass dummy_input", "pass --input (e.g. --input 1,3,224,224)")


def _check_onnx_file(path: str) -> None:
    """Refuse a file that is not an ONNX model (a script, an image, a truncated export) in one line, before the
    predictor loads: protobuf would parse some bytes and fail deep inside on others."""
    import onnx

    try:
        model = onnx.load_model(path, load_external_data=False)
        ok = len(model.graph.node) > 0 and len(model.graph.input) > 0
    except Exception as e:  # protobuf's DecodeError, RuntimeWarning-as-error, OSError ...
        detail = f"protobuf could not parse it: {type(e).__name__}"
        ok = False
    else:
        detail = "it parses as an empty model, no graph nodes or inputs"
    if not ok:
        raise ValueError(f"{path!r} is not an ONNX model ({detail}); give an .onnx file, e.g. from "
                         "torch.onnx.export(model, x, 'model.onnx'), or a zoo model name (hwnas.zoo.list()).")


# --------------------------------------------------------------------------------------------------- export
def _add_export_parser(sub) -> None:
    e = sub.add_parser("export", help="the subnet of an architecture JSON (e.g. best_arch.json of `hwnas search`) as "
                       "a plain PyTorch model (.pt) and/or ONNX")
    e.add_argument("--space", required=True)
    e.add_argument("--arch", required=True, help="architecture JSON (hwnas.save_arch; `hwnas search` writes "
                   "best_arch.json)")
    e.add_argument("--weights", default=None, help="the space's trained weights: a state dict file (torch.save of "
                   "space.state_dict()) or a converted space written by hwnas.save (default: as constructed)")
    e.add_argument("--out", default=None, help="the .pt file: the whole subnet, torch.save(model), load it with "
                   "torch.load(path, weights_only=False)")
    e.add_argument("--onnx", default=None, help="the .onnx file (checked against PyTorch in ONNX Runtime)")
    e.add_argument("--dynamic-batch", action="store_true", help="ONNX: any batch size (a symbolic first axis)")
    e.add_argument("--input", type=_shape, default=None)
    e.add_argument("--space-arg", action="append", default=[], metavar="KEY=JSON")


def _export(args) -> int:
    import torch

    import hwnas
    from hwnas.io import atomic_writer

    if not args.out and not args.onnx:
        raise ValueError("hwnas export: nothing to write; give --out subnet.pt and/or --onnx subnet.onnx.")
    space = hwnas.spaces.create(args.space, **_space_kwargs(args.space_arg)).eval()
    if args.weights:
        state = torch.load(args.weights, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state) if isinstance(state, dict) else state
        space.load_state_dict(state)
    sample = hwnas.load_arch(args.arch, space)
    subnet = hwnas.export(space, sample).eval()
    written = []
    if args.out:
        with atomic_writer(args.out) as f:
            torch.save(subnet, f)
        written.append(args.out)
    if args.onnx:
        hwnas.to_onnx(subnet, _input(args, space), args.onnx, dynamic_batch=args.dynamic_batch)
        written.append(args.onnx + (" (dynamic batch)" if args.dynamic_batch else ""))
    params = sum(p.numel() for p in subnet.parameters())
    print(f"exported {type(subnet).__name__} ({params} parameters) of {args.arch}; written: {', '.join(written)}")
    return 0


# ---------------------------------------------------------------------------------------------------- adapt
def _add_adapt_parser(sub) -> None:
    a = sub.add_parser("adapt", help="carry a LUT or a learned predictor to this machine / another device: measure "
                       "20-60 models here (steady state, at most ~2 min) and refit one factor per kernel family")
    a.add_argument("artefact", help="a LUT or a predictor: a shipped name (digits, mobilenet_v3_cpu-ort-2t; the "
                   "predictor cpu-ort-1t) or a file (.json LUT, .skops predictor), typically from another machine")
    a.add_argument("--device", default=None, help="the target device measured here, e.g. cpu-ort-1t, cpu-ort-2t "
                   "(default: the artefact's own device, i.e. the same runtime set-up on this machine)")
    a.add_argument("--n", "--measurements", dest="n", type=int, default=40,
                   help="models measured: a LUT's build subnets, or a predictor's generator models (20-60)")
    a.add_argument("--out", default=None, help="the adapted artefact (default: <artefact stem>_adapted_<device>.json "
                   "or .skops here)")
    a.add_argument("--space", default=None, help="LUTs: the LUT's space (default: the first registered space it was "
                   "built for)")
    a.add_argument("--input", type=_shape, default=None, help="LUTs: input shape with --space (default: the "
                   "space's declared shape, else the LUT's)")
    a.add_argument("--budget", type=float, default=120.0, help="time budget in seconds")
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--space-arg", action="append", default=[], metavar="KEY=JSON")


def _adapt(args) -> int:
    import pathlib

    import hwnas
    from hwnas.artifacts import resolve_lut, resolve_predictor
    from hwnas.hw.adapt import adapt_lut, is_predictor
    from hwnas.hw.lut import LUT

    if is_predictor(args.artefact):
        return _adapt_predictor(args, resolve_predictor(args.artefact))
    src = resolve_lut(args.artefact)
    if not src.is_file():
        raise FileNotFoundError(f"{args.artefact!r} is not a file; pass a LUT file (.json), a predictor file (.skops) "
                                "or a shipped name such as digits or cpu-ort-1t (hwnas lut list shows them).")
    space = x = None
    if args.space:
        space = hwnas.spaces.create(args.space, **_space_kwargs(args.space_arg)).eval()
        x = _input(args, space, src)
    device = args.device or LUT.load(src, check_fingerprint=False).device.name
    if device.startswith("remote:"):  # the device on its agent, named as in its LUTs (no URL in a file name)
        from hwnas.hw.device import get_device

        device = get_device(device)
    label = device if isinstance(device, str) else device.name
    out = pathlib.Path(args.out) if args.out else pathlib.Path(f"{src.stem}_adapted_{label}.json")
    lut = adapt_lut(src, device, n=args.n, space=space, dummy_input=x, out=out, budget_s=args.budget,
                    seed=args.seed, progress=True)
    _print_adapted(args.artefact, label, lut.adapted["adapted_from"], out, "subnets",
                   "on this machine" if isinstance(device, str) else "on its agent")
    return 0


def _adapt_predictor(args, src) -> int:
    import pathlib

    from hwnas.predict.adapt import _check_n, _check_out, adapt
    from hwnas.predict.predictor import load_predictor

    _check_n(args.n)  # before the predictor loads (seconds)
    _check_out(args.out)
    if args.space or args.input:
        raise ValueError(f"{args.artefact!r} is a learned predictor: --space and --input are for LUTs (a predictor "
                         "is adapted with models of its own training generator); drop them.")
    if not src.is_file():
        raise FileNotFoundError(f"predictor {str(src)!r} is not a file; pass a .skops file or the name of a shipped "
                                "predictor (hwnas lut list shows them).")
    source = load_predictor(src, check_fingerprint=False)
    device = args.device or source.device.name
    out = pathlib.Path(args.out) if args.out else pathlib.Path(f"{src.stem}_adapted_{device}.skops")
    pred = adapt(source, device, n=args.n, out=out, budget_s=args.budget, seed=args.seed, progress=True)
    _print_adapted(args.artefact, device, pred.adapted["adapted_from"], out, "generator models")
    if pred.adapted["adapted_from"].get("warning"):
        print(f"hwnas adapt: warning: {pred.adapted['adapted_from']['warning']}", file=sys.stderr)
    return 0


def _print_adapted(name: str, device: str, info: dict, out, what: str, where: str = "on this machine") -> None:
    factors = ", ".join(f"{k} {v:.3f}" for k, v in info["factors"].items())
    print(f"adapted {name} ({info['device']}, {info['cpu_model']}) to {device} {where} in "
          f"{info['seconds']:.0f} s from {info['n']} {what}: {factors}; prior {info['prior']!r}, ridge "
          f"{info['ridge']:g}; leave-one-out error {100 * info['cv_rms']:.2f}% (one factor "
          f"{100 * info['cv_rms_one_factor']:.2f}%, unadapted {100 * info['rms_unadapted']:.2f}%); load "
          f"{info['load_avg']}; written: {out}")


# ---------------------------------------------------------------------------------------- demo and search
def _add_search_parsers(sub) -> None:
    d = sub.add_parser("demo", help="train, search, export and measure on scikit-learn's digits (a few minutes)")
    d.add_argument("--out", default="hwnas-demo", help="output folder")
    d.add_argument("--quick", action="store_true", help="a tiny budget (seconds), e.g. to check an install")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--lut", default=None, help="latency LUT, a file or a shipped name (default: the shipped digits)")
    d.add_argument("--no-progress", action="store_true", help="hide progress bars")

    s = sub.add_parser("search", help="multi-trial search of a space under constraints with your score function")
    s.add_argument("--space", required=True, help="a registered space (see `hwnas spaces`)")
    s.add_argument("--score", required=True,
                   help="module:function or path/to/file.py:function taking a sample dict and returning a score; "
                        "or a metric name (flops, params, latency_ms) to find the largest subnet that fits")
    s.add_argument("--constraint", type=_constraint, action="append", default=[],
                   help="metric=bound, repeatable: flops=60%% params=3e6 latency_ms=4")
    s.add_argument("--lut", default=None, help=LUT_HELP + "; adds the latency_ms metric")
    s.add_argument("--device", default=None, help=DEVICE_HELP)
    s.add_argument("--strategy", choices=("evolution", "random", "grid"), default="evolution",
                   help="evolution: regularized evolution; random: uniform samples; grid: every subnet in order")
    s.add_argument("--trials", type=int, default=100, help="trials to run (distinct subnets are scored once each)")
    s.add_argument("--population", type=int, default=50, help="evolution: population size")
    s.add_argument("--sample-size", type=int, default=10, help="evolution: tournament size")
    s.add_argument("--mutation-prob", type=float, default=0.05, help="evolution: probability to mutate each label")
    s.add_argument("--range", action="append", default=[], metavar="METRIC=MIN:MAX",
                   help="range filter, repeatable: flops=20%%:60%% (either end may be empty)")
    s.add_argument("--mode", choices=("max", "min"), default="max", help="is a higher score better (max)?")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--checkpoint", default=None, help="JSON file to resume from / save to")
    s.add_argument("--executor", choices=("inprocess", "ray"), default="inprocess",
                   help="where trials run: this process, or Ray workers (pip install 'hwnas[ray]')")
    s.add_argument("--address", default=None, help="Ray cluster address (with --executor ray)")
    s.add_argument("--out", default="hwnas-search", help="folder for history.csv, best_arch.json, pareto.png")
    s.add_argument("--input", type=_shape, default=None)
    s.add_argument("--space-arg", action="append", default=[], metavar="KEY=JSON")
    s.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _demo(args) -> int:
    from hwnas.demo import run_demo

    logging.getLogger("hwnas.demo").setLevel(logging.INFO)
    result = run_demo(args.out, quick=args.quick, seed=args.seed, lut=_lut_path(args), progress=not args.no_progress)
    print(result.table())
    return 0


def _load_score(spec: str):
    """``module:function`` or ``path/to/file.py:function`` -> the function (:func:`hwnas.registry.import_object`)."""
    from hwnas.registry import import_object

    if ":" not in spec:
        raise ValueError(f"--score {spec!r} should be module:function or path/to/file.py:function (or a metric name).")
    fn = import_object(spec, "--score")
    if not callable(fn):
        raise ValueError(f"--score {spec!r}: {fn!r} is not a function.")
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
    from hwnas.search import (
        Chain,
        Grid,
        Random,
        RangeProfilerFilter,
        RegularizedEvolution,
        SearchError,
        build_profilers,
        run,
    )

    space = hwnas.spaces.create(args.space, **_space_kwargs(args.space_arg)).eval()
    x = _input(args, space, _lut_path(args))
    profilers = build_profilers(space, x)
    if args.lut:
        profilers["latency_ms"] = hwnas.LatencyProfiler(space, x, lut=_lut_path(args), graph=profilers["flops"].graph)
    for metric, _ in args.constraint:
        if metric not in profilers:
            raise ValueError(f"--constraint {metric}=...: no metric {metric!r}; available: {sorted(profilers)}"
                             + (f" (latency_ms needs --lut, e.g. --lut {args.space})."
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
        result = run(space, None, dict(args.constraint) or None, score, strategy=strategy,
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
    y_label = args.score if args.score in profilers else f"score ({args.score.rpartition(':')[2]})"
    x_label = "latency_ms (predicted by the LUT)" if x_axis == "latency_ms" else x_axis
    plot_pareto(result.history, x=x_axis, y="score", path=out / "pareto.png", budget=bounds.get(x_axis),
                y_mode=args.mode, x_label=x_label, y_label=y_label)
    metrics = ", ".join(f"{k} {format_number(v)}" for k, v in result.best_metrics.items())
    hits = sum(t.cached for t in result.history)
    print(f"best score {result.best_score:.6g} ({metrics}) after {len(result.history)} trials, "
          f"{len(result.history) - hits} distinct subnets scored, {hits} repeats answered from the cache "
          f"({result.num_proposed} proposed, {result.num_rejected} rejected before evaluation)")
    print("best sample: " + json.dumps(result.best_sample))
    print(f"written: {out / 'history.csv'}, {out / 'best_arch.json'}, {out / 'pareto.png'}")
    return 0


# ------------------------------------------------------------------------------------- errors and exit codes
def _guarded(args, run) -> int:
    """``run(args)`` with errors turned into exit codes, as argparse and Unix tools use them.

    0 done; 2 a usage error or any error the command hit (one line on stderr, ``hwnas <command>: error: ...``,
    no traceback; ``--debug`` shows the traceback); 130 interrupted by Ctrl-C; 141 (128 + SIGPIPE) when the
    reader of the output went away, e.g. ``hwnas spaces | head -1``, which ends quietly.
    """
    try:
        code = run(args)
        sys.stdout.flush()  # a closed pipe shows here, not at exit
        return code
    except BrokenPipeError:
        _quiet_stdout()
        return 141
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"hwnas {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if args.debug:
            raise
        print(f"hwnas {args.command}: error: {_describe(e)}", file=sys.stderr)
        return 2


_PLAIN_ERRORS = (ValueError, TypeError, KeyError, OSError, NotImplementedError)


def _describe(e: BaseException) -> str:
    """One line for an error: hwnas's own messages as they are, other libraries' with their type."""
    text = e.args[0] if isinstance(e, KeyError) and len(e.args) == 1 and isinstance(e.args[0], str) else str(e)
    text = text.strip() or "(no message)"
    if type(e).__module__.startswith("hwnas") or type(e) in _PLAIN_ERRORS or (
            isinstance(e, _PLAIN_ERRORS) and type(e).__module__ == "builtins"):
        return text
    return f"{type(e).__name__}: {text} (run with --debug for the traceback)"


def _quiet_stdout() -> None:
    """Point stdout at /dev/null, so that Python's flush at exit does not fail on the closed pipe again."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # pragma: no cover - stdout without a file descriptor
        pass


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
