"""The model space: its labels, samples, validation and size.

Subclass :class:`Space` (an ``nn.Module``) to write a space, or call the free functions here on any
module that contains hwnas layers. A sample is a plain ``dict[label, value]``.

Example:
    >>> import hwnas
    >>> space = hwnas.spaces.create("digits")
    >>> sample = space.random_sample(0)
    >>> space.validate(sample) is sample      # checked (and coerced in place: 16.0 -> 16)
    True
    >>> space.num_subnets() > 1
    True
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import Any

import numpy as np
from torch import nn

from hwnas.space.choice import Choice, ChoiceError, evaluate, leaf_choices
from hwnas.space.modules import HwnasModule, LayerChoice, Repeat

__all__ = ["Space", "SampleError", "collect_choices", "validate_sample", "sample_from_json", "as_rng", "apply_arch",
           "rank_order", "count_subnets", "canonical_sample", "canonicalizer"]


class SampleError(ChoiceError):
    """A sample does not fit its space."""


def as_rng(rng: np.random.Generator | int | None, name: str = "seed") -> np.random.Generator:
    """A ``numpy.random.Generator`` from a generator, a seed (an int >= 0) or ``None`` (fresh entropy).

    Raises:
        ValueError: ``rng`` is a negative int, a bool, a string or anything else; the message names ``name``.
    """
    if rng is None or isinstance(rng, np.random.Generator):
        return np.random.default_rng() if rng is None else rng
    if isinstance(rng, (np.random.SeedSequence, np.random.BitGenerator)):
        return np.random.default_rng(rng)
    if isinstance(rng, (bool, np.bool_)) or not isinstance(rng, (int, np.integer)) or rng < 0:
        raise ValueError(f"{name} must be an int >= 0 (or a numpy.random.Generator, or None for fresh entropy), got "
                         f"{rng!r} ({type(rng).__name__}); e.g. {name}=0.")
    return np.random.default_rng(int(rng))


def _module_choices(root: nn.Module) -> list[tuple[str, Choice]]:
    found: list[tuple[str, Choice]] = []
    res = getattr(root, "resolution", None)
    if isinstance(res, Choice):
        found.append(("resolution", res))
    for path, m in root.named_modules():
        if isinstance(m, HwnasModule):
            for v in m.choice_values():
                found.extend((path or "<root>", c) for c in leaf_choices(v))
    return found


def collect_choices(root: nn.Module) -> dict[str, Choice]:
    """Every label in ``root`` with its :class:`Choice`, in order of first appearance.

    Raises:
        ChoiceError: two choices share a label but list different values.
    """
    out: dict[str, Choice] = {}
    where: dict[str, str] = {}
    for path, c in _module_choices(root):
        prev = out.get(c.label)
        if prev is None:
            out[c.label], where[c.label] = c, path
        elif prev is not c and tuple(prev.values) != tuple(c.values):
            raise ChoiceError(
                f"label {c.label!r} is used with values {list(prev.values)!r} at {where[c.label]!r} and with "
                f"{list(c.values)!r} at {path!r}; one label is one decision, so give both the same values "
                "or use two labels."
            )
    return out


def _same_kind(value: Any, choice_value: Any) -> bool:
    """Whether ``value`` may stand for ``choice_value`` (they are equal): never a bool for a number or back."""
    is_bool = isinstance(value, (bool, np.bool_))
    return is_bool == isinstance(choice_value, (bool, np.bool_))


def _coerce(label: str, value: Any, values: tuple) -> Any:
    """``value`` as the choice's own value object, or :class:`SampleError`."""
    for v in values:
        if type(v) is type(value) and v == value:
            return v
    try:
        hash(value)
        match = [v for v in values if _same_kind(value, v) and v == value]
    except TypeError:
        match = []
    if match and not isinstance(value, str):
        return match[0]
    kinds = sorted({type(v).__name__ for v in values})
    hint = "pick one of those"
    if isinstance(value, (bool, np.bool_)) and match == [] and any(v == value for v in values):
        hint = f"a bool is not a number here: write {values[[v == value for v in values].index(True)]!r}"
    elif isinstance(value, str) and any(str(v) == value.strip() for v in values):
        hint = f"the choices are {'/'.join(kinds)}, not strings: write {value.strip()} without quotes"
    elif isinstance(value, (float, np.floating)) and any(isinstance(v, int) for v in values):
        hint = "an int choice takes an integral value, e.g. 16 or 16.0 but not 16.5"
    raise SampleError(f"label {label!r} got value {value!r} ({type(value).__name__}), which is not one of its choices "
                      f"{list(values)!r} ({'/'.join(kinds)}); {hint}.")


