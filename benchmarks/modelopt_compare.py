"""NVIDIA ModelOpt's FastNAS next to hwnas.convert on the same zoo models: does it convert, and how long
does one candidate's FLOPs constraint check take.

ModelOpt is not a dependency of hwnas; run this with a Python that has it, e.g. a venv over the system
packages::

    python -m venv --system-site-packages /tmp/mo && /tmp/mo/bin/pip install nvidia-modelopt \\
        huggingface_hub "torchprofile==0.0.4"
    /tmp/mo/bin/python benchmarks/modelopt_compare.py [--size 64] [--candidates 5]

For each model: ``mtn.convert(model, mode="fastnas")`` (time or error), then for ``--candidates`` random
subnets (``mtn.sample``) the median time of ``ConstraintsFunc(model, {"flops": "60%"}, x)()`` (ModelOpt
profiles the subnet with torchprofile, a trace per candidate), next to hwnas's ``check us/cand`` from
``benchmarks/results/convert_zoo.csv`` when it exists. Writes benchmarks/results/modelopt_compare.csv.
"""

from __future__ import annotations

import argparse
import csv
import logging
import statistics
import time
import warnings

import torch
from _common import RESULTS, pin_threads, write_table

from hwnas import zoo

MODELS = ["resnet18", "resnet50", "mobilenet_v2", "mobilenet_v3_large", "efficientnet_b0", "regnet_x_400mf",
          "shufflenet_v2_x1_0", "densenet121", "squeezenet1_0", "vit_tiny"]


def ours() -> dict[str, str]:
    path = RESULTS / "convert_zoo.csv"
    if not path.exists():
        return {}
    with path.open() as f:
        return {r["model"]: r["check us/cand"] for r in csv.DictReader(f)}


def run_model(name: str, size: int, n: int) -> tuple:
    import modelopt.torch.nas as mtn
    from modelopt.torch.nas.algorithms import ConstraintsFunc

    torch.manual_seed(0)
    kw = {"image_size": size} if name.startswith("vit") else {}
    model = zoo.create(name, num_classes=1000, **kw).eval()
    x = torch.randn(1, 3, size, size)
    t0 = time.perf_counter()
    try:
        model = mtn.convert(model, mode="fastnas")
    except Exception as e:  # reported in the table
        return name, f"fails: {type(e).__name__}: {str(e).splitlines()[0][:60]}", "-", "-"
    convert_s = time.perf_counter() - t0
    check = ConstraintsFunc(model, {"flops": "60%"}, x)
    times = []
    for _ in range(n):
        mtn.sample(model)
        t0 = time.perf_counter()
        check()
        times.append(time.perf_counter() - t0)
    return name, "yes", round(convert_s, 3), round(statistics.median(times) * 1e3, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=64, help="input resolution")
    ap.add_argument("--candidates", type=int, default=5, help="random subnets timed per model")
    ap.add_argument("--models", default=",".join(MODELS))
    args = ap.parse_args()
    pin_threads(1)
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    import modelopt

    mine = ours()
    rows = [r + (mine.get(r[0], ""),) for r in (run_model(m, args.size, args.candidates)
                                                for m in args.models.split(","))]
    print(f"nvidia-modelopt {modelopt.__version__}, input 1x3x{args.size}x{args.size}, 1 thread\n")
    write_table("modelopt_compare", ["model", "modelopt converts", "modelopt convert s", "modelopt check ms/cand",
                                     "hwnas check us/cand"], rows)


if __name__ == "__main__":
    main()
