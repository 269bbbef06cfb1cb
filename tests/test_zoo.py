"""Tests of hwnas.zoo: exact parameter counts against the published torchvision/timm models,
forward shapes, torch.fx tracing, ONNX Runtime agreement and registry errors."""

from __future__ import annotations

import ast
import functools
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import fx, nn

from hwnas import zoo
from hwnas.zoo import _registry
from hwnas.zoo.regnet import RegNetParams
from hwnas.zoo.shufflenet import channel_shuffle

# Published parameter counts at num_classes=1000 (torchvision model docs; timm for vit_tiny,
# i.e. vit_tiny_patch16_224). These are the independent reference.
PUBLISHED_PARAMS = {
    "resnet18": 11_689_512,
    "resnet50": 25_557_032,
    "mobilenet_v2": 3_504_872,
    "mobilenet_v3_large": 5_483_032,
    "mobilenet_v3_small": 2_542_856,
    "efficientnet_b0": 5_288_548,
    "shufflenet_v2_x1_0": 2_278_604,
    "squeezenet1_0": 1_248_424,
    "vgg11_bn": 132_868_840,
    "vgg16": 138_357_544,
    "densenet121": 7_978_856,
    "regnet_x_400mf": 5_495_976,
    "vit_b_16": 86_567_656,
    "vit_tiny": 5_717_416,
}
VITS = {"vit_tiny", "vit_b_16"}
# Models whose 224x224 forward pass is too slow for the default run (>7 GMACs).
BIG = {"vgg11_bn", "vgg16", "vit_b_16"}
SMALL = sorted(set(PUBLISHED_PARAMS) - BIG)
ONNX_MODELS = ["resnet18", "mobilenet_v3_small", "shufflenet_v2_x1_0", "squeezenet1_0", "densenet121"]


@functools.cache
def _small_model(name: str) -> nn.Module:
    """A seeded model in eval mode, built once per test session (small models only)."""
    assert name not in BIG, "do not cache the big models"
    torch.manual_seed(0)
    return zoo.create(name).eval()


def _model(name: str) -> nn.Module:
    if name in BIG:
        torch.manual_seed(0)
        return zoo.create(name).eval()
    return _small_model(name)


def _input(size: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _assert_close_to_scale(got: np.ndarray, expected: np.ndarray, rel: float) -> None:
    """``|got - expected| <= rel * max|expected|`` elementwise, with a finite, non-zero scale."""
    scale = float(np.abs(expected).max())
    assert math.isfinite(scale) and scale > 0, f"degenerate reference output (max |y| = {scale})"
    np.testing.assert_allclose(got, expected, rtol=0, atol=rel * scale)


# --------------------------------------------------------------------------- registry


def test_list_is_sorted_and_complete():
    names = zoo.list()
    assert names == sorted(PUBLISHED_PARAMS)
    assert zoo.list_models() == names


def test_unknown_name_error_names_it_and_lists_choices():
    with pytest.raises(ValueError) as info:
        zoo.create("resnet_18")
    message = str(info.value)
    assert "'resnet_18'" in message
    for name in PUBLISHED_PARAMS:
        assert name in message


def test_duplicate_registration_raises_and_keeps_original():
    with pytest.raises(ValueError, match="'resnet18' is already registered"):
        zoo.register_model("resnet18")(lambda num_classes=1000: nn.Identity())
    with torch.device("meta"):
        assert type(zoo.create("resnet18")).__name__ == "ResNet"


def test_register_new_model(monkeypatch):
    monkeypatch.setattr(_registry, "_MODELS", dict(_registry._MODELS))

    @zoo.register_model("tiny_linear")
    def tiny_linear(num_classes: int = 1000, hidden: int = 4) -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.LazyLinear(hidden), nn.Linear(hidden, num_classes))

    assert "tiny_linear" in zoo.list()
    model = zoo.create("tiny_linear", num_classes=3, hidden=5)
    assert model[2].in_features == 5 and model[2].out_features == 3


