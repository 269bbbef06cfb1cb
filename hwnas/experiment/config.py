"""Reading an experiment file and resolving it: every default filled in, every name checked.

:func:`resolve` turns the raw mapping of a YAML file (or a preset) into the *resolved config*: a plain dict
with every key of every block, which :func:`hwnas.experiment.run` writes next to the results as
``resolved_config.yaml`` and which, run again, reproduces the run. Problems are collected and raised together
as one :class:`~hwnas.experiment.schema.ConfigError`, each naming its key path.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field

from hwnas import registry
from hwnas.experiment.schema import (
    ConfigError,
    DemoConfig,
    ExperimentConfig,
    params_model,
    path_text,
    validate,
)

__all__ = ["load_config", "resolve", "apply_overrides", "presets", "preset_path", "dump", "ONESHOT_ESTIMATOR"]

ONESHOT_ESTIMATOR = "oneshot"
_PRESETS = Path(__file__).with_name("presets")  # package data: presets/*.yaml


# ------------------------------------------------------------------------------------------------ reading
class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping (it would silently keep the last)."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, Any] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} is given twice in one mapping (first at line {seen[key].start_mark.line + 1})",
                key_node.start_mark)
        seen[key] = key_node
    return yaml.SafeLoader.construct_mapping(loader, node, deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def presets() -> list[str]:
    """The names of the shipped presets (``hwnas run --preset NAME``)."""
    return sorted(p.stem for p in _PRESETS.glob("*.yaml"))


def preset_path(name: str) -> Path:
    """The shipped preset file ``name``."""
    if name not in presets():
        raise ConfigError([("", f"no preset named {name!r}{_near(name, presets())}; the presets are {presets()}.")],
                          "--preset")
    return _PRESETS / f"{name}.yaml"


def load_config(source: str | os.PathLike | dict | None = None, preset: str | None = None) -> dict[str, Any]:
    """The raw mapping of an experiment file (or a preset, or a dict as it is)."""
    if isinstance(source, dict):
        return dict(source)
    if (source is None) == (preset is None):
        raise ValueError("give an experiment file or a preset (one of them), e.g. hwnas run experiment.yaml or "
                         f"hwnas run --preset demo; the presets are {presets()}.")
    path = preset_path(preset) if preset is not None else Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"experiment file {str(path)!r} does not exist; give a YAML file (see "
                                "docs/experiments.md) or a preset with --preset NAME.")
    try:
        raw = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        raise ConfigError([("", f"not valid YAML: {e}")], str(path)) from None
    if not isinstance(raw, dict):
        raise ConfigError([("", f"the file must hold a mapping of keys (space, strategy, ...), got "
                                f"{type(raw).__name__}")], str(path))
    return raw


def apply_overrides(raw: dict[str, Any], items: Sequence[str]) -> dict[str, Any]:
    """``KEY.PATH=VALUE`` items (the value read as YAML) set into a copy of ``raw``."""
    import copy

    out = copy.deepcopy(raw)
    for item in items:
        key, eq, text = item.partition("=")
        parts = [p for p in key.strip().split(".")]
        if not eq or not all(parts):
            raise ConfigError([("", f"--set {item!r}: expected KEY.PATH=VALUE, e.g. strategy.population_size=20")],
                              "--set")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ConfigError([(key, f"--set value {text!r} is not YAML ({e})")], "--set") from None
        node: Any = out
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise ConfigError([(".".join(parts[:i]), f"--set {item!r}: this key holds a list of {len(node)}; "
                                                             f"index it with 0 to {len(node) - 1}")], "--set")
                if last:
                    node[int(part)] = value
                else:
                    node = node[int(part)]
                continue
            if not isinstance(node, dict):
                raise ConfigError([(".".join(parts[:i]), f"--set {item!r}: this key holds {node!r}, not a mapping")],
                                  "--set")
            if last:
                node[part] = value
            else:
                if node.get(part) is None:
                    node[part] = {}
                node = node[part]
    return out


def dump(resolved: dict[str, Any]) -> str:
    """The resolved config as YAML, in the schema's key order."""
    return yaml.safe_dump(resolved, sort_keys=False, default_flow_style=None, width=110)


# ------------------------------------------------------------------------------------------------ resolving
def _near(word: Any, choices: Sequence[str]) -> str:
    near = registry.closest(str(word), choices)
    return f" (did you mean {' or '.join(repr(n) for n in near)}?)" if near else ""


def _named(kind: str, name: Any, where: tuple, problems: list) -> Any:
    """The registered entry ``name`` of ``kind`` (or ``module:attr``), or ``None`` with a problem at ``where``."""
    k = registry.kind(kind)
    if not isinstance(name, str):
        problems.append((path_text(where), f"expected the name of a {k.singular} (a string, one of {k.names()}), "
                                           f"got {name!r} ({type(name).__name__})"))
        return None
    if not k.has(name) and (":" not in name or not k.importable):
        how = ", or 'module:attr' of your own" if k.importable else (
            " (register your own with hwnas.hw.device.register_device or a device file, docs/devices.md)"
            if kind == "devices" else "")
        problems.append((path_text(where), f"no {k.singular} named {name!r}{_near(name, k.names())}; one of "
                                           f"{k.names()}{how}"))
        return None
    try:
        return k.get(name)
    except (ValueError, KeyError) as e:
        problems.append((path_text(where), str(e.args[0] if e.args else e)))
        return None


