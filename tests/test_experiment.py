"""hwnas.registry and experiment files (``hwnas run``), against independent references: the same search written
as plain Python API calls, the exported subnet's own parameter count, a re-run of the saved resolved config, an
uninterrupted run for a resumed one, and the command line's ``hwnas demo``."""

from __future__ import annotations

import copy
import dataclasses
import json
import textwrap

import pytest
import torch
import yaml

import hwnas
from hwnas import registry
from hwnas.experiment import ConfigError, presets, resolve_config, run
from hwnas.experiment.config import load_config

TINY = load_config(preset="digits_tiny")


# ----------------------------------------------------------------------------------------------- registry
def test_registry_views_share_the_old_lookups():
    from hwnas import zoo
    from hwnas.hw.device import Device, get_device, list_devices, register_device

    assert registry.names("spaces") == hwnas.spaces.list() == registry.list("spaces")
    assert registry.names("models") == zoo.list()
    assert registry.names("devices") == list_devices()
    a, b = hwnas.spaces.create("digits"), registry.build("spaces", {"name": "digits", "num_classes": 7})
    assert type(a) is type(b) and b.classifier.out_features == 7
    m1, m2 = zoo.create("squeezenet1_0", num_classes=10), registry.build("models", "squeezenet1_0", num_classes=10)
    assert sum(p.numel() for p in m1.parameters()) == sum(p.numel() for p in m2.parameters())
    name = "t-registry-view"
    try:
        dev = register_device(Device(name, intra_op_threads=3))
        assert registry.get("devices", name) is dev is get_device(name) and name in registry.names("devices")
    finally:
        from hwnas.hw import device as devmod

        devmod._REGISTRY.pop(name, None)

    def tiny(num_classes: int = 10):
        return hwnas.spaces.create("digits", num_classes=num_classes)

    try:
        registry.register("spaces", "t_tiny", tiny)
        assert "t_tiny" in hwnas.spaces.list() and hwnas.spaces.create("t_tiny").classifier.out_features == 10
        with pytest.raises(ValueError, match="already registered"):
            hwnas.spaces.register_space("t_tiny")(tiny)
    finally:
        hwnas.spaces.registry._SPACES.pop("t_tiny", None)


def test_registry_build_errors_name_the_closest():
    with pytest.raises(ValueError, match=r"no strategy named 'evolutoin' \(did you mean 'evolution'"):
        registry.build("strategies", "evolutoin")
    with pytest.raises(TypeError, match=r"got unknown keyword argument\(s\) \['populaton_size'\].*Did you mean "
                                        r"'population_size'"):
        registry.build("strategies", {"name": "evolution", "populaton_size": 3})
    with pytest.raises(ValueError, match=r"no kind of part named 'strategy' \(did you mean 'strategies'"):
        registry.names("strategy")
    evo = registry.build("strategies", {"name": "evolution", "population_size": 8}, sample_size=2)
    assert (evo.population_size, evo.sample_size) == (8, 2)  # overrides on top of the config
    for kind in ("strategies", "penalties", "filters", "profilers", "estimators", "trainers", "exporters",
                 "reports", "datasets"):
        assert registry.names(kind), kind


# ------------------------------------------------------------------------------------------- bad configs
def _with(**changes):
    """TINY with ``changes`` (dotted paths; the value ``DELETE`` removes the key)."""
    raw = copy.deepcopy(TINY)
    for path, value in changes.items():
        *parents, last = path.split("__")
        node = raw
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node.setdefault(p, {})
        if value == "DELETE":
            node.pop(last)
        elif isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
    return raw


