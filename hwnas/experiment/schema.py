"""The experiment file's schema (pydantic 2), and errors that name the key path.

The fixed part (space, device, constraints, output ...) is a set of pydantic models with unknown keys
forbidden. The blocks that name a registered part (``strategy``, ``strategy.penalty``, ``strategy.filter``,
``evaluator``, ``exports``, ``reports``) are checked against a model made from the part's own constructor
signature (:func:`params_model`), or its ``Config`` model when it has one, so a user's registered strategy is
validated like a shipped one.

Every problem becomes one line of a :class:`ConfigError`: the key path (``strategy.population_size``), what
was expected, what was given, and for an unknown key or name the closest valid ones.
"""

from __future__ import annotations

import inspect
import typing
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, model_validator

from hwnas.registry import closest

__all__ = ["ConfigError", "Strict", "SpaceConfig", "ConvertConfig", "DeviceConfig", "LutBuildConfig",
           "AdaptConfig", "DataConfig", "ExperimentConfig", "DemoConfig", "params_model", "validate", "path_text"]


class ConfigError(ValueError):
    """A malformed experiment config; ``problems`` holds ``(key path, message)`` pairs."""

    def __init__(self, problems: list[tuple[str, str]], source: str = "experiment config"):
        self.problems, self.source = problems, source
        lines = [f"{path}: {msg}" if path else msg for path, msg in problems]
        head = f"{source}: " + ("" if len(lines) == 1 else f"{len(lines)} problems:\n  ")
        super().__init__(head + "\n  ".join(lines))


class Strict(BaseModel):
    """A config block: unknown keys are refused."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)


class ConvertConfig(Strict):
    """A plain model to convert into a space (:func:`hwnas.convert`)."""

    model: str = Field(description="a zoo model name (hwnas.zoo.list()) or 'module:function' returning a model")
    model_args: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of the model builder")
    mode: str = "width"
    channel_ratios: list[float] | None = None
    channel_divisor: int | None = None


class SpaceConfig(Strict):
    """The space: a registered name or ``module:Class`` with ``args``, or ``convert`` of a model."""

    name: str | None = None
    args: dict[str, Any] = Field(default_factory=dict)
    convert: ConvertConfig | None = None
    input_shape: list[int] | None = Field(default=None, description="batch first; default: the space's own")

    @model_validator(mode="after")
    def _one_source(self) -> SpaceConfig:
        if (self.name is None) == (self.convert is None):
            raise ValueError("give exactly one of 'name' (a registered space or 'module:Class') and 'convert' "
                             f"(a model to convert), got {'both' if self.name else 'neither'}")
        if self.convert is not None and self.args:
            raise ValueError("'args' are a space constructor's; with 'convert' give the model's as "
                             "convert.model_args")
        if self.input_shape is not None and (not self.input_shape or any(d < 1 for d in self.input_shape)):
            raise ValueError(f"input_shape must be positive ints, batch first (e.g. [1, 3, 224, 224]), got "
                             f"{self.input_shape}")
        return self


class LutBuildConfig(Strict):
    """Build (or resume) the LUT ``device.lut`` for the space when the file is missing or incomplete."""

    repeats: int = Field(3, ge=1)
    runs: int = Field(30, ge=1)
    random_subnets: int = Field(60, ge=0)
    max_subnets: int | None = Field(None, ge=1)


class AdaptConfig(Strict):
    """Adapt ``device.lut`` (e.g. a shipped one) to ``device.name`` on this machine before the search."""

    n: int = Field(40, ge=5, le=200)
    budget_s: float = Field(120.0, gt=0)
    seed: int = Field(0, ge=0)


class DeviceConfig(Strict):
    """The device and its latency model: a LUT, a learned predictor, or both (the predictor fills gaps)."""

    name: str = "cpu-ort-1t"
    lut: str | None = Field(None, description="a LUT file or a shipped LUT's name")
    predictor: str | None = Field(None, description="a predictor file or a shipped predictor's device name")
    build: LutBuildConfig | None = None
    adapt: AdaptConfig | None = None

    @model_validator(mode="after")
    def _steps(self) -> DeviceConfig:
        if (self.build is not None or self.adapt is not None) and self.lut is None:
            raise ValueError("'build' and 'adapt' work on a LUT: give 'lut' (the file to build, or the LUT to adapt)")
        if self.build is not None and self.adapt is not None:
            raise ValueError("give 'build' (measure a LUT here) or 'adapt' (carry a LUT here), not both")
        return self


class DataConfig(Strict):
    """A data set: a registered one (``digits``) or ``module:function`` returning tensors."""

    name: str = "digits"
    args: dict[str, Any] = Field(default_factory=dict)


class ExperimentConfig(Strict):
    """A search experiment (``pipeline: search``)."""

    pipeline: Literal["search"] = "search"
    name: str = "experiment"
    seed: int = Field(0, ge=0)
    output: str = "hwnas-run"
    progress: bool = True
    threads: int = Field(1, ge=1, description="torch threads during the run")
    space: SpaceConfig
    device: DeviceConfig = Field(default_factory=DeviceConfig)
    constraints: dict[str, float | str] = Field(default_factory=dict)
    strategy: dict[str, Any]
    evaluator: dict[str, Any]
    exports: list[str | dict[str, Any]] = Field(default_factory=lambda: ["arch"])
    reports: list[str | dict[str, Any]] = Field(default_factory=lambda: ["history", "summary"])


class DemoConfig(Strict):
    """``hwnas demo`` as an experiment (``pipeline: demo``): :func:`hwnas.demo.run_demo` with these arguments."""

    pipeline: Literal["demo"]
    name: str = "demo"
    seed: int = Field(0, ge=0)
    output: str = "hwnas-demo"
    progress: bool = True
    threads: int = Field(1, ge=1)
    quick: bool = False
    lut: str = "digits_cpu-ort-1t"


# ------------------------------------------------------------------------------------------- models from code
_SKIP = {"self", "penalty", "filter", "profiler", "space", "ctx"}


def params_model(entry: Any, label: str, extra: dict[str, Any] | None = None,
                 exclude: set[str] = frozenset()) -> type[BaseModel]:
    """A strict pydantic model of ``entry``'s keyword arguments (its ``Config`` model if it has one).

    Types come from the annotations (``Any`` where they cannot be read), defaults from the signature; the
    fields of ``extra`` (``{name: (type, default)}``) are added.
    """
    own = getattr(entry, "Config", None)
    if isinstance(own, type) and issubclass(own, BaseModel):
        if extra:
            return create_model(f"{label}_config", __base__=own, **extra)
        return own
    fn = entry.__init__ if inspect.isclass(entry) else entry
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # an annotation that does not resolve: validate those values loosely
        hints = {}
    fields = {}
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        params = {}
    for pname, p in params.items():
        if pname in _SKIP or pname in exclude or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        default = ... if p.default is p.empty else p.default
        fields[pname] = (hints.get(pname, Any), default)
    fields.update(extra or {})
    return create_model(f"{label}_config", __config__=ConfigDict(extra="forbid", arbitrary_types_allowed=True),
                        **fields)


# ------------------------------------------------------------------------------------------------ messages
def path_text(loc: tuple) -> str:
    """``("strategy", "filter", 0, "min")`` -> ``strategy.filter[0].min``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _fields_at(model: type[BaseModel], loc: tuple) -> list[str] | None:
    """The field names of the block at ``loc`` inside ``model`` (for 'did you mean')."""
    cls: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(cls, type) and issubclass(cls, BaseModel)) or part not in cls.model_fields:
            return None
        cls = _sub_model(cls.model_fields[part].annotation)
    return sorted(cls.model_fields) if isinstance(cls, type) and issubclass(cls, BaseModel) else None


