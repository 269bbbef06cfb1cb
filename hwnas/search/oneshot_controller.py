"""The LSTM controller of ENAS (Pham et al. 2018) and of the REINFORCE policy strategy over a whole space.

It picks one label after another: at each step an LSTM cell reads the embedding of the previous choice, and a
linear head per label gives that label's logits. Sampling draws from a seeded ``numpy.random.Generator``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

__all__ = ["LSTMController"]


class LSTMController(nn.Module):
    """An autoregressive policy over labels with ``sizes[k]`` values each.

    Args:
        sizes: the number of values of each label, in sampling order.
        hidden_size: the LSTM's width.
        generator: a ``torch.Generator`` for the initial weights (uniform in [-0.1, 0.1], as ENAS).
        tanh_constant: logits are ``c * tanh(logits / c)`` (ENAS uses 1.5 after a temperature of 5; this keeps
            the policy from collapsing too early).
    """

    def __init__(self, sizes: list[int], hidden_size: int = 32, generator: torch.Generator | None = None,
                 tanh_constant: float = 2.5):
        super().__init__()
        if not sizes or any(n < 1 for n in sizes):
            raise ValueError(f"LSTMController: sizes must be a non-empty list of ints >= 1, got {sizes!r}.")
        self.sizes, self.hidden_size, self.tanh_constant = list(sizes), hidden_size, tanh_constant
        self.start = nn.Parameter(torch.zeros(1, hidden_size))
        self.cell = nn.LSTMCell(hidden_size, hidden_size)
        self.embeds = nn.ModuleList(nn.Embedding(n, hidden_size) for n in sizes)
        self.heads = nn.ModuleList(nn.Linear(hidden_size, n) for n in sizes)
        with torch.no_grad():
            for p in self.parameters():
                p.uniform_(-0.1, 0.1, generator=generator)

    def _run(self, choose) -> tuple[list[int], torch.Tensor, torch.Tensor]:
        h = torch.zeros(1, self.hidden_size)
        c = torch.zeros(1, self.hidden_size)
        inp = self.start
        idx: list[int] = []
        logp = torch.zeros(())
        ent = torch.zeros(())
        for k, n in enumerate(self.sizes):
            h, c = self.cell(inp, (h, c))
            logits = self.heads[k](h)[0]
            logits = self.tanh_constant * torch.tanh(logits / self.tanh_constant)
            lp = torch.log_softmax(logits, 0)
            i = choose(lp, n, k)
            idx.append(i)
            logp = logp + lp[i]
            ent = ent - (lp.exp() * lp).sum()
            inp = self.embeds[k](torch.tensor([i]))
        return idx, logp, ent

    def sample(self, rng: np.random.Generator) -> tuple[list[int], torch.Tensor, torch.Tensor]:
        """A sample's value indices, its log-probability and the entropy of its steps (both differentiable)."""
        def choose(lp: torch.Tensor, n: int, k: int) -> int:
            p = lp.detach().double().exp().numpy()
            return int(rng.choice(n, p=p / p.sum()))
        return self._run(choose)

    def greedy(self) -> list[int]:
        """The arg-max value at every step."""
        with torch.no_grad():
            return self._run(lambda lp, n, k: int(torch.argmax(lp)))[0]

    def log_prob(self, idx: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """The log-probability of the value indices ``idx`` and the entropy along them (differentiable)."""
        if len(idx) != len(self.sizes):
            raise ValueError(f"LSTMController.log_prob: got {len(idx)} indices for {len(self.sizes)} labels.")
        _, logp, ent = self._run(lambda lp, n, k: int(idx[k]))
        return logp, ent
