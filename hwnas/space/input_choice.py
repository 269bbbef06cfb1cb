"""``InputChoice``: choose ``n_chosen`` of ``n_candidates`` inputs (NNI's InputChoice, ENAS's skip connections).

It is a :class:`~hwnas.space.modules.LayerChoice` whose candidates are tiny selector modules, so tracing,
profiling, export, subnet counting and every mixed-op mode work on it unchanged. A sample's value is the
chosen input's index (``n_chosen=1``) or the chosen indices joined by ``"+"`` (``"0+2"``, in increasing
order); architecture files may also give a list of indices or a multi-hot list (see
:mod:`hwnas.search.oneshot_arch`).

Example:
    >>> import torch
    >>> from hwnas.space.input_choice import InputChoice
    >>> ic = InputChoice(3, 2, label="skip")
    >>> ic.choice.values
    ('0+1', '0+2', '1+2')
    >>> a, b, c = torch.ones(1), 2 * torch.ones(1), 4 * torch.ones(1)
    >>> ic([a, b, c]).item()                 # before any sample: the last combination, summed
    6.0
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
from torch import nn

from hwnas.space.choice import ChoiceError
from hwnas.space.modules import LayerChoice

__all__ = ["InputChoice", "combination_key", "REDUCTIONS"]

REDUCTIONS = ("sum", "mean", "concat")


def combination_key(indices: Any) -> str:
    """The value that stands for a set of chosen input indices (``[2, 0]`` -> ``"0+2"``)."""
    return "+".join(str(int(i)) for i in sorted(indices))


class _Pick(nn.Module):
    """Take the inputs at ``indices`` from a list of tensors and reduce them."""

    def __init__(self, indices: tuple[int, ...], reduction: str):
        super().__init__()
        self.indices, self.reduction = indices, reduction

    def forward(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        if len(self.indices) == 1:
            return inputs[self.indices[0]]
        chosen = [inputs[i] for i in self.indices]
        if self.reduction == "concat":
            return torch.cat(chosen, 1)
        out = chosen[0]
        for t in chosen[1:]:
            out = out + t
        return out / len(chosen) if self.reduction == "mean" else out


class InputChoice(LayerChoice):
    """Choose ``n_chosen`` of ``n_candidates`` inputs (given as one list) and reduce them.

    Args:
        n_candidates: how many inputs the layer receives.
        n_chosen: how many it keeps (1 <= n_chosen <= n_candidates).
        label: the decision's name.
        reduction: ``"sum"``, ``"mean"`` or ``"concat"`` (along channels) of the chosen inputs.
    """

    def __init__(self, n_candidates: int, n_chosen: int = 1, label: str = "", reduction: str = "sum"):
        if not isinstance(n_candidates, int) or n_candidates < 1:
            raise ChoiceError(f"InputChoice {label!r}: n_candidates must be an int >= 1, got {n_candidates!r}.")
        if not isinstance(n_chosen, int) or not 1 <= n_chosen <= n_candidates:
            raise ChoiceError(f"InputChoice {label!r}: n_chosen must be an int in [1, n_candidates={n_candidates}], "
                              f"got {n_chosen!r}.")
        if reduction not in REDUCTIONS:
            raise ChoiceError(f"InputChoice {label!r}: reduction must be one of {REDUCTIONS}, got {reduction!r}.")
        combos = list(itertools.combinations(range(n_candidates), n_chosen))
        if n_chosen == 1:
            cands: Any = [_Pick(c, reduction) for c in combos]
        else:
            cands = {combination_key(c): _Pick(c, reduction) for c in combos}
        super().__init__(cands, label=label)
        self.n_candidates, self.n_chosen, self.reduction = n_candidates, n_chosen, reduction

    def chosen(self, value: Any) -> tuple[int, ...]:
        """The input indices a value of this choice keeps."""
        return self.candidates[self.index(value)].indices

    def forward(self, inputs: list[torch.Tensor]) -> Any:
        if not isinstance(inputs, (list, tuple)) or len(inputs) != self.n_candidates:
            got = len(inputs) if isinstance(inputs, (list, tuple)) else type(inputs).__name__
            raise ChoiceError(f"InputChoice {self.label!r} takes one list of {self.n_candidates} tensors, got {got}.")
        return super().forward(list(inputs))
