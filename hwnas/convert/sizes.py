"""Where the ints of a traced model come from, so that sizes computed from a searched width stay right.

A model can read a tensor's size and compute with it: ``B, N, C = x.shape`` then
``qkv.reshape(B, N, 3, heads, C // heads)`` (a hand-written attention), ``x.view(b, c)`` after pooling,
``torch.zeros(B, C)``. In a converted space the sizes follow the sample, so such code is only safe when
every size it uses for a tracked channel axis is exactly the size of that same axis. :class:`SizeTracking`
(a part of :class:`hwnas.convert.analysis.Analyzer`) records, for every int (or ``torch.Size``) node, the
channel axes it was computed from (:class:`SizeOf`), and fixes those channels wherever a size is used in
any other way: a reshape whose channel count is computed from another axis (``C // heads``), a tensor
created with a channel count, a size passed to a layer or to a function it does not know. Using a size as
a scalar in arithmetic with tensors (an attention scale ``C ** -0.5``) or in an assertion is harmless.
"""

from __future__ import annotations

import builtins
import operator
from dataclasses import dataclass
from typing import Any

from torch import fx

from hwnas.convert.channels import Ann

__all__ = ["SizeOf", "SizeTracking", "nodes_in", "what", "where"]


@dataclass(frozen=True)
class SizeOf:
    """An int computed from tensor sizes.

    Attributes:
        deps: the tracked channel axes it depends on (empty for a batch or spatial size).
        axis: the tracked channel axis whose size it is, exactly (``None`` when computed from sizes).
    """

    deps: tuple[Ann, ...] = ()
    axis: Ann = None


def _ints_of(value: Any) -> Any:
    """A literal tuple/list of ints as provenance entries (ints stay ints), else ``None``."""
    if isinstance(value, (tuple, list)):
        return [v if isinstance(v, int) else None for v in value]
    return None


