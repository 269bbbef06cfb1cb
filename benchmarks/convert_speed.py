"""How long ``hwnas.convert`` takes at 224x224, per model: the median of repeats, wall and CPU time.

The issue's target (issue 16): at most 3 s for any model up to 50M parameters (torchvision's models took
0.1-2.4 s on a quiet machine, ViT-B/16 the slowest). Models: the hand-written zoo (``hwnas.zoo``) and look-alikes
(``benchmarks/lookalikes.py``) always; with ``--real``, also the real timm / torchvision models the issue names
(only in the zoo venv, ``benchmarks/make_zoo_venv.sh``; random init, nothing downloaded).

Each repeat runs in a fresh process per checkout (torch at 1 thread, one warm-up conversion first), so that
``--compare /other/checkout`` measures the two trees in turns (A B A B ...) under the same load; the CPU time is
the process's own, which other jobs on a shared host do not inflate as they do the wall time.

    python benchmarks/convert_speed.py                         # zoo + look-alikes, this checkout
    ~/.cache/hwnas-zoo-venv/bin/python benchmarks/convert_speed.py --real --compare /tmp/main-snapshot

Writes ``benchmarks/results/convert_speed.csv`` (``--out``): model, source, parameters (M), graph nodes, then per
checkout the median wall and CPU seconds over ``--repeats`` and the slowest CPU repeat.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
ZOO = ["resnet18", "resnet50", "mobilenet_v3_large", "efficientnet_b0", "regnet_x_400mf", "densenet121",
       "vit_tiny", "vit_b_16"]
LOOKALIKES = ["convnext_like", "vit_small_d6", "swin_like", "regnety_like", "levit_like", "efficientformer_like"]
REAL = ["torchvision:resnet50", "torchvision:efficientnet_b0", "torchvision:convnext_tiny", "torchvision:vit_b_16",
        "torchvision:densenet121", "torchvision:resnet18", "timm:vit_small_patch16_224", "timm:resnet50",
        "timm:efficientnet_b0", "timm:convnext_tiny", "timm:densenet121", "timm:mobileone_s1"]


def build(spec: str):
    """``(model, input)`` at 224 px for ``source:name``."""
    import torch

    source, name = spec.split(":", 1)
    torch.manual_seed(0)
    if source == "zoo":
        from hwnas import zoo

        return zoo.create(name, num_classes=1000).eval(), torch.randn(1, 3, 224, 224)
    if source == "lookalike":
        sys.path.insert(0, str(HERE))
        from lookalikes import create

        return create(name)
    if source == "torchvision":
        import torchvision

        return torchvision.models.get_model(name).eval(), torch.randn(1, 3, 224, 224)
    if source == "timm":
        import timm

        return timm.create_model(name, pretrained=False).eval(), torch.randn(1, 3, 224, 224)
    raise ValueError(f"unknown source {source!r} in {spec!r}; expected zoo, lookalike, torchvision or timm")


def child(specs: list[str]) -> None:
    """One conversion of each model in this process; prints one JSON line per model."""
    import logging

    import torch

    import hwnas

    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    torch.set_num_threads(1)
    tiny = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.ReLU()).eval()
    hwnas.convert(tiny, torch.randn(1, 3, 16, 16))  # imports and first-call costs out of the figures
    for spec in specs:
        model, x = build(spec)
        t, c = time.perf_counter(), time.process_time()
        space = hwnas.convert(model, x)
        wall, cpu = time.perf_counter() - t, time.process_time() - c
        row = {"spec": spec, "wall": wall, "cpu": cpu, "labels": len(space.choices()),
               "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
               "nodes": len(space.net.graph.nodes) if hasattr(space, "net") else ""}
        print("RESULT " + json.dumps(row), flush=True)


def run_once(tree: Path, specs: list[str]) -> dict[str, dict]:
    env = dict(os.environ, PYTHONPATH=str(tree))
    proc = subprocess.run([sys.executable, str(HERE / "convert_speed.py"), "--child", *specs], env=env,
                          capture_output=True, text=True)
    rows = {}
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            r = json.loads(line[7:])
            rows[r["spec"]] = r
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-3000:])
        raise SystemExit(f"convert_speed: the run in {tree} failed (exit {proc.returncode})")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--real", action="store_true", help="also real timm/torchvision models (zoo venv only)")
    ap.add_argument("--models", nargs="+", help="source:name specs instead of the default list")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--compare", type=Path, help="another checkout of hwnas, measured in turns with this one")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "convert_speed.csv")
    ap.add_argument("--child", nargs="*", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        return child(args.child)
    specs = args.models or [f"zoo:{m}" for m in ZOO] + [f"lookalike:{m}" for m in LOOKALIKES] + \
        (REAL if args.real else [])
    trees = [HERE.parent] + ([args.compare.resolve()] if args.compare else [])
    runs: dict[Path, list[dict[str, dict]]] = {t: [] for t in trees}
    for r in range(args.repeats):
        for tree in trees:  # in turns: both trees see the same load
            runs[tree].append(run_once(tree, specs))
            print(f"repeat {r + 1}/{args.repeats} {tree}: " + ", ".join(
                f"{s.split(':')[1]} {v['cpu']:.2f}" for s, v in runs[tree][-1].items()), flush=True)
    header = ["model", "source", "params_m", "nodes", "labels"]
    for k in range(len(trees)):
        tag = "" if k == 0 else "_other"
        header += [f"wall_s{tag}", f"cpu_s{tag}", f"cpu_max_s{tag}"]
    table = []
    for spec in specs:
        first = runs[trees[0]][0][spec]
        row = [spec.split(":", 1)[1], spec.split(":", 1)[0], f"{first['params_m']:.1f}", first["nodes"],
               first["labels"]]
        for tree in trees:
            walls = [rep[spec]["wall"] for rep in runs[tree]]
            cpus = [rep[spec]["cpu"] for rep in runs[tree]]
            row += [f"{statistics.median(walls):.3f}", f"{statistics.median(cpus):.3f}", f"{max(cpus):.3f}"]
        table.append(row)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(table)
    width = max(len(h) for h in header)
    print(" | ".join(h.ljust(min(width, 12)) for h in header))
    for row in table:
        print(" | ".join(str(c).ljust(min(width, 12)) for c in row))
    print(f"trees: {', '.join(map(str, trees))}; wrote {args.out}")


if __name__ == "__main__":
    main()
