"""ModelOpt's NAS and pruning guides run on hwnas with only their imports changed (hwnas.compat.modelopt).

The code blocks of ModelOpt's guides (docs/source/guides/7_nas.rst and 2_pruning.rst: convert, save,
profile, restore, train, search with a checkpoint and a BN calibration loader, save, prune, restore, fine-tune)
run on the project's zoo models at small inputs; ``resnet50()`` is replaced by a zoo model and ``validate`` /
``train`` by small loops over synthetic data. Every result is checked against an independent reference:
fvcore's FLOPs and ``sum(numel)`` of the exported model, the model's own forward pass.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import fvcore_flops, num_params

import hwnas.compat.modelopt.nas as mtn
import hwnas.compat.modelopt.opt as mto
import hwnas.compat.modelopt.prune as mtp
from hwnas import zoo
from hwnas.convert import ConvertedSpace

SIZE = 32


def _data(n=64, classes=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, SIZE, SIZE, generator=g)
    y = torch.randint(0, classes, (n,), generator=g)
    return [(x[i:i + 16], y[i:i + 16]) for i in range(0, n, 16)]


train_loader = _data(seed=0)
val_loader = _data(seed=1)


@torch.no_grad()
def validate(model, loader):
    model.eval()
    correct = sum(int((model(x).argmax(1) == y).sum()) for x, y in loader)
    return correct / sum(len(y) for _, y in loader)


def train(model, loader, steps=2):
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model.train()
    for x, y in loader[:steps]:
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval()


def resnet():
    torch.manual_seed(0)
    model = zoo.create("resnet18", num_classes=10)
    model.default_cfg = {"input_size": (3, SIZE, SIZE)}  # as timm models tell theirs: convert needs no dummy input
    return model


def test_nas_guide_runs_with_only_the_imports_changed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # --- "Convert and save"
    model = resnet()
    model = mtn.convert(model, mode="autonas")
    mto.save(model, "modelopt_model.pth")
    # --- the custom config of the guide's note
    config = mtn.autonas.AutoNASConfig()
    config["nn.Conv2d"]["*"]["out_channels_ratio"] += (0.1,)
    custom = mtn.convert(resnet, mode=[("autonas", config)])
    assert 0.1 in custom.conversion.rules["nn.Conv2d"]["*"]["channels_ratio"]
    default, more = model.choices(), custom.choices()
    assert default.keys() == more.keys() and all(set(default[k]) <= set(more[k]) for k in default)
    assert more["stages.3.0.conv1.0.width"] == (64, 256, 352, 512)  # 0.1 x 512 rounded to 32
    # --- "Profiling a search space"
    dummy_input = torch.randn(1, 3, SIZE, SIZE)
    max_flops = fvcore_flops(resnet().eval(), dummy_input)
    constraints = {"flops": 0.6 * max_flops}
    is_sat, search_space_stats = mtn.profile(model, dummy_input, constraints=constraints)
    assert is_sat is True
    assert search_space_stats["flops"]["max"] == max_flops
    assert search_space_stats["params"]["max"] == num_params(resnet())
    assert search_space_stats["flops"]["max/min ratio"] == pytest.approx(
        search_space_stats["flops"]["max"] / search_space_stats["flops"]["min"])
    assert search_space_stats["number_of_configurable_hparams"] == len(model.choices())
    assert search_space_stats["search_space_size"] == model.num_subnets()
    # --- "Restore the search space" and "Training"
    model = mto.restore(resnet, "modelopt_model.pth")
    train(model, train_loader)

    # --- "Performing search"
    def score_func(model):
        return validate(model, val_loader)

    search_constraints = constraints
    searched_model, search_res = mtn.search(
        model=model,
        constraints=search_constraints,
        dummy_input=dummy_input,
        config={
            "data_loader": train_loader,  # training data is used for calibrating BN layers
            "score_func": score_func,  # validation score is used to rank the subnets
            "checkpoint": "modelopt_search_checkpoint.pth",
            "num_iters": 6, "verbose": False,
        },
    )
    mto.save(searched_model, "modelopt_searched_model.pth")
    # the searched model computes its best subnet; exported, it meets the constraint by fvcore's count
    subnet = mtn.export(searched_model)
    assert not any(isinstance(m, ConvertedSpace) for m in subnet.modules())
    assert fvcore_flops(subnet, dummy_input) <= search_constraints["flops"]
    assert fvcore_flops(subnet, dummy_input) == search_res["best"]["metrics"]["flops"]
    assert num_params(subnet) == search_res["best"]["metrics"]["params"]
    x = val_loader[0][0]
    with torch.no_grad():
        assert torch.allclose(subnet.eval()(x), searched_model.eval()(x), atol=1e-5)
        assert search_res["best"]["score"] == score_func(searched_model)
    # restored from the original model, the searched model computes the same subnet
    again = mto.restore(resnet(), "modelopt_searched_model.pth").eval()
    with torch.no_grad():
        assert torch.allclose(again(x), searched_model(x), atol=1e-5)
    # the search resumes from its checkpoint without scoring again
    calls = []
    mtn.search(mto.restore(resnet, "modelopt_model.pth"), search_constraints, dummy_input,
               {"data_loader": train_loader, "score_func": lambda m: calls.append(1) or 0.0,
                "checkpoint": "modelopt_search_checkpoint.pth", "num_iters": 6, "verbose": False})
    assert calls == []
    # the exported subnet saves and restores from the original model
    mto.save(subnet, "subnet.pth")
    back = mto.restore(resnet, "subnet.pth").eval()
    with torch.no_grad():
        assert torch.allclose(back(x), subnet(x), atol=1e-6)


@pytest.mark.slow  # over 4 s: the default suite stays within 6 minutes
def test_pruning_guide_runs_with_only_the_imports_changed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = resnet().eval()
    train(model, train_loader)
    reference = {k: v.clone() for k, v in model.state_dict().items()}

    def score_func(model):
        return validate(model, val_loader)

    dummy_input = torch.randn(1, 3, SIZE, SIZE)
    prune_constraints = {"flops": "60%"}
    pruned_model, prune_res = mtp.prune(
        model=model,
        mode="fastnas",
        constraints=prune_constraints,
        dummy_input=dummy_input,
        config={
            "data_loader": train_loader,
            "score_func": score_func,
            "checkpoint": "modelopt_fastnas_search_checkpoint.pth",
            "num_iters": 6, "verbose": False,
        },
    )
    assert all(torch.equal(v, reference[k]) for k, v in model.state_dict().items())  # the input is not changed
    assert fvcore_flops(pruned_model, dummy_input) <= 0.6 * fvcore_flops(model, dummy_input)
    assert num_params(pruned_model) < num_params(model)
    assert prune_res["checked"]["flops"] == fvcore_flops(pruned_model, dummy_input)
    # "Customizing pruning config": Conv2d widths as multiples of 64
    ss_config = mtp.fastnas.FastNASConfig()
    ss_config["nn.Conv2d"]["*"]["channel_divisor"] = 64
    custom, _ = mtp.prune(model, mode=[("fastnas", ss_config)], constraints={"params": "70%"},
                          dummy_input=dummy_input, config={"score_func": score_func, "num_iters": 4,
                                                           "data_loader": train_loader, "verbose": False})
    convs = [m for m in custom.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(m.out_channels % 64 == 0 for m in convs if m.out_channels != 10)
    assert num_params(custom) <= 0.7 * num_params(model)
    # "Storing the prune results" and "Load the pruned model", then fine-tune and save again
    mto.save(pruned_model, "modelopt_pruned_model.pth")
    restored = mto.restore(resnet(), "modelopt_pruned_model.pth")
    x = val_loader[0][0]
    with torch.no_grad():
        assert torch.allclose(restored.eval()(x), pruned_model.eval()(x), atol=1e-6)
    train(restored, train_loader)
    mto.save(restored, "modelopt_pruned_finetuned_model.pth")
    deployed = mto.restore(resnet(), "modelopt_pruned_finetuned_model.pth").eval()
    with torch.no_grad():
        assert torch.allclose(deployed(x), restored.eval()(x), atol=1e-6)


@pytest.mark.slow  # over 4 s: the default suite stays within 6 minutes
def test_gradnas_prunes_within_params_budget():
    model = resnet().eval()
    dummy_input = torch.randn(1, 3, SIZE, SIZE)
    pruned, state = mtp.prune(model, "gradnas", {"params": "50%"}, dummy_input,
                              {"data_loader": train_loader, "num_iters": 4, "verbose": False,
                               "loss_func": lambda output, batch: F.cross_entropy(output, batch[1])})
    assert num_params(pruned) <= 0.5 * num_params(model)
    assert state["mode"] == "gradnas" and state["checked"]["params"] == num_params(pruned)


def test_modelopt_state_round_trip():
    model = mtn.convert(resnet(), mode="fastnas", dummy_input=torch.randn(1, 3, SIZE, SIZE))
    mtn.sample(model, min)
    x = val_loader[0][0]
    state, weights = mto.modelopt_state(model), model.state_dict()
    again = mto.restore_from_modelopt_state(resnet(), state)
    again.load_state_dict(weights)
    with torch.no_grad():
        assert torch.allclose(again.eval()(x), model.eval()(x), atol=1e-6)
    subnet = mtn.export(model)
    back = mto.restore_from_modelopt_state(resnet, mto.modelopt_state(subnet))
    back.load_state_dict(subnet.state_dict())
    with torch.no_grad():
        assert torch.allclose(back.eval()(x), subnet.eval()(x), atol=1e-6)


def test_profile_strict_and_centroid():
    model = mtn.convert(resnet(), mode="fastnas", dummy_input=torch.randn(1, 3, SIZE, SIZE))
    x = torch.randn(1, 3, SIZE, SIZE)
    _, stats = mtn.profile(model, x, verbose=False)
    lo, mid = stats["flops"]["min"], stats["flops"]["centroid"]
    between = {"flops": (lo + mid) / 2}
    assert mtn.profile(model, x, between, verbose=False)[0] is True
    assert mtn.profile(model, x, between, verbose=False, use_centroid=True)[0] is False
    with pytest.raises(ValueError, match="cannot be met"):
        mtn.profile(model, x, {"flops": lo / 2}, verbose=False, strict=True)


def test_bad_modes_and_unconverted_models_are_refused():
    with pytest.raises(ValueError, match="unknown mode 'quantize'"):
        mtn.convert(resnet(), mode="quantize")
    with pytest.raises(TypeError, match="mtn.convert"):
        mtn.search(resnet(), {"flops": "50%"}, torch.randn(1, 3, SIZE, SIZE), {"score_func": lambda m: 0.0})
    with pytest.raises(TypeError, match="mto.save"):
        mto.save(resnet(), "x.pth")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet50", "mobilenet_v2", "efficientnet_b0", "densenet121"])
def test_guides_on_zoo_models(name, tmp_path, monkeypatch):
    """Both guides, shortened, on the zoo models of the issue's targets (DenseNet: ModelOpt's "Missing symbols!")."""
    monkeypatch.chdir(tmp_path)

    def factory():
        torch.manual_seed(0)
        m = zoo.create(name, num_classes=10)
        m.default_cfg = {"input_size": (3, SIZE, SIZE)}
        return m

    dummy_input = torch.randn(1, 3, SIZE, SIZE)
    model = mtn.convert(factory(), mode="autonas")
    is_sat, stats = mtn.profile(model, dummy_input, constraints={"flops": "60%"}, verbose=False)
    assert is_sat and stats["flops"]["max"] == fvcore_flops(factory().eval(), dummy_input)
    mto.save(model, "space.pth")
    model = mto.restore(factory, "space.pth")
    train(model, train_loader, steps=1)
    searched, res = mtn.search(model, {"flops": "60%"}, dummy_input,
                               {"data_loader": train_loader, "score_func": lambda m: validate(m, val_loader[:1]),
                                "checkpoint": "search.json", "num_iters": 3, "max_iter_data_loader": 1,
                                "verbose": False})
    subnet = mtn.export(searched)
    assert fvcore_flops(subnet, dummy_input) == res["best"]["metrics"]["flops"] <= 0.6 * stats["flops"]["max"]
    assert num_params(subnet) == res["best"]["metrics"]["params"]
    pruned, state = mtp.prune(factory().eval(), "fastnas", {"flops": "60%"}, dummy_input,
                              {"data_loader": train_loader, "score_func": lambda m: validate(m, val_loader[:1]),
                               "num_iters": 3, "max_iter_data_loader": 1, "verbose": False})
    assert fvcore_flops(pruned, dummy_input) <= 0.6 * stats["flops"]["max"]
    mto.save(pruned, "pruned.pth")
    x = val_loader[0][0]
    with torch.no_grad():
        assert torch.allclose(mto.restore(factory, "pruned.pth").eval()(x), pruned.eval()(x), atol=1e-5)
