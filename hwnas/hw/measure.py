"""Careful latency measurement with ONNX Runtime, and the one definition of latency hwnas predicts.

**The definition.** "Latency" in hwnas is the conventional *steady-state median*: warm-up, then consecutive
runs of one model, the median run time, which is what ONNX Runtime's ``onnxruntime_perf_test`` and a user's own
timing loop report. :func:`measure` and :func:`measure_many` measure it by default (``method="steady"``):
every model runs in turns of at least ``turn_ms`` (100 ms) of consecutive runs, the first tenth of each turn
untimed (the previous model left its own data in the caches), turns interleaved across models in a shuffled
order so that a shared machine's slow phases hit all models alike; the latency is ``median_ms``.

Two other protocols stay available by name, never as a silent default:

- ``method="paired"`` (give ``reference=``): every timed run sits between two runs of a reference model, which
  cancels a shared machine's slow phases best (see below), but each run starts from the cache the reference
  left: on small models its level is 5-15% above the steady-state median (up to 38% for turns of 3-5 runs of
  1-5 ms models, ``/work/shared/LATENCY_NOTES.md``). LUT builds and speed checks use it for noise cancellation
  and map its level onto the steady-state median (:mod:`hwnas.hw.build`, ``LUT.definition``); its latency is
  ``paired_ms``.
- ``method="interleaved"``: short turns of ``repeats`` runs exactly as given (``rewarm`` untimed runs first),
  no reference; the median of those runs sits between the two others.

Passing ``reference=`` without ``method`` asks for ``"paired"``; ``method="steady"`` with a reference is an
error. :attr:`LatencyRecord.method` and :attr:`LatencyRecord.latency_ms` say which protocol a record holds.

The method (the experiments behind it are in ``benchmarks/measure_methods.py``):

- fixed thread counts and sequential execution (the :class:`~hwnas.hw.device.Device`);
- inputs and outputs preallocated and bound once (IOBinding), values far from denormals;
- warm-up runs, then ``rounds`` rounds of ``repeats`` runs; the median of each round, then the median
  over rounds; the coefficient of variation over round medians says how stable that was;
- also the lower quartile of all timed runs (``p25_ms``): on a shared machine the runs fall into fast and
  slow phases lasting about a second (other tenants of the host), and the share of slow phases moves the
  median by several percent from one measurement to the next;
- *paired* with a reference model (``reference=``): every turn of a model (a re-warming run, then
  ``repeats`` timed runs) sits between two runs of the reference, and the model's time is the median over
  all its timed runs of the run divided by the mean of the two reference runs around it, times the median
  of those same means (``paired_ms``, with the level in ``reference_ms``). A slow phase slows a run and the
  reference runs around it alike, so the ratio cancels it; the level is taken from the very reference runs
  that make the denominators, so on a steady machine ``paired_ms`` equals the model's own median. (Each of
  those reference runs follows a run of this model and starts from the cache state it leaves: after a
  40 ms model the reference ran 1.7x its time alone, after a 1 ms one 1.2x, so a level over every model's
  turns would put large models too low; and a lower quartile of single reference runs put models up to
  25% low whenever a small reference's times spread widely.) ``benchmarks/measure_methods.py``
  (``statistics``) compares the repeatability of the statistics. LUTs are built on it;
- models under comparison are *interleaved*: every session is created up front and each round runs
  all models in a freshly shuffled order, so machine noise hits them alike;
- *one measurement is one draw*: two measurements of the same 30 ``mobilenet_v3`` subnets (two calls, in one
  process or in two) differ model by model by 1.3% to 2.7% (standard deviation of the log ratio after dividing
  out the common speed change; Kendall tau 0.84 to 0.94 between them), while the two halves of one
  measurement's rounds agree within 0.4% to 0.6% (``benchmarks/measure_methods.py``, ``sessions``). Not the
  input values, not denormals (flush-to-zero changed nothing) and not the time within a measurement (the first
  and last halves of a 3-minute one agreed within 0.4%); the same ONNX file entered twice in one measurement ran
  1.5% (sd) apart, so it is set when a measurement opens its sessions. (Closing and opening every session again
  within one measurement, in a new order and with the heap shifted, was tried on 2026-12-02 and did not make
  the sessions differ like separate measurements do; it was dropped.) A figure that must repeat
  is the mean of separate measurements, and its repeatability is a second measurement, not a split of one
  (``benchmarks/latency_accuracy.py`` does both).

Per-node times come from ORT's own profiler (:func:`profile_nodes`), and :func:`optimized_graph`
shows the graph ORT really runs (fusions, NCHWc reorders).

Example:
    >>> import torch
    >>> from hwnas.hw import measure
    >>> rec = measure(torch.nn.Conv2d(3, 8, 3), "cpu-ort-1t", torch.randn(1, 3, 32, 32), repeats=10, rounds=2)
    >>> rec.median_ms > 0
    True
"""

