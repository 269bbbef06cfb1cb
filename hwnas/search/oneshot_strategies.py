r"""One-shot strategies: DARTS, GumbelDARTS (GDAS/FBNet), ProxylessNAS, ENAS and RandomOneShot (SPOS).

They share the mixed operations of :mod:`hwnas.space.mixed` and differ in how they set the mode and update
the architecture. Each takes ``penalty=`` and ``filter=``; :func:`hwnas.search.train_oneshot` trains them.

======================  ==========================  ==========================  ==============================
strategy                weight step                 architecture step           ``penalty=``
======================  ==========================  ==========================  ==============================
``DARTS``               ``weighted_sum``            ``weighted_sum``, 1st or    Expectation (a sample has no
                                                    2nd order (unrolled)        gradient to the logits)
``GumbelDARTS``         ``gumbel`` (hard: GDAS,     ``gumbel``                  Expectation
                        soft: FBNet), annealed
``ProxylessNAS``        one path from p (uniform:   ``binary_gate`` (two paths) Expectation (E[latency], §3.3)
                        uniformly)
``ENAS``                one path from the LSTM      REINFORCE with a moving     Sample (the controller's labels
                        controller                  baseline, reward -loss      are not independent)
``RandomOneShot``       one uniform path            none; evolution on the      Sample (no distribution to
                                                    trained supernet at export  take an expectation under)
======================  ==========================  ==========================  ==============================

A ``filter`` (any :class:`~hwnas.search.Filter`, e.g. ``RangeProfilerFilter(latency, max="60%")``) rejects
sampled paths during training (they are redrawn; with ``Filter(metric_for_invalid=...)`` ENAS is rewarded that
metric for them, as NNI does) and constrains the exported sample: the most probable sample that passes.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from hwnas.search.errors import RejectionError
from hwnas.search.oneshot_modes import TemperatureSchedule, mixed_state, picked
from hwnas.search.penalty import ExpectationProfilerPenalty, SampleProfilerPenalty
from hwnas.search.strategies import Filter
from hwnas.space.mixed import set_mixed

__all__ = ["OneShotStrategy", "DARTS", "GumbelDARTS", "ProxylessNAS", "ENAS", "RandomOneShot"]

MAX_REDRAWS = 1000


class OneShotStrategy:
    """Base: holds the penalty and filter; :meth:`setup` binds it to a space (called by ``train_oneshot``)."""

    penalty_kind: type = ExpectationProfilerPenalty
    why_not_other = ""

    def __init__(self, penalty: Any = None, filter: Filter | None = None, derive_samples: int = 0):  # noqa: A002
        name = type(self).__name__
        if isinstance(derive_samples, bool) or not isinstance(derive_samples, int) or derive_samples < 0:
            raise ValueError(f"{name}: derive_samples must be an int >= 0, got {derive_samples!r}.")
        self.derive_samples = derive_samples
        if penalty is not None and not isinstance(penalty, self.penalty_kind):
            kind = self.penalty_kind.__name__
            raise TypeError(f"{name}: penalty must be {'an' if kind[0] in 'AEIOU' else 'a'} {kind}, got "
                            f"{type(penalty).__name__}. "
                            f"{self.why_not_other}")
        if filter is not None and not callable(filter):
            raise TypeError(f"{name}: filter must be a hwnas.search.Filter (or sample -> bool), got "
                            f"{type(filter).__name__}.")
        self.penalty = penalty
        self.filter = filter if filter is None or isinstance(filter, Filter) else Filter(filter)

    # -------------------------------------------------------------- binding
    def setup(self, space: nn.Module, optimizer: torch.optim.Optimizer, rng: np.random.Generator,
              epochs: int, loss_fn: Any) -> None:
        self.space, self.optimizer, self.rng, self.epochs, self.loss_fn = space, optimizer, rng, epochs, loss_fn
        self.choices = {lab: tuple(v) for lab, v in space.choices().items()}
        if self.filter is not None:
            self.filter.bind(self.choices)
        self.epoch = 0
        self.chosen_: dict[str, Any] | None = None
        self._setup()

    def _setup(self) -> None:
        """Create the architecture parameters or controller."""

    def start_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    # -------------------------------------------------------------- helpers
    def passes(self, sample: dict[str, Any]) -> bool:
        return self.filter is None or bool(self.filter(sample))

    def _train_on(self, x: torch.Tensor, y: torch.Tensor) -> float:
        self.space.train()
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss_fn(self.space(x), y)
        loss.backward()
        nn.utils.clip_grad_norm_(self.space.parameters(), 5.0)
        self.optimizer.step()
        return float(loss.detach())

    def _redraw(self, draw: Any, what: str) -> Any:
        """``draw()`` until its sample passes the filter (bounded); ``draw`` returns ``(sample, extra)``."""
        for _ in range(MAX_REDRAWS):
            sample, extra = draw()
            if self.passes(sample):
                return sample, extra
        raise RejectionError(f"{type(self).__name__}: {MAX_REDRAWS} {what} in a row were rejected by "
                             f"{self.filter.describe()}. Loosen the filter or lower the penalty's baseline.")

    # -------------------------------------------------------------- interface
    def weight_step(self, x: torch.Tensor, y: torch.Tensor) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def arch_step(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        """Update the architecture on a validation batch; returns what to record (empty: nothing learned)."""
        return {}

    def probs(self) -> dict[str, torch.Tensor] | None:
        """label -> probability vector of the (independent) architecture distribution, or ``None``."""
        return None

    def expected_cost(self) -> float:
        """The penalty's cost under the current distribution (NaN without a penalty)."""
        probs = self.probs()
        if self.penalty is None or probs is None:
            return float("nan")
        with torch.no_grad():
            return float(self.penalty.cost({k: v.detach() for k, v in probs.items()}))

    def candidates(self, n: int, rng: np.random.Generator) -> list[dict[str, Any]]:
        """The arg-max sample and up to ``n`` more distinct samples drawn from the learned distribution, all
        passing the filter (at most ``20 n`` draws): what ``derive_samples`` chooses from."""
        out = {}
        try:
            first = self._most_probable()
            out[tuple(first.values())] = first
        except RejectionError:
            pass
        probs = {k: v.detach().double().numpy() for k, v in self.probs().items()}
        for _ in range(20 * n):
            if len(out) > n:
                break
            sample = {lab: self.choices[lab][int(rng.choice(len(p), p=p / p.sum()))] for lab, p in probs.items()}
            if tuple(sample.values()) not in out and self.passes(sample):
                out[tuple(sample.values())] = sample
        return list(out.values())

    def export(self) -> dict[str, Any]:
        """The derived sample (``derive_samples`` > 0, after ``train_oneshot``), else the most probable sample
        that passes the filter."""
        if self.chosen_ is not None:
            return self.chosen_
        return self._most_probable()

    def _most_probable(self) -> dict[str, Any]:
        probs = {k: v.detach().double().numpy() for k, v in self.probs().items()}
        best = {lab: self.choices[lab][int(np.argmax(p))] for lab, p in probs.items()}
        if self.passes(best):
            return best
        # draws from the distribution, then from flattened ones (p^1/2, p^1/4) to reach rarer samples; keep the
        # likeliest that passes
        rng = np.random.default_rng(0)
        found, found_logp = None, -math.inf
        for t in (1.0, 2.0, 4.0):
            for _ in range(2000):
                idx = {lab: int(rng.choice(len(p), p=(p ** (1 / t)) / (p ** (1 / t)).sum())) for lab, p in probs.items()}
                logp = sum(math.log(max(probs[lab][i], 1e-300)) for lab, i in idx.items())
                if logp > found_logp:
                    sample = {lab: self.choices[lab][i] for lab, i in idx.items()}
                    if self.passes(sample):
                        found, found_logp = sample, logp
            if found is not None:
                return found
        raise RejectionError(f"{type(self).__name__}.export: no sample drawn from the learned distribution passed "
                             f"{self.filter.describe()}. Raise the penalty's scale or loosen the filter.")

    def state(self) -> dict[str, Any]:
        """The architecture logits (label -> list) or controller state."""
        return {}


