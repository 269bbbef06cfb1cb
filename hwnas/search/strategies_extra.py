"""More multi-trial strategies: non-aging evolution and a REINFORCE policy over the whole space.

- :class:`Evolution`: ModularNAS's ``EvolutionOptim`` (and the classic steady-state GA): like
  :class:`~hwnas.search.RegularizedEvolution`, but when the population is full the *worst* member dies, not
  the oldest.
- :class:`PolicyBasedRL`: NNI's ``PolicyBasedRL`` in spirit: an LSTM controller (the ENAS controller,
  :class:`~hwnas.search.oneshot_controller.LSTMController`) proposes samples; every ``batch_size`` scores it
  takes a REINFORCE step with a moving-average baseline (Zoph & Le 2017).

Both draw only from the generator they are bound to and learn only from what they are told, so a search
with them replays from its checkpoint exactly, and they compose with :class:`~hwnas.search.Chain` filters and
constraints (a filter's ``metric_for_invalid`` reaches them as a score).

Example:
    >>> import torch, hwnas
    >>> from hwnas.search import PolicyBasedRL
    >>> space = hwnas.spaces.create("digits")
    >>> result = hwnas.search(space, torch.zeros(1, 1, 8, 8), {"flops": "50%"}, lambda s: s["s2.width"],
    ...                       strategy=PolicyBasedRL(batch_size=4), max_trials=12, seed=0, progress=False)
    >>> len(result.history)
    12
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from hwnas.search.oneshot_controller import LSTMController
from hwnas.search.strategies import RegularizedEvolution, Strategy

__all__ = ["Evolution", "PolicyBasedRL"]


class Evolution(RegularizedEvolution):
    """Non-aging evolution: tournament selection and mutation as :class:`RegularizedEvolution`, worst dies.

    Args: as :class:`~hwnas.search.RegularizedEvolution`.
    """

    def tell(self, sample: dict[str, Any], score: float) -> None:
        self.pending_ = max(0, self.pending_ - 1)
        self.population_.append((sample, -math.inf if math.isnan(score) else float(score)))
        while len(self.population_) > self.population_size:
            worst = min(range(len(self.population_)), key=lambda i: (self.population_[i][1], -i))
            del self.population_[worst]

    def __repr__(self) -> str:
        return (f"Evolution(population_size={self.population_size}, sample_size={self.sample_size}, "
                f"mutation_prob={self.mutation_prob})")


class PolicyBasedRL(Strategy):
    """An LSTM policy over the space's labels trained by REINFORCE on the told scores.

    Args:
        batch_size: scores per policy update.
        lr: Adam learning rate.
        hidden_size: the controller's width.
        baseline_decay: decay of the moving-average baseline.
        entropy_weight: entropy bonus.
        normalize: divide rewards by the running standard deviation of the scores (scores of any scale).
    """

    def __init__(self, batch_size: int = 8, lr: float = 0.01, hidden_size: int = 32, baseline_decay: float = 0.9,
                 entropy_weight: float = 1e-3, normalize: bool = True):
        self.batch_size, self.lr, self.hidden_size = batch_size, lr, hidden_size
        self.baseline_decay, self.entropy_weight, self.normalize = baseline_decay, entropy_weight, normalize

    def _start(self) -> None:
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"PolicyBasedRL: batch_size must be an int >= 1, got {self.batch_size!r}.")
        gen = torch.Generator().manual_seed(int(self.rng_.integers(2**31)))
        self.controller_ = LSTMController([int(n) for n in self.sizes_], self.hidden_size, gen)
        self.optimizer_ = torch.optim.Adam(self.controller_.parameters(), lr=self.lr)
        self.batch_: list[tuple[list[int], float]] = []
        self.baseline_: float | None = None
        self.scores_: list[float] = []
        self.updates_ = 0

    def propose(self) -> dict[str, Any]:
        self._check_bound()
        with torch.no_grad():
            idx, _, _ = self.controller_.sample(self.rng_)
        return {lab: self.choices_[lab][i] for lab, i in zip(self.labels_, idx)}

    def tell(self, sample: dict[str, Any], score: float) -> None:
        if math.isnan(score):
            return
        idx = [self.choices_[lab].index(sample[lab]) for lab in self.labels_]
        self.batch_.append((idx, float(score)))
        self.scores_.append(float(score))
        if len(self.batch_) >= self.batch_size:
            self._update()

    def _update(self) -> None:
        rewards = np.array([r for _, r in self.batch_])
        scale = float(np.std(self.scores_)) if self.normalize and len(self.scores_) > 1 else 1.0
        scale = scale if scale > 0 else 1.0
        mean = float(rewards.mean())
        b = mean if self.baseline_ is None else self.baseline_
        loss = torch.zeros(())
        for idx, r in self.batch_:
            logp, ent = self.controller_.log_prob(idx)
            loss = loss - (r - b) / scale * logp - self.entropy_weight * ent
        self.optimizer_.zero_grad(set_to_none=True)
        (loss / len(self.batch_)).backward()
        self.optimizer_.step()
        d = self.baseline_decay
        self.baseline_ = mean if self.baseline_ is None else d * self.baseline_ + (1 - d) * mean
        self.batch_ = []
        self.updates_ += 1

    def __repr__(self) -> str:
        return f"PolicyBasedRL(batch_size={self.batch_size}, lr={self.lr})"