def validate_sample(choices: dict[str, Choice], sample: Any) -> dict[str, Any]:
    """Raise :class:`SampleError` unless ``sample`` has exactly the labels of ``choices`` with valid values.

    Values equal to a choice but of another type are coerced *in place* to the choice's own value:
    ``16.0``, ``np.float64(16)`` or ``np.int64(16)`` for the int choice ``16`` become the plain int ``16``
    (so a validated sample is plain JSON and exports as integers). A bool never stands for a number
    (``True`` is refused for the choice ``1``), a string never for a number (``"16"`` is refused), and a
    non-integral float never matches an int. The message names the label, the value and the choices.

    Returns:
        ``sample`` itself, with its values coerced.
    """
    if not isinstance(sample, dict):
        raise SampleError(f"a sample must be a dict of label -> value, got {type(sample).__name__}.")
    unknown = [k for k in sample if k not in choices]
    if unknown:
        raise SampleError(
            f"unknown label(s) {unknown!r} in sample; this space's labels are {list(choices)!r}. "
            "Check for typos or a sample from another space."
        )
    missing = [k for k in choices if k not in sample]
    if missing:
        raise SampleError(
            f"sample misses label(s) {missing!r}; every label needs a value (see space.choices()), "
            "e.g. start from space.max_sample() and change what you need."
        )
    for label, c in choices.items():
        value = sample[label]
        coerced = _coerce(label, value, tuple(c.values))
        if coerced is not value:
            sample[label] = coerced
    return sample


def sample_from_json(data: Any, where: str) -> dict[str, Any]:
    """Check that ``data`` read from a file is a sample: a JSON object of label -> number, string, bool or null.

    Numbers must be finite. This checks the types only (the file does not name its space); the space's
    :func:`validate_sample` checks the labels and values.

    Raises:
        SampleError: naming ``where`` (the file), the label and the value.
    """
    if not isinstance(data, dict):
        raise SampleError(f"{where} should hold a JSON object of label -> value (as written by hwnas.save_arch), got "
                          f"{type(data).__name__}.")
    for label, value in data.items():
        if not isinstance(label, str) or not label:
            raise SampleError(f"{where}: label {label!r} is not a non-empty string.")
        if value is not None and not isinstance(value, (bool, int, float, str)):
            raise SampleError(f"{where}: label {label!r} has the value {value!r} ({type(value).__name__}); a choice's "
                              "value is a number, a string or a bool, not a list or an object.")
        if isinstance(value, float) and not math.isfinite(value):
            raise SampleError(f"{where}: label {label!r} has the value {value!r}; a choice's value is finite.")
    return data


def rank_order(root: nn.Module, choices: dict[str, Choice]) -> dict[str, list[Any]]:
    """Each label's values from the smallest to the largest subnet they make.

    Numbers sort by value; a :class:`LayerChoice`'s candidates sort by their parameter count.
    """
    lc_sizes: dict[str, dict[Any, int]] = {}
    for m in root.modules():
        if isinstance(m, LayerChoice):
            lc_sizes[m.label] = {k: sum(p.numel() for p in c.parameters())
                                 for k, c in zip(m.choice.values, m.candidates)}
    order: dict[str, list[Any]] = {}
    for label, c in choices.items():
        if label in lc_sizes:
            order[label] = sorted(c.values, key=lambda v, s=lc_sizes[label]: (s[v], c.values.index(v)))
        else:
            try:
                order[label] = sorted(c.values)
            except TypeError:
                order[label] = list(c.values)
    return order


