"""Progressive shrinking (Once-for-All, Cai et al. 2020): which labels each phase of training samples.

OFA trains the largest network first, then makes the kernel size elastic, then the depth, then the width
(expand ratios and channels). :func:`progressive_phases` sorts a space's labels into those phases:
kernel labels (a ``Conv2d`` kernel size), depth labels (a ``Repeat`` depth), and every other label (widths,
expand ratios, operator choices). ``SupernetTrainer(sampling="progressive")`` spends an equal share of its
epochs on each phase: phase 0 trains only the largest subnet, phase ``p`` samples the labels of phases 1..p
uniformly and holds the rest at their largest values.

Example:
    >>> import hwnas
    >>> phases = progressive_phases(hwnas.spaces.create("digits"))
    >>> [len(p) for p in phases]
    [4, 2, 11]
    >>> phases[1]
    ['s1.depth', 's2.depth']
"""

from __future__ import annotations

from torch import nn

from hwnas.space.choice import leaf_choices
from hwnas.space.modules import Conv2d, Repeat
from hwnas.space.space import collect_choices

__all__ = ["progressive_phases", "PHASE_NAMES"]

PHASE_NAMES = ("largest", "kernel", "depth", "width")


def progressive_phases(space: nn.Module) -> list[list[str]]:
    """``[kernel labels, depth labels, other labels]`` in the order of first appearance."""
    labels = list(collect_choices(space))
    kernel, depth = set(), set()
    for m in space.modules():
        if isinstance(m, Conv2d):
            kernel.update(c.label for c in leaf_choices(m.kernel_size))
        elif isinstance(m, Repeat):
            depth.update(c.label for c in leaf_choices(m.depth))
    depth -= kernel
    return [[lab for lab in labels if lab in kernel], [lab for lab in labels if lab in depth],
            [lab for lab in labels if lab not in kernel and lab not in depth]]
