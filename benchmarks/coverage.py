"""Coverage of real models: hwnas.profile and hwnas.convert on what timm, torchvision and Hugging Face ship.

Runs in its own venv (torch 2.14.1 with torchvision 0.29.1 and timm; see ``benchmarks/make_zoo_venv.sh``):

    bash benchmarks/make_zoo_venv.sh                       # once: ~/.cache/hwnas-zoo-venv
    ~/.cache/hwnas-zoo-venv/bin/python benchmarks/coverage.py   # timm + HF at 96 and 224, torchvision at 224
    PYTHONPATH=/path/to/checkout ~/.cache/hwnas-zoo-venv/bin/python benchmarks/coverage.py --res 96 224

Models (random init, ``pretrained=False``; nothing is downloaded):

- timm: one model per family, the smallest of each ``timm.list_modules()`` entry (parameters counted on
  the meta device), if it has at most ``--timm-max-params`` (40M);
- torchvision: every classification model (``torchvision.models.list_models(module=torchvision.models)``)
  with at most ``--tv-max-params`` (100M);
- Hugging Face: BertModel, GPT2Model and ViTModel built from small configs (text models take 64 token ids
  and run at the first resolution only).

A model whose input size is fixed (timm's ``fixed_input_size``, or one that fails at the asked size) is
built for the asked size when it takes ``img_size``/``image_size``, else run at its native size; the
``input`` and ``note`` columns say so.

Per model and resolution (batch 1, eval mode): profile ok (``FlopsProfiler``/``NumParamsProfiler`` of the
plain model), its FLOPs == fvcore's ``FlopCountAnalysis`` and params == ``sum(p.numel())``; convert ok,
number of labels, largest subnet == original (``hwnas.export`` of ``max_sample()`` against the model's own
output, ``max|d| <= 1e-4 * max(1, max|y|)``), and for 3 random subnets FLOPs == fvcore of
``hwnas.export(space, sample)`` and params == its numel; the convert time. Failures record the error class,
the first line of its message and a pattern (the op or module named) for grouping.

Each model runs in a worker process with a timeout (``--timeout``): a hang or a crash costs one row, and
the worker is restarted. Rows are appended to the CSV as they finish, so an interrupted run resumes
(rows of another hwnas commit are dropped). The summary is printed and written next to the CSV as ``.md``.
"""

from __future__ import annotations

import argparse
import csv
import fnmatch
import json
import os
import select
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _coverage_summary import FIELDS, summarize  # noqa: E402

RESULTS = HERE / "results"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "hwnas-coverage"
HF_MODELS = ["BertModel", "GPT2Model", "ViTModel"]


def require_zoo() -> None:
    """Stop with a clear message unless timm, torchvision, transformers and fvcore import here."""
    missing = []
    for mod in ("torch", "torchvision", "timm", "transformers", "fvcore"):
        try:
            __import__(mod)
        except Exception as e:  # torchvision beside a mismatched torch raises RuntimeError, not ImportError
            missing.append(f"{mod} ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})")
    if missing:
        raise SystemExit(
            f"benchmarks/coverage.py: cannot import {', '.join(missing)} in {sys.executable}.\n"
            "It runs in its own venv (torch 2.14.1 + torchvision 0.29.1 + timm + transformers + fvcore). "
            "Create it "
            "with\n    bash benchmarks/make_zoo_venv.sh\nthen run\n"
            "    ~/.cache/hwnas-zoo-venv/bin/python benchmarks/coverage.py")


def hwnas_version() -> str:
    """hwnas's path and commit (``+dirty`` with uncommitted changes), as imported here."""
    import hwnas

    root = Path(hwnas.__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", "hwnas"],
                               capture_output=True, text=True).stdout.strip()
        branch = subprocess.run(["git", "-C", str(root), "branch", "--show-current"], capture_output=True,
                                text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return f"{root}@unknown"
    return f"{branch or 'detached'}@{commit}{'+dirty' if dirty else ''}"


# --------------------------------------------------------------------------------------------- model lists
def _count_params(build) -> int:
    import torch

    try:
        with torch.device("meta"):
            m = build()
    except Exception:  # some constructors call .item() on a tensor: build for real
        m = build()
    return sum(p.numel() for p in m.parameters())


def timm_families(max_params: float, test_models: bool = False) -> list[dict]:
    """The smallest model (by parameters, meta device) of every timm module, cached per timm version.

    timm's own ``test_*`` models (tiny configurations for its unit tests) are left out unless ``test_models``.
    """
    import timm

    path = CACHE / f"timm-{timm.__version__}.json"
    if path.exists():
        table = json.loads(path.read_text())
    else:
        table = {}
        for module in timm.list_modules():
            sizes = {}
            for name in timm.list_models(module=module):
                try:
                    sizes[name] = _count_params(lambda n=name: timm.create_model(n, pretrained=False))
                except Exception as e:
                    print(f"  timm {name}: cannot be built ({type(e).__name__}); skipped", file=sys.stderr)
            table[module] = sizes
            print(f"  listed timm.{module}: {len(sizes)} models", file=sys.stderr)
        CACHE.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(table, indent=0))
    out = []
    for module, sizes in sorted(table.items()):
        sizes = {k: v for k, v in sizes.items() if test_models or not k.startswith("test_")}
        if not sizes:
            continue
        name, n = min(sizes.items(), key=lambda kv: (kv[1], kv[0]))
        if n <= max_params:
            out.append({"source": "timm", "family": module, "model": name, "params_m": round(n / 1e6, 2)})
        else:
            print(f"  timm.{module}: smallest model {name} has {n / 1e6:.0f}M params; skipped",
                  file=sys.stderr)
    return out