class SizeTracking:
    """Size provenance for :class:`~hwnas.convert.analysis.Analyzer` (see the module docstring).

    ``self.sizes`` maps a node to a :class:`SizeOf` (an int) or to a list of entries (a ``torch.Size``
    or tuple: :class:`SizeOf`, a literal ``int``, or ``None`` for an unknown value).
    """

    sizes: dict[fx.Node, Any]
    rewrites: dict[fx.Node, int]

    # implemented by the Analyzer
    def _tensor(self, node: Any) -> list[Ann] | None: ...  # pragma: no cover

    def _note_fixed(self, n: fx.Node, what: str, reason: str) -> None: ...  # pragma: no cover

    ch: Any

    def size_source(self, n: fx.Node) -> bool:
        """Record ``x.shape``, ``x.size()``, ``x.size(d)``, ``x.numel()``; True when ``n`` is one of them."""
        t, args = n.target, n.args
        if t is builtins.getattr and len(args) > 1 and args[1] == "shape" or t == "size":
            axes = self._tensor(args[0])
            if axes is None:
                return False
            entries = [SizeOf((a,), a) if a is not None else SizeOf() for a in axes]
            dim = args[1] if t == "size" and len(args) > 1 else n.kwargs.get("dim") if t == "size" else None
            self.sizes[n] = entries[dim] if isinstance(dim, int) else entries
            return True
        if t == "numel":
            axes = self._tensor(args[0]) or []
            self.sizes[n] = SizeOf(tuple(a for a in axes if a is not None))
            return True
        return False

    def size_deps(self, value: Any) -> list[Ann]:
        """Every tracked channel axis that the ints among ``value``'s nodes depend on."""
        out: list[Ann] = []
        for x in nodes_in(value):
            s = self.sizes.get(x)
            for item in s if isinstance(s, list) else [s]:
                if isinstance(item, SizeOf):
                    out.extend(item.deps)
        return out

    def size_arith(self, n: fx.Node) -> None:
        """An int (or tuple) computed from other ints: getitem of a ``torch.Size``, ``C // heads``, ``+``."""
        t, args = n.target, n.args
        src = args[0] if args else None
        if t is operator.getitem and isinstance(self.sizes.get(src), list):
            entries, idx = self.sizes[src], args[1]
            if isinstance(idx, (int, slice)):
                self.sizes[n] = entries[idx]
                return
        if t is operator.add and len(args) == 2:
            parts = [self.sizes.get(a) if isinstance(a, fx.Node) else _ints_of(a) for a in args]
            if all(isinstance(p, list) for p in parts):  # torch.Size + (-1,): concatenation
                self.sizes[n] = parts[0] + parts[1]
                return
        deps = self.size_deps((args, n.kwargs))
        if deps:
            self.sizes[n] = SizeOf(tuple(deps))

    def fix_sizes(self, n: fx.Node, use: str) -> None:
        """Fix every channel axis whose size ``n`` uses (``use`` says how, for the summary)."""
        deps = self.size_deps((n.args, n.kwargs))
        if deps:
            self.ch.fix_ann(deps, f"its channel count is used as a size ({use}) at {where(n)}")
            self._note_fixed(n, what(n), f"uses a channel count as a size ({use})")

    def size_entries(self, n: fx.Node, sizes: list[Any]) -> list[Any]:
        """The size arguments of a reshape/expand, one per output axis, with ``torch.Size`` nodes expanded."""
        if len(sizes) == 1 and isinstance(sizes[0], fx.Node) and isinstance(self.sizes.get(sizes[0]), list):
            return list(self.sizes[sizes[0]])
        return [self.sizes.get(v, v) if isinstance(v, fx.Node) else v for v in sizes]

    def check_sizes(self, n: fx.Node, sizes: list[Any], out: list[Ann], literal: str) -> None:
        """Check the size given for each output axis of a reshape/expand ``n`` whose axes are ``out``.

        Safe: ``-1``; any value for an untracked axis unless it is computed from a tracked channel axis; for
        a tracked axis, exactly the size of a tracked axis (``y.view(b, c)`` with ``c = x.size(1)``), which
        unites the two (they must have the same width in every subnet). Anything else fixes the axis and
        the channels its size was computed from. ``literal`` names the op for a literal channel
        count (``"reshape"``, ``"expand"``).
        """
        entries = self.size_entries(n, sizes)
        skip = self._minus_one(n, sizes, entries, out) if literal == "reshape" else None
        for j, v in enumerate(entries):
            if j >= len(out):
                break
            ax = out[j]
            if j == skip:
                continue
            if isinstance(v, int) and not isinstance(v, bool):
                if ax is not None and v != -1:
                    self.ch.fix_ann(ax, f"{literal} writes the channel count as the literal {v} at {where(n)}")
                continue
            if isinstance(v, SizeOf):
                if ax is not None and v.axis is not None:  # x.view(b, c) with c = y.size(1): same width always
                    self.ch.unite(v.axis, ax, f"{literal} at {where(n)} sets the channel count from another axis")
                    continue
                if not v.deps and ax is None:
                    continue
                self.ch.fix_ann(list(v.deps), f"its channel count sets another axis's size in a {literal} at "
                                              f"{where(n)}")
            if ax is not None:
                self.ch.fix_ann(ax, f"{literal} sets the channel count from a computed size at {where(n)}")
            if isinstance(v, SizeOf) and v.deps or ax is not None:
                self._note_fixed(n, what(n), f"{literal} sizes computed from channel counts")


    def _minus_one(self, n: fx.Node, sizes: list[Any], entries: list[Any], out: list[Ann]) -> int | None:
        """The one searched axis of a reshape whose given size would not follow the sample (a literal, or a size
        computed from other axes), when it can be written as ``-1`` instead (no other ``-1``, sizes passed as
        arguments): recorded in ``self.rewrites`` and returned; else ``None``."""
        if n.kwargs or any(isinstance(v, int) and v == -1 for v in entries) or len(entries) != len(out):
            return None
        bad = [j for j, (v, ax) in enumerate(zip(entries, out)) if ax is not None and not
               (isinstance(v, SizeOf) and v.axis is not None and self.ch.same(v.axis, ax))]
        if len(bad) != 1:
            return None
        self.rewrites[n] = bad[0]
        return bad[0]


def nodes_in(value: Any) -> list[fx.Node]:
    """The nodes in an fx argument structure (nested tuples, lists, dicts and slices), in order, with repeats."""
    if isinstance(value, fx.Node):
        return [value]
    out: list[fx.Node] = []
    _collect(value, out)
    return out


def _collect(value: Any, out: list[fx.Node]) -> None:
    # one list for the whole walk (building a list per level made deep or wide arguments quadratic)
    if isinstance(value, fx.Node):
        out.append(value)
    elif isinstance(value, (tuple, list)):
        for v in value:
            if isinstance(v, fx.Node):
                out.append(v)
            elif isinstance(v, (tuple, list, dict, slice)):
                _collect(v, out)
    elif isinstance(value, dict):
        for v in value.values():
            _collect(v, out)
    elif isinstance(value, slice):
        _collect((value.start, value.stop, value.step), out)


def where(n: fx.Node) -> str:
    stack = list(n.meta.get("nn_module_stack", {}))
    if n.op == "call_module":
        return str(n.target)
    return f"{stack[-1]}:{n.name}" if stack else n.name


def what(n: fx.Node, module: Any = None) -> str:
    """How an error names what a node calls: the module's class, ``.method()``, or the function's name."""
    if module is not None:
        return type(module).__name__
    if n.op == "call_method":
        return f".{n.target}()"
    return getattr(n.target, "__name__", str(n.target))
