"""Checks of what a predictor file and its training data hold, before any of it predicts.

A predictor file's SHA-256 digest has no key: anyone can edit the file and compute the digest again. So
:meth:`~hwnas.predict.predictor.LatencyPredictor.load` checks the content itself, after skops has built only
trusted types (:data:`~hwnas.predict.predictor.TRUSTED_TYPES`):

- :func:`check_trees`: every decision tree's node arrays are in range and the tree is acyclic (each child's index
  is greater than its node's; scikit-learn follows the indices unchecked, so a node that points to itself makes
  a prediction loop for ever), and its thresholds and leaf values are finite;
- :func:`check_estimator`: the fitted numbers of the linear models (scaler, ridge), the clipping ranges, the
  physical model and the context are finite, of the right type;
- :func:`check_metadata`: the calibration and the training-set figures of ``hwnas.json``;
- :func:`check_training_data`: ``<predictor>.data.json`` (the measured training models: times finite and
  non-negative, counts ints, configs objects).

Each failure names the file, the key path, what was expected and what was found, and how to get a good file.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["check_trees", "check_estimator", "check_metadata", "check_training_data", "DATA_FIX"]

FIX = "Train it again with hwnas.predict.train, or restore it from version control."
DATA_FIX = ("Delete it to train from scratch (hwnas.predict.train), or restore it from version control (the shipped "
            "one is hwnas/data/predictors/<device>.skops.data.json).")


def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def _fail(error: type[Exception], path: Any, key: str, expected: str, got: Any, fix: str = FIX) -> Exception:
    return error(f"{str(path)!r} is malformed at {key}: expected {expected}, got {_short(got)}. {fix}")


def _finite(x: Any) -> bool:
    try:
        return bool(np.all(np.isfinite(np.asarray(x, dtype=float))))
    except (TypeError, ValueError):
        return False


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_)) \
        and math.isfinite(float(v))


def check_trees(est: Any, path: Any, error: type[Exception]) -> None:
    """Refuse trees whose node arrays point outside themselves or back up the tree (a cycle), or whose thresholds
    or leaf values are not finite."""
    specs = [*est.models_.values(), *est.spread_.values(), est.fallback_]
    for spec in specs:
        for part in (spec.get("base"), spec.get("model")):
            trees = getattr(part, "estimators_", None)
            if trees is None:
                continue
            for k, t in enumerate(np.ravel(np.asarray(trees, dtype=object))):
                tree = getattr(t, "tree_", None)
                if tree is None:
                    raise error(f"{str(path)!r}: a tree ensemble holds a {type(t).__name__}, not a fitted decision "
                                f"tree; refused. {FIX}")
                n, nf = tree.node_count, t.n_features_in_
                left, right, feat = tree.children_left, tree.children_right, tree.feature
                where = f"tree {k} of a {type(part).__name__}"
                if not (len(left) == n and len(right) == n and len(feat) == n and n >= 1):
                    raise error(f"{str(path)!r}: {where} has node arrays of another length than its {n} nodes "
                                f"(corrupted or crafted file); refused before any prediction. {FIX}")
                leaf = left == -1
                inner = np.flatnonzero(~leaf)
                bad = inner[(left[inner] <= inner) | (right[inner] <= inner) | (left[inner] >= n)
                            | (right[inner] >= n) | (feat[inner] < 0) | (feat[inner] >= nf)]
                bad = np.concatenate([np.flatnonzero((left == -1) != (right == -1)), bad])
                if len(bad):
                    i = int(bad[0])
                    raise error(f"{str(path)!r}: {where}, node {i}: children {int(left[i])} and {int(right[i])}, "
                                f"feature {int(feat[i])}; expected children after the node itself (> {i}, < {n}: a "
                                f"tree has no cycle) and a feature below {nf}. A corrupted or crafted file; refused "
                                f"before any prediction (it could loop for ever). {FIX}")
                if not (_finite(tree.threshold[inner]) and _finite(tree.value)):
                    raise error(f"{str(path)!r}: {where} has a threshold or leaf value that is NaN or infinite; "
                                f"refused. {FIX}")


def check_estimator(est: Any, path: Any, error: type[Exception]) -> None:
    """The fitted numbers of a :class:`~hwnas.predict.estimator.KernelLatencyPredictor` besides its trees."""
    for name, spec in [*((f"models_[{f!r}]", s) for f, s in est.models_.items()), ("fallback_", est.fallback_)]:
        if not isinstance(spec, dict) or "model" not in spec:
            raise _fail(error, path, name, "a {\"kind\", \"base\", \"model\"} record", spec)
        for part in (spec.get("base"), spec.get("model")):
            steps = getattr(part, "named_steps", None)
            if steps is None:
                continue
            for step_name, step in steps.items():
                for attr in ("mean_", "scale_", "var_", "coef_", "intercept_"):
                    v = getattr(step, attr, None)
                    if v is not None and not _finite(v):
                        raise _fail(error, path, f"{name}.{step_name}.{attr}", "finite numbers", v)
                scale = getattr(step, "scale_", None)
                if scale is not None and np.any(np.asarray(scale, dtype=float) <= 0):
                    raise _fail(error, path, f"{name}.{step_name}.scale_", "positive scales", scale)
    for fam, rng in getattr(est, "range_", {}).items():
        if not (isinstance(rng, (tuple, list)) and len(rng) == 2 and all(_is_number(v) for v in rng)
                and rng[0] <= rng[1]):
            raise _fail(error, path, f"range_[{fam!r}]", "(low, high) finite numbers with low <= high", rng)
    for fam, m in (getattr(est, "physical_", None) or {}).items():
        coef = m.get("coef") if isinstance(m, dict) else None
        if coef is None or not _finite(coef) or np.any(np.asarray(coef, dtype=float) < 0) \
                or len(np.ravel(coef)) != len(m.get("terms", ())):
            raise _fail(error, path, f"physical_[{fam!r}]", "non-negative finite coefficients, one per term", m)
    if hasattr(est, "context_default_") and not _is_number(est.context_default_):
        raise _fail(error, path, "context_default_", "a finite number (weight bytes)", est.context_default_)
    w = getattr(est, "physical_weight", 0.0)
    if not (_is_number(w) and 0.0 <= float(w) <= 1.0):
        raise _fail(error, path, "physical_weight", "a number between 0 and 1", w)
    block = getattr(est, "nchwc_block", 16)
    if not (isinstance(block, (int, np.integer)) and not isinstance(block, bool) and block >= 1):
        raise _fail(error, path, "nchwc_block", "a positive int", block)


def check_metadata(meta: dict[str, Any], path: Any, error: type[Exception]) -> None:
    """The calibration and training figures of a predictor's ``hwnas.json``."""
    cal = meta.get("calibration")
    if not isinstance(cal, dict):
        raise _fail(error, path, "hwnas.json calibration", "an object {\"scale\", \"per_kernel_ms\", ...}", cal)
    for key, required, low in (("scale", True, 0.0), ("per_kernel_ms", True, None), ("overhead_ms", True, None),
                               ("per_copied_melement_ms", False, None), ("per_movement_node_ms", False, None)):
        if key not in cal and not required:
            continue
        v = cal.get(key)
        if not _is_number(v) or (low is not None and float(v) <= low):
            expected = "a finite number" + (f" > {low:g}" if low is not None else "")
            raise _fail(error, path, f"hwnas.json calibration.{key}", expected, "missing" if key not in cal else v)
    for key in ("training", "validation", "libraries", "fingerprint"):
        if not isinstance(meta.get(key), dict):
            raise _fail(error, path, f"hwnas.json {key}", "an object", meta.get(key))
    tr = meta["training"]
    n = tr.get("kernel_measurements")
    if not (isinstance(n, int) and not isinstance(n, bool) and n >= 0):
        raise _fail(error, path, "hwnas.json training.kernel_measurements", "an int >= 0", n)
    for key in ("models", "minutes", "budget"):
        if key in tr and not (_is_number(tr[key]) and float(tr[key]) >= 0):
            raise _fail(error, path, f"hwnas.json training.{key}", "a finite number >= 0", tr[key])


