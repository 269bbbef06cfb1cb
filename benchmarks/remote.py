"""Remote measurement through a loopback agent against local measurement, on the ``digits`` space.

    python benchmarks/remote.py                      # about 10-15 minutes on a quiet 2-core host
    python benchmarks/remote.py --builds 2 --kills 5 --holdout 30

Three checks, side by side in one run (the agent is the packed ``.pyz`` with torch, pandas and onnx blocked: the
light install), all on this one machine, so timing figures share its load (``uptime`` is printed with them):

1. **Overhead**: digits LUT builds, local and remote alternately (L, R, L, R, ...), the same settings and seed; the
   remote wall time over the local one (target: at most 1.10).
2. **Agreement**: the first local and remote LUTs predict 30 held-out subnets (random subnets that are not build
   subnets): Kendall tau between the two LUTs' predictions (target >= 0.9) and the ratio of their medians (within
   5%). Each LUT is also compared with a local steady measurement of those subnets, and every build with the others:
   two builds of one kind minutes apart show how far the host's drift alone moves a LUT (the paired level of a LUT
   follows the host's speed during its build).
3. **Faults**: a remote build during which the agent is killed (SIGKILL of its process group) at ``--kills`` random
   points and started again on the same port after a second; it must end with the uninterrupted remote build's
   subnets and kernels, every measurement saved before each kill still in the file.

Results: ``benchmarks/results/remote.md`` (overwritten) and a row in ``benchmarks/results/remote.csv``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
from _common import RESULTS, append_row, pin_threads
from scipy.stats import kendalltau

import hwnas
from hwnas.hw import remote
from hwnas.hw.build import build_lut, export_subnets
from hwnas.hw.device import get_device
from hwnas.hw.lut import LUT
from hwnas.hw.measure import measure_many
from hwnas.hw.remote_local import HEAVY, spawn_agent

X = torch.randn(1, 1, 8, 8)
TOKEN = "benchmark-token-remote"


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def timed_build(device, path, settings) -> float:
    t0 = time.perf_counter()
    build_lut(hwnas.spaces.create("digits").eval(), X, device, path, progress=False, **settings)
    return time.perf_counter() - t0


def killed_build(agent, work: Path, settings: dict, kills: int, rng: np.random.Generator, total_subnets: int):
    """A remote build with the agent killed at ``kills`` random numbers of finished subnets; returns (lut, log)."""
    dev = remote.connect(agent.device("cpu-ort-1t")[len("remote:"):], retry_s=600)
    path = work / "killed.json"
    points = sorted(rng.choice(np.arange(2, total_subnets + 1), size=kills, replace=kills > total_subnets - 1))
    result, errors, events = {}, [], []

    def build():
        try:
            result["lut"] = build_lut(hwnas.spaces.create("digits").eval(), X, dev, path, progress=False, **settings)
        except Exception as e:  # reported below
            errors.append(e)

    t = threading.Thread(target=build)
    t.start()
    current = agent
    try:
        for point in points:
            while t.is_alive():
                n = len(json.loads(path.read_text())["subnets"]) if path.exists() else 0
                if n >= point:
                    break
                time.sleep(0.01)
            if not t.is_alive():
                break
            current.kill()
            snapshot = json.loads(path.read_text()) if path.exists() else {"entries": {}, "subnets": []}
            events.append({"after_subnets": len(snapshot["subnets"]), "snapshot": snapshot, "time": time.time()})
            time.sleep(1.0)
            current = spawn_agent(TOKEN, port=agent.port, block_imports=HEAVY, workdir=work / "agent")
        t.join()
    finally:
        current.stop()
    if errors:
        raise errors[0]
    return result["lut"], events


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--builds", type=int, default=2, help="builds of each kind, alternated (default 2)")
    ap.add_argument("--holdout", type=int, default=30)
    ap.add_argument("--kills", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(RESULTS / "remote.md"))
    args = ap.parse_args()
    pin_threads(1)
    settings = dict(repeats_per_kernel=2, runs=10, warmup=3, random_subnets=10, end_to_end_rounds=10, calibrate=0,
                    seed=args.seed)
    work = Path(tempfile.mkdtemp(prefix="hwnas-bench-remote-"))
    os.environ[remote.TOKEN_ENV] = TOKEN
    lines = [f"host before: {uptime()}"]
    print(lines[0])
    agent = spawn_agent(TOKEN, block_imports=HEAVY, workdir=work / "agent")
    try:
        dev = get_device(agent.device("cpu-ort-1t"))
        # 1. overhead: alternate local and remote builds
        walls = {"local": [], "remote": []}
        for i in range(args.builds):
            for kind, device in (("local", "cpu-ort-1t"), ("remote", dev)):
                s = timed_build(device, work / f"{kind}{i}.json", settings)
                walls[kind].append(s)
                print(f"build {i} {kind}: {s:.1f} s  ({uptime()})")
        lut_local, lut_remote = LUT.load(work / "local0.json"), LUT.load(work / "remote0.json")
        ratio = float(np.median(walls["remote"]) / np.median(walls["local"]))
        pair_ratios = [r / max(loc, 1e-9) for loc, r in zip(walls["local"], walls["remote"])]
        # 2. agreement on held-out subnets
        space = hwnas.spaces.create("digits").eval()
        built = {json.dumps(r["sample"], sort_keys=True) for r in lut_local.subnets + lut_remote.subnets}
        rng = np.random.default_rng(args.seed + 100)
        choices = hwnas.FlopsProfiler(space, X).graph.choices
        held = []
        for _ in range(10000):
            s = {k: c.values[int(rng.integers(len(c.values)))] for k, c in choices.items()}
            key = json.dumps(s, sort_keys=True)
            if key not in built and key not in {json.dumps(h, sort_keys=True) for h in held}:
                held.append(s)
            if len(held) == args.holdout:
                break
        preds = {f"{kind}{i}": np.array([hwnas.LatencyProfiler(space, X, lut=LUT.load(work / f"{kind}{i}.json"))
                                        .profile(s) for s in held])
                 for kind in ("local", "remote") for i in range(args.builds)}
        p_local, p_remote = preds["local0"], preds["remote0"]
        tau = float(kendalltau(p_local, p_remote)[0])
        med_ratio = float(np.median(p_remote) / np.median(p_local))
        # the yardstick: how far two builds of one kind, minutes apart on this host, are from each other
        pairs = {f"{a}/{b}": (float(kendalltau(preds[a], preds[b])[0]), float(np.median(preds[a]) / np.median(preds[b])))
                 for a, b in [(f"remote{i}", f"local{i}") for i in range(args.builds)]
                 + [(f"local{i}", "local0") for i in range(1, args.builds)]
                 + [(f"remote{i}", "remote0") for i in range(1, args.builds)]}
        print("pairs (tau, median ratio):", pairs)
        paths, inputs = export_subnets(space, held, X, work, "held")
        measured = np.array([r.median_ms for r in measure_many(paths, "cpu-ort-1t", dummy_inputs=inputs,
                                                               method="steady", rounds=3)])
        tau_local_meas = float(kendalltau(p_local, measured)[0])
        tau_remote_meas = float(kendalltau(p_remote, measured)[0])
        print(f"held-out: tau(local LUT, remote LUT) {tau:.3f}, median ratio remote/local {med_ratio:.4f}; "
              f"tau vs measured: local {tau_local_meas:.3f}, remote {tau_remote_meas:.3f}")
        # 3. kill -9 at random points
        n_sub = len(lut_remote.subnets)
        killed, events = killed_build(agent, work, settings, args.kills, np.random.default_rng(args.seed + 7), n_sub)
        agent = None
        kept = all(killed.entries[sig].times_ms[:len(e["times_ms"])] == e["times_ms"]
                   or np.allclose(killed.entries[sig].times_ms[:len(e["times_ms"])], e["times_ms"])
                   for ev in events for sig, e in ev["snapshot"]["entries"].items())
        same_subnets = [r["sample"] for r in killed.subnets] == [r["sample"] for r in lut_remote.subnets]
        same_entries = set(killed.entries) == set(lut_remote.entries)
        print(f"kill -9 at {[e['after_subnets'] for e in events]} subnets: measurements kept {kept}, same subnets "
              f"{same_subnets}, same kernels {same_entries}")
    finally:
        if agent is not None:
            agent.stop()
    after = uptime()
    lines += [
        f"host after: {after}",
        "",
        "| check | figure | target |",
        "|---|---|---|",
        f"| LUT build wall time, local (s) | {', '.join(f'{w:.1f}' for w in walls['local'])} | |",
        f"| LUT build wall time, remote (s) | {', '.join(f'{w:.1f}' for w in walls['remote'])} | |",
        f"| remote / local (medians; pairs {', '.join(f'{r:.3f}' for r in pair_ratios)}) | {ratio:.3f} | <= 1.10 |",
        f"| Kendall tau, local vs remote LUT on {len(held)} held-out subnets | {tau:.3f} | >= 0.9 |",
        f"| median prediction remote / local | {med_ratio:.4f} | 0.95-1.05 |",
        *[f"| builds {k}: Kendall tau, median ratio | {t:.3f}, {r:.4f} | (same kind: the noise) |"
          for k, (t, r) in pairs.items()],
        f"| Kendall tau vs local steady measurement: local LUT / remote LUT | {tau_local_meas:.3f} / "
        f"{tau_remote_meas:.3f} | |",
        f"| agent killed (SIGKILL) after subnets | {[e['after_subnets'] for e in events]} | 5 random points |",
        f"| finished measurements kept / same subnets / same kernels as uninterrupted | {kept} / {same_subnets} / "
        f"{same_entries} | all True |",
        "",
        f"Settings: {settings}; {len(lut_remote.subnets)} subnets and {len(lut_remote.entries)} kernels per build; the "
        "agent is `hwnas device pack`'s .pyz on 127.0.0.1 with torch, pandas, onnx, scikit-learn, scipy, tqdm blocked. "
        "All processes share one CPU (the host's other core is reserved), so the walls move with the host's load.",
    ]
    text = "# Remote measurement (loopback agent) against local, digits LUT\n\n" + "\n".join(lines) + "\n"
    Path(args.out).write_text(text)
    append_row("remote", ["date", "local_s", "remote_s", "ratio", "tau", "median_ratio", "kills", "kept",
                          "same_subnets", "load_after"],
               [time.strftime("%Y-%m-%d %H:%M"), f"{np.median(walls['local']):.1f}",
                f"{np.median(walls['remote']):.1f}", f"{ratio:.3f}", f"{tau:.3f}", f"{med_ratio:.4f}", len(events),
                kept, same_subnets, after.rsplit(":", 1)[-1].strip()])
    print(text)


if __name__ == "__main__":
    main()
