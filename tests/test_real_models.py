"""Look-alikes of what real models (timm, torchvision, Hugging Face) do that hwnas used to refuse (issue 16),
each checked against independent references: fvcore's FLOP count and ``sum(p.numel())`` of the model (or of
the exported subnet, for a space), and the export's output against the model's own forward pass."""

from __future__ import annotations

import importlib
import math
import sys
import types

import pytest
import torch
import torch.nn.functional as F
from conftest import fvcore_flops, num_params
from torch import nn

import hwnas
import hwnas.nn as hnn
from hwnas.graph import ShapeMismatchError, UnsupportedOpError


def _check(model: nn.Module, x, **kw) -> hwnas.FlopsProfiler:
    """FLOPs == fvcore, params == sum(numel), and the export computes what the model computes."""
    model = model.eval()
    flops = hwnas.FlopsProfiler(model, x, **kw)
    params = hwnas.NumParamsProfiler(model, graph=flops.graph)
    assert flops.profile({}) == fvcore_flops(model, x)
    assert params.profile({}) == num_params(model)
    subnet = hwnas.export(model, {})
    args = x if isinstance(x, tuple) else (x,)
    with torch.no_grad():
        torch.testing.assert_close(subnet(*args), model(*args))
    assert num_params(subnet) == num_params(model)
    return flops


# ----------------------------------------------------------------------------- ViT: unbind + scaled-dot-product attention
class Attention(nn.Module):
    """timm's ``Attention``: one qkv projection, ``reshape -> permute -> unbind(0)``, fused attention."""

    def __init__(self, dim: int, heads: int, fused: bool = True):
        super().__init__()
        self.heads, self.fused = heads, fused
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.q_norm = nn.Identity()
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q = self.q_norm(q)
        if self.fused:
            x = F.scaled_dot_product_attention(q, k, v)
        else:
            attn = (q * self.scale) @ k.transpose(-2, -1)
            x = attn.softmax(dim=-1) @ v
        return self.proj(x.transpose(1, 2).reshape(B, N, C))