BAD = [  # (raw config, key path named, words the message must hold)
    (_with(strategy__population_size="ten"), "strategy.population_size", ["integer", "'ten'"]),
    (_with(strategy__sample_siz=3), "strategy.sample_siz", ["unknown key", "did you mean 'sample_size'"]),
    (_with(strategy__name="evolutoin"), "strategy.name", ["did you mean 'evolution'", "'random'"]),
    (_with(strategy__name="DELETE"), "strategy.name", ["missing", "evolution"]),
    (_with(strategy__sample_size=20), "strategy.sample_size", ["population_size=6", "got 20"]),
    (_with(strategy__trials=0), "strategy.trials", ["greater than or equal to 1", "got 0"]),
    (_with(strategy__mode="maximize"), "strategy.mode", ["'max' or 'min'", "'maximize'"]),
    (_with(strategy__filter__0__metric="flop"), "strategy.filter[0].metric", ["did you mean 'flops'"]),
    (_with(strategy__filter__0__name="rang"), "strategy.filter[0].name", ["did you mean 'range'"]),
    (_with(strategy__penalty={"name": "expectation", "metric": "latency_ms", "baseline": "50%"}),
     "strategy.penalty.name", ["'sample'", "'expectation'"]),
    (_with(strategy__penalty={"name": "sample", "metric": "latency_ms"}), "strategy.penalty.baseline",
     ["missing"]),
    (_with(strategy__penalty={"name": "sample", "metric": "flops", "baseline": "50%", "nonlinear": "relu"}),
     "strategy.penalty.nonlinear", ["'positive'", "'relu'"]),
    (_with(space__name="digit"), "space.name", ["did you mean 'digits'"]),
    (_with(space__convert={"model": "resnet18"}), "space", ["exactly one of 'name'", "both"]),
    (_with(space__input_shape=[1, 0, 8, 8]), "space", ["input_shape must be positive", "[1, 0, 8, 8]"]),
    (_with(device__name="cpu-ort-3t"), "device.name", ["did you mean", "'cpu-ort-1t'"]),
    (_with(device__lut="digitz_cpu-ort-1t"), "device.lut", ["neither a file nor a shipped LUT", "digits_cpu-ort-1t"]),
    (_with(constraints__latency=3.0), "constraints.latency", ["did you mean 'latency_ms'"]),
    (_with(constraints__flops="60 percent"), "constraints.flops", ["percentage", "'60 percent'"]),
    (_with(device__lut=None), "constraints.latency_ms", ["needs device.lut or device.predictor"]),
    (_with(evaluator__epocs=2), "evaluator.epocs", ["did you mean 'epochs'"]),
    (_with(evaluator__name="supernett"), "evaluator.name", ["did you mean 'supernet'"]),
    (_with(evaluator__data__name="mnist"), "evaluator.data.name", ["no data set named 'mnist'", "'digits'"]),
    (_with(evaluator__name="oneshot"), "evaluator.name", ["one-shot strategy", "'evolution'"]),
    (_with(evaluator__lr=-1), "evaluator.lr", ["greater than 0", "-1"]),
    (_with(exports=["arch", "onxx"]), "exports[1].name", ["did you mean 'onnx'"]),
    (_with(reports=[{"name": "history", "fil": "h.csv"}]), "reports[0].fil", ["did you mean 'file'"]),
    (_with(seeds=1), "seeds", ["unknown key", "did you mean 'seed'"]),
    (_with(seed=-1), "seed", ["greater than or equal to 0", "-1"]),
    (_with(pipeline="demoo"), "pipeline", ["'search'", "did you mean 'demo'"]),
    (_with(strategy=["evolution"]), "strategy", ["dictionary", "list"]),
]


@pytest.mark.parametrize("raw, path, words", BAD, ids=[f"{i:02d}-{b[1]}" for i, b in enumerate(BAD)])
def test_malformed_config_names_the_key_path(raw, path, words):
    with pytest.raises(ConfigError) as info:
        resolve_config(raw)
    paths = [p for p, _ in info.value.problems]
    assert path in paths, (path, str(info.value))
    message = dict(info.value.problems)[path]
    for word in words:
        assert word in message, (word, message)
    assert f"{path}: " in str(info.value)