def torchvision_models(max_params: float) -> list[dict]:
    """Every torchvision classification model up to ``max_params``, cached per torchvision version."""
    import torchvision

    path = CACHE / f"torchvision-{torchvision.__version__}.json"
    if path.exists():
        sizes = json.loads(path.read_text())
    else:
        sizes = {name: _count_params(lambda n=name: torchvision.models.get_model(n, weights=None))
                 for name in torchvision.models.list_models(module=torchvision.models)}
        CACHE.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(sizes, indent=0))
    return [{"source": "torchvision", "family": name, "model": name, "params_m": round(n / 1e6, 2)}
            for name, n in sorted(sizes.items()) if n <= max_params]


def all_models(args) -> list[dict]:
    models = timm_families(args.timm_max_params * 1e6, args.timm_test_models)
    models += torchvision_models(args.tv_max_params * 1e6)
    models += [{"source": "hf", "family": n, "model": n, "params_m": ""} for n in HF_MODELS]
    return [m for m in models if m["source"] in args.sources]


def tasks(models: list[dict], args, select: bool = True) -> list[dict]:
    """(model, resolution) pairs at each source's resolutions (text models only at the first), picked by
    ``--only`` and ``--limit`` when ``select``."""
    out = []
    for m in models:
        if select and args.only and not any(fnmatch.fnmatch(m[k], p) for p in args.only
                                            for k in ("model", "family")):
            continue
        tv_res = args.tv_res if args.tv_res is not None else ([224] if 224 in args.res else None)
        only = {"timm": args.timm_res, "torchvision": tv_res, "hf": args.hf_res}[m["source"]]
        for res in args.res:
            if only and res not in only:
                continue
            if m["model"] in ("BertModel", "GPT2Model") and res != args.res[0]:
                continue  # text: the resolution does not apply
            out.append({**m, "res": res})
    return out[: args.limit] if args.limit and select else out


# --------------------------------------------------------------------------------------------- running
class Worker:
    """A ``_coverage_worker.py`` process fed one task per line; restarted after a timeout or a crash."""

    def __init__(self, log: Path):
        self.log, self.proc = log, None

    def _start(self) -> None:
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
        self.proc = subprocess.Popen([sys.executable, str(HERE / "_coverage_worker.py")],
                                     stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.log.open("a"), text=True, env=env)
        ready, _, _ = select.select([self.proc.stdout], [], [], 600)  # imports and warm-up, not timed
        if not ready or self.proc.stdout.readline().strip() != "READY":
            raise SystemExit(f"benchmarks/coverage.py: the worker did not start; see {self.log}")

    def ensure_started(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            self._start()

    def run(self, task: dict, timeout: float) -> dict:
        """The worker's result for ``task``, or a ``timeout``/``crash`` row (the worker is then restarted)."""
        self.ensure_started()
        self.proc.stdin.write(json.dumps(task) + "\n")
        self.proc.stdin.flush()
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self.proc.stdout], [], [], max(left, 0))
            if not ready:
                self.stop()
                return {"status": "timeout", "note": f"no result within {timeout:.0f} s (worker killed)"}
            line = self.proc.stdout.readline()
            if not line:
                code = self.proc.wait()
                self.proc = None
                return {"status": "crash", "note": f"worker died with exit code {code} (see {self.log})"}
            if line.startswith("RESULT "):
                return json.loads(line[7:])

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


