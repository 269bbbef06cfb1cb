"""Layers of the transformer, hybrid, concat-heavy and gated training models (:mod:`hwnas.predict.generator`).

Written the ways real code writes them, since ONNX Runtime fuses by pattern: timm's ViT attention (one ``qkv``
Linear, reshape/permute/unbind, ``F.scaled_dot_product_attention`` or an explicit ``q @ k^T`` softmax ``@ v``),
Hugging Face's BERT (separate q/k/v Linears, an additive mask, post-norm), GELU in its erf and tanh forms,
MobileViT's unfold-transformer-fold block, ConvNeXt's channels-last LayerNorm and MLP on 4-D tensors, DenseNet's
concatenations with pre-activation batch norm, and RegNetY's grouped convolutions with squeeze-excite gating.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["TokenAttention", "TransformerBlock", "PatchEmbed", "MobileViTBlock", "ConvNeXtBlock", "DenseBlock",
           "SEGroupBlock", "Downsample", "TOKEN_ACTS"]

TOKEN_ACTS = {"gelu": nn.GELU, "gelu_tanh": lambda: nn.GELU(approximate="tanh"), "hardswish": nn.Hardswish,
              "silu": nn.SiLU, "relu": nn.ReLU}


class TokenAttention(nn.Module):
    """Multi-head self-attention over ``(B, N, C)`` tokens; ``kind``: ``"sdpa"`` (timm), ``"explicit"`` (timm
    without fused attention), ``"separate"`` (BERT: three Linears; ``mask`` adds a learned ``(1, 1, 1, N)``
    additive mask as BERT's extended attention mask does)."""

    def __init__(self, dim: int, heads: int, kind: str = "sdpa", tokens: int = 0, mask: bool = False):
        super().__init__()
        self.h, self.kind, self.d = heads, kind, dim // heads
        if kind == "separate":
            self.q, self.k, self.v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        else:
            self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.mask = nn.Parameter(torch.zeros(1, 1, 1, tokens)) if mask and tokens else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        if self.kind == "separate":
            q, k, v = (t.view(b, n, self.h, self.d).permute(0, 2, 1, 3) for t in (self.q(x), self.k(x), self.v(x)))
        else:
            q, k, v = self.qkv(x).reshape(b, n, 3, self.h, self.d).permute(2, 0, 3, 1, 4).unbind(0)
        if self.kind == "sdpa" and self.mask is None:
            y = F.scaled_dot_product_attention(q, k, v)
        else:
            s = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.d)
            if self.mask is not None:
                s = s + self.mask
            y = torch.matmul(s.softmax(-1), v)
        return self.proj(y.transpose(1, 2).reshape(b, n, c))


class TransformerBlock(nn.Module):
    """Pre-norm (ViT) or post-norm (BERT) block: attention and a two-layer MLP, each with a residual."""

    def __init__(self, dim: int, heads: int, hidden: int, kind: str = "sdpa", act: str = "gelu",
                 post_norm: bool = False, tokens: int = 0, mask: bool = False):
        super().__init__()
        self.post = post_norm
        self.n1, self.attn = nn.LayerNorm(dim), TokenAttention(dim, heads, kind, tokens, mask)
        self.n2 = nn.LayerNorm(dim)
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), TOKEN_ACTS[act](), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.post:
            x = self.n1(x + self.attn(x))
            return self.n2(x + self.fc2(self.act(self.fc1(x))))
        x = x + self.attn(self.n1(x))
        return x + self.fc2(self.act(self.fc1(self.n2(x))))


class PatchEmbed(nn.Module):
    """Image -> tokens: a ``patch`` x ``patch`` convolution of stride ``patch``, flatten/transpose, an optional
    class token and an optional learned position embedding."""

    def __init__(self, cin: int, dim: int, patch: int, res: int, cls: bool, pos: bool):
        super().__init__()
        self.conv = nn.Conv2d(cin, dim, patch, patch)
        n = (res // patch) ** 2 + int(cls)
        self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.02) if cls else None
        self.pos = nn.Parameter(torch.randn(1, n, dim) * 0.02) if pos else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x).flatten(2).transpose(1, 2)
        if self.cls is not None:
            x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], 1)
        return x + self.pos if self.pos is not None else x


