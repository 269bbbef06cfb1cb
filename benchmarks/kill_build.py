"""Kill -9 a LUT build at random points, resume it each time, and check that nothing is lost or left behind.

    python benchmarks/kill_build.py                      # 20 kills of a small digits build (about 10 minutes)
    python benchmarks/kill_build.py --kills 5 --out /tmp/kill_build.md

First an uninterrupted build of the same small `digits` LUT (same settings and seed) gives the reference: its
time and its entries. Then a build into another file is started as a subprocess, killed with SIGKILL a random
delay after its build proper began (its scratch folder appeared: imports, lock and file read done; the delay is
uniform between 0 and twice the reference build's time over ``--kills``, so that the kills spread over subnet
profiling, file writes, the interleaved end-to-end pass and the level calibration), and started again, ``--kills``
times; a last run finishes it. Every child runs with a private ``TMPDIR``, so that whatever it leaves
in the temp directory is seen.

Checked after every kill:

- the LUT file is whole JSON that :meth:`hwnas.hw.LUT.load` accepts as a build resuming it does (``strict=False``;
  the finished LUT strictly);
- no finished measurement is lost: every entry's times in the file before the run are a prefix of its times
  after it, the build subnets recorded before are still there with the same samples, and subnets measured
  end to end (``interleaved``) stay so;
- what the kill left (scratch folders ``hwnas-lut-<pid>-*`` in the temp directory, ``.digits.json.*.tmp`` next
  to the file) is counted, and must be gone once the next run has started.

At the end: no scratch folder, no ``.tmp`` file, and the final LUT has the same entries (kernel signatures) as
the uninterrupted build, which are the space's own signatures. Timings are not compared (a shared CPU is noisy).
The figures are printed and written to ``benchmarks/results/kill_build.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

SCRIPT = """
import sys, torch, hwnas
from hwnas.hw.build import build_lut
torch.manual_seed(0)
build_lut(hwnas.spaces.create("digits").eval(), torch.zeros(1, 1, 8, 8), "cpu-ort-1t", sys.argv[1],
          repeats_per_kernel={repeats}, runs=3, warmup=1, random_subnets={random}, end_to_end_rounds=3,
          calibrate={calibrate}, seed=0, progress=False, space_name="digits")
"""


def run_child(script: str, lut: Path, tmpdir: Path, kill_after: float | None) -> tuple[float, bool, float | None]:
    """Start the build; kill it with SIGKILL ``kill_after`` s after its build proper began (its scratch folder
    ``hwnas-lut-<pid>-*`` appeared: imports, lock and file read done; ``None``: let it finish). Returns the seconds it
    ran, whether it was killed (``False`` if it ended first) and when its build began (s after start; ``None`` if
    it never did)."""
    env = {**os.environ, "TMPDIR": str(tmpdir), "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH",
                                                                                                       "")}
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([sys.executable, "-c", script, str(lut)], env=env, stdout=subprocess.DEVNULL,
                                stderr=err, text=True)
        began, deadline, killed = None, None, False
        while proc.poll() is None:
            if began is None and any(p.name.startswith(f"hwnas-lut-{proc.pid}-") for p in tmpdir.iterdir()):
                began = time.perf_counter() - t0
                deadline = None if kill_after is None else time.perf_counter() + kill_after
            if deadline is not None and time.perf_counter() >= deadline:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                killed = True
                break
            time.sleep(0.02)
        if not killed and proc.returncode != 0:
            err.seek(0)
            raise SystemExit(f"the build failed (exit {proc.returncode}):\n{err.read()}")
    return time.perf_counter() - t0, killed, began


def snapshot(lut: Path) -> dict | None:
    """The LUT file's content (``None`` before the first save); it must load as a LUT."""
    if not lut.exists():
        return None
    data = json.loads(lut.read_text())  # atomic writes: always whole
    from hwnas.hw.lut import LUT

    LUT.load(lut, check_fingerprint=False, strict=False)  # as the build reads it to resume (see LUT.load)
    return data


