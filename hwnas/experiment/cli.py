"""``hwnas run``: run an experiment file or a preset (the command line's hook is two calls in hwnas.cli)."""

from __future__ import annotations

import argparse
import json
import sys

__all__ = ["add_run_parser", "run_command"]


def add_run_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``hwnas run`` to the command line's subcommands."""
    r = sub.add_parser("run", help="run an experiment file (YAML) or a preset end to end; resumable "
                       "(docs/experiments.md)")
    r.add_argument("config", nargs="?", default=None, help="the experiment file (YAML)")
    r.add_argument("--preset", default=None, help="a shipped experiment instead of a file (--list-presets)")
    r.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override a key, repeatable: --set strategy.trials=50 --set seed=1 (the value is YAML)")
    r.add_argument("--out", default=None, help="the output folder (overrides output: of the file)")
    r.add_argument("--print-config", action="store_true",
                   help="print the resolved config (every default filled in) and exit without running")
    r.add_argument("--list-presets", action="store_true", help="list the shipped presets and exit")
    r.add_argument("--no-progress", action="store_true", help="hide progress bars and phase lines")


def run_command(args: argparse.Namespace) -> int:
    """``hwnas run``: print the resolved config, list the presets, or run and print the outcome."""
    import hwnas.experiment as ex

    if args.list_presets:
        print("\n".join(ex.presets()))
        return 0
    progress = False if args.no_progress else None
    cfg = ex.resolve_config(args.config, preset=args.preset, overrides=args.overrides, output=args.out,
                            progress=progress)
    if args.print_config:
        sys.stdout.write(ex.dump(cfg))
        return 0
    result = ex.run_resolved(cfg)
    if cfg["pipeline"] == "demo":
        print(result.search.table())
    else:
        print(f"best score {result.best_score:.6g} ({', '.join(f'{k} {v:.6g}' for k, v in result.best_metrics.items())})"
              + (" (resumed)" if result.resumed else ""))
        print("best sample: " + json.dumps(result.best_sample))
    print("written: " + ", ".join(str(p) for p in result.files.values()))
    return 0