from __future__ import annotations

import gc
import logging
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hwnas.hw.device import OPSET, Device, fingerprint, get_device
from hwnas.hw.profiling import NodeProfile, optimized_graph, profile_nodes, profile_run, reference_means
from hwnas.hw.session import BoundRunner, check_counts, create_session, export_onnx, make_feed

__all__ = [
    "LatencyRecord",
    "METHODS",
    "STATISTICS",
    "NodeProfile",
    "export_onnx",
    "measure",
    "measure_many",
    "open_reference",
    "profile_run",
    "profile_nodes",
    "session_overhead_ms",
    "optimized_graph",
    "usable_cores",
]

logger = logging.getLogger(__name__)


@dataclass
class LatencyRecord:
    """End-to-end latency of one model on one device.

    Attributes:
        median_ms: Median over rounds of the per-round median run time.
        p10_ms: 10th percentile over all timed runs.
        p25_ms: 25th percentile (lower quartile) over all timed runs.
        paired_ms: With a reference model: the median over timed runs of the run over the mean of the two
            reference runs around it, times :attr:`reference_ms` (see the module docstring); NaN without one.
        reference_ms: The median over this model's timed runs of the mean of the two reference runs around
            each (NaN without one).
        ratios: With a reference model: each timed run over the mean of the reference runs around it, shape
            ``(rounds, repeats)``.
        reference_times_ms: With a reference model: every reference run of this model's turns, shape
            ``(rounds, repeats + 1)`` (the first of a turn follows its re-warming run).
        p90_ms: 90th percentile over all timed runs.
        cv: Coefficient of variation (std / mean) of the round medians; NaN with one round.
        repeats: Timed runs per round.
        rounds: Number of rounds.
        device: Device name.
        model: Path of the ONNX file, or ``"<ClassName>"`` for a torch module.
        round_medians_ms: The median of each round.
        times_ms: Every timed run, shape ``(rounds, repeats)``, for other statistics (NaN for runs a steady turn
            cut short: it ends after twice ``turn_ms``).
        load_avg: Highest 1-minute load average seen before/after the measurement (NaN where the OS
            has none). Above the number of logical cores, other processes took CPU time from the runs,
            and long runs are slowed more than short ones: prefer ``p10_ms`` or re-measure.
        fingerprint: :func:`~hwnas.hw.device.fingerprint` of the device at measurement time.
        method: The protocol (:data:`METHODS`): ``"steady"`` (the definition of latency), ``"paired"`` or
            ``"interleaved"``; see the module docstring.
    """

    median_ms: float
    p10_ms: float
    p90_ms: float
    cv: float
    repeats: int
    device: str
    fingerprint: dict = field(repr=False)
    rounds: int = 1
    model: str = ""
    round_medians_ms: list[float] = field(default_factory=list, repr=False)
    times_ms: np.ndarray | None = field(default=None, repr=False, compare=False)
    load_avg: float = float("nan")
    p25_ms: float = float("nan")
    paired_ms: float = float("nan")
    reference_ms: float = float("nan")
    ratios: np.ndarray | None = field(default=None, repr=False, compare=False)
    reference_times_ms: np.ndarray | None = field(default=None, repr=False, compare=False)
    method: str = "steady"

    @property
    def latency_ms(self) -> float:
        """The record's latency in its protocol: :attr:`paired_ms` for ``"paired"``, else :attr:`median_ms` (for
        ``"steady"`` the steady-state median, hwnas's definition of latency)."""
        return self.paired_ms if self.method == "paired" else self.median_ms

    def stat(self, name: str) -> float:
        """The statistic ``name``: ``"median"`` (:attr:`median_ms`), ``"paired"`` (:attr:`paired_ms`) or
        ``"p25"`` / ``"p10"`` / ``"p90"``."""
        if name not in STATISTICS:
            raise ValueError(f"unknown latency statistic {name!r}; expected one of {STATISTICS}.")
        return float(getattr(self, f"{name}_ms"))