def lost(before: dict | None, after: dict | None) -> list[str]:
    """What ``before`` had that ``after`` lacks (finished measurements, recorded subnets, end-to-end passes)."""
    if before is None:
        return []
    if after is None:
        return ["the LUT file disappeared"]
    out = []
    for sig, e in before["entries"].items():
        times = after["entries"].get(sig, {}).get("times_ms", [])
        if times[:len(e["times_ms"])] != e["times_ms"]:
            out.append(f"times of {sig}")
    subs_b, subs_a = before["subnets"], after["subnets"]
    if len(subs_a) < len(subs_b) or any(a["sample"] != b["sample"] for a, b in zip(subs_a, subs_b)):
        out.append("build subnets")
    if any(b.get("interleaved") and not a.get("interleaved") for a, b in zip(subs_a, subs_b)):
        out.append("end-to-end passes")
    return out


def startup_files(tmpdir: Path) -> set[str]:
    """What a Python process of this environment leaves in its temp directory before hwnas does anything (an
    import of torch and hwnas): not hwnas's, so not counted."""
    env = {**os.environ, "TMPDIR": str(tmpdir), "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-c", "import torch, hwnas.hw.build"], env=env, check=True)
    return {p.name for p in tmpdir.iterdir()}


IGNORED: set[str] = set()


