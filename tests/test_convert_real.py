"""hwnas.convert on hand-written look-alikes of what torchvision, timm and Hugging Face ship (none of them is
installed for the default tests), against independent references: the original model's output (largest
subnet), fvcore's FLOPs and sum(p.numel()) of exported subnets, and the subnet's own forward pass."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import fvcore_flops, num_params
from torch import nn

import hwnas


def _check(model: nn.Module, x, min_labels: int, samples: int = 3, profile: bool = True, **kw):
    """Convert ``model`` and check the largest subnet and ``samples`` random ones; returns the space."""
    model.eval()
    space = hwnas.convert(model, x, **kw)
    assert len(space.choices()) >= min_labels, space.summary()
    xs = x if isinstance(x, tuple) else (x,)
    with torch.no_grad():
        want = model(*xs)
        torch.testing.assert_close(space(*xs), want, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(hwnas.export(space, space.max_sample()).eval()(*xs), want, rtol=1e-4, atol=1e-5)
    flops = hwnas.FlopsProfiler(space, x) if profile else None
    params = hwnas.NumParamsProfiler(space, graph=flops.graph) if profile else None
    for seed in range(samples):
        sample = space.random_sample(seed)
        subnet = hwnas.export(space, sample).eval()
        assert not any(type(m).__module__.startswith("hwnas") for m in subnet.modules())
        with torch.no_grad():
            torch.testing.assert_close(subnet(*xs), space.apply_arch(sample)(*xs), rtol=1e-4, atol=1e-5)
        if profile:
            assert flops.profile(sample) == fvcore_flops(subnet, x), f"FLOPs differ for sample {seed}"
            assert params.profile(sample) == num_params(subnet), f"params differ for sample {seed}"
    return space


# ----------------------------------------------------------------------------- torchvision ResNet, by hand
def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride, 1, bias=False)


def _conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, stride, bias=False)


class BasicBlock(nn.Module):
    """torchvision's BasicBlock: one ``self.relu`` module called twice."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1, self.bn1 = _conv3x3(inplanes, planes, stride), nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2, self.bn2 = _conv3x3(planes, planes), nn.BatchNorm2d(planes)
        self.downsample, self.stride = downsample, stride

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class Bottleneck(nn.Module):
    """torchvision's Bottleneck: one ``self.relu`` module called three times."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1, self.bn1 = _conv1x1(inplanes, planes), nn.BatchNorm2d(planes)
        self.conv2, self.bn2 = _conv3x3(planes, planes, stride), nn.BatchNorm2d(planes)
        self.conv3, self.bn3 = _conv1x1(planes, planes * 4), nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample, self.stride = downsample, stride

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class ResNet(nn.Module):
    """torchvision's ResNet (stem, maxpool, four stages with a downsample Sequential, avgpool, flatten, fc)."""

    def __init__(self, block: type, layers: list[int], num_classes: int = 1000):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], 2)
        self.layer3 = self._make_layer(block, 256, layers[2], 2)
        self.layer4 = self._make_layer(block, 512, layers[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes)

    def _make_layer(self, block: type, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(_conv1x1(self.inplanes, planes * block.expansion, stride),
                                       nn.BatchNorm2d(planes * block.expansion))
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _block_labels(space, blocks: list[str]) -> None:
    """Every block has a width choice on its inner channels (conv1's output)."""
    for b in blocks:
        assert f"{b}.conv1.width" in space.choices(), (b, space.summary())


def test_torchvision_resnet18_lookalike_has_choices_in_every_block():
    torch.manual_seed(0)
    space = _check(ResNet(BasicBlock, [2, 2, 2, 2], num_classes=10), torch.randn(1, 3, 32, 32), min_labels=12)
    # 8 blocks' inner widths + the stem/stage-1 residual width + stages 2-4's residual widths
    _block_labels(space, [f"layer{s}.{i}" for s in range(1, 5) for i in range(2)])
    for s in (2, 3, 4):  # the residual width of each stage (its downsample conv's output) is free too
        assert any(f"layer{s}.0.downsample.0" in g.layers for g in space.conversion.searched_groups)
    assert "called 2 times" not in space.summary()


def test_torchvision_resnet50_lookalike_has_choices_in_every_block():
    torch.manual_seed(0)
    space = _check(ResNet(Bottleneck, [3, 4, 6, 3], num_classes=10), torch.randn(1, 3, 32, 32), min_labels=37)
    # 16 blocks x (conv1 and conv2 outputs) + the stem width + 4 residual widths = 37
    blocks = [f"layer{s}.{i}" for s, n in zip(range(1, 5), [3, 4, 6, 3]) for i in range(n)]
    for b in blocks:
        assert f"{b}.conv1.width" in space.choices() and f"{b}.conv2.width" in space.choices()
    assert [g.fixed for g in space.conversion.fixed_groups] == ["the model's output (fc)"]


# ----------------------------------------------------------------------------- Conv1d / Conv3d / ConvTranspose
class _Convs1d(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.bn = nn.Conv1d(3, 16, 5, padding=2), nn.BatchNorm1d(16)
        self.dw = nn.Conv1d(16, 16, 3, padding=1, groups=16)
        self.up = nn.ConvTranspose1d(16, 12, 4, stride=2, padding=1)
        self.gt = nn.ConvTranspose1d(12, 12, 3, padding=1, groups=4)  # grouped, 3 channels per group
        self.b = nn.Conv1d(12, 8, 3, padding=1, padding_mode="reflect")
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        x = torch.relu(self.bn(self.a(x)))
        x = self.dw(x) + x
        return self.fc(self.b(self.gt(self.up(x))).mean(-1))


class _Convs3d(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.bn = nn.Conv3d(3, 16, 3, padding=1), nn.BatchNorm3d(16)
        self.up = nn.ConvTranspose3d(16, 8, 2, stride=2)
        self.b = nn.Conv3d(8, 4, 1)

    def forward(self, x):
        return self.b(self.up(torch.relu(self.bn(self.a(x))))).mean((2, 3, 4))


class _Convs2dTransposed(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 16, 3, stride=2, padding=1)
        self.up = nn.ConvTranspose2d(16, 8, 3, stride=2, padding=1, output_padding=1)
        self.dw = nn.ConvTranspose2d(8, 8, 3, padding=1, groups=8)
        self.b = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        return self.b(self.dw(torch.relu(self.up(torch.relu(self.a(x))))))


@pytest.mark.parametrize("model, x, labels", [
    (_Convs1d, (2, 3, 16), {"a.width", "up.width", "b.width", "a.kernel", "dw.kernel"}),
    (_Convs3d, (1, 3, 4, 6, 6), {"a.width", "up.width", "a.kernel"}),
    (_Convs2dTransposed, (1, 3, 8, 8), {"a.width", "up.width", "a.kernel"}),
])
def test_conv1d_conv3d_and_transposed_convs_are_searchable(model, x, labels):
    torch.manual_seed(0)
    space = _check(model(), torch.randn(*x), min_labels=len(labels), samples=4, mode="width+kernel")
    assert set(space.choices()) == labels
    if model is _Convs1d:  # a grouped transposed conv keeps whole groups of 3 channels
        assert space.choices()["up.width"] == (3, 6, 9, 12)


# ----------------------------------------------------------------------------- tied weights
class _TiedLinears(nn.Module):
    """Two Linear layers sharing one weight Parameter (ALBERT-style sharing across modules)."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 16, 3, padding=1)
        self.p, self.q = nn.Linear(16, 16), nn.Linear(16, 16)
        self.q.weight = self.p.weight
        self.h, self.o = nn.Linear(16, 32), nn.Linear(32, 5)

    def forward(self, x):
        y = self.q(torch.relu(self.p(self.a(x).mean((2, 3)))))
        return self.o(torch.relu(self.h(y)))


class _TiedLM(nn.Module):
    """A language-model head tied to its token embedding (GPT-2 / BERT style)."""

    def __init__(self):
        super().__init__()
        self.wte, self.ln = nn.Embedding(50, 16), nn.LayerNorm(16)
        self.fc1, self.fc2 = nn.Linear(16, 64), nn.Linear(64, 16)
        self.head = nn.Linear(16, 50, bias=False)
        self.head.weight = self.wte.weight

    def forward(self, ids):
        x = self.wte(ids)
        return self.head(x + self.fc2(torch.relu(self.fc1(self.ln(x)))))


def test_tied_weights_stay_tied_in_the_space_and_the_export():
    torch.manual_seed(0)
    for model, x, pair, label in [(_TiedLinears(), torch.randn(2, 3, 8, 8), ("p", "q"), "h.width"),
                                  (_TiedLM(), torch.randint(0, 50, (2, 7)), ("wte", "head"), "fc1.width")]:
        model.eval()
        space = hwnas.convert(model, x)
        assert set(space.choices()) == {label}
        assert f"tied weights: {pair[0]}.weight and {pair[1]}.weight are one tensor" in space.summary()
        for seed in range(3):
            sample = space.random_sample(seed)
            subnet = hwnas.export(space, sample).eval()
            a, b = (subnet.get_submodule(f"net.{p}") for p in pair)
            assert a.weight is b.weight
            dyn = {k for k in space.choices() if k != label}
            assert not dyn
            unique = {id(p): p.numel() for p in subnet.parameters()}
            assert num_params(subnet) == sum(unique.values())
            with torch.no_grad():
                torch.testing.assert_close(subnet(x), space.apply_arch(sample)(x))
        with torch.no_grad():
            torch.testing.assert_close(space(x), model(x))


def test_tied_weights_are_counted_once_by_the_params_profiler():
    torch.manual_seed(0)
    model, x = _TiedLinears().eval(), torch.randn(2, 3, 8, 8)
    space = hwnas.convert(model, x)
    params = hwnas.NumParamsProfiler(space, x)
    for seed in range(3):
        sample = space.random_sample(seed)
        assert params.profile(sample) == num_params(hwnas.export(space, sample))


# ----------------------------------------------------------------------------- timm-style structures
# timm's layers: BatchNormAct2d (a BatchNorm2d subclass whose forward calls F.batch_norm with its own tensors,
# then an activation), ConvNormAct; and compact look-alikes of DenseNet, Inception, VoVNet, RepVGG, ResNetV2 and
# CSPNet blocks, the patterns that converted to no labels before (BatchNormAct2d was an unknown layer; a chunk
# along channels fixed them).


class BatchNormAct2d(nn.BatchNorm2d):
    """timm's BatchNormAct2d: BatchNorm2d whose forward calls F.batch_norm itself, then dropout and activation."""

    def __init__(self, c, act=True):
        super().__init__(c)
        self.drop = nn.Identity()
        self.act = nn.ReLU(inplace=True) if act else nn.Identity()

    def forward(self, x):
        torch._assert(x.ndim == 4, "expected 4D input")
        x = F.batch_norm(x, self.running_mean if not self.training or self.track_running_stats else None,
                         self.running_var if not self.training or self.track_running_stats else None,
                         self.weight, self.bias, self.training, 0.0 if self.momentum is None else self.momentum,
                         self.eps)
        return self.act(self.drop(x))


class ConvNormAct(nn.Module):
    def __init__(self, cin, cout, k=3, stride=1, act=True, groups=1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False)
        self.bn = BatchNormAct2d(cout, act)

    def forward(self, x):
        return self.bn(self.conv(x))


class DenseLayer(nn.Module):
    """timm/torchvision DenseNet layer: norm-act-conv1x1-norm-act-conv3x3 over the concatenation of all inputs."""

    def __init__(self, cin, growth, bn_size=4):
        super().__init__()
        self.norm1, self.conv1 = BatchNormAct2d(cin), nn.Conv2d(cin, bn_size * growth, 1, bias=False)
        self.norm2, self.conv2 = BatchNormAct2d(bn_size * growth), nn.Conv2d(bn_size * growth, growth, 3, 1, 1, bias=False)

    def forward(self, x):
        prev = [x] if isinstance(x, torch.Tensor) else x
        return self.conv2(self.norm2(self.conv1(self.norm1(torch.cat(prev, 1)))))


class DenseNet(nn.Module):
    def __init__(self, growth=8, layers=(3, 3), stem=16):
        super().__init__()
        self.stem = ConvNormAct(3, stem, 3, 2)
        blocks, c = [], stem
        for n in layers:
            blk = nn.ModuleList()
            for j in range(n):
                blk.append(DenseLayer(c + j * growth, growth))
            blocks.append(blk)
            c = stem
        self.blocks = nn.ModuleList(blocks)
        self.trans = nn.Sequential(BatchNormAct2d(stem + layers[0] * growth),
                                   nn.Conv2d(stem + layers[0] * growth, stem, 1, bias=False), nn.AvgPool2d(2, 2))
        self.norm5 = BatchNormAct2d(stem + layers[1] * growth)
        self.fc = nn.Linear(stem + layers[1] * growth, 10)

    def forward(self, x):
        x = self.stem(x)
        for i, blk in enumerate(self.blocks):
            feats = [x]
            for layer in blk:
                feats.append(layer(feats))
            x = torch.cat(feats, 1)
            if i == 0:
                x = self.trans(x)
        return self.fc(self.norm5(x).mean((2, 3)))


class Inception(nn.Module):
    """Inception-A-like: four parallel branches (1x1; 1x1-5x5; 1x1-3x3-3x3; avgpool-1x1) concatenated."""

    def __init__(self, cin, pool_ch):
        super().__init__()
        self.b1 = ConvNormAct(cin, 16, 1)
        self.b5_1, self.b5_2 = ConvNormAct(cin, 12, 1), ConvNormAct(12, 16, 5)
        self.b3_1, self.b3_2, self.b3_3 = ConvNormAct(cin, 16, 1), ConvNormAct(16, 24, 3), ConvNormAct(24, 24, 3)
        self.bp = ConvNormAct(cin, pool_ch, 1)

    def forward(self, x):
        bp = self.bp(F.avg_pool2d(x, 3, 1, 1))
        return torch.cat([self.b1(x), self.b5_2(self.b5_1(x)), self.b3_3(self.b3_2(self.b3_1(x))), bp], 1)


class InceptionNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = ConvNormAct(3, 16, 3, 2)
        self.a, self.b = Inception(16, 8), Inception(64, 16)
        self.fc = nn.Linear(72, 10)

    def forward(self, x):
        return self.fc(F.adaptive_avg_pool2d(self.b(self.a(self.stem(x))), 1).flatten(1))


class OSA(nn.Module):
    """VoVNet's one-shot aggregation: a chain of convs whose outputs (and the input) are concatenated once,
    a 1x1 conv, an effective squeeze-excite gate, a residual."""

    def __init__(self, cin, mid, cout, n=3, residual=True):
        super().__init__()
        self.mids = nn.ModuleList([ConvNormAct(cin if i == 0 else mid, mid) for i in range(n)])
        self.concat = ConvNormAct(cin + n * mid, cout, 1)
        self.fc = nn.Conv2d(cout, cout, 1)
        self.residual = residual

    def forward(self, x):
        out = [x]
        for m in self.mids:
            out.append(m(out[-1]))
        y = self.concat(torch.cat(out, 1))
        y = y * F.hardsigmoid(self.fc(y.mean((2, 3), keepdim=True)))
        return y + x if self.residual else y


class VoVNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = ConvNormAct(3, 16, 3, 2)
        self.s1, self.s2 = OSA(16, 8, 16), OSA(16, 12, 24, residual=False)
        self.fc = nn.Linear(24, 10)

    def forward(self, x):
        return self.fc(self.s2(self.s1(self.stem(x))).mean((2, 3)))


class RepVggBlock(nn.Module):
    """RepVGG (training form): 3x3 conv-bn + 1x1 conv-bn + identity bn, summed, then an activation."""

    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.identity = BatchNormAct2d(cin, act=False) if cin == cout and stride == 1 else None
        self.conv_kxk = ConvNormAct(cin, cout, 3, stride, act=False)
        self.conv_1x1 = ConvNormAct(cin, cout, 1, stride, act=False)
        self.drop_path = nn.Identity()
        self.act = nn.ReLU()

    def forward(self, x):
        if self.identity is None:
            x = self.conv_1x1(x) + self.conv_kxk(x)
        else:
            identity = self.identity(x)
            x = self.conv_1x1(x) + self.conv_kxk(x)
            x = self.drop_path(x)
            x = x + identity
        return self.act(x)


class RepVGG(nn.Module):
    def __init__(self):
        super().__init__()
        self.stages = nn.Sequential(RepVggBlock(3, 16, 2), RepVggBlock(16, 16), RepVggBlock(16, 32, 2),
                                    RepVggBlock(32, 32))
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        return self.fc(self.stages(x).mean((2, 3)))


class PreActBottleneck(nn.Module):
    """ResNetV2 (pre-activation): norm-act first; the shortcut's downsample reads the pre-activated input."""

    def __init__(self, cin, cout, mid, stride=1):
        super().__init__()
        self.norm1 = BatchNormAct2d(cin)
        self.downsample = nn.Conv2d(cin, cout, 1, stride, bias=False) if cin != cout or stride != 1 else None
        self.conv1, self.norm2 = nn.Conv2d(cin, mid, 1, bias=False), BatchNormAct2d(mid)
        self.conv2, self.norm3 = nn.Conv2d(mid, mid, 3, stride, 1, bias=False), BatchNormAct2d(mid)
        self.conv3 = nn.Conv2d(mid, cout, 1, bias=False)
        self.drop_path = nn.Identity()

    def forward(self, x):
        x_preact = self.norm1(x)
        shortcut = x if self.downsample is None else self.downsample(x_preact)
        x = self.conv3(self.norm3(self.conv2(self.norm2(self.conv1(x_preact)))))
        return self.drop_path(x) + shortcut


class ResNetV2(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, 2, 1, bias=False)
        self.stages = nn.Sequential(PreActBottleneck(16, 32, 8), PreActBottleneck(32, 32, 8),
                                    PreActBottleneck(32, 64, 16, 2), PreActBottleneck(64, 64, 16))
        self.norm = BatchNormAct2d(64)
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        return self.fc(self.norm(self.stages(self.stem(x))).mean((2, 3)))


class CrossStage(nn.Module):
    """CSPNet's cross stage (timm CrossStage/CrossStage3): expand, split in two halves (chunk), blocks on one
    half, concatenate, transition."""

    def __init__(self, cin, cout):
        super().__init__()
        self.conv_exp = ConvNormAct(cin, cout, 1)
        self.blocks = nn.Sequential(ConvNormAct(cout // 2, cout // 2, 1), ConvNormAct(cout // 2, cout // 2, 3))
        self.conv_transition = ConvNormAct(cout, cout, 1)

    def forward(self, x):
        x1, x2 = self.conv_exp(x).chunk(2, dim=1)
        return self.conv_transition(torch.cat([self.blocks(x1), x2], dim=1))


class CSPNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = ConvNormAct(3, 16, 3, 2)
        self.s1, self.s2 = CrossStage(16, 32), CrossStage(32, 64)
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        return self.fc(self.s2(self.s1(self.stem(x))).mean((2, 3)))


class DualPathBlock(nn.Module):
    """DPN: a grouped-conv bottleneck whose output is sliced into a residual part (added) and a dense part
    (concatenated), with literal slice bounds."""

    def __init__(self, cin_res, cin_dense, mid, res, inc):
        super().__init__()
        self.res, self.inc = res, inc
        self.c1 = ConvNormAct(cin_res + cin_dense, mid, 1)
        self.c2 = ConvNormAct(mid, mid, 3, groups=4)
        self.c3 = nn.Conv2d(mid, res + inc, 1, bias=False)

    def forward(self, x):
        x_in = torch.cat(x, dim=1)
        out = self.c3(self.c2(self.c1(x_in)))
        out1 = out[:, :self.res, :, :]
        out2 = out[:, self.res:, :, :]
        return x[0] + out1, torch.cat([x[1], out2], dim=1)


class DPN(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = ConvNormAct(3, 24, 3, 2)
        self.b1 = DualPathBlock(16, 8, 16, 16, 8)
        self.b2 = DualPathBlock(16, 16, 16, 16, 8)
        self.fc = nn.Linear(40, 10)

    def forward(self, x):
        s = self.stem(x)
        x = (s[:, :16], s[:, 16:])
        x = torch.cat(self.b2(self.b1(x)), dim=1)
        return self.fc(x.mean((2, 3)))


class CrossStageSplit(CrossStage):
    """timm's CrossStage3: the halves come from x.split(expand_chs // 2, dim=1), a literal size."""

    def forward(self, x):
        x1, x2 = self.conv_exp(x).split(self.conv_exp.conv.out_channels // 2, dim=1)
        return self.conv_transition(torch.cat([self.blocks(x1), x2], dim=1))


class CSPSplitNet(CSPNet):
    def __init__(self):
        super().__init__()
        self.s1, self.s2 = CrossStageSplit(16, 32), CrossStageSplit(32, 64)


class GroupNormAct(nn.GroupNorm):
    """timm's GroupNormAct: GroupNorm whose forward calls F.group_norm with its own tensors, then an activation."""

    def __init__(self, c, groups=4):
        super().__init__(groups, c)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.act(F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps))


class PreActBottleneckGN(PreActBottleneck):
    """ResNetV2 as in BiT: GroupNormAct instead of BatchNormAct2d."""

    def __init__(self, cin, cout, mid, stride=1):
        super().__init__(cin, cout, mid, stride)
        self.norm1, self.norm2, self.norm3 = GroupNormAct(cin), GroupNormAct(mid), GroupNormAct(mid)


class ResNetV2GN(ResNetV2):
    def __init__(self):
        super().__init__()
        self.stages = nn.Sequential(PreActBottleneckGN(16, 32, 8), PreActBottleneckGN(32, 32, 8),
                                    PreActBottleneckGN(32, 64, 16, 2), PreActBottleneckGN(64, 64, 16))
        self.norm = GroupNormAct(64)


# what a person would search (the minimum number of labels):
# DenseNet: stem, transition, each layer's bottleneck width (6) and each block's growth (2) -> 10
# Inception: stem + per block the 1x1 reduce widths and the 3x3 middle width and the pool projection (5) -> 11
# VoVNet: stem, the OSA chains' widths and the non-residual stage's output -> 4
# RepVGG: one width per stage (its branches are summed; no inner widths exist) -> 2
# ResNetV2: stem, two inner widths per block (8), the downsample widths of the two stages -> 11
# CSPNet: stem, per stage the expansion halves (one tied label), two block widths, the transition -> 9
# CSPNet with split(literal): as above but the halves are free of each other -> 11
# DPN: the stem's residual and dense parts, each block's bottleneck (grouped) width -> 4
@pytest.mark.parametrize("model, min_labels", [(DenseNet, 10), (InceptionNet, 11), (VoVNet, 4), (RepVGG, 2),
                                               (ResNetV2, 11), (CSPNet, 9), (CSPSplitNet, 11), (DPN, 4)])
def test_timm_style_structures_get_width_choices(model, min_labels):
    torch.manual_seed(0)
    space = _check(model(), torch.randn(1, 3, 32, 32), min_labels=min_labels)
    assert [g.fixed for g in space.conversion.fixed_groups] == ["the model's output (fc)"], space.summary()
    if model is CSPNet:  # the two halves of a chunk share one width label
        halves = [g for g in space.conversion.searched_groups if g.label == "s1.conv_exp.conv.width"]
        assert len(halves) == 2 and halves[0].width == halves[1].width == 16


# ----------------------------------------------------------------------------- transformers
# timm's ViT (qkv Linear, reshape(B, N, 3, heads, head_dim), unbind or indexing, scaled-dot-product attention or
# matmul/softmax, proj; Mlp fc1/act/fc2), Hugging Face BERT (separate q/k/v, view(B, N, heads, head_dim),
# matmul + softmax, context.view(... all_head_size)) and GPT-2 (Conv1D = addmm with a weight (in, out),
# split(split_size) of c_attn's output).

class TimmAttention(nn.Module):
    def __init__(self, dim, num_heads, fused=True):
        super().__init__()
        self.num_heads, self.head_dim, self.scale, self.fused = num_heads, dim // num_heads, (dim // num_heads) ** -0.5, fused
        self.qkv = nn.Linear(dim, dim * 3)
        self.q_norm, self.k_norm = nn.Identity(), nn.Identity()
        self.attn_drop, self.proj, self.proj_drop = nn.Dropout(0.0), nn.Linear(dim, dim), nn.Dropout(0.0)
    def forward(self, x):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        if self.fused:
            q, k, v = qkv.unbind(0)
            q, k = self.q_norm(q), self.k_norm(k)
            x = F.scaled_dot_product_attention(q, k, v)
        else:
            q, k, v = qkv[0], qkv[1], qkv[2]
            attn = (q * self.scale) @ k.transpose(-2, -1)
            x = self.attn_drop(attn.softmax(dim=-1)) @ v
        x = x.transpose(1, 2).reshape(B, N, C)
        return self.proj_drop(self.proj(x))

class Mlp(nn.Module):
    def __init__(self, d, h):
        super().__init__()
        self.fc1, self.act, self.drop1, self.norm, self.fc2, self.drop2 = nn.Linear(d, h), nn.GELU(), nn.Dropout(0.), nn.Identity(), nn.Linear(h, d), nn.Dropout(0.)
    def forward(self, x):
        return self.drop2(self.fc2(self.norm(self.drop1(self.act(self.fc1(x))))))

class Block(nn.Module):
    def __init__(self, d, h, fused):
        super().__init__()
        self.norm1, self.attn, self.norm2, self.mlp = nn.LayerNorm(d), TimmAttention(d, h, fused), nn.LayerNorm(d), Mlp(d, 4 * d)
        self.ls1 = self.ls2 = self.drop_path1 = self.drop_path2 = nn.Identity()
    def forward(self, x):
        x = x + self.drop_path1(self.ls1(self.attn(self.norm1(x))))
        return x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))

class ViT(nn.Module):
    def __init__(self, d=32, depth=2, heads=4, fused=True):
        super().__init__()
        self.patch = nn.Conv2d(3, d, 4, 4)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.randn(1, 17, d) * .02)
        self.blocks = nn.Sequential(*[Block(d, heads, fused) for _ in range(depth)])
        self.norm, self.head = nn.LayerNorm(d), nn.Linear(d, 10)
    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        return self.head(self.norm(self.blocks(x))[:, 0])

class BertSelfAttention(nn.Module):
    def __init__(self, d, h):
        super().__init__()
        self.num_attention_heads, self.attention_head_size = h, d // h
        self.all_head_size = h * (d // h)
        self.query, self.key, self.value = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        self.dropout = nn.Dropout(0.)
    def transpose_for_scores(self, x):
        new_shape = x.size()[:-1] + (self.num_attention_heads, self.attention_head_size)
        return x.view(new_shape).permute(0, 2, 1, 3)
    def forward(self, hidden):
        q = self.transpose_for_scores(self.query(hidden))
        k = self.transpose_for_scores(self.key(hidden))
        v = self.transpose_for_scores(self.value(hidden))
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.attention_head_size)
        probs = self.dropout(nn.functional.softmax(scores, dim=-1))
        ctx = torch.matmul(probs, v).permute(0, 2, 1, 3).contiguous()
        return ctx.view(ctx.size()[:-2] + (self.all_head_size,))

class BertLayer(nn.Module):
    def __init__(self, d, h):
        super().__init__()
        self.self_attn = BertSelfAttention(d, h)
        self.attn_out, self.ln1 = nn.Linear(d, d), nn.LayerNorm(d)
        self.intermediate, self.output, self.ln2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d), nn.LayerNorm(d)
    def forward(self, x):
        x = self.ln1(self.attn_out(self.self_attn(x)) + x)
        return self.ln2(self.output(F.gelu(self.intermediate(x))) + x)

class Conv1D(nn.Module):
    def __init__(self, nf, nx):
        super().__init__()
        self.nf = nf
        self.weight = nn.Parameter(torch.randn(nx, nf) * 0.02)
        self.bias = nn.Parameter(torch.zeros(nf))
    def forward(self, x):
        size_out = x.size()[:-1] + (self.nf,)
        x = torch.addmm(self.bias, x.view(-1, x.size(-1)), self.weight)
        return x.view(size_out)

class GPT2MLP(nn.Module):
    def __init__(self, d, inner):
        super().__init__()
        self.c_fc, self.c_proj = Conv1D(inner, d), Conv1D(d, inner)
    def forward(self, x):
        return self.c_proj(F.gelu(self.c_fc(x)))

class GPT2Attention(nn.Module):
    def __init__(self, d, h):
        super().__init__()
        self.n_head, self.split_size, self.head_dim = h, d, d // h
        self.c_attn, self.c_proj = Conv1D(3 * d, d), Conv1D(d, d)
    def forward(self, x):
        q, k, v = self.c_attn(x).split(self.split_size, dim=2)
        shape = q.size()[:-1] + (self.n_head, self.head_dim)
        q, k, v = (t.view(shape).transpose(1, 2) for t in (q, k, v))
        w = torch.matmul(q, k.transpose(-1, -2)) / (v.size(-1) ** 0.5)
        a = torch.matmul(w.softmax(-1), v).transpose(1, 2).contiguous()
        return self.c_proj(a.view(a.size()[:-2] + (self.n_head * self.head_dim,)))

class GPT2Block(nn.Module):
    def __init__(self, d, h):
        super().__init__()
        self.ln_1, self.attn, self.ln_2, self.mlp = nn.LayerNorm(d), GPT2Attention(d, h), nn.LayerNorm(d), GPT2MLP(d, 4 * d)
    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))

class Seq(nn.Module):
    def __init__(self, block, d=32, h=4):
        super().__init__()
        self.inp, self.head = nn.Linear(8, d), nn.Linear(d, 3)
        self.blocks = nn.Sequential(block(d, h), block(d, h))
    def forward(self, x):
        return self.head(self.blocks(self.inp(x)).mean(1))


# what a person would search: each block's MLP hidden width and head count (2 blocks), and the embedding
# (residual) width. GPT-2's c_attn output is cut by split(split_size) (a literal size, which then follows the
# sample) before its heads are split off.
_VIT = {"patch.width", "blocks.0.attn.qkv.heads", "blocks.1.attn.qkv.heads", "blocks.0.mlp.fc1.width",
        "blocks.1.mlp.fc1.width"}
_BERT = {"inp.width", "blocks.0.self_attn.query.heads", "blocks.1.self_attn.query.heads",
         "blocks.0.intermediate.width", "blocks.1.intermediate.width"}


@pytest.mark.parametrize("make, x, labels", [
    (lambda: ViT(fused=False), (2, 3, 16, 16), _VIT),
    (lambda: ViT(fused=True), (2, 3, 16, 16), _VIT),
    (lambda: Seq(BertLayer), (2, 5, 8), _BERT),
    (lambda: Seq(GPT2Block), (2, 5, 8), {"blocks.0.mlp.c_fc.width", "blocks.1.mlp.c_fc.width",
                                         "inp.width", "blocks.0.attn.c_attn.heads",
                                         "blocks.1.attn.c_attn.heads"}),
])
def test_transformer_heads_embedding_and_mlp_widths_are_searchable(make, x, labels):
    torch.manual_seed(0)
    space = _check(make(), torch.randn(*x), min_labels=len(labels), profile=True)
    assert labels == set(space.choices()), space.summary()
    for label, values in space.choices().items():
        if label.endswith(".heads"):
            assert values == (1, 2, 3, 4)  # of 4 heads of 8 dims: q, k, v and the output projection follow
    sample = {k: min(v) for k, v in space.choices().items()}
    subnet = hwnas.export(space, sample)
    name = next(k for k in labels if k.endswith(".heads")).removesuffix(".heads")
    if name.endswith("qkv") or name.endswith("query"):  # one head left: q (or qkv's three parts) keep 8 rows each
        rows = subnet.get_submodule(f"net.{name}").out_features
        assert rows == 8 * (3 if name.endswith("qkv") else 1)


class _BertEmbeddings(nn.Module):
    """Token embedding + a learned position embedding, then a BERT layer: the embedding width is searchable."""

    def __init__(self):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(50, 32), nn.Parameter(torch.randn(1, 5, 32))
        self.blocks = nn.Sequential(BertLayer(32, 4))
        self.head = nn.Linear(32, 3)

    def forward(self, ids):
        return self.head(self.blocks(self.wte(ids) + self.wpe).mean(1))


def test_embedding_width_is_searchable():
    torch.manual_seed(0)
    space = _check(_BertEmbeddings(), torch.randint(0, 50, (2, 5)), min_labels=3)
    assert set(space.choices()) == {"wte.width", "blocks.0.self_attn.query.heads", "blocks.0.intermediate.width"}
    subnet = hwnas.export(space, {**space.max_sample(), "wte.width": 8})
    assert subnet.get_submodule("net.wte").weight.shape == (50, 8) and subnet.get_parameter("net.wpe.value").shape \
        == (1, 5, 8)


class _GroupNorms(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.g = nn.Conv2d(3, 32, 3, padding=1), nn.GroupNorm(8, 32)
        self.b, self.g2 = nn.Conv2d(32, 16, 3, padding=1), nn.GroupNorm(4, 16, affine=False)
        self.fc = nn.Linear(16, 3)

    def forward(self, x):
        return self.fc(self.g2(self.b(torch.relu(self.g(self.a(x))))).mean((2, 3)))


def test_group_norm_keeps_its_channels_per_group():
    torch.manual_seed(0)
    space = _check(_GroupNorms(), torch.randn(2, 3, 8, 8), min_labels=2)
    assert space.choices() == {"a.width": (8, 16, 24, 32), "b.width": (4, 8, 12, 16)}  # 4 channels per group
    gn = hwnas.export(space, {"a.width": 8, "b.width": 4}).get_submodule("net.g")
    assert (gn.num_groups, gn.num_channels) == (2, 8)


def test_bit_resnetv2_with_functional_group_norm():
    """timm's GroupNormAct calls F.group_norm(x, self.num_groups, ...): the group count is rewritten to follow
    the width."""
    torch.manual_seed(0)
    space = _check(ResNetV2GN(), torch.randn(1, 3, 32, 32), min_labels=11, profile=True)
    assert [g.fixed for g in space.conversion.fixed_groups] == ["the model's output (fc)"]


# ----------------------------------------------------------------------------- Swin's patch merging


class PatchMerging(nn.Module):
    """Swin's patch merging: four strided views concatenated on the channel axis, LayerNorm(4C), Linear(4C, 2C)."""

    def __init__(self, dim):
        super().__init__()
        self.norm, self.reduction = nn.LayerNorm(4 * dim), nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x):
        x0, x1 = x[:, 0::2, 0::2, :], x[:, 1::2, 0::2, :]
        x2, x3 = x[:, 0::2, 1::2, :], x[:, 1::2, 1::2, :]
        return self.reduction(self.norm(torch.cat([x0, x1, x2, x3], -1)))


class SwinLike(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed, self.norm0 = nn.Conv2d(3, 16, 4, 4), nn.LayerNorm(16)
        self.mlp = nn.Sequential(nn.Linear(16, 64), nn.GELU(), nn.Linear(64, 16))
        self.merge = PatchMerging(16)
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        x = self.norm0(self.embed(x).permute(0, 2, 3, 1))
        x = x + self.mlp(x)
        return self.head(self.merge(x).mean((1, 2)))


def test_swin_patch_merging_layer_norm_over_a_concatenation():
    # the embedding width (seen four times in the merge's concatenation), the MLP width, the merge's output
    torch.manual_seed(0)
    space = _check(SwinLike(), torch.randn(2, 3, 16, 16), min_labels=3)
    assert set(space.choices()) == {"embed.width", "mlp.0.width", "merge.reduction.width"}
    ln = hwnas.export(space, {**space.max_sample(), "embed.width": 4}).get_submodule("net.merge.norm")
    assert ln.normalized_shape == (16,)


def test_timm_style_functional_batch_norm_follows_train_and_eval_and_restores(tmp_path):
    """A model passed in train mode: its BatchNormAct2d (F.batch_norm over its own tensors) becomes a batch norm
    layer, so the space uses batch statistics in train() and running ones in eval(), like the model; save and
    restore keep every tensor."""
    torch.manual_seed(0)
    model, x = CSPSplitNet(), torch.randn(4, 3, 16, 16)
    space = hwnas.convert(model, x)
    assert space.training
    with torch.no_grad():
        torch.testing.assert_close(space(x), model(x), rtol=1e-4, atol=1e-5)  # batch statistics in both
        torch.testing.assert_close(space.eval()(x), model.eval()(x), rtol=1e-4, atol=1e-5)
    path = hwnas.save(space, tmp_path / "csp.pt")
    torch.manual_seed(1)
    again = hwnas.restore(CSPSplitNet(), path).eval()
    sample = space.random_sample(2)
    with torch.no_grad():
        torch.testing.assert_close(again.apply_arch(sample)(x), space.apply_arch(sample)(x))


# ----------------------------------------------------------------------------- ConvNeXt (timm's LayerNorm2d)


class LayerNorm2d(nn.LayerNorm):
    """timm's LayerNorm2d: F.layer_norm over channels-last maps, with its own tensors."""

    def forward(self, x):
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class ConvNeXtBlock(nn.Module):
    """ConvNeXt: depthwise 7x7, LayerNorm2d-like norm, MLP as 1x1 convs, layer scale, residual."""

    def __init__(self, dim):
        super().__init__()
        self.conv_dw = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = LayerNorm2d(dim)
        self.fc1, self.act, self.fc2 = nn.Conv2d(dim, 4 * dim, 1), nn.GELU(), nn.Conv2d(4 * dim, dim, 1)
        self.gamma = nn.Parameter(torch.full((dim,), 0.5))

    def forward(self, x):
        y = self.fc2(self.act(self.fc1(self.norm(self.conv_dw(x)))))
        return x + y.mul(self.gamma.reshape(1, -1, 1, 1))


class ConvNeXtLike(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem, self.stem_norm = nn.Conv2d(3, 16, 4, 4), LayerNorm2d(16)
        self.stages = nn.Sequential(ConvNeXtBlock(16), ConvNeXtBlock(16))
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        return self.head(self.stages(self.stem_norm(self.stem(x))).mean((2, 3)))


def test_convnext_with_functional_layer_norm_and_layer_scale():
    # the stem/residual width (depthwise convs, LayerNorm2d, layer scale follow it) and each block's MLP width
    torch.manual_seed(0)
    space = _check(ConvNeXtLike(), torch.randn(2, 3, 16, 16), min_labels=3)
    assert set(space.choices()) == {"stem.width", "stages.0.fc1.width", "stages.1.fc1.width"}


# ----------------------------------------------------------------------------- timm's Linear (F.linear)


class TimmLinear(nn.Linear):
    """timm's Linear: nn.Linear whose forward calls F.linear itself."""

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)


class TimmMlpNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.head = TimmLinear(8, 32), TimmLinear(32, 8), TimmLinear(8, 3)

    def forward(self, x):
        return self.head(x + self.fc2(F.gelu(self.fc1(x))))


def test_functional_linear_over_the_models_weight():
    torch.manual_seed(0)
    space = _check(TimmMlpNet(), torch.randn(2, 5, 8), min_labels=1)
    assert set(space.choices()) == {"fc1.width"}  # the residual width is the model's input: fixed


# ----------------------------------------------------------------------------- fixed chunks (EdgeNeXt, MaxViT)
class _FixedChunk(nn.Module):
    """A chunk whose equal parts are fixed together (one part reaches the model's output), next to a searched
    conv: convert gave a KeyError on the fixed tie (timm's EdgeNeXt and MaxViT, torchvision's MaxViT)."""

    def __init__(self):
        super().__init__()
        self.stem, self.mid = nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 16, 3, padding=1)
        self.left = nn.Conv2d(8, 8, 1)

    def forward(self, x):
        a, b = self.mid(F.relu(self.stem(x))).chunk(2, dim=1)
        return torch.cat([self.left(a), b], 1)


def test_a_chunk_whose_parts_are_fixed_converts():
    space = _check(_FixedChunk(), torch.randn(1, 3, 12, 12), min_labels=1)
    assert "stem.width" in space.choices(), space.summary()


# ----------------------------------------------------------------------------- EfficientViM's HSM-SSD, by hand
class _HSMSSD(nn.Module):
    """timm's EfficientViM mixer: split(B, C, dt) of one projection, a state axis that a pointwise Conv1d
    carries along its length (``hz``, ``out``) before ``h @ c`` contracts it again. The state group's
    permutation must reach ``c``: the largest subnet differed from the model by 0.03 before."""

    def __init__(self, dim: int = 16, state: int = 6):
        super().__init__()
        self.state = state
        self.stem = nn.Conv2d(3, dim, 3, padding=1)
        self.bcdt, self.dw = nn.Conv1d(dim, 3 * state, 1), nn.Conv2d(3 * state, 3 * state, 3, padding=1,
                                                                     groups=3 * state)
        self.A = nn.Parameter(torch.rand(state) * 4)
        self.hz, self.out = nn.Conv1d(dim, 2 * dim, 1), nn.Conv1d(dim, dim, 1)

    def forward(self, x):
        x = self.stem(x)
        b_, _, h_, w_ = x.shape
        x = x.flatten(2)
        bcdt = self.dw(self.bcdt(x).reshape(b_, -1, h_, w_)).flatten(2)
        b, c, dt = torch.split(bcdt, [self.state, self.state, self.state], dim=1)
        a = (dt + self.A.view(1, -1, 1)).softmax(-1)
        h = x @ (a * b).transpose(-2, -1)
        h, z = torch.split(self.hz(h), [16, 16], dim=1)
        h = self.out(h * F.silu(z) + h)
        return (h @ c).reshape(b_, -1, h_, w_)


class _SpatialConvOverState(_HSMSSD):
    """The same, but a 3-tap Conv1d mixes neighbours along the state axis: the state keeps its channels."""

    def __init__(self):
        super().__init__()
        self.out = nn.Conv1d(16, 16, 3, padding=1)


def test_a_channel_group_carried_along_a_pointwise_conv1d_axis_keeps_its_permutation():
    space = _check(_HSMSSD(), torch.randn(1, 3, 8, 8), min_labels=3)
    assert "bcdt.width" in space.choices(), space.summary()


def test_a_channel_group_along_a_mixing_conv_axis_is_fixed_with_the_reason():
    space = _check(_SpatialConvOverState(), torch.randn(1, 3, 8, 8), min_labels=2)
    assert "bcdt.width" not in space.choices() and "spatial axis of the convolution out" in space.summary()


# ----------------------------------------------------------------------------- timm's not-traceable marks
class _MarkedBlock(nn.Module):
    """A plain residual block that a third party marks not traceable (timm's NormFreeBlock is registered with
    ``register_notrace_module`` for its feature extraction): NF-RegNet converted to 0 labels."""

    def __init__(self, c: int = 16):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(c, 2 * c, 1), nn.Conv2d(2 * c, c, 1)

    def forward(self, x):
        return x + self.conv2(F.relu(self.conv1(x)))


class _Untraceable(_MarkedBlock):
    def forward(self, x):
        if x.sum() > 0:  # data-dependent: torch.fx cannot trace it
            return x + self.conv2(F.relu(self.conv1(x)))
        return x


def test_a_block_marked_not_traceable_by_a_third_party_is_searched_inside_when_fx_traces_it(monkeypatch):
    import hwnas.graph.trace as trace

    monkeypatch.setattr(trace, "third_party_leaf_classes", lambda: (_MarkedBlock,))
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), _MarkedBlock(), _Untraceable(), nn.Conv2d(16, 4, 1))
    space = _check(model, torch.randn(1, 3, 8, 8), min_labels=1)
    assert "1.conv1.width" in space.choices() and "2.conv1.width" not in space.choices(), space.summary()