class DropPath(nn.Module):
    """timm's ``DropPath`` / torchvision's ``StochasticDepth``: random per-sample masks in training only."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x):
        if self.p == 0.0 or not self.training:
            return x
        keep = 1 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask.div_(keep)


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, fused: bool = True, drop_path: float = 0.1):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, fused)
        self.gamma = nn.Parameter(torch.full((dim,), 1e-5))  # LayerScale
        self.drop_path = DropPath(drop_path)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x):
        x = x + self.drop_path(self.gamma * self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class TinyViT(nn.Module):
    def __init__(self, dim: int = 32, depth: int = 2, fused: bool = True):
        super().__init__()
        self.patch = nn.Conv2d(3, dim, 4, 4)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 17, dim))
        self.blocks = nn.Sequential(*[Block(dim, 4, fused) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 10)

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        return self.head(self.norm(self.blocks(x))[:, 0])


def test_vit_with_unbind_and_fused_attention_matches_fvcore():
    flops = _check(TinyViT(), torch.randn(2, 3, 16, 16))
    # fvcore does not count aten::scaled_dot_product_attention: neither does hwnas, and it says so
    assert flops.uncounted_ops["scaled_dot_product_attention"] == 2
    full = hwnas.FlopsProfiler(TinyViT().eval(), torch.randn(2, 3, 16, 16), elementwise=True)
    n, heads, tokens, head_dim = 2, 4, 17, 8
    attn_matmuls = 2 * n * heads * tokens * tokens * (head_dim + head_dim)
    unfused = hwnas.FlopsProfiler(TinyViT(fused=False).eval(), torch.randn(2, 3, 16, 16))
    assert unfused.profile({}) - flops.profile({}) == attn_matmuls  # fvcore counts the explicit matmuls
    assert "scaled_dot_product_attention" not in full.uncounted_ops


def test_vit_explicit_attention_matches_fvcore():
    _check(TinyViT(fused=False), torch.randn(2, 3, 16, 16))


def test_stochastic_depth_is_the_identity_at_inference_and_traces_in_training():
    model = TinyViT()
    x = torch.randn(2, 3, 16, 16)
    eval_flops = _check(model, x).profile({})
    train = hwnas.FlopsProfiler(model.train(), x)  # new_empty / bernoulli_ / div_: shapes from PyTorch
    assert train.profile({}) == eval_flops  # fvcore counts none of the mask's ops
    assert {"new_empty", "bernoulli_"} <= set(train.uncounted_ops)


# ----------------------------------------------------------------------------- einsum, padding, normalisation, tiling
class EinsumMixer(nn.Module):
    def __init__(self, tokens: int = 16, dim: int = 8):
        super().__init__()
        self.token_mix = nn.Parameter(torch.randn(tokens, tokens) / tokens)
        self.channel_mix = nn.Parameter(torch.randn(dim, dim) / dim)

    def forward(self, x):  # (N, C, H, W) -> tokens
        t = x.flatten(2)  # (N, C, L)
        t = torch.einsum("ncl,lm->ncm", t, self.token_mix)
        t = torch.einsum("ncl,cd->ndl", t, self.channel_mix)
        g = torch.einsum("bcl,bdl->bcd", t, t)  # fvcore's special case abc,abd->acd
        return t.mean() + g.mean()


def test_einsum_block_matches_fvcore():
    _check(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), EinsumMixer()), torch.randn(2, 3, 4, 4))


class PadConv(nn.Conv2d):
    """timm's ``Conv2dSame``: 'same' padding computed from the input size, then an unpadded convolution. It
    subclasses nn.Conv2d but overrides forward, so nn.Conv2d's rule must not describe it."""

    def forward(self, x):
        ih, iw = x.size()[-2:]
        pad_h = (math.ceil(ih / self.stride[0]) - 1) * self.stride[0] + self.kernel_size[0] - ih
        pad_w = (math.ceil(iw / self.stride[1]) - 1) * self.stride[1] + self.kernel_size[1] - iw
        x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def test_padded_conv_subclass_matches_fvcore():
    model = nn.Sequential(PadConv(3, 8, 4, stride=2), nn.ReLU(), PadConv(8, 4, 3))
    x = torch.randn(1, 3, 15, 15)
    _check(model, x)
    assert hwnas.export(model, {})(x).shape == model(x).shape == (1, 4, 8, 8)


class GRN(nn.Module):
    """ConvNeXt-V2's global response norm (norm, pow, abs), with group norm and F.normalize around it."""

    def __init__(self, dim: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1, dim, 1, 1))
        self.gn = nn.GroupNorm(2, dim)

    def forward(self, x):
        gx = (x.abs() ** 2).sum(dim=(2, 3), keepdim=True).pow(0.5)
        nx = gx / (gx.mean(dim=1, keepdim=True) + 1e-6)
        x = self.gamma * (x * nx) + x
        x = F.group_norm(x, 4, self.gn.weight, self.gn.bias) + self.gn(x)
        return F.normalize(x, dim=1)


def test_norms_pow_abs_normalize_match_fvcore():
    flops = _check(nn.Sequential(nn.Conv2d(3, 8, 3), GRN(8)), torch.randn(2, 3, 8, 8))
    assert flops.uncounted_ops["normalize"] == 1


