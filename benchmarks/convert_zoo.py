"""hwnas.convert on the hand-written zoo models: exactness against fvcore, exported parameters, the original
model's outputs and ONNX Runtime, plus a constrained search, with timings.

For each model: convert (mode width+kernel+depth), build the FLOPs and params profilers, then for the max
sample, the min sample and ``--samples`` random samples: FLOPs equal fvcore's count of the exported subnet,
params equal ``sum(p.numel())`` of it, the exported subnet computes what the supernet computes (and the max
subnet what the original model computes), and the subnet runs in ONNX Runtime with the same output. Then
``hwnas.search`` with ``{"flops": "60%"}`` (random strategy) must return a subnet within the budget.

    python benchmarks/convert_zoo.py [--samples 20] [--size 64] [--models resnet18,vit_tiny]

Prints a table and writes benchmarks/results/convert_zoo.csv. Columns: channel groups searched, distinct width,
kernel and depth labels, layers fixed (layers holding at least one fixed channel group, each counted once:
ShuffleNet's shuffled streams; elsewhere the classifier, whose outputs are the model's), the number of
subnets, seconds to convert and to build the FLOPs and params profilers, microseconds per candidate for one
FLOPs profile plus the constraint check, how many subnets passed each check, and the search's result.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
import warnings
from pathlib import Path

import torch
from _common import fvcore_count, median_time, pin_threads, write_table
from tqdm import tqdm

import hwnas
from hwnas import zoo
from hwnas.profile.constraints import parse_constraints
from hwnas.search import Random

MODELS = ["resnet18", "resnet50", "mobilenet_v2", "mobilenet_v3_large", "efficientnet_b0", "regnet_x_400mf",
          "shufflenet_v2_x1_0", "densenet121", "squeezenet1_0", "vit_tiny"]


def close(got: torch.Tensor, want: torch.Tensor) -> bool:
    """Equal up to float rounding: ``max|got - want| <= 1e-4 * max(1, max|want|)`` (untrained models' logits
    reach the thousands, where an elementwise relative tolerance sees rounding of near-zero logits)."""
    return float((got - want).abs().max()) <= 1e-4 * max(1.0, float(want.abs().max()))


def fixed_layers(space) -> set[str]:
    """Layers (module paths) that keep at least one channel axis fixed, each counted once."""
    return {layer for g in space.conversion.fixed_groups for layer in g.layers}


def run_model(name: str, size: int, n_samples: int, tmp: Path) -> tuple:
    torch.manual_seed(0)
    kw = {"image_size": size} if name.startswith("vit") else {}
    model = zoo.create(name, num_classes=1000, **kw).eval()
    x = torch.randn(1, 3, size, size)
    t0 = time.perf_counter()
    space = hwnas.convert(model, x, mode="width+kernel+depth")
    convert_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    flops = hwnas.FlopsProfiler(space, x)
    params = hwnas.NumParamsProfiler(space, graph=flops.graph)
    profile_s = time.perf_counter() - t0
    (budget,) = parse_constraints({"flops": "60%"}, {"flops": flops})
    samples = [space.max_sample(), space.min_sample()] + [space.random_sample(i) for i in range(n_samples)]
    check_s = median_time(lambda: [budget.satisfied(flops.profile(s)) for s in samples], repeats=5) / len(samples)
    ok = {"flops": 0, "params": 0, "forward": 0, "onnx": 0}
    with torch.no_grad():
        original = model(x)
    for i, sample in enumerate(tqdm(samples, desc=name, leave=False)):
        subnet = hwnas.export(space, sample).eval()
        ok["flops"] += flops.profile(sample) == fvcore_count(subnet, x)
        ok["params"] += params.profile(sample) == sum(p.numel() for p in subnet.parameters())
        with torch.no_grad():
            got = subnet(x)
            same = close(got, space.apply_arch(sample)(x))
            if i == 0:
                same = same and close(got, original)
        ok["forward"] += bool(same)
        try:
            hwnas.to_onnx(subnet, x, tmp / f"{name}_{i}.onnx")  # compares ONNX Runtime with PyTorch
            ok["onnx"] += 1
        except Exception as e:  # reported in the table, not fatal
            logging.warning("%s sample %d: ONNX failed: %s", name, i, e)
    t0 = time.perf_counter()
    result = hwnas.search(space, x, {"flops": "60%"}, lambda s: flops.profile(s), strategy=Random(),
                          max_trials=50, seed=0, progress=False)
    search_s = time.perf_counter() - t0
    found = flops.profile(result.best_sample)
    in_budget = found <= budget.bound and fvcore_count(hwnas.export(space, result.best_sample), x) <= budget.bound
    c = space.conversion
    n = len(samples)
    return (name, len(c.searched_groups), len({g.label for g in c.searched_groups}), len(c.kernels), len(c.depths),
            len(fixed_layers(space)), f"{space.num_subnets():.2e}", round(convert_s, 3),
            round(profile_s, 3), round(check_s * 1e6, 2), f"{ok['flops']}/{n}", f"{ok['params']}/{n}",
            f"{ok['forward']}/{n}", f"{ok['onnx']}/{n}", f"{found / flops.profile(space.max_sample()):.2f}",
            "yes" if in_budget else "NO", round(search_s, 2))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=20, help="random samples per model (plus min and max)")
    ap.add_argument("--size", type=int, default=64, help="input resolution")
    ap.add_argument("--models", default=",".join(MODELS))
    args = ap.parse_args()
    pin_threads(1)
    warnings.filterwarnings("ignore")
    logging.getLogger("fvcore").setLevel(logging.ERROR)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in tqdm(args.models.split(","), desc="models"):
            rows.append(run_model(name, args.size, args.samples, Path(tmp)))
    header = ["model", "groups", "width labels", "kernel labels", "depth labels", "layers fixed", "subnets",
              "convert s", "profile s", "check us/cand", "flops=fvcore", "params=export", "forward ok", "onnx ok",
              "search flops/max", "search in 60%", "search s"]
    print(f"input 1x3x{args.size}x{args.size}, mode width+kernel+depth, {args.samples} random samples + min + max; "
          "'check us/cand' is one FLOPs profile plus the constraint check per candidate\n")
    write_table("convert_zoo", header, rows)
    n = args.samples + 2
    bad = [r[0] for r in rows if any(v != f"{n}/{n}" for v in r[10:14]) or r[15] != "yes"]
    if bad:
        raise SystemExit(f"not exact or out of budget: {bad}")


if __name__ == "__main__":
    main()