# ----------------------------------------------------------------------------- PoolFormerV2, by hand
class _StarReLU(nn.Module):
    def __init__(self):
        super().__init__()
        self.scale, self.bias = nn.Parameter(torch.ones(1)), nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return self.scale * F.relu(x) ** 2 + self.bias


class _GroupNorm1(nn.GroupNorm):
    """timm's GroupNorm1: ``F.group_norm(x, 1, ...)`` with its own tensors."""

    def __init__(self, c: int):
        super().__init__(1, c)

    def forward(self, x):
        return F.group_norm(x, 1, self.weight, self.bias, self.eps)


class _PoolFormerBlock(nn.Module):
    """timm's PoolFormerV2 block: ``GroupNorm(1, C)`` norms (one group of any width) and StarReLU (``** 2``);
    poolformerv2_s12 converted to 0 labels (its widths were 'too narrow', its MLPs fixed by ``pow``)."""

    def __init__(self, c: int = 16):
        super().__init__()
        self.norm1, self.norm2 = nn.GroupNorm(1, c), _GroupNorm1(c)
        self.pool = nn.AvgPool2d(3, 1, 1, count_include_pad=False)
        self.fc1, self.act, self.fc2 = nn.Conv2d(c, 4 * c, 1), _StarReLU(), nn.Conv2d(4 * c, c, 1)

    def forward(self, x):
        y = self.norm1(x)
        x = x + self.pool(y) - y
        return x + self.fc2(self.act(self.fc1(self.norm2(x))))


