"""Running a resolved experiment end to end: space, device, search, exports, reports; resumable.

The output folder receives ``resolved_config.yaml`` first (the exact config, every default filled in), then
the results. Running the same config into the same folder again resumes: a multi-trial search resumes from
its checkpoint (``checkpoint.json``, :func:`hwnas.search.run`'s own: recorded trials are replayed, none is
lost or repeated), a trained supernet is loaded from ``supernet.pt`` instead of trained again, and a finished
one-shot training from ``oneshot.json``. A folder holding another config's run is refused.
"""

from __future__ import annotations

import importlib
import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
import yaml

from hwnas import registry
from hwnas.experiment.config import dump
from hwnas.experiment.parts import Data, load_data
from hwnas.experiment.schema import DataConfig
from hwnas.io import atomic_write_json, atomic_write_text

search = importlib.import_module("hwnas.search")  # the package (the attribute hwnas.search is the function)

__all__ = ["Context", "ExperimentResult", "run_resolved", "CONFIG_FILE"]

logger = logging.getLogger(__name__)

CONFIG_FILE = "resolved_config.yaml"
#: keys that do not change a run's results (a resumed run may change them)
_NOT_RESULTS = ("output", "progress")


@dataclass
class Context:
    """What a run's parts see: the config, the output folder, the space and its profilers, the data and, after
    the search, the best sample. Exporters and reports (``(ctx, **params) -> {name: path}``) read it."""

    config: dict[str, Any]
    out: Path
    seed: int
    progress: bool
    resuming: bool
    space: Any = None
    x: Any = None
    profilers: dict[str, Any] = field(default_factory=dict)
    constraints: list = field(default_factory=list)
    data: Data | None = None
    mode: str = "max"
    history: Any = None
    oneshot: Any = None
    best_sample: dict[str, Any] | None = None
    best_score: float | None = None
    best_metrics: dict[str, float] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)
    val_loader: Any = None
    started: float = field(default_factory=time.perf_counter)

    def say(self, message: str) -> None:
        """A progress line on stderr (and the log)."""
        logger.info(message)
        if self.progress:
            print(f"hwnas run: {message}", file=sys.stderr, flush=True)

    def seconds(self) -> float:
        return time.perf_counter() - self.started


@dataclass
class ExperimentResult:
    """What :func:`hwnas.experiment.run` returns.

    Attributes:
        best_sample, best_score, best_metrics: the chosen subnet, its score and profiled metrics.
        history: the search's :class:`~hwnas.search.History` (multi-trial) or the one-shot epochs.
        out: the output folder; files: what was written there, by name.
        config: the resolved config.
        search: the underlying result (:class:`~hwnas.search.SearchResult`, one-shot result, or the demo's).
        resumed: whether an interrupted run in ``out`` was carried on.
    """

    best_sample: dict[str, Any]
    best_score: float
    best_metrics: dict[str, float]
    history: Any
    out: Path
    files: dict[str, Path]
    config: dict[str, Any]
    search: Any = field(default=None, repr=False)
    resumed: bool = False
    seconds: float = 0.0


def _comparable(cfg: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in cfg.items() if k not in _NOT_RESULTS}