class TileAndIndex(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.fc = nn.Linear(6, 4)

    def forward(self, x):
        x = self.conv(x)
        y = x[:, :2].tile((1, 3, 1, 1)).reshape_as(x) + x.flip(-1)
        idx = torch.arange(x.shape[1], device=x.device)[torch.tensor([0, 2, 4])]
        z = y[:, idx] * y[:, [1, 3, 5]]  # indexing with a tensor and with a list
        h = math.floor(z.shape[-1] / 2)
        pooled = z[..., :h].mean((2, 3)).to(x.dtype)
        return self.fc(torch.cat([pooled, torch.zeros((x.shape[0], 3), dtype=x.dtype)], dim=1))


def test_tile_reshape_as_and_indexing_match_fvcore():
    _check(TileAndIndex(), torch.randn(2, 3, 8, 8))


# ----------------------------------------------------------------------------- leaf modules without a rule
class Recurrent(nn.Module):
    def __init__(self, cell: type[nn.Module]):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, 2)
        self.unfold = nn.Unfold(2, stride=2)
        self.rnn = cell(32, 16, batch_first=True, num_layers=2)
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        t = self.unfold(self.conv(x)).transpose(1, 2)  # (N, L, 8 * 4)
        out, _ = self.rnn(t)
        return self.fc(out[:, -1])


@pytest.mark.parametrize("cell", [nn.LSTM, nn.GRU])
def test_unfold_and_recurrent_leaves_match_fvcore(cell):
    flops = _check(Recurrent(cell), torch.randn(2, 3, 13, 13))
    assert flops.uncounted_ops[cell.__name__] == 1 and flops.uncounted_ops["Unfold"] == 1


def test_a_leaf_without_a_rule_is_a_fixed_block_counted_by_fvcore():
    model = nn.Sequential(nn.Linear(6, 16), nn.TransformerEncoderLayer(16, 2, 32, batch_first=True), nn.Linear(16, 3))
    flops = _check(model, torch.randn(2, 5, 6))
    assert flops.graph.blocks == [("1", "TransformerEncoderLayer",
                                   "a leaf module without a shape rule (shapes from PyTorch, FLOPs from fvcore)")]


# ----------------------------------------------------------------------------- code torch.fx cannot trace
class Gate(nn.Module):
    """Data-dependent control flow: torch.fx cannot trace it (both branches cost the same FLOPs)."""

    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 1)

    def forward(self, x):
        if x.sum() > 0:
            return self.conv(x)
        return self.conv(-x)


class Gated(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3)
        self.gate = Gate(8)
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        return self.head(self.gate(self.stem(x)).mean((2, 3)))


def test_untraceable_module_becomes_a_fixed_block(capsys):
    model = Gated()
    x = torch.randn(2, 3, 10, 10)
    flops = _check(model, x)
    (path, cls, why), = flops.graph.blocks
    assert (path, cls) == ("gate", "Gate") and "torch.fx cannot trace it" in why and "if x.sum() > 0:" in why
    summary = hwnas.profile(model, x)
    assert summary.blocks == flops.graph.blocks
    assert "fixed blocks (profiled whole, no choice inside): 1" in capsys.readouterr().out


