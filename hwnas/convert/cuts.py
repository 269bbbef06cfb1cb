"""Cutting channel groups, for the convert analysis: splits, chunks, slices and head-splitting reshapes.

A part of :class:`hwnas.convert.analysis.Analyzer` (a mixin). A group can be *cut* into consecutive parts
(:meth:`hwnas.convert.channels.Channels.split`) where code splits a channel axis at a place inside it:

- ``x.chunk(k, dim)``: the parts keep one width label (chunk splits equally in every subnet);
- ``x.split(sizes, dim)`` and ``x[:, a:b]`` with sizes written in the code: the parts are free, and the node
  becomes a layer whose sizes follow the sample (:class:`hwnas.space.modules_data.DynSplit`, ``DynSlice``);
- a reshape ``(3 * C) -> (3, heads, head_dim)`` or ``C -> (heads, head_dim)`` *folds* the group into heads
  shared by every part (q, k and v keep the same heads), or into per-head widths where the code computes the
  head size from the width.

Every annotation held so far is then rewritten (:meth:`CuttingOps._rewrite`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import fx

from hwnas.convert.channels import Ann, Seg, Slot
from hwnas.convert.sizes import SizeOf
from hwnas.convert.sizes import what as _what
from hwnas.convert.sizes import where as _where

__all__ = ["CuttingOps"]


class CuttingOps:
    """The handlers (see the module docstring); state and helpers come from the Analyzer."""

    ch: Any
    ann: dict
    params: dict
    shapes: dict
    sizes: dict
    layers: dict
    cuts: dict
    ties: list

    def _split(self, n: fx.Node, a: list[Ann]) -> None:
        d = self._axis_arg(n, 2, "dim", 0, len(a))
        parts = None
        if a[d] is not None:
            sizes = [sh[d] for sh in self.shapes[n]]
            chunk = n.target in (torch.chunk, "chunk")
            parts = self._cut(n.args[0], d, sizes) if not chunk or len(set(sizes)) == 1 else None
            if parts is not None and chunk:  # chunk splits equally in every subnet: the parts' widths are tied
                if len({tuple(sg.width for sg in p) for p in parts}) != 1:
                    parts = None
                else:
                    for segs in zip(*parts):
                        self.ties.append([sg.group for sg in segs])
            elif parts is not None:  # sizes written in the code: a layer that follows the sample
                self.cuts[n] = ("split", d, parts)
        if parts is None and a[d] is not None:
            self.ch.fix_ann(a[d], f"split/chunk along the channel axis at {_where(n)}")
            self._note_fixed(n, _what(n), "splits the channel axis (not at whole channel groups, or a flattened "
                                          "axis)")
        outs = []
        for i in range(len(self.shapes[n])):
            part = list(self._tensor(n.args[0]))
            part[d] = parts[i] if parts is not None else None
            outs.append(part)
        self.ann[n] = tuple(outs)

    def _cut(self, src: fx.Node, d: int, sizes: list[int]) -> list[tuple[Seg, ...]] | None:
        """Cut channel axis ``d`` of ``src`` into consecutive parts of ``sizes`` channels, cutting groups where
        a part ends inside one (CSP's halves, DPN's residual and dense parts, GPT-2's q/k/v); ``None`` where a
        group cannot be cut there (grouped channels, flattened features)."""
        a = self._tensor(src)
        if any(sg.mult != 1 for sg in a[d]):
            return None
        bounds = [sum(sizes[:i]) for i in range(1, len(sizes))]
        cuts: dict[int, set[int]] = {}  # group root -> cut positions inside it
        off = 0
        for sg in a[d]:
            inner = {c - off for c in bounds if off < c < off + sg.width}
            cuts.setdefault(self.ch.find(sg.group), set()).update(inner)
            off += sg.width
        mapping: dict[int, list[Seg]] = {}
        for r, cs in cuts.items():
            if cs:
                edges = [0, *sorted(cs), self.ch.state[r].width]
                pieces = self.ch.split(r, [b - a_ for a_, b in zip(edges, edges[1:])])
                if pieces is None:
                    return None
                mapping[r] = [Seg(p, self.ch.state[p].width) for p in pieces]
        if mapping:
            self._rewrite(mapping)
            a = self._tensor(src)
        parts: list[list[Seg]] = []
        it = iter(a[d])
        for size in sizes:
            part, filled = [], 0
            while filled < size:
                sg = next(it)
                part.append(sg)
                filled += sg.width
            if filled != size:  # pragma: no cover - the cuts above make this exact
                return None
            parts.append(part)
        return [tuple(p) for p in parts]

    def _slice(self, n: fx.Node, src: fx.Node, dim: int, it: slice, items: tuple) -> Ann:
        """``x[:, a:b]`` along a tracked channel axis with literal bounds (DPN, GhostNet): the groups are cut at
        ``a`` and ``b``, and the slice becomes a layer whose bounds follow the sample. Other index items must
        be full slices or ``...``; else the channels are fixed."""
        size = self.shapes[src][dim]
        start, stop, step = it.indices(size)
        simple = all(x is Ellipsis or (isinstance(x, slice) and x == slice(None)) or x is it for x in items)
        parts = self._cut(src, dim, [v for v in (start, stop - start, size - stop) if v]) \
            if step == 1 and stop > start and simple else None
        if parts is None:
            self.ch.fix_ann(self._tensor(src)[dim], f"sliced along the channel axis at {_where(n)}")
            self._note_fixed(n, "getitem", "slices the channel axis (with a step, or with other indices)")
            return None
        k = 1 if start else 0
        self.cuts[n] = ("slice", dim, parts[:k], parts[k])
        return parts[k]

    def _rewrite(self, mapping: dict[int, list[Seg]]) -> None:
        """Replace every segment of a cut group (root -> its parts) in every annotation held so far."""
        def seg_list(ann: tuple) -> tuple:
            out: list[Seg] = []
            for s in ann:
                parts = mapping.get(self.ch.find(s.group))
                out.extend(Seg(p.group, p.width, s.mult * p.mult) for p in parts) if parts else out.append(s)
            return tuple(out)

        def walk(x: Any) -> Any:
            if isinstance(x, tuple) and x and isinstance(x[0], Seg):
                return seg_list(x)
            if isinstance(x, list):
                return [walk(v) for v in x]
            if isinstance(x, tuple):
                return tuple(walk(v) for v in x)
            if isinstance(x, SizeOf):
                return SizeOf(tuple(walk(v) for v in x.deps), walk(x.axis))
            return x

        for k in list(self.ann):
            self.ann[k] = walk(self.ann[k])
        for k in list(self.params):
            self.params[k] = walk(self.params[k])
        for k in list(self.sizes):
            self.sizes[k] = walk(self.sizes[k])
        for rec in self.layers.values():
            rec.axes = {k: walk(v) for k, v in rec.axes.items()}
        for k in list(self.cuts):
            self.cuts[k] = walk(self.cuts[k])

    def _fold(self, n: fx.Node, src: fx.Node, i: int, j0: int, j1: int, res: list[Ann], literals: Any) -> bool:
        """A reshape that splits channel axis ``i`` into output axes ``j0 .. j1 - 1`` (attention heads:
        ``(3 * C) -> (3, heads, head_dim)`` or ``C -> (heads, head_dim)``). The group becomes a group of *units*
        (heads, each spanning the trailing sizes), shared by every outer part (q, k and v keep the same heads):
        the number of heads is searched. When the code computes the head size from the channel count
        (``x.size(-1) // heads``), the unit is one feature of the last axis instead (per-head width searched,
        head count kept). Returns False (and changes nothing) where this does not apply."""
        ax = self._tensor(src)[i]
        dims = [j for j in range(j0, j1) if self.shapes[n][j] != 1]
        if len(ax) != 1 or ax[0].mult != 1 or len(dims) < 2:
            return False
        g = self.ch.find(ax[0].group)
        st = self.ch.state[g]
        if st.block != 1 or st.multiple != 1 or st.fixed is not None:
            return False
        entries = self.size_entries(n, literals) if literals is not None else [None] * len(self.shapes[n])
        s_out = self.shapes[n]
        u = dims[-2]
        trailing_ok = all(isinstance(e, int) or (isinstance(e, SizeOf) and not e.deps)
                          for e in entries[u + 1:j1]) if len(entries) == len(s_out) else False
        if not trailing_ok:
            u = dims[-1]
        unit, mult = s_out[u], 1
        for d in range(u + 1, j1):
            mult *= s_out[d]
        outer = st.width // (unit * mult)
        pieces = self.ch.split(g, [unit * mult] * outer) if outer > 1 else [g]
        if pieces is None:
            return False
        for p in pieces:
            ps = self.ch.state[p]
            ps.width, ps.unit = unit, "heads" if mult > 1 else "head_width"
            ps.slots = [Slot(sl.owner, sl.attr, sl.axis, sl.offset, sl.mult * mult, sl.role) for sl in ps.slots]
        for p in pieces[1:]:
            self.ch.union(pieces[0], p)
        self._rewrite({g: [Seg(p, unit, mult) for p in pieces]})
        res[u] = (Seg(self.ch.find(pieces[0]), unit),)
        return True