def _differences(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            out += _differences(a.get(k), b.get(k), f"{prefix}.{k}" if prefix else str(k))
        return out
    return [] if a == b else [prefix or "(top)"]


def _start(resolved: dict[str, Any]) -> tuple[Path, bool]:
    """Create the output folder and write the resolved config; ``resuming`` if the same config ran there."""
    out = Path(resolved["output"])
    out.mkdir(parents=True, exist_ok=True)
    path = out / CONFIG_FILE
    resuming = False
    if path.exists():
        old = yaml.safe_load(path.read_text())
        diff = _differences(_comparable(old if isinstance(old, dict) else {}), _comparable(resolved))
        if diff:
            raise ValueError(f"the output folder {str(out)!r} holds a run of another config (it differs at "
                             f"{', '.join(diff[:6])}); give another output folder (--out DIR, or output: in the "
                             f"file) or remove {str(path)!r} to start over there.")
        resuming = True
    atomic_write_text(path, dump(resolved))
    return out, resuming


def run_resolved(resolved: dict[str, Any]) -> ExperimentResult:
    """Run a resolved config (see :func:`hwnas.experiment.config.resolve`)."""
    out, resuming = _start(resolved)
    if resolved["pipeline"] == "demo":
        return _run_demo(resolved, out, resuming)
    ctx = Context(resolved, out, resolved["seed"], resolved["progress"], resuming)
    old_threads = torch.get_num_threads()
    torch.set_num_threads(resolved["threads"])
    try:
        if resuming:
            ctx.say(f"resuming the run in {out}")
        _setup(ctx)
        if resolved["evaluator"]["name"] == "oneshot":
            result = _oneshot(ctx)
        else:
            result = _multi_trial(ctx)
        for kind, key in (("exporters", "exports"), ("reports", "reports")):
            for item in resolved[key]:
                params = {k: v for k, v in item.items() if k != "name"}
                ctx.files.update(registry.get(kind, item["name"])(ctx, **params))
        ctx.files["config"] = out / CONFIG_FILE
    finally:
        torch.set_num_threads(old_threads)
    ctx.say(f"best score {ctx.best_score:.6g}; written to {out}: {', '.join(sorted(ctx.files))}")
    return ExperimentResult(ctx.best_sample, ctx.best_score, ctx.best_metrics,
                            ctx.history if ctx.history is not None else ctx.oneshot.history, out, ctx.files,
                            resolved, result, resuming, ctx.seconds())


def _setup(ctx: Context) -> None:
    """Seed, data, space, input, profilers (in the demo's order, so that the same seed draws the same)."""
    cfg = ctx.config
    torch.manual_seed(ctx.seed)
    ev = cfg["evaluator"]
    if "data" in ev:
        ctx.say(f"loading the data set {ev['data']['name']!r}")
        ctx.data = load_data(DataConfig(**ev["data"]))
    sp = cfg["space"]
    ctx.say(f"building the space {sp['name'] or 'converted from ' + sp['convert']['model']!r}")
    ctx.space = _build_space(sp)
    ctx.x = torch.zeros(sp["input_shape"])
    ctx.profilers = search.build_profilers(ctx.space, ctx.x)
    dev = cfg["device"]
    lut = dev["lut"]
    if dev["build"] is not None:
        from hwnas.hw import build_lut

        b = dev["build"]
        ctx.say(f"building (or resuming) the LUT {lut} on {dev['name']}")
        build_lut(ctx.space.eval(), ctx.x, dev["name"], lut, repeats_per_kernel=b["repeats"], runs=b["runs"],
                  max_subnets=b["max_subnets"], random_subnets=b["random_subnets"], seed=ctx.seed,
                  progress=ctx.progress, space_name=sp["name"])
        ctx.space.train()
    elif dev["adapt"] is not None:
        from hwnas.artifacts import resolve_lut
        from hwnas.hw.adapt import adapt_lut

        a, target = dev["adapt"], ctx.out / "lut_adapted.json"
        if not (ctx.resuming and target.exists()):
            ctx.say(f"adapting the LUT {lut} to {dev['name']} on this machine ({a['n']} subnets)")
            adapt_lut(resolve_lut(lut), dev["name"], n=a["n"], space=ctx.space.eval(), dummy_input=ctx.x,
                      out=target, budget_s=a["budget_s"], seed=a["seed"], progress=ctx.progress)
            ctx.space.train()
        lut = str(target)
    if lut or dev["predictor"]:
        ctx.profilers["latency_ms"] = registry.build(
            "profilers", "latency", space=ctx.space, dummy_input=ctx.x, graph=ctx.profilers["flops"].graph,
            lut=lut, predictor=dev["predictor"], device=dev["name"])


def _build_space(sp: dict[str, Any]) -> Any:
    if sp["name"] is not None:
        return registry.build("spaces", {"name": sp["name"], **sp["args"]})
    import hwnas

    c = sp["convert"]
    model = registry.build("models", {"name": c["model"], **c["model_args"]})
    return hwnas.convert(model.eval(), torch.zeros(sp["input_shape"]), mode=c["mode"],
                         channel_ratios=c["channel_ratios"], channel_divisor=c["channel_divisor"]).train()


def _penalty(ctx: Context, cfg: dict[str, Any] | None) -> Any:
    if cfg is None:
        return None
    params = {k: v for k, v in cfg.items() if k not in ("name", "metric")}
    return registry.build("penalties", cfg["name"], profiler=ctx.profilers[cfg["metric"]], **params)


def _filters(ctx: Context, cfgs: list[dict[str, Any]]) -> list[Any]:
    out = []
    for f in cfgs:
        params = {k: v for k, v in f.items() if k != "name"}
        if "metric" in params and params["metric"] in ctx.profilers and f["name"] == "range":
            params["profiler"] = ctx.profilers[params["metric"]]
        out.append(registry.build("filters", f["name"], **params))
    return out


def _strategy_params(s: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in s.items() if k not in ("name", "penalty", "filter", "trials", "mode")}


def _multi_trial(ctx: Context) -> Any:
    cfg, s = ctx.config, ctx.config["strategy"]
    ev = cfg["evaluator"]
    estimator = registry.get("estimators", ev["name"])
    score = estimator(estimator.Config(**ev)).prepare(ctx)
    penalty = _penalty(ctx, s["penalty"])
    if penalty is not None:
        base = score
        score = lambda sample: penalty(float(base(sample)), sample)  # noqa: E731
    strategy = registry.build("strategies", s["name"], **_strategy_params(s))
    filters = _filters(ctx, s["filter"])
    chain = search.Chain(strategy, *filters) if filters else strategy
    ctx.mode = s["mode"]
    ctx.say(f"searching ({s['trials']} trials, {s['name']}; checkpoint {ctx.out / 'checkpoint.json'})")
    result = search.run(ctx.space, None, cfg["constraints"] or None, score, strategy=chain, max_trials=s["trials"],
                        seed=ctx.seed, profilers=ctx.profilers, checkpoint=ctx.out / "checkpoint.json",
                        history_csv=ctx.out / "history.csv", mode=s["mode"], progress=ctx.progress)
    ctx.history, ctx.constraints = result.history, result.constraints
    ctx.best_sample, ctx.best_score, ctx.best_metrics = result.best_sample, result.best_score, result.best_metrics
    ctx.files["history"] = ctx.out / "history.csv"
    ctx.files["checkpoint"] = ctx.out / "checkpoint.json"
    return result


def _oneshot(ctx: Context) -> Any:
    from hwnas.export import export
    from hwnas.profile.constraints import parse_constraints
    from hwnas.search.oneshot_train import OneShotEpoch

    cfg, s, ev = ctx.config, ctx.config["strategy"], ctx.config["evaluator"]
    data = ctx.data
    train = search.TensorBatches(data.x_train, data.y_train, ev["batch_size"], shuffle=True, seed=ctx.seed)
    val = search.TensorBatches(data.x_val, data.y_val, ev["val_batch_size"], shuffle=True, seed=ctx.seed + 1)
    filters = _filters(ctx, s["filter"])
    flt = filters[0] if len(filters) == 1 else (
        search.Filter(lambda sample: all(f(sample) for f in filters), name="all filters") if filters else None)
    strategy = registry.build("strategies", s["name"], penalty=_penalty(ctx, s["penalty"]), filter=flt,
                              **_strategy_params(s))
    state, weights = ctx.out / "oneshot.json", ctx.out / "supernet.pt"
    result = None
    if ctx.resuming and state.exists() and weights.exists():
        saved = json.loads(state.read_text())
        ctx.space.load_state_dict(torch.load(weights, weights_only=True))
        sample = {k: v for k, v in saved["sample"].items()}
        ctx.space.apply_arch(sample)
        ctx.oneshot = SimpleNamespace(history=[OneShotEpoch(**e) for e in saved["history"]], sample=sample)
        ctx.say(f"loaded the finished one-shot training of the interrupted run ({state})")
    else:
        ctx.say(f"one-shot training ({s['name']}, {ev['epochs']} epochs + {ev['warmup_epochs']} warm-up)")
        train_oneshot = registry.get("trainers", "oneshot")
        result = train_oneshot(ctx.space, strategy, train, val, epochs=ev["epochs"],
                               warmup_epochs=ev["warmup_epochs"], lr=ev["lr"], seed=ctx.seed, progress=ctx.progress)
        sample = result.sample
        ctx.oneshot = result
        from hwnas.experiment.parts import _save_state

        _save_state(ctx.space, weights)
        atomic_write_json(state, json.loads(json.dumps({"sample": sample, "history": [vars(e) for e in result.history]},
                                                       default=repr)))
    ctx.best_sample = dict(sample)
    subnet = export(ctx.space, ctx.best_sample).eval()
    ctx.best_score = search.evaluate_accuracy(subnet, search.TensorBatches(data.x_val, data.y_val, 512))
    ctx.best_metrics = {m: float(p.profile(ctx.best_sample)) for m, p in ctx.profilers.items()}
    ctx.constraints = parse_constraints(cfg["constraints"], ctx.profilers) if cfg["constraints"] else []
    for c in ctx.constraints:
        if ctx.best_metrics[c.metric] > c.bound:
            logger.warning("the one-shot choice has %s %.6g, above the constraint's %.6g: a one-shot strategy "
                           "steers by its penalty, it does not enforce a hard bound; raise the penalty's scale or "
                           "search its supernet with a multi-trial strategy.", c.metric, ctx.best_metrics[c.metric],
                           c.bound)
    return result if result is not None else ctx.oneshot


def _run_demo(resolved: dict[str, Any], out: Path, resuming: bool) -> ExperimentResult:
    from hwnas.demo import run_demo

    start = time.perf_counter()
    demo = run_demo(out, quick=resolved["quick"], seed=resolved["seed"], progress=resolved["progress"],
                    lut=resolved["lut"], threads=resolved["threads"])
    files = dict(demo.files)
    files["config"] = out / CONFIG_FILE
    r = demo.search
    return ExperimentResult(r.best_sample, r.best_score, r.best_metrics, r.history, out, files, resolved, demo,
                            resuming, time.perf_counter() - start)
