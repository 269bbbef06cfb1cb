"""Build a latency LUT for a space by profiling whole exported subnets in ONNX Runtime.

The builder lists every kernel signature the space can produce, then repeatedly picks a subnet that
covers signatures still short of measurements (greedily, from a seeded generator), exports it, runs it
under ONNX Runtime's profiler and charges each node's time to its kernel (:mod:`hwnas.hw.kernels`). It also
measures the subnet's unprofiled end-to-end time, to calibrate the LUT. After every subnet the LUT file is
rewritten atomically, so a killed build resumes where it stopped with nothing lost.

Finally the end-to-end times of all the build's subnets are measured once more, interleaved in many short
rounds (:func:`interleave_end_to_end`): a shared machine's speed drifts by a few percent over minutes, and
times taken one subnet after another minutes apart would carry that drift into the calibration. Those runs are
paired with a reference subnet (noise cancellation), and their level is then mapped onto hwnas's definition of
latency, the steady-state median (:func:`hwnas.hw.speed.calibrate_definition`: some build subnets measured both
ways in the same run), so the LUT predicts steady-state medians.

Example:
    >>> import torch, hwnas, tempfile, os
    >>> from hwnas.hw.build import build_lut
    >>> space = hwnas.spaces.create("digits")
    >>> lut = build_lut(space, torch.randn(1, 1, 8, 8), "cpu-ort-1t",
    ...                 os.path.join(tempfile.mkdtemp(), "digits.json"), repeats_per_kernel=1,
    ...                 runs=5, warmup=2, progress=False)                       # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hwnas.graph.subnet import export
from hwnas.graph.trace import OpGraph, build_graph
from hwnas.hw.device import Device, device_pool, get_device
from hwnas.hw.kernels import Kernel, active_kernels, attribute_nodes, map_kernels
from hwnas.hw.lut import LUT, LUTError, now
from hwnas.hw.lut_check import device_difference
from hwnas.hw.measure import measure, measure_many, open_reference
from hwnas.hw.profiling import profile_run
from hwnas.hw.scratch import scratch_dir
from hwnas.hw.session import EXPORT_LOCK, export_onnx
from hwnas.io import lock_file, remove_stale_temps
from hwnas.profile.constraints import centroid_sample
from hwnas.space.space import as_rng, collect_choices

__all__ = ["build_lut", "kernel_tables", "space_signatures", "measure_subnet_kernels", "input_for",
           "interleave_end_to_end", "space_digest", "RESUME_SETTINGS"]

log = logging.getLogger(__name__)


def kernel_tables(graph: OpGraph, kernels: list[Kernel]) -> list[tuple[tuple[str, ...], np.ndarray]]:
    """Each kernel's signature table (labels, object array of signature strings or ``None``)."""
    return [k.signature_table(graph) for k in kernels]


def space_signatures(space: Any, dummy_input: Any, graph: OpGraph | None = None) -> set[str]:
    """Every kernel signature that some subnet of ``space`` runs (the LUT a space needs)."""
    graph = graph or build_graph(space, dummy_input)
    return {s for _, tab in kernel_tables(graph, map_kernels(graph)) for s in tab.ravel() if s is not None}


def input_for(space: Any, sample: dict[str, Any], dummy_input: torch.Tensor) -> torch.Tensor:
    """The input tensor for ``sample`` (its resolution when the space searches it)."""
    res = getattr(space, "resolution", None)
    if res is not None and res.label in sample and dummy_input.ndim == 4:
        r = sample[res.label]
        return torch.randn(*dummy_input.shape[:2], r, r)
    return dummy_input


def export_subnets(space: Any, samples: list[dict[str, Any]], dummy_input: torch.Tensor, workdir: str | os.PathLike,
                   stem: str, export_fn: Any = None, progress: bool = False,
                   desc: str = "export subnets") -> tuple[list[Path], list[torch.Tensor]]:
    """Export each sample's subnet to ``<workdir>/<stem><i>.onnx`` with its input (:func:`input_for`); returns
    ``(paths, inputs)``. ``export_fn`` defaults to :func:`hwnas.export`."""
    from tqdm.auto import tqdm

    export_fn = export_fn or export
    paths, inputs = [], []
    for i, sample in enumerate(tqdm(samples, desc=desc, disable=not progress, leave=False)):
        x = input_for(space, sample, dummy_input)
        paths.append(export_onnx(export_fn(space, sample).eval(), x, Path(workdir) / f"{stem}{i}.onnx"))
        inputs.append(x)
    return paths, inputs