def check_training_data(data: dict[str, Any], path: Any, error: type[Exception]) -> None:
    """A predictor's training data (``<predictor>.data.json``, :class:`hwnas.predict.train.TrainingData`)."""
    def fail(key: str, expected: str, got: Any) -> Exception:
        return _fail(error, path, key, expected, got, DATA_FIX)

    models = data.get("models")
    if not isinstance(models, list):
        raise fail("models", "a list of measured training models", models)
    for key in ("seconds", "wall_seconds"):
        if key in data and not (_is_number(data[key]) and float(data[key]) >= 0):
            raise fail(key, "a finite number >= 0", data[key])
    for key, kind in (("settings", dict), ("fingerprint", dict)):
        if key in data and not isinstance(data[key], kind):
            raise fail(key, "an object", data[key])
    ref = data.get("reference")
    if ref is not None and not (isinstance(ref, dict) and _positive(ref.get("ms"))):
        raise fail("reference", "null or {\"config\": {...}, \"ms\": a finite number > 0}", ref)
    for i, m in enumerate(models):
        key = f"models[{i}]"
        if not isinstance(m, dict):
            raise fail(key, "an object (a measured model)", m)
        if not isinstance(m.get("config"), dict):
            raise fail(f"{key}.config", "the model's generator config (an object)", m.get("config"))
        kernels = m.get("kernels")
        if not isinstance(kernels, list):
            raise fail(f"{key}.kernels", "a list of [signature, ms, nodes]", kernels)
        for j, k in enumerate(kernels):
            if not (isinstance(k, list) and len(k) == 3 and isinstance(k[0], str) and _is_number(k[1])
                    and float(k[1]) >= 0 and isinstance(k[2], int) and not isinstance(k[2], bool) and k[2] >= 0):
                raise fail(f"{key}.kernels[{j}]", "[signature string, finite ms >= 0, node count int >= 0]", k)
        for field in ("end_to_end_ms", "end_to_end_single_ms", "profile_end_to_end_ms"):
            if m.get(field) is not None and not _positive(m[field]):
                raise fail(f"{key}.{field}", "a finite number > 0 (ms)", m[field])
        for field in ("sum_nodes_ms", "lead_ms", "seconds"):
            if field in m and not (_is_number(m[field]) and float(m[field]) >= 0):
                raise fail(f"{key}.{field}", "a finite number >= 0", m[field])
        if "profile_speed" in m and not _positive(m["profile_speed"]):
            raise fail(f"{key}.profile_speed", "a finite number > 0", m["profile_speed"])
        if "nodes" in m and not (isinstance(m["nodes"], int) and not isinstance(m["nodes"], bool) and m["nodes"] >= 0):
            raise fail(f"{key}.nodes", "an int >= 0", m["nodes"])
        mv = m.get("movement", {})
        if not isinstance(mv, dict) or not all(_is_number(v) and float(v) >= 0 for v in mv.values()):
            raise fail(f"{key}.movement", "an object of finite numbers >= 0", mv)
        for field in ("interleaved",):
            if field in m and not isinstance(m[field], bool):
                raise fail(f"{key}.{field}", "true or false", m[field])
        meas = m.get("end_to_end_measurements_ms", [])
        if not isinstance(meas, list) or not all(_positive(v) for v in meas):
            raise fail(f"{key}.end_to_end_measurements_ms", "a list of finite numbers > 0", meas)


def _positive(v: Any) -> bool:
    return _is_number(v) and float(v) > 0