def read_rows(path: Path) -> list[dict]:
    """All rows of ``path`` (none if it does not exist)."""
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def write_rows(path: Path, rows: list[dict]) -> None:
    """Write ``rows`` to ``path`` atomically (a killed run leaves the last complete file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="") as f:
        w = csv.DictWriter(f, FIELDS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    tmp.replace(path)


def run(todo: list[dict], rows: list[dict], aside: list[dict], path: Path, args, version: str) -> None:
    """Run ``todo`` in ``--jobs`` workers, appending to ``rows``; the file holds ``aside + rows``."""
    lock, queue, t_start = threading.Lock(), list(todo), time.monotonic()
    total, finished = len(todo), [0]
    CACHE.mkdir(parents=True, exist_ok=True)

    def loop(k: int) -> None:
        worker = Worker(CACHE / f"worker-{k}.log")
        done_here = 0
        while True:
            with lock:
                if not queue:
                    break
                task = queue.pop(0)
            worker.ensure_started()  # the worker's imports are not part of a model's time
            t0 = time.monotonic()
            result = worker.run(task, args.timeout)
            done_here += 1
            if done_here % args.restart_every == 0:
                worker.stop()  # bounded memory growth
            row = {**task, **result, "hwnas": version, "wall_s": round(time.monotonic() - t0, 1)}
            row.setdefault("status", "done")
            with lock:
                rows.append(row)
                write_rows(path, aside + rows)
                finished[0] += 1
                el = time.monotonic() - t_start
                print(f"[{finished[0]}/{total} {el / 60:.1f} min] {task['source']} {task['model']} "
                      f"@{task['res']}: {_brief(row)} ({row['wall_s']} s)", file=sys.stderr, flush=True)
        worker.stop()

    threads = [threading.Thread(target=loop, args=(k,)) for k in range(args.jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def _brief(row: dict) -> str:
    if row.get("status") != "done":
        return row["status"].upper()
    prof = ("flops " + ("==" if row.get("flops_equal") == "yes" else "!=") + " fvcore") \
        if row.get("profile_ok") == "yes" else f"profile: {row.get('profile_pattern', '')}"
    conv = (f"{row.get('labels')} labels, largest {'==' if row.get('largest_equal') == 'yes' else '!='}"
            f" original, subnets {row.get('subnets_flops_ok') or '-'}, {row.get('convert_s')} s") \
        if row.get("convert_ok") == "yes" else f"convert: {row.get('convert_pattern', '')}"
    return f"{prof}; {conv}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--res", type=int, nargs="+", default=[96, 224],
                    help="input resolutions (default 96 224)")
    ap.add_argument("--timm-res", type=int, nargs="*", help="timm models only at these (default: all --res)")
    ap.add_argument("--tv-res", type=int, nargs="*",
                    help="torchvision models only at these (default: 224 when --res has it, where the "
                         "convert-time target is, else all of --res; '--tv-res' alone: all of --res)")
    ap.add_argument("--hf-res", type=int, nargs="*", help="HF ViTModel only at these (default: all of --res)")
    ap.add_argument("--sources", nargs="+", default=["timm", "torchvision", "hf"],
                    choices=["timm", "torchvision", "hf"])
    ap.add_argument("--only", nargs="+", help="glob patterns of model or family names (e.g. 'resnet*' vit)")
    ap.add_argument("--limit", type=int, help="run at most this many (model, resolution) pairs")
    ap.add_argument("--jobs", type=int, default=1, help="worker processes (default 1; the host has 2 cores)")
    ap.add_argument("--timeout", type=float, default=300,
                    help="seconds per model and resolution (default 300)")
    ap.add_argument("--restart-every", type=int, default=25, help="restart a worker after this many models")
    ap.add_argument("--timm-max-params", type=float, default=40, help="millions (default 40)")
    ap.add_argument("--timm-test-models", action="store_true", help="let timm's own test_* models be picked")
    ap.add_argument("--tv-max-params", type=float, default=100, help="millions (default 100)")
    ap.add_argument("--out", type=Path, default=RESULTS / "coverage.csv",
                    help="CSV (default results/coverage.csv)")
    ap.add_argument("--fresh", action="store_true", help="start over instead of resuming from --out")
    ap.add_argument("--any-version", action="store_true",
                    help="count rows of any hwnas commit as done (when hwnas changed elsewhere only)")
    ap.add_argument("--summary-only", action="store_true", help="summarize --out without running anything")
    args = ap.parse_args()
    require_zoo()
    version = hwnas_version()
    every = [] if args.fresh and not args.summary_only else read_rows(args.out)
    if args.summary_only and every and not args.any_version:
        version = every[-1]["hwnas"]  # the last run's
    ours = [r for r in every if args.any_version or r.get("hwnas") == version]
    if len(ours) < len(every):
        print(f"{len(every) - len(ours)} rows of another hwnas than {version} stay in {args.out} but are not "
              "counted (--any-version counts them, --fresh drops them)", file=sys.stderr)
    if args.summary_only:
        rows, aside = ours, []
        version = ", ".join(sorted({r["hwnas"] for r in rows})) or version
    else:
        models = all_models(args)
        wanted = {(t["source"], t["model"], str(t["res"])) for t in tasks(models, args, select=False)}
        rows = [r for r in ours if (r["source"], r["model"], str(r["res"])) in wanted]
        aside = [r for r in every if not any(r is q for q in rows)]
        if len(rows) < len(ours):
            print(f"{len(ours) - len(rows)} rows of models or resolutions not selected now are not counted",
                  file=sys.stderr)
        done = {(r["source"], r["model"], str(r["res"])) for r in rows}
        todo = [t for t in tasks(models, args) if (t["source"], t["model"], str(t["res"])) not in done]
        print(f"hwnas {version}: {len(todo)} (model, resolution) pairs to run, {len(rows)} already in "
              f"{args.out}", file=sys.stderr)
        t0 = time.monotonic()
        run(todo, rows, aside, args.out, args, version)
        print(f"ran {len(todo)} pairs in {(time.monotonic() - t0) / 60:.1f} min", file=sys.stderr)
    text = summarize(rows, version)
    print(text)
    args.out.with_suffix(".md").write_text(text + "\n")


if __name__ == "__main__":
    main()