def measure_subnet_kernels(space: Any, graph: OpGraph, kernels: list[Kernel], sample: dict[str, Any],
                           dummy_input: torch.Tensor, device: Device, runs: int, warmup: int,
                           export_fn: Any, workdir: str | os.PathLike,
                           end_to_end: bool = True, onnx_name: str = "subnet.onnx") -> dict[str, Any]:
    """Export ``sample`` (to ``workdir / onnx_name``), profile it in ORT and attribute node times to kernels.

    Returns a dict with ``kernels`` (list of (kernel, signature, ms, nodes)), ``sum_nodes_ms``, ``nodes``,
    ``end_to_end_ms`` (unprofiled, when ``end_to_end``: a quick first estimate of 10 runs) and ``lead_ms``.

    Raises:
        LUTError: the profile's convolutions/GEMMs could not be matched to the subnet's kernels.
    """
    x = input_for(space, sample, dummy_input)
    path = Path(workdir) / onnx_name
    with _EXPORT_LOCK:  # exports share the space's modules: one at a time when a pool measures in threads
        export_onnx(export_fn(space, sample).eval(), x, path)
    prof = profile_run(path, device, x, runs=runs, warmup=warmup)
    nodes = prof.nodes.to_dict("records")
    act = active_kernels(kernels, graph, sample)
    times, lead, n_anchor = attribute_nodes(nodes, act)
    anchors = sum(k.kind in ("conv", "linear") for k, _ in act)
    if n_anchor != anchors:
        raise LUTError(f"could not match ORT's profile to the subnet's kernels ({n_anchor} of {anchors} convolutions/"
                       f"GEMMs matched) for sample {sample}; ORT may have fused differently than hwnas.hw.kernels "
                       f"predicts{_fusion_note(path, device)}. Please report this with the sample.")
    counts = _node_counts(nodes, act)
    out = {"kernels": [(k, str(sig), t, counts[i]) for i, ((k, sig), t) in enumerate(zip(act, times))],
           "sum_nodes_ms": float(sum(times) + lead), "nodes": len(nodes), "lead_ms": float(lead)}
    if end_to_end:
        # a first estimate for the calibration until the interleaved pass (interleave_end_to_end) replaces it
        out["end_to_end_ms"] = measure(path, device, x, warmup=3, repeats=5, rounds=2).median_ms
    return out


_EXPORT_LOCK = EXPORT_LOCK  # also around export_fn: a pool's threads export subnets of one space


def _plan_subnets(graph: OpGraph, kernels: list[Kernel], tables: list, needed: set[str], counts: Counter,
                  repeats_per_kernel: int, random_left: int, room: int,
                  rng: np.random.Generator) -> list[tuple[dict[str, Any], bool]]:
    """Up to ``room`` subnets to measure next, ``(sample, covering)``: each planned as if the ones before it were
    measured already (their signatures counted), so that a pool does not measure the same kernels twice."""
    planned, batch, randoms = Counter(counts), [], 0
    for _ in range(room):
        covering = any(planned[s] < repeats_per_kernel for s in needed)
        if not covering and randoms >= random_left:
            break
        sample = _covering_sample(graph, tables, planned, repeats_per_kernel, rng) if covering else \
            {lab: c.values[int(rng.integers(len(c.values)))] for lab, c in graph.choices.items()}
        batch.append((sample, covering))
        randoms += not covering
        if room > 1:
            planned.update(str(sig) for _, sig in active_kernels(kernels, graph, sample))
    return batch


