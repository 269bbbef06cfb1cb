"""Kernel signatures -> numeric features, per kernel family.

A latency predictor does not see models, only kernel signatures (``str(KernelSignature)``, the LUT key, see
:mod:`hwnas.hw.kernels`). Each signature falls into one *family* that gets its own regressor:

============  ===================================================================================
``conv``      dense convolutions (groups = 1), any kernel, stride, padding, fused activation/add
``dwconv``    depthwise convolutions (groups = input channels)
``gconv``     other grouped convolutions
``linear``    fully connected layers (GEMM / GEMV against constant weights, any number of leading dims)
``matmul``    products of two activations (attention's ``Q K^T`` and ``A V``: batched 3-D / 4-D, broadcasting)
``pool``      max/average/adaptive pooling and spatial reductions (``mean``, ``sum``, ``amax``)
``eltwise``   everything else: elementwise arithmetic, unfused activations, normalisations (LayerNorm, also
              ORT's SkipLayerNormalization), softmax, GELU, ...
============  ===================================================================================

Features are pure functions of the signature and the CPU's NCHWc block (deterministic, no state), mostly
``log2`` of sizes (elements, multiply-adds, bytes, arithmetic intensity), plus flags (activation, fused add)
and the *layout regime* of a convolution: ONNX Runtime's CPU provider runs a convolution in its blocked NCHWc
layout (:func:`nchwc_conv`) only for some channel counts, and pads channels to its block (16 floats with
AVX-512, 8 with AVX2: :func:`nchwc_block`); other convolutions run in plain NCHW at a different speed. Times
are strongly multiplicative in these sizes, so the regressors work on ``log2(ms)``.

Example:
    >>> from hwnas.predict.features import FEATURES, featurize
    >>> fam, x = featurize("conv|in=1x24x56x56|out=1x72x56x56|k=1x1|s=1x1|g=1|p=0x0|act=relu|add=0")
    >>> fam, len(x) == len(FEATURES["conv"])
    ('conv', True)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from hwnas.hw.kernels import KernelSignature

__all__ = ["FAMILIES", "FEATURES", "LEGACY_COUNTS", "EXTRA_ELTWISE_OPS", "GENERIC_FEATURES", "family_of", "featurize", "feature_matrix", "generic_features",
           "kernel_flops", "weight_bytes", "model_weight_bytes", "work_log2", "nchwc_block", "nchwc_conv"]

FAMILIES = ("conv", "dwconv", "gconv", "linear", "matmul", "pool", "eltwise")

CONV_ACTS = ("none", "relu", "clip", "hardswish", "hardsigmoid", "sigmoid", "tanh", "leaky_relu")
POOL_OPS = ("max_pool", "avg_pool", "adaptive_avg_pool", "adaptive_max_pool", "mean", "sum", "amax")
ELTWISE_OPS = ("add", "sub", "mul", "div", "relu", "relu6", "clamp", "hardswish", "hardsigmoid", "sigmoid", "silu",
               "tanh", "gelu", "leaky_relu", "softmax", "layer_norm", "batch_norm", "matmul")
#: Elementwise-family ops with flags of their own added after ``op_other`` (transformers' kernels as ONNX Runtime
#: runs them); a predictor fitted before them reads the features up to ``op_other`` only (:data:`LEGACY_COUNTS`).
EXTRA_ELTWISE_OPS = ("skip_layer_norm", "erf", "where", "pow", "sqrt", "exp", "neg", "reciprocal", "equal",
                     "log_softmax", "upsample", "mish", "elu", "instance_norm", "group_norm", "cumsum")

_CONV = ["log_n", "log_cin", "log_cout", "log_hw_in", "log_hw_out", "log_k_area", "k", "stride", "log_groups",
         "log_cin_per_group", "log_cout_per_group", "log_macs", "log_in_elems", "log_out_elems", "log_weight_elems",
         "log_bytes", "log_intensity", "cin_pad", "cout_pad", "cin_is_3", "pointwise", "fused_add",
         *(f"act_{a}" for a in CONV_ACTS), "nchwc", "nchw_input", "log_w_out", "log_padded_macs"]
FEATURES: dict[str, list[str]] = {
    "conv": _CONV,
    "dwconv": _CONV,
    "gconv": _CONV,
    "linear": ["log_rows", "log_in_features", "log_out_features", "log_macs", "log_weight_elems", "log_bytes",
               "log_intensity", "in_pad8", "out_pad8", "act_relu"],
    "pool": ["log_channels", "log_hw_in", "log_hw_out", "log_in_elems", "log_out_elems", "log_window", "stride",
             "global", *(f"op_{o}" for o in POOL_OPS)],
    "matmul": ["log_batch", "log_m", "log_k", "log_n", "log_macs", "log_bytes", "log_intensity", "ta", "tb",
               "b_broadcast", "log_in_elems", "log_out_elems", "n_pad8", "k_pad8"],
    "eltwise": ["log_out_elems", "log_in_elems", "log_min_in_elems", "n_inputs", "broadcast", "log_last_dim",
                *(f"op_{o}" for o in ELTWISE_OPS), "op_other", *(f"op_{o}" for o in EXTRA_ELTWISE_OPS),
                "log_rows"],
}
#: Features per family of predictors fitted before the ``matmul`` family and the extra elementwise flags (a
#: prefix of today's vectors).
LEGACY_COUNTS = {"eltwise": 6 + len(ELTWISE_OPS) + 1}


def _log2(v: float) -> float:
    return math.log2(max(float(v), 1.0))


def _prod(dims: Sequence[int]) -> int:
    out = 1
    for d in dims:
        out *= int(d)
    return out


def _dims(value: object, n: int) -> tuple[int, ...]:
    """``"3x3"`` or ``3`` -> a tuple of ``n`` ints."""
    if isinstance(value, int):
        return (value,) * n
    parts = tuple(int(p) for p in str(value).split("x"))
    return parts if len(parts) == n else (parts + (parts[-1],) * n)[:n]


def _pad(c: int, block: int) -> float:
    """How much the CPU provider's channel blocks inflate ``c`` (1.0 when ``c`` is a multiple of ``block``)."""
    return (math.ceil(c / block) * block) / max(c, 1)