def test_yaml_errors_duplicate_keys_and_set_paths(tmp_path):
    f = tmp_path / "e.yaml"
    f.write_text(textwrap.dedent("""\
        space: {name: digits}
        seed: 1
        seed: 2
        """))
    with pytest.raises(ConfigError, match="key 'seed' is given twice"):
        resolve_config(f)
    f.write_text("space: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        resolve_config(f)
    with pytest.raises(ConfigError, match=r"strategy\.population_size: .*integer"):
        resolve_config(preset="digits_tiny", overrides=["strategy.population_size=[1, 2]"])
    with pytest.raises(ConfigError, match="did you mean 'digits_tiny'"):
        resolve_config(preset="digits_tin")
    cfg = resolve_config(preset="digits_tiny", overrides=["constraints.flops=3e6", "strategy.filter.0.min=10%"])
    assert cfg["constraints"]["flops"] == 3e6 and cfg["strategy"]["filter"][0]["min"] == "10%"  # YAML 1.1 reads 3e6 as text


def test_every_preset_resolves_and_print_config_is_the_resolved_config(capsys):
    from hwnas.cli import main

    assert {"demo", "digits_tiny", "digits_darts", "mobilenet_v3_evolution"} <= set(presets())
    for name in presets():
        cfg = resolve_config(preset=name)
        assert resolve_config(cfg) == cfg  # a resolved config is a fixed point
    assert main(["run", "--preset", "digits_tiny", "--print-config", "--set", "strategy.trials=5"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed == resolve_config(preset="digits_tiny", overrides=["strategy.trials=5"])
    assert printed["strategy"]["trials"] == 5 and printed["evaluator"]["momentum"] == 0.9  # defaults filled in
    assert main(["run", "--preset", "digits_tiny", "--print-config", "--set", "strategy.sample_siz=3"]) == 2
    assert "strategy.sample_siz: unknown key (did you mean 'sample_size'?)" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------- running
SMALL = ["evaluator.epochs=1", "evaluator.batch_size=128", "strategy.trials=6", "strategy.population_size=4",
         "strategy.sample_size=2"]


def _python_api_run(seed: int = 0):
    """The same search as SMALL on digits_tiny, written with the Python API (as hwnas.demo does it)."""
    from hwnas.demo import load_digits_data
    from hwnas.search import (
        Chain,
        RangeProfilerFilter,
        RegularizedEvolution,
        SubnetEvaluator,
        SupernetTrainer,
        build_profilers,
    )
    from hwnas.search import TensorBatches as TB
    from hwnas.search import run as search_run

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(seed)
        data = load_digits_data()
        space = hwnas.spaces.create("digits")
        x = torch.zeros(1, 1, 8, 8)
        profilers = build_profilers(space, x)
        profilers["latency_ms"] = hwnas.LatencyProfiler(space, x, lut=hwnas.artifacts.resolve_lut("digits_cpu-ort-1t"),
                                                        graph=profilers["flops"].graph)
        train = TB(data.x_train, data.y_train, 128, shuffle=True, seed=seed)
        opt = torch.optim.SGD(space.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-5)
        SupernetTrainer(space, opt, sampling="sandwich", num_random=1, distill=True, seed=seed).fit(
            train, 1, progress=False)
        evaluator = SubnetEvaluator(space, TB(data.x_val, data.y_val, 512),
                                    calib_loader=TB(data.x_train, data.y_train, 128, shuffle=True, seed=seed + 1),
                                    calib_batches=2)
        strategy = Chain(RegularizedEvolution(4, 2, mutation_prob=0.1),
                         RangeProfilerFilter(profilers["flops"], min="15%", max="60%"))
        return search_run(space, None, {"latency_ms": "60%"}, evaluator, strategy=strategy, max_trials=6,
                                seed=seed, profilers=profilers, progress=False)
    finally:
        torch.set_num_threads(old)


def _trials(history):
    return [(t.sample, t.score, t.metrics) for t in history]


def test_yaml_run_equals_python_api_and_resolved_config_reproduces(tmp_path):
    import hwnas.artifacts  # noqa: F401

    first = run(preset="digits_tiny", overrides=SMALL, output=tmp_path / "a", progress=False)
    reference = _python_api_run()
    assert _trials(first.history) == _trials(reference.history)
    assert first.best_sample == reference.best_sample and first.best_score == reference.best_score
    for name in ("resolved_config.yaml", "history.csv", "best_arch.json", "best.onnx", "pareto.png", "summary.json"):
        assert (tmp_path / "a" / name).is_file(), name
    assert hwnas.load_arch(tmp_path / "a" / "best_arch.json") == reference.best_sample
    saved = yaml.safe_load((tmp_path / "a" / "resolved_config.yaml").read_text())
    assert saved == first.config
    again = run(tmp_path / "a" / "resolved_config.yaml", output=tmp_path / "b", progress=False)
    assert _trials(again.history) == _trials(first.history) and not again.resumed
    import pandas as pd

    csv = [pd.read_csv(tmp_path / d / "history.csv").drop(columns="eval_s") for d in ("a", "b")]
    pd.testing.assert_frame_equal(*csv)  # all but the wall times
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["best_sample"] == reference.best_sample and summary["trials"] == 6


SCORE = '''
import json, os, pathlib
COUNT = pathlib.Path(os.environ["HWNAS_TEST_COUNT"])

def score(sample, offset=0.0):
    n = int(COUNT.read_text()) + 1 if COUNT.exists() else 1
    COUNT.write_text(str(n))
    stop_after = int(os.environ.get("HWNAS_TEST_STOP", "0"))
    if stop_after and n > stop_after:
        raise KeyboardInterrupt
    return sample["s2.width"] + sample["s1.width"] / 100 - sample["s2.depth"] / 10 + offset
'''


def test_interrupted_run_resumes_from_the_search_checkpoint(tmp_path, monkeypatch):
    (tmp_path / "myscore.py").write_text(SCORE)
    count = tmp_path / "count"
    monkeypatch.setenv("HWNAS_TEST_COUNT", str(count))
    base = copy.deepcopy(TINY)
    base["evaluator"] = {"name": "function", "function": f"{tmp_path / 'myscore.py'}:score"}
    base.update(exports=["arch"], reports=["history", "summary"])
    base["strategy"].update(trials=30, population_size=6, sample_size=3)
    base["space"]["args"] = {}

    monkeypatch.setenv("HWNAS_TEST_STOP", "12")  # the score function stops the run like Ctrl-C after 12 calls
    with pytest.raises(KeyboardInterrupt):
        run(base, output=tmp_path / "run", progress=False)
    recorded = json.loads((tmp_path / "run" / "checkpoint.json").read_text())["trials"]
    assert 0 < len(recorded) < 30
    other = copy.deepcopy(base)
    other["evaluator"]["args"] = {"offset": 1.0}
    with pytest.raises(ValueError, match=r"holds a run of another config \(it differs at evaluator.args.offset"):
        run(other, output=tmp_path / "run", progress=False)
    monkeypatch.setenv("HWNAS_TEST_STOP", "0")
    monkeypatch.setenv("HWNAS_TEST_COUNT", str(tmp_path / "count2"))
    resumed = run(base, output=tmp_path / "run", progress=False)  # the same config again: carries on
    assert resumed.resumed and len(resumed.history) == 30
    evaluated = int((tmp_path / "count2").read_text())
    monkeypatch.setenv("HWNAS_TEST_COUNT", str(tmp_path / "count3"))
    straight = run(base, output=tmp_path / "straight", progress=False)
    assert not straight.resumed
    assert _trials(resumed.history) == _trials(straight.history)  # as if never interrupted
    scored = sum(t.repeat_of < 0 for t in straight.history)
    assert evaluated == scored - sum(t.get("repeat_of", -1) < 0 for t in recorded)  # no trial scored twice


def test_oneshot_darts_with_expected_latency_penalty(tmp_path):
    overrides = ["evaluator.epochs=1", "evaluator.warmup_epochs=0", "evaluator.batch_size=256"]
    result = run(preset="digits_darts", overrides=overrides, output=tmp_path, progress=False)
    space = hwnas.spaces.create("digits")
    assert sorted(result.best_sample) == sorted(space.choices())
    subnet = hwnas.export(space, result.best_sample)
    assert result.best_metrics["params"] == sum(p.numel() for p in subnet.parameters())
    assert len(result.history) == 1 and result.config["strategy"]["penalty"]["name"] == "expectation"
    for name in ("best_arch.json", "best.onnx", "history.csv", "best_latency_layers.csv", "summary.json"):
        assert (tmp_path / name).is_file(), name
    assert 0.0 <= result.best_score <= 1.0
    again = run(preset="digits_darts", overrides=overrides, output=tmp_path, progress=False)  # nothing left to train
    assert again.resumed and again.best_sample == result.best_sample
    assert again.best_score == result.best_score  # scored again with the weights loaded from supernet.pt


def test_user_registered_strategy_from_yaml(tmp_path):
    from hwnas.search import Random

    @dataclasses.dataclass
    class Counting(Random):
        label: str = "x"

        def __post_init__(self):
            super().__init__()

    try:
        registry.register("strategies", "t_counting", Counting)
        cfg = copy.deepcopy(TINY)
        cfg["strategy"] = {"name": "t_counting", "label": "y", "trials": 5}
        cfg["evaluator"] = {"name": "metric", "metric": "params"}
        cfg.update(exports=["arch"], reports=["summary"])
        with pytest.raises(ConfigError, match=r"strategy\.lable: unknown key \(did you mean 'label'"):
            resolve_config({**cfg, "strategy": {"name": "t_counting", "lable": "y"}})
        result = run(cfg, output=tmp_path, progress=False)
        assert len(result.history) == 5 and result.config["strategy"]["label"] == "y"
        assert result.best_score == max(t.metrics["params"] for t in result.history)
    finally:
        registry.kind("strategies").table.pop("t_counting", None)


DATA = '''
import torch
from hwnas.demo import load_digits_data

def small_digits(n=300):
    d = load_digits_data()
    return {"x_train": d.x_train[:n], "y_train": d.y_train[:n], "x_val": d.x_val[:100], "y_val": d.y_val[:100]}
'''


def test_converted_model_and_user_data_function(tmp_path):
    """space.convert of a zoo model, and a data set given as path/file.py:function (a 300-image slice)."""
    from hwnas import zoo

    (tmp_path / "mydata.py").write_text(DATA)
    cfg = {"space": {"convert": {"model": "resnet18", "model_args": {"num_classes": 10}}, "input_shape": [1, 3, 32, 32]},
           "constraints": {"flops": "50%"}, "strategy": {"name": "random", "trials": 4},
           "evaluator": {"name": "metric", "metric": "params"}, "exports": ["arch", "weights"], "reports": ["summary"]}
    result = run(cfg, output=tmp_path / "conv", progress=False)
    torch.manual_seed(0)
    space = hwnas.convert(zoo.create("resnet18", num_classes=10).eval(), torch.zeros(1, 3, 32, 32))
    subnet = hwnas.export(space, result.best_sample)  # the same space converted by hand: an independent count
    assert result.best_metrics["params"] == sum(p.numel() for p in subnet.parameters())
    assert result.best_metrics["flops"] <= result.search.constraints[0].bound
    state = torch.load(tmp_path / "conv" / "best_subnet.pt", weights_only=True)
    assert {k: tuple(v.shape) for k, v in state.items()} == {k: tuple(v.shape) for k, v in subnet.state_dict().items()}

    digits = copy.deepcopy(TINY)
    digits["evaluator"]["data"] = {"name": f"{tmp_path / 'mydata.py'}:small_digits", "args": {"n": 200}}
    digits["strategy"].update(trials=3, population_size=3, sample_size=2)
    digits.update(exports=["arch"], reports=["summary"])
    result = run(digits, output=tmp_path / "data", progress=False)
    assert len(result.history) == 3 and 0.0 <= result.best_score <= 1.0
    assert result.config["evaluator"]["data"]["args"] == {"n": 200}


# ------------------------------------------------------------------------------------------------ slow
@pytest.mark.slow
def test_preset_demo_equals_hwnas_demo(tmp_path, capsys):
    from hwnas.cli import main

    assert main(["demo", "--quick", "--out", str(tmp_path / "demo"), "--no-progress"]) == 0
    assert main(["run", "--preset", "demo", "--set", "quick=true", "--out", str(tmp_path / "run"),
                 "--no-progress"]) == 0
    a, b = tmp_path / "demo", tmp_path / "run"
    assert {p.name for p in a.iterdir()} | {"resolved_config.yaml"} == {p.name for p in b.iterdir()}
    import pandas as pd

    pd.testing.assert_frame_equal(*[pd.read_csv(d / "history.csv").drop(columns="eval_s") for d in (a, b)])
    assert (a / "chosen_arch.json").read_text() == (b / "chosen_arch.json").read_text()
    rows = [json.loads((d / "summary.json").read_text())["rows"] for d in (a, b)]
    for r1, r2 in zip(*rows):  # everything but the timings
        assert {k: v for k, v in r1.items() if "ms" not in k} == {k: v for k, v in r2.items() if "ms" not in k}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["digits_evolution", "digits_darts", "mobilenet_v3_evolution"])
def test_presets_run_end_to_end(name, tmp_path):
    result = run(preset=name, output=tmp_path, progress=False)
    for item in result.config["exports"] + result.config["reports"]:
        assert (tmp_path / item["file"]).is_file(), item
    constraints = result.config["constraints"]
    if result.config["evaluator"]["name"] != "oneshot":  # multi-trial searches meet their hard constraints
        for c in result.search.constraints:
            assert result.best_metrics[c.metric] <= c.bound, (c, constraints)


@pytest.mark.slow
def test_device_adapt_step_feeds_the_search(tmp_path):
    """device.adapt measures here and the search's latency is the adapted LUT's (rebuilt independently)."""
    cfg = copy.deepcopy(TINY)
    cfg["device"]["adapt"] = {"n": 5, "budget_s": 30}
    cfg["strategy"] = {"name": "random", "trials": 5}
    cfg["evaluator"] = {"name": "metric", "metric": "params"}
    cfg.update(exports=["arch"], reports=["summary"])
    result = run(cfg, output=tmp_path, progress=False)
    adapted = hwnas.hw.LUT.load(tmp_path / "lut_adapted.json")
    assert adapted.adapted["adapted_from"]["n"] == 5
    x = torch.zeros(1, 1, 8, 8)
    reference = hwnas.LatencyProfiler(hwnas.spaces.create("digits"), x, lut=adapted)
    assert result.best_metrics["latency_ms"] == pytest.approx(reference.profile(result.best_sample), rel=1e-12)