def _sub_model(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _sub_model(arg)
        if found is not None:
            return found
    return None


def _given(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({type(value).__name__})"


def problems_of(err: ValidationError, model: type[BaseModel], prefix: tuple = ()) -> list[tuple[str, str]]:
    """One ``(path, message)`` per pydantic error: expected, given, and the closest keys for an unknown one."""
    out = []
    for e in err.errors():
        loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and ("[" in p or p.startswith("function-"))))
        kind = e["type"]
        if kind == "extra_forbidden":
            valid = _fields_at(model, loc[:-1]) or []
            near = closest(loc[-1], valid)
            msg = (f"unknown key{' (did you mean ' + ' or '.join(repr(n) for n in near) + '?)' if near else ''}; "
                   f"the keys here are {valid}")
        elif kind == "missing":
            msg = "required key is missing"
        elif kind == "value_error":
            msg = str(e.get("ctx", {}).get("error", e["msg"]))
        else:
            msg = f"{e['msg'][0].lower()}{e['msg'][1:]}; got {_given(e['input'])}"
        out.append((path_text(prefix + loc), msg))
    return out


def validate(model: type[BaseModel], data: Any, prefix: tuple = ()) -> tuple[BaseModel | None, list[tuple[str, str]]]:
    """``model`` validated from ``data``, or ``None`` and its problems (key paths under ``prefix``)."""
    if not isinstance(data, dict):
        return None, [(path_text(prefix), f"expected a mapping of keys to values, got {_given(data)}")]
    try:
        return model.model_validate(data), []
    except ValidationError as e:
        return None, problems_of(e, model, prefix)
