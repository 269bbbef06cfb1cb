r"""The mixed-op modes: how architecture logits become a :class:`~hwnas.space.mixed.MixedState`.

Every label :math:`\ell` has logits :math:`\alpha_\ell` and probabilities :math:`p_\ell = \mathrm{softmax}(\alpha_\ell)`.

- ``index``: one value per label (a sample); weights are constants: the space computes that subnet.
- ``weighted_sum`` (DARTS, Liu et al. 2019): every value active, weights :math:`p_\ell`.
- ``gumbel`` (GDAS, Dong & Yang 2019; FBNet, Wu et al. 2019): weights
  :math:`\mathrm{softmax}((\alpha_\ell + g)/\tau)` with Gumbel noise :math:`g`; ``hard=True`` keeps only the
  arg-max value active with the straight-through one-hot weight (one path, gradients to every logit),
  ``hard=False`` keeps all values active (FBNet's soft sample). With ``hard=True, full=True`` every value stays
  active with its straight-through weight (0 in value for the unpicked ones): the output is still the picked
  path's, but the gradient reaches each logit through each value's output (the straight-through gradient of
  the whole relaxation, not only of the picked path's scale, which a following batch norm cancels). Unpicked
  candidates and deeper depths then run forward only, in the backward pass (see
  :meth:`~hwnas.space.mixed.MixedState.layer_choice`). :class:`TemperatureSchedule` anneals :math:`\tau`.
- ``binary_gate`` (ProxylessNAS, Cai et al. 2019, §3.2.1): two values drawn from :math:`p_\ell` (without
  replacement) are active; one of them, drawn from the two-way softmax :math:`q` of their logits, gets gate 1,
  the other 0, and the gate's gradient is routed as :math:`\partial L/\partial\alpha_i = \sum_j
  \partial L/\partial g_j\, q_j(\delta_{ij} - q_i)` (the paper's estimator, via :math:`g = \mathrm{onehot} + q -
  \mathrm{sg}(q)`). ``binary_gate_uniform`` draws the two values uniformly instead of from :math:`p_\ell`
  (ModularNAS's BinGateUniform), which keeps exploring values whose probability has collapsed.

Labels with a single value are always constants.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from hwnas.space.mixed import MixedState

__all__ = ["MODES", "TemperatureSchedule", "mixed_state", "gumbel_noise", "picked"]

MODES = ("index", "weighted_sum", "gumbel", "binary_gate", "binary_gate_uniform")


class TemperatureSchedule:
    r"""An exponentially annealed Gumbel-softmax temperature :math:`\tau_t = \max(\tau_{min}, \tau_0 \cdot d^t)`.

    Args:
        initial: :math:`\tau_0` (GDAS uses 10, FBNet 5).
        final: :math:`\tau_{min}` reached at the end of training (GDAS: 0.1); the decay per epoch is chosen so
            that ``epochs`` epochs end at it.
        epochs: the number of epochs the schedule spans.
    """

    def __init__(self, initial: float = 5.0, final: float = 0.5, epochs: int = 10):
        if not (initial > 0 and final > 0 and final <= initial):
            raise ValueError(f"TemperatureSchedule: need initial >= final > 0, got initial={initial!r}, "
                             f"final={final!r}.")
        if not isinstance(epochs, int) or epochs < 1:
            raise ValueError(f"TemperatureSchedule: epochs must be an int >= 1, got {epochs!r}.")
        self.initial, self.final, self.epochs = float(initial), float(final), epochs

    @classmethod
    def of(cls, temperature: TemperatureSchedule | float | None, epochs: int, initial: float = 5.0,
           final: float = 0.5) -> TemperatureSchedule:
        """A schedule from what a strategy was given: a schedule as it is, a number as a constant, ``None`` as
        ``initial`` annealed to ``final`` over ``epochs``."""
        if isinstance(temperature, cls):
            return temperature
        if temperature is None:
            return cls(initial, final, max(1, int(epochs)))
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
            raise TypeError(f"temperature must be a TemperatureSchedule, a number or None, got "
                            f"{type(temperature).__name__}.")
        return cls(float(temperature), float(temperature), 1)

    def __call__(self, epoch: float) -> float:
        """The temperature at ``epoch`` (0-based; fractional epochs interpolate)."""
        if self.epochs == 1:
            return self.final if epoch >= 1 else self.initial
        frac = min(1.0, max(0.0, epoch / (self.epochs - 1)))
        return self.initial * math.exp(frac * math.log(self.final / self.initial))

    def __repr__(self) -> str:
        return f"TemperatureSchedule(initial={self.initial}, final={self.final}, epochs={self.epochs})"


def gumbel_noise(n: int, rng: np.random.Generator) -> torch.Tensor:
    """``n`` standard Gumbel draws from ``rng`` (float32)."""
    u = rng.random(n).clip(1e-12, 1 - 1e-12)
    return torch.as_tensor(-np.log(-np.log(u)), dtype=torch.float32)


def picked(state: MixedState) -> dict[str, Any]:
    """The sample a hard state computes: each label's value of largest weight (its only active one, or the
    straight-through one-hot's 1)."""
    out = {}
    for lab, idx in state.active.items():
        w = state.weights.get(lab)
        i = idx[0] if len(idx) == 1 or w is None else max(idx, key=lambda j: float(w[j].detach()))
        out[lab] = state.choices[lab][i]
    return out


