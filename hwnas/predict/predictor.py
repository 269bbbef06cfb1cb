"""``LatencyPredictor``: a trained kernel predictor, its calibration and metadata, in a safe file.

A predictor file (the shipped ``hwnas/data/predictors/cpu-ort-1t.skops``, named ``"cpu-ort-1t"``) is a zip written by `skops <https://skops.readthedocs.io>`_
(no pickle) holding the fitted :class:`~hwnas.predict.estimator.KernelLatencyPredictor`, plus a member
``hwnas.json`` with the metadata: format and version, the device and its machine fingerprint, the training
set (kernel measurements, models, minutes), the validation errors, the calibration of whole models and the
library versions, and a SHA-256 digest over all of it. Loading

1. refuses anything that is not such a zip, or whose digest does not match (the file was changed);
2. checks the metadata: a device other than the one asked for is refused; another machine or ONNX Runtime
   version warns (:class:`~hwnas.hw.lut.FingerprintWarning`), like a LUT; another scikit-learn version warns;
3. lists the types the payload would build (``skops.io.get_untrusted_types``) and refuses any outside the
   explicit :data:`TRUSTED_TYPES`, *before* anything is constructed;
4. checks every decision tree's node arrays (children in range and after their node, so no cycle; feature
   indices in range; finite thresholds and values), since scikit-learn's tree code follows them unchecked, and
   every other fitted number and the metadata's calibration (:mod:`hwnas.predict.validate`: the digest has no
   key, so an edited file with a recomputed digest is checked on its content).

The whole-model time is ``sum over kernels of factor[family] * max(scale * prediction + per_kernel_ms, 0.1 *
scale * prediction) + data movement + overhead_ms``: a factor per kernel family of the regressors, the
profiler's cost per timed kernel (``per_kernel_ms``, negative), a cost per element copied by data movement
(:mod:`hwnas.predict.movement`) and a fixed overhead, fitted together on the training models' unprofiled
end-to-end times (:mod:`hwnas.predict.calibration`, which can refit it from a predictor's stored data).
A predictor adapted to another machine (:func:`hwnas.predict.adapt`) carries an ``adapted`` record in its metadata:
``{"families": {family: factor}, "overhead": factor, "adapted_from": {...}, "measurements": [...]}``; each
kernel's calibrated cost is multiplied by its family's factor (:func:`hwnas.hw.lut.family_of`: dense, depthwise
and 1x1 convolutions, GEMM/attention, pooling, elementwise), data movement by ``families["movement"]`` and the
overhead by ``overhead``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hwnas.artifacts import adapt_command, predictor_path, resolve_predictor, shipped_name
from hwnas.hw.device import Device, fingerprint, fingerprint_matches, get_device
from hwnas.hw.lut import FAMILIES as ADAPT_FAMILIES
from hwnas.hw.lut import family_of, warn_fingerprint
from hwnas.hw.lut_check import device_difference
from hwnas.hw.speed import at_model_speed, copy_at_speed
from hwnas.io import atomic_write_text
from hwnas.predict.estimator import KernelLatencyPredictor
from hwnas.predict.features import family_of as regressor_family
from hwnas.predict.validate import check_estimator, check_metadata, check_trees

__all__ = ["LatencyPredictor", "PredictorError", "load_predictor", "TRUSTED_TYPES", "default_predictor_path"]

FORMAT = "hwnas-latency-predictor"
VERSION = 2  # 2: convolution features carry the layout regime and the machine's NCHWc block
META = "hwnas.json"

#: Every type a predictor file may contain; anything else is refused before it is built.
TRUSTED_TYPES = sorted([
    "hwnas.predict.estimator.KernelLatencyPredictor",
    "sklearn.ensemble._forest.RandomForestRegressor",
    "sklearn.ensemble._gb.GradientBoostingRegressor",
    "sklearn.tree._classes.DecisionTreeRegressor",
    "sklearn.tree._tree.Tree",
    "sklearn.linear_model._ridge.RidgeCV",
    "sklearn.pipeline.Pipeline",
    "sklearn.preprocessing._data.StandardScaler",
    "sklearn.dummy.DummyRegressor",
    "sklearn._loss.loss.HalfSquaredError",
    "sklearn._loss._loss.CyHalfSquaredError",
    "sklearn._loss.link.IdentityLink",
    "sklearn._loss.link.Interval",
    "numpy.random.mtrand.RandomState",
    "numpy.random._mt19937.MT19937",
    "builtins.dict", "builtins.list", "builtins.tuple", "builtins.str", "builtins.int", "builtins.float",
    "builtins.bool", "builtins.NoneType",
    "numpy.ndarray", "numpy.float64", "numpy.int64", "numpy.dtype",
])


class PredictorError(ValueError):
    """A predictor file is not a valid hwnas predictor, was changed, or does not fit its use."""


def default_predictor_path(device: str | Device) -> Path:
    """The shipped predictor of a device (``hwnas/data/predictors/<device>.skops``, see :mod:`hwnas.artifacts`)."""
    return predictor_path(get_device(device).name)


def _digest(members: dict[str, bytes], meta: dict[str, Any]) -> str:
    h = hashlib.sha256()
    for name in sorted(members):
        h.update(name.encode())
        h.update(hashlib.sha256(members[name]).digest())
    h.update(json.dumps({k: v for k, v in meta.items() if k != "sha256"}, sort_keys=True).encode())
    return h.hexdigest()


def _versions() -> dict[str, str]:
    import onnxruntime
    import sklearn
    import skops

    from hwnas.hw.device import hwnas_version

    return {"scikit-learn": sklearn.__version__, "skops": skops.__version__, "numpy": np.__version__,
            "onnxruntime": onnxruntime.__version__, "hwnas": hwnas_version()}


def training_data_path(predictor_path: str | os.PathLike) -> Path:
    """Where a predictor file's training data live: ``<file>.data.json`` next to it (written by
    :func:`hwnas.predict.train`, read by speed checks and resumed training, copied by :meth:`LatencyPredictor.save`)."""
    return Path(str(predictor_path) + ".data.json")


@dataclass
class LatencyPredictor:
    """A kernel latency predictor for one device, with the calibration of whole models.

    Attributes:
        kernels: the fitted :class:`~hwnas.predict.estimator.KernelLatencyPredictor`.
        device: the :class:`~hwnas.hw.device.Device` it was trained on.
        calibration: ``{"scale", "per_kernel_ms", "overhead_ms", ...}`` (see the module docstring).
        metadata: training set, validation errors, versions, fingerprint (written to the file).
        path: the file it was loaded from or saved to.
        speed: the last speed check applied (:meth:`with_speed`): ``{"factor", ...}``; empty for none. Not
            saved: the file stays at its training session's speed.
    """

    kernels: KernelLatencyPredictor
    device: Device
    calibration: dict[str, float] = field(default_factory=lambda: {"scale": 1.0, "per_kernel_ms": 0.0,
                                                                   "overhead_ms": 0.0})
    metadata: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    speed: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ predictions
    def predict_signatures(self, signatures: list[str], context: float | None = None) -> np.ndarray:
        """Profiled (uncalibrated) in-context ms of each kernel signature: the unit of LUT entries, so that a
        LUT's own calibration applies when this predictor fills a LUT's gaps (``LatencyProfiler``).

        Args:
            signatures: kernel signatures.
            context: the weight bytes of the model they run in (:func:`hwnas.predict.features.model_weight_bytes`
                of all its kernels); ``None`` takes the median of the training models.
        """
        return self.kernels.predict(list(signatures), context=context)

    def kernel_costs_ms(self, signatures: list[str], context: float | None = None) -> np.ndarray:
        """Calibrated ms of each kernel (:meth:`calibrate` of its prediction); a model's total is their sum plus
        its data movement and :attr:`overhead_ms`."""
        return self.calibrate(self.predict_signatures(signatures, context), signatures)

    def calibrate(self, predicted_ms: Any, signatures: list[str] | None = None) -> np.ndarray:
        """Kernel predictions (:meth:`predict_signatures`) as calibrated ms: ``speed_factor * factors * max(scale *
        prediction + per_kernel_ms, 0.1 * scale * prediction)``, the factors being the training's factor of each
        kernel's regressor family (:attr:`family_calibration`, :mod:`hwnas.predict.calibration`) and, when the
        predictor was adapted, the adaptation's factor of its family (:meth:`adapted_factors`); with either, the
        kernels' ``signatures`` are needed (in the same order). The per-kernel term (the profiler's cost per timed
        kernel, negative) never takes a kernel below a tenth of its scaled prediction: a kernel that runs costs
        time. This is the form the calibration is fitted in."""
        c = self.calibration
        scaled = c["scale"] * np.asarray(predicted_ms, dtype=float)
        out = np.maximum(scaled + c["per_kernel_ms"], 0.1 * scaled)
        trained = self.family_calibration.get("factors") or {}
        if self.adapted or trained:
            if signatures is None or len(signatures) != out.size:
                raise PredictorError(f"calibrate: this predictor calibrates each kernel family on its own (training "
                                     f"or hwnas adapt), so it needs the kernels' signatures, one per prediction; got "
                                     f"{'none' if signatures is None else len(signatures)} for {out.size}.")
            f = np.array([trained.get(regressor_family(str(s)), 1.0) for s in signatures])
            out = out * f.reshape(out.shape) * self.adapted_factors(signatures).reshape(out.shape)
        return self.speed_factor * out

    def adapted_factors(self, signatures: list[str]) -> np.ndarray:
        """The adaptation's factor (:meth:`family_factor`) of each kernel's family (:func:`hwnas.hw.lut.family_of`);
        all 1 for a predictor as trained. A LUT whose gaps this predictor fills applies them too
        (:class:`hwnas.hw.latency.LatencyProfiler`)."""
        return np.array([self.family_factor(family_of(str(s))) for s in signatures], dtype=float)

    @property
    def family_calibration(self) -> dict[str, Any]:
        """The training's factors per regressor family (:func:`hwnas.predict.calibration.fit_whole_calibration`):
        ``{"factors": {family: f}, "rest": f, ...}``; empty for a predictor trained without them."""
        return self.metadata.get("family_calibration") or {}

    def _rest_factor(self) -> float:
        """The training's factor of data movement and overhead (1 without a family calibration)."""
        return float(self.family_calibration.get("rest", 1.0))

    @property
    def adapted(self) -> dict[str, Any]:
        """The adaptation record (:func:`hwnas.predict.adapt`), empty for a predictor as trained."""
        return self.metadata.get("adapted") or {}

    def family_factor(self, family: str) -> float:
        """The adaptation's factor for a kernel family (:data:`hwnas.hw.lut.FAMILIES`, or ``"overhead"``); 1 for
        a predictor as trained."""
        if not self.adapted:
            return 1.0
        if family == "overhead":
            return float(self.adapted["overhead"])
        return float(self.adapted["families"].get(family, 1.0))

    @property
    def speed_factor(self) -> float:
        """How much slower (> 1) or faster the machine ran at the last speed check applied (:meth:`with_speed`)
        than when the training data were measured; 1 without one."""
        return float(self.speed.get("factor", 1.0)) if self.speed else 1.0

    def with_speed(self, factor: Any, **record: Any) -> LatencyPredictor:
        """A copy at the machine's speed now: ``factor`` is a :class:`~hwnas.hw.speed.SpeedCheck` from
        :func:`hwnas.predict.speed_check` (its record is kept, and its size term if it has one) or a number, the
        time now / time in training. Calibrated costs (kernels, data movement, overhead) are multiplied by the
        factor; whole-model predictions (:func:`hwnas.predict_latency`) by the size term's factor at the model's
        predicted time instead, when the check kept one (:meth:`at_model_speed`)."""
        return copy_at_speed(self, factor, record, PredictorError)

    def at_model_speed(self, total_ms: Any) -> Any:
        """Whole-model totals computed with :attr:`speed_factor` (a number or an array), at the speed check's
        factor for their size instead (:func:`hwnas.hw.speed.at_model_speed`); unchanged without a size term."""
        return at_model_speed(total_ms, self.speed)

    def space_context(self, graph: Any, kernels: list) -> float:
        """The context of a model space: the mean weight bytes of 16 random subnets (seeded)."""
        from hwnas.hw.kernels import active_kernels
        from hwnas.predict.features import model_weight_bytes

        rng = np.random.default_rng(0)
        totals = []
        for _ in range(16):
            sample = {lab: c.values[int(rng.integers(len(c.values)))] for lab, c in graph.choices.items()}
            totals.append(model_weight_bytes([sig for _, sig in active_kernels(kernels, graph, sample)]))
        return float(np.mean(totals))

    @property
    def overhead_ms(self) -> float:
        """The fixed per-model time (session run, input/output handling) of the calibration, times
        :attr:`speed_factor`; never negative (a negative fit is the overlap of kernels profiled in context)."""
        return (self.speed_factor * self._rest_factor() * self.family_factor("overhead")
                * max(0.0, float(self.calibration.get("overhead_ms", 0.0))))

    def movement_ms(self, copy_elements: Any, nodes: Any) -> Any:
        """Calibrated ms of a model's data movement (elements copied by Concat/Transpose/Split/..., and the
        number of movement nodes); works on numbers and on LArrays of them."""
        c = self.calibration
        # a negative fitted coefficient (overlap, see hwnas.predict.train.fit_calibration) never subtracts time
        return self.speed_factor * self._rest_factor() * self.family_factor("movement") * (
            max(0.0, c.get("per_copied_melement_ms", 0.0)) * copy_elements / 1e6
            + max(0.0, c.get("per_movement_node_ms", 0.0)) * nodes)

    def graph_extra_costs(self, graph: Any) -> list[tuple[Any, Any]]:
        """``(op, ms)`` of the data-movement ops of a traced graph (for the cost-table engine)."""
        from hwnas.predict.movement import movement_ops

        return [(op, self.movement_ms(copied, node)) for op, copied, node in movement_ops(graph)]

    def model_ms(self, signatures: list[str], copy_elements: float = 0.0, movement_nodes: float = 0.0) -> float:
        """Predicted end-to-end ms of a model that runs these kernels (and moves this much data)."""
        from hwnas.predict.features import model_weight_bytes

        kernels = float(np.sum(self.kernel_costs_ms(signatures, model_weight_bytes(signatures)))) if signatures \
            else 0.0
        return kernels + float(self.movement_ms(copy_elements, movement_nodes)) + self.overhead_ms

    def summary(self) -> str:
        tr, val = self.metadata.get("training", {}), self.metadata.get("validation", {})
        adapted = ""
        if self.adapted:
            src = self.adapted.get("adapted_from", {})
            adapted = (f"; adapted from {src.get('device', '?')} ({src.get('cpu_model', '?')}) with {src.get('n', '?')} "
                       f"models measured here, factors {src.get('factors', {})}, LOO error "
                       f"{100 * float(src.get('cv_rms', float('nan'))):.1f}%")
        return (f"latency predictor for {self.device.name}: {tr.get('kernel_measurements', '?')} kernel measurements "
                f"from {tr.get('models', '?')} models ({tr.get('minutes', float('nan')):.1f} min); regressors "
                f"{getattr(self.kernels, 'choice_', {})}; validation {val}{adapted}")

    # ------------------------------------------------------------------ files
    def save(self, path: str | os.PathLike) -> Path:
        """Write the predictor (skops payload + ``hwnas.json``) atomically, and its training data
        (``<file>.data.json``, which speed checks and resumed training read) next to it when it has some."""
        import skops.io as sio

        path = Path(path)
        training_data = training_data_path(self.path) if self.path is not None else None
        payload = sio.dumps(self.kernels)
        with zipfile.ZipFile(io.BytesIO(payload)) as z:
            members = {n: z.read(n) for n in z.namelist()}
        meta = {"format": FORMAT, "version": VERSION, "device": dict(self.device.__dict__),
                "fingerprint": self.metadata.get("fingerprint") or fingerprint(self.device),
                "calibration": self.calibration, "libraries": _versions(),
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                **{k: v for k, v in self.metadata.items() if k not in ("fingerprint", "libraries", "created", "format",
                                                                      "version", "device", "calibration", "sha256")}}
        meta["device"]["provider_options"] = [list(p) for p in self.device.provider_options]
        for key in ("training", "validation"):
            meta.setdefault(key, {})
        meta = json.loads(json.dumps(meta, default=float))
        meta["sha256"] = _digest(members, meta)
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
            for name, data in members.items():
                z.writestr(name, data)
            z.writestr(META, json.dumps(meta, indent=2))
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(buf.getvalue())
        os.replace(tmp, path)
        if (training_data is not None and training_data.is_file()
                and training_data.resolve() != training_data_path(path).resolve()):
            atomic_write_text(training_data_path(path), training_data.read_text(encoding="utf-8"))
        self.metadata, self.path = meta, path
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | Device | None = None,
             check_fingerprint: bool = True) -> LatencyPredictor:
        """Read and check a predictor file (see the module docstring for what is checked).

        Args:
            path: the ``.skops`` file, or the name of a shipped predictor (its device, ``"cpu-ort-1t"``).
            device: if given, the predictor must be for this device (same name and settings).
            check_fingerprint: warn when the file was trained on another machine or runtime.

        Raises:
            PredictorError: not a predictor file, changed after it was written, incomplete metadata, another
                device, or a type outside :data:`TRUSTED_TYPES` (nothing from the file is executed).
            FileNotFoundError: no such file.
        """
        import skops.io as sio

        path = resolve_predictor(path)
        if not path.is_file():
            raise FileNotFoundError(f"latency predictor {str(path)!r} does not exist; train one with "
                                    "`python benchmarks/train_predictor.py --device <name>` or "
                                    "hwnas.predict.train(device, path=...).")
        fix = "Train it again with hwnas.predict.train, or restore it from version control."
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
                if META not in names or "schema.json" not in names:
                    raise PredictorError(f"{str(path)!r} is a zip but not an hwnas latency predictor (expected members "
                                         f"{META!r} and 'schema.json', got {sorted(names)[:6]}). {fix}")
                meta = json.loads(z.read(META))
                members = {n: z.read(n) for n in names if n != META}
        except (zipfile.BadZipFile, OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
            raise PredictorError(f"{str(path)!r} is not an hwnas latency predictor (expected a skops zip with "
                                 f"{META!r}; reading it failed: {e}). It was not loaded. {fix}") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise PredictorError(f"{str(path)!r}: metadata format is {meta.get('format') if isinstance(meta, dict) else meta!r}, "
                                 f"expected {FORMAT!r}. {fix}")
        if meta.get("version") != VERSION:
            raise PredictorError(f"{str(path)!r} has predictor format version {meta.get('version')!r}; this hwnas "
                                 f"reads version {VERSION}. {fix}")
        if meta.get("sha256") != _digest(members, meta):
            raise PredictorError(f"{str(path)!r} was changed after it was written (its SHA-256 digest does not match "
                                 f"its content), so it is refused and nothing in it was loaded. {fix}")
        missing = [k for k in ("device", "fingerprint", "training", "validation", "libraries", "calibration")
                   if k not in meta]
        if missing or "kernel_measurements" not in meta.get("training", {}):
            raise PredictorError(f"{str(path)!r}: metadata lacks {missing or ['training.kernel_measurements']} "
                                 f"(expected device, fingerprint, training set size, validation error, library "
                                 f"versions and calibration). {fix}")
        check_metadata(meta, path, PredictorError)
        try:
            fields = dict(meta["device"])
            fields["provider_options"] = tuple(tuple(p) for p in fields.get("provider_options", ()))
            dev = Device(**fields)
        except (TypeError, ValueError) as e:
            raise PredictorError(f"{str(path)!r}: the device in its metadata is malformed ({e}). {fix}") from None
        _check_adapted(meta.get("adapted"), path, fix)
        _check_family_calibration(meta.get("family_calibration"), path, fix)
        if device is not None:
            want = get_device(device)
            if {k: v for k, v in want.__dict__.items() if k != "description"} != \
                    {k: v for k, v in dev.__dict__.items() if k != "description"}:
                raise PredictorError(
                    f"{str(path)!r} predicts latency on device {dev.name!r}, not on {want.name!r} (the requested one): "
                    f"{device_difference(dev, want)}. Use the predictor of {want.name!r} (name {want.name!r}) or "
                    f"train one: python benchmarks/train_predictor.py --device {want.name}")
        if check_fingerprint and not meta["fingerprint"]:
            warn_fingerprint(f"latency predictor {shipped_name(path) or str(path)!r} has no machine fingerprint (its "
                             "\"fingerprint\" is empty), so hwnas cannot tell which machine and runtime it was "
                             "trained on; its predictions may not hold here. Train one here: python "
                             f"benchmarks/train_predictor.py --device {dev.name}")
        elif check_fingerprint:
            diffs = fingerprint_matches(meta["fingerprint"], fingerprint(dev))
            if diffs:
                warn_fingerprint(f"latency predictor {shipped_name(path) or str(path)!r} was trained on another "
                                 f"machine or runtime: {'; '.join(diffs)}. Its predictions may not hold here; adapt it "
                                 f"to this machine (about 2 minutes): {adapt_command(path)}")
        import sklearn

        trained_with = meta["libraries"].get("scikit-learn")
        if trained_with != sklearn.__version__:
            warnings.warn(f"latency predictor {str(path)!r} was saved with scikit-learn {trained_with}, this is "
                          f"{sklearn.__version__}; if it misbehaves, train it again.", UserWarning, stacklevel=2)
        payload = io.BytesIO()
        with zipfile.ZipFile(payload, "w") as z:
            for name, data in members.items():
                z.writestr(name, data)
        try:
            found = _schema_types(json.loads(members["schema.json"]))
            found |= set(sio.get_untrusted_types(data=payload.getvalue()))
        except Exception as e:  # skops raises several types on malformed schemas
            raise PredictorError(f"{str(path)!r}: its skops payload is malformed ({type(e).__name__}: {e}); it was "
                                 f"not loaded. {fix}") from None
        untrusted = sorted(found - set(TRUSTED_TYPES))
        if untrusted:
            raise PredictorError(f"{str(path)!r} contains types outside hwnas's trusted list: {untrusted}. It was "
                                 f"refused and nothing in it was built or run. Files written by LatencyPredictor.save "
                                 f"hold only the {len(TRUSTED_TYPES)} types of hwnas.predict.TRUSTED_TYPES. {fix}")
        try:
            est = sio.loads(payload.getvalue(), trusted=TRUSTED_TYPES)
        except Exception as e:
            raise PredictorError(f"{str(path)!r}: its payload could not be rebuilt ({type(e).__name__}: {e}). {fix}") \
                from None
        if not isinstance(est, KernelLatencyPredictor) or not hasattr(est, "models_"):
            raise PredictorError(f"{str(path)!r} holds a {type(est).__name__}, expected a fitted "
                                 f"KernelLatencyPredictor. {fix}")
        check_trees(est, path, PredictorError)
        check_estimator(est, path, PredictorError)
        calibration = {k: float(v) for k, v in meta["calibration"].items()
                       if isinstance(v, (int, float)) and not isinstance(v, bool)}
        return cls(est, dev, calibration, meta, path)


def _check_family_calibration(record: Any, path: Path, fix: str) -> None:
    """Refuse a malformed ``family_calibration`` record (factors finite and non-negative)."""
    if not record:
        return

    def ok(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and bool(np.isfinite(v)) and v >= 0

    fams = record.get("factors") if isinstance(record, dict) else None
    if not (isinstance(fams, dict) and all(isinstance(k, str) and ok(v) for k, v in fams.items())
            and ok(record.get("rest"))):
        raise PredictorError(f"{str(path)!r} has a malformed \"family_calibration\" record (expected {{\"factors\": "
                             f"{{family: factor >= 0}}, \"rest\": factor >= 0, ...}} from hwnas.predict.train), got "
                             f"{str(record)[:200]}. {fix}")


def _check_adapted(record: Any, path: Path, fix: str) -> None:
    """Refuse a malformed ``adapted`` record (factors must be finite and non-negative, one per known family)."""
    if record is None:
        return
    fams = record.get("families") if isinstance(record, dict) else None

    def ok(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) and v >= 0

    if not (isinstance(fams, dict) and set(fams) <= set(ADAPT_FAMILIES) and all(ok(v) for v in fams.values())
            and ok(record.get("overhead")) and isinstance(record.get("adapted_from"), dict)):
        raise PredictorError(f"{str(path)!r} has a malformed \"adapted\" record (expected {{\"families\": {{family: "
                             f"factor >= 0}} over {ADAPT_FAMILIES}, \"overhead\": factor >= 0, \"adapted_from\": "
                             f"{{...}}}} from hwnas adapt), got {str(record)[:200]}. Adapt the source predictor again. "
                             f"{fix}")


def _schema_types(node: Any) -> set[str]:
    """Every ``module.Class`` a skops schema would build (walking all nested nodes)."""
    out: set[str] = set()
    if isinstance(node, dict):
        if "__class__" in node and "__module__" in node:
            out.add(f"{node['__module__']}.{node['__class__']}")
        for v in node.values():
            out |= _schema_types(v)
    elif isinstance(node, list):
        for v in node:
            out |= _schema_types(v)
    return out


def load_predictor(path: str | os.PathLike | None = None, device: str | Device | None = None,
                   check_fingerprint: bool = True) -> LatencyPredictor:
    """Load a predictor by file or name (its device: ``"cpu-ort-1t"``), by default the shipped one of ``device``."""
    if path is None:
        if device is None:
            raise ValueError("load_predictor needs a path or a device (e.g. device='cpu-ort-1t' for the shipped "
                             "predictor of that device).")
        path = default_predictor_path(device)
    return LatencyPredictor.load(path, device=device, check_fingerprint=check_fingerprint)
