"""A physical (roofline-like) kernel model: time as a non-negative sum of work terms, per kernel family.

The tree regressors of :mod:`hwnas.predict.estimator` learn ``log2(ms / work)`` freely from the features, which
fits the training kernels closely but transfers poorly to networks whose kernels sit where the random
training models have few (MobileNet's NCHWc depthwise convolutions of kernel 5 and 7 at stride 2, its late
stages at 14 and 7 pixels): with 63 training models, the forests learned a stride-2 depthwise convolution
from a handful of mostly plain-layout ones, 10 times slower per multiply-add, and overpredicted MobileNetV2's
by 1.5x to 1.7x. This model has few parameters and physical signs instead:

    ms = sum_i coef_i * term_i,    coef_i >= 0

with, for a convolution, its multiply-adds (channel-padded to the NCHWc block, as the kernel computes them)
at a rate shared by all convolutions of the family plus an extra cost per multiply-add for each *regime*
(layout blocked or plain, pointwise or spatial, depthwise stride), the elements it reads and writes, its
weights, a fixed cost per kernel, and the elements of a fused activation pass, an expensive activation or a
residual add; for a product of two activations (``matmul``: attention), its multiply-adds (and those with a
transposed second operand apart), the elements it reads and writes and a cost per matrix of the batch; for the
other families, their elements (per op for elementwise and pooling kernels) and a fixed
cost. The activation pass: ONNX Runtime's convolutions apply a fused ReLU inside the kernel but any other
activation (ReLU6, exported as Clip, too) in a pass over the output. MobileNetV2 with ReLU6 ran 7-9% slower end
to end than the same network with ReLU here (three interleaved measurements; its convolutions 14% slower in
ORT's profile, about 0.09 ns per output element of a depthwise convolution), which a predictor without this
term put at the same time. A regime never
seen in training gets the shared rate only. The coefficients are fitted by non-negative least squares on the
relative error, each kernel weighted by ``sqrt(ms / mean ms)`` (between counting every kernel alike, which
fits the many tiny kernels of small models and misses the large ones by 10-20%, and weighting by time, which
does the opposite).

:class:`~hwnas.predict.estimator.KernelLatencyPredictor` blends it with each family's chosen regressor
(``physical_weight``, a geometric mean), see there.

Example:
    >>> from hwnas.predict.physical import physical_terms
    >>> fam, terms = physical_terms("conv|in=1x24x56x56|out=1x72x56x56|k=1x1|s=1x1|g=1|p=0x0|act=relu|add=0", 8)
    >>> fam, sorted(terms)[:3]
    ('conv', ['act', 'add', 'in'])
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.optimize import nnls

from hwnas.hw.kernels import KernelSignature
from hwnas.predict.features import (
    _dims,
    _matmul_mkn,
    _pad,
    _parse,
    _prod,
    family_of,
    kernel_flops,
    nchwc_conv,
)

__all__ = ["physical_terms", "fit_physical", "predict_physical", "HEAVY_ACTS", "IN_KERNEL_ACTS", "CONV_FAMILIES",
           "SHARED_TERMS", "WEIGHT_POWER"]

#: Fused activations that cost more than a compare (a transcendental or a multiply per element).
HEAVY_ACTS = ("sigmoid", "hardswish", "hardsigmoid", "tanh")
#: Fused activations that ONNX Runtime's convolutions apply in the kernel itself; every other one (Clip, i.e.
#: ReLU6, included) is a separate pass over the output (``act_pass``).
IN_KERNEL_ACTS = ("none", "relu")
#: Families fitted together (:func:`fit_physical`), sharing the coefficients of :data:`SHARED_TERMS`.
CONV_FAMILIES = ("conv", "dwconv", "gconv")
SHARED_TERMS = ("act", "act_pass")
#: Each kernel's weight in the fit is ``(ms / mean ms) ** WEIGHT_POWER`` (on top of the relative error).
WEIGHT_POWER = 0.5


def physical_terms(signature: str | KernelSignature, block: int = 16) -> tuple[str, dict[str, float]]:
    """``(family, {term: value})`` of one kernel signature (``block``: the machine's NCHWc block, see
    :func:`~hwnas.predict.features.nchwc_block`). Values are counts (multiply-adds, elements, 1)."""
    sig = _parse(signature)
    fam = family_of(sig)
    at = dict(sig.attrs)
    if sig.op == "conv":
        x, y = sig.inputs[0], sig.output
        nd = len(y) - 2
        k = _dims(at.get("k", 1), nd)
        s = _dims(at.get("s", 1), nd)[0]
        g = int(at.get("g", 1))
        cin, cout = x[1], y[1]
        blocked, plain_in = nchwc_conv(cin, cout, g, block) if nd == 2 else (False, False)
        pin = _pad(cin, block) if blocked and not plain_in and g != cin else 1.0
        pout = _pad(cout, block) if blocked else 1.0
        layout = "blocked" if blocked else "plain"
        if fam == "dwconv":
            regime = f"{layout}_s{s}"
        elif fam == "gconv":
            regime = layout
        else:
            regime = f"{layout}_{'pointwise' if _prod(k) == 1 else 'spatial'}{'_plain_input' if plain_in else ''}"
        macs = kernel_flops(sig) * pin * pout
        out = _prod(y) * pout
        act = str(at.get("act", "none"))
        return fam, {"mac": macs, f"mac_{regime}": macs, "in": _prod(x) * pin, "out": out,
                     "weights": float(cout * (cin // g) * _prod(k)), "one": 1.0,
                     "act": out * float(act in HEAVY_ACTS), "act_pass": out * float(act not in IN_KERNEL_ACTS),
                     "add": out * float(int(at.get("add", 0)) == 1)}
    if fam == "linear":
        x, y = sig.inputs[0], sig.output
        rows, kin, kout = _prod(x[:-1]), x[-1], y[-1]
        return fam, {"mac": float(rows * kin * kout), "weights": float(kin * kout), "io": float(rows * (kin + kout)),
                     "one": 1.0}
    if fam == "matmul":
        batch, m, k, n = _matmul_mkn(sig)
        io = float(sum(_prod(t) for t in sig.inputs) + _prod(sig.output))
        return fam, {"mac": float(batch * m * k * n), "io": io, "mats": float(batch), "one": 1.0,
                     "mac_tb": float(batch * m * k * n) * float(int(at.get("tb", 0)))}
    ins = float(sum(_prod(t) for t in sig.inputs)) if sig.inputs else 1.0
    out = float(_prod(sig.output))
    return fam, {f"in_{sig.op}": ins, "in": ins, "out": out, "one": 1.0}


def _matrix(term_dicts: Sequence[dict[str, float]], names: list[str]) -> np.ndarray:
    col = {n: i for i, n in enumerate(names)}
    x = np.zeros((len(term_dicts), len(names)))
    for r, terms in enumerate(term_dicts):
        for name, v in terms.items():
            if name in col:
                x[r, col[name]] = v
    return x


def fit_physical(signatures: Sequence[str], ms: np.ndarray, block: int = 16,
                 min_family_size: int = 3) -> dict[str, dict]:
    """Fit the coefficients of each family with at least ``min_family_size`` kernels.

    The convolution families (:data:`CONV_FAMILIES`) are fitted together, each with its own coefficients except
    for the :data:`SHARED_TERMS`: a fused activation's pass over the output is the same routine whichever
    convolution wrote it, and a family with few kernels of one activation (the depthwise convolutions with
    ReLU6 among random training models) borrows the estimate of the others.

    Returns:
        family -> ``{"terms": [term names], "coef": ndarray of ms per unit of each term}``, plain data (no
        estimator object), stored as it is in a predictor file.
    """
    ms = np.asarray(ms, float)
    fams, terms = zip(*[physical_terms(s, block) for s in signatures]) if len(signatures) else ((), ())
    fams = np.asarray(fams)
    present = [str(f) for f in sorted(set(fams)) if np.sum(fams == f) >= min_family_size]
    joint = [f for f in present if f in CONV_FAMILIES]
    groups = [[f] for f in present if f not in joint] + ([joint] if joint else [])
    out: dict[str, dict] = {}
    for group in groups:
        rows = np.flatnonzero(np.isin(fams, group))
        shared = len(group) > 1

        # a joint fit names each family's own terms "family:term"
        keyed = [{(f"{fams[r]}:{n}" if shared and n not in SHARED_TERMS else n): v for n, v in terms[r].items()}
                 for r in rows]
        names = sorted({n for k in keyed for n in k})
        x = _matrix(keyed, names)
        scale = x.max(axis=0)
        scale[scale <= 0] = 1.0
        t = ms[rows]
        # relative error, larger kernels count more (against their own family's mean)
        mean = {f: t[fams[rows] == f].mean() for f in group}
        w = (t / np.array([mean[f] for f in fams[rows]])) ** WEIGHT_POWER / t
        coef, _ = nnls((x / scale) * w[:, None], t * w)
        coef = coef / scale
        for fam in group:
            own = [i for i, n in enumerate(names) if not shared or n.startswith(f"{fam}:") or n in SHARED_TERMS]
            out[fam] = {"terms": [names[i].split(":", 1)[-1] for i in own], "coef": coef[own]}
    return out


def predict_physical(models: dict[str, dict], signatures: Sequence[str], block: int = 16) -> np.ndarray:
    """Milliseconds of each signature by :func:`fit_physical`'s coefficients; NaN for a family without them
    (and at least 1 ns, so that logarithms stay finite)."""
    out = np.full(len(signatures), np.nan)
    for i, s in enumerate(signatures):
        fam, terms = physical_terms(s, block)
        m = models.get(fam)
        if m is not None:
            out[i] = max(float((_matrix([terms], list(m["terms"])) @ np.asarray(m["coef"], float))[0]), 1e-6)
    return out