class _Logits(OneShotStrategy):
    """A strategy with independent per-label logits and an Adam optimizer on them."""

    why_not_other = ("A SampleProfilerPenalty gives the cost of one sample, a constant for the architecture logits: "
                     "no gradient reaches them. Use ExpectationProfilerPenalty(profiler, baseline), whose exact "
                     "expected cost under softmax(logits) is differentiable.")

    def __init__(self, penalty: ExpectationProfilerPenalty | None = None, filter: Filter | None = None,  # noqa: A002
                 arch_lr: float = 0.01, arch_weight_decay: float = 1e-3, derive_samples: int = 0):
        super().__init__(penalty, filter, derive_samples)
        self.arch_lr, self.arch_weight_decay = arch_lr, arch_weight_decay

    def _setup(self) -> None:
        self.alpha = {lab: torch.zeros(len(v), requires_grad=True) for lab, v in self.choices.items()}
        self.arch_optimizer = torch.optim.Adam(list(self.alpha.values()), lr=self.arch_lr, betas=(0.5, 0.999),
                                               weight_decay=self.arch_weight_decay)

    def probs(self) -> dict[str, torch.Tensor]:
        return {lab: torch.softmax(a, 0) for lab, a in self.alpha.items()}

    def state(self) -> dict[str, Any]:
        return {lab: [float(v) for v in a.detach()] for lab, a in self.alpha.items()}

    def _arch_update(self, loss: torch.Tensor) -> dict[str, float]:
        record = {"val_loss": float(loss.detach())}
        if self.penalty is not None:
            loss = self.penalty(loss, self.probs())
            record["expected_cost"] = float(self.penalty.last_cost_)
        # only the logits' gradient: the weights' gradients would be computed and thrown away
        alphas = list(self.alpha.values())
        for a, g in zip(alphas, torch.autograd.grad(loss, alphas, allow_unused=True)):
            a.grad = g
        self.arch_optimizer.step()
        return record

    def _detached(self) -> dict[str, torch.Tensor]:
        return {lab: a.detach() for lab, a in self.alpha.items()}


