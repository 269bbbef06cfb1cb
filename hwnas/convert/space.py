"""The result of :func:`hwnas.convert`: a :class:`ConvertedSpace` and the record of its conversion.

The record (:class:`Conversion`) is plain data (JSON): which channel groups were found, their width
choices, layers and importance order; the kernel and depth choices; what was kept fixed and why. It is
the recipe that :func:`hwnas.save` stores and :func:`hwnas.restore` checks.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from torch import fx

from hwnas.space.space import Space

__all__ = ["GroupReport", "KernelReport", "DepthReport", "FixedReport", "Conversion", "ConvertedSpace",
           "make_space"]


@dataclass
class GroupReport:
    """One channel group.

    Attributes:
        label: its width label (several groups may share one, e.g. a DenseNet block's growth), or ``None``
            when fixed.
        width: channels of the original model.
        choices: the width choices (``[width]`` when fixed).
        layers: module paths (and parameter names) whose tensors hold these channels.
        fixed: why the group is fixed, or ``None``.
        permutation: the importance order: new channel ``i`` is original channel ``permutation[i]``.
        block: channels move in whole blocks of this size (grouped convolutions).
        multiple: every choice is a multiple of this (attention heads, blocks, ``channel_divisor``).
    """

    label: str | None
    width: int
    choices: list[int]
    layers: list[str]
    fixed: str | None = None
    permutation: list[int] | None = None
    block: int = 1
    multiple: int = 1


@dataclass
class KernelReport:
    """A convolution whose kernel size is searched (centre-cropped weights, "same" padding)."""

    label: str
    layer: str
    choices: list[int]


@dataclass
class DepthReport:
    """A run of skippable residual blocks: depth ``d`` keeps the first ``d`` of them."""

    label: str
    blocks: list[str]
    choices: list[int]


@dataclass
class FixedReport:
    """An op or layer that kept the channels it touches fixed, and why."""

    where: str
    what: str
    reason: str


@dataclass
class Conversion:
    """How a model was converted: the recipe of :func:`hwnas.save` and the content of ``summary()``."""

    model: str
    mode: str
    channel_ratios: list[float]
    channel_divisor: int | None
    inputs: list[dict[str, Any]]
    groups: list[GroupReport] = field(default_factory=list)
    kernels: list[KernelReport] = field(default_factory=list)
    depths: list[DepthReport] = field(default_factory=list)
    fixed_ops: list[FixedReport] = field(default_factory=list)
    convert_s: float = 0.0
    decided_by_input: list[str] = field(default_factory=list)
    """Python control flow on traced values that the dummy input decided (``file:line: if `code```): the
    space is the model for inputs that take the same branches (see :mod:`hwnas.graph.example`)."""
    rules: dict[str, Any] | None = None  # per-layer rules (hwnas.convert.rules), as JSON

    @property
    def searched_groups(self) -> list[GroupReport]:
        return [g for g in self.groups if g.fixed is None]

    @property
    def fixed_groups(self) -> list[GroupReport]:
        return [g for g in self.groups if g.fixed is not None]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Conversion:
        d = dict(data)
        d["groups"] = [GroupReport(**g) for g in d.get("groups", [])]
        d["kernels"] = [KernelReport(**k) for k in d.get("kernels", [])]
        d["depths"] = [DepthReport(**k) for k in d.get("depths", [])]
        d["fixed_ops"] = [FixedReport(**k) for k in d.get("fixed_ops", [])]
        return cls(**d)

    def structure(self) -> dict[str, Any]:
        """The parts that define the space (no importance orders, no timing, not the wording of the reasons
        for what is fixed): equal for the same model."""
        d = self.to_dict()
        d.pop("convert_s")
        d.pop("fixed_ops")
        d.pop("decided_by_input")
        for g in d["groups"]:
            g.pop("permutation")
            g["fixed"] = g["fixed"] is not None
        return d

    def summary(self, num_subnets: int | None = None) -> str:
        """A readable report: searched groups, kernels, depths, and what is fixed and why."""
        searched, fixed = self.searched_groups, self.fixed_groups
        labels = sorted({g.label for g in searched if g.label})
        size = f"; {num_subnets:.3g} subnets (10^{math.log10(max(num_subnets, 1)):.1f})" if num_subnets else ""
        lines = [f"hwnas.convert({self.model}, mode={self.mode!r}): {len(searched)} channel groups searched "
                 f"with {len(labels)} width labels, {len(fixed)} groups fixed, {len(self.kernels)} kernel and "
                 f"{len(self.depths)} depth choices{size}; converted in {self.convert_s:.2f} s", ""]
        if searched:
            lines.append("width labels (label: choices <- layers holding the channels; groups sharing a label):")
            by_label: dict[str, list[GroupReport]] = {}
            for g in searched:
                by_label.setdefault(g.label or "", []).append(g)
            for label, gs in by_label.items():
                more = f" ({len(gs)} groups)" if len(gs) > 1 else ""
                lines.append(f"  {label}: {gs[0].choices}{more} <- {_short([x for g in gs for x in g.layers])}")
        if self.kernels:
            lines += ["", "kernel choices:"] + [f"  {k.label}: {k.choices}" for k in self.kernels]
        if self.depths:
            lines += ["", "depth choices (keep the first d blocks):"]
            lines += [f"  {d.label}: {d.choices} over {_short(d.blocks)}" for d in self.depths]
        if fixed:
            lines += ["", "fixed channel groups (width: why <- layers):"]
            lines += [f"  {g.width} channels: {g.fixed} <- {_short(g.layers)}" for g in fixed]
        if self.fixed_ops:
            lines += ["", "ops that fix the channels they touch:"]
            lines += [f"  {f.where} ({f.what}): {f.reason}" for f in self.fixed_ops]
        if self.decided_by_input:
            lines += ["", "control flow decided by the dummy input (the space holds for inputs of its shapes and "
                      "dtypes):"]
            lines += [f"  {d}" for d in _short_list(self.decided_by_input)]
        return "\n".join(lines)


def _short_list(items: list[str], n: int = 8) -> list[str]:
    return items[:n] + ([f"... (+{len(items) - n})"] if len(items) > n else [])


def _short(items: list[str], n: int = 6) -> str:
    return ", ".join(items[:n]) + (f", ... (+{len(items) - n})" if len(items) > n else "")


class ConvertedSpace(Space):
    """A plain model turned into a searchable space by :func:`hwnas.convert`.

    It is an :class:`hwnas.nn.Space`: ``choices()``, ``random_sample()``, ``num_subnets()``, every
    profiler, :func:`hwnas.profile` and :func:`hwnas.export` work on it. The converted network is
    ``self.net`` (a ``torch.fx.GraphModule`` with dynamic layers).

    Attributes:
        net: the network.
        conversion: the :class:`Conversion` record (the recipe).
        search_state: a JSON-able dict that :func:`hwnas.save` stores with the space (e.g. the current or
            best sample of a search).
    """

    def __init__(self, net: fx.GraphModule, conversion: Conversion):
        super().__init__()
        self.net = net
        self.conversion = conversion
        self.search_state: dict[str, Any] = {}
        self.input_names: list[str] | None = None  # the model's forward parameters, for keyword dummy inputs

    def forward(self, x):
        return self.net(x)

    def summary(self) -> str:
        """What was found and what was kept fixed, as text (see :meth:`Conversion.summary`)."""
        return self.conversion.summary(self.num_subnets())

    def __repr__(self) -> str:
        c = self.conversion
        return f"ConvertedSpace({c.model}, mode={c.mode!r}, {len(self.choices())} labels)"


def make_space(net: fx.GraphModule, conversion: Conversion, n_inputs: int) -> ConvertedSpace:
    """A :class:`ConvertedSpace` whose ``forward`` takes ``n_inputs`` tensors (torch.fx needs named args)."""
    if n_inputs == 1:
        return ConvertedSpace(net, conversion)
    args = ", ".join(f"x{i}" for i in range(n_inputs))
    ns: dict[str, Any] = {}
    exec(f"def forward(self, {args}):\n    return self.net({args})\n", ns)  # names built from ints only
    cls = type("ConvertedSpace", (ConvertedSpace,), {"forward": ns["forward"], "__module__": __name__})
    return cls(net, conversion)