#: The statistics a :class:`LatencyRecord` carries.
STATISTICS = ("median", "paired", "p25", "p10", "p90")

#: The measurement protocols (see the module docstring); ``"steady"`` is the definition of latency.
METHODS = ("steady", "paired", "interleaved")

#: Longest turn (timed runs) of a steady measurement, however short the model.
MAX_STEADY_REPEATS = 20000


def resolve_method(method: str | None, reference: Any, where: str = "measure_many") -> str:
    """The protocol a call asks for: ``method`` checked against ``reference`` (``None``: ``"paired"`` with a
    reference, else ``"steady"``)."""
    if method is None:
        return "paired" if reference is not None else "steady"
    if method not in METHODS:
        raise ValueError(f"{where}: unknown method {method!r}; expected one of {METHODS} (\"steady\": warm-up, then "
                         "consecutive runs, the conventional definition of latency).")
    if method == "paired" and reference is None:
        raise ValueError(f"{where}: method='paired' needs reference= (a model run between every two timed runs), "
                         "got none; pass one, or use method='steady'.")
    if method != "paired" and reference is not None:
        raise ValueError(f"{where}: a reference model was given with method={method!r}; a reference is only run "
                         "with method='paired'. Drop reference=, or pass method='paired'.")
    return method


def _progress_bar(**kwargs: Any) -> Any:
    """A tqdm bar; a silent stand-in where tqdm is not installed (a measurement agent's light install)."""
    try:
        from tqdm.auto import tqdm
    except ImportError:
        class _Silent:
            def update(self, n: int = 1) -> None:
                pass

            def close(self) -> None:
                pass

        return _Silent()
    return tqdm(**kwargs)


