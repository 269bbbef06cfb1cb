"""Profilers against independent references: fvcore's FLOPs and sum(p.numel()) of the exported subnet,
export against the supernet's own forward pass, and the ONNX round trip in ONNX Runtime."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from conftest import UserCNN, UserTransformer, fvcore_flops, num_params

import hwnas

N_RANDOM = 50

# (name, builder, input, samples whose ONNX round trip is checked: all for small spaces)
CASES = {
    "digits": (lambda: hwnas.spaces.create("digits"), (2, 1, 8, 8), None),
    "mobilenet_v3": (lambda: hwnas.spaces.create("mobilenet_v3", num_classes=10, resolutions=(32, 48)),
                     (1, 3, 32, 32), 6),
    "mobilenet_v2": (lambda: hwnas.spaces.create("mobilenet_v2", num_classes=10), (1, 3, 32, 32), 6),
    "resnet": (lambda: hwnas.spaces.create("resnet", num_classes=10, base_widths=(32, 64, 128, 256),
                                           depths=((1, 2), (1, 2), (1, 2, 3), (1, 2))), (1, 3, 32, 32), 6),
    "user_cnn": (UserCNN, (2, 3, 32, 32), None),
    "user_transformer": (UserTransformer, (2, 4, 10), None),
}


def _input_for(space, sample, shape):
    if "resolution" in sample or "res" in sample:
        r = sample.get("resolution", sample.get("res"))
        shape = (*shape[:2], r, r)
    return torch.randn(shape, generator=torch.Generator().manual_seed(1))


# The registered spaces exactly as hwnas.spaces.create builds them, at the inputs of `hwnas profile`.
DEFAULTS = {
    "digits": (lambda: hwnas.spaces.create("digits"), (1, 1, 8, 8), None),
    "mobilenet_v3": (lambda: hwnas.spaces.create("mobilenet_v3"), (1, 3, 224, 224), None),
    "mobilenet_v2": (lambda: hwnas.spaces.create("mobilenet_v2"), (1, 3, 224, 224), None),
    "resnet": (lambda: hwnas.spaces.create("resnet"), (1, 3, 224, 224), None),
}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in ("mobilenet_v2", "mobilenet_v3")
                                  else n for n in CASES])  # 22-25 s each: -m slow (their layers: user_cnn, resnet)
def test_profilers_match_references(name, tmp_path):
    _check_space(CASES[name], name, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(DEFAULTS))
def test_default_spaces_at_224_match_references(name, tmp_path):
    """The default spaces at full size, every sample through ONNX Runtime (minutes: run with -m slow)."""
    _check_space(DEFAULTS[name], name, tmp_path)


def test_default_resnet_min_and_max_match_fvcore():
    """The default OFA-like ResNet-50 space (the test above uses a narrower one to stay quick)."""
    space = hwnas.spaces.create("resnet").eval()
    x = torch.randn(1, 3, 64, 64)
    flops = hwnas.FlopsProfiler(space, x)
    params = hwnas.NumParamsProfiler(space, graph=flops.graph)
    for sample in (space.min_sample(), space.max_sample()):
        subnet = hwnas.export(space, sample)
        assert flops.profile(sample) == fvcore_flops(subnet, x)
        assert params.profile(sample) == num_params(subnet)


def _check_space(case, name, tmp_path):
    build, shape, n_onnx = case
    torch.manual_seed(0)
    space = build().eval()
    dummy = torch.randn(shape)
    flops = hwnas.FlopsProfiler(space, dummy)
    params = hwnas.NumParamsProfiler(space, dummy, graph=flops.graph)
    samples = [space.max_sample(), space.min_sample()] + [space.random_sample(seed) for seed in range(N_RANDOM)]
    batch = flops.profile_batch(flops.encode_batch(samples))
    for i, sample in enumerate(samples):
        subnet = hwnas.export(space, sample).eval()
        assert not any(type(m).__module__.startswith("hwnas") for m in subnet.modules()), "hwnas class left in export"
        x = _input_for(space, sample, shape)
        assert flops.profile(sample) == fvcore_flops(subnet, x), f"FLOPs differ for {sample}"
        assert batch[i] == flops.profile(sample)
        assert params.profile(sample) == num_params(subnet), f"params differ for {sample}"
        with torch.no_grad():
            want = space.apply_arch(sample)(x)
            got = subnet(x)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        if n_onnx is None or i < n_onnx:
            path = hwnas.to_onnx(subnet, x, tmp_path / f"{name}_{i}.onnx")  # verify=True compares with torch
            sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            out = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
            np.testing.assert_allclose(out, got.numpy(), rtol=1e-3, atol=1e-4)


def test_elementwise_counts_what_fvcore_leaves_out():
    space = UserCNN().eval()
    dummy = torch.randn(2, 3, 32, 32)
    base = hwnas.FlopsProfiler(space, dummy)
    full = hwnas.FlopsProfiler(space, dummy, elementwise=True, graph=base.graph)
    assert set(base.uncounted_ops) >= {"relu", "add", "mul", "max_pool", "avg_pool", "mean", "sigmoid"}
    assert not full.uncounted_ops
    sample = {**space.max_sample(), "branch": "pool", "depth": 0, "res": 16}
    # ReLU after the stem: 2 x 16 x 8 x 8 outputs at res 16 -> one FLOP each, among the extras.
    rows = {name: v for name, kind, v in full.breakdown(sample) if kind == "relu"}
    assert list(rows.values()) == [2 * 16 * 8 * 8]
    # the 3x3 max pool: one FLOP per window element per output
    pool = [v for name, kind, v in full.breakdown(sample) if kind == "max_pool"]
    assert pool == [2 * 16 * 8 * 8 * 9]
    assert full.profile(sample) > base.profile(sample)


def test_batch_size_scales_flops():
    space = hwnas.spaces.create("digits")
    s = space.random_sample(3)
    one = hwnas.FlopsProfiler(space, torch.randn(1, 1, 8, 8)).profile(s)
    four = hwnas.FlopsProfiler(space, torch.randn(4, 1, 8, 8)).profile(s)
    assert four == 4 * one


def test_profile_table_and_record(capsys):
    """hwnas.profile prints min / centroid / max, the constraints and the space; the record holds the same,
    and its figures are fvcore's and the exported subnets' counts."""
    from hwnas.profile.constraints import centroid_sample
    from hwnas.space import collect_choices

    space = hwnas.spaces.create("mobilenet_v2", num_classes=10).eval()
    x = torch.randn(1, 3, 32, 32)
    summary = hwnas.profile(space, x, constraints={"flops": "60%", "params": 1e3})
    out = capsys.readouterr().out
    choices = space.choices()
    samples = {"min": space.min_sample(), "centroid": centroid_sample(space, collect_choices(space)),
               "max": space.max_sample()}
    subnets = {k: hwnas.export(space, s) for k, s in samples.items()}
    want_flops = tuple(fvcore_flops(subnets[k], x) for k in ("min", "centroid", "max"))
    want_params = tuple(num_params(subnets[k]) for k in ("min", "centroid", "max"))
    assert summary.metrics["flops"] == want_flops
    assert summary.metrics["params"] == want_params
    assert summary.num_subnets == space.num_subnets() and summary.choices == choices
    flops_row, params_row = summary.constraints
    assert (flops_row.metric, flops_row.bound, flops_row.satisfiable) == ("flops", 0.6 * want_flops[2], True)
    assert (params_row.metric, params_row.bound, params_row.satisfiable) == ("params", 1e3, False)
    assert out.strip() == summary.table().strip()
    cells = [[c.strip() for c in line.strip("│┃| ").replace("┃", "│").replace("|", "│").split("│")]
             for line in out.splitlines() if line.count("│") + line.count("┃") + line.count("|") >= 6]
    assert cells[0] == ["metric", "min", "centroid", "max", "max/min", "constraint", "satisfiable"]
    assert cells[1][0] == "flops" and cells[1][-1] == "yes"
    assert cells[2][0] == "params" and cells[2][-1] == "NO"
    assert f"search space: {len(choices)} labels, {space.num_subnets():.4g} subnets" in out
    assert all(f"{label}" in out and str(list(values)) in out for label, values in choices.items())