def apply_arch(root: nn.Module, sample: dict[str, Any]) -> nn.Module:
    """Make ``root`` (a space) compute as the subnet ``sample``; returns ``root``."""
    validate_sample(collect_choices(root), sample)
    sample = dict(sample)
    for m in root.modules():
        if isinstance(m, HwnasModule):
            m._hwnas_sample = sample
            m._hwnas_mixed = None
    root._hwnas_active = sample
    return root


class _Scope:
    """A node of the structure tree used to count distinct subnets."""

    def __init__(self) -> None:
        self.labels: set[str] = set()
        self.children: list[tuple[Repeat | LayerChoice, list[_Scope]]] = []


def _visit(m: nn.Module, scope: _Scope, path: tuple, uses: dict[str, list[tuple]],
           index: dict[tuple, _Scope]) -> None:
    if isinstance(m, HwnasModule):
        for c in leaf_choices(m.choice_values()):
            uses.setdefault(c.label, []).append(path)
    if isinstance(m, (Repeat, LayerChoice)):
        branches = []
        for i, b in enumerate(m.blocks if isinstance(m, Repeat) else m.candidates):
            sub, s = path + ((id(m), i),), _Scope()
            index[sub] = s
            branches.append(s)
            _visit(b, s, sub, uses, index)
        scope.children.append((m, branches))
        return
    for child in m.children():
        _visit(child, scope, path, uses, index)


def _structure_labels(m: Repeat | LayerChoice) -> list[str]:
    return [c.label for c in leaf_choices(m.depth if isinstance(m, Repeat) else m.choice)]


def count_subnets(root: nn.Module) -> int:
    """The number of distinct subnets of ``root``.

    Labels that only matter inside an optional block (a :class:`Repeat` block beyond the chosen depth,
    an unchosen :class:`LayerChoice` candidate) are counted only where they matter, so a space of five
    stages with depth {2, 3, 4} and 9 (kernel, expand) options per block has ``(9^2 + 9^3 + 9^4)^5``
    subnets, as Once-for-All counts them. A label belongs to the innermost structure that holds all its
    uses; a depth or candidate label shared between structures is enumerated where it belongs. The count
    is exact when every use of a label is active whenever its owning structure is.
    """
    choices = collect_choices(root)
    top, structural = _scope_tree(root)
    return _count(top, {}, choices, structural)


def _scope_tree(root: nn.Module) -> tuple[_Scope, set[str]]:
    """The structure tree of ``root`` (each label in the innermost scope holding all its uses) and the
    structural labels (depths and candidate choices)."""
    top = _Scope()
    uses: dict[str, list[tuple]] = {}
    index: dict[tuple, _Scope] = {(): top}
    res = getattr(root, "resolution", None)
    if isinstance(res, Choice):
        uses.setdefault(res.label, []).append(())
    _visit(root, top, (), uses, index)
    for label, paths in uses.items():
        common = paths[0]
        for p in paths[1:]:
            n = 0
            while n < min(len(common), len(p)) and common[n] == p[n]:
                n += 1
            common = common[:n]
        index[common].labels.add(label)
    structural = {lab for s in index.values() for m, _ in s.children for lab in _structure_labels(m)}
    return top, structural