def _block(kind: str, block: Any, where: tuple, problems: list, **extra: Any) -> tuple[Any, dict | None]:
    """A ``{name: ..., params}`` block of a registered part checked against its parameters; its entry and dump."""
    if isinstance(block, str):
        block = {"name": block}
    if not isinstance(block, dict):
        problems.append((path_text(where), f"expected a mapping with 'name' (or a name), got {block!r} "
                                           f"({type(block).__name__})"))
        return None, None
    if "name" not in block:
        problems.append((path_text(where + ("name",)), f"required key is missing; one of "
                                                       f"{registry.names(kind)}"))
        return None, None
    entry = _named(kind, block["name"], where + ("name",), problems)
    if entry is None:
        return None, None
    model = params_model(entry, str(block["name"]), {"name": (str, ...), **extra})
    m, probs = validate(model, block, where)
    problems += probs
    if m is None:
        return entry, None
    d = m.model_dump(mode="json")
    return entry, {"name": d.pop("name"), **d}


def _as_list(value: Any) -> list:
    return [] if value is None else (list(value) if isinstance(value, list) else [value])


def _check_values(entry: Any, params: dict, where: tuple, problems: list, bind: bool) -> None:
    """Build the part once to let its own checks run (e.g. sample_size <= population_size)."""
    try:
        obj = entry(**params)
        if bind:
            obj.bind({"a": (0, 1), "b": (0, 1, 2)}, 0)
    except (ValueError, TypeError) as e:
        text = str(e)
        found = sorted((text.find(k), k) for k in params if k in text)  # the key the message names first
        key = found[0][1] if found else None
        problems.append((path_text(where + ((key,) if key else ())), text))


def _resolve_strategy(block: Any, metrics: list[str], problems: list) -> tuple[bool, dict | None]:
    from hwnas.search import OneShotStrategy

    where = ("strategy",)
    if not isinstance(block, dict) or "name" not in block:
        return False, _block("strategies", block, where, problems)[1]
    name = block["name"]
    entry = _named("strategies", name, where + ("name",), problems)
    if entry is None:
        return False, None
    oneshot = inspect.isclass(entry) and issubclass(entry, OneShotStrategy)
    extra: dict[str, Any] = {"penalty": (dict | None, None), "filter": (list | dict | str | None, None)}
    if not oneshot:
        extra.update(trials=(int, Field(100, ge=1)), mode=(Literal["max", "min"], "max"))
    _, d = _block("strategies", block, where, problems, **extra)
    if d is None:
        return oneshot, None
    params = {k: v for k, v in d.items() if k not in ("name", "penalty", "filter", "trials", "mode")}
    _check_values(entry, params, where, problems, bind=not oneshot)
    metric_field = {"metric": (str, ...)}
    if d["penalty"] is not None:
        pentry, pen = _block("penalties", d["penalty"], where + ("penalty",), problems, **metric_field)
        if pen is not None:
            _metric_known(pen["metric"], metrics, where + ("penalty", "metric"), problems)
            pen["baseline"] = _number_text(pen.get("baseline"))
            probe = {k: v for k, v in pen.items() if k not in ("name", "metric")}
            if isinstance(probe.get("baseline"), str) and probe["baseline"].endswith("%"):
                probe["baseline"] = 1.0  # a percentage needs the space; its form is checked when the run starts
            _check_values(lambda **kw: pentry(profiler=_Probe(), **kw), probe, where + ("penalty",), problems,
                          bind=False)
            want = getattr(entry, "penalty_kind", None) if oneshot else registry.get("penalties", "sample")
            if want is not None and inspect.isclass(pentry) and not issubclass(pentry, want):
                fits = [n for n in registry.names("penalties") if issubclass(registry.get("penalties", n), want)]
                problems.append((path_text(where + ("penalty", "name")),
                                 f"strategy {name!r} takes a penalty of kind {fits} ({want.__name__}), got "
                                 f"{pen['name']!r}" + ("" if oneshot else "; a multi-trial search penalises each "
                                                       "sample's score by its own cost")))
        d["penalty"] = pen
    filters = []
    for i, f in enumerate(_as_list(d["filter"])):
        fentry, fd = _block("filters", f, where + ("filter", i), problems)
        if fd is not None and "metric" in fd and fd.get("metric") is None and fentry is registry.get("filters", "range"):
            problems.append((path_text(where + ("filter", i, "metric")), f"required: the metric to filter on, one "
                                                                         f"of {metrics}"))
        elif fd is not None and fd.get("metric") is not None:
            _metric_known(fd["metric"], metrics, where + ("filter", i, "metric"), problems)
        if fd is not None:
            fd.update({k: _number_text(fd[k]) for k in ("min", "max") if k in fd})
        filters.append(fd)
    d["filter"] = filters
    return oneshot, d