def leftovers(tmpdir: Path, lut: Path) -> tuple[int, float, int]:
    """(folders and files in the temp directory, their MB, .tmp files next to the LUT)."""
    folders = [p for p in tmpdir.iterdir() if p.name not in IGNORED]
    mb = sum(f.stat().st_size for d in folders for f in ([d] if d.is_file() else d.rglob("*")) if f.is_file()) / 1e6
    temps = list(lut.parent.glob(f".{lut.name}.*.tmp"))
    return len(folders), mb, len(temps)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0, help="seed of the kill delays")
    ap.add_argument("--repeats", type=int, default=2, help="measurements per kernel signature")
    ap.add_argument("--random-subnets", type=int, default=8)
    ap.add_argument("--calibrate", type=int, default=4, help="build subnets measured for the steady-state level")
    ap.add_argument("--out", default=str(RESULTS / "kill_build.md"))
    args = ap.parse_args()
    script = SCRIPT.format(repeats=args.repeats, random=args.random_subnets, calibrate=args.calibrate)
    work = Path(tempfile.mkdtemp(prefix="kill-build-"))
    rng = random.Random(args.seed)
    load = os.getloadavg()[0]
    try:
        ref_tmp, tmp = work / "tmp-ref", work / "tmp"
        ref_tmp.mkdir()
        tmp.mkdir()
        IGNORED.update(startup_files(ref_tmp) | startup_files(tmp))
        ref_lut, lut = work / "ref" / "digits.json", work / "killed" / "digits.json"
        ref_lut.parent.mkdir()
        lut.parent.mkdir()
        print("uninterrupted build ...", flush=True)
        ref_s, _, ref_began = run_child(script, ref_lut, ref_tmp, None)
        build_s = ref_s - (ref_began or 0.0)  # the build proper, without imports
        ref = snapshot(ref_lut)
        print(f"  {ref_s:.1f} s, {len(ref['entries'])} entries, {len(ref['subnets'])} subnets; temp dir left: "
              f"{leftovers(ref_tmp, ref_lut)}", flush=True)
        rows, prev, problems = [], None, []
        for i in range(args.kills + 1):
            final = i == args.kills
            # kills spread over the build: on average a twentieth of it after each run's build began
            delay = None if final else rng.uniform(0.0, 2 * build_s / args.kills)
            found_before = leftovers(tmp, lut)
            secs, killed, began = run_child(script, lut, tmp, delay)
            now = snapshot(lut)
            gone = lost(prev, now)
            left = leftovers(tmp, lut)
            rows.append({"run": i + 1, "delay_s": delay, "ran_s": secs, "killed": killed, "began_s": began,
                         "subnets": len(now["subnets"]) if now else 0,
                         "times": sum(len(e["times_ms"]) for e in now["entries"].values()) if now else 0,
                         "interleaved": sum(bool(r.get("interleaved")) for r in now["subnets"]) if now else 0,
                         "left_before": found_before, "left_after": left, "lost": gone})
            problems += [f"run {i + 1}: lost {g}" for g in gone]
            r = rows[-1]
            print(f"run {r['run']:2d}: build began at {began or float('nan'):5.1f} s, "
                  f"{'killed' if killed else 'ended'} at {secs:5.1f} s; file: "
                  f"{r['subnets']} subnets, {r['times']} kernel times, {r['interleaved']} measured end to end; "
                  f"left behind: {left[0]} scratch folders ({left[1]:.1f} MB), {left[2]} .tmp; lost: "
                  f"{gone or 'nothing'}", flush=True)
            prev = now if now is not None else prev
        final_left = leftovers(tmp, lut)
        from hwnas.hw.lut import LUT

        LUT.load(lut, check_fingerprint=False)  # the finished LUT passes the strict checks
        same = set(prev["entries"]) == set(ref["entries"])
        import torch

        import hwnas
        from hwnas.hw.build import space_signatures

        sigs = space_signatures(hwnas.spaces.create("digits").eval(), torch.zeros(1, 1, 8, 8))
        kills = sum(r["killed"] for r in rows)
        # each run removes what the killed one before it left: never more than the last kill's own folder and file
        cleaned = all(r["left_after"][0] <= 1 and r["left_after"][2] <= 1 for r in rows)
        summary = [
            f"- {kills} of {args.kills} runs killed with SIGKILL (the others ended before their delay), then a "
            f"last run finished the build",
            f"- finished measurements lost: {len(problems)} ({'; '.join(problems) or 'none'})",
            f"- left behind at the end: {final_left[0]} scratch folders, {final_left[2]} .tmp files "
            f"(most after one kill: {max(r['left_after'][0] for r in rows[:-1])} folders, "
            f"{max(r['left_after'][1] for r in rows[:-1]):.1f} MB, {max(r['left_after'][2] for r in rows[:-1])} .tmp)",
            f"- entries: {len(prev['entries'])} after the kills, {len(ref['entries'])} in the uninterrupted build, "
            f"same kernel signatures: {same}; the space's own signatures: {len(sigs)} "
            f"(equal to the LUT's: {set(prev['entries']) == sigs})",
            f"- build_seconds summed over {len(rows)} runs: {prev['settings'].get('build_seconds', 0):.1f} s "
            f"(uninterrupted: {ref['settings'].get('build_seconds', 0):.1f} s; a kill loses the time since the "
            "last save)",
        ]
        ok = cleaned and not problems and final_left[0] == 0 and final_left[2] == 0 and same and set(prev["entries"]) == sigs
        table = ["| run | build began s | kill delay s | ran s | killed | subnets | kernel times | end to end | left "
                 "after run (folders, MB, .tmp) | lost |", "|---|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            delay = "" if r["delay_s"] is None else f"{r['delay_s']:.1f}"
            began = "" if r["began_s"] is None else f"{r['began_s']:.1f}"
            table.append(f"| {r['run']} | {began} | {delay} | {r['ran_s']:.1f} | "
                         f"{'yes' if r['killed'] else 'no'} | {r['subnets']} | {r['times']} | {r['interleaved']} | "
                         f"{r['left_after'][0]}, {r['left_after'][1]:.1f}, {r['left_after'][2]} | "
                         f"{', '.join(r['lost']) or 'nothing'} |")
        text = "\n".join([
            "# Kill -9 of a LUT build at random points (benchmarks/kill_build.py)", "",
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load average {load:.1f} at the start, "
            f"{os.getloadavg()[0]:.1f} at the end (2 cores); digits LUT, repeats {args.repeats}, random subnets "
            f"{args.random_subnets}, calibrate {args.calibrate}, kill seed {args.seed}; uninterrupted build "
            f"{ref_s:.1f} s ({build_s:.1f} s after its imports and file read); each kill comes a random delay "
            f"(uniform, 0 to {2 * build_s / args.kills:.1f} s) after that run's build began. Not counted in the temp directory: {sorted(IGNORED) or 'nothing'} (there before hwnas does "
            "anything: a bare `import torch, hwnas` of this environment leaves it).", "", *summary,
            f"- what a kill left was removed by the next run (never more than the last kill's own scratch folder "
            f"and .tmp file at once): {cleaned}", "",
            f"**{'PASS' if ok else 'FAIL'}**", "", *table, ""])
        print("\n" + "\n".join(summary) + f"\n{'PASS' if ok else 'FAIL'}")
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
        print(f"written: {args.out}")
        if not ok:
            sys.exit(1)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