def canonicalizer(root: nn.Module) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """A function ``sample -> canonical sample`` for ``root`` (see :func:`canonical_sample`), with the structure
    analysed once, for calling many times (e.g. a grid over the space). It does not validate samples."""
    choices = collect_choices(root)
    first = {lab: c.values[0] for lab, c in choices.items()}
    top, _ = _scope_tree(root)

    def canonical(sample: dict[str, Any]) -> dict[str, Any]:
        used: set[str] = set()
        stack = [top]
        while stack:
            scope = stack.pop()
            used.update(scope.labels)
            for mod, branches in scope.children:
                if isinstance(mod, Repeat):
                    stack.extend(branches[: evaluate(mod.depth, sample)])
                else:
                    stack.append(branches[mod.index(evaluate(mod.choice, sample))])
        return {lab: v if lab in used else first[lab] for lab, v in sample.items()}

    return canonical


def canonical_sample(root: nn.Module, sample: dict[str, Any]) -> dict[str, Any]:
    """``sample`` with every label that does not matter under it (a block beyond its stage's depth, an
    unchosen candidate's choices) set to that label's first value: two samples of the same subnet have the
    same canonical sample, and :func:`count_subnets` counts canonical samples."""
    validate_sample(collect_choices(root), sample)
    return canonicalizer(root)(sample)


def _count(scope: _Scope, fixed: dict[str, Any], choices: dict[str, Choice], structural: set[str]) -> int:
    plain = [lab for lab in scope.labels if lab not in structural and lab not in fixed]
    enum = [lab for lab in scope.labels if lab in structural and lab not in fixed]
    base = math.prod(len(choices[lab].values) for lab in plain)
    total = 0
    for combo in itertools.product(*(choices[lab].values for lab in enum)):
        env = {**fixed, **dict(zip(enum, combo))}
        prod = 1
        for mod, branches in scope.children:
            if isinstance(mod, Repeat):
                d = evaluate(mod.depth, env)
                prod *= math.prod(_count(b, env, choices, structural) for b in branches[:d])
            else:
                prod *= _count(branches[mod.index(evaluate(mod.choice, env))], env, choices, structural)
        total += prod
    return base * total


class Space(nn.Module):
    """Base class for a model space written with ``hwnas.nn`` layers.

    Set ``self.resolution = Choice([...], label="resolution")`` to make the input resolution a choice:
    profilers then read the input's height and width from the sample.
    """

    resolution: Choice | None = None

    def choices(self) -> dict[str, tuple]:
        """Every label and its candidate values, in order of first appearance."""
        return {label: tuple(c.values) for label, c in collect_choices(self).items()}

    def validate(self, sample: dict[str, Any]) -> dict[str, Any]:
        """Raise :class:`SampleError` naming the label unless ``sample`` is a valid sample of this space.

        Values equal to a choice but of another type (``16.0``, ``np.int64(16)``) are coerced in place to the
        choice's own value; bools and strings never stand for numbers (see :func:`validate_sample`).
        Returns ``sample``.
        """
        return validate_sample(collect_choices(self), sample)

    def random_sample(self, rng: np.random.Generator | int | None = None) -> dict[str, Any]:
        """A uniformly random sample (each label independently), from a seeded ``numpy`` generator."""
        rng = as_rng(rng, "rng")
        return {label: c.values[int(rng.integers(len(c.values)))] for label, c in collect_choices(self).items()}

    def max_sample(self) -> dict[str, Any]:
        """The largest subnet: every label at its largest value (see :func:`rank_order`)."""
        return {label: vals[-1] for label, vals in rank_order(self, collect_choices(self)).items()}

    def min_sample(self) -> dict[str, Any]:
        """The smallest subnet: every label at its smallest value."""
        return {label: vals[0] for label, vals in rank_order(self, collect_choices(self)).items()}

    def num_subnets(self) -> int:
        """The number of distinct subnets (see :func:`count_subnets`)."""
        return count_subnets(self)

    def canonical(self, sample: dict[str, Any]) -> dict[str, Any]:
        """The same subnet with every unused label at its first value (see :func:`canonical_sample`)."""
        return canonical_sample(self, sample)

    def apply_arch(self, sample: dict[str, Any]) -> Space:
        """Make the supernet compute as ``sample`` (validated); returns ``self``."""
        return apply_arch(self, sample)
