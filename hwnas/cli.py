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
    return 1  # pragma: no cover


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
