"""``KernelLatencyPredictor``: a scikit-learn regressor from kernel signatures to milliseconds.

One regressor per kernel family (:mod:`hwnas.predict.features`), chosen among ``candidates`` by grouped
cross-validation on the training data (groups are the measured models, so a kernel is never validated by
its twin from the same model):

- ``"linear"``: ridge regression on standardised log features (extrapolates, smooth);
- ``"forest"``: a random forest on the log features (captures cache and blocking effects, cannot extrapolate);
- ``"boosting"``: gradient-boosted trees;
- ``"linear+forest"``: ridge first, then a random forest on its residuals (extrapolates like the ridge,
  corrects locally like the forest).

Every model predicts ``log2(ms / work)`` (time per unit of work, :func:`~hwnas.predict.features.work_log2`,
so that trees extrapolate to larger kernels as constant efficiency; clipped to the training range widened by a
factor 2), optionally with the model's weight bytes as a *context* feature (a kernel of a large model reads
its weights from memory, one of a small model from cache). The selection metric is the time-weighted RMS percentage error (a kernel
counts in proportion to its time, as it does in a model's total). A random forest on each family also
gives the spread of its trees, :meth:`KernelLatencyPredictor.predict_std`, which adaptive sampling uses to
find where the predictor is least certain. Families with fewer than ``min_family_size`` kernels in the
training data, and families it never saw, fall back to a ridge model on family-independent size features
(reported by :meth:`KernelLatencyPredictor.predict_details`).

With ``physical_weight`` > 0 the chosen regressor's prediction is blended (geometric mean, this weight on the
physical side) with a physical model of the family, non-negative work terms fitted by least squares
(:mod:`hwnas.predict.physical`): the trees bring what the training kernels show, the physical model keeps
kernels unlike most training kernels (MobileNet's depthwise convolutions) at a plausible rate.

The estimator follows scikit-learn's contract: ``__init__`` only stores parameters, ``fit`` learns the
attributes ending in ``_``, ``predict`` checks its input and raises ``ValueError`` saying what it expected.

Example:
    >>> from hwnas.predict import KernelLatencyPredictor
    >>> sigs = [f"relu|in=1x{c}x8x8|out=1x{c}x8x8" for c in (8, 16, 32, 64, 128, 256)]
    >>> est = KernelLatencyPredictor(candidates=("linear",), min_family_size=3).fit(sigs, [c * 1e-4 for c in
    ...                                                                                   (8, 16, 32, 64, 128, 256)])
    >>> round(float(est.predict(["relu|in=1x512x8x8|out=1x512x8x8"])[0]), 4)
    0.0512
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, RegressorMixin, clone
from sklearn.ensemble import GradientBoostingRegressor, RandomForestRegressor
from sklearn.linear_model import RidgeCV
from sklearn.metrics import root_mean_squared_error
from sklearn.model_selection import GroupKFold, KFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from hwnas.hw.kernels import KernelSignature
from hwnas.predict.features import FAMILIES, LEGACY_COUNTS, feature_matrix, generic_features, work_log2
from hwnas.predict.physical import fit_physical, predict_physical

__all__ = ["KernelLatencyPredictor", "CANDIDATES", "weighted_rmspe"]

CANDIDATES = ("linear", "forest", "boosting", "linear+forest")


def weighted_rmspe(pred_ms: np.ndarray, true_ms: np.ndarray) -> float:
    """RMS of the relative error, each kernel weighted by its true time."""
    pred_ms, true_ms = np.asarray(pred_ms, float), np.asarray(true_ms, float)
    return float(root_mean_squared_error(np.ones_like(true_ms), pred_ms / true_ms, sample_weight=true_ms))


def _linear() -> Pipeline:
    return Pipeline([("scale", StandardScaler()), ("ridge", RidgeCV(alphas=np.logspace(-4, 3, 15)))])


class KernelLatencyPredictor(RegressorMixin, BaseEstimator):
    """Predict a kernel's in-context latency (ms) from its signature.

    Args:
        candidates: regressors to choose from per family (see the module docstring), or a dict family ->
            regressor to skip the choice (families missing from it use ``"linear+forest"``).
        cv: folds of the grouped cross-validation that chooses each family's regressor.
        n_estimators: trees of the forests (boosting uses twice as many stages).
        min_family_size: below this many training kernels a family uses the family-independent fallback.
        work_baseline: regress ``log2(ms / work)`` (time per unit of work, see
            :func:`~hwnas.predict.features.work_log2`) instead of ``log2(ms)``.
        random_state: seed of every randomised component.
        nchwc_block: the machine's NCHWc channel block (:func:`~hwnas.predict.features.nchwc_block`), which
            decides the layout regime and channel padding features of convolutions.
        physical_weight: share (0 to 1) of the physical model in the geometric blend with each family's
            regressor (:mod:`hwnas.predict.physical`); 0 keeps the regressor alone.

    Attributes:
        models_: family -> ``{"kind", "base", "model"}``: the fitted regressor(s) of the family.
        spread_: family -> random forest whose tree spread is the uncertainty (see :meth:`predict_std`).
        fallback_: the family-independent ridge model.
        cv_errors_: family -> {candidate: time-weighted RMSPE of its out-of-fold predictions}.
        choice_: family -> the candidate chosen.
        n_samples_: family -> training kernels.
        range_: family -> the range of ``log2(ms / work)`` in training, widened by 1 (a factor 2) each side;
            predictions are clipped to it, so that no regressor extrapolates wildly.
        ops_seen_: the kernel op names in the training data.
        physical_: family -> ``{"terms", "coef"}`` of the physical model (empty when ``physical_weight`` is 0).
    """

    #: What a predictor saved before ``physical_weight`` existed means (no physical model); ``get_params`` and
    #: ``clone`` of such a loaded file read this class default.
    physical_weight = 0.0

    def __init__(self, candidates: Sequence[str] = CANDIDATES, cv: int = 5, n_estimators: int = 150,
                 min_family_size: int = 12, work_baseline: bool = True, random_state: int = 0,
                 nchwc_block: int = 16, physical_weight: float = 0.5):
        self.candidates = candidates
        self.physical_weight = physical_weight
        self.nchwc_block = nchwc_block
        self.work_baseline = work_baseline
        self.cv = cv
        self.n_estimators = n_estimators
        self.min_family_size = min_family_size
        self.random_state = random_state

    # ------------------------------------------------------------------ building blocks
    def _make(self, kind: str) -> dict[str, Any]:
        rs, n = self.random_state, self.n_estimators
        forest = RandomForestRegressor(n_estimators=n, min_samples_leaf=2, max_features=0.5, random_state=rs,
                                       n_jobs=1)
        if kind == "linear":
            return {"kind": kind, "base": None, "model": _linear()}
        if kind == "forest":
            return {"kind": kind, "base": None, "model": forest}
        if kind == "boosting":
            return {"kind": kind, "base": None, "model": GradientBoostingRegressor(
                n_estimators=2 * n, learning_rate=0.05, max_depth=3, subsample=0.8, random_state=rs)}
        if kind == "linear+forest":
            return {"kind": kind, "base": _linear(), "model": forest}
        raise ValueError(f"KernelLatencyPredictor: unknown candidate regressor {kind!r}; expected some of "
                         f"{list(CANDIDATES)}.")

    @staticmethod
    def _fit_one(spec: dict[str, Any], x: np.ndarray, t: np.ndarray) -> dict[str, Any]:
        spec = {"kind": spec["kind"], "base": clone(spec["base"]) if spec["base"] is not None else None,
                "model": clone(spec["model"])}
        resid = t
        if spec["base"] is not None:
            spec["base"].fit(x, t)
            resid = t - spec["base"].predict(x)
        spec["model"].fit(x, resid)
        return spec

    @staticmethod
    def _predict_one(spec: dict[str, Any], x: np.ndarray) -> np.ndarray:
        out = spec["model"].predict(x)
        if spec["base"] is not None:
            out = out + spec["base"].predict(x)
        return out

    def _family_candidates(self, fam: str) -> tuple[str, ...]:
        if isinstance(self.candidates, dict):
            return (self.candidates.get(fam, "linear+forest"),)
        return tuple(self.candidates)

    def _splits(self, n: int, groups: np.ndarray | None):
        if groups is not None and len(np.unique(groups)) >= 3:
            k = min(self.cv, len(np.unique(groups)))
            return list(GroupKFold(n_splits=k).split(np.zeros(n), groups=groups))
        return list(KFold(n_splits=min(self.cv, n), shuffle=True, random_state=self.random_state)
                    .split(np.zeros(n)))

    # ------------------------------------------------------------------ the estimator contract
    def fit(self, X: Sequence[str | KernelSignature], y: Sequence[float], groups: Sequence[Any] | None = None,
            context: Any = None) -> KernelLatencyPredictor:
        """Learn per-family regressors from signatures ``X`` and their measured times ``y`` (ms).

        Args:
            X: kernel signatures (strings as written by ``str(KernelSignature)``, or KernelSignatures).
            y: measured milliseconds, one per signature, all > 0.
            groups: optional group per kernel (e.g. the measured model it came from) for the grouped
                cross-validation that chooses each family's regressor.
            context: optional weight bytes of the model each kernel ran in
                (:func:`~hwnas.predict.features.model_weight_bytes`), a feature of every family: it tells whether
                the kernel's weights come from cache or from memory.
        """
        X = list(X)
        y = np.asarray(y, dtype=float)
        if len(X) != len(y):
            raise ValueError(f"KernelLatencyPredictor.fit: X has {len(X)} signatures but y has {len(y)} times; "
                             "give one measured time per signature.")
        if len(X) == 0:
            raise ValueError("KernelLatencyPredictor.fit: got no training kernels; measure some first "
                             "(hwnas.predict.train).")
        bad = np.flatnonzero(~np.isfinite(y) | (y <= 0))
        if len(bad):
            raise ValueError(f"KernelLatencyPredictor.fit: times must be finite and > 0 ms; got {y[bad[0]]!r} for "
                             f"{X[bad[0]]!r} ({len(bad)} such). Drop those kernels before fitting.")
        given = list(self.candidates.values()) if isinstance(self.candidates, dict) else list(self.candidates)
        unknown = [c for c in given if c not in CANDIDATES]
        if unknown or (not given and not isinstance(self.candidates, dict)):
            raise ValueError(f"KernelLatencyPredictor: candidates {self.candidates!r} must be a non-empty subset of "
                             f"{list(CANDIDATES)} (or a dict family -> one of them).")
        if not 0.0 <= float(self.physical_weight) <= 1.0:
            raise ValueError(f"KernelLatencyPredictor: physical_weight must be between 0 and 1 (the physical model's "
                             f"share of the blend), got {self.physical_weight!r}.")
        g = None if groups is None else np.asarray(groups)
        if g is not None and len(g) != len(X):
            raise ValueError(f"KernelLatencyPredictor.fit: groups has {len(g)} entries for {len(X)} signatures.")
        fams, index, feats = self._features(X, context, fit=True)
        t_all = np.log2(y)
        self.models_, self.spread_, self.cv_errors_, self.choice_, self.n_samples_ = {}, {}, {}, {}, {}
        self.range_ = {}
        self.ops_seen_ = sorted({str(s).split("|", 1)[0] for s in X})
        for fam in FAMILIES:
            if fam not in index:
                continue
            rows = index[fam]
            x, t = feats[fam], t_all[rows] - self._work(fam, feats[fam])
            self.n_samples_[fam] = len(rows)
            self.range_[fam] = (float(t.min()) - 1.0, float(t.max()) + 1.0)
            if len(rows) < self.min_family_size:
                continue
            kinds = self._family_candidates(fam)
            if len(kinds) == 1:
                self.cv_errors_[fam], self.choice_[fam] = {}, kinds[0]
                self.models_[fam] = self._fit_one(self._make(kinds[0]), x, t)
                self.spread_[fam] = self.models_[fam] if kinds[0] in ("forest", "linear+forest") else \
                    self._fit_one(self._make("forest"), x, t)
                continue
            gf = None if g is None else g[rows]
            splits = self._splits(len(rows), gf)
            errors = {}
            for kind in kinds:
                spec = self._make(kind)
                oof = np.empty(len(rows))
                for tr, te in splits:
                    oof[te] = self._predict_one(self._fit_one(spec, x[tr], t[tr]), x[te])
                w = self._work(fam, x)  # weighted by the kernel's own time, not by its time per unit of work
                errors[kind] = weighted_rmspe(2.0 ** (oof + w), 2.0 ** (t + w))
            best = min(errors, key=errors.get)
            self.cv_errors_[fam], self.choice_[fam] = errors, best
            self.models_[fam] = self._fit_one(self._make(best), x, t)
            self.spread_[fam] = self.models_[fam] if best in ("forest", "linear+forest") else \
                self._fit_one(self._make("forest"), x, t)
        gx = np.asarray([generic_features(s) for s in X])
        self.fallback_ = self._fit_one(self._make("linear"), gx, t_all - self._work("", gx))
        self.physical_ = {} if float(self.physical_weight) == 0.0 else \
            {f: m for f, m in fit_physical([str(s) for s in X], y, self.nchwc_block).items() if f in self.models_}
        return self

    def _work(self, family: str, x: np.ndarray) -> np.ndarray:
        return work_log2(family, x) if self.work_baseline else np.zeros(len(x))

    def _check(self, X: Any) -> list[str]:
        if not hasattr(self, "models_"):
            from sklearn.exceptions import NotFittedError

            raise NotFittedError("this KernelLatencyPredictor is not fitted yet; call fit(signatures, ms) or load "
                                 "a trained one with hwnas.predict.load_predictor(path).")
        if isinstance(X, (str, KernelSignature)):
            raise ValueError(f"KernelLatencyPredictor expects a list of signatures, got a single {type(X).__name__} "
                             f"{str(X)!r}; wrap it in a list.")
        return [str(s) for s in X]

    def _features(self, X: list, context: Any, fit: bool = False):
        fams, index, feats = feature_matrix(X, self.nchwc_block)
        if fit:
            self.feature_counts_ = {f: int(v.shape[1]) for f, v in feats.items()}
        # a predictor fitted with fewer features per family (an older hwnas) reads the prefix it knew
        counts = getattr(self, "feature_counts_", LEGACY_COUNTS)
        feats = {f: v[:, :counts.get(f, v.shape[1])] for f, v in feats.items()}
        if fit:
            self.uses_context_ = context is not None
            if context is not None:
                self.context_default_ = float(np.median(np.broadcast_to(np.asarray(context, float), (len(X),))))
        if getattr(self, "uses_context_", False):
            ctx = np.broadcast_to(np.asarray(self.context_default_ if context is None else context, float),
                                  (len(X),))
            if len(ctx) != len(X):
                raise ValueError(f"context has {len(ctx)} entries for {len(X)} signatures; give one per signature "
                                 "or a single number.")
            logc = np.log2(np.maximum(ctx, 1.0))
            feats = {f: np.hstack([v, logc[index[f]][:, None]]) for f, v in feats.items()}
        return fams, index, feats

    def predict_details(self, X: Sequence[str | KernelSignature], context: Any = None) -> pd.DataFrame:
        """Per signature: ``family``, ``model`` (the regressor used or ``"fallback"``), ``ms`` and ``std_log2``
        (tree spread of ``log2(ms)``; NaN for the fallback). ``context``: the model's weight bytes (a number, or
        one per signature); without it, the median context of the training data."""
        X = self._check(X)
        fams, index, feats = self._features(X, context)
        logms = np.full(len(X), np.nan)
        std = np.full(len(X), np.nan)
        used = np.array(["fallback"] * len(X), dtype=object)
        for fam, rows in index.items():
            if fam in self.models_:
                lo, hi = self.range_[fam]  # time per unit of work within a factor 2 of what training saw
                logms[rows] = np.clip(self._predict_one(self.models_[fam], feats[fam]), lo, hi) + \
                    self._work(fam, feats[fam])
                std[rows] = self._tree_std(self.spread_[fam], feats[fam])
                used[rows] = self.choice_[fam]
        physical = getattr(self, "physical_", {})  # files written before the physical model have none
        if physical:
            w = float(self.physical_weight)
            phys = np.log2(predict_physical(physical, X, self.nchwc_block))
            both = ~np.isnan(logms) & ~np.isnan(phys)
            logms[both] = (1.0 - w) * logms[both] + w * phys[both]
        rest = np.flatnonzero(np.isnan(logms))
        if len(rest):
            gx = np.asarray([generic_features(X[i]) for i in rest])
            logms[rest] = self._predict_one(self.fallback_, gx) + self._work("", gx)
        return pd.DataFrame({"signature": X, "family": fams, "model": used, "ms": 2.0 ** logms, "std_log2": std})

    @staticmethod
    def _tree_std(spec: dict[str, Any], x: np.ndarray) -> np.ndarray:
        per_tree = np.stack([tree.predict(x) for tree in spec["model"].estimators_])
        return per_tree.std(axis=0)

    def predict(self, X: Sequence[str | KernelSignature], context: Any = None) -> np.ndarray:
        """Predicted in-context milliseconds of each signature (``context``: see :meth:`predict_details`)."""
        return self.predict_details(X, context)["ms"].to_numpy()

    def predict_std(self, X: Sequence[str | KernelSignature], context: Any = None) -> np.ndarray:
        """Uncertainty of each prediction: the spread (std) of ``log2(ms)`` over the family forest's trees
        (NaN where the family-independent fallback predicts)."""
        return self.predict_details(X, context)["std_log2"].to_numpy()

    def score(self, X: Sequence[str | KernelSignature], y: Sequence[float], sample_weight: Any = None) -> float:
        """Negative time-weighted RMSPE (higher is better, as scikit-learn scorers expect)."""
        return -weighted_rmspe(self.predict(X), np.asarray(y, float))
