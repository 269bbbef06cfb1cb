"""Every op type that issues 3 and 16 list, as a module and as a function, in place or not: FLOPs equal
fvcore's count of the exported subnet, params equal its ``sum(p.numel())``, the export computes what the
supernet computes, and ``elementwise=True`` adds exactly the documented count, taken from the real tensors.
Ops without a shape rule of their own (shapes from PyTorch) are listed in ``uncounted_ops`` and cost 0, as
fvcore leaves them out; every shape they see depends on the ``w`` and ``resolution`` choices."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import fvcore_flops, num_params
from torch import nn

import hwnas
import hwnas.nn as hnn


class OpSpace(hnn.Space):
    """``x -> hwnas conv (width w) -> xw -> hwnas 1x1 conv (8 channels) -> x8 -> body(xw, x8)``.

    ``xw`` has a searched channel count and ``x8`` a fixed one (for torch.nn layers, whose sizes are
    fixed); the resolution is searched too, so every shape the op sees is symbolic.
    """

    def __init__(self, body, modules: dict[str, nn.Module]):
        super().__init__()
        self.resolution = hnn.Choice([8, 12], label="resolution")
        w = hnn.Choice([4, 8], label="w")
        self.stem = hnn.Conv2d(3, w, 3)
        self.fix = hnn.Conv2d(w, 8, 1)
        self.ops = nn.ModuleDict(modules)
        self.body = body

    def forward(self, x):
        xw = self.stem(x)
        x8 = self.fix(xw)
        return self.body(self, xw, x8), x8  # x8 is an output too: fvcore's JIT trace drops unused ops


def _tokens(x8):  # (N, L, 8)
    return x8.flatten(2).transpose(1, 2)


def _seq(x8):  # (L, N, 8)
    return x8.flatten(2).permute(2, 0, 1)


def _iadd(s, xw, x8):
    y = x8 * 1
    y += x8
    return y


def _mha_both(s, xw, x8):
    out, weights = s.ops.a(_seq(x8), _seq(x8), _seq(x8), average_attn_weights=False)
    return out.sum() + weights.sum()


def _n(t):
    return t.numel()


def _window(kernel):
    return lambda xw, x8, out: out.numel() * math.prod(kernel)


def _bn_f(s, xw, x8):
    return F.batch_norm(x8, s.rm, s.rv, s.ops.affine.weight, s.ops.affine.bias)


def _heads(x8):  # (N, 2 heads, L, 4)
    return _tokens(x8).reshape(x8.shape[0], -1, 2, 4).permute(0, 2, 1, 3)


def _std_conv(s, xw, x8):  # timm's weight standardisation: batch statistics over each filter
    w = F.batch_norm(s.ops.m.weight.reshape(1, 6, -1), None, None, training=True, momentum=0.0, eps=1e-5)
    return F.conv2d(x8, w.reshape_as(s.ops.m.weight))


def _qkv_unbind(s, xw, x8):
    q, k, v = torch.stack([_heads(x8)] * 3).unbind(0)
    return F.scaled_dot_product_attention(q, k, v)


def _sdpa_extra(xw, x8, out):  # the two attention matmuls: batch * heads * L * S * (E + Ev)
    n, l_ = x8.shape[0], x8[0, 0].numel()
    return n * 2 * l_ * l_ * (4 + 4)


W8 = {"c": nn.Conv2d(8, 8, 1)}  # a parameter holder, never called except where a case calls it

# name -> (body(space, xw, x8), modules, extra(xw, x8, out) counted only with elementwise=True, or None)
ACT = lambda xw, x8, out: out.numel()  # noqa: E731  (the documented rule for activations and add/mul)
CASES = {
    # activations: modules, in place or not, functions, tensor methods
    "ReLU": (lambda s, xw, x8: s.ops.m(xw), {"m": nn.ReLU()}, ACT),
    "ReLU(inplace)": (lambda s, xw, x8: s.ops.m(xw), {"m": nn.ReLU(inplace=True)}, ACT),
    "F.relu": (lambda s, xw, x8: F.relu(xw), {}, ACT),
    "F.relu(inplace)": (lambda s, xw, x8: F.relu(xw, inplace=True), {}, ACT),
    "F.relu_": (lambda s, xw, x8: F.relu_(xw), {}, ACT),
    "torch.relu": (lambda s, xw, x8: torch.relu(xw), {}, ACT),
    "Tensor.relu_": (lambda s, xw, x8: xw.relu_(), {}, ACT),
    "ReLU6": (lambda s, xw, x8: s.ops.m(xw), {"m": nn.ReLU6()}, ACT),
    "ReLU6(inplace)": (lambda s, xw, x8: s.ops.m(xw), {"m": nn.ReLU6(inplace=True)}, ACT),
    "F.relu6": (lambda s, xw, x8: F.relu6(xw), {}, ACT),
    "F.relu6(inplace)": (lambda s, xw, x8: F.relu6(xw, inplace=True), {}, ACT),
    "Hardswish": (lambda s, xw, x8: s.ops.m(xw), {"m": nn.Hardswish()}, ACT),
    "Hardswish(inplace)": (lambda s, xw, x8: s.ops.m(xw), {"m": nn.Hardswish(inplace=True)}, ACT),
    "F.hardswish": (lambda s, xw, x8: F.hardswish(xw), {}, ACT),
    "F.hardswish(inplace)": (lambda s, xw, x8: F.hardswish(xw, inplace=True), {}, ACT),
    "Hardsigmoid": (lambda s, xw, x8: s.ops.m(xw), {"m": nn.Hardsigmoid()}, ACT),
    "Hardsigmoid(inplace)": (lambda s, xw, x8: s.ops.m(xw), {"m": nn.Hardsigmoid(inplace=True)}, ACT),
    "F.hardsigmoid": (lambda s, xw, x8: F.hardsigmoid(xw), {}, ACT),
    "F.hardsigmoid(inplace)": (lambda s, xw, x8: F.hardsigmoid(xw, inplace=True), {}, ACT),
    "SiLU": (lambda s, xw, x8: s.ops.m(xw), {"m": nn.SiLU()}, ACT),
    "SiLU(inplace)": (lambda s, xw, x8: s.ops.m(xw), {"m": nn.SiLU(inplace=True)}, ACT),
    "F.silu": (lambda s, xw, x8: F.silu(xw), {}, ACT),
    "F.silu(inplace)": (lambda s, xw, x8: F.silu(xw, inplace=True), {}, ACT),
    "GELU": (lambda s, xw, x8: s.ops.m(xw), {"m": nn.GELU()}, ACT),
    "GELU(tanh)": (lambda s, xw, x8: s.ops.m(xw), {"m": nn.GELU(approximate="tanh")}, ACT),
    "F.gelu": (lambda s, xw, x8: F.gelu(xw), {}, ACT),
    "Sigmoid": (lambda s, xw, x8: s.ops.m(xw), {"m": nn.Sigmoid()}, ACT),
    "torch.sigmoid": (lambda s, xw, x8: torch.sigmoid(xw), {}, ACT),
    "Tensor.sigmoid": (lambda s, xw, x8: xw.sigmoid(), {}, ACT),
    "Tensor.sigmoid_": (lambda s, xw, x8: xw.sigmoid_(), {}, ACT),
    # pooling
    "MaxPool2d": (lambda s, xw, x8: s.ops.m(xw), {"m": nn.MaxPool2d(3, 2, 1)}, _window((3, 3))),
    "MaxPool2d(ceil)": (lambda s, xw, x8: s.ops.m(xw), {"m": nn.MaxPool2d(3, 2, ceil_mode=True)}, _window((3, 3))),
    "F.max_pool2d": (lambda s, xw, x8: F.max_pool2d(xw, 2), {}, _window((2, 2))),
    "F.max_pool1d": (lambda s, xw, x8: F.max_pool1d(xw.flatten(2), 3, 2), {}, _window((3,))),
    "AvgPool2d": (lambda s, xw, x8: s.ops.m(xw), {"m": nn.AvgPool2d(3, 2, 1)}, _window((3, 3))),
    "F.avg_pool2d": (lambda s, xw, x8: F.avg_pool2d(xw, 2, ceil_mode=True), {}, _window((2, 2))),
    "AvgPool3d": (lambda s, xw, x8: s.ops.m(xw.unsqueeze(2)), {"m": nn.AvgPool3d((1, 2, 2))}, _window((1, 2, 2))),
    "AdaptiveAvgPool2d": (lambda s, xw, x8: s.ops.m(xw), {"m": nn.AdaptiveAvgPool2d((2, 3))}, None),
    "F.adaptive_avg_pool2d": (lambda s, xw, x8: F.adaptive_avg_pool2d(xw, 1), {}, None),
    "F.adaptive_avg_pool1d": (lambda s, xw, x8: F.adaptive_avg_pool1d(xw.flatten(2), 2), {},
                              lambda xw, x8, out: xw.numel()),
    "AdaptiveMaxPool2d": (lambda s, xw, x8: s.ops.m(xw), {"m": nn.AdaptiveMaxPool2d(1)},
                          lambda xw, x8, out: xw.numel()),
    "F.adaptive_max_pool2d": (lambda s, xw, x8: F.adaptive_max_pool2d(xw, 2), {}, lambda xw, x8, out: xw.numel()),
    # tensor arithmetic and data movement
    "add": (lambda s, xw, x8: xw + xw, {}, ACT),
    "torch.add": (lambda s, xw, x8: torch.add(xw, 1.0), {}, ACT),
    "Tensor.add_": (lambda s, xw, x8: xw.add_(xw), {}, ACT),
    "+= (and * 1)": (_iadd, {}, lambda xw, x8, out: 2 * out.numel()),
    "mul": (lambda s, xw, x8: xw * xw, {}, ACT),
    "torch.mul": (lambda s, xw, x8: torch.mul(xw, 2.0), {}, ACT),
    "Tensor.mul_": (lambda s, xw, x8: xw.mul_(xw), {}, ACT),
    "cat": (lambda s, xw, x8: torch.cat([xw, x8], 1), {}, None),
    "cat(dim=-1)": (lambda s, xw, x8: torch.cat((xw, xw), dim=-1), {}, None),
    "Tensor.flatten": (lambda s, xw, x8: xw.flatten(1), {}, None),
    "torch.flatten": (lambda s, xw, x8: torch.flatten(xw, 1), {}, None),
    "Flatten": (lambda s, xw, x8: s.ops.m(xw), {"m": nn.Flatten()}, None),
    "Tensor.reshape": (lambda s, xw, x8: xw.reshape(xw.size(0), -1), {}, None),
    "Tensor.view": (lambda s, xw, x8: xw.view(xw.shape[0], xw.shape[1], -1), {}, None),
    "torch.reshape": (lambda s, xw, x8: torch.reshape(xw, (xw.size(0), -1)), {}, None),
    "Tensor.mean": (lambda s, xw, x8: xw.mean((2, 3)), {}, lambda xw, x8, out: xw.numel()),
    "Tensor.mean(keepdim)": (lambda s, xw, x8: xw.mean([2, 3], keepdim=True), {}, lambda xw, x8, out: xw.numel()),
    "torch.mean": (lambda s, xw, x8: torch.mean(xw, dim=1), {}, lambda xw, x8, out: xw.numel()),
    "Tensor.mean()": (lambda s, xw, x8: xw.mean(), {}, lambda xw, x8, out: xw.numel()),
    # dropout (identity at inference)
    "Dropout": (lambda s, xw, x8: s.ops.m(xw), {"m": nn.Dropout(0.2)}, None),
    "Dropout(inplace)": (lambda s, xw, x8: s.ops.m(xw), {"m": nn.Dropout(0.2, inplace=True)}, None),
    "Dropout2d": (lambda s, xw, x8: s.ops.m(xw), {"m": nn.Dropout2d(0.2)}, None),
    "F.dropout": (lambda s, xw, x8: F.dropout(xw, 0.2, s.training), {}, None),
    "F.dropout(inplace)": (lambda s, xw, x8: F.dropout(xw, 0.2, False, True), {}, None),
    # normalisation
    "BatchNorm2d": (lambda s, xw, x8: s.ops.m(x8), {"m": nn.BatchNorm2d(8)}, None),
    "BatchNorm2d(affine=False)": (lambda s, xw, x8: s.ops.m(x8), {"m": nn.BatchNorm2d(8, affine=False)}, None),
    "BatchNorm1d": (lambda s, xw, x8: s.ops.m(x8.flatten(2)), {"m": nn.BatchNorm1d(8)}, None),
    "BatchNorm3d": (lambda s, xw, x8: s.ops.m(x8.unsqueeze(2)), {"m": nn.BatchNorm3d(8)}, None),
    "F.batch_norm": (_bn_f, {"affine": nn.BatchNorm2d(8)}, None),
    "LayerNorm": (lambda s, xw, x8: s.ops.m(_tokens(x8)), {"m": nn.LayerNorm(8)}, None),
    "LayerNorm(bias=False)": (lambda s, xw, x8: s.ops.m(_tokens(x8)), {"m": nn.LayerNorm(8, bias=False)}, None),
    "F.layer_norm": (lambda s, xw, x8: F.layer_norm(_tokens(x8), (8,)), {}, None),
    # convolutions and linear layers
    "Conv1d": (lambda s, xw, x8: s.ops.m(x8.flatten(2)), {"m": nn.Conv1d(8, 5, 3, padding=1)}, None),
    "F.conv1d": (lambda s, xw, x8: F.conv1d(x8.flatten(2), s.ops.m.weight, None, 2), {"m": nn.Conv1d(8, 5, 3)}, None),
    "Conv2d": (lambda s, xw, x8: s.ops.m(x8), {"m": nn.Conv2d(8, 6, 3, bias=True)}, None),
    "Conv2d(depthwise)": (lambda s, xw, x8: s.ops.m(x8), {"m": nn.Conv2d(8, 8, 3, 2, 1, groups=8)}, None),
    "F.conv2d": (lambda s, xw, x8: F.conv2d(x8, s.ops.m.weight, s.ops.m.bias, 1, 1, 1, 2),
                 {"m": nn.Conv2d(8, 6, 3, groups=2)}, None),
    "Conv3d": (lambda s, xw, x8: s.ops.m(x8.unsqueeze(2)), {"m": nn.Conv3d(8, 4, (1, 3, 3))}, None),
    "F.conv3d": (lambda s, xw, x8: F.conv3d(x8.unsqueeze(2), s.ops.m.weight, stride=(1, 2, 2)),
                 {"m": nn.Conv3d(8, 4, (1, 3, 3))}, None),
    "ConvTranspose2d": (lambda s, xw, x8: s.ops.m(x8),
                        {"m": nn.ConvTranspose2d(8, 4, 3, stride=2, padding=1, output_padding=1)}, None),
    "ConvTranspose2d(groups)": (lambda s, xw, x8: s.ops.m(x8), {"m": nn.ConvTranspose2d(8, 4, 2, 2, groups=2)}, None),
    "F.conv_transpose2d": (lambda s, xw, x8: F.conv_transpose2d(x8, s.ops.m.weight, s.ops.m.bias, 2, 1, 1, 2),
                           {"m": nn.ConvTranspose2d(8, 6, 3, groups=2)}, None),
    "Linear": (lambda s, xw, x8: s.ops.m(_tokens(x8)), {"m": nn.Linear(8, 7)}, None),
    "F.linear": (lambda s, xw, x8: F.linear(x8.mean((2, 3)), s.ops.m.weight), {"m": nn.Linear(8, 5, bias=False)},
                 lambda xw, x8, out: x8.numel()),
    "hwnas.nn.Linear": (lambda s, xw, x8: s.ops.m(xw.flatten(2).transpose(1, 2)),
                        {"m": hnn.Linear(hnn.Choice([4, 8], label="w"), 5)}, None),
    # multi-head attention
    "MultiheadAttention": (lambda s, xw, x8: s.ops.a(_seq(x8), _seq(x8), _seq(x8))[0],
                           {"a": nn.MultiheadAttention(8, 2)}, None),
    "MultiheadAttention(batch_first)": (lambda s, xw, x8: s.ops.a(_tokens(x8), _tokens(x8), _tokens(x8))[0],
                                        {"a": nn.MultiheadAttention(8, 4, batch_first=True)}, None),
    "MultiheadAttention(need_weights=False)": (
        lambda s, xw, x8: s.ops.a(_seq(x8), _seq(x8), _seq(x8), need_weights=False)[0],
        {"a": nn.MultiheadAttention(8, 2)},
        lambda xw, x8, out: 2 * out.shape[0] * out.shape[0] * out.shape[1] * 8),  # 2 * N * L * S * E
    "MultiheadAttention(per-head weights, no bias)": (_mha_both, {"a": nn.MultiheadAttention(8, 4, bias=False)},
                                                      lambda xw, x8, out: x8.numel() + 2 * 4 * (x8[0, 0].numel()) ** 2 + 1),
    # ^ the two sums (numel of the output and of the per-head weights N x heads x L x L) and their add
    "MultiheadAttention(kdim, vdim)": (lambda s, xw, x8: s.ops.a(_seq(x8), _seq(xw[:, :1].expand(-1, 5, -1, -1)),
                                                                 _seq(xw[:, :1].expand(-1, 6, -1, -1)))[0],
                                       {"a": nn.MultiheadAttention(8, 2, kdim=5, vdim=6)}, None),
    "MultiheadAttention(add_bias_kv, add_zero_attn)": (
        lambda s, xw, x8: s.ops.a(_seq(x8), _seq(x8), _seq(x8))[0],
        {"a": nn.MultiheadAttention(8, 2, add_bias_kv=True, add_zero_attn=True)}, None),
    # matrix products and einsum (fvcore counts them)
    "torch.einsum(bmm-like)": (lambda s, xw, x8: torch.einsum("bci,bcj->bij", xw.flatten(2), xw.flatten(2)), {}, None),
    "torch.einsum(abc,adc->adb)": (lambda s, xw, x8: torch.einsum("ntg,ncg->nct", xw.flatten(2), x8.flatten(2)), {},
                                   None),
    "torch.einsum(4-D)": (lambda s, xw, x8: torch.einsum("bhnd,bhmd->bhnm", _heads(x8), _heads(x8)), {}, None),
    "torch.einsum(weights, implicit output)": (
        lambda s, xw, x8: torch.einsum("nchw,dc", x8, s.ops.m.weight.flatten(1)), {"m": nn.Conv2d(8, 6, 1)}, None),
    "torch.einsum(ellipsis)": (lambda s, xw, x8: torch.einsum("...ij,...kj->...ik", xw, xw), {}, None),
    "torch.mm": (lambda s, xw, x8: torch.mm(x8.mean((2, 3)), s.ops.m.weight.t()), {"m": nn.Linear(8, 5)},
                 lambda xw, x8, out: x8.numel()),
    "Tensor.mm": (lambda s, xw, x8: x8.flatten(2)[0].mm(xw.flatten(2)[0].t()), {}, None),
    "torch.bmm": (lambda s, xw, x8: torch.bmm(xw.flatten(2), xw.flatten(2).transpose(1, 2)), {}, None),
    "matmul(4-D)": (lambda s, xw, x8: _heads(x8) @ _heads(x8).transpose(-2, -1), {}, None),
    "torch.matmul(4-D @ 2-D)": (lambda s, xw, x8: torch.matmul(_heads(x8), s.ops.m.weight.t()),
                                {"m": nn.Linear(4, 3)}, None),
    "torch.addmm": (lambda s, xw, x8: torch.addmm(s.ops.m.bias, x8.mean((2, 3)), s.ops.m.weight.t()),
                    {"m": nn.Linear(8, 5)}, lambda xw, x8, out: x8.numel()),
    "Tensor.addmm": (lambda s, xw, x8: s.ops.m.bias.addmm(x8.mean((2, 3)), s.ops.m.weight.t()),
                     {"m": nn.Linear(8, 5)}, lambda xw, x8, out: x8.numel()),
    # attention
    "F.scaled_dot_product_attention": (lambda s, xw, x8: F.scaled_dot_product_attention(
        _heads(x8), _heads(x8), _heads(x8)), {}, _sdpa_extra),
    "qkv.unbind(0) + sdpa": (_qkv_unbind, {}, _sdpa_extra),
    # normalisation and resampling that fvcore counts
    "GroupNorm": (lambda s, xw, x8: s.ops.m(x8), {"m": nn.GroupNorm(4, 8)}, None),
    "F.group_norm": (lambda s, xw, x8: F.group_norm(xw, 2), {}, None),
    "F.group_norm(affine)": (lambda s, xw, x8: F.group_norm(x8, 4, s.ops.m.weight, s.ops.m.bias),
                             {"m": nn.GroupNorm(4, 8)}, None),
    "InstanceNorm2d": (lambda s, xw, x8: s.ops.m(x8), {"m": nn.InstanceNorm2d(8)}, None),
    "InstanceNorm2d(affine)": (lambda s, xw, x8: s.ops.m(x8), {"m": nn.InstanceNorm2d(8, affine=True)}, None),
    "F.instance_norm": (lambda s, xw, x8: F.instance_norm(xw), {}, None),
    "BatchNorm2d(no running stats)": (lambda s, xw, x8: s.ops.m(x8), {"m": nn.BatchNorm2d(8, track_running_stats=False)},
                                      None),
    "weight standardisation (F.batch_norm training=True, reshape_as)": (_std_conv, {"m": nn.Conv2d(8, 6, 3)}, None),
    "F.interpolate(nearest, x2)": (lambda s, xw, x8: F.interpolate(xw, scale_factor=2), {}, None),
    "F.interpolate(bilinear, size)": (lambda s, xw, x8: F.interpolate(xw, size=(5, 7), mode="bilinear"), {}, None),
    "F.interpolate(area)": (lambda s, xw, x8: F.interpolate(xw, size=3, mode="area"), {}, None),
    "F.interpolate(bicubic)": (lambda s, xw, x8: F.interpolate(xw, scale_factor=2, mode="bicubic"), {},
                               lambda xw, x8, out: 4 * out.numel()),
    "Upsample(x1.5)": (lambda s, xw, x8: s.ops.m(xw), {"m": nn.Upsample(scale_factor=1.5)}, None),
    "F.upsample_bilinear": (lambda s, xw, x8: F.upsample_bilinear(xw, scale_factor=2), {}, None),
    "F.grid_sample": (lambda s, xw, x8: F.grid_sample(x8, torch.tanh(xw[:, :2].permute(0, 2, 3, 1)),
                                                      align_corners=False), {},
                      lambda xw, x8, out: 2 * xw[0, 0].numel() * xw.shape[0]),
    "AdaptiveAvgPool3d": (lambda s, xw, x8: s.ops.m(xw.unsqueeze(2)), {"m": nn.AdaptiveAvgPool3d(1)},
                          lambda xw, x8, out: xw.numel()),
    "ConvTranspose1d": (lambda s, xw, x8: s.ops.m(x8.flatten(2)), {"m": nn.ConvTranspose1d(8, 4, 3, stride=2)}, None),
    "ConvTranspose3d": (lambda s, xw, x8: s.ops.m(x8.unsqueeze(2)), {"m": nn.ConvTranspose3d(8, 4, (1, 2, 2), 2)},
                        None),
    "F.conv_transpose1d": (lambda s, xw, x8: F.conv_transpose1d(x8.flatten(2), s.ops.m.weight, stride=2),
                           {"m": nn.ConvTranspose1d(8, 4, 3)}, None),
    # elementwise ops that had no rule
    "pow": (lambda s, xw, x8: xw ** 2, {}, ACT),
    "torch.pow": (lambda s, xw, x8: torch.pow(xw, 3), {}, ACT),
    "abs": (lambda s, xw, x8: torch.abs(xw), {}, ACT),
    "neg": (lambda s, xw, x8: -xw, {}, ACT),
    "comparison and cast": (lambda s, xw, x8: (xw > 0).float() * xw, {}, lambda xw, x8, out: 2 * out.numel()),
    # data movement with hand-written rules (zero by definition)
    "F.pad": (lambda s, xw, x8: F.pad(xw, (1, 2, 0, 1)), {}, None),
    "F.pad(reflect)": (lambda s, xw, x8: F.pad(xw, (1, 1, 2, 2), mode="reflect"), {}, None),
    "Tensor.tile": (lambda s, xw, x8: xw.tile((1, 2, 1, 1)), {}, None),
    "Tensor.repeat": (lambda s, xw, x8: xw.repeat(1, 1, 2, 1), {}, None),
    "Tensor.expand_as": (lambda s, xw, x8: xw[:, :1].expand_as(xw), {}, None),
    "Tensor.unbind": (lambda s, xw, x8: x8.unbind(1)[3], {}, None),
    # ops without a rule: shapes from PyTorch (over the choices), 0 FLOPs, listed in uncounted_ops
    "F.normalize": (lambda s, xw, x8: F.normalize(xw, dim=1), {}, None),
    "F.pixel_shuffle": (lambda s, xw, x8: F.pixel_shuffle(xw, 2), {}, None),
    "PixelShuffle": (lambda s, xw, x8: s.ops.m(xw), {"m": nn.PixelShuffle(2)}, None),
    "Unfold": (lambda s, xw, x8: s.ops.m(xw), {"m": nn.Unfold(2, stride=2)}, None),
    "F.unfold": (lambda s, xw, x8: F.unfold(xw, 3, padding=1), {}, None),
    "ZeroPad2d": (lambda s, xw, x8: s.ops.m(xw), {"m": nn.ZeroPad2d((1, 0, 2, 1))}, None),
    "ReflectionPad2d": (lambda s, xw, x8: s.ops.m(xw), {"m": nn.ReflectionPad2d(1)}, None),
    "PReLU": (lambda s, xw, x8: s.ops.m(x8), {"m": nn.PReLU(8)}, None),
    "Softplus": (lambda s, xw, x8: s.ops.m(xw), {"m": nn.Softplus()}, None),
    "GLU": (lambda s, xw, x8: s.ops.m(xw), {"m": nn.GLU(1)}, None),
    "Unflatten": (lambda s, xw, x8: s.ops.m(x8.flatten(1)), {"m": nn.Unflatten(1, (8, -1))}, None),
    "Tensor.flip": (lambda s, xw, x8: xw.flip(-1), {}, None),
    "Tensor.max(dim).values": (lambda s, xw, x8: xw.max(dim=1).values + xw.max(1)[1], {}, ACT),
    "torch.roll": (lambda s, xw, x8: torch.roll(xw, 1, 2), {}, None),
    "index with a list": (lambda s, xw, x8: xw[:, [0, 2, 3]], {}, None),
    "index with a tensor": (lambda s, xw, x8: xw[:, torch.arange(xw.shape[1] // 2)], {}, None),
    "torch.zeros/ones/full with shape args": (
        lambda s, xw, x8: xw + torch.zeros((xw.shape[0], xw.shape[1], 1, 1), device=xw.device, dtype=xw.dtype)
        + torch.full((xw.shape[-1],), 2.0) * torch.ones((1, xw.size(1), xw.shape[2], 1)), {},
        lambda xw, x8, out: 2 * xw.numel() + xw[0].numel()),  # two adds of xw's size, a product of one sample's
    "math.ceil on shapes": (lambda s, xw, x8: xw[:, :, : math.ceil(xw.shape[2] / 4)], {}, None),
}

# ops whose shapes come from PyTorch: listed in uncounted_ops even with elementwise=True
FALLBACK = {"F.normalize": {"normalize"}, "F.pixel_shuffle": {"pixel_shuffle"}, "PixelShuffle": {"PixelShuffle"},
            "Unfold": {"Unfold"}, "F.unfold": {"unfold"}, "Tensor.flip": {"flip"}, "torch.roll": {"roll"},
            "Tensor.max(dim).values": {"max"}, "ZeroPad2d": {"ZeroPad2d"}, "ReflectionPad2d": {"ReflectionPad2d"},
            "PReLU": {"PReLU"}, "Softplus": {"Softplus"}, "GLU": {"GLU"}, "Unflatten": {"Unflatten"}}


def _space(name):
    body, modules, _ = CASES[name]
    torch.manual_seed(0)
    space = OpSpace(body, {k: v for k, v in modules.items()}).eval()
    if name == "F.batch_norm":
        space.register_buffer("rm", torch.randn(8))
        space.register_buffer("rv", torch.rand(8) + 0.5)
    return space


@pytest.mark.filterwarnings("ignore:`nn.functional.upsample_bilinear` is deprecated")
@pytest.mark.parametrize("name", list(CASES))
def test_op_matches_fvcore_and_export(name):
    space = _space(name)
    dummy = torch.randn(2, 3, 12, 12)
    flops = hwnas.FlopsProfiler(space, dummy)
    full = hwnas.FlopsProfiler(space, dummy, elementwise=True, graph=flops.graph)
    params = hwnas.NumParamsProfiler(space, graph=flops.graph)
    extra_rule = CASES[name][2]
    for sample in ({"resolution": 8, "w": 4}, {"resolution": 12, "w": 8}, {"resolution": 12, "w": 4}):
        x = torch.randn(2, 3, sample["resolution"], sample["resolution"], generator=torch.Generator().manual_seed(1))
        subnet = hwnas.export(space, sample).eval()
        assert not any(type(m).__module__.startswith("hwnas") for m in subnet.modules())
        assert flops.profile(sample) == fvcore_flops(subnet, x), sample
        assert params.profile(sample) == num_params(subnet), sample
        with torch.no_grad():
            want = space.apply_arch(sample)(x.clone())
            got = subnet(x.clone())
            # the real tensors the op sees, for the documented elementwise count
            xw = subnet.stem(x.clone())
            x8 = subnet.fix(xw)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        extra = 0 if extra_rule is None else extra_rule(xw, x8, got[0])
        assert full.profile(sample) - flops.profile(sample) == extra, sample
    assert set(full.uncounted_ops) == FALLBACK.get(name, set())
    assert set(flops.uncounted_ops) >= FALLBACK.get(name, set())
    if extra_rule is not None:
        assert flops.uncounted_ops, "an op fvcore leaves out must be listed in uncounted_ops"


# ------------------------------------------------------------------- where fvcore is wrong, and int-only blocks
@pytest.mark.parametrize("padding, explicit", [("same", 3), ("valid", 0)])
def test_a_conv_with_string_padding_counts_as_derived_by_hand(padding, explicit):
    """fvcore has no handle for aten::_convolution_mode (string padding) and counts 0 (timm's ConvMixer)."""
    conv = nn.Conv2d(8, 8, 7, padding=padding, groups=8).eval()
    x = torch.randn(1, 8, 13, 13)
    out_hw = 13 if padding == "same" else 13 - 7 + 1
    by_hand = 8 * out_hw * out_hw * (8 // 8) * 7 * 7  # output elements x (in / groups) x kernel area
    model = nn.Sequential(conv)
    assert hwnas.FlopsProfiler(model, x).profile({}) == by_hand
    same = nn.Conv2d(8, 8, 7, padding=explicit, groups=8).eval()
    same.load_state_dict(conv.state_dict())
    assert fvcore_flops(same, x) == by_hand  # fvcore agrees once the padding is written as numbers


class _FourierPositions(nn.Module):
    """timm's PositionalEncodingFourier (XCiT, EdgeNeXt): called with sizes only, it makes its own tensors."""

    def __init__(self, hidden: int = 8, dim: int = 16):
        super().__init__()
        self.hidden = hidden
        self.proj = nn.Conv2d(2 * hidden, dim, 1)

    def forward(self, b: int, h: int, w: int):
        y = torch.arange(1, h + 1, dtype=torch.float32).view(1, h, 1, 1).expand(1, h, w, self.hidden)
        x = torch.arange(1, w + 1, dtype=torch.float32).view(1, 1, w, 1).expand(1, h, w, self.hidden)
        pos = torch.cat([y.sin(), x.cos()], dim=3).permute(0, 3, 1, 2)
        return self.proj(pos).repeat(b, 1, 1, 1)


class _WithPositions(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.pos = _FourierPositions()

    def forward(self, x):
        b, _, h, w = x.shape
        return self.stem(x) + self.pos(b, h, w)


def test_a_fixed_block_called_with_sizes_only_is_counted(monkeypatch):
    """A leaf block whose inputs are ints was counted 0; fvcore counts its convolution."""
    from hwnas.graph import registry

    monkeypatch.setattr(registry, "_LEAVES", {*registry._LEAVES, _FourierPositions})
    model, x = _WithPositions().eval(), torch.randn(2, 3, 8, 8)
    flops = hwnas.FlopsProfiler(model, x)
    assert [b[1] for b in flops.graph.blocks] == ["_FourierPositions"]
    assert flops.profile({}) == fvcore_flops(model, x) > fvcore_flops(model.stem, x)
