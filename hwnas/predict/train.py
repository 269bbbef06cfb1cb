"""Train a latency predictor for a device by adaptive sampling of whole random models.

``train(device, budget=1500, path="my-cpu-ort-1t.skops")``:

1. *Initial spread*: ``initial`` random training models (:mod:`hwnas.predict.generator`), cycling through the
   block styles. Each is exported to ONNX, read as ONNX Runtime runs it (:func:`hwnas.predict.whole.onnx_kernels`,
   the reader that predicts ONNX files, so training and prediction share one kernel mapping for CNNs and
   transformers alike), profiled by ONNX Runtime, and its node times are charged to its kernels by ORT node name
   (:func:`charge_by_node`), data movement apart (:mod:`hwnas.predict.movement`) and NCHWc layout reorders
   charged to the op on their plain-layout side, which causes them (unlike a LUT, which charges them to the
   kernel before: see ``_reorders_to_plain_side``); its end-to-end time is measured too.
2. *Adaptive rounds*: fit the predictor, draw a pool of ``pool`` candidate models, and measure the ``batch``
   whose predicted time is least certain (the spread of the forests' trees over each kernel, weighted by the
   kernels' predicted times), until the out-of-fold error of whole training models is at most
   ``target_rmspe`` or the next model would exceed ``budget`` kernel measurements.
3. *End to end, all together* (:func:`interleave_training_models`): every training model is measured again,
   all interleaved in ``e2e_measurements`` separate measurements (4; models over 25 ms apart from the rest), each
   run paired with the same open session of the reference. A model measured on its own meets whatever phase the
   shared machine is in, and the pairing cancels only part of it: the end-to-end times of the models measured one
   by one ranged from 0.45x to 1.69x their own profiled kernel sums on the Zen 3 host. These times replace the
   first ones.
4. Fit the final predictor (per-family regressor chosen by grouped cross-validation), the whole-model
   calibration on the interleaved times with every kernel predicted out of fold
   (:func:`hwnas.predict.calibration.fit_whole_calibration`: a factor per kernel family, the profiler's cost per
   kernel, data movement and overhead, chosen by leave-one-model-out), the validation errors, and save it with
   its metadata. :func:`hwnas.predict.calibration.refit` does step 4's calibration again from the stored data.

Every measured model is appended to ``<path>.data.json`` (written atomically), so a killed ``train`` resumes
where it stopped; each kernel time harvested from a profile counts as one kernel measurement against
``budget``.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import root_mean_squared_error

from hwnas.hw.device import Device, fingerprint, get_device
from hwnas.hw.lut import LUTError
from hwnas.hw.measure import measure, measure_many
from hwnas.hw.profiling import profile_run
from hwnas.hw.session import export_onnx
from hwnas.io import atomic_write_json, read_json
from hwnas.predict.estimator import KernelLatencyPredictor, weighted_rmspe
from hwnas.predict.features import kernel_flops, model_weight_bytes, nchwc_block
from hwnas.predict.generator import STYLE_CYCLE, build_model, config_input, random_config
from hwnas.predict.movement import ONNX_MOVEMENT, movement_of_nodes
from hwnas.predict.predictor import LatencyPredictor, PredictorError, training_data_path
from hwnas.predict.validate import DATA_FIX, check_training_data
from hwnas.predict.whole import onnx_kernels

__all__ = ["train", "model_signatures", "fit_predictor", "fit_calibration", "calibrated_ms",
           "validate", "TrainingData", "measure_config", "measure_module", "Reference", "REFERENCE_CONFIG",
           "interleave_training_models", "measure_interleaved", "export_training_model", "charge_by_node"]

log = logging.getLogger(__name__)

DATA_FORMAT = "hwnas-predictor-data"


def model_signatures(model: Any, dummy_input: Any, device: str | Device = "cpu-ort-1t") -> list[str]:
    """The kernel signatures a plain ``nn.Module`` runs, in order: exported to ONNX and read as ONNX Runtime runs
    it (:func:`hwnas.predict.whole.onnx_kernels`), the way training harvests its kernels."""
    with tempfile.TemporaryDirectory(prefix="hwnas-sigs-") as tmp:
        path = export_onnx(model.eval(), dummy_input, Path(tmp) / "model.onnx")
        return [r["signature"] for r in onnx_kernels(path, device)]


class TrainingData:
    """The measured training models of one device, kept in a JSON file written atomically after each model."""

    def __init__(self, path: str | os.PathLike | None, device: Device, settings: dict[str, Any]):
        self.path = Path(path) if path is not None else None
        self.device = device
        self.models: list[dict[str, Any]] = []
        self.seconds = 0.0
        self.wall_seconds = 0.0
        self.settings = settings
        if self.path is not None and self.path.exists():
            data = read_json(self.path, "predictor training data")
            if not isinstance(data, dict) or data.get("format") != DATA_FORMAT:
                raise PredictorError(f"{str(self.path)!r} is not hwnas predictor training data (expected \"format\": "
                                     f"{DATA_FORMAT!r}); pass another path or delete it.")
            if not isinstance(data.get("device"), dict):
                raise PredictorError(f"{str(self.path)!r} is malformed at device: expected an object with the "
                                     f"device's fields, got {data.get('device')!r}. {DATA_FIX}")
            # a field added to Device since the file was written has its default there
            have = {**_device_dict(Device(name=str(data["device"].get("name", device.name)))), **data["device"]}
            if {k: v for k, v in have.items() if k != "description"} != \
                    {k: v for k, v in _device_dict(device).items() if k != "description"}:
                diff = "; ".join(f"{k} {have.get(k)!r} (the file's) vs {v!r} (requested)"
                                 for k, v in _device_dict(device).items() if k != "description" and have.get(k) != v)
                raise PredictorError(f"{str(self.path)!r} holds measurements of device {have.get('name')!r}, not of "
                                     f"the requested {device.name!r}: {diff or 'its description differs'}. Use another "
                                     f"path for {device.name!r}.")
            check_training_data(data, self.path, PredictorError)
            self.models = data["models"]
            self.reference = data.get("reference")
            self.seconds = float(data.get("seconds", 0.0))
            self.wall_seconds = float(data.get("wall_seconds", self.seconds))
            self.fingerprint = data.get("fingerprint", {})
            log.info("resuming from %s: %d models, %d kernel measurements", self.path, len(self.models),
                     self.n_kernels)
        else:
            self.fingerprint = fingerprint(device)
            self.reference = None

    @property
    def n_kernels(self) -> int:
        return sum(len(m["kernels"]) for m in self.models)

    def save(self) -> None:
        if self.path is not None:
            atomic_write_json(self.path, {"format": DATA_FORMAT, "version": 1, "device": _device_dict(self.device),
                                          "fingerprint": self.fingerprint, "settings": self.settings,
                                          "reference": self.reference,
                                          "seconds": self.seconds, "wall_seconds": self.wall_seconds,
                                          "models": self.models})

    def arrays(self) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
        """``(signatures, ms, model index, model weight bytes)`` of every harvested kernel with a positive time."""
        sigs, ms, groups, ctx = [], [], [], []
        for i, m in enumerate(self.models):
            weights = model_weight_bytes([k[0] for k in m["kernels"]])
            for sig, t, _ in m["kernels"]:
                if t > 0:
                    sigs.append(sig)
                    ms.append(t)
                    groups.append(i)
                    ctx.append(weights)
        return sigs, np.asarray(ms, float), np.asarray(groups), np.asarray(ctx, float)


def _device_dict(device: Device) -> dict[str, Any]:
    d = dict(device.__dict__)
    d["provider_options"] = [list(p) for p in device.provider_options]
    return d


#: The reference model whose runs are paired with every training measurement (see :class:`Reference`).
REFERENCE_CONFIG: dict[str, Any] = {
    "input": [1, 3, 96, 96], "style": "mobile", "macs": 0,
    "blocks": [["conv", 3, 16, 3, 2, "relu6", True], ["mbconv", 16, 64, 24, 3, 2, "relu6", 0, "sigmoid"],
               ["mbconv", 24, 96, 24, 5, 1, "relu6", 0, "sigmoid"], ["mbconv", 24, 96, 40, 3, 2, "hardswish", 24,
                                                                     "hardsigmoid"],
               ["basic", 40, 40, 1], ["mbconv", 40, 240, 80, 5, 2, "hardswish", 64, "hardsigmoid"]],
    "head": {"pool": "avg", "fcs": [1000], "act": "relu", "conv": 640, "conv_act": "hardswish"},
}


class Reference:
    """A fixed reference model run next to every measurement, and the speed basis of a predictor's data.

    A shared machine changes speed by several percent within a second and by 10% and more between sessions.
    Each profiled run and each timed end-to-end run of a training model is paired with a run of the reference
    (:func:`~hwnas.hw.profiling.profile_run`, :func:`~hwnas.hw.measure.measure_many`): a time is the model's
    ratio to the reference runs around it, times the median of those reference means in that same measurement
    (the ``paired`` statistic), so the machine's slow phases cancel. The reference's own time in such a pairing
    depends on its partner (after a large model it runs from colder caches: 1.2x to 1.7x its time alone),
    which is why it is never compared across partners. The speed basis is the reference timed alone (its
    lower quartile, caches warm): ``ms`` when the first session started, ``now`` when this one did, and every
    time measured in this session is multiplied by ``scale = ms / now``, so all of a predictor's data are at
    the speed of its first session.

    Args:
        config: the reference's generator config (stored with the data and the predictor).
        ms: the reference's time alone when the first session started; ``None`` for a first session.
    """

    def __init__(self, device: Device, workdir: str | os.PathLike, config: dict[str, Any] | None = None,
                 ms: float | None = None):
        import torch

        from hwnas.hw.measure import open_reference

        self.config = config or REFERENCE_CONFIG
        torch.manual_seed(0)
        self.input = config_input(self.config)
        self.path = export_onnx(build_model(self.config), self.input, Path(workdir) / "reference.onnx")
        # an open session on this machine, or one the measurement agent keeps open for a remote device
        self.runner = open_reference(self.path, device, self.input, seed=0)
        self.now = self.time_alone(device)
        self.ms = float(ms) if ms is not None else self.now
        self.scale = self.ms / self.now

    def time_alone(self, device: Device) -> float:
        """The reference's lower-quartile time run alone (warm), in ms: the machine's speed now."""
        for _ in range(20 if hasattr(self.runner, "run") else 0):  # a remote session warms up on the agent
            self.runner.run()
        return float(measure(self.path, device, self.input, warmup=10, repeats=20, rounds=10).p25_ms)

    @property
    def speed_factor(self) -> float:
        """How much slower (> 1) the machine runs now than in the first session."""
        return self.now / self.ms

    def record(self) -> dict[str, Any]:
        return {"config": self.config, "ms": self.ms}


def measure_config(config: dict[str, Any], device: Device, workdir: str | os.PathLike, runs: int = 20,
                   warmup: int = 5, reference: Reference | None = None) -> dict[str, Any]:
    """Build, export, profile and time one training model (see :func:`measure_module`)."""
    import torch

    torch.manual_seed(0)
    rec = measure_module(build_model(config), config_input(config), device, workdir, runs, warmup, reference,
                         name=f"config {config}")
    return {"config": config, **rec}


def measure_module(model: Any, x: Any, device: Device, workdir: str | os.PathLike, runs: int = 20,
                   warmup: int = 5, reference: Reference | None = None, name: str = "the model") -> dict[str, Any]:
    """Export, profile and time one model: its kernels with their in-context times, and its end-to-end time.

    The node times of ORT's profile are charged to the kernels of :func:`~hwnas.predict.whole.onnx_kernels` by node
    name (:func:`charge_by_node`), except data-movement nodes (Concat, Transpose, Split, Reshape,
    ...), which are summed apart (``movement``): their time follows the bytes they copy, not the kernel before
    them, and whole-model prediction adds them from the model's own movement ops (:func:`movement_of_nodes`).
    With a ``reference``, every profiled and timed run is paired with a reference run; times are the paired
    statistic of their own measurement, rescaled to the first session's speed (see :class:`Reference`).

    Raises:
        LUTError: ORT's profile could not be matched with the model's kernels.
    """
    model = model.eval()
    path = export_onnx(model, x, Path(workdir) / "model.onnx")
    rows = onnx_kernels(path, device)
    # paired: node times at the reference's level within this profile, then at the first session's speed
    ref_kw = {"reference": reference.runner} if reference is not None else {}
    prof = profile_run(path, device, x, runs=runs, warmup=warmup, **ref_kw)
    scale = reference.scale if reference is not None else 1.0
    raw = [{**n, "median_ms": float(n["median_ms"]) * scale} for n in prof.nodes.to_dict("records")]
    nodes = _reorders_to_plain_side(raw)
    moving = [n for n in nodes if n["op_type"] in ONNX_MOVEMENT]
    times, lead, missing = charge_by_node([n for n in nodes if n["op_type"] not in ONNX_MOVEMENT], rows)
    if missing:
        raise LUTError(f"could not match ORT's profile to the kernels of {name}: {len(missing)} kernel node(s) "
                       f"never ran in the profile, e.g. {missing[:3]}.")
    if reference is not None:
        rec = measure_many([path], device, x, warmup=warmup, repeats=3, rounds=max(3, runs // 2), rewarm=1,
                           reference=reference.path, reference_input=reference.input)[0]
        e2e = rec.paired_ms * scale
    else:
        e2e = measure(path, device, x, warmup=warmup, repeats=runs, rounds=5).median_ms
    out_speed = {"profile_speed": float(np.median(prof.speeds))} if prof.speeds is not None else {}
    # the profiled runs' own end-to-end time (same session and speed as the node times, profiler overhead
    # included): tells a drift between the profile and the unprofiled end-to-end measurement from a kernel error
    out_speed["profile_end_to_end_ms"] = float(prof.end_to_end_median_ms) * scale
    return {**out_speed, "kernels": [[r["signature"], float(ms), 1] for r, ms in zip(rows, times)],
            "lead_ms": float(lead), "nodes": len(nodes), "sum_nodes_ms": float(sum(n["median_ms"] for n in nodes)),
            "movement": {**movement_of_nodes([(n["op_type"], n["output_shapes"]) for n in moving]),
                         "ms": float(sum(n["median_ms"] for n in moving))},
            "end_to_end_ms": e2e,
            # ORT's nodes as profiled (type, ms), so that the attribution can be revisited without measuring
            "profile": [[n["op_type"], round(float(n["median_ms"]), 6)] for n in raw]}


#: Models predicted or measured above this many ms are measured apart from the shorter ones, with fewer runs.
LONG_MS = 25.0
#: ``measure_many`` settings of the two groups (per measurement).
GROUP_SETTINGS = {"short": dict(warmup=10, repeats=3, rounds=15, min_turn_ms=2.0),
                  "long": dict(warmup=3, repeats=2, rounds=4)}


#: ``measure_many`` settings of the conventional steady-state protocol (warm-up, then consecutive runs in turns of
#: at least 150 ms, turns interleaved across models; the median).
STEADY_SETTINGS = {"short": dict(warmup=10, repeats=5, rounds=5, rewarm=2, min_turn_ms=150.0),
                   "long": dict(warmup=3, repeats=3, rounds=4, rewarm=1)}


def measure_interleaved(paths: list[Path], inputs: list[Any], device: Device, expected_ms: list[float],
                        reference: Reference | None, measurements: int = 2, seed: int = 0,
                        progress: bool = False, speed_basis: bool = True,
                        protocol: str = "paired") -> list[dict[str, Any]]:
    """Measure models end to end, all interleaved: those expected under :data:`LONG_MS` together, the longer ones
    together (fewer runs), each run paired with the reference's one open session (``reference.runner``), in
    ``measurements`` separate measurements (each opens its own sessions; the time is their geometric mean).

    Args:
        speed_basis: return times at the reference's speed basis (the first training session's, as training
            stores them); ``False``: at this session's speed (to compare with stored times, a speed check).
        protocol: ``"paired"`` (each run between reference runs, the paired statistic) or ``"steady"`` (the
            conventional steady-state median of consecutive runs, :data:`STEADY_SETTINGS`; the reference only
            sets the speed basis).

    Returns:
        per model ``{"ms": paired ms (the median without a reference), "measurements_ms": [...]}``.
    """
    groups = {"short": [i for i, e in enumerate(expected_ms) if e < LONG_MS],
              "long": [i for i, e in enumerate(expected_ms) if e >= LONG_MS]}
    each: list[list[float]] = [[] for _ in paths]
    scale = reference.scale if reference is not None and speed_basis else 1.0
    kw = {"reference": reference.runner} if reference is not None else {}
    for c in range(measurements):
        for g, (name, idx) in enumerate(groups.items()):
            if not idx:
                continue
            steady = protocol == "steady"
            recs = measure_many([paths[i] for i in idx], device, dummy_inputs=[inputs[i] for i in idx],
                                seed=seed + 100 * c + g, progress=progress,
                                **(STEADY_SETTINGS if steady else GROUP_SETTINGS)[name], **({} if steady else kw))
            for i, r in zip(idx, recs):
                each[i].append((r.paired_ms if reference is not None and not steady else r.median_ms) * scale)
    return [{"ms": float(np.exp(np.mean(np.log(v)))), "measurements_ms": [round(float(t), 6) for t in v]}
            for v in each]


def export_training_model(config: dict[str, Any], path: str | os.PathLike) -> tuple[Path, Any]:
    """``(onnx path, input)`` of a training model, with the weights :func:`measure_config` measured (seed 0)."""
    import torch

    torch.manual_seed(0)
    model = build_model(config)  # in measure_config's order: the weights, then the input
    x = config_input(config)
    return export_onnx(model, x, Path(path)), x


def interleave_training_models(data: TrainingData, device: Device, reference: Reference, workdir: str | os.PathLike,
                               measurements: int = 2, progress: bool = False) -> int:
    """Measure the end-to-end times of all training models not yet measured so, interleaved, by the conventional
    steady-state median that a predictor predicts (:func:`measure_interleaved`, ``protocol="steady"``), and store
    them as ``end_to_end_ms`` (the first, one-by-one time stays in
    ``end_to_end_single_ms``). Returns how many models were measured."""
    todo = [m for m in data.models if not m.get("interleaved")]
    if not todo:
        return 0
    paths, inputs = zip(*[export_training_model(m["config"], Path(workdir) / f"train-{i}.onnx")
                          for i, m in enumerate(todo)])
    log.info("measuring %d training models end to end, interleaved", len(todo))
    out = measure_interleaved(list(paths), list(inputs), device, [m["end_to_end_ms"] for m in todo], reference,
                              measurements=measurements, progress=progress, protocol="steady")
    for m, o in zip(todo, out):
        m.setdefault("end_to_end_single_ms", m["end_to_end_ms"])
        m["end_to_end_ms"] = o["ms"]
        m["end_to_end_measurements_ms"] = o["measurements_ms"]
        m["interleaved"] = True
        m["end_to_end_protocol"] = "steady"
    for p in paths:
        p.unlink()
    data.save()
    return len(todo)


def _reorders_to_plain_side(nodes: list[dict]) -> list[dict]:
    """Charge each NCHWc layout reorder to the node on its plain-layout side, the one that needs it.

    ONNX Runtime converts a tensor out of its blocked layout (``ReorderOutput``) for an op that cannot read
    it (a squeeze-excite ``Mul``, a channel shuffle's ``Transpose``, a convolution whose channel count the
    blocked kernels do not take) and back into it (``ReorderInput``) after that op. Charged to that op (the
    node after a ``ReorderOutput``, the node before a ``ReorderInput``, in execution order), a reorder
    follows the op's signature, which every model with that op shares; charged to the blocked convolution
    on the other side, it would make that convolution's time depend on its neighbours. A reorder with no
    such node stays with its neighbour; reorders before the first op (of the model's input) stay as they are.
    """
    reorder = ("ReorderInput", "ReorderOutput")
    first = next((i for i, n in enumerate(nodes) if n["op_type"] not in reorder), len(nodes))
    lead = [dict(n) for n in nodes[:first]]  # converting the model's input: the model's lead, not a kernel's
    out = [dict(n) for n in nodes[first:] if n["op_type"] not in reorder]
    k = -1
    for n in nodes[first:]:
        if n["op_type"] not in reorder:
            k += 1
            continue
        if n["op_type"] == "ReorderOutput" and k + 1 < len(out):
            target = k + 1  # the op that reads the plain tensor
        else:
            target = k  # the op that wrote the tensor (or, at the very end, the last op)
        out[target]["median_ms"] = out[target]["median_ms"] + n["median_ms"]
    return lead + out


def charge_by_node(nodes: list[dict], rows: list[dict]) -> tuple[list[float], float, list[str]]:
    """Charge profiled node times to the kernel rows of :func:`~hwnas.predict.whole.onnx_kernels` by ORT node
    name (a fused attention node's rows share its time by their multiply-adds, elements where they have none);
    a profiled node that is no kernel (an op ORT runs for free, e.g. a no-op) goes to the kernel before it.

    Returns:
        ``(ms per row, ms before the first kernel, names of kernel nodes absent from the profile)``.
    """
    by_node: dict[str, list[int]] = {}
    unnamed: dict[str, list[str]] = {}  # ORT's profile names a node without a name "<op type>_<its index>"
    for i, r in enumerate(rows):
        key = r["node"] or f"(unnamed {r.get('op_type', '?')} {i})"
        if not r["node"]:
            unnamed.setdefault(r.get("op_type", "?"), []).append(key)
        by_node.setdefault(key, []).append(i)
    times = [0.0] * len(rows)
    seen: set[str] = set()
    lead, current = 0.0, -1
    for n in nodes:
        key = n["node"]
        if key not in by_node and unnamed.get(n["op_type"]) and key.rsplit("_", 1)[-1].isdigit():
            key = unnamed[n["op_type"]].pop(0)
        idx = by_node.get(key)
        if idx:
            seen.add(key)
            work = np.array([max(kernel_flops(rows[i]["signature"]), 1) for i in idx], float)
            for i, w in zip(idx, work / work.sum()):
                times[i] += n["median_ms"] * float(w)
            current = idx[-1]
        elif current >= 0:
            times[current] += n["median_ms"]
        else:
            lead += n["median_ms"]
    return times, lead, [k for k in by_node if k not in seen]


def _calib_row(m: dict[str, Any], kernel_sum: float) -> list[float]:
    mv = m.get("movement", {})
    return [kernel_sum, len(m["kernels"]), mv.get("copy_elements", 0.0) / 1e6, mv.get("nodes", 0), 1.0]


def fit_calibration(models: list[dict[str, Any]]) -> dict[str, float]:
    """Fit ``e2e - lead = scale * sum(kernel ms) + per_kernel_ms * kernels + per_copied_melement_ms * copied
    elements / 1e6 + per_movement_node_ms * movement nodes + overhead_ms`` over measured models (least squares on
    relative error). The lead (layout conversion of a non-image input before the first kernel) only occurs in
    training segments that do not start from an image."""
    rows = [m for m in models if m.get("end_to_end_ms")]
    if len(rows) < 8:
        return {"scale": 1.0, "per_kernel_ms": 0.0, "per_copied_melement_ms": 0.0, "per_movement_node_ms": 0.0,
                "overhead_ms": 0.0, "models": len(rows)}
    y = np.array([m["end_to_end_ms"] - m.get("lead_ms", 0.0) for m in rows])
    x = np.array([_calib_row(m, sum(k[1] for k in m["kernels"])) for m in rows])
    w = 1.0 / np.array([m["end_to_end_ms"] for m in rows])
    # unconstrained: the per-kernel, movement and overhead terms may come out negative (kernel times profiled in
    # context overlap; 2026-12-07: -0.34 us per kernel, -77 us overhead); prediction never lets them take a
    # kernel below a tenth of its time or make the overhead and movement negative (LatencyPredictor). Bounding
    # them in the fit instead (overhead >= 0) moved the overlap into the per-kernel term (-2.7 us) and lost the
    # family factors' gain on the unseen zoo (within 10%: 65% against 88%, same measurements).
    coef, *_ = np.linalg.lstsq(x * w[:, None], y * w, rcond=None)
    rel = (x @ coef - y) / y
    return {"scale": float(coef[0]), "per_kernel_ms": float(coef[1]), "per_copied_melement_ms": float(coef[2]),
            "per_movement_node_ms": float(coef[3]), "overhead_ms": float(coef[4]), "models": len(rows),
            "median_abs_rel_err": float(np.median(np.abs(rel)))}


def calibrated_ms(cal: dict[str, float], m: dict[str, Any], kernel_sum: float) -> float:
    """A model's predicted end-to-end ms from its predicted kernel sum and its movement (see fit_calibration)."""
    keys = ("scale", "per_kernel_ms", "per_copied_melement_ms", "per_movement_node_ms", "overhead_ms")
    return float(np.dot(_calib_row(m, kernel_sum), [cal.get(k, 0.0) for k in keys]))


def fit_predictor(data: TrainingData, **params: Any) -> KernelLatencyPredictor:
    sigs, ms, groups, ctx = data.arrays()
    params.setdefault("nchwc_block", nchwc_block(data.fingerprint))
    return KernelLatencyPredictor(**params).fit(sigs, ms, groups=groups, context=ctx)


def validate(data: TrainingData, folds: int = 5, oof_out: list | None = None, **params: Any) -> dict[str, float]:
    """Out-of-fold errors: kernels and whole training models predicted by a predictor that never saw them
    (grouped by model), with the calibration fitted on the other folds. ``oof_out``, a list, receives the
    out-of-fold kernel predictions (one array, in :meth:`TrainingData.arrays` order)."""
    sigs, ms, groups, ctx = data.arrays()
    models = np.unique(groups)
    k = min(folds, len(models))
    if k < 2:
        return {}
    fold_of = {g: i % k for i, g in enumerate(np.random.default_rng(0).permutation(models))}
    oof = np.empty(len(sigs))
    model_pred, model_true = [], []
    for f in range(k):
        test = np.array([fold_of[g] == f for g in groups])
        est = KernelLatencyPredictor(**{"nchwc_block": nchwc_block(data.fingerprint), **params}).fit(
            [s for s, t in zip(sigs, ~test) if t], ms[~test],
                                                   groups=groups[~test], context=ctx[~test])
        oof[test] = est.predict([s for s, t in zip(sigs, test) if t], context=ctx[test])
        cal = fit_calibration([m for i, m in enumerate(data.models) if fold_of.get(i, -1) != f])
        for i in np.unique(groups[test]):
            m = data.models[i]
            sel = groups == i
            pred = calibrated_ms(cal, m, oof[sel].sum())
            model_pred.append(pred)
            model_true.append(m["end_to_end_ms"] - m.get("lead_ms", 0.0))
    if oof_out is not None:
        oof_out.append(oof)
    rel_k = oof / ms - 1
    rel_m = np.array(model_pred) / np.array(model_true) - 1
    return {"kernel_weighted_rmspe": weighted_rmspe(oof, ms),
            "kernel_median_abs_err": float(np.median(np.abs(rel_k))),
            "model_rmspe": float(root_mean_squared_error(np.zeros_like(rel_m), rel_m)),
            "model_within_5pct": float(np.mean(np.abs(rel_m) <= 0.05)),
            "model_within_10pct": float(np.mean(np.abs(rel_m) <= 0.10)),
            "models": int(len(rel_m)), "folds": int(k)}


def _uncertainty(est: KernelLatencyPredictor, sigs: list[str]) -> float:
    """How unsure the predictor is of a model: the tree spread of each kernel's ``log2(ms)``, averaged over the
    model's kernels weighted by their predicted times (so the kernels that matter in the total count most)."""
    d = est.predict_details(sigs, context=model_weight_bytes(sigs))
    std = d["std_log2"].fillna(1.0).to_numpy()
    ms = d["ms"].to_numpy()
    return float(np.sum(ms * std) / np.sum(ms))


def train(device: str | Device = "cpu-ort-1t", budget: int = 1500, path: str | os.PathLike | None = None,
          data_path: str | os.PathLike | None = None, initial: int = 16, batch: int = 4, pool: int = 48,
          target_rmspe: float = 0.02, seed: int = 0, runs: int = 20, warmup: int = 5, max_macs: float = 2.5e9,
          min_macs: float = 5e6, progress: bool = True, params: dict[str, Any] | None = None,
          e2e_measurements: int = 4) -> LatencyPredictor:
    """Measure random whole models adaptively and train a :class:`LatencyPredictor` for ``device``.

    Args:
        device: a registered device name or :class:`~hwnas.hw.device.Device`.
        budget: at most this many kernel measurements (kernel times harvested from profiles).
        path: where to save the predictor (``.skops``); ``None`` keeps it in memory.
        data_path: the resumable measurement file (default ``<path>.data.json``; none when both are ``None``).
        initial: models of the initial spread.
        batch, pool: models measured per adaptive round, and candidates drawn to choose them from.
        target_rmspe: stop early once the out-of-fold RMSPE of whole training models is at most this.
        seed: seed of every random draw (same seed, same models).
        runs, warmup: profiled runs per model (the end-to-end time uses 5 rounds of ``runs``).
        max_macs, min_macs: size range of training models (multiply-adds).
        progress: show a progress bar over kernel measurements.
        params: keyword arguments of :class:`~hwnas.predict.estimator.KernelLatencyPredictor`.
        e2e_measurements: separate interleaved measurements of the training models' end-to-end times (their
            geometric mean is the calibration's target; one measurement of a ~1 ms model is a draw with a few
            percent of noise of its own on a shared machine).

    Returns:
        The trained predictor (also saved to ``path``).
    """
    dev = get_device(device)
    dev.check_available()
    params = dict(params or {})
    if data_path is None and path is not None:
        data_path = training_data_path(path)
    settings = {"budget": budget, "initial": initial, "batch": batch, "pool": pool, "seed": seed, "runs": runs,
                "warmup": warmup, "max_macs": max_macs, "min_macs": min_macs, "target_rmspe": target_rmspe,
                "e2e_measurements": e2e_measurements}
    data = TrainingData(data_path, dev, settings)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=budget, initial=min(budget, data.n_kernels), desc=f"predictor {dev.name}",
                   unit="kernel")
    t_start = time.perf_counter()
    wall_before = data.wall_seconds
    stop_reason = "budget"
    last_validation: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="hwnas-predict-") as work:
        if data.models and data.reference is None:
            raise PredictorError(f"{str(data.path)!r} holds measurements taken without a reference model (an older "
                                 "hwnas); their speeds cannot be matched with new ones. Use another data_path.")
        ref = Reference(dev, work, **(data.reference or {}))
        data.reference = ref.record()
        import torch

        while data.n_kernels < budget:
            rng = np.random.default_rng([seed, len(data.models)])
            if len(data.models) < initial:
                try:
                    queue = [random_config(rng, STYLE_CYCLE[len(data.models) % len(STYLE_CYCLE)], max_macs,
                                           min_macs=min_macs)]
                except RuntimeError:  # a style with no model in [min_macs, max_macs] (tiny budgets): any style
                    queue = [random_config(rng, None, max_macs, min_macs=min_macs)]
                phase = "initial"
            else:
                phase = "adaptive"
                rounds_done = (len(data.models) - initial) // batch
                if rounds_done % 3 == 0 or not last_validation:
                    last_validation = validate(data, **{**params, "candidates": {}, "n_estimators": 60})
                    log.info("after %d models: %s", len(data.models), last_validation)
                if last_validation.get("model_rmspe", 1.0) <= target_rmspe:
                    stop_reason = "target"
                    break
                est = fit_predictor(data, **{**params, "candidates": ("forest",), "n_estimators": 60})
                cands = []
                for _ in range(pool):
                    cfg = random_config(rng, None, max_macs, min_macs=min_macs)
                    torch.manual_seed(0)
                    sigs = model_signatures(build_model(cfg), config_input(cfg), dev)
                    if data.n_kernels + len(sigs) <= budget:
                        cands.append((_uncertainty(est, sigs), cfg))
                cands.sort(key=lambda c: -c[0])
                queue = [c for _, c in cands[:batch]]
                if not queue:
                    break
            full = False
            for cfg in queue:
                t0 = time.perf_counter()
                try:
                    rec = measure_config(cfg, dev, work, runs=runs, warmup=warmup, reference=ref)
                except LUTError as e:
                    log.warning("skipping a training model: %s", e)
                    continue
                if data.n_kernels + len(rec["kernels"]) > budget:
                    full = True
                    break
                rec["phase"] = phase
                rec["seconds"] = time.perf_counter() - t0
                data.models.append(rec)
                data.seconds += rec["seconds"]
                data.wall_seconds = wall_before + time.perf_counter() - t_start
                data.save()
                if bar is not None:
                    bar.update(len(rec["kernels"]))
                    bar.set_postfix(models=len(data.models))
            if full:
                break
        if bar is not None:
            bar.close()
            bar = None
        if data.models:
            t0 = time.perf_counter()
            interleave_training_models(data, dev, ref, work, measurements=e2e_measurements, progress=progress)
            data.seconds += time.perf_counter() - t0
            data.wall_seconds = wall_before + time.perf_counter() - t_start
            data.save()
    if bar is not None:
        bar.close()
    if not data.models:
        raise PredictorError(f"train({dev.name!r}, budget={budget}): no training model fits in the budget (the next "
                             "one had more kernels than that); raise budget= or lower max_macs=.")
    minutes_run = (time.perf_counter() - t_start) / 60
    data.wall_seconds = wall_before + time.perf_counter() - t_start
    data.save()
    t_fit = time.perf_counter()
    est = fit_predictor(data, **params)
    oof: list = []
    validation = validate(data, oof_out=oof, **{**params, "candidates": dict(est.choice_)})
    calibration, family_calibration = fit_calibration(data.models), {}
    if oof and sum(1 for m in data.models if m.get("end_to_end_ms")) >= 8:
        from hwnas.predict.calibration import fit_whole_calibration

        calibration, family_calibration = fit_whole_calibration(data, oof[0])
    fit_minutes = (time.perf_counter() - t_fit) / 60
    sigs = data.arrays()[0]
    meta = {"fingerprint": data.fingerprint,
            "training": {"kernel_measurements": data.n_kernels, "distinct_signatures": len(set(sigs)),
                         "models": len(data.models), "budget": budget,
                         "measuring_minutes": data.seconds / 60,
                         "minutes": data.wall_seconds / 60 + fit_minutes,
                         "minutes_this_call": minutes_run + fit_minutes, "stop": stop_reason,
                         "families": {f: int(n) for f, n in est.n_samples_.items()},
                         "regressors": dict(est.choice_), "cv_weighted_rmspe": est.cv_errors_,
                         "data": "random whole models from hwnas.predict.generator (no reference-space subnets, "
                                 "no zoo models, no shipped LUT entries)",
                         "settings": settings},
            "reference": data.reference,
            "validation": validation,
            "family_calibration": family_calibration}
    pred = LatencyPredictor(est, dev, calibration, meta)
    if path is not None:
        pred.save(path)
    return pred
