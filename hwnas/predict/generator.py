"""Random training models: small whole CNNs whose kernels span what real CNNs run.

A latency predictor must learn kernel times *in context* (a kernel alone pays layout conversions that a
whole model pays once, see ``../shared/LATENCY_NOTES.md``), so it trains on kernels harvested from the ONNX
Runtime profile of whole models. This module draws those models. A *config* is a plain JSON-able dict::

    {"input": [1, C, H, W], "style": "mobile",
     "blocks": [["conv", cin, cout, k, s, act, bn], ["mbconv", cin, mid, cout, k, s, act, se, gate], ...],
     "head": {"pool": "avg" | "mean" | "flatten", "fcs": [n, ...], "act": "relu"}}

Each model is a *segment* of a network: it starts at an image (half of them) or at a random resolution (128 down
to 5, on both the 224 and 160 ladders) with a random width, runs 4 to 12 blocks of one style (MobileNet/EfficientNet inverted residuals
with optional squeeze-excite, ResNet basic/bottleneck blocks, plain VGG-like convolutions and pools, grouped
convolutions, ShuffleNet units, SqueezeNet fire modules, and a few wide dense convolutions with channel counts
near VGG's and ResNet's stages at their resolutions, about 64 at 224 and 512 at 28), and ends in a classifier
head like real models do. Sizes are drawn log-uniformly and models are kept under ``max_macs`` (plain and wide
ones under a multiple of it: the largest convolutions only occur in large models) so that measuring one takes
seconds.
The blocks are the zoo's own layers (:mod:`hwnas.zoo`), so the fusions ONNX Runtime applies are the same.

Example:
    >>> import numpy as np
    >>> from hwnas.predict.generator import random_config, build_model
    >>> cfg = random_config(np.random.default_rng(0))
    >>> model = build_model(cfg)
    >>> sorted(cfg) == ["blocks", "head", "input", "macs", "style"]
    True
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import nn

from hwnas.predict import gen_blocks as gb
from hwnas.zoo._layers import ConvNormAct, InvertedResidual, init_cnn_weights_, make_divisible
from hwnas.zoo.misc import Fire
from hwnas.zoo.resnet import BasicBlock, Bottleneck
from hwnas.zoo.shufflenet import ShuffleUnit

__all__ = ["TOKEN_STYLES", "STYLES", "STYLE_WEIGHTS", "STYLE_CYCLE", "random_config", "build_model", "config_input"]

STYLES = ("mobile", "resnet", "plain", "grouped", "shuffle", "fire", "wide", "vit", "seq", "hybrid", "convnext",
          "dense", "segroup")
#: Styles whose models start from or end in tokens ``(B, N, C)`` (a hybrid may too, after a patch embedding).
TOKEN_STYLES = ("vit", "seq")
#: How often ``random_config(style=None)`` draws each style. Inverted residuals count three times: the networks
#: a NAS predicts are mostly MobileNet-like, and their kernels (NCHWc depthwise convolutions of kernel 5 and 7 at
#: stride 2, squeeze-excite with hard activations, 14 and 7 pixel stages) were the rarest in 63 training
#: models drawn uniformly (7 stride-2 depthwise convolutions of kernel 5 or 7 in the blocked layout).
#: Transformers (ViT/DeiT-like ``vit``, BERT/GPT-like ``seq`` on token inputs), hybrids (convolutions, then
#: MobileViT blocks or tokens), ConvNeXt, DenseNet-like concatenations and RegNetY-like grouped convolutions with
#: squeeze-excite gating were added for models users run that random CNNs did not cover.
STYLE_WEIGHTS = {"mobile": 2.0, "resnet": 1.0, "plain": 0.7, "grouped": 0.7, "shuffle": 0.7, "fire": 0.5,
                 "wide": 0.7, "vit": 2.0, "seq": 1.5, "hybrid": 1.2, "convnext": 1.0, "dense": 1.0, "segroup": 1.0}
#: The initial spread of :func:`hwnas.predict.train.train` cycles through this order.
STYLE_CYCLE = ("mobile", "vit", "resnet", "seq", "hybrid", "convnext", "mobile", "vit", "dense", "segroup", "plain",
               "seq", "grouped", "vit", "shuffle", "hybrid", "wide", "fire", "mobile", "vit", "seq", "convnext",
               "dense", "segroup")
RES_LADDER = (224, 192, 160, 128, 112, 96, 80, 64, 56, 48, 40, 32, 28, 24, 20, 16, 14, 12, 10, 8, 7, 5)
ACTS = {"relu": partial(nn.ReLU, inplace=True), "relu6": partial(nn.ReLU6, inplace=True), "hardswish": nn.Hardswish,
        "silu": nn.SiLU, "none": None}
GATES = {"sigmoid": nn.Sigmoid, "hardsigmoid": nn.Hardsigmoid}


def _logu(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(max(hi, lo)))))


def _ch(rng: np.random.Generator, lo: float, hi: float, div: int = 8) -> int:
    return max(div, make_divisible(_logu(rng, lo, hi), div))


def _out(r: int, s: int) -> int:
    return (r + s - 1) // s if s > 1 else r


class _Builder:
    """Appends blocks to a config while tracking the feature map and an estimate of the multiply-adds."""

    def __init__(self, rng: np.random.Generator, c: int, r: int, div: int = 8):
        self.rng, self.c, self.r, self.macs, self.blocks, self.div = rng, c, r, 0, [], div

    def conv_macs(self, cin: int, cout: int, k: int, s: int, g: int = 1) -> int:
        return _out(self.r, s) ** 2 * cout * (cin // g) * k * k

    def add(self, block: list, macs: int, cout: int, s: int) -> None:
        self.blocks.append(block)
        self.macs += macs
        self.c, self.r = cout, _out(self.r, s)

    def stride(self, p: float = 0.25) -> int:
        return 2 if self.r >= 10 and self.rng.random() < p else 1

    def width(self, s: int, cap: int = 1024) -> int:
        grow = _logu(self.rng, 1.0, 2.0) if s == 2 else _logu(self.rng, 0.7, 1.5)
        return int(min(cap, max(8, make_divisible(self.c * grow, self.div))))


def _mobile(b: _Builder, n: int) -> None:
    act = str(b.rng.choice(["relu", "relu6", "hardswish", "silu"]))
    se_p = float(b.rng.choice([0.0, 0.5, 1.0, 1.0]))
    # MobileNetV3 gates with hardsigmoid after relu blocks too; EfficientNet with sigmoid after silu
    gate = "hardsigmoid" if act == "hardswish" or (act == "relu" and b.rng.random() < 0.5) else "sigmoid"
    for _ in range(n):
        s = b.stride(0.4)  # real networks halve the resolution every 2-4 blocks
        cout = b.width(s, 640) if s == 2 or b.rng.random() < 0.3 else b.c
        e = float(b.rng.choice([1, 3, 4, 6]))
        mid = make_divisible(b.c * e, b.div)
        k = int(b.rng.choice([3, 5, 7]))
        se = make_divisible(mid / 4, b.div) if b.rng.random() < se_p else 0
        macs = (b.r ** 2 * b.c * mid if mid != b.c else 0) + b.conv_macs(mid, mid, k, s, mid) + \
            _out(b.r, s) ** 2 * mid * cout + 2 * mid * se
        b.add(["mbconv", b.c, mid, cout, k, s, act, se, gate], macs, cout, s)


def _resnet(b: _Builder, n: int) -> None:
    kind = str(b.rng.choice(["basic", "bottleneck"]))
    for _ in range(n):
        s = b.stride()
        if kind == "basic":
            w = b.width(s, 512) if s == 2 or b.rng.random() < 0.3 else b.c
            macs = b.conv_macs(b.c, w, 3, s) + _out(b.r, s) ** 2 * w * w * 9 + \
                (_out(b.r, s) ** 2 * b.c * w if s == 2 or w != b.c else 0)
            b.add(["basic", b.c, w, s], macs, w, s)
        else:
            w = _ch(b.rng, 16, 512, b.div)
            r2 = _out(b.r, s)
            macs = b.r ** 2 * b.c * w + r2 ** 2 * w * w * 9 + r2 ** 2 * w * 4 * w + \
                (r2 ** 2 * b.c * 4 * w if s == 2 or 4 * w != b.c else 0)
            b.add(["bottleneck", b.c, w, s], macs, 4 * w, s)


def _plain(b: _Builder, n: int) -> None:
    bn = bool(b.rng.random() < 0.5)
    act = str(b.rng.choice(["relu", "relu", "relu6", "hardswish", "silu", "none"]))
    for _ in range(n):
        if b.r >= 4 and b.rng.random() < 0.2:
            kind = str(b.rng.choice(["maxpool", "avgpool"]))
            k = int(b.rng.choice([2, 3])) if b.r >= 6 else 2
            s = 2 if b.r >= 8 else 1
            p = (k - 1) // 2 if k == 3 else 0
            b.blocks.append([kind, k, s, p])
            b.r = (b.r + 2 * p - k) // s + 1
            continue
        k = int(b.rng.choice([1, 3, 3, 3, 5, 7]))
        s = b.stride(0.2)
        cout = b.width(s, 1024)
        b.add(["conv", b.c, cout, k, s, act, bn], b.conv_macs(b.c, cout, k, s), cout, s)


def _grouped(b: _Builder, n: int) -> None:
    for _ in range(n):
        s = b.stride()
        gw = int(b.rng.choice([4, 8, 16, 24, 32, 48, 64]))
        cout = max(gw, (b.width(s, 1024) // gw) * gw)
        if b.c % gw:
            b.add(["conv", b.c, cout, 1, 1, "relu", True], b.conv_macs(b.c, cout, 1, 1), cout, 1)
        g = b.c // gw
        cout = (cout // g) * g or g
        k = int(b.rng.choice([3, 3, 5]))
        b.add(["gconv", b.c, cout, k, s, g], b.conv_macs(b.c, cout, k, s, g), cout, s)


def _shuffle(b: _Builder, n: int) -> None:
    if b.c % 2:
        b.add(["conv", b.c, b.c + 1, 1, 1, "relu", True], b.conv_macs(b.c, b.c + 1, 1, 1), b.c + 1, 1)
    for _ in range(n):
        s = b.stride(0.3)
        cout = b.c if s == 1 else 2 * make_divisible(b.c * _logu(b.rng, 0.75, 1.0), b.div)
        half = cout // 2
        r2 = _out(b.r, s)
        macs = r2 ** 2 * (half * half * 2 + half * 9) + (b.conv_macs(b.c, b.c, 3, 2, b.c) + r2 ** 2 * b.c * half
                                                          if s == 2 else 0)
        b.add(["shuffle", b.c, cout, s], macs, cout, s)


def _fire(b: _Builder, n: int) -> None:
    for _ in range(n):
        if b.r >= 8 and b.rng.random() < 0.25:
            b.blocks.append(["maxpool", 3, 2, 0])
            b.r = (b.r - 3) // 2 + 1
            continue
        sq = _ch(b.rng, 8, 96, b.div)
        e = _ch(b.rng, 32, 384, b.div)
        macs = b.r ** 2 * (b.c * sq + sq * e + sq * e * 9)
        b.add(["fire", b.c, sq, e, e], macs, 2 * e, 1)


def _wide(b: _Builder, n: int) -> None:
    """Few dense convolutions at VGG's and ResNet's widths: channels x resolution near 64 x 224 (1.8 GMACs for
    one 3x3 layer), the compute-bound regime where a convolution runs at the machine's peak rate."""
    for _ in range(min(n, 5)):
        k = int(b.rng.choice([3, 3, 3, 1]))
        s = 2 if b.r >= 14 and b.rng.random() < 0.25 else 1
        cout = _ch(b.rng, max(16.0, 0.3 * 14336 / b.r), min(512.0, 2 * 14336 / b.r), b.div)
        b.add(["conv", b.c, cout, k, s, "relu", True], b.conv_macs(b.c, cout, k, s), cout, s)


