"""Channel groups: the union-find over channel axes that :func:`hwnas.convert` builds while it reads a graph.

Every channel axis a layer writes starts a *group*; ops that force two axes to hold the same channels
in the same order (a residual add, a depthwise conv, a squeeze-excite gate, an attention layer reading its
input) unite their groups. A group is searched with one width choice and sorted with one permutation,
unless something makes it unsafe to change: then it is *fixed*, with the first reason found.

A tensor's channel axis is described by segments (:class:`Seg`): one for an ordinary tensor, several
after a concatenation along that axis.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, NamedTuple

__all__ = ["Seg", "Slot", "GroupState", "Channels", "Ann", "UNTRACKED"]

#: The reason of groups made for channels whose origin is not tracked (model input, unknown ops); such
#: groups are not listed in summaries (the op that lost track of them is).
UNTRACKED = "untracked"


class Seg(NamedTuple):
    """A run of ``width`` channels of group ``group``, each spanning ``mult`` features."""

    group: int
    width: int
    mult: int = 1


#: A channel axis: its segments, or ``None`` for an axis that is not a tracked channel axis (batch, space,
#: tokens, or channels whose origin is unknown, which are then fixed).
Ann = tuple[Seg, ...] | None


@dataclass(frozen=True)
class Slot:
    """Where a group's channels sit in a tensor of the model.

    Attributes:
        owner: the module path (a ``call_module`` target) or the parameter's name (a ``get_attr`` target).
        attr: the tensor's attribute path inside the module (``"weight"``, ``"out_proj.weight"``), or ``""``
            for a parameter used directly.
        axis: the tensor axis.
        offset: the first feature of the group along that axis.
        mult: features per channel.
        role: ``"producer"`` (a layer computes these channels: its filters give the importance),
            ``"consumer"`` (a layer reads them) or ``"member"`` (per-channel parameters or buffers).
    """

    owner: str
    attr: str
    axis: int
    offset: int
    mult: int
    role: str


@dataclass
class GroupState:
    """What is known about one group (valid on its union-find root)."""

    width: int
    order: int
    fixed: str | None = None
    block: int = 1
    multiple: int = 1
    slots: list[Slot] = field(default_factory=list)
    layers: list[str] = field(default_factory=list)
    unit: str = "width"  # what one channel is: "width" (a channel), "heads" (an attention head), "head_width"


class Channels:
    """Union-find over channel groups with their slots, constraints and fixed reasons."""

    def __init__(self) -> None:
        self.parent: list[int] = []
        self.state: list[GroupState] = []
        self.split_into: dict[int, list[int]] = {}

    def new(self, width: int, fixed: str | None = None) -> int:
        """A new group of ``width`` channels (fixed with ``fixed`` as the reason, if given)."""
        g = len(self.parent)
        self.parent.append(g)
        self.state.append(GroupState(int(width), g, fixed))
        return g

    def find(self, g: int) -> int:
        while self.parent[g] != g:
            self.parent[g] = self.parent[self.parent[g]]
            g = self.parent[g]
        return g

    def info(self, g: int) -> GroupState:
        return self.state[self.find(g)]

    def union(self, a: int, b: int, why: str = "") -> int:
        """Make ``a`` and ``b`` one group; groups of different widths are fixed instead (``why`` names the op)."""
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return ra
        sa, sb = self.state[ra], self.state[rb]
        if sa.width != sb.width:
            reason = f"{why + ': ' if why else ''}joined with a group of another width ({sa.width} vs {sb.width})"
            self.fix(ra, reason)
            self.fix(rb, reason)
            return ra
        if sb.order < sa.order:
            ra, rb, sa, sb = rb, ra, sb, sa
        self.parent[rb] = ra
        sa.fixed = sa.fixed or sb.fixed
        sa.unit = sa.unit if sa.unit != "width" else sb.unit
        sa.block = math.lcm(sa.block, sb.block)
        sa.multiple = math.lcm(sa.multiple, sb.multiple)
        sa.slots.extend(sb.slots)
        sa.layers.extend(x for x in sb.layers if x not in sa.layers)
        return ra

    def split(self, g: int, widths: list[int]) -> list[int] | None:
        """Cut group ``g`` into consecutive parts of ``widths`` channels (new groups, each with the slots of
        its part), or ``None`` when the group's channels move in blocks that the cuts would break. The old
        group is left empty; annotations that name it must be rewritten by the caller."""
        r = self.find(g)
        st = self.state[r]
        if sum(widths) != st.width or any(w % st.block for w in widths):
            return None
        parts, off = [], 0
        for w in widths:
            p = self.new(w, st.fixed)
            ps = self.state[p]
            ps.block, ps.multiple = st.block, st.multiple
            for sl in st.slots:
                ps.slots.append(Slot(sl.owner, sl.attr, sl.axis, sl.offset + off * sl.mult, sl.mult, sl.role))
            ps.layers = list(st.layers)
            parts.append(p)
            off += w
        st.slots, st.layers = [], []
        st.fixed = UNTRACKED
        self.split_into[r] = parts
        return parts

    def fix(self, g: int, reason: str) -> None:
        s = self.info(g)
        if s.fixed is None:
            s.fixed = reason

    def fixed(self, g: int) -> bool:
        return self.info(g).fixed is not None

    def add_slot(self, g: int, slot: Slot) -> None:
        s = self.info(g)
        s.slots.append(slot)
        if slot.owner not in s.layers:
            s.layers.append(slot.owner)

    def constrain(self, g: int, block: int = 1, multiple: int = 1) -> None:
        s = self.info(g)
        s.block = math.lcm(s.block, int(block))
        s.multiple = math.lcm(s.multiple, int(multiple))

    def roots(self) -> list[int]:
        return sorted({self.find(g) for g in range(len(self.parent))}, key=lambda r: self.state[r].order)

    # ------------------------------------------------------------------ annotations
    def fix_ann(self, ann: Any, reason: str) -> None:
        """Fix every group in an annotation (a tensor's list of axes, or nested tuples of them)."""
        for seg in iter_segs(ann):
            self.fix(seg.group, reason)

    def same(self, a: Ann, b: Ann) -> bool:
        """True when two channel axes hold the same groups in the same layout."""
        if a is None or b is None:
            return a is None and b is None
        return len(a) == len(b) and all(self.find(x.group) == self.find(y.group) and x.width == y.width and
                                        x.mult == y.mult for x, y in zip(a, b))

    def unite(self, a: Ann, b: Ann, reason: str) -> Ann:
        """Unite two channel axes that must hold the same channels; returns the united axis.

        An untracked axis (``None``) fixes the other; segmentations that differ fix both.
        """
        if a is None and b is None:
            return None
        if a is None or b is None:
            self.fix_ann([a, b], reason)
            return None
        if len(a) != len(b) or any(x.width != y.width or x.mult != y.mult for x, y in zip(a, b)):
            self.fix_ann([a, b], f"{reason} (different concatenation layouts)")
            return a
        for x, y in zip(a, b):
            self.union(x.group, y.group, reason.replace(" with an untracked tensor", "").replace(
                " with an untracked operand", ""))
        return a


def iter_segs(ann: Any):
    """Every :class:`Seg` inside an annotation."""
    if isinstance(ann, Seg):
        yield ann
    elif isinstance(ann, (tuple, list)):
        for a in ann:
            yield from iter_segs(a)