def test_poolformer_lookalike_searches_single_group_norms_and_star_relu_mlps():
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), _PoolFormerBlock(), _PoolFormerBlock(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5))
    space = _check(model, torch.randn(1, 3, 8, 8), min_labels=3)
    assert {"0.width", "1.fc1.width", "2.fc1.width"} <= set(space.choices()), space.summary()


# ----------------------------------------------------------------------------- EdgeNeXt's uneven chunk
class _UnevenChunk(nn.Module):
    """timm's EdgeNeXt SplitTransposeBlock: ``x.chunk(3, dim=1)`` of 88 channels gives 30, 30 and 28 (torch's
    last part takes the rest); the shape rule gave 3 x 30, and the profile failed ("declares in_features = 88
    but its input has 90")."""

    def __init__(self, c: int = 88):
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, padding=1)
        self.convs = nn.ModuleList(nn.Conv2d(30, 30, 3, padding=1, groups=30) for _ in range(2))
        self.fc = nn.Linear(c, 10)

    def forward(self, x):
        parts = self.stem(x).chunk(3, dim=1)
        y = torch.cat([self.convs[0](parts[0]), self.convs[1](parts[1]), parts[2]], 1)
        return self.fc(y.mean((2, 3)))


def test_an_uneven_chunk_is_profiled_and_converted_exactly():
    model, x = _UnevenChunk().eval(), torch.randn(1, 3, 8, 8)
    assert hwnas.FlopsProfiler(model, x).profile({}) == fvcore_flops(model, x)
    _check(model, x, min_labels=0)


# ----------------------------------------------------------------------------- Hiera's optional mask
class _MaskedStem(nn.Module):
    """timm's Hiera: ``forward(x, mask=None)`` with ``if mask is not None`` branches; torch.fx traced ``mask``
    as a tensor, so the converted model ran the masked branch ('NoneType' object has no attribute 'view')."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 8, 1)

    def forward(self, x, mask=None):
        y = F.relu(self.conv1(x))
        if mask is not None:
            y = y * mask.view(x.shape[0], 1, *y.shape[2:])
        return self.conv2(y)


def test_an_optional_none_argument_is_traced_as_none():
    space = _check(_MaskedStem(), torch.randn(1, 3, 8, 8), min_labels=1)
    assert "conv1.width" in space.choices(), space.summary()
