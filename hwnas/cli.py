"""The ``hwnas`` command line: thin wrappers over library calls.

Examples::

    hwnas profile --space mobilenet_v3 --input 1,3,224,224 --constraint flops=60% --constraint params=6e6
    hwnas profile --space digits --input 1,1,8,8
"""

from __future__ import annotations

import argparse
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
    lb.add_argument("--max-subnets", type=int, default=None)
    lb.add_argument("--space-arg", action="append", default=[], metavar="KEY=JSON")
    li = lut.add_parser("info", help="summarise a LUT file")
    li.add_argument("path")

    rep = sub.add_parser("report", help="reports").add_subparsers(dest="report_command", required=True)
    rl = rep.add_parser("latency", help="per-layer latency of an architecture as CSV")
    rl.add_argument("--space", required=True)
    rl.add_argument("--arch", required=True, help="architecture JSON (hwnas.save_arch)")
    rl.add_argument("--lut", required=True)
    rl.add_argument("--csv", required=True)
    rl.add_argument("--input", type=_shape, default=None)
    rl.add_argument("--measure", action="store_true", help="also measure each kernel with ONNX Runtime")
    rl.add_argument("--space-arg", action="append", default=[], metavar="KEY=JSON")
    return p


DEFAULT_INPUTS = {"digits": (1, 1, 8, 8)}


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
            shape = args.input or DEFAULT_INPUTS.get(args.space, (1, 3, 224, 224))
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
    except (ValueError, KeyError, FileNotFoundError) as e:
        print(f"hwnas {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 1  # pragma: no cover


def _input(args) -> object:
    import torch

    return torch.randn(args.input or DEFAULT_INPUTS.get(args.space, (1, 3, 224, 224)))


def _lut(args) -> int:
    import hwnas
    from hwnas.hw import LUT, build_lut

    if args.lut_command == "info":
        print(LUT.load(args.path).summary())
        return 0
    space = hwnas.spaces.create(args.space, **_space_kwargs(args.space_arg)).eval()
    lut = build_lut(space, _input(args), args.device, args.out, repeats_per_kernel=args.repeats, runs=args.runs,
                    max_subnets=args.max_subnets, space_name=args.space)
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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