class DARTS(_Logits):
    """DARTS (Liu et al. 2019): the continuous relaxation, weights on training data, logits on validation data.

    Args:
        penalty: an :class:`ExpectationProfilerPenalty` (or ``None``).
        filter: constrains the exported sample.
        order: 1 (first-order approximation) or 2 (the unrolled second-order gradient, with the paper's
            finite-difference Hessian-vector product; ``xi`` is the virtual step, default the weights' lr).
        arch_lr, arch_weight_decay: Adam on the logits (the paper: 3e-4 and 1e-3 on CIFAR-10).
    """

    mode = "weighted_sum"

    def __init__(self, penalty: ExpectationProfilerPenalty | None = None, filter: Filter | None = None,  # noqa: A002
                 order: int = 1, arch_lr: float = 0.01, arch_weight_decay: float = 1e-3, xi: float | None = None,
                 derive_samples: int = 0):
        super().__init__(penalty, filter, arch_lr, arch_weight_decay, derive_samples)
        if order not in (1, 2):
            raise ValueError(f"DARTS: order must be 1 or 2, got {order!r}.")
        self.order, self.xi = order, xi
        self._last_train: tuple | None = None

    def _state(self, alpha: dict[str, torch.Tensor]):
        return mixed_state("weighted_sum", self.choices, alpha, self.rng)

    def weight_step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        set_mixed(self.space, self._state(self._detached()))
        self._last_train = (x, y)
        return self._train_on(x, y)

    def _loss(self, x, y, alpha) -> torch.Tensor:
        set_mixed(self.space, self._state(alpha))
        return self.loss_fn(self.space(x), y)

    def arch_step(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        self.space.train()
        if self.order == 1 or self._last_train is None:
            return self._arch_update(self._loss(x, y, self.alpha))
        return self._second_order(x, y)

    def _second_order(self, x, y) -> dict[str, float]:
        xt, yt = self._last_train
        params = [p for p in self.space.parameters() if p.requires_grad]
        xi = self.xi if self.xi is not None else self.optimizer.param_groups[0]["lr"]
        backup = [p.detach().clone() for p in params]
        alphas = list(self.alpha.values())
        # virtual step w' = w - xi * dL_train/dw
        g_train = torch.autograd.grad(self._loss(xt, yt, self._detached()), params, allow_unused=True)
        with torch.no_grad():
            for p, g in zip(params, g_train):
                if g is not None:
                    p.sub_(xi * g)
        val = self._loss(x, y, self.alpha)
        grads = torch.autograd.grad(val, alphas + params, allow_unused=True)
        g_alpha, g_w = grads[: len(alphas)], grads[len(alphas):]
        norm = torch.sqrt(sum((g * g).sum() for g in g_w if g is not None))
        eps = 0.01 / float(norm.clamp(min=1e-12))
        hessian = []
        for sign in (1.0, -2.0):  # w + eps*g, then w - eps*g
            with torch.no_grad():
                for p, b, g in zip(params, backup, g_w):
                    p.copy_(b if g is None else b + (eps if sign > 0 else -eps) * g)
            hessian.append(torch.autograd.grad(self._loss(xt, yt, self.alpha), alphas, allow_unused=True))
        with torch.no_grad():
            for p, b in zip(params, backup):
                p.copy_(b)
        self.arch_optimizer.zero_grad(set_to_none=True)
        record = {"val_loss": float(val.detach())}
        pen = None
        if self.penalty is not None:
            pen = self.penalty(torch.zeros(()), self.probs())
            record["expected_cost"] = float(self.penalty.last_cost_)
            pen.backward()
        for a, ga, hp, hm in zip(alphas, g_alpha, *hessian):
            d = torch.zeros_like(a) if ga is None else ga.clone()
            if hp is not None and hm is not None:
                d -= xi * (hp - hm) / (2 * eps)
            a.grad = d if a.grad is None else a.grad + d
        self.arch_optimizer.step()
        return record


class GumbelDARTS(DARTS):
    """GDAS (Dong & Yang 2019, ``hard=True``) and FBNet (Wu et al. 2019, ``hard=False``): Gumbel-softmax samples.

    With ``hard=True`` (GDAS) every step draws one path by the Gumbel-max trick: the weight step trains that
    subnet alone, and the architecture step computes it with straight-through one-hot weights. The
    architecture step's gradient is the straight-through gradient over *every* value (mode ``gumbel`` with
    ``full=True``): an unpicked candidate is run forward only, in the backward pass, for
    :math:`\\langle\\partial L/\\partial y, o_k\\rangle`. GDAS's original estimator keeps only the picked path's
    term; in a network where a batch norm follows every choice, that term is the derivative of the loss with
    respect to the scale of a batch-normalised output, 0 up to the batch norm's epsilon, so no label but those
    next to the classifier would learn.

    Args:
        penalty: an :class:`ExpectationProfilerPenalty` (or ``None``).
        filter: paths that fail it are redrawn; constrains the exported sample.
        temperature: a :class:`TemperatureSchedule`, a number (fixed), or ``None``: 5 annealed to 0.5 over the
            training's epochs.
        hard: one path per step with straight-through weights (GDAS) or the soft mixture (FBNet).
        arch_lr, arch_weight_decay: Adam on the logits.
    """

    def __init__(self, penalty: ExpectationProfilerPenalty | None = None, filter: Filter | None = None,  # noqa: A002
                 temperature: TemperatureSchedule | float | None = None, hard: bool = True,
                 arch_lr: float = 0.01, arch_weight_decay: float = 1e-3, derive_samples: int = 0):
        super().__init__(penalty, filter, 1, arch_lr, arch_weight_decay, derive_samples=derive_samples)
        self.temperature, self.hard = temperature, hard

    def _setup(self) -> None:
        super()._setup()
        self.schedule_ = TemperatureSchedule.of(self.temperature, self.epochs)

    def tau(self) -> float:
        return self.schedule_(self.epoch)

    def _state(self, alpha):
        if not self.hard:
            return mixed_state("gumbel", self.choices, alpha, self.rng, self.tau(), hard=False)
        return self._hard(alpha)[1]

    def _hard(self, alpha, full: bool = False):
        """A hard Gumbel sample that passes the filter: ``(sample, state)``."""
        def draw():
            st = mixed_state("gumbel", self.choices, alpha, self.rng, self.tau(), hard=True, full=full)
            return picked(st), st
        return self._redraw(draw, "Gumbel samples")

    def weight_step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        if not self.hard:
            return super().weight_step(x, y)
        sample, _ = self._hard(self._detached())
        self.space.apply_arch(sample)  # the drawn path alone, as the exported subnet computes it
        return self._train_on(x, y)

    def arch_step(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        self.space.train()
        state = self._hard(self.alpha, full=True)[1] if self.hard else self._state(self.alpha)
        set_mixed(self.space, state)
        return self._arch_update(self.loss_fn(self.space(x), y))


class ProxylessNAS(_Logits):
    """ProxylessNAS (Cai et al. 2019): one sampled path trains the weights, binary gates train the logits.

    The latency loss is the expected latency under ``softmax(logits)`` from a LUT or predictor
    (``ExpectationProfilerPenalty(LatencyProfiler(...), baseline)``), as the paper's §3.3.

    Args:
        uniform: draw the weight step's path and the gates' two paths uniformly (ModularNAS's BinGateUniform)
            instead of from the distribution.
        (others as :class:`DARTS`.)
    """

    def __init__(self, penalty: ExpectationProfilerPenalty | None = None, filter: Filter | None = None,  # noqa: A002
                 uniform: bool = False, arch_lr: float = 0.01, arch_weight_decay: float = 0.0,
                 derive_samples: int = 0):
        super().__init__(penalty, filter, arch_lr, arch_weight_decay, derive_samples)
        self.uniform = uniform

    def _path(self) -> tuple[dict[str, Any], Any]:
        alpha = {} if self.uniform else self._detached()
        st = mixed_state("index", self.choices, alpha, self.rng)
        return {lab: self.choices[lab][i[0]] for lab, i in st.active.items()}, None

    def weight_step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        sample, _ = self._redraw(self._path, "sampled paths")
        self.space.apply_arch(sample)
        return self._train_on(x, y)

    def arch_step(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        self.space.train()
        mode = "binary_gate_uniform" if self.uniform else "binary_gate"
        set_mixed(self.space, mixed_state(mode, self.choices, self.alpha, self.rng))
        return self._arch_update(self.loss_fn(self.space(x), y))


class RandomOneShot(OneShotStrategy):
    """SPOS (Guo et al. 2020): uniform single-path training, then evolution over the trained supernet.

    Args:
        penalty: a :class:`SampleProfilerPenalty`; the export's evolution scores ``-penalty(val_loss, sample)``.
        filter: paths that fail it are redrawn in training; the evolution only proposes samples that pass.
        search_trials: evolution trials at export (each: BN recalibration and one validation pass).
        population_size, sample_size: of the :class:`~hwnas.search.RegularizedEvolution`.
    """

    penalty_kind = SampleProfilerPenalty
    why_not_other = ("SPOS samples paths uniformly: there is no learned distribution to take an expectation under. "
                     "Use SampleProfilerPenalty(profiler, baseline); it scores each subnet of the export's search.")

    def __init__(self, penalty: SampleProfilerPenalty | None = None, filter: Filter | None = None,  # noqa: A002
                 search_trials: int = 60, population_size: int = 16, sample_size: int = 4):
        super().__init__(penalty, filter)
        self.search_trials, self.population_size, self.sample_size = search_trials, population_size, sample_size

    def _uniform(self):
        return {lab: v[int(self.rng.integers(len(v)))] for lab, v in self.choices.items()}, None

    def weight_step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        sample, _ = self._redraw(self._uniform, "uniform paths")
        self.space.apply_arch(sample)
        return self._train_on(x, y)

    def export(self) -> dict[str, Any]:
        if getattr(self, "chosen_", None) is None:
            raise RuntimeError("RandomOneShot.export: train_oneshot runs the export's evolution (it needs the "
                               "validation data); call it through train_oneshot.")
        return self.chosen_


class ENAS(OneShotStrategy):
    """ENAS (Pham et al. 2018): an LSTM controller picks each label in turn, trained by REINFORCE.

    The reward of a sample is ``-loss`` on a validation batch (``-penalty(loss, sample)`` with a penalty), minus
    a moving-average baseline; the controller's loss adds ``entropy_weight`` times its negative entropy.

    Args:
        penalty: a :class:`SampleProfilerPenalty`.
        filter: rejected samples are redrawn; with ``Filter(metric_for_invalid=m)`` they are also rewarded ``m``.
        hidden_size: the LSTM's size.
        controller_lr: Adam learning rate of the controller.
        samples_per_step: samples whose rewards one controller step averages.
        baseline_decay, entropy_weight: REINFORCE's baseline decay and entropy bonus.
        derive_samples: ENAS's derivation of the final architecture (§2.2): ``train_oneshot`` draws this many
            distinct samples from the trained controller and returns the one with the best validation score
            (``-penalty(val_loss, sample)``, or accuracy without a penalty; batch norm recalibrated per sample,
            on the whole validation data rather than the paper's one batch). 0: the greedy (arg-max) sample.
    """

    penalty_kind = SampleProfilerPenalty
    why_not_other = ("The LSTM controller draws each label conditioned on the previous ones, so its distribution is "
                     "not a product of per-label probabilities and ExpectationProfilerPenalty's exact expectation does "
                     "not apply. Use SampleProfilerPenalty(profiler, baseline): it penalises each sample's reward.")

    def __init__(self, penalty: SampleProfilerPenalty | None = None, filter: Filter | None = None,  # noqa: A002
                 hidden_size: int = 32, controller_lr: float = 5e-3, samples_per_step: int = 2,
                 baseline_decay: float = 0.9, entropy_weight: float = 1e-3, derive_samples: int = 16):
        super().__init__(penalty, filter, derive_samples)
        self.hidden_size, self.controller_lr, self.samples_per_step = hidden_size, controller_lr, samples_per_step
        self.baseline_decay, self.entropy_weight = baseline_decay, entropy_weight

    def _setup(self) -> None:
        from hwnas.search.oneshot_controller import LSTMController
        torch_gen = torch.Generator().manual_seed(int(self.rng.integers(2**31)))
        self.controller = LSTMController([len(v) for v in self.choices.values()], self.hidden_size, torch_gen)
        self.controller_optimizer = torch.optim.Adam(self.controller.parameters(), lr=self.controller_lr)
        self.baseline_: float | None = None

    def candidates(self, n: int, rng: np.random.Generator) -> list[dict[str, Any]]:
        """Up to ``n`` distinct samples that pass the filter, drawn from the controller (at most ``20 n`` draws)."""
        out: dict[tuple, dict[str, Any]] = {}
        greedy = self.controller.greedy()
        if self.passes(sample := {lab: self.choices[lab][i] for lab, i in zip(self.choices, greedy)}):
            out[tuple(greedy)] = sample
        with torch.no_grad():
            for _ in range(20 * n):
                idx = self.controller.sample(rng)[0]
                sample = {lab: self.choices[lab][i] for lab, i in zip(self.choices, idx)}
                if tuple(idx) not in out and self.passes(sample):
                    out[tuple(idx)] = sample
                    if len(out) >= n:
                        break
        return list(out.values())

    def _draw(self):
        with torch.no_grad():
            idx, _, _ = self.controller.sample(self.rng)
        return {lab: self.choices[lab][i] for lab, i in zip(self.choices, idx)}, idx

    def weight_step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        sample, _ = self._redraw(self._draw, "controller samples")
        self.space.apply_arch(sample)
        return self._train_on(x, y)

    def _reward(self, sample: dict[str, Any], x, y) -> tuple[float, float]:
        self.space.apply_arch(sample)
        self.space.train()
        with torch.no_grad():
            loss = float(self.loss_fn(self.space(x), y))
        if self.penalty is None:
            return -loss, loss
        return -float(self.penalty(loss, sample)), loss

    def arch_step(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        terms, rewards, losses, costs = [], [], [], []
        invalid = getattr(self.filter, "metric_for_invalid", None) if self.filter is not None else None
        for _ in range(self.samples_per_step):
            for _ in range(MAX_REDRAWS):
                idx, logp, ent = self.controller.sample(self.rng)
                sample = {lab: self.choices[lab][i] for lab, i in zip(self.choices, idx)}
                if self.passes(sample):
                    reward, loss = self._reward(sample, x, y)
                    losses.append(loss)
                    if self.penalty is not None:
                        costs.append(self.penalty.last_cost_)
                    break
                if invalid is not None:
                    terms.append((float(invalid), logp, ent))
                    rewards.append(float(invalid))
            else:
                raise RejectionError(f"ENAS: {MAX_REDRAWS} controller samples in a row were rejected by "
                                     f"{self.filter.describe()}.")
            terms.append((reward, logp, ent))
            rewards.append(reward)
        mean_r = float(np.mean(rewards))
        b = mean_r if self.baseline_ is None else self.baseline_
        loss = sum(-(r - b) * lp - self.entropy_weight * e for r, lp, e in terms) / len(terms)
        self.controller_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.controller_optimizer.step()
        d = self.baseline_decay
        self.baseline_ = mean_r if self.baseline_ is None else d * self.baseline_ + (1 - d) * mean_r
        record = {"val_loss": float(np.mean(losses)), "reward": mean_r}
        if costs:
            record["sample_cost"] = float(np.mean(costs))
        return record

    def expected_cost(self, n: int = 64) -> float:
        """The mean cost of ``n`` controller samples (a Monte-Carlo estimate; NaN without a penalty)."""
        if self.penalty is None:
            return float("nan")
        rng = np.random.default_rng(12345)
        with torch.no_grad():
            return float(np.mean([self.penalty.cost({lab: self.choices[lab][i] for lab, i in
                                                     zip(self.choices, self.controller.sample(rng)[0])})
                                  for _ in range(n)]))

    def export(self) -> dict[str, Any]:
        """The derived sample (after ``train_oneshot``'s derivation), else the controller's greedy (arg-max at
        every step) sample, or its likeliest sample that passes the filter."""
        if self.chosen_ is not None:
            return self.chosen_
        idx = self.controller.greedy()
        best = {lab: self.choices[lab][i] for lab, i in zip(self.choices, idx)}
        if self.passes(best):
            return best
        rng = np.random.default_rng(0)
        scored = []
        with torch.no_grad():
            for _ in range(2000):
                idx, logp, _ = self.controller.sample(rng)
                sample = {lab: self.choices[lab][i] for lab, i in zip(self.choices, idx)}
                if self.passes(sample):
                    scored.append((float(logp), sample))
        if not scored:
            raise RejectionError(f"ENAS.export: none of 2000 controller samples passed {self.filter.describe()}.")
        return max(scored, key=lambda t: t[0])[1]

    def state(self) -> dict[str, Any]:
        return {k: v.tolist() for k, v in self.controller.state_dict().items()}