class _Probe:
    """A stand-in profiler, so that a penalty's own checks (nonlinear, aggregate, scale) run before the space."""

    metric = "probe"

    def profile(self, sample: Any) -> float:
        return 1.0

    def expectation(self, probs: Any) -> float:
        return 1.0


def _metric_known(metric: str, metrics: list[str], where: tuple, problems: list) -> None:
    if metric not in metrics:
        why = " (latency_ms needs device.lut or device.predictor)" if metric == "latency_ms" else ""
        problems.append((path_text(where), f"no metric {metric!r}{_near(metric, metrics)}; the metrics are "
                                           f"{metrics}{why}"))


def _resolve_space(space: dict, problems: list) -> None:
    import hwnas

    if space["name"] is not None:
        if _named("spaces", space["name"], ("space", "name"), problems) is not None and space["input_shape"] is None:
            space["input_shape"] = list(hwnas.spaces.input_shape(space["name"]))
    else:
        _named("models", space["convert"]["model"], ("space", "convert", "model"), problems)
        if space["input_shape"] is None:
            space["input_shape"] = [1, 3, 224, 224]


def _resolve_device(device: dict, problems: list) -> None:
    from hwnas.artifacts import list_artifacts, resolve_lut

    if not registry.kind("devices").has(device["name"]) and not device["name"].startswith("remote:"):
        _named("devices", device["name"], ("device", "name"), problems)
        return
    if device["lut"] is not None and device["build"] is None:
        try:
            found = resolve_lut(device["lut"], device["name"]).is_file()
        except (FileNotFoundError, KeyError, ValueError):
            found = False
        if not found:
            shipped = [a.name for a in list_artifacts("lut")]
            problems.append(("device.lut", f"{device['lut']!r} is neither a file nor a shipped LUT"
                                           f"{_near(device['lut'], shipped)}; shipped: {shipped} (or add "
                                           "device.build to measure it)"))


def resolve(raw: dict[str, Any], source: str = "experiment config") -> dict[str, Any]:
    """The resolved config of ``raw``: every default filled in, every name and value checked.

    Raises:
        ConfigError: every problem found, each with its key path.
    """
    if not isinstance(raw, dict):
        raise ConfigError([("", f"expected a mapping of keys, got {type(raw).__name__}")], source)
    if raw.get("pipeline", "search") not in ("search", "demo"):
        raise ConfigError([("pipeline", f"expected 'search' (the default) or 'demo' (hwnas demo), got "
                                        f"{raw['pipeline']!r}{_near(raw['pipeline'], ['search', 'demo'])}")], source)
    if raw.get("pipeline", "search") == "demo":
        m, problems = validate(DemoConfig, raw)
        if problems:
            raise ConfigError(problems, source)
        return m.model_dump(mode="json")
    m, problems = validate(ExperimentConfig, raw)
    if problems:
        raise ConfigError(problems, source)
    out = m.model_dump(mode="json")
    problems = []
    _resolve_space(out["space"], problems)
    _resolve_device(out["device"], problems)
    dev = out["device"]
    metrics = ["flops", "params"] + (["latency_ms"] if dev["lut"] or dev["predictor"] else [])
    for metric, bound in list(out["constraints"].items()):
        bound = out["constraints"][metric] = _number_text(bound)
        _metric_known(metric, metrics, ("constraints", metric), problems)
        if isinstance(bound, str) and not (bound.endswith("%") and _is_number(bound[:-1])):
            problems.append((f"constraints.{metric}", f"expected a number or a percentage of the largest subnet "
                                                      f"such as '60%', got {bound!r}"))
        elif not isinstance(bound, str) and not bound > 0:
            problems.append((f"constraints.{metric}", f"expected a positive bound, got {bound!r}"))
    oneshot, out["strategy"] = _resolve_strategy(out["strategy"], metrics, problems)
    ev_name = out["evaluator"].get("name")
    if out["strategy"] is not None and isinstance(ev_name, str) and oneshot != (ev_name == ONESHOT_ESTIMATOR):
        problems.append(("evaluator.name", f"a one-shot strategy trains with the evaluator {ONESHOT_ESTIMATOR!r}, a "
                                           f"multi-trial one scores with another (supernet, metric, function); got "
                                           f"{ev_name!r} with strategy {out['strategy']['name']!r}"))
        raise ConfigError(problems, source)
    entry, ev = _block("estimators", out["evaluator"], ("evaluator",), problems)
    if ev is not None:
        if "data" in ev:
            _named("datasets", ev["data"]["name"], ("evaluator", "data", "name"), problems)
        if "metric" in ev:
            _metric_known(ev["metric"], metrics, ("evaluator", "metric"), problems)
    out["evaluator"] = ev
    for kind, key in (("exporters", "exports"), ("reports", "reports")):
        out[key] = [_block(kind, item, (key, i), problems)[1] for i, item in enumerate(out[key])]
    if problems:
        raise ConfigError(problems, source)
    return out


def _number_text(value: Any) -> Any:
    """``"3e6"`` (which YAML 1.1 reads as a string) as the number 3e6; anything else as it is."""
    return float(value) if isinstance(value, str) and _is_number(value) else value


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
