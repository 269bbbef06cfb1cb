"""ModelOpt's mode configs (``AutoNASConfig``, ``FastNASConfig``, ``GradNASConfig``) as hwnas convert rules.

A config is a dict ``{layer type: {name pattern: settings}}`` with ModelOpt's documented defaults, so
``config["nn.Conv2d"]["*"]["channel_divisor"] = 64`` and
``config["nn.Conv2d"]["*"]["out_channels_ratio"] += (0.1,)`` work as in ModelOpt's guides; it is passed to
:func:`hwnas.convert` as ``rules`` (:mod:`hwnas.convert.rules`). The settings of batch-norm layers and
``nn.Sequential``'s ``min_depth`` are kept for show: hwnas derives norm widths from the layers that compute
the channels and searches depth over runs of residual blocks.
"""

from __future__ import annotations

from typing import Any

__all__ = ["AutoNASConfig", "FastNASConfig", "GradNASConfig", "MODES", "parse_mode"]

_ALIASES = {"out_channels_ratio": "channels_ratio", "features_ratio": "channels_ratio",
            "feature_divisor": "channel_divisor"}
_CONV = ("nn.Conv1d", "nn.Conv2d", "nn.Conv3d", "nn.ConvTranspose1d", "nn.ConvTranspose2d", "nn.ConvTranspose3d")
_NORMS = ("nn.BatchNorm1d", "nn.BatchNorm2d", "nn.BatchNorm3d", "nn.SyncBatchNorm", "nn.LayerNorm", "nn.GroupNorm")


class _Settings(dict):
    """One layer's settings; ``out_channels_ratio`` / ``features_ratio`` / ``feature_divisor`` are other names of
    ``channels_ratio`` / ``channel_divisor`` (ModelOpt spells them per layer type)."""

    def __getitem__(self, key: str) -> Any:
        return super().__getitem__(_ALIASES.get(key, key))

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(_ALIASES.get(key, key), value)

    def __contains__(self, key: object) -> bool:
        return super().__contains__(_ALIASES.get(key, key) if isinstance(key, str) else key)

    def get(self, key: str, default: Any = None) -> Any:
        return super().get(_ALIASES.get(key, key), default)


class _ModeConfig(dict):
    """A mode's rules with ModelOpt's defaults (a plain dict underneath: pass it to ``hwnas.convert(rules=)``)."""

    ratios: tuple[float, ...] = (1.0,)

    def __init__(self, overrides: dict[str, Any] | None = None, **kwargs: Any):
        super().__init__()
        for t in _CONV:
            self[t] = {"*": _Settings(channels_ratio=self.ratios, channel_divisor=32, kernel_size=())}
        self["nn.Linear"] = {"*": _Settings(channels_ratio=self.ratios, channel_divisor=32)}
        for t in _NORMS:
            self[t] = {"*": _Settings(feature_size_ratio=self.ratios)}
        self._extra()
        for key, value in {**(overrides or {}), **{k.replace("nn_", "nn."): v for k, v in kwargs.items()}}.items():
            self[key] = _wrap(value)

    def _extra(self) -> None:
        pass

    def model_dump(self) -> dict[str, Any]:
        """Plain dicts (pydantic's spelling, which ModelOpt's configs have)."""
        return {t: {p: (dict(s) if s is not None else None) for p, s in per.items()} if isinstance(per, dict) else per
                for t, per in self.items()}


def _wrap(value: Any) -> Any:
    if isinstance(value, dict):
        return {p: _Settings(s) if isinstance(s, dict) else s for p, s in value.items()}
    return value


class AutoNASConfig(_ModeConfig):
    """ModelOpt's ``"autonas"`` defaults: channel ratios (0.5, 0.67, 1.0) rounded to 32, no kernel choices,
    depth searched (``nn.Sequential`` ``min_depth`` 0)."""

    ratios = (0.5, 0.67, 1.0)

    def _extra(self) -> None:
        self["nn.Sequential"] = {"*": _Settings(min_depth=0)}


class FastNASConfig(_ModeConfig):
    """ModelOpt's ``"fastnas"`` defaults: channel ratios 0.05 .. 1.0 in steps of 0.05, rounded to 32."""

    ratios = tuple(round(0.05 * i, 2) for i in range(1, 21))


class GradNASConfig(FastNASConfig):
    """ModelOpt's ``"gradnas"`` defaults (as FastNAS; channels sorted by gradient scores)."""


#: ModelOpt mode name -> (hwnas convert mode, default config class).
MODES = {"autonas": ("autonas", AutoNASConfig), "fastnas": ("fastnas", FastNASConfig),
         "gradnas": ("fastnas", GradNASConfig)}


def parse_mode(mode: Any, who: str) -> tuple[str, dict[str, Any]]:
    """ModelOpt's ``mode`` argument (a name, a list of names, a list of ``(name, config)``) -> (name, rules).

    Raises:
        ValueError: an unknown mode or more than one search mode.
    """
    items = mode if isinstance(mode, list) else [mode]
    found: list[tuple[str, Any]] = []
    for item in items:
        name, cfg = item if isinstance(item, tuple) else (item, None)
        name = getattr(name, "name", name)  # a mode descriptor
        if name in ("export", "export_nas"):
            continue
        if name not in MODES:
            raise ValueError(f"{who}: unknown mode {name!r}; hwnas's ModelOpt layer supports {sorted(MODES)} (pass e.g. "
                             "mode='fastnas' or mode=[('autonas', config)]).")
        found.append((name, cfg))
    if len(found) != 1:
        raise ValueError(f"{who}: give exactly one of the modes {sorted(MODES)}, got {mode!r}.")
    name, cfg = found[0]
    base = MODES[name][1]()
    if isinstance(cfg, _ModeConfig):
        return name, cfg.model_dump()
    if hasattr(cfg, "model_dump"):
        cfg = cfg.model_dump()
    if cfg is not None and not isinstance(cfg, dict):
        raise ValueError(f"{who}: the config of mode {name!r} must be a dict or a {MODES[name][1].__name__}, got "
                         f"{type(cfg).__name__}.")
    for layer, per in (cfg or {}).items():  # a partial dict: settings left out keep ModelOpt's defaults
        default = dict(base.get(layer, {}).get("*") or {})
        base[layer] = per if not isinstance(per, dict) else \
            {p: None if s is None else _Settings({**default, **_Settings(s)}) for p, s in per.items()}
    return name, base.model_dump()