def _draw(p: np.ndarray, k: int, rng: np.random.Generator) -> list[int]:
    return [int(i) for i in rng.choice(len(p), size=k, replace=False, p=p / p.sum())]


def mixed_state(mode: str, choices: dict[str, tuple], alpha: dict[str, torch.Tensor], rng: np.random.Generator,
                temperature: float = 1.0, hard: bool = True, sample: dict[str, Any] | None = None,
                full: bool = False) -> MixedState:
    """The :class:`MixedState` of ``mode`` for the logits ``alpha`` (see the module docs).

    Args:
        mode: one of :data:`MODES`.
        choices: label -> values.
        alpha: label -> logits (1-D tensors; labels missing here are taken uniformly in ``index`` mode).
        rng: the generator for every random draw.
        temperature: the Gumbel-softmax temperature (``gumbel``).
        hard: hard (one path, straight-through) or soft Gumbel-softmax.
        sample: for ``index``: the sample to compute (default: drawn from ``softmax(alpha)``).
        full: hard ``gumbel`` only: keep every value active (zero-weighted but for the picked one).
    """
    if mode not in MODES:
        raise ValueError(f"mixed_state: mode must be one of {MODES}, got {mode!r}.")
    weights: dict[str, torch.Tensor | None] = {}
    active: dict[str, list[int]] = {}
    for lab, values in choices.items():
        n = len(values)
        a = alpha.get(lab)
        if n == 1:
            weights[lab], active[lab] = None, [0]
            continue
        if mode == "index":
            if sample is not None:
                i = values.index(sample[lab])
            elif a is None:
                i = int(rng.integers(n))
            else:
                i = _draw(torch.softmax(a.detach(), 0).double().numpy(), 1, rng)[0]
            weights[lab], active[lab] = None, [i]
        elif mode == "weighted_sum":
            weights[lab], active[lab] = torch.softmax(a, 0), list(range(n))
        elif mode == "gumbel":
            soft = torch.softmax((a + gumbel_noise(n, rng)) / temperature, 0)
            if hard:
                i = int(torch.argmax(soft.detach()))
                one = torch.zeros(n)
                one[i] = 1.0
                weights[lab], active[lab] = one - soft.detach() + soft, (list(range(n)) if full else [i])
            else:
                weights[lab], active[lab] = soft, list(range(n))
        else:
            if mode == "binary_gate":
                pair = _draw(torch.softmax(a.detach(), 0).double().numpy(), 2, rng)
            else:
                pair = _draw(np.ones(n), 2, rng)
            q = torch.softmax(a[pair], 0)
            on = int(rng.random() >= float(q[0].detach()))
            gate = torch.zeros(2)
            gate[on] = 1.0
            g = gate + q - q.detach()
            w = torch.zeros(n).index_put((torch.tensor(pair),), g)
            weights[lab], active[lab] = w, sorted(pair)
    return MixedState(choices, weights, active)