def usable_cores() -> int:
    """The logical cores this process may run on (its CPU affinity, ``os.sched_getaffinity``), else all cores."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on macOS or Windows
        return os.cpu_count() or 1


_load_warned = False  # the load warning is logged once per process (then at debug level)


def _warn_load(load: float, device: str) -> None:
    """Log, once per process, that the load average exceeds the cores this process may use: other processes then
    compete with the measurement for them. Later occurrences go to the debug log (the load is in each record)."""
    global _load_warned
    cores, total = usable_cores(), os.cpu_count() or 1
    if not load > cores:
        return
    where = f"the {cores} logical cores this process may run on (CPU affinity; {total} in the machine)" \
        if cores < total else f"the {total} logical cores"
    level = logging.DEBUG if _load_warned else logging.WARNING
    _load_warned = True
    logger.log(level, "load average %.2f exceeds %s while measuring on %s: other processes compete for the CPU, so "
               "medians of long runs are inflated more than those of short ones. Measure on a quiet machine, or "
               "compare p10_ms (each LatencyRecord keeps its load_avg; this is shown once per process).",
               load, where, device)


def _load_avg() -> float:
    try:
        return float(os.getloadavg()[0])
    except (AttributeError, OSError):  # not available on Windows
        return float("nan")


def _resolve_model(model: Any, dummy_input: Any, tmpdir: str, index: int) -> tuple[Path, str, Any]:
    """Return (onnx path, display name, feed spec) for a path or a torch module."""
    if isinstance(model, (str, os.PathLike)):
        return Path(model), str(model), dummy_input
    import torch

    if isinstance(model, torch.nn.Module):
        name = f"<{type(model).__name__}>"
        if dummy_input is None:
            raise ValueError(
                f"model {index} is a torch module {name}: dummy_input is required to export it to ONNX "
                f"(got None). Pass e.g. dummy_input=torch.randn(1, 3, 224, 224)."
            )
        path = export_onnx(model, dummy_input, Path(tmpdir) / f"model_{index}.onnx")
        return path, name, dummy_input
    raise TypeError(
        f"model {index}: expected a path to an .onnx file or a torch.nn.Module, got {type(model).__name__}."
    )


def measure_many(
    models: Sequence[Any],
    device: str | Device,
    dummy_input: Any = None,
    *,
    dummy_inputs: Sequence[Any] | None = None,
    warmup: int = 10,
    repeats: int = 50,
    rounds: int = 7,
    seed: int = 0,
    progress: bool = False,
    rewarm: int = 1,
    reference: Any = None,
    reference_input: Any = None,
    min_turn_ms: float = 0.0,
    method: str | None = None,
    turn_ms: float = 100.0,
    time_limit_s: float | None = None,
) -> list[LatencyRecord]:
    """Measure several models, interleaved, and return one :class:`LatencyRecord` per model.

    The protocol is ``method`` (see the module docstring): ``"steady"`` by default, hwnas's definition of latency
    (``record.median_ms``); ``"paired"`` when a ``reference`` is given (``record.paired_ms``); ``"interleaved"``
    for short turns as given.

    Args:
        models: ONNX paths and/or torch modules (modules are exported to a temporary file).
        device: Device name or :class:`Device`.
        dummy_input: One input spec shared by every model (see :func:`~hwnas.hw.session.make_feed`);
            required for torch modules, optional for ONNX files with static input shapes.
        dummy_inputs: One input spec per model, instead of ``dummy_input``.
        warmup: Untimed runs per model before the first round.
        repeats: Timed runs per model per round.
        rounds: Rounds; each runs all models in an order shuffled by a seeded generator. Many short
            rounds (e.g. 30 rounds of 6) spread each model's runs over the whole measurement, so that slow
            phases of a shared machine hit every model alike; few long rounds do not.
        seed: Seed for the round order and generated inputs.
        progress: Show a tqdm progress bar.
        rewarm: Untimed runs at the start of each model's turn in a round: the previous model evicted its
            weights from the caches, and a model's first run after a switch pays for reloading them.
        reference: A reference model (ONNX path or module) run between every two turns, and before each
            round; the records get ``paired_ms`` (see the module docstring). Costs one reference run per
            turn; pick a model of similar size to the ones measured. Measurements that must share one speed
            basis (groups of models measured one after another) pass the same open session of it each time
            (:func:`open_reference`).
        reference_input: The reference's input spec (default: the first model's).
        min_turn_ms: Raise ``repeats`` (for every model, up to 200) so that a model's turn takes at least
            this long at the median model's speed: models of microseconds need many runs per turn to
            average out the timer and interrupts.
        method: ``"steady"`` (default without a reference), ``"paired"`` (default with one) or
            ``"interleaved"``; :data:`METHODS`.
        turn_ms: ``"steady"`` only: each turn runs the model consecutively for at least this long at its warm-up
            speed (``repeats`` is raised up to :data:`MAX_STEADY_REPEATS`), after untimed runs for a tenth of
            that (at least ``rewarm``).
        time_limit_s: run no round that would end (at the pace of the rounds so far) later than this many seconds
            after the timed rounds began; at least one round runs; the records hold the rounds run.
    """
    models = list(models)
    if not models:
        raise ValueError("measure_many: got an empty list of models; pass at least one ONNX path or module.")
    check_counts(warmup=warmup, repeats=repeats, rounds=rounds)
    method = resolve_method(method, reference)
    if method == "steady" and not (isinstance(turn_ms, (int, float)) and turn_ms >= 0):
        raise ValueError(f"measure_many: turn_ms must be a number of milliseconds >= 0, got {turn_ms!r}.")
    if not isinstance(rewarm, int) or isinstance(rewarm, bool) or rewarm < 0:
        raise ValueError(f"measure_many: rewarm must be an int >= 0 (untimed runs per model turn), got {rewarm!r}.")
    if dummy_inputs is not None:
        if dummy_input is not None:
            raise ValueError(
                "measure_many: pass either dummy_input (shared) or dummy_inputs (per model), not both."
            )
        dummy_inputs = list(dummy_inputs)
        if len(dummy_inputs) != len(models):
            raise ValueError(
                f"measure_many: dummy_inputs has {len(dummy_inputs)} entries for {len(models)} models; "
                f"give one input spec per model."
            )
    else:
        dummy_inputs = [dummy_input] * len(models)
    dev = get_device(device)
    if dev.agent:  # the measurement agent runs this same function on its machine
        from hwnas.hw.remote import remote_measure_many

        return remote_measure_many(models, dev, dummy_inputs, warmup=warmup, repeats=repeats, rounds=rounds, seed=seed,
                                   rewarm=rewarm, reference=reference, reference_input=reference_input,
                                   min_turn_ms=min_turn_ms, method=method, turn_ms=turn_ms, time_limit_s=time_limit_s)
    fp = fingerprint(dev)
    load_before = _load_avg()
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory(prefix="hwnas_measure_") as tmp:
        runners, names = [], []
        for i, (model, spec) in enumerate(zip(models, dummy_inputs)):
            path, name, spec = _resolve_model(model, spec, tmp, i)
            session = create_session(path, dev)
            runners.append(BoundRunner(session, make_feed(session, spec, seed=seed, source=name)))
            names.append(name)
        ref_run = None
        if isinstance(reference, BoundRunner):  # kept open by the caller across measurements (open_reference)
            ref_run = reference.run
            runners_to_warm = [*runners, reference]
        elif reference is not None:
            spec = reference_input if reference_input is not None else dummy_inputs[0]
            path, name, spec = _resolve_model(reference, spec, tmp, len(models))
            session = create_session(path, dev)
            ref_runner = BoundRunner(session, make_feed(session, spec, seed=seed, source=f"reference {name}"))
            ref_run = ref_runner.run
            runners_to_warm = [*runners, ref_runner]
        else:
            runners_to_warm = runners
        warm_ns = []
        for runner in runners_to_warm:  # each model's typical run: the median of its warm-up runs (the first
            runs_ns = []                 # ones allocate and run slow)
            for _ in range(max(warmup, 1)):
                t0 = time.perf_counter_ns()
                runner.run()
                runs_ns.append(time.perf_counter_ns() - t0)
            warm_ns.append(float(np.median(runs_ns[len(runs_ns) // 2:])))
        if method == "steady":  # each model's turn lasts turn_ms at its own warm-up speed, a tenth more untimed
            reps = [int(min(MAX_STEADY_REPEATS, max(repeats, np.ceil(turn_ms * 1e6 / max(w, 1.0)))))
                    for w in warm_ns[: len(runners)]]
            rewarms = [max(rewarm, int(np.ceil(k / 10))) for k in reps]
        else:
            if min_turn_ms > 0:
                typical_ms = float(np.median(warm_ns[: len(runners)])) / 1e6
                repeats = int(min(200, max(repeats, np.ceil(min_turn_ms / max(typical_ms, 1e-6)))))
            reps, rewarms = [repeats] * len(models), [rewarm] * len(models)
        times_ns = [np.full((rounds, k), -1, dtype=np.int64) for k in reps]
        # steady turns also end after twice turn_ms (a loaded machine runs slower than its warm-up); unrun slots
        # stay -1 and are left out of the statistics
        limit_ns = 2 * turn_ms * 1e6 if method == "steady" and turn_ms > 0 else float("inf")
        ref_ns = np.empty((len(models), rounds, repeats + 1), dtype=np.int64) if reference is not None else None
        bar = _progress_bar(
            total=rounds * len(models), desc=f"measure on {dev.name}", disable=not progress, leave=False
        )
        clock = time.perf_counter_ns
        gc_was_enabled = gc.isenabled()
        gc.disable()
        began = time.perf_counter()
        try:
            for r in range(rounds):
                # stop before a round that would end after the limit at the pace of the rounds so far
                if r and time_limit_s is not None and (time.perf_counter() - began) * (r + 1) / r > time_limit_s:
                    rounds = r
                    times_ns = [t[:r] for t in times_ns]
                    if ref_ns is not None:
                        ref_ns = ref_ns[:, :r]
                    break
                for m in rng.permutation(len(models)):
                    run = runners[m].run
                    row = times_ns[m][r]
                    for _ in range(rewarms[m]):
                        run()
                    if ref_run is None:
                        start = clock()
                        for k in range(reps[m]):
                            t0 = clock()
                            run()
                            t1 = clock()
                            row[k] = t1 - t0
                            if t1 - start > limit_ns:
                                break
                    else:  # reference, run, reference, run, ..., reference: each run between two references
                        ref_row = ref_ns[m, r]
                        t0 = clock()
                        ref_run()
                        ref_row[0] = clock() - t0
                        for k in range(repeats):
                            t0 = clock()
                            run()
                            t1 = clock()
                            ref_run()
                            ref_row[k + 1] = clock() - t1
                            row[k] = t1 - t0
                    bar.update(1)
        finally:
            if gc_was_enabled:
                gc.enable()
            bar.close()
    load = max(load_before, _load_avg())
    _warn_load(load, dev.name)
    records = []
    for m, name in enumerate(names):
        ms = np.where(times_ns[m] >= 0, times_ns[m] / 1e6, np.nan)
        ratios, ref_ms = None, float("nan")
        if ref_ns is not None:  # each run over the mean of the reference runs just before and after it
            around = reference_means(ref_ns[m])
            ratios = times_ns[m] / around
            # the level: the median of those same means, so that paired_ms is the run's median when the machine
            # is steady (the reference runs of this model's turns only: each starts from the cache state this
            # model leaves, up to 1.7x slower than alone after a large model)
            ref_ms = float(np.median(around)) / 1e6
        round_medians = np.nanmedian(ms, axis=1)
        cv = float(np.std(round_medians, ddof=1) / np.mean(round_medians)) if rounds > 1 else float("nan")
        records.append(
            LatencyRecord(
                median_ms=float(np.median(round_medians)),
                p10_ms=float(np.nanpercentile(ms, 10)),
                p25_ms=float(np.nanpercentile(ms, 25)),
                paired_ms=float(np.median(ratios)) * ref_ms if ratios is not None else float("nan"),
                reference_ms=ref_ms,
                ratios=ratios,
                reference_times_ms=ref_ns[m] / 1e6 if ref_ns is not None else None,
                p90_ms=float(np.nanpercentile(ms, 90)),
                cv=cv,
                repeats=reps[m],
                device=dev.name,
                fingerprint=fp,
                rounds=rounds,
                model=name,
                round_medians_ms=[float(x) for x in round_medians],
                times_ms=ms,
                load_avg=load,
                method=method,
            )
        )
        logger.debug("%s on %s: median %.4f ms, cv %.3f", name, dev.name, records[-1].median_ms, cv)
    return records


def open_reference(model: Any, device: str | Device, dummy_input: Any = None, seed: int = 0) -> BoundRunner:
    """Open a session of a reference model, to pass as ``reference=`` to several :func:`measure_many` calls that
    must share one speed basis: each paired time is a ratio to the reference's runs, and another session of the
    reference, opened in another measurement, runs at a speed of its own (see the module docstring)."""
    dev = get_device(device)
    if dev.agent:  # a session the agent keeps open for every measurement that names it
        from hwnas.hw.remote import remote_open_reference

        return remote_open_reference(model, dev, dummy_input, seed=seed)
    with tempfile.TemporaryDirectory(prefix="hwnas_reference_") as tmp:
        path, name, spec = _resolve_model(model, dummy_input, tmp, 0)
        session = create_session(path, dev)
        return BoundRunner(session, make_feed(session, spec, seed=seed, source=f"reference {name}"))


def measure(
    onnx_path_or_module: Any,
    device: str | Device,
    dummy_input: Any = None,
    warmup: int = 10,
    repeats: int = 50,
    rounds: int = 7,
    *,
    seed: int = 0,
    method: str = "steady",
    reference: Any = None,
    reference_input: Any = None,
) -> LatencyRecord:
    """Measure one model: :func:`measure_many` of a single model.

    ``method="steady"`` (the default, hwnas's definition of latency): ``warmup`` runs, then ``rounds`` x
    ``repeats`` consecutive runs (one model: nothing runs between its rounds), ``median_ms``.
    ``method="paired"`` with ``reference=``: each run between two runs of the reference, ``paired_ms``.
    ``record.latency_ms`` is the figure of the chosen protocol.
    """
    method = resolve_method(method, reference, "measure")
    return measure_many(
        [onnx_path_or_module], device, dummy_input, warmup=warmup, repeats=repeats, rounds=rounds, seed=seed,
        rewarm=0, method=method, turn_ms=0.0, reference=reference, reference_input=reference_input,
    )[0]


def _identity_model(path: Path) -> Path:
    import onnx

    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])
    graph = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["x"], ["y"])], "identity", [x], [y])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def session_overhead_ms(device: str | Device, *, repeats: int = 200, rounds: int = 5, seed: int = 0) -> float:
    """Median time of one run of a trivial model (Identity on one float): the fixed per-run cost."""
    with tempfile.TemporaryDirectory(prefix="hwnas_overhead_") as tmp:
        path = _identity_model(Path(tmp) / "identity.onnx")
        return measure(path, device, warmup=20, repeats=repeats, rounds=rounds, seed=seed).median_ms
