"""Hand-written look-alikes of timm / torchvision / Hugging Face families (no timm here), for reading and accuracy
checks of the learned latency predictor on models it never saw.

Each builder returns ``(model, input)``; the layers follow the families' reference code closely (the ops and the
way they are written, e.g. timm's ``qkv`` Linear + reshape/permute/unbind + ``F.scaled_dot_product_attention``),
at reduced depth where the original would take seconds to time on one core. Used by
``tests/test_predict_onnx.py`` and ``benchmarks/predictor_accuracy.py``; none of them is a training model.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from hwnas.predict import gen_blocks

__all__ = ["LOOKALIKES", "create"]


# ------------------------------------------------------------------------------------------ transformer parts
class Attention(nn.Module):
    """timm's ViT attention: one ``qkv`` Linear, reshape/permute/unbind, scaled-dot-product attention."""

    def __init__(self, dim: int, heads: int, qkv_bias: bool = True, sdpa: bool = True):
        super().__init__()
        self.heads, self.sdpa = heads, sdpa
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        if self.sdpa:
            x = F.scaled_dot_product_attention(q, k, v)
        else:
            attn = (q * self.scale) @ k.transpose(-2, -1)
            x = attn.softmax(dim=-1) @ v
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, act: Callable[[], nn.Module] = nn.GELU):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), act(), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block (timm ``Block``)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, sdpa: bool = True):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim, eps=1e-6), Attention(dim, heads, sdpa=sdpa)
        self.norm2, self.mlp = nn.LayerNorm(dim, eps=1e-6), Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    """ViT / DeiT (``distilled``: a second token and head, averaged at inference)."""

    def __init__(self, img: int = 224, patch: int = 16, dim: int = 192, depth: int = 12, heads: int = 3,
                 classes: int = 1000, distilled: bool = False, sdpa: bool = True):
        super().__init__()
        self.patch_embed = nn.Conv2d(3, dim, patch, patch)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.dist_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02) if distilled else None
        n = (img // patch) ** 2 + 1 + int(distilled)
        self.pos_embed = nn.Parameter(torch.randn(1, n, dim) * 0.02)
        self.blocks = nn.Sequential(*[Block(dim, heads, sdpa=sdpa) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, classes)
        self.head_dist = nn.Linear(dim, classes) if distilled else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        tokens = [self.cls_token.expand(x.shape[0], -1, -1)]
        if self.dist_token is not None:
            tokens.append(self.dist_token.expand(x.shape[0], -1, -1))
        x = torch.cat([*tokens, x], dim=1) + self.pos_embed
        x = self.norm(self.blocks(x))
        if self.head_dist is not None:
            return (self.head(x[:, 0]) + self.head_dist(x[:, 1])) / 2
        return self.head(x[:, 0])


class BertLayer(nn.Module):
    """A BERT encoder layer as Hugging Face writes it: separate q/k/v, matmul/softmax, post-norm, GELU (erf)."""

    def __init__(self, dim: int, heads: int, inter: int):
        super().__init__()
        self.h, self.d = heads, dim // heads
        self.q, self.k, self.v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.o, self.ln1 = nn.Linear(dim, dim), nn.LayerNorm(dim, eps=1e-12)
        self.i, self.out, self.ln2 = nn.Linear(dim, inter), nn.Linear(inter, dim), nn.LayerNorm(dim, eps=1e-12)

    def split(self, t: torch.Tensor) -> torch.Tensor:
        return t.view(t.size(0), t.size(1), self.h, self.d).permute(0, 2, 1, 3)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        q, k, v = self.split(self.q(x)), self.split(self.k(x)), self.split(self.v(x))
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.d)
        if mask is not None:
            scores = scores + mask
        ctx = torch.matmul(scores.softmax(-1), v).permute(0, 2, 1, 3).contiguous()
        ctx = ctx.view(ctx.size(0), ctx.size(1), self.h * self.d)
        x = self.ln1(x + self.o(ctx))
        return self.ln2(x + self.out(F.gelu(self.i(x))))


class Bert(nn.Module):
    """BERT-tiny/mini-like: token + position embeddings of int64 ids, an extended attention mask, pooler."""

    def __init__(self, vocab: int = 30522, dim: int = 128, depth: int = 2, heads: int = 2, seq: int = 128):
        super().__init__()
        self.tok, self.pos = nn.Embedding(vocab, dim), nn.Embedding(512, dim)
        self.ln = nn.LayerNorm(dim, eps=1e-12)
        self.layers = nn.ModuleList([BertLayer(dim, heads, 4 * dim) for _ in range(depth)])
        self.pool = nn.Linear(dim, dim)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(ids.shape[1], device=ids.device).unsqueeze(0)
        x = self.ln(self.tok(ids) + self.pos(pos))
        mask = (1.0 - (ids > 0).float())[:, None, None, :] * -10000.0
        for layer in self.layers:
            x = layer(x, mask)
        return torch.tanh(self.pool(x[:, 0]))


class GPT2Block(nn.Module):
    def __init__(self, dim: int, heads: int, seq: int):
        super().__init__()
        self.h = heads
        self.ln_1, self.c_attn, self.c_proj = nn.LayerNorm(dim), nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.ln_2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, 4 * dim, act=lambda: nn.GELU(approximate="tanh"))
        self.register_buffer("bias", torch.tril(torch.ones(seq, seq, dtype=torch.bool)).view(1, 1, seq, seq))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.size()
        q, k, v = self.c_attn(self.ln_1(x)).split(c, dim=2)
        q, k, v = (z.view(b, t, self.h, c // self.h).transpose(1, 2) for z in (q, k, v))
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
        att = att.masked_fill(~self.bias[:, :, :t, :t], float("-inf")).softmax(dim=-1)
        y = (att @ v).transpose(1, 2).contiguous().view(b, t, c)
        x = x + self.c_proj(y)
        return x + self.mlp(self.ln_2(x))


class GPT2(nn.Module):
    def __init__(self, vocab: int = 8192, dim: int = 128, depth: int = 4, heads: int = 4, seq: int = 128):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, dim), nn.Embedding(seq, dim)
        self.h = nn.Sequential(*[GPT2Block(dim, heads, seq) for _ in range(depth)])
        self.ln_f = nn.LayerNorm(dim)
        self.lm_head = nn.Linear(dim, vocab, bias=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(ids.shape[1], device=ids.device)
        return self.lm_head(self.ln_f(self.h(self.wte(ids) + self.wpe(pos)))[:, -1])


# ------------------------------------------------------------------------------------------ hybrids
def _cbn(cin: int, cout: int, k: int = 3, s: int = 1, g: int = 1, act: Callable[[], nn.Module] | None = nn.SiLU):
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, s, k // 2, groups=g, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, act()) if act is not None else nn.Sequential(*layers)


class MV2(nn.Module):
    def __init__(self, cin: int, cout: int, s: int, e: int = 4):
        super().__init__()
        mid = cin * e
        self.res = s == 1 and cin == cout
        self.conv = nn.Sequential(_cbn(cin, mid, 1), _cbn(mid, mid, 3, s, mid), _cbn(mid, cout, 1, act=None))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.res else self.conv(x)


class MobileViTBlock(nn.Module):
    """Local 3x3 conv, unfold into 2x2 patches, transformer over patches, fold, fuse with the input."""

    def __init__(self, c: int, dim: int, depth: int, patch: int = 2):
        super().__init__()
        self.p = patch
        self.local = nn.Sequential(_cbn(c, c, 3), nn.Conv2d(c, dim, 1, bias=False))
        self.tf = nn.Sequential(*[Block(dim, 4, 2.0, sdpa=False) for _ in range(depth)], nn.LayerNorm(dim))
        self.proj, self.fuse = _cbn(dim, c, 1), _cbn(2 * c, c, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.local(x)
        b, d, h, w = y.shape
        p = self.p
        y = y.reshape(b, d, h // p, p, w // p, p).permute(0, 3, 5, 2, 4, 1).reshape(b * p * p, (h // p) * (w // p), d)
        y = self.tf(y)
        y = y.reshape(b, p, p, h // p, w // p, d).permute(0, 5, 3, 1, 4, 2).reshape(b, d, h, w)
        return self.fuse(torch.cat([x, self.proj(y)], 1))


class MobileViT(nn.Module):
    def __init__(self, classes: int = 1000):
        super().__init__()
        self.body = nn.Sequential(
            _cbn(3, 16, 3, 2), MV2(16, 32, 1), MV2(32, 48, 2), MV2(48, 48, 1), MV2(48, 64, 2),
            MobileViTBlock(64, 96, 2), MV2(64, 80, 2), MobileViTBlock(80, 120, 4), MV2(80, 96, 2),
            MobileViTBlock(96, 144, 3), _cbn(96, 384, 1))
        self.head = nn.Linear(384, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x).mean((2, 3)))


class LinearBN(nn.Module):
    """LeViT's Linear without bias followed by BatchNorm1d over the flattened tokens."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.c, self.bn = nn.Linear(cin, cout, bias=False), nn.BatchNorm1d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.c(x)
        return self.bn(x.flatten(0, 1)).reshape_as(x)


class LeViTAttention(nn.Module):
    def __init__(self, dim: int, key_dim: int, heads: int, ratio: int, res: int):
        super().__init__()
        self.h, self.kd, self.d = heads, key_dim, ratio * key_dim
        self.scale = key_dim ** -0.5
        self.qkv = LinearBN(dim, heads * (2 * key_dim + self.d))
        self.proj = nn.Sequential(nn.Hardswish(), LinearBN(self.d * heads, dim))
        self.attention_biases = nn.Parameter(torch.zeros(heads, res * res, res * res))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = self.qkv(x).view(b, n, self.h, -1).split([self.kd, self.kd, self.d], dim=3)
        q, k, v = q.permute(0, 2, 1, 3), k.permute(0, 2, 1, 3), v.permute(0, 2, 1, 3)
        attn = (q @ k.transpose(-2, -1)) * self.scale + self.attention_biases
        x = (attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(b, n, self.d * self.h)
        return self.proj(x)


class LeViTMlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.ln1, self.act, self.ln2 = LinearBN(dim, hidden), nn.Hardswish(), LinearBN(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ln2(self.act(self.ln1(x)))


class LeViTStage(nn.Module):
    def __init__(self, dim: int, key_dim: int, heads: int, depth: int, res: int):
        super().__init__()
        self.blocks = nn.ModuleList()
        for _ in range(depth):
            self.blocks.append(LeViTAttention(dim, key_dim, heads, 2, res))
            self.blocks.append(LeViTMlp(dim, 2 * dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.blocks:
            x = x + blk(x)
        return x


class LeViT(nn.Module):
    """LeViT-128S-like: a conv stem to 14x14, attention stages with BatchNorm on linear layers, token
    subsampling between stages by strided pooling (a simplification of LeViT's attention-subsample)."""

    def __init__(self, classes: int = 1000, img: int = 224):
        super().__init__()
        hs = nn.Hardswish
        self.stem = nn.Sequential(_cbn(3, 16, 3, 2, act=hs), _cbn(16, 32, 3, 2, act=hs), _cbn(32, 64, 3, 2, act=hs),
                                  _cbn(64, 128, 3, 2, act=None))
        r = img // 16
        self.s1 = LeViTStage(128, 16, 4, 2, r)
        self.down1 = LinearBN(128, 256)
        self.s2 = LeViTStage(256, 16, 8, 3, (r + 1) // 2)
        self.down2 = LinearBN(256, 384)
        self.s3 = LeViTStage(384, 16, 12, 4, (r + 3) // 4)
        self.head = nn.Linear(384, classes)

    @staticmethod
    def sub(x: torch.Tensor, r: int) -> torch.Tensor:
        b, n, c = x.shape
        return x.view(b, r, r, c)[:, ::2, ::2].reshape(b, -1, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        r = x.shape[-1]
        x = self.s1(x.flatten(2).transpose(1, 2))
        x = self.s2(self.down1(self.sub(x, r)))
        x = self.s3(self.down2(self.sub(x, (r + 1) // 2)))
        return self.head(x.mean(1))


class Meta4D(nn.Module):
    """EfficientFormer's 4-D block: pooling token mixer, conv MLP with BatchNorm and GELU."""

    def __init__(self, c: int):
        super().__init__()
        self.pool = nn.AvgPool2d(3, 1, 1, count_include_pad=False)
        self.mlp = nn.Sequential(_cbn(c, 4 * c, 1, act=nn.GELU), _cbn(4 * c, c, 1, act=None))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + (self.pool(x) - x)
        return x + self.mlp(x)


class EfficientFormer(nn.Module):
    def __init__(self, classes: int = 1000):
        super().__init__()
        dims = (48, 96, 224, 448)
        layers: list[nn.Module] = [_cbn(3, 24, 3, 2, act=nn.ReLU), _cbn(24, 48, 3, 2, act=nn.ReLU)]
        for i, (c, n) in enumerate(zip(dims, (3, 2, 6, 3))):
            if i:
                layers.append(_cbn(dims[i - 1], c, 3, 2, act=None))
            layers += [Meta4D(c) for _ in range(n if i < 3 else n - 1)]
        self.conv = nn.Sequential(*layers)
        self.meta3d = Block(448, 8, 4.0, sdpa=False)
        self.norm, self.head = nn.LayerNorm(448), nn.Linear(448, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.meta3d(self.conv(x).flatten(2).transpose(1, 2))
        return self.head(self.norm(x).mean(1))


class WindowBlock(nn.Module):
    """Swin: window attention with a relative position bias, optionally on cyclically shifted windows."""

    def __init__(self, dim: int, heads: int, res: int, win: int = 7, shift: int = 0):
        super().__init__()
        self.res, self.win, self.shift, self.h = res, min(win, res), shift if res > win else 0, heads
        self.norm1, self.qkv, self.proj = nn.LayerNorm(dim), nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.bias = nn.Parameter(torch.zeros(1, heads, self.win ** 2, self.win ** 2))
        self.norm2, self.mlp = nn.LayerNorm(dim), Mlp(dim, 4 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n_tok, c = x.shape
        r, w = self.res, self.win
        y = self.norm1(x).view(b, r, r, c)
        if self.shift:
            y = torch.roll(y, (-self.shift, -self.shift), (1, 2))
        y = y.view(b, r // w, w, r // w, w, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, w * w, c)
        nw = y.shape[0]
        qkv = self.qkv(y).reshape(nw, w * w, 3, self.h, c // self.h).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        attn = (q * (c // self.h) ** -0.5) @ k.transpose(-2, -1) + self.bias
        y = (attn.softmax(-1) @ v).transpose(1, 2).reshape(nw, w * w, c)
        y = self.proj(y).view(b, r // w, r // w, w, w, c).permute(0, 1, 3, 2, 4, 5).reshape(b, r, r, c)
        if self.shift:
            y = torch.roll(y, (self.shift, self.shift), (1, 2))
        x = x + y.reshape(b, n_tok, c)
        return x + self.mlp(self.norm2(x))


class PatchMerging(nn.Module):
    def __init__(self, dim: int, res: int):
        super().__init__()
        self.res, self.norm, self.red = res, nn.LayerNorm(4 * dim), nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, c = x.shape
        x = x.view(b, self.res, self.res, c)
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
        return self.red(self.norm(x.view(b, -1, 4 * c)))


class Swin(nn.Module):
    """Swin-T-like at reduced depth (2, 2, 2, 2), windows of 7."""

    def __init__(self, classes: int = 1000, img: int = 224, dim: int = 96):
        super().__init__()
        self.embed, self.norm0 = nn.Conv2d(3, dim, 4, 4), nn.LayerNorm(dim)
        r = img // 4
        layers: list[nn.Module] = []
        for i, h in enumerate((3, 6, 12, 24)):
            layers += [WindowBlock(dim, h, r, 7, 0), WindowBlock(dim, h, r, 7, 3)]
            if i < 3:
                layers.append(PatchMerging(dim, r))
                dim, r = 2 * dim, r // 2
        self.layers = nn.Sequential(*layers)
        self.norm, self.head = nn.LayerNorm(dim), nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm0(self.embed(x).flatten(2).transpose(1, 2))
        return self.head(self.norm(self.layers(x)).mean(1))


class ConvNeXtBlock(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.dw, self.norm = nn.Conv2d(c, c, 7, 1, 3, groups=c), nn.LayerNorm(c, eps=1e-6)
        self.pw1, self.act, self.pw2 = nn.Linear(c, 4 * c), nn.GELU(), nn.Linear(4 * c, c)
        self.gamma = nn.Parameter(torch.full((c,), 1e-6 * 1e5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(self.dw(x).permute(0, 2, 3, 1))
        y = self.gamma * self.pw2(self.act(self.pw1(y)))
        return x + y.permute(0, 3, 1, 2)


class LayerNorm2d(nn.LayerNorm):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ConvNeXt(nn.Module):
    """ConvNeXt-atto/femto-like: depths (2, 2, 6, 2)."""

    def __init__(self, classes: int = 1000, dims: tuple[int, ...] = (40, 80, 160, 320)):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, dims[0], 4, 4), LayerNorm2d(dims[0], eps=1e-6)]
        for i, (c, n) in enumerate(zip(dims, (2, 2, 6, 2))):
            if i:
                layers += [LayerNorm2d(dims[i - 1], eps=1e-6), nn.Conv2d(dims[i - 1], c, 2, 2)]
            layers += [ConvNeXtBlock(c) for _ in range(n)]
        self.body = nn.Sequential(*layers)
        self.norm, self.head = nn.LayerNorm(dims[-1], eps=1e-6), nn.Linear(dims[-1], classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.body(x).mean((2, 3))))


class SEGroupBlock(nn.Module):
    """RegNetY / ResNeXt block: 1x1, grouped 3x3, squeeze-excite gating, 1x1, residual."""

    def __init__(self, cin: int, cout: int, s: int, gw: int = 16):
        super().__init__()
        self.a, self.b = _cbn(cin, cout, 1, act=nn.ReLU), _cbn(cout, cout, 3, s, cout // gw, act=nn.ReLU)
        se = max(8, cin // 4)
        self.se = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(cout, se, 1), nn.ReLU(), nn.Conv2d(se, cout, 1),
                                nn.Sigmoid())
        self.c = _cbn(cout, cout, 1, act=None)
        self.short = _cbn(cin, cout, 1, s, act=None) if s != 1 or cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.b(self.a(x))
        return F.relu(self.short(x) + self.c(y * self.se(y)))


class RegNetY(nn.Module):
    def __init__(self, classes: int = 1000, widths: tuple[int, ...] = (48, 112, 256, 608),
                 depths: tuple[int, ...] = (1, 3, 6, 6)):
        super().__init__()
        layers: list[nn.Module] = [_cbn(3, 32, 3, 2, act=nn.ReLU)]
        c = 32
        for w, d in zip(widths, depths):
            for i in range(d):
                layers.append(SEGroupBlock(c, w, 2 if i == 0 else 1))
                c = w
        self.body, self.head = nn.Sequential(*layers), nn.Linear(c, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x).mean((2, 3)))


class DenseBlock(gen_blocks.DenseBlock):
    """hwnas's DenseNet block (BN-ReLU-1x1-BN-ReLU-3x3 over the concatenation of all earlier outputs), growth 32."""

    def __init__(self, c: int, layers: int, growth: int = 32):
        super().__init__(c, layers, growth)


class DenseNetLike(nn.Module):
    """A concat-heavy DenseNet-like net: two dense blocks with a transition."""

    def __init__(self, classes: int = 1000):
        super().__init__()
        self.body = nn.Sequential(_cbn(3, 64, 7, 2, act=nn.ReLU), nn.MaxPool2d(3, 2, 1), DenseBlock(64, 6),
                                  _cbn(256, 128, 1, act=nn.ReLU), nn.AvgPool2d(2, 2), DenseBlock(128, 8))
        self.head = nn.Linear(128 + 8 * 32, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.adaptive_avg_pool2d(self.body(x), 1).flatten(1))


# ------------------------------------------------------------------------------------------ registry
def _img(res: int) -> Callable[[], torch.Tensor]:
    return lambda: torch.randn(1, 3, res, res)


def _ids(seq: int, vocab: int) -> Callable[[], torch.Tensor]:
    return lambda: torch.randint(1, vocab, (1, seq))


#: name -> (builder, input maker); ``kind`` in the name's prefix is informal.
LOOKALIKES: dict[str, tuple[Callable[[], nn.Module], Callable[[], torch.Tensor]]] = {
    "vit_tiny_timm": (lambda: ViT(224, 16, 192, 12, 3), _img(224)),
    "vit_small_d6": (lambda: ViT(224, 16, 384, 6, 6), _img(224)),
    "vit_tiny_160": (lambda: ViT(160, 16, 192, 12, 3, sdpa=False), _img(160)),
    "deit_tiny_distilled": (lambda: ViT(224, 16, 192, 12, 3, distilled=True), _img(224)),
    "deit_tiny_p32_96": (lambda: ViT(96, 8, 192, 8, 3), _img(96)),
    "swin_like": (lambda: Swin(), _img(224)),
    "mobilevit_like": (lambda: MobileViT(), _img(256)),
    "levit_like": (lambda: LeViT(), _img(224)),
    "efficientformer_like": (lambda: EfficientFormer(), _img(224)),
    "bert_tiny": (lambda: Bert(dim=128, depth=2, heads=2), _ids(128, 30522)),
    "bert_mini_256": (lambda: Bert(dim=256, depth=4, heads=4), _ids(256, 30522)),
    "gpt2_tiny": (lambda: GPT2(), _ids(128, 8192)),
    "convnext_like": (lambda: ConvNeXt(), _img(224)),
    "regnety_like": (lambda: RegNetY(), _img(224)),
    "densenet_like": (lambda: DenseNetLike(), _img(160)),
}


def create(name: str) -> tuple[nn.Module, torch.Tensor]:
    """``(model in eval mode, input)`` of a look-alike (seeded: the same weights each call)."""
    if name not in LOOKALIKES:
        raise ValueError(f"unknown look-alike {name!r}; expected one of {sorted(LOOKALIKES)}.")
    build, make = LOOKALIKES[name]
    torch.manual_seed(0)
    model = build().eval()
    return model, make()