def _cbn(cin: int, cout: int, k: int = 1, s: int = 1, g: int = 1, act: type[nn.Module] | None = nn.SiLU):
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, s, k // 2, groups=g, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, act()) if act is not None else nn.Sequential(*layers)


class MobileViTBlock(nn.Module):
    """MobileViT: local 3x3 and 1x1 convolutions, unfold into ``p`` x ``p`` patches, transformer blocks, fold,
    1x1 projection, concatenation with the input and a 3x3 fusion."""

    def __init__(self, c: int, dim: int, depth: int, heads: int, p: int = 2):
        super().__init__()
        self.p = p
        self.local = nn.Sequential(_cbn(c, c, 3), nn.Conv2d(c, dim, 1, bias=False))
        self.tf = nn.Sequential(*[TransformerBlock(dim, heads, 2 * dim, "explicit", "silu") for _ in range(depth)],
                                nn.LayerNorm(dim))
        self.proj, self.fuse = _cbn(dim, c, 1), _cbn(2 * c, c, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.local(x)
        b, d, h, w = y.shape
        p = self.p
        y = y.reshape(b, d, h // p, p, w // p, p).permute(0, 3, 5, 2, 4, 1).reshape(b * p * p, -1, d)
        y = self.tf(y)
        y = y.reshape(b, p, p, h // p, w // p, d).permute(0, 5, 3, 1, 4, 2).reshape(b, d, h, w)
        return self.fuse(torch.cat([x, self.proj(y)], 1))


class ConvNeXtBlock(nn.Module):
    """ConvNeXt: depthwise 7x7, channels-last LayerNorm, Linear 4x, GELU, Linear, layer scale, residual."""

    def __init__(self, c: int, ratio: int = 4):
        super().__init__()
        self.dw, self.norm = nn.Conv2d(c, c, 7, 1, 3, groups=c), nn.LayerNorm(c, eps=1e-6)
        self.pw1, self.act, self.pw2 = nn.Linear(c, ratio * c), nn.GELU(), nn.Linear(ratio * c, c)
        self.gamma = nn.Parameter(torch.full((c,), 0.1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(self.dw(x).permute(0, 2, 3, 1))
        return x + (self.gamma * self.pw2(self.act(self.pw1(y)))).permute(0, 3, 1, 2)


class DenseBlock(nn.Module):
    """DenseNet: each layer (BN-ReLU-1x1-BN-ReLU-3x3) reads the concatenation of all earlier outputs."""

    def __init__(self, c: int, layers: int, growth: int):
        super().__init__()
        self.layers = nn.ModuleList(
            nn.Sequential(nn.BatchNorm2d(c + i * growth), nn.ReLU(), nn.Conv2d(c + i * growth, 4 * growth, 1),
                          nn.BatchNorm2d(4 * growth), nn.ReLU(), nn.Conv2d(4 * growth, growth, 3, 1, 1))
            for i in range(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [x]
        for layer in self.layers:
            feats.append(layer(torch.cat(feats, 1)))
        return torch.cat(feats, 1)


class SEGroupBlock(nn.Module):
    """RegNetY / ResNeXt: 1x1, grouped 3x3 (``gw`` channels per group), squeeze-excite gating, 1x1, residual."""

    def __init__(self, cin: int, cout: int, s: int, gw: int, se: int):
        super().__init__()
        self.a, self.b = _cbn(cin, cout, 1, act=nn.ReLU), _cbn(cout, cout, 3, s, cout // gw, act=nn.ReLU)
        self.se = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(cout, se, 1), nn.ReLU(), nn.Conv2d(se, cout, 1),
                                nn.Sigmoid()) if se else None
        self.c = _cbn(cout, cout, 1, act=None)
        self.short = _cbn(cin, cout, 1, s, act=None) if s != 1 or cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.b(self.a(x))
        if self.se is not None:
            y = y * self.se(y)
        return F.relu(self.short(x) + self.c(y))


class Downsample(nn.Module):
    """ConvNeXt's stem and downsampling: an optional channels-last LayerNorm, then a ``k`` x ``k`` convolution of
    stride ``k``."""

    def __init__(self, cin: int, cout: int, k: int, ln: bool):
        super().__init__()
        self.norm = nn.LayerNorm(cin, eps=1e-6) if ln else None
        self.conv = nn.Conv2d(cin, cout, k, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.norm is not None:
            x = self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.conv(x)