def _measure_batch(batch: list, pool: list[Device], space: Any, graph: OpGraph, kernels: list[Kernel],
                   dummy_input: torch.Tensor, runs: int, warmup: int, export_fn: Any, work: str,
                   first_index: int) -> list[tuple[str, Any]]:
    """Measure the subnets of ``batch``, the i-th on ``pool[i]`` (in threads when more than one);
    ``(ONNX file name, result or LUTError)`` for each, in order."""
    def one(i: int) -> tuple[str, Any]:
        name = f"subnet-{first_index + i}.onnx"
        try:
            return name, measure_subnet_kernels(space, graph, kernels, batch[i][0], dummy_input, pool[i], runs, warmup,
                                                export_fn, work, onnx_name=name)
        except LUTError as e:
            return name, e

    if len(batch) == 1:
        return [one(0)]
    with ThreadPoolExecutor(len(batch), thread_name_prefix="hwnas-lut") as ex:
        return list(ex.map(one, range(len(batch))))


def _fusion_note(path: Path, device: Device) -> str:
    """What the device's provider fused, read from the optimised model ORT writes: the nodes that stand for more than
    one convolution/GEMM (a compiled subgraph, whose time no kernel LUT can split)."""
    import onnx

    from hwnas.hw.profiling import fused_nodes, optimized_graph

    try:
        original = onnx.load(str(path))
        kinds = {n.name: n.op_type for n in original.graph.node}
        groups = fused_nodes(original, optimized_graph(path, device))
    except Exception as e:  # the note must not hide the error it explains
        return f" (the optimised model could not be read: {e})"
    merged = [(opt, [o for o in orig if kinds.get(o) in ("Conv", "Gemm", "MatMul", "ConvTranspose")])
              for opt, orig in groups]
    merged = [(opt, anchors) for opt, anchors in merged if len(anchors) > 1]
    if not merged:
        return ""
    opt, anchors = max(merged, key=lambda m: len(m[1]))
    return (f": {device.provider} runs {len(anchors)} convolutions/GEMMs ({', '.join(anchors[:4])}"
            f"{', ...' if len(anchors) > 4 else ''}) as one node group {opt[:3]}, whose time a kernel LUT cannot split "
            "(use a whole-model predictor, hwnas.predict, or a provider/optimisation level that runs them as nodes)")


def _node_counts(nodes: list[dict], act: list) -> list[int]:
    """How many ORT nodes each kernel was charged with (same walk as attribute_nodes)."""
    times, _, _ = attribute_nodes([{**n, "median_ms": 1.0} for n in nodes], act)
    return [int(round(t)) for t in times]


def _covering_sample(graph: OpGraph, tables: list, counts: Counter, need: int,
                     rng: np.random.Generator) -> dict[str, Any]:
    choices = graph.choices
    fixed: dict[str, int] = {}
    planned: Counter = Counter()
    for ki in rng.permutation(len(tables)):
        labels, tab = tables[ki]
        if not labels:
            continue
        idx = [np.array([fixed[lab]]) if lab in fixed else np.arange(n) for lab, n in zip(labels, tab.shape)]
        sub = tab[np.ix_(*idx)]
        cand = [cell for cell in np.ndindex(sub.shape)
                if sub[cell] is not None and counts[sub[cell]] + planned[sub[cell]] < need]
        if not cand:
            continue
        cell = cand[int(rng.integers(len(cand)))]
        for lab, ix, c in zip(labels, idx, cell):
            fixed[lab] = int(ix[c])
        planned[sub[cell]] += 1
    return {lab: c.values[fixed[lab] if lab in fixed else int(rng.integers(len(c.values)))]
            for lab, c in choices.items()}


