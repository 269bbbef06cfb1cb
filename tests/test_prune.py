"""hwnas.prune and the native API gains it rests on: keyword dummy inputs, per-layer rules, the fastnas / autonas
modes, conversion without a dummy input, GradNAS scores. Every count is checked against fvcore, sum(numel) or
the model's own forward pass."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import fvcore_flops, num_params
from torch import nn

import hwnas
from hwnas import zoo
from hwnas.convert import ConversionError
from hwnas.prune import gradnas_scores
from hwnas.prune_io import restore_pruned

SIZE = 32


def resnet():
    torch.manual_seed(0)
    return zoo.create("resnet18", num_classes=10).eval()


def batches(n=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n, 3, SIZE, SIZE, generator=g), torch.randint(0, 10, (n,), generator=g)
    return [(x[i:i + 8], y[i:i + 8]) for i in range(0, n, 8)]


class TwoInputs(nn.Module):
    """A model whose second input is optional and often given by keyword."""

    def __init__(self):
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU())
        self.b = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU())
        self.head = nn.Linear(32, 5)

    def forward(self, x, y=None):
        return self.head((self.a(x) + self.b(y)).mean((2, 3)))


def test_keyword_dummy_input_through_convert_profile_search_export():
    torch.manual_seed(0)
    model = TwoInputs().eval()
    x, y = torch.randn(2, 3, 16, 16), torch.randn(2, 3, 16, 16)
    dummy = (x, {"y": y})
    space = hwnas.convert(model, dummy, mode="fastnas")
    with torch.no_grad():
        assert torch.allclose(space(x, y), model(x, y), atol=1e-5)
    summary = hwnas.profile(space, dummy, {"flops": "60%"}, verbose=False)
    assert summary.metrics["flops"][2] == fvcore_flops(model, (x, y))
    result = hwnas.search(space, dummy, {"flops": "60%"}, lambda s: sum(s.values()), max_trials=5, progress=False)
    assert fvcore_flops(result.subnet, (x, y)) == result.best_metrics["flops"] <= 0.6 * fvcore_flops(model, (x, y))
    assert num_params(result.subnet) == result.best_metrics["params"]
    with pytest.raises(ConversionError, match="does not take"):
        hwnas.convert(model, (x, {"z": y}))
    with pytest.raises(ConversionError, match="both positionally and as keywords"):
        hwnas.convert(model, (x, y, {"y": y}))


def test_rules_by_type_and_name_pattern():
    rules = {"nn.Conv2d": {"*": {"channels_ratio": (0.5, 1.0), "kernel_size": (1, 3)},
                           "stages.3.*": {"channels_ratio": (0.25, 0.5, 0.75, 1.0), "channel_divisor": 64},
                           "stem.*": None}}
    space = hwnas.convert(resnet(), torch.randn(1, 3, SIZE, SIZE), mode="autonas", rules=rules)
    ch = space.choices()
    assert not any(k.startswith("stem.") and k.endswith(".width") for k in ch)  # the stem's search is off
    assert ch["stages.1.0.conv1.0.width"] == (64, 128)
    assert ch["stages.3.0.conv1.0.width"] == (128, 256, 384, 512)
    kernels = {k: v for k, v in ch.items() if k.endswith(".kernel")}
    assert kernels and all(v == (1, 3) for v in kernels.values()) and "stem.0.0.kernel" not in kernels
    assert any(k.endswith(".depth") for k in ch)
    # the rules travel with the saved space
    assert space.conversion.rules["nn.Conv2d"]["stem.*"] is None
    with pytest.raises(ConversionError, match="numbers in"):
        hwnas.convert(resnet(), torch.randn(1, 3, SIZE, SIZE), rules={"nn.Conv2d": {"*": {"channels_ratio": (2,)}}})
    with pytest.raises(ConversionError, match="not an importable"):
        hwnas.convert(resnet(), torch.randn(1, 3, SIZE, SIZE), rules={"nn.Conv9d": {"*": {}}})


def test_modes_and_conversion_without_dummy_input(tmp_path):
    model = resnet()
    fast = hwnas.convert(model, input_shape=(1, 3, SIZE, SIZE), mode="fastnas")
    assert len(fast.choices()["stem.0.0.width"]) == 20 and not any(".kernel" in k for k in fast.choices())
    guessed = hwnas.convert(model)  # a first Conv2d: (1, C, 224, 224)
    assert guessed.conversion.inputs[0]["shape"] == [1, 3, 224, 224]
    path = hwnas.save(fast, tmp_path / "s.pt")
    again = hwnas.restore(resnet, path)  # a factory
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        assert torch.allclose(again.eval()(x), fast.eval()(x), atol=1e-6)
    with pytest.raises(ConversionError, match="does not tell its input shape"):
        hwnas.convert(nn.Sequential(nn.Embedding(10, 8), nn.Linear(8, 2)))
    with pytest.raises(ConversionError, match="unknown mode"):
        hwnas.convert(model, mode="gradnas")


def test_prune_fastnas_meets_constraints_and_saves(tmp_path):
    model, data = resnet(), batches()
    x = data[0][0]
    dummy = torch.randn(1, 3, SIZE, SIZE)
    pruned = hwnas.prune(model, dummy, {"flops": "50%", "params": "60%"}, data,
                         score_func=lambda m: -float(F.cross_entropy(m(x), data[0][1])), max_trials=5,
                         progress=False, save_dir=tmp_path)
    assert type(pruned).__name__ == type(model).__name__
    assert fvcore_flops(pruned, dummy) <= 0.5 * fvcore_flops(model, dummy)
    assert num_params(pruned) <= 0.6 * num_params(model)
    # the budget is used: the uniform seeds fill it
    assert fvcore_flops(pruned, dummy) >= 0.3 * fvcore_flops(model, dummy)
    assert {"search.json", "history.csv", "pruned.pt"} <= {p.name for p in tmp_path.iterdir()}
    back = restore_pruned(resnet, tmp_path / "pruned.pt").eval()
    with torch.no_grad():
        assert torch.allclose(back(x), pruned.eval()(x), atol=1e-6)
    with pytest.raises(ValueError, match="needs score_func"):
        hwnas.prune(model, dummy, {"flops": "50%"}, data)


@pytest.mark.slow  # over 4 s: the default suite stays within 6 minutes
def test_gradnas_scores_sort_channels_by_gradient():
    model, data = resnet(), batches()

    def loss(out, batch):
        return F.cross_entropy(out, batch[1])

    scores = gradnas_scores(model, data, loss, num_batches=2)
    params = dict(model.named_parameters())
    assert scores.keys() == params.keys() and all(scores[k].shape == params[k].shape for k in params)
    # an independent sum of |w * grad| over the same two batches
    ref = {k: torch.zeros_like(p, dtype=torch.float64) for k, p in params.items()}
    for b in data[:2]:
        model.zero_grad()
        loss(model(b[0]), b).backward()
        for k, p in params.items():
            ref[k] += (p.grad * p.detach()).abs().double()
    model.zero_grad(set_to_none=True)
    assert all(torch.allclose(scores[k], ref[k]) for k in params)
    dummy = torch.randn(1, 3, SIZE, SIZE)
    by_grad = hwnas.convert(model, dummy, "fastnas", importance=scores)
    by_l1 = hwnas.convert(model, dummy, "fastnas")
    g = next(g for g in by_grad.conversion.groups if g.label == "stages.3.0.conv1.0.width")
    w = ref["stages.3.0.conv1.0.weight"].sum((1, 2, 3)) / ref["stages.3.0.conv1.0.weight"].sum((1, 2, 3)).mean()
    assert g.permutation == torch.argsort(-w, stable=True).tolist()
    assert g.permutation != next(x for x in by_l1.conversion.groups if x.label == g.label).permutation
    pruned = hwnas.prune(model, dummy, {"params": "50%"}, data, mode="gradnas", loss_func=loss, max_trials=3,
                         progress=False)
    assert num_params(pruned) <= 0.5 * num_params(model)


@pytest.mark.slow  # over 4 s: the default suite stays within 6 minutes
@pytest.mark.parametrize("name", ["densenet121"])
def test_prune_densenet(name):
    torch.manual_seed(0)
    model = zoo.create(name, num_classes=10).eval()
    dummy = torch.randn(1, 3, SIZE, SIZE)
    x = torch.randn(4, 3, SIZE, SIZE)
    pruned = hwnas.prune(model, dummy, {"flops": "60%"}, [(x, None)], score_func=lambda m: -float(m(x).std()),
                         max_trials=3, calib_batches=1, progress=False)
    assert fvcore_flops(pruned, dummy) <= 0.6 * fvcore_flops(model, dummy)
    assert num_params(pruned) < num_params(model)