class Window(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(4, 4)

    def forward(self, x):
        return window_attention(self.proj(x), 2)


def window_attention(x, w):
    """Swin-like helper with Python arithmetic on sizes; torch.fx.wrap keeps it one call (a fixed block)."""
    n, length, c = x.shape
    windows = x.reshape(n * (length // w), w, c)
    return (windows @ windows.transpose(1, 2)).softmax(-1).reshape(n, length, w)


torch.fx.wrap("window_attention")


def test_wrapped_function_is_a_fixed_block_counted_by_fvcore():
    flops = _check(Window(), torch.randn(2, 6, 4))
    assert [b[1] for b in flops.graph.blocks] == ["window_attention"]


def stochastic_depth(input, p: float, mode: str, training: bool = True):
    """Stands in for torchvision.ops.stochastic_depth (same name, module and signature; torchvision wraps it with
    torch.fx.wrap), which torchvision's EfficientNet and ConvNeXt call in every block."""
    if not training or p == 0.0:
        return input
    noise = torch.empty([input.shape[0]] + [1] * (input.ndim - 1)).bernoulli_(1 - p)
    return input * noise.div_(1 - p)


stochastic_depth.__module__ = "torchvision.ops.stochastic_depth"
torch.fx.wrap("stochastic_depth")


class CNBlock(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.dw = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.pw = nn.Conv2d(dim, dim, 1)

    def forward(self, x):
        return x + stochastic_depth(self.pw(self.dw(x)), 0.1, "row", self.training)


def test_torchvision_stochastic_depth_has_a_rule():
    flops = _check(CNBlock(8), torch.randn(2, 8, 9, 9))
    assert not flops.graph.blocks
    assert [op.op_type for op in flops.graph.ops if op.target is stochastic_depth] == ["dropout"]


def test_timm_not_traceable_registrations_are_honoured(monkeypatch):
    """timm's registry (timm.layers._fx: get_notrace_modules / get_notrace_functions) is read when timm is
    imported; a stand-in module plays timm here (timm itself does not install with this torch)."""
    calls = []

    class Marked(nn.Module):  # traceable, but marked: must stay one op
        def forward(self, x):
            calls.append(1)
            return x * 2

    fake_fx = types.ModuleType("timm.layers._fx")
    fake_fx.get_notrace_modules = lambda: [Marked]
    fake_fx.get_notrace_functions = lambda: []
    monkeypatch.setitem(sys.modules, "timm", types.ModuleType("timm"))
    monkeypatch.setitem(sys.modules, "timm.layers", types.ModuleType("timm.layers"))
    monkeypatch.setitem(sys.modules, "timm.layers._fx", fake_fx)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), Marked(), nn.Conv2d(4, 2, 1))
    flops = _check(model, torch.randn(1, 3, 6, 6))
    assert flops.graph.blocks == [("1", "Marked", "timm marks it not traceable (register_notrace_module)")]


# ----------------------------------------------------------------------------- tied weights, leaf roots, no batch dim
class TiedLM(nn.Module):
    """GPT-2 style: the output projection shares the token embedding's weight."""

    def __init__(self, vocab: int = 50, dim: int = 16):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.mlp = nn.Linear(dim, dim)
        self.head = nn.Linear(dim, vocab, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, ids):
        return self.head(torch.tanh(self.mlp(self.embed(ids))))


def test_tied_weights_are_counted_once_and_stay_tied():
    model = TiedLM()
    ids = torch.randint(0, 50, (2, 7))
    _check(model, ids)
    subnet = hwnas.export(model, {})
    assert num_params(subnet) == num_params(model) == 50 * 16 + 16 * 16 + 16
    assert subnet.head.weight is subnet.embed.weight


@pytest.mark.parametrize("model, shape", [(nn.BatchNorm1d(8), (4, 8)), (nn.Linear(8, 3), (2, 8)),
                                          (nn.LSTM(8, 4), (5, 2, 8)), (nn.Conv2d(3, 4, 3), (1, 3, 8, 8))])
def test_a_plain_layer_is_a_model(model, shape):
    x = torch.randn(shape)
    _check(model, x)
    summary = hwnas.profile(model, x, verbose=False)
    assert summary.metrics["flops"] == (fvcore_flops(model, x),) * 3
    assert summary.metrics["params"] == (num_params(model),) * 3


def test_untraceable_model_is_one_fixed_block():
    model = Gate(3)
    flops = _check(model, torch.randn(1, 3, 5, 5))
    assert flops.graph.blocks[0][:2] == ("<root>", "Gate")


@pytest.mark.parametrize("model, shape, rank", [(nn.Conv2d(3, 4, 3), (3, 8, 8), r"4 \(N, C, H, W\)"),
                                                (nn.BatchNorm2d(3), (3, 8, 8), r"4 \(N, C, H, W\)"),
                                                (nn.Conv1d(3, 4, 3), (3, 8), r"3 \(N, C, L\)"),
                                                (nn.MultiheadAttention(8, 2), (5, 8), "3 dims")])
def test_input_without_batch_dim_is_a_clear_error(model, shape, rank):
    """A rank/shape problem, not a channel mismatch (issue 18): the expected layout, the rank got, the fix."""
    x = torch.randn(shape)
    args = (x, x, x) if isinstance(model, nn.MultiheadAttention) else x
    with pytest.raises(ShapeMismatchError, match=rf"expects an input of rank {rank}, got rank {len(shape)} .*did you "
                                                 r"forget the batch dimension\?.*unsqueeze\(0\)") as err:
        hwnas.FlopsProfiler(model, args)
    assert "channels" not in str(err.value)


# ----------------------------------------------------------------------------- a space: ops without a rule on choice-dependent shapes
class ChoiceViT(hnn.Space):
    """A space whose widths and resolution reach ops without a rule (pixel shuffle, F.normalize, roll, indexing
    with a list) and the attention family (reshape over a searched width, unbind, fused attention)."""

    def __init__(self):
        super().__init__()
        self.resolution = hnn.Choice([8, 12], label="res")
        e = hnn.Choice([16, 32], label="embed")
        mlp = hnn.Choice([32, 48], label="mlp")
        self.stem = hnn.Conv2d(3, 4 * e, 3, stride=2)
        self.qkv = hnn.Linear(e, 3 * e)
        self.proj = hnn.Linear(e, e)
        self.fc1, self.fc2 = hnn.Linear(e, mlp), hnn.Linear(mlp, e)
        self.norm = nn.LayerNorm(8)
        self.head = nn.Linear(8, 5)

    def forward(self, x):
        x = F.pixel_shuffle(self.stem(x), 2)  # (N, e, res, res)
        x = torch.roll(F.normalize(F.pad(x, (0, 1, 0, 1)), dim=1), 1, -1)
        t = x.flatten(2).transpose(1, 2)
        B, N, C = t.shape
        q, k, v = self.qkv(t).reshape(B, N, 3, 4, C // 4).permute(2, 0, 3, 1, 4).unbind(0)
        t = t + self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, N, C))
        t = t + self.fc2(F.gelu(self.fc1(t)))
        return self.head(self.norm(t[:, :, [0, 1, 2, 3, 4, 5, 6, 7]]).mean(1))


def test_space_with_ops_without_rules_matches_fvcore_of_every_subnet():
    space = ChoiceViT().eval()
    flops = hwnas.FlopsProfiler(space, torch.randn(2, 3, 12, 12))
    params = hwnas.NumParamsProfiler(space, graph=flops.graph)
    assert {"pixel_shuffle", "normalize", "roll", "scaled_dot_product_attention"} <= set(flops.uncounted_ops)
    samples = [dict(zip(("res", "embed", "mlp"), v)) for v in
               [(r, e, m) for r in (8, 12) for e in (16, 32) for m in (32, 48)]]
    assert {frozenset(s) for s in samples} == {frozenset(space.choices())}
    for sample in samples:
        subnet = hwnas.export(space, sample).eval()
        x = torch.randn(2, 3, sample["res"], sample["res"])
        assert flops.profile(sample) == fvcore_flops(subnet, x), sample
        assert params.profile(sample) == num_params(subnet), sample
        with torch.no_grad():
            torch.testing.assert_close(subnet(x), space.apply_arch(sample)(x))


def test_shapes_from_pytorch_are_taken_once_when_the_profiler_is_built(monkeypatch):
    space = ChoiceViT().eval()
    flops = hwnas.FlopsProfiler(space, torch.randn(2, 3, 12, 12))
    sample = space.max_sample()
    want = flops.profile(sample)

    def fail(*args, **kwargs):
        raise AssertionError("the fallback ran while profiling a sample")

    monkeypatch.setattr("hwnas.graph.fallback.evaluate", fail)
    assert flops.profile(sample) == want
    assert flops.profile_batch([sample, space.min_sample()])[0] == want


def test_too_many_choices_for_one_op_is_a_clear_error():
    class Wide(hnn.Space):
        def __init__(self):
            super().__init__()
            self.convs = nn.ModuleList(hnn.Conv2d(3, hnn.Choice([2, 3], label=f"w{i}"), 1) for i in range(13))

        def forward(self, x):
            return F.normalize(torch.cat([c(x) for c in self.convs], 1))

    with pytest.raises(UnsupportedOpError, match=r"function torch.nn.functional.normalize at '<root>': its input shapes "
                                                 r"depend on labels \['w0', .*'w9'\] \(8,192 combinations, more than "
                                                 r"4,096.*register_shape_rule"):
        hwnas.FlopsProfiler(Wide(), torch.randn(1, 3, 4, 4))


def test_without_fvcore_a_fixed_block_counts_zero_and_is_listed(monkeypatch):
    model = Gated().eval()
    x = torch.randn(2, 3, 10, 10)
    counted = hwnas.FlopsProfiler(model, x)
    monkeypatch.setattr(importlib.import_module("hwnas.profile.profilers"), "block_flops", lambda op: None)  # as when fvcore is missing
    bare = hwnas.FlopsProfiler(model, x)
    assert bare.uncounted_ops["Gate"] == 1 and "Gate" not in counted.uncounted_ops
    gate_conv = 2 * 8 * 8 * 8 * 8  # N * Cout * Cin * H * W of the 1x1 convolution inside the block
    assert counted.profile({}) - bare.profile({}) == gate_conv


def test_an_op_fvcore_counts_never_falls_back_to_zero():
    class Conv(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn(4, 3, 3, 3))

        def forward(self, x):  # torch.convolution: counted by fvcore, no hand-written rule
            return torch.convolution(x, self.w, None, [1, 1], [0, 0], [1, 1], False, [0, 0], 1)

    with pytest.raises(UnsupportedOpError, match=r"function torch.convolution at '<root>' has no shape rule, and "
                                                 r"fvcore counts its FLOPs.*register_shape_rule\(convolution"):
        hwnas.FlopsProfiler(Conv(), torch.randn(1, 3, 6, 6))


def test_a_rule_that_unpacks_a_missing_batch_dim_says_where_and_why():
    """The registry's own example rule unpacks ``n, c, h, w = x.shape``: given an unbatched input, the error
    names the op, its path and the input shapes, and asks about the batch dimension."""
    from hwnas.graph import TensorMeta, register_shape_rule
    from hwnas.graph.registry import _LEAVES, _MODULE_RULES

    class Up(nn.Module):
        def forward(self, x):
            return F.interpolate(x.unsqueeze(0), scale_factor=2)[0]

    @register_shape_rule(Up, op="my_upsample")
    def _up(call):
        n, c, h, w = call.tensor(0).shape
        return TensorMeta((n, c, 2 * h, 2 * w))

    try:
        model = nn.Sequential(nn.Conv2d(3, 4, 1), Up())
        with pytest.raises(ValueError, match=r"shape rule of op 'my_upsample' at '0' failed on inputs of shapes "
                                             r"\[\(4, 6, 6\)\]: not enough values to unpack.*missing its batch "
                                             r"dimension\? .*x.unsqueeze\(0\)"):
            hwnas.FlopsProfiler(nn.Sequential(Up()), torch.randn(4, 6, 6))
        hwnas.FlopsProfiler(model, torch.randn(1, 3, 6, 6), on_missing="skip")  # batched: fine
    finally:
        _MODULE_RULES.pop(Up, None)
        _LEAVES.discard(Up)


def test_dtypes_follow_pytorch():
    """Index tensors made from sizes, integer arithmetic and promotion: the graph's output dtypes and shapes are
    those of the model's own outputs."""
    class Indexing(nn.Module):
        def forward(self, x):
            i = torch.arange(x.shape[1])
            return (x[:, i % 3], i * 2, i * 0.5, i / 2, i.type_as(x), (i + x[0, :, 0].long()).view(-1), x > 0,
                    x.max(-1).indices)

    model, x = Indexing(), torch.randn(2, 4, 3)
    graph = hwnas.graph.build_graph(model, x)
    want = model(x)
    assert [(tuple(t.shape), t.dtype) for t in graph.output] == [(tuple(t.shape), t.dtype) for t in want]


# ----------------------------------------------------------------------------- LayerChoice: shapes per candidate (peer ports)
def _per_width(c):
    """A candidate whose inner conv fits only the width ``c`` of the shared label 'w' (so only where it is chosen)."""
    return nn.Sequential(hnn.Conv2d(8, hnn.Choice([16, 32], label="w"), 1), nn.Conv2d(c, 8, 3 if c == 16 else 5,
                                                                                      padding=1 if c == 16 else 2))


class PerWidth(hnn.Space):
    """A kernel size per width: candidate ``c`` of LayerChoice 'w' runs a fixed conv of ``c`` input channels after
    a conv whose width follows the same label 'w'. Every subnet runs; the unchosen candidate would not fit."""

    def __init__(self, bad: bool = False):
        super().__init__()
        self.stem = hnn.Conv2d(3, 8, 3)
        self.lc = hnn.LayerChoice({16: _per_width(32 if bad else 16), 32: _per_width(32)}, label="w")
        self.head = nn.Linear(8, 10)

    def forward(self, x):
        return self.head(self.lc(self.stem(x)).mean((2, 3)))




def test_layer_choice_candidates_are_shape_checked_only_where_chosen():
    """Issue 16: a candidate's shape checks apply only under the samples that choose it."""
    space, x = PerWidth().eval(), torch.randn(2, 3, 12, 12)
    samples = [{"w": 16}, {"w": 32}]
    flops = hwnas.FlopsProfiler(space, x)
    params = hwnas.NumParamsProfiler(space, graph=flops.graph)
    for sample in samples:
        subnet = hwnas.export(space, sample).eval()
        assert flops.profile(sample) == fvcore_flops(subnet, x), sample
        assert params.profile(sample) == num_params(subnet), sample
    assert flops.profile(samples[0]) != flops.profile(samples[1])
    # a candidate that does not fit where it *is* chosen is still an error
    with pytest.raises(ShapeMismatchError, match=r"'lc.candidates.0.1' \(Conv2d\) declares in_channels = 32 but its "
                                                 r"input has \[16, 32\] over \['w'\]"):
        hwnas.FlopsProfiler(PerWidth(bad=True), x)


class TwoOut(nn.Module):
    def __init__(self, stride: int, k: int, as_dict: bool):
        super().__init__()
        self.as_dict = as_dict
        self.main = nn.Conv2d(8, 8, k, padding=k // 2)
        self.aux = nn.Conv2d(8, 4, 3, stride=stride, padding=1)

    def forward(self, x):
        main, aux = self.main(x), self.aux(x)
        return {"main": main, "aux": aux} if self.as_dict else (main, aux)


@pytest.mark.parametrize("as_dict", [True, False])
def test_layer_choice_candidates_return_dict_or_tuple(as_dict):
    """Issue 16: candidates returning a dict (or a tuple) of tensors: each output is selected per key; here the
    'aux' output's size differs per candidate, and the head's FLOPs follow it."""
    class Net(hnn.Space):
        def __init__(self):
            super().__init__()
            self.stem = hnn.Conv2d(3, 8, 3)
            self.lc = hnn.LayerChoice([TwoOut(1, 3, as_dict), TwoOut(2, 5, as_dict)], label="op")
            self.head = nn.Conv2d(4, 4, 3)
            self.fc = nn.Linear(12, 10)

        def forward(self, x):
            out = self.lc(self.stem(x))
            main, aux = (out["main"], out["aux"]) if as_dict else out
            return self.fc(torch.cat([main.mean((2, 3)), self.head(aux).mean((2, 3))], 1))

    space, x = Net().eval(), torch.randn(2, 3, 16, 16)
    flops = hwnas.FlopsProfiler(space, x)
    params = hwnas.NumParamsProfiler(space, graph=flops.graph)
    got = []
    for sample in ({"op": 0}, {"op": 1}):
        subnet = hwnas.export(space, sample).eval()
        assert flops.profile(sample) == fvcore_flops(subnet, x), sample
        assert params.profile(sample) == num_params(subnet), sample
        got.append(flops.profile(sample))
    assert got[0] != got[1]


class SumPerWidth(nn.Module):
    """Adds a conv of the shared width 'w' to a fixed conv of ``c`` channels: they broadcast only where w == c."""

    def __init__(self, c):
        super().__init__()
        self.a = hnn.Conv2d(8, hnn.Choice([16, 32], label="w"), 1)
        self.b = nn.Conv2d(8, c, 1)
        self.out = nn.Conv2d(c, 8, 1)

    def forward(self, x):
        return self.out(self.a(x) + self.b(x))


def test_layer_choice_broadcast_checked_only_where_chosen():
    """Issue 16: broadcasting in an unchosen candidate is not checked either."""
    class Net(hnn.Space):
        def __init__(self):
            super().__init__()
            self.lc = hnn.LayerChoice({16: SumPerWidth(16), 32: SumPerWidth(32)}, label="w")

        def forward(self, x):
            return self.lc(x)

    space, x = Net().eval(), torch.randn(1, 8, 6, 6)
    flops = hwnas.FlopsProfiler(space, x, elementwise=True)
    for sample in ({"w": 16}, {"w": 32}):
        subnet = hwnas.export(space, sample).eval()
        with torch.no_grad():
            add = subnet.lc.a(x).numel()  # the elementwise add: one op per output element (fvcore counts none)
        assert flops.profile(sample) - add == fvcore_flops(subnet, x), sample


class _MaskedStem(nn.Module):
    """timm's Hiera: ``forward(x, mask=None)`` with ``if mask is not None`` branches; the profiler traced ``mask``
    as a tensor and ran the masked branch with None ("op 'reshape' ... should be a tensor, got NoneType")."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 8, 1)

    def forward(self, x, mask=None):
        y = F.relu(self.conv1(x))
        if mask is not None:
            y = y * mask.reshape(x.shape[0], 1, y.shape[2], y.shape[3])
        return self.conv2(y)


def test_an_optional_none_argument_is_profiled_as_none():
    model, x = _MaskedStem().eval(), torch.randn(1, 3, 8, 8)
    flops = hwnas.FlopsProfiler(model, x)
    assert flops.profile({}) == fvcore_flops(model, x)
    assert "mul" not in {op.op_type for op in flops.graph.ops}  # the masked branch is not taken
    assert not flops.graph.blocks  # traced, not profiled whole


class _RoundSTE(torch.autograd.Function):
    """A straight-through rounding (quantization-aware training): the backward is not the forward's."""

    @staticmethod
    def forward(ctx, x):
        return torch.round(x * 4) / 4

    @staticmethod
    def backward(ctx, grad):
        return grad


class _Quantized(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 4, 1)

    def forward(self, x):
        return self.c2(_RoundSTE.apply(self.c1(x)))


def test_a_custom_autograd_function_is_one_fixed_op_that_keeps_its_backward():
    torch.manual_seed(0)
    model, x = _Quantized().eval(), torch.randn(1, 3, 8, 8)
    flops = hwnas.FlopsProfiler(model, x)
    assert [b[:2] for b in flops.graph.blocks] == [("<root>", "_RoundSTE.apply")]
    assert "autograd.Function" in flops.graph.blocks[0][2]
    assert flops.profile({}) == fvcore_flops(model, x)
    space = hwnas.convert(model, x)
    assert "_RoundSTE.apply" in space.summary()
    net = hwnas.export(space, space.max_sample())
    xs = x.clone().requires_grad_()
    net(xs).sum().backward()
    assert xs.grad.abs().sum() > 0  # traced through, round() would give a zero gradient
    with torch.no_grad():
        torch.testing.assert_close(net(x), model(x))