def build_lut(space: Any, dummy_input: torch.Tensor, device: str | Device = "cpu-ort-1t",
              path: str | os.PathLike | None = None, repeats_per_kernel: int = 3, runs: int = 30, warmup: int = 10,
              max_subnets: int | None = None, seed: int = 0, progress: bool = True, space_name: str | None = None,
              export_fn: Any = None, random_subnets: int = 60, end_to_end_rounds: int = 20,
              calibrate: int = 16) -> LUT:
    """Measure every kernel signature ``space`` can produce on ``device`` (resumable).

    Args:
        space: the model space.
        dummy_input: input of the shape the LUT is for (batch size and resolution matter).
        device: a registered device name or :class:`~hwnas.hw.device.Device` (threads, optimisation level), or a
            pool of devices of one configuration (a list, or names joined by commas: several measurement agents
            of one kind, :func:`~hwnas.hw.device.device_pool`): the subnets are spread over them, one at a time on
            each; the LUT is recorded for the first, which also runs the interleaved end-to-end pass.
        path: the LUT file; if it exists, the build resumes from it: same device, space, input and settings
            required (:data:`RESUME_SETTINGS`; another is refused, naming it). The build holds the advisory lock
            ``<path>.lock`` (a second build into the same file gets :class:`~hwnas.io.FileInUseError`), removes
            temporary files a killed write left, and keeps its ONNX files in a scratch folder that is removed on
            any exit (:mod:`hwnas.hw.scratch`). ``settings["build_seconds"]`` adds up the time of every call.
        repeats_per_kernel: measurements per signature, each in a different subnet (median is used).
        runs, warmup: profiled runs per subnet and warm-up runs before them.
        max_subnets: stop after this many subnets in this call (the file stays resumable).
        seed: seed of the subnet choice.
        progress: show a progress bar with an ETA.
        space_name: a name recorded in the LUT's ``spaces`` list.
        export_fn: ``(space, sample) -> nn.Module`` (default :func:`hwnas.graph.subnet.export`).
        random_subnets: after every signature is covered, also profile this many uniformly random subnets,
            so that the calibration and refinement see the subnets that search draws, not only the
            covering ones (which lean deep and wide).
        end_to_end_rounds: rounds of the final interleaved end-to-end pass (:func:`interleave_end_to_end`).
        calibrate: after that pass, measure this many build subnets also with the steady protocol in the same
            run and map the LUT's paired level onto the steady-state median, hwnas's definition of latency
            (:func:`hwnas.hw.speed.calibrate_definition`, about 10 s); 0 skips it (the LUT then predicts the paired
            level, and says so).

    Returns:
        The :class:`~hwnas.hw.lut.LUT` (also saved to ``path`` after every subnet).
    """
    export_fn = export_fn or export
    pool = device_pool(device)  # several agents of one device: each measures one subnet at a time
    for member in pool:
        member.check_available()
    if path is None:
        with scratch_dir("lut"):
            return _build(space, dummy_input, pool, None, repeats_per_kernel, runs, warmup, max_subnets, seed, progress,
                          space_name, export_fn, random_subnets, end_to_end_rounds, calibrate)
    lock = lock_file(path, "LUT file")  # a second build into this file is refused now, not merged silently later
    try:
        remove_stale_temps(path)  # left by a build killed mid-write; none can be mid-write while we hold the lock
        with scratch_dir("lut"):
            return _build(space, dummy_input, pool, Path(path), repeats_per_kernel, runs, warmup, max_subnets, seed,
                          progress, space_name, export_fn, random_subnets, end_to_end_rounds, calibrate)
    finally:
        lock.release()


#: The settings a resumed build must share with the file (``settings`` key -> how to give it, API and CLI).
RESUME_SETTINGS = {
    "input_shape": "dummy_input's shape (--input)", "space_digest": "the space and its arguments (--space, "
    "--space-arg)", "runs": "runs= (--runs)", "warmup": "warmup=", "repeats_per_kernel": "repeats_per_kernel= "
    "(--repeats)", "random_subnets": "random_subnets= (--random-subnets)", "harvest": "the harvest method",
    "seed": "seed=", "end_to_end_rounds": "end_to_end_rounds=", "calibrate": "calibrate=",
}


