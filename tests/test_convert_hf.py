"""hwnas.convert on hand-written look-alikes of Hugging Face transformers' model code (transformers is not
installed for the default tests): a ``forward`` behind a ``*args, **kwargs`` decorator that writes into
``kwargs`` (``merge_with_config_defaults``), Python control flow on shapes and dtypes, a position-id buffer
sliced by the traced sequence length, ``(*x.shape[:-1], -1, head_dim)``. References: the model's own output,
fvcore's FLOPs and sum(p.numel()) of the exported subnets."""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F
from conftest import fvcore_flops, num_params
from torch import nn

import hwnas
from hwnas.graph import HwnasTracer, UntraceableError


def merge_with_config_defaults(func):
    """Like transformers' decorator: config values as defaults of ``kwargs`` (``kwargs[name] = value``)."""

    @functools.wraps(func)
    def wrapper(self, *args, **kwargs):
        for name in ("use_cache", "output_attentions"):
            value = kwargs.get(name)
            if value is None:
                value = getattr(self.config, name, None)
            if value is not None and name in func.__code__.co_varnames:
                kwargs[name] = value
        return func(self, *args, **kwargs)

    return wrapper


class _Config:
    use_cache = False
    output_attentions = False


class _SelfAttention(nn.Module):
    def __init__(self, d: int, heads: int):
        super().__init__()
        self.head_dim = d // heads
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = (nn.Linear(d, d) for _ in range(4))

    def forward(self, x, attention_mask=None):
        shape = (*x.shape[:-1], -1, self.head_dim)  # iterates a traced shape
        q, k, v = (p(x).view(shape).transpose(1, 2) for p in (self.q_proj, self.k_proj, self.v_proj))
        is_causal = q.shape[2] > 1 and attention_mask is None and False  # a condition on a traced size
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attention_mask, is_causal=is_causal)
        return self.o_proj(out.transpose(1, 2).reshape(*x.shape[:-1], -1))


class _Layer(nn.Module):
    def __init__(self, d: int, heads: int):
        super().__init__()
        self.ln1, self.attn, self.ln2 = nn.LayerNorm(d), _SelfAttention(d, heads), nn.LayerNorm(d)
        self.fc1, self.fc2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


class _Embeddings(nn.Module):
    def __init__(self, vocab: int, d: int, max_len: int = 32):
        super().__init__()
        self.word = nn.Embedding(vocab, d)
        self.position = nn.Embedding(max_len, d)
        self.register_buffer("position_ids", torch.arange(max_len).expand((1, -1)), persistent=False)

    def forward(self, input_ids):
        batch_size, seq_length = input_ids.size()
        position_ids = self.position_ids[:, 0:seq_length]  # a real buffer sliced by a traced size
        if batch_size != position_ids.shape[0]:  # control flow on traced sizes
            position_ids = position_ids.expand(batch_size, -1)
        return self.word(input_ids) + self.position(position_ids)


class HFLikeModel(nn.Module):
    """A BERT/GPT-2-like encoder whose ``forward`` is decorated as transformers' models are."""

    def __init__(self, vocab: int = 50, d: int = 32, heads: int = 4, depth: int = 2):
        super().__init__()
        self.config = _Config()
        self.embeddings = _Embeddings(vocab, d)
        self.layers = nn.ModuleList(_Layer(d, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(d)

    @merge_with_config_defaults
    def forward(self, input_ids=None, attention_mask=None, use_cache=None, output_attentions=None, **kwargs):
        if input_ids.dtype != torch.long:  # a dtype check, as ViTModel does on pixel_values
            raise ValueError("token ids must be long")
        x = self.embeddings(input_ids)
        for layer in self.layers:
            x = layer(x)
        return (self.norm(x), None) if use_cache else (self.norm(x),)


class HFLikeVision(HFLikeModel):
    """The same on images (patch embedding), with ViTModel's check of the channel count."""

    def __init__(self, d: int = 32):
        super().__init__(d=d)
        self.patch = nn.Conv2d(3, d, 4, 4)
        self.num_channels = 3

    @merge_with_config_defaults
    def forward(self, pixel_values=None, use_cache=None, **kwargs):
        if pixel_values.shape[1] != self.num_channels:
            raise ValueError("wrong channel count")
        x = self.patch(pixel_values).flatten(2).transpose(1, 2)
        for layer in self.layers:
            x = layer(x)
        return (self.norm(x)[:, 0],)


def _check(model: nn.Module, x: torch.Tensor) -> hwnas.ConvertedSpace:
    model.eval()
    space = hwnas.convert(model, x)
    labels = space.choices()
    assert any(k.endswith(".heads") for k in labels) and any(k.endswith("fc1.width") for k in labels), \
        space.summary()
    with torch.no_grad():
        want = model(x)
        got = hwnas.export(space, space.max_sample()).eval()(x)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    flops = hwnas.FlopsProfiler(space, x)
    params = hwnas.NumParamsProfiler(space, graph=flops.graph)
    for seed in range(3):
        sample = space.random_sample(seed)
        subnet = hwnas.export(space, sample).eval()
        assert flops.profile(sample) == fvcore_flops(subnet, x), f"FLOPs differ for sample {seed}"
        assert params.profile(sample) == num_params(subnet), f"params differ for sample {seed}"
    return space


def test_a_forward_behind_a_kwargs_writing_decorator_with_shape_control_flow_converts():
    torch.manual_seed(0)
    space = _check(HFLikeModel(), torch.randint(0, 50, (2, 12)))
    summary = space.summary()
    assert "control flow decided by the dummy input" in summary
    assert "batch_size != position_ids.shape[0]" in summary and "dtype != torch.long" in summary


def test_a_vision_model_behind_the_decorator_converts():
    torch.manual_seed(0)
    _check(HFLikeVision(), torch.randn(1, 3, 16, 16))


def test_the_decorator_is_traced_below_with_the_inputs_as_placeholders():
    x = torch.randint(0, 50, (2, 12))
    graph = HwnasTracer(n_inputs=1, example=(x,)).trace(HFLikeModel().eval())  # no Proxy for kwargs
    assert [n.target for n in graph.nodes if n.op == "placeholder"] == ["input_ids"]


def test_without_an_example_shape_control_flow_is_still_a_clear_error():
    from hwnas.graph import trace_module

    with pytest.raises(UntraceableError, match=r"position_ids\[:, 0:seq_length\]"):
        trace_module(_Embeddings(50, 8), auto_leaf=False, n_inputs=1)