def nchwc_block(fingerprint: dict) -> int:
    """The float count of ONNX Runtime's NCHWc channel block on the machine of ``fingerprint``
    (:func:`hwnas.hw.device.fingerprint`): 16 with AVX-512, 8 with AVX2, else 1 (no blocked layout)."""
    flags = set(fingerprint.get("cpu_flags", ()))
    if "avx512f" in flags:
        return 16
    return 8 if "avx2" in flags or "avx" in flags else 1


def nchwc_conv(cin: int, cout: int, groups: int, block: int) -> tuple[bool, bool]:
    """``(blocked, plain_input)``: whether ONNX Runtime's CPU provider runs a 2-D convolution in its NCHWc
    layout, and whether it then reads a plain NCHW input (a first layer with fewer channels than a block).

    Observed with ONNX Runtime 1.32 on AVX-512 (block 16) and on AVX2 (block 8: the same rule held for all 21
    layers tried) by inspecting optimised graphs: a dense convolution
    is blocked when its input channels are a multiple of 4 or fewer than a block; a depthwise one when its
    channels are a multiple of 4; a grouped one when the channels per group (in and out) are multiples of the
    block. Output channels are padded to the block.
    """
    if block <= 1:
        return False, False
    if groups == 1:
        if cin < block:
            return True, True
        return cin % 4 == 0, False
    if groups == cin and cout % cin == 0:
        return cin % 4 == 0, False
    return (cin // groups) % block == 0 and (cout // groups) % block == 0, False


def _parse(signature: str | KernelSignature) -> KernelSignature:
    if isinstance(signature, KernelSignature):
        return signature
    try:
        return KernelSignature.parse(str(signature))
    except (ValueError, IndexError) as e:
        raise ValueError(f"cannot read kernel signature {signature!r}: expected the form "
                         f"'op|in=AxBxC[,...]|out=AxBxC|key=value...' written by str(KernelSignature) ({e}).") from None


def family_of(signature: str | KernelSignature) -> str:
    """The family (one of :data:`FAMILIES`) whose regressor predicts ``signature``."""
    sig = _parse(signature)
    if sig.op == "conv":
        g = int(dict(sig.attrs).get("g", 1))
        cin = sig.inputs[0][1] if sig.inputs and len(sig.inputs[0]) > 1 else 1
        if g == 1:
            return "conv"
        return "dwconv" if g == cin else "gconv"
    if sig.op == "linear":
        return "linear"
    if sig.op == "matmul":
        return "matmul"
    if sig.op in POOL_OPS:
        return "pool"
    return "eltwise"


def kernel_flops(signature: str | KernelSignature) -> int:
    """Multiply-adds of a convolution or linear kernel (0 for the other families)."""
    sig = _parse(signature)
    if sig.op == "conv":
        at = dict(sig.attrs)
        nd = len(sig.output) - 2
        g = int(at.get("g", 1))
        return _prod(sig.output) * (sig.inputs[0][1] // g) * _prod(_dims(at.get("k", 1), nd))
    if sig.op == "linear":
        return _prod(sig.output) * sig.inputs[0][-1]
    if sig.op == "matmul":
        return _prod(sig.output) * _matmul_mkn(sig)[2]
    return 0


def _matmul_mkn(sig: KernelSignature) -> tuple[int, int, int, int]:
    """``(batch, m, k, n)`` of a matmul signature (its operands as stored, with ``ta``/``tb`` transposes)."""
    at = dict(sig.attrs)
    a = list(sig.inputs[0])
    b = list(sig.inputs[1]) if len(sig.inputs) > 1 else [a[-1], sig.output[-1]]
    if int(at.get("ta", 0)) and len(a) >= 2:
        a[-1], a[-2] = a[-2], a[-1]
    if int(at.get("tb", 0)) and len(b) >= 2:
        b[-1], b[-2] = b[-2], b[-1]
    m = a[-2] if len(a) >= 2 else 1
    n = b[-1] if len(b) >= 2 else 1
    batch = _prod(sig.output) // max(m * n, 1)
    return batch, m, a[-1], n


def featurize(signature: str | KernelSignature, block: int = 16) -> tuple[str, list[float]]:
    """``(family, feature vector)`` of one signature, in the order of ``FEATURES[family]``; ``block`` is the
    machine's NCHWc block (:func:`nchwc_block`)."""
    sig = _parse(signature)
    fam = family_of(sig)
    at = dict(sig.attrs)
    if fam in ("conv", "dwconv", "gconv"):
        x, y = sig.inputs[0], sig.output
        nd = len(y) - 2
        k = _dims(at.get("k", 1), nd)
        s = _dims(at.get("s", 1), nd)
        g = int(at.get("g", 1))
        n, cin, cout = x[0], x[1], y[1]
        hw_in, hw_out = _prod(x[2:]), _prod(y[2:])
        macs = kernel_flops(sig)
        in_e, out_e, w_e = _prod(x), _prod(y), cout * (cin // g) * _prod(k)
        byts = 4 * (in_e + out_e + w_e)
        act = str(at.get("act", "none"))
        blocked, plain_in = nchwc_conv(cin, cout, g, block) if nd == 2 else (False, False)
        pin = _pad(cin, block) if blocked and not plain_in and g != cin else 1.0
        pout = _pad(cout, block) if blocked else 1.0
        return fam, [_log2(n), _log2(cin), _log2(cout), _log2(hw_in), _log2(hw_out), _log2(_prod(k)), float(k[0]),
                     float(s[0]), _log2(g), _log2(cin // g), _log2(cout // g), _log2(macs), _log2(in_e), _log2(out_e),
                     _log2(w_e), _log2(byts), _log2(macs) - _log2(byts), pin, pout, float(cin == 3),
                     float(_prod(k) == 1), float(int(at.get("add", 0)) == 1),
                     *(float(act == a) for a in CONV_ACTS), float(blocked), float(plain_in), _log2(y[-1]),
                     _log2(macs * pin * pout)]
    if fam == "linear":
        x, y = sig.inputs[0], sig.output
        rows, kin, kout = _prod(x[:-1]), x[-1], y[-1]
        macs = rows * kin * kout
        byts = 4 * (rows * kin + rows * kout + kin * kout)
        return fam, [_log2(rows), _log2(kin), _log2(kout), _log2(macs), _log2(kin * kout), _log2(byts),
                     _log2(macs) - _log2(byts), _pad(kin, 8), _pad(kout, 8), float(at.get("act") == "relu")]
    if fam == "pool":
        x, y = sig.inputs[0], sig.output
        c = x[1] if len(x) > 1 else 1
        hw_in, hw_out = _prod(x[2:]), _prod(y[2:]) if len(y) > 2 else 1
        nd = max(len(x) - 2, 1)
        window = _prod(_dims(at["kernel"], nd)) if "kernel" in at else max(hw_in // max(hw_out, 1), 1)
        stride = _dims(at["stride"], nd)[0] if "stride" in at else 1
        return fam, [_log2(c), _log2(hw_in), _log2(hw_out), _log2(_prod(x)), _log2(_prod(y)), _log2(window),
                     float(stride), float(hw_out == 1), *(float(sig.op == o) for o in POOL_OPS)]
    if fam == "matmul":
        batch, m, k, n = _matmul_mkn(sig)
        ins = [_prod(s) for s in sig.inputs]
        macs = batch * m * k * n
        byts = 4 * (sum(ins) + _prod(sig.output))
        b_batch = _prod(sig.inputs[1][:-2]) if len(sig.inputs) > 1 else 1
        return fam, [_log2(batch), _log2(m), _log2(k), _log2(n), _log2(macs), _log2(byts), _log2(macs) - _log2(byts),
                     float(int(at.get("ta", 0))), float(int(at.get("tb", 0))), float(b_batch < batch),
                     _log2(sum(ins)), _log2(_prod(sig.output)), _pad(n, 8), _pad(k, 8)]
    ins = [_prod(s) for s in sig.inputs] or [1]
    out = _prod(sig.output)
    last = sig.output[-1] if sig.output else 1
    return fam, [_log2(out), _log2(sum(ins)), _log2(min(ins)), float(len(sig.inputs)), float(min(ins) < out),
                 _log2(last), *(float(sig.op == o) for o in ELTWISE_OPS),
                 float(sig.op not in ELTWISE_OPS), *(float(sig.op == o) for o in EXTRA_ELTWISE_OPS),
                 _log2(out / max(last, 1))]


def weight_bytes(signature: str | KernelSignature) -> int:
    """Bytes of a convolution's or linear layer's weights (float32; 0 for the other kernels)."""
    sig = _parse(signature)
    if sig.op == "conv":
        at = dict(sig.attrs)
        nd = len(sig.output) - 2
        return 4 * sig.output[1] * (sig.inputs[0][1] // int(at.get("g", 1))) * _prod(_dims(at.get("k", 1), nd))
    if sig.op == "linear":
        return 4 * sig.inputs[0][-1] * sig.output[-1]
    return 0


def model_weight_bytes(signatures: Sequence[str | KernelSignature]) -> float:
    """A model's weight bytes from its kernels: the *context* feature (a kernel of a model whose weights do not
    fit in the caches reads its own weights from memory, a kernel of a small model from cache)."""
    return float(sum(weight_bytes(s) for s in signatures))


def work_log2(family: str, x: np.ndarray) -> np.ndarray:
    """``log2`` of a kernel's work (multiply-adds, or elements moved where larger), the baseline that the
    regressors predict the time *per unit of work* against, so that trees extrapolate to kernels larger than
    any measured as constant efficiency rather than as the largest time seen."""
    col = {name: i for i, name in enumerate(FEATURES[family] if family in FEATURES else GENERIC_FEATURES)}
    if "log_macs" in col:
        return np.maximum(x[:, col["log_macs"]], x[:, col["log_bytes"]] - 2.0)
    return np.maximum(x[:, col["log_out_elems"]], x[:, col["log_in_elems"]])


GENERIC_FEATURES = ["log_in_elems", "log_out_elems", "log_macs", "log_bytes", "n_inputs"]


def generic_features(signature: str | KernelSignature) -> list[float]:
    """Family-independent features (sizes only), for a family the training data did not cover."""
    sig = _parse(signature)
    ins = sum(_prod(s) for s in sig.inputs)
    out = _prod(sig.output)
    macs = kernel_flops(sig)
    return [_log2(ins), _log2(out), _log2(macs), _log2(4 * (ins + out)), float(len(sig.inputs))]


def feature_matrix(signatures: Sequence[str | KernelSignature], block: int = 16) -> tuple[
        list[str], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Featurize many signatures at once (``block``: the machine's NCHWc block, :func:`nchwc_block`).

    Returns:
        ``(family per signature, {family: row indices}, {family: feature matrix})``.
    """
    fams: list[str] = []
    rows: dict[str, list[list[float]]] = {}
    index: dict[str, list[int]] = {}
    for i, s in enumerate(signatures):
        fam, x = featurize(s, block)
        fams.append(fam)
        rows.setdefault(fam, []).append(x)
        index.setdefault(fam, []).append(i)
    return fams, {f: np.asarray(v, dtype=np.int64) for f, v in index.items()}, \
        {f: np.asarray(v, dtype=np.float64) for f, v in rows.items()}