def space_digest(graph: OpGraph, signatures: set[str]) -> str:
    """A digest of what a space is to a LUT build: its choices (labels and values) and the kernel signatures its
    subnets run; two spaces of one name with other arguments (widths, classes, resolutions) differ."""
    text = json.dumps({"choices": {lab: [repr(v) for v in c.values] for lab, c in sorted(graph.choices.items())},
                       "signatures": sorted(signatures)}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _check_resume(lut: LUT, path: Path, dev: Device, tag: str, settings: dict[str, Any]) -> None:
    """Refuse to resume a build made with other settings than this call's (naming the first that differs)."""
    fresh = (f"Resume it with the same settings, or start fresh: delete {str(path)!r} (and {path.name}.lock) or "
             "give another path (--out)")
    mine, theirs = {k: v for k, v in lut.device.__dict__.items() if k != "description"}, \
        {k: v for k, v in dev.__dict__.items() if k != "description"}
    if mine != theirs:
        raise LUTError(f"{str(path)!r} is a LUT build for device {lut.device.name!r}, and this call measures on "
                       f"{dev.name!r}: {device_difference(lut.device, dev, 'the file', 'this call')}. {fresh}.")
    others = [t for t in lut.spaces if t != tag]
    shape = lut.settings.get("input_shape")
    if others and tag not in lut.spaces and (shape is None or shape == settings["input_shape"]):
        raise LUTError(f"{str(path)!r} is a LUT build of {others} and this call builds {tag!r} (space@input). A "
                       f"build resumes only its own space and input, so that it does not refit one LUT over two. "
                       f"{fresh}; LUT.merge combines finished LUTs of one device.")
    for key, how in RESUME_SETTINGS.items():
        if key in lut.settings and key in settings and lut.settings[key] != settings[key]:
            raise LUTError(f"{str(path)!r} is a LUT build made with {key} = {lut.settings[key]!r}, and this call asks "
                           f"for {settings[key]!r} (set by {how}). {fresh}.")


def _build(space: Any, dummy_input: torch.Tensor, pool: list[Device], path: Path | None, repeats_per_kernel: int,
           runs: int, warmup: int, max_subnets: int | None, seed: int, progress: bool, space_name: str | None,
           export_fn: Any, random_subnets: int, end_to_end_rounds: int, calibrate: int) -> LUT:
    """:func:`build_lut` inside its lock and scratch folder; the LUT is recorded for ``pool[0]``."""
    dev = pool[0]
    tag = f"{space_name or type(space).__name__}@{'x'.join(str(d) for d in dummy_input.shape)}"
    graph = build_graph(space, dummy_input)
    kernels = map_kernels(graph)
    tables = kernel_tables(graph, kernels)
    needed = {s for _, tab in tables for s in tab.ravel() if s is not None}
    settings = {"runs": runs, "warmup": warmup, "repeats_per_kernel": repeats_per_kernel,
                "random_subnets": random_subnets, "seed": seed, "end_to_end_rounds": end_to_end_rounds,
                "calibrate": calibrate, "harvest": "per-node ORT profile of whole subnets",
                "input_shape": list(dummy_input.shape), "space_digest": space_digest(graph, needed)}
    if path is not None and path.exists():
        lut = LUT.load(path, strict=False)  # its calibration is fitted again after the next subnet
        _check_resume(lut, path, dev, tag, settings)
        for key, value in settings.items():  # a file from before a setting was recorded: record it now
            lut.settings.setdefault(key, value)
        log.info("resuming %s: %d kernels, %d subnets measured", path, len(lut), len(lut.subnets))
    else:
        lut = LUT.new(dev, settings)
        lut.settings["started"] = now()
    if tag not in lut.spaces:
        lut.spaces.append(tag)
    counts = Counter({s: lut.entries[s].n for s in needed if s in lut.entries})
    n_random = lambda: sum(1 for r in lut.subnets if r.get("space") == tag and r.get("random"))  # noqa: E731
    missing = lambda: sum(max(0, repeats_per_kernel - counts[s]) for s in needed) + \
        max(0, random_subnets - n_random())  # noqa: E731
    log.info("%s: %d kernels map to %d signatures; %d measurements to go", tag, len(kernels), len(needed), missing())
    rng = as_rng(np.random.default_rng([seed, len(lut.subnets)]))
    bar = None
    if progress:
        from tqdm.auto import tqdm

        total = len(needed) * repeats_per_kernel + random_subnets
        bar = tqdm(total=total, initial=total - missing(), desc=f"LUT {tag}", unit="measurement")
    done_here = 0
    t0, seconds_before = time.perf_counter(), float(lut.settings.get("build_seconds", 0.0))

    def save() -> None:  # build_seconds: earlier calls' plus this one's so far, so that a killed call still counts
        lut.settings["build_seconds"] = round(seconds_before + time.perf_counter() - t0, 3)
        if path is not None:
            lut.save(path)

    # each profiled subnet's ONNX file stays in ``work`` (inside the build's scratch folder) for the interleaved
    # pass (no second export); a resumed build exports the subnets of earlier calls again
    with tempfile.TemporaryDirectory(prefix="subnets-") as work:
        while missing() > 0 and (max_subnets is None or done_here < max_subnets):
            # one subnet per device of the pool, measured at once (a pool of one: one subnet, as always)
            room = len(pool) if max_subnets is None else min(len(pool), max_subnets - done_here)
            batch = _plan_subnets(graph, kernels, tables, needed, counts, repeats_per_kernel,
                                  random_subnets - n_random(), room, rng)
            before = missing()
            results = _measure_batch(batch, pool, space, graph, kernels, dummy_input, runs, warmup, export_fn, work,
                                     len(lut.subnets))
            for (sample, covering), (name, res) in zip(batch, results):
                done_here += 1
                if isinstance(res, LUTError):
                    log.warning("skipping a subnet: %s", res)
                    continue
                if name != f"subnet-{len(lut.subnets)}.onnx":  # named for the interleaved pass by its index
                    os.replace(Path(work) / name, Path(work) / f"subnet-{len(lut.subnets)}.onnx")
                for _, sig, ms, n_nodes in res["kernels"]:
                    lut.add(sig, ms, n_nodes, subnet=len(lut.subnets))
                    counts[sig] += 1
                lut.subnets.append({"space": tag, "sample": sample, "end_to_end_ms": res["end_to_end_ms"],
                                    "sum_nodes_ms": res["sum_nodes_ms"], "nodes": res["nodes"],
                                    "kernels": dict(Counter(sig for _, sig, _, _ in res["kernels"])),
                                    "random": not covering})
                lut.fit(select=False)  # the cross-validated choice at the end, over the interleaved times
                save()
            if bar is not None:
                bar.update(before - missing())
                bar.set_postfix(subnets=len(lut.subnets))
            if missing() == before:
                log.warning("a covering subnet added no new measurement; %d still missing", missing())
        if bar is not None:
            bar.close()
        if missing() == 0:
            interleave_end_to_end(lut, space, dummy_input, dev, tag, path=path, export_fn=export_fn,
                                  progress=progress, rounds=end_to_end_rounds, onnx_dir=work, before_save=save)
            if calibrate and lut.definition != "steady":
                from hwnas.hw.speed import calibrate_definition  # hwnas.hw.speed builds on this module

                try:
                    calibrate_definition(lut, space, dummy_input, n=calibrate, seed=seed, progress=progress,
                                         export_fn=export_fn)
                except LUTError as e:  # too noisy a machine: the LUT stays at the paired level, and says so
                    log.warning("%s", e)
    lut.settings["finished"] = now()
    save()
    return lut


#: Rounds of the steady end-to-end pass of a multi-thread device (each a turn of 100 ms per subnet).
STEADY_ROUNDS = 4


def interleave_end_to_end(lut: LUT, space: Any, dummy_input: torch.Tensor, device: str | Device, tag: str,
                          path: str | os.PathLike | None = None, export_fn: Any = None, rounds: int = 20,
                          repeats: int = 3, max_bytes: float = 2e9, seed: int = 0, progress: bool = True,
                          statistic: str = "paired", onnx_dir: str | os.PathLike | None = None,
                          before_save: Any = None) -> int:
    """Measure the end-to-end times of the build subnets of ``tag`` again, all interleaved, and refit the LUT.

    Sessions are created for as many subnets at once as fit in ``max_bytes`` of ONNX files; each group runs
    ``rounds`` rounds of ``repeats`` runs in a shuffled order (:func:`~hwnas.hw.measure.measure_many`), each
    run between two runs of a reference subnet (the space's centroid: every label at its middle value, kept
    in ``settings["references"][tag]``), and each subnet's ``end_to_end_ms`` becomes the ``statistic`` of its
    runs (``"paired"`` by default, the most repeatable on a shared machine: the median ratio to the reference
    times the reference's time in the first such pass, ``settings["reference_ms"][tag]``, so that later passes
    share its speed; the median is kept in ``end_to_end_median_ms``). The LUT's kernel costs are then refined to these times, so the LUT predicts this
    statistic. The first, one-at-a-time time of each subnet stays in ``end_to_end_single_ms``. Resumable: done
    subnets are marked ``"interleaved": true`` and the file is saved after every group. ``onnx_dir`` holds
    ONNX files the build already exported (``subnet-<index in lut.subnets>.onnx``); those are not exported again.
    ``before_save``: called instead of saving to ``path`` after every group (the build's own save, which also
    counts its time).
    All groups are paired with the same open session of the reference, so that they share its speed basis.

    Returns:
        How many subnets were measured in this call.
    """
    export_fn = export_fn or export
    todo = [(i, r) for i, r in enumerate(lut.subnets)
            if r.get("space") == tag and r.get("end_to_end_ms") and not r.get("interleaved")]
    if not todo:
        return 0
    dev = get_device(device)
    if statistic == "paired" and dev.intra_op_threads > 1 and dev.allow_spinning:
        # sessions that take turns run by run compete with the spinning pool threads of the one that ran last: at 2
        # threads the paired level measured 1.8-2.5x the steady state (mobilenet_v3, 2026-12-07), not a fixed ratio
        log.info("%s: %d spinning threads: end-to-end times are measured steady (consecutive turns), not paired",
                 tag, dev.intra_op_threads)
        statistic = "steady"
    done = 0
    refs = lut.settings.setdefault("references", {})
    if tag not in refs:
        refs[tag] = centroid_sample(space, collect_choices(space))
    ref_sample = refs[tag]
    with tempfile.TemporaryDirectory(prefix="hwnas-lut-e2e-") as work:
        ref_runner = None
        if statistic != "steady":
            ref_input = input_for(space, ref_sample, dummy_input)
            ref_path = export_onnx(export_fn(space, ref_sample).eval(), ref_input, Path(work) / "reference.onnx")
            # the same reference session for every group: a new session would bring its own memory placement,
            # and with it a speed basis a few percent off the first group's
            ref_runner = open_reference(ref_path, device, ref_input, seed=seed)
        start = 0
        while start < len(todo):
            group, paths, inputs, size = [], [], [], 0.0
            while start + len(group) < len(todo) and (not group or size < max_bytes):
                index, r = todo[start + len(group)]
                x = input_for(space, r["sample"], dummy_input)
                p = Path(onnx_dir) / f"subnet-{index}.onnx" if onnx_dir is not None else None
                if p is None or not p.exists():
                    p = export_onnx(export_fn(space, r["sample"]).eval(), x, Path(work) / f"{index}.onnx")
                size += p.stat().st_size
                group.append(r)
                paths.append(p)
                inputs.append(x)
            log.info("%s: measuring %d build subnets end to end, interleaved", tag, len(group))
            if statistic == "steady":  # turns of 100 ms of consecutive runs: hwnas's definition of latency
                records = measure_many(paths, device, dummy_inputs=inputs, rounds=STEADY_ROUNDS, seed=seed + start,
                                       progress=progress, method="steady")
            else:
                records = measure_many(paths, device, dummy_inputs=inputs, rounds=rounds, repeats=repeats,
                                       seed=seed + start, progress=progress, reference=ref_runner,
                                       min_turn_ms=2.0, method="paired")
                # paired times are ratios to the reference: express them all at the reference's speed of the first
                # pass (settings["reference_ms"]), so that passes of a resumed or extended build agree
                basis = lut.settings.setdefault("reference_ms", {}).setdefault(
                    tag, float(np.median([rec.reference_ms for rec in records])))
            for r, rec in zip(group, records):
                r.setdefault("end_to_end_single_ms", r["end_to_end_ms"])
                if statistic == "steady":
                    r["end_to_end_ms"] = rec.median_ms
                elif statistic == "paired":  # kept paired; at the steady-state level once the LUT is calibrated
                    r["end_to_end_paired_ms"] = float(np.median(rec.ratios)) * basis
                    r["end_to_end_ms"] = lut.steady_level(r["end_to_end_paired_ms"])
                else:
                    r["end_to_end_ms"] = rec.stat(statistic)
                r["end_to_end_median_ms"] = rec.median_ms
                r["interleaved"] = True
            lut.settings["interleaved_end_to_end"] = {
                "rounds": STEADY_ROUNDS if statistic == "steady" else rounds, "repeats": repeats, "finished": now(),
                "statistic": statistic}
            lut.settings["statistic"] = statistic
            lut.fit()
            if before_save is not None:
                before_save()
            elif path is not None:
                lut.save(path)
            for p in paths:
                p.unlink()
            start += len(group)
            done += len(group)
    return done