def test_zoo_imports_no_other_hwnas_package():
    """The zoo sits below every other hwnas package: it may import only torch and itself."""
    for path in Path(zoo.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                modules = [node.module]
            elif isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            else:
                continue
            for module in modules:
                assert not module.startswith("torchvision"), f"{path.name} imports {module}"
                if module.startswith("hwnas"):
                    assert module.startswith("hwnas.zoo"), f"{path.name} imports {module}"


# --------------------------------------------------------------------------- parameter counts


@pytest.mark.parametrize("name", sorted(PUBLISHED_PARAMS))
def test_param_count_matches_published(name):
    # Built on the meta device: same modules and shapes, no memory and no initialisation cost.
    with torch.device("meta"):
        model = zoo.create(name)
    assert sum(p.numel() for p in model.parameters()) == PUBLISHED_PARAMS[name]


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small", "efficientnet_b0", "densenet121"])
def test_num_classes_changes_only_the_head(name):
    with torch.device("meta"):
        model = zoo.create(name, num_classes=10)
    head = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    expected = PUBLISHED_PARAMS[name] - (head.in_features + 1) * (1000 - 10)
    assert sum(p.numel() for p in model.parameters()) == expected


def test_vit_image_size_changes_only_pos_embedding():
    with torch.device("meta"):
        model = zoo.create("vit_tiny", image_size=160)
    tokens_224, tokens_160 = 14 * 14 + 1, 10 * 10 + 1
    expected = PUBLISHED_PARAMS["vit_tiny"] - (tokens_224 - tokens_160) * 192
    assert sum(p.numel() for p in model.parameters()) == expected


# Published compute at 224x224 in GMACs (multiply-adds, which the papers and torchvision's tables call "FLOPs"),
# with the number of decimals given there. A wrong stride or pooling changes it by 2x or 4x while leaving the
# parameter count alone. Sources: He et al. 2016 (Deep Residual Learning), Table 1: ResNet-18 1.8e9; torchvision's
# model documentation ("GFLOPS" column, ResNet-50 as torchvision builds it, with the stride on the 3x3 conv: the
# paper's 3.8e9 is the original placement); Sandler et al. 2018 (MobileNetV2), Table 4: 300M MAdds (the same row's
# 3.4M parameters is below the architecture's exact 3,504,872 that torchvision and Keras count, checked above; the
# zoo gives 300.8M multiply-adds); Howard et al. 2019
# (Searching for MobileNetV3), Table 3: Large 219M, Small 56M; Tan & Le 2019 (EfficientNet), Table 2: B0 0.39B;
# Ma et al. 2018 (ShuffleNet V2), Table 8: 1x 146M FLOPs, i.e. multiply-adds, and 2.3M parameters (the same row in
# megvii-model/ShuffleNet-Series' README; the zoo gives 144.9M and 2,278,604); Huang et al. 2017 (DenseNet), via
# torchvision's table 2.83;
# Radosavovic et al. 2020 (Designing Network Design Spaces): RegNetX-400MF, 0.4 GF by name (torchvision 0.41);
# torchvision's table for SqueezeNet 1.0 (0.82), VGG-11-BN (7.61), VGG-16 (15.47) and ViT-B/16 (17.56);
# Touvron et al. 2021 (DeiT) and timm's model card: DeiT-Ti = vit_tiny_patch16_224, 1.3 GFLOPs.
PUBLISHED_GMACS = {
    "resnet18": (1.8, 1), "resnet50": (4.09, 2), "mobilenet_v2": (0.300, 3), "mobilenet_v3_large": (0.219, 3),
    "mobilenet_v3_small": (0.056, 3), "efficientnet_b0": (0.39, 2), "shufflenet_v2_x1_0": (0.146, 3),
    "squeezenet1_0": (0.82, 2), "vgg11_bn": (7.61, 2), "vgg16": (15.47, 2), "densenet121": (2.83, 2),
    "regnet_x_400mf": (0.41, 2), "vit_b_16": (17.56, 2), "vit_tiny": (1.3, 1),
}


@pytest.mark.parametrize("name", sorted(PUBLISHED_GMACS))
def test_macs_at_224_match_the_published_figure(name):
    """Multiply-adds counted by torch's own FlopCounterMode (2 FLOPs per multiply-add, convolutions and matrix
    products only, as the papers count) on a model built on the meta device (no weights, no arithmetic: fast even
    for VGG-16). Bound: half a unit of the published figure's last digit, plus 1.5% for what the papers leave out or
    round (squeeze-excitation, attention softmax scaling)."""
    from torch.utils.flop_counter import FlopCounterMode

    published, decimals = PUBLISHED_GMACS[name]
    with torch.device("meta"):
        model = zoo.create(name).eval()
        x = torch.zeros(1, 3, 224, 224)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    gmacs = counter.get_total_flops() / 2e9
    assert abs(gmacs - published) <= 0.5 * 10 ** -decimals + 0.015 * published, (name, gmacs, published)


# --------------------------------------------------------------------------- building blocks


def test_channel_shuffle_matches_index_permutation():
    n, groups, per_group = 2, 3, 4
    x = torch.randn(n, groups * per_group, 5, 5)
    # Output channel i*groups + g is input channel g*per_group + i (Zhang et al. 2018).
    order = [g * per_group + i for i in range(per_group) for g in range(groups)]
    torch.testing.assert_close(channel_shuffle(x, groups), x[:, order], rtol=0, atol=0)


def test_regnet_x_400mf_stages_match_published():
    # RegNetX-400MF widths and depths as published (pycls/torchvision model cards).
    stages = RegNetParams(depth=22, w_0=24, w_a=24.48, w_m=2.54, group_width=16).stages()
    assert [w for w, _, _ in stages] == [32, 64, 160, 400]
    assert [d for _, d, _ in stages] == [1, 2, 7, 12]


@pytest.mark.parametrize("name", SMALL)
def test_no_subnormal_or_nonfinite_weights(name):
    model = _model(name)
    for pname, p in model.named_parameters():
        values = p.detach()
        assert torch.isfinite(values).all(), pname
        nonzero = values[values != 0].abs()
        assert nonzero.numel() == 0 or nonzero.min() >= torch.finfo(values.dtype).tiny, pname


# --------------------------------------------------------------------------- forward passes


@pytest.mark.parametrize("name", SMALL)
def test_forward_shape(name):
    model = _model(name)
    sizes = [224] if name in VITS else [224, 160]
    with torch.no_grad():
        for size in sizes:
            y = model(_input(size))
            assert y.shape == (1, 1000), (name, size)
            assert torch.isfinite(y).all(), (name, size)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(BIG))