def _tblocks(b: _Builder, n: int, tokens: int, kinds: tuple[str, ...], post_p: float = 0.0,
             mask_p: float = 0.0) -> None:
    """``n`` transformer blocks on ``tokens`` tokens of width ``b.c``."""
    dim = b.c
    hd = int(b.rng.choice([d for d in (32, 64, 48) if dim % d == 0] or [dim]))
    ratio = float(b.rng.choice([2, 3, 4, 4]))
    act = str(b.rng.choice(["gelu", "gelu", "gelu", "gelu_tanh", "hardswish", "silu"]))
    kind = str(b.rng.choice(kinds))
    post = bool(b.rng.random() < post_p)
    mask = bool(kind != "sdpa" and b.rng.random() < mask_p)
    for _ in range(n):
        hidden = make_divisible(dim * ratio, 8)
        macs = tokens * dim * 4 * dim + 2 * tokens * tokens * dim + 2 * tokens * dim * hidden
        b.add(["tblock", dim, dim // hd, hidden, kind, act, post, tokens, mask], macs, dim, 1)


def _vit(b: _Builder, n: int) -> None:
    """ViT / DeiT: a patch embedding (49 to 256 tokens), 1-4 pre-norm blocks, a final LayerNorm."""
    patches = [p for p in (4, 7, 8, 12, 14, 16, 32) if b.r % p == 0 and 36 <= (b.r // p) ** 2 <= 256]
    p = int(b.rng.choice(patches))
    dim = int(b.rng.choice([64, 96, 128, 192, 192, 256, 320, 384]))
    cls = bool(b.rng.random() < 0.7)
    tokens = (b.r // p) ** 2 + int(cls)
    b.blocks.append(["patch", b.c, dim, p, b.r, cls, bool(b.rng.random() < 0.8)])
    b.macs += (b.r // p) ** 2 * dim * b.c * p * p
    b.c = dim
    _tblocks(b, min(n, int(b.rng.integers(1, 5))), tokens, ("sdpa", "explicit"))
    if b.rng.random() < 0.8:
        b.blocks.append(["lnorm", dim])


def _seq(b: _Builder, n: int) -> None:
    """BERT / GPT-like blocks on a ``(1, L, D)`` input: separate or fused q/k/v, post-norm, additive masks."""
    _tblocks(b, min(n, int(b.rng.integers(1, 4))), b.r, ("separate", "separate", "sdpa", "explicit"), 0.5, 0.5)


def _hybrid(b: _Builder, n: int) -> None:
    """MobileNet blocks down to 32-8 pixels, then MobileViT blocks or tokens with transformer blocks
    (EfficientFormer, LeViT-like)."""
    _mobile(b, int(b.rng.integers(2, 5)))
    while b.r > 32:
        _mobile(b, 1)
    if b.r % 2 == 0 and b.rng.random() < 0.5:
        dim = int(b.rng.choice([64, 96, 144, 192]))
        depth = int(b.rng.integers(1, 3))
        tokens = (b.r // 2) ** 2
        macs = 4 * depth * (tokens * dim * 8 * dim + 2 * tokens * tokens * dim) + b.r ** 2 * b.c * (9 * b.c + dim)
        b.add(["mvit", b.c, dim, depth, dim // 32], macs, b.c, 1)
        return
    tokens = b.r * b.r
    b.blocks.append(["patch", b.c, b.c, 1, b.r, False, False])
    _tblocks(b, int(b.rng.integers(1, 3)), tokens, ("sdpa", "explicit"))
    b.blocks.append(["lnorm", b.c])


def _convnext(b: _Builder, n: int) -> None:
    """ConvNeXt: a patchify stem, blocks of a depthwise 7x7 and a channels-last MLP, LayerNorm downsampling."""
    c = _ch(b.rng, 24, 96, 8)
    b.add(["down", b.c, c, 4, False], b.conv_macs(b.c, c, 4, 4), c, 4)
    for _ in range(min(n, 8)):
        if b.r >= 8 and b.rng.random() < 0.3:
            c2 = min(768, 2 * b.c)
            b.add(["down", b.c, c2, 2, True], b.conv_macs(b.c, c2, 2, 2), c2, 2)
        b.add(["cnx", b.c, 4], b.r ** 2 * b.c * (49 + 8 * b.c), b.c, 1)


def _dense(b: _Builder, n: int) -> None:
    """DenseNet: dense blocks (concatenations of every earlier output) and 1x1 + average-pool transitions."""
    for _ in range(int(b.rng.integers(1, 3))):
        growth = int(b.rng.choice([12, 16, 24, 32]))
        layers = int(b.rng.integers(3, 9))
        macs = sum(b.r ** 2 * ((b.c + j * growth) * 4 * growth + 36 * growth * growth) for j in range(layers))
        b.add(["dense", b.c, layers, growth], macs, b.c + layers * growth, 1)
        if b.r >= 8:
            c = make_divisible(b.c // 2, b.div)
            b.add(["conv", b.c, c, 1, 1, "relu", True], b.conv_macs(b.c, c, 1, 1), c, 1)
            b.blocks.append(["avgpool", 2, 2, 0])
            b.r //= 2


def _segroup(b: _Builder, n: int) -> None:
    """RegNetY / ResNeXt blocks: grouped 3x3 convolutions of 8-64 channels per group, squeeze-excite gating."""
    gw = int(b.rng.choice([8, 16, 24, 32, 48, 64]))
    for _ in range(min(n, 8)):
        s = b.stride(0.3)
        cout = max(gw, (b.width(s, 768) // gw) * gw)
        se = make_divisible(b.c / 4, 8) if b.rng.random() < 0.7 else 0
        macs = b.r ** 2 * b.c * cout + b.conv_macs(cout, cout, 3, s, cout // gw) + _out(b.r, s) ** 2 * cout * cout
        b.add(["segroup", b.c, cout, s, gw, se], macs, cout, s)


_STYLE_FNS = {"mobile": _mobile, "resnet": _resnet, "plain": _plain, "grouped": _grouped, "shuffle": _shuffle,
              "fire": _fire, "wide": _wide, "vit": _vit, "seq": _seq, "hybrid": _hybrid, "convnext": _convnext,
              "dense": _dense, "segroup": _segroup}


_STYLE_P = np.array([STYLE_WEIGHTS[s] for s in STYLES]) / sum(STYLE_WEIGHTS.values())


def random_config(rng: np.random.Generator, style: str | None = None, max_macs: float = 2.5e9,
                  max_tries: int = 500, min_macs: float = 5e6) -> dict[str, Any]:
    """Draw one training model's config (see the module docstring).

    Args:
        rng: the seeded generator to draw from.
        style: one of :data:`STYLES`, or ``None`` for a random one (drawn with :data:`STYLE_WEIGHTS`).
        max_macs: redraw models estimated above this many multiply-adds (keeps measuring fast).
        min_macs: redraw models below this many (their kernels are too short to time well).
        max_tries: give up (``RuntimeError``) after this many redraws.
    """
    if style is not None and style not in STYLES:
        raise ValueError(f"unknown training-model style {style!r}; expected one of {STYLES}.")
    for _ in range(max_tries):
        st = style or str(rng.choice(STYLES, p=_STYLE_P))
        div = int(rng.choice([8, 8, 8, 8, 8, 2]))  # real widths are not all multiples of the 8-float block
        stem = (bool(rng.random() < 0.5) or st == "hybrid") and st not in ("wide", "vit", "seq", "convnext")
        if st in ("vit", "convnext"):
            r = int(rng.choice([96, 112, 128, 160, 192, 224] if st == "vit" else [96, 128, 160, 192, 224]))
            c_in = 3
        elif st == "seq":  # tokens: (1, L, D)
            r = int(rng.choice([49, 64, 96, 128, 197, 256]))
            c_in = int(rng.choice([64, 128, 192, 256, 384, 512]))
        elif st == "wide":  # a stage of VGG or ResNet: 16-64 channels at 224 ... 256-512 at 14
            r = int(rng.choice([224, 112, 56, 28, 14, 160, 80, 40]))
            c_in = _ch(rng, max(16.0, 0.3 * 14336 / r), min(512.0, 14336 / r), div)
        elif stem:
            r = int(rng.choice([224, 192, 160, 128, 96]))
            c_in = 3
        else:
            r = int(rng.choice(RES_LADDER[3:]))
            c_in = _ch(rng, 8, min(1024, 24 * 224 / r), div)
        b = _Builder(rng, c_in, r, div)
        if stem:
            k = int(rng.choice([3, 3, 5, 7]))
            cout = _ch(rng, 8, 128, div)
            act = str(rng.choice(["relu", "relu6", "hardswish", "silu"]))
            s0 = 1 if st == "plain" and rng.random() < 0.4 else 2  # VGG-like nets convolve at full resolution
            b.add(["conv", 3, cout, k, s0, act, True], b.conv_macs(3, cout, k, s0), cout, s0)
            if st in ("resnet", "fire") and rng.random() < 0.6:
                b.blocks.append(["maxpool", 3, 2, 1])
                b.r = (b.r - 1) // 2 + 1
        if stem and st == "hybrid":
            r = int(rng.choice([128, 160, 192, 224, 256]))
        _STYLE_FNS[st](b, int(rng.integers(4, 13)))
        head: dict[str, Any] = {"pool": str(rng.choice(["avg", "avg", "mean"])), "fcs": [],
                                "act": str(rng.choice(["relu", "relu", "hardswish", "silu", "relu6"]))}
        if st == "seq" or any(bl[0] == "patch" for bl in b.blocks):  # ends in tokens
            head["pool"] = str(rng.choice(["tokens", "cls"]))
            n = _ch(rng, 10, 1000, 2)
            head["fcs"] = [n]
            b.macs += b.c * n
            if min_macs <= b.macs <= max_macs:
                shape = [1, r, c_in] if st == "seq" else [1, 3, r, r]
                return {"input": shape, "style": st, "blocks": b.blocks, "head": head, "macs": int(b.macs)}
            continue
        if b.r <= 8 and b.r * b.r * b.c >= 1024 and rng.random() < 0.25:
            # a classifier on the flattened feature map (VGG, AlexNet): large, memory-bound GEMVs
            head["pool"] = "flatten"
            head["hw"] = b.r * b.r
            feats = b.r * b.r * b.c
            for _ in range(int(rng.choice([1, 2, 3]))):
                n = _ch(rng, 256, 4096, 8)
                head["fcs"].append(n)
                b.macs += feats * n
                feats = n
        elif rng.random() < 0.4:
            head["conv"] = _ch(rng, 64, 1280)
            head["conv_act"] = str(rng.choice(["relu", "relu6", "hardswish", "silu"]))
            b.macs += b.r ** 2 * b.c * head["conv"]
        feats = head.get("conv", b.c)
        for _ in range(int(rng.choice([1, 1, 2, 2])) if head["pool"] != "flatten" else 0):
            n = _ch(rng, 10, 4096, 2)
            head["fcs"].append(n)
            b.macs += feats * n
            feats = n
        limit = max_macs * {"plain": 3, "wide": 6}.get(st, 1)  # they reach the large convolutions VGG runs
        if min_macs <= b.macs <= limit and b.r >= 1:
            return {"input": [1, c_in, r, r], "style": st, "blocks": b.blocks, "head": head, "macs": int(b.macs)}
    raise RuntimeError(f"random_config: no {style or 'random'} model between min_macs={min_macs:.3g} and "
                       f"max_macs={max_macs:.3g} in {max_tries} draws; widen the range.")


class _Head(nn.Module):
    def __init__(self, cin: int, head: dict[str, Any]):
        super().__init__()
        self.conv = ConvNormAct(cin, head["conv"], 1, act=ACTS[head["conv_act"]]) if "conv" in head else None
        self.mean = head["pool"] == "mean"
        self.flatten = head["pool"] == "flatten"
        self.tokens = head["pool"] if head["pool"] in ("tokens", "cls") else ""
        self.pool = nn.AdaptiveAvgPool2d(1)
        layers: list[nn.Module] = []
        feats = head.get("conv", cin) * (head.get("hw", 1) if self.flatten else 1)
        for i, n in enumerate(head["fcs"]):
            layers.append(nn.Linear(feats, n))
            if i < len(head["fcs"]) - 1:
                layers.append(ACTS[head.get("act", "relu")]())
            feats = n
        self.fcs = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.conv is not None:
            x = self.conv(x)
        if self.tokens:
            x = x.mean(1) if self.tokens == "tokens" else x[:, 0]
        elif self.flatten:
            x = torch.flatten(x, 1)
        else:
            x = x.mean((2, 3)) if self.mean else torch.flatten(self.pool(x), 1)
        return self.fcs(x)


def _block(spec: list) -> nn.Module:
    kind, *a = spec
    if kind == "conv":
        cin, cout, k, s, act, bn = a
        if bn:
            return ConvNormAct(cin, cout, k, stride=s, act=ACTS[act])
        layers = [nn.Conv2d(cin, cout, k, s, (k - 1) // 2)]
        return nn.Sequential(*layers, ACTS[act]()) if ACTS[act] is not None else layers[0]
    if kind == "gconv":
        cin, cout, k, s, g = a
        return ConvNormAct(cin, cout, k, stride=s, groups=g)
    if kind == "mbconv":
        cin, mid, cout, k, s, act, se, gate = a
        return InvertedResidual(cin, mid, cout, k, s, act=ACTS[act], se_channels=se or None, se_gate=GATES[gate])
    if kind == "basic":
        return BasicBlock(*a)
    if kind == "bottleneck":
        return Bottleneck(*a)
    if kind == "shuffle":
        return ShuffleUnit(*a)
    if kind == "fire":
        return Fire(*a)
    if kind == "patch":
        return gb.PatchEmbed(*a)
    if kind == "tblock":
        dim, heads, hidden, attn, act, post, tokens, mask = a
        return gb.TransformerBlock(dim, heads, hidden, attn, act, post, tokens, mask)
    if kind == "lnorm":
        return nn.LayerNorm(a[0])
    if kind == "mvit":
        return gb.MobileViTBlock(*a)
    if kind == "cnx":
        return gb.ConvNeXtBlock(*a)
    if kind == "down":
        return gb.Downsample(*a)
    if kind == "dense":
        return gb.DenseBlock(*a)
    if kind == "segroup":
        return gb.SEGroupBlock(*a)
    if kind == "maxpool":
        k, s, p = a
        return nn.MaxPool2d(k, s, p)
    if kind == "avgpool":
        k, s, p = a
        return nn.AvgPool2d(k, s, p)
    raise ValueError(f"unknown block {kind!r} in a training-model config; expected conv, gconv, mbconv, basic, "
                     "bottleneck, shuffle, fire, maxpool or avgpool.")


def _out_channels(spec: list, c: int) -> int:
    kind, *a = spec
    return {"conv": lambda: a[1], "gconv": lambda: a[1], "mbconv": lambda: a[2], "basic": lambda: a[1],
            "bottleneck": lambda: 4 * a[1], "shuffle": lambda: a[1], "fire": lambda: a[2] + a[3],
            "patch": lambda: a[1], "tblock": lambda: a[0], "down": lambda: a[1], "dense": lambda: a[0] + a[1] * a[2],
            "segroup": lambda: a[1]}.get(kind, lambda: c)()


def build_model(config: dict[str, Any], weights: bool = True) -> nn.Module:
    """The ``nn.Module`` of a config, in eval mode (Kaiming-initialised, no denormals; ``weights=False`` builds
    it on the meta device, enough for tracing)."""
    ctx = torch.device("meta") if not weights else torch.device("cpu")
    with ctx:
        layers = [_block(s) for s in config["blocks"]]
        c = config["input"][1]
        for s in config["blocks"]:
            c = _out_channels(s, c)
        model = nn.Sequential(*layers, _Head(c, config["head"]))
    if weights:
        init_cnn_weights_(model)
    return model.eval()


def config_input(config: dict[str, Any]) -> torch.Tensor:
    """A random input of the config's shape."""
    return torch.randn(*config["input"])