def test_forward_shape_big(name):
    model = _model(name)
    sizes = [224] if name in VITS else [224, 160]
    with torch.no_grad():
        for size in sizes:
            assert model(_input(size)).shape == (1, 1000), (name, size)


@pytest.mark.parametrize("name", ["mobilenet_v3_small", "vit_tiny"])
def test_num_classes_forward(name):
    torch.manual_seed(0)
    model = zoo.create(name, num_classes=7).eval()
    size = 224 if name in VITS else 64
    with torch.no_grad():
        assert model(_input(size)).shape == (1, 7)


def test_vit_rejects_other_resolutions_with_a_clear_error():
    model = _model("vit_tiny")
    with pytest.raises(ValueError, match=r"224x224.*image_size.*got \(1, 3, 160, 160\)"):
        model(_input(160))
    traced = fx.symbolic_trace(model)
    with pytest.raises(AssertionError, match="224x224"):
        traced(_input(160))


def test_vit_built_for_160_runs_at_160():
    torch.manual_seed(0)
    model = zoo.create("vit_tiny", image_size=160).eval()
    with torch.no_grad():
        assert model(_input(160)).shape == (1, 1000)


# --------------------------------------------------------------------------- torch.fx


def _fx_matches_eager(model: nn.Module, x: torch.Tensor) -> None:
    traced = fx.symbolic_trace(model)
    with torch.no_grad():
        expected = model(x)
        got = traced(x)
    _assert_close_to_scale(got.numpy(), expected.numpy(), rel=1e-6)


@pytest.mark.parametrize("name", sorted(PUBLISHED_PARAMS))
def test_fx_trace_matches_eager(name):
    if name == "vit_b_16":
        # Keep the default run fast: the same network with a 2x2-patch position embedding
        # (the only difference to 224x224); the full size runs in test_fx_trace_matches_eager_big.
        torch.manual_seed(0)
        model, size = zoo.create(name, image_size=32).eval(), 32
    elif name in VITS:
        model, size = _model(name), 224
    else:
        # VGG's 7x7 adaptive pool accepts 32x32 (a 1x1 feature map); the others take 64x64.
        model, size = _model(name), 32 if name in BIG else 64
    _fx_matches_eager(model, _input(size))


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(BIG))
def test_fx_trace_matches_eager_big(name):
    _fx_matches_eager(_model(name), _input(224))


def test_vit_attention_is_one_fx_leaf_per_block():
    traced = fx.symbolic_trace(_model("vit_tiny"))
    modules = dict(traced.named_modules())
    attention_calls = [
        node
        for node in traced.graph.nodes
        if node.op == "call_module" and isinstance(modules[node.target], nn.MultiheadAttention)
    ]
    assert len(attention_calls) == 12


# --------------------------------------------------------------------------- ONNX Runtime


def _onnx_matches_torch(model: nn.Module, x: torch.Tensor, path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    torch.onnx.export(model, x, str(path), dynamo=False, opset_version=17)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        expected = model(x).numpy()
    assert got.shape == expected.shape
    _assert_close_to_scale(got, expected, rel=1e-4)


@pytest.mark.parametrize("name", ONNX_MODELS)
def test_onnx_runtime_matches_torch(name, tmp_path):
    _onnx_matches_torch(_model(name), _input(64), tmp_path / f"{name}.onnx")


def test_onnx_runtime_matches_torch_vit_tiny(tmp_path):
    _onnx_matches_torch(_model("vit_tiny"), _input(224), tmp_path / "vit_tiny.onnx")


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(set(PUBLISHED_PARAMS) - set(ONNX_MODELS) - {"vit_tiny"}))
def test_onnx_runtime_matches_torch_all(name, tmp_path):
    # 224x224: VGG's 7x7 adaptive pool only exports when 7 divides the feature map.
    _onnx_matches_torch(_model(name), _input(224), tmp_path / f"{name}.onnx")
