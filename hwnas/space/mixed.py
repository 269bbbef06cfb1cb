r"""Mixed operations: run a space's choices relaxed, as one-shot strategies need them.

A :class:`MixedState` gives every label a weight vector over its values and the indices to compute
(*active* values); :func:`set_mixed` installs it on a space, and the hwnas layers then compute

- :class:`~hwnas.space.modules.LayerChoice`: :math:`\sum_{i \in A} w_i\,o_i(x)` over the active candidates;
- a channel choice (``Conv2d``/``Linear`` out channels, ``BatchNorm2d`` features): one layer at the largest
  active width whose output is multiplied by the mask :math:`m_j = \sum_c w_c [j < c]` (FBNetV2, Wan et al.
  2020): the weighted sum of the sliced layers at the cost of one. In a conv-BN-activation ``nn.Sequential``
  the mask is applied once, after the activation (see :meth:`MixedState.batch_norm`);
- a kernel choice: one convolution with the *superkernel* :math:`\sum_k w_k W_k` (each smaller kernel is the
  centre of the largest, zero-padded; Single-Path NAS, Stamoulis et al. 2019), equal to
  :math:`\sum_k w_k \mathrm{conv}_k(x)` because "same" padding keeps every kernel centred;
- a depth choice (:class:`~hwnas.space.modules.Repeat`): :math:`\sum_d w_d x_d` over the outputs after
  :math:`d` blocks (one pass through the deepest active depth).

With a single active value the layer computes exactly that value (as :func:`apply_arch` would) and multiplies
its output by the weight, so a straight-through one-hot weight (hard Gumbel, GDAS) costs one path. A value
that depends on several labels (``make_divisible(cin * expand, 8)``) gets the product of their weights summed
over the active combinations that give it. Weights ``None`` mean a constant one (no gradient).

The modes (how a strategy fills the state from architecture logits) are in :mod:`hwnas.search.oneshot_modes`.
:func:`hwnas.space.apply_arch` removes the state (the space then computes one subnet again).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hwnas.space.choice import ChoiceError, evaluate, is_choice, leaf_choices
from hwnas.space.modules import BatchNorm2d, Conv2d, HwnasModule, LayerChoice, Linear, Repeat

__all__ = ["MixedState", "MixedError", "set_mixed", "clear_mixed", "RELAXABLE"]

RELAXABLE = (Conv2d, BatchNorm2d, Linear, LayerChoice, Repeat)


class MixedError(ChoiceError):
    """A layer cannot run a relaxed choice (several active values) the way it is built."""


class MixedState:
    """Per-label weights and active value indices for one relaxed forward pass.

    Args:
        choices: label -> its values (``space.choices()``).
        weights: label -> a 1-D tensor of one weight per value, or ``None`` (a constant 1 for its single
            active value).
        active: label -> the indices of the values to compute (default: every index whose weight is given).
    """

    def __init__(self, choices: dict[str, tuple], weights: dict[str, torch.Tensor | None],
                 active: dict[str, Sequence[int]]):
        missing = [lab for lab in choices if lab not in active]
        if missing:
            raise MixedError(f"MixedState: no active values for label(s) {missing!r}; give each label at least one.")
        for lab, idx in active.items():
            if not idx:
                raise MixedError(f"MixedState: label {lab!r} has no active value; give at least one index.")
            w = weights.get(lab)
            if w is None and len(idx) > 1:
                raise MixedError(f"MixedState: label {lab!r} has {len(idx)} active values but no weights; a relaxed "
                                 "label needs one weight per value.")
        self.choices, self.weights = choices, weights
        self.active = {lab: list(idx) for lab, idx in active.items()}
        self._cache: dict[int, list] = {}

    # ------------------------------------------------------------------ values under the state
    def value_weights(self, value: Any) -> list[tuple[Any, torch.Tensor | None]]:
        """``(value, weight)`` for every value ``value`` takes over the active combinations, sorted by value.

        A value reached by several combinations sums their weights; ``None`` stands for a constant 1.
        """
        key = id(value)
        if key in self._cache:
            return self._cache[key]
        labels = []
        for c in leaf_choices(value):
            if c.label not in labels:
                labels.append(c.label)
        if not labels:
            out = [(value, None)]
        else:
            acc: dict[Any, Any] = {}
            for combo in itertools.product(*(self.active[lab] for lab in labels)):
                sample = {lab: self.choices[lab][i] for lab, i in zip(labels, combo)}
                v = evaluate(value, sample)
                w = None
                for lab, i in zip(labels, combo):
                    wl = self.weights.get(lab)
                    if wl is not None:
                        w = wl[i] if w is None else w * wl[i]
                if v in acc:
                    prev = acc[v]
                    acc[v] = (w if prev is None else prev + w) if w is not None else prev
                else:
                    acc[v] = w
            out = sorted(acc.items(), key=lambda kv: kv[0])
        self._cache[key] = out
        return out

    @staticmethod
    def _mask(width_weights: list, n: int, device: torch.device) -> torch.Tensor | None:
        """The channel mask :math:`m_j = \\sum_c w_c [j < c]` over ``n`` channels (``None``: all ones)."""
        if len(width_weights) == 1:
            return width_weights[0][1]
        m = torch.zeros(n, device=device)
        for c, w in width_weights:
            m = m + w * (torch.arange(n, device=device) < c).to(m.dtype)
        return m

    @staticmethod
    def _scale(out: torch.Tensor, m: torch.Tensor | None) -> torch.Tensor:
        if m is None:
            return out
        if m.dim() == 0:
            return out * m
        return out * m.view(1, -1, *([1] * (out.dim() - 2)))

    # ------------------------------------------------------------------ layers
    def conv(self, m: Conv2d, x: torch.Tensor) -> torch.Tensor:
        """A relaxed :class:`Conv2d`: superkernel over the active kernels, mask over the active widths."""
        ks = self.value_weights(m.kernel_size)
        widths = self.value_weights(m.out_channels)
        groups = m.groups
        if is_choice(groups):
            same_as_input = groups is m.in_channels or (
                leaf_choices(groups) and all(evaluate(groups, s) == evaluate(m.in_channels, s)
                                             for s in _samples_of(self, groups, m.in_channels)))
            if same_as_input:
                groups = x.shape[1]
            else:
                gv = self.value_weights(groups)
                if len(gv) > 1:
                    raise MixedError(f"Conv2d groups {groups!r} takes several values under the relaxed labels; only "
                                     "depthwise groups (groups = in_channels) or a single value can be relaxed.")
                groups = gv[0][0]
        if len(ks) > 1 and m.padding is not None:
            raise MixedError(f"Conv2d kernel_size {m.kernel_size!r} is relaxed but the layer has a fixed padding "
                             f"{m.padding}; the kernels' outputs differ in size. Use padding=None ('same').")
        kmax = max(k for k, _ in ks)
        cout = max(c for c, _ in widths)
        cin = x.shape[1]
        w, b = m._slice(cin, cout, groups, kmax)
        if len(ks) > 1:
            mask = torch.zeros(kmax, kmax, device=w.device, dtype=w.dtype)
            for k, wk in ks:
                s = (kmax - k) // 2
                one = torch.zeros(kmax, kmax, device=w.device, dtype=w.dtype)
                one[s:s + k, s:s + k] = 1.0
                mask = mask + wk * one
            w = w * mask
        elif ks[0][1] is not None:
            w = w * ks[0][1]
            b = b * ks[0][1] if b is not None else None
        out = F.conv2d(x, w, b, m.stride, m.padding_for(kmax), m.dilation, groups)
        if getattr(m, "_hwnas_bn_masks", False):
            return out  # the batch norm right after masks the same width (a channel's BN does not depend on width)
        return self._scale(out, self._mask(widths, cout, out.device))

    def batch_norm(self, m: BatchNorm2d, x: torch.Tensor) -> torch.Tensor:
        """A relaxed :class:`BatchNorm2d`: normalise every channel that flows in, then mask by its width.

        When an elementwise activation follows it (in a ``ConvBNAct``-style ``nn.Sequential``), the mask is
        applied after the activation instead: ``act(bn) * m`` is exactly the weighted sum of the sliced blocks
        (a channel's activation does not depend on the width), and a masked-off channel's gate gradient is not
        lost at the activation's kink at 0 (ReLU's subgradient there is 0).
        """
        c = x.shape[1]
        if m.training:
            m.num_batches_tracked += 1
        out = F.batch_norm(x, m.running_mean[:c], m.running_var[:c], m.weight[:c], m.bias[:c], m.training,
                           m.momentum, m.eps)
        widths = self.value_weights(m.num_features)
        _check_width(m, widths, c, "num_features")
        mask = self._mask(widths, c, out.device)
        act = getattr(m, "_hwnas_next_act", None)
        if mask is not None and act is not None:
            act._hwnas_pending_mask = (self, mask)
            return out
        return self._scale(out, mask)

    def linear(self, m: Linear, x: torch.Tensor) -> torch.Tensor:
        """A relaxed :class:`Linear`: the largest active width, masked."""
        widths = self.value_weights(m.out_features)
        fo = max(c for c, _ in widths)
        b = m.bias[:fo] if m.bias is not None else None
        out = F.linear(x, m.weight[:fo, : x.shape[-1]], b)
        mask = self._mask(widths, fo, out.device)
        if mask is None:
            return out
        return out * mask

    def layer_choice(self, m: LayerChoice, *args: Any, **kwargs: Any) -> Any:
        """A relaxed :class:`LayerChoice`: the weighted sum of its active candidates' outputs.

        A candidate whose weight is exactly 0 in value (the gated-off path of ``binary_gate``, the values a hard
        Gumbel sample did not pick) adds nothing to the output but still has a gradient
        :math:`\\partial L/\\partial w = \\langle \\partial L/\\partial y, o(x) \\rangle`. It is not run forward:
        its output is computed without autograd during the backward pass, only for that inner product
        (ProxylessNAS's implementation, Cai et al. 2019), which saves its activations and its backward.
        """
        run, off = [], []
        for key, w in self.value_weights(m.choice):
            (off if _zero_valued(w) else run).append((m.candidates[m.index(key)], key, w))
        if not run:  # every weight is 0: compute them all
            run, off = off, []
        total, first = None, None
        for cand, key, w in run:
            out = cand(*args, **kwargs)
            term = out if w is None else out * w
            if total is None:
                total, first = term, key
            else:
                _same_shape(m.label, key, term, first, total)
                total = total + term
        if off:
            def outputs() -> list:
                outs = [cand(*args, **kwargs) for cand, _, _ in off]
                for (_, key, _), out in zip(off, outs):
                    _same_shape(m.label, key, out, first, total)
                return outs
            total = _OffPaths.apply(total, outputs, *(w for _, _, w in off))
        return total

    def repeat(self, m: Repeat, x: Any) -> Any:
        """A relaxed :class:`Repeat`: the weighted sum of the outputs after each active depth.

        Active depths beyond the deepest one whose weight is non-zero in value only need their gradient: their
        blocks run without autograd in the backward pass (as a zero-weighted candidate of
        :meth:`layer_choice`).
        """
        depths = self.value_weights(m.depth)
        if len(depths) == 1:
            d, w = depths[0]
            for block in m.blocks[:d]:
                x = block(x)
            return x if w is None else x * w
        want = {d: w for d, w in depths}
        live = [d for d, w in depths if not _zero_valued(w)] or list(want)
        total, shape = None, None
        for d in range(max(live) + 1):
            if d > 0:
                x = m.blocks[d - 1](x)
            if d in want:
                total, shape = _add_depth(m, d, x, want[d], total, shape)
        deeper = [d for d in sorted(want) if d > max(live)]
        if deeper:
            last, start = x, max(live)

            def outputs() -> list:
                outs, h = [], last
                for d in range(start + 1, max(deeper) + 1):
                    h = m.blocks[d - 1](h)
                    if d in want:
                        _check_depth(m, d, h, shape)
                        outs.append(h)
                return outs
            total = _OffPaths.apply(total, outputs, *(want[d] for d in deeper))
        return total


def _check_depth(m: Repeat, d: int, x: torch.Tensor, shape: Any) -> None:
    if shape is not None and x.shape != shape:
        raise MixedError(f"Repeat depth {m.depth!r}: the output after {d} blocks has shape {tuple(x.shape)}, after "
                         f"fewer {tuple(shape)}; relaxed depths need one shape (the first block changes it). "
                         "Exclude that depth or use mode 'index'.")


def _add_depth(m: Repeat, d: int, x: torch.Tensor, w: Any, total: Any, shape: Any) -> tuple:
    _check_depth(m, d, x, shape)
    term = x * w
    return (term if total is None else total + term), x.shape


def _same_shape(label: str, key: Any, term: torch.Tensor, first: Any, total: torch.Tensor) -> None:
    if term.shape != total.shape:
        raise MixedError(f"LayerChoice {label!r}: candidate {key!r} gives shape {tuple(term.shape)} but candidate "
                         f"{first!r} gives {tuple(total.shape)}; a weighted sum needs one shape. Make the candidates "
                         "agree (widths, strides) or use mode 'index'.")


def _zero_valued(w: Any) -> bool:
    """A weight that is exactly 0 in value but carries a gradient (a gated-off or unpicked value)."""
    return isinstance(w, torch.Tensor) and w.requires_grad and torch.is_grad_enabled() and float(w.detach()) == 0.0


class _OffPaths(torch.autograd.Function):
    """``y = total`` in value; in backward, ``dL/dw_k = <dL/dy, o_k>`` with ``o_k`` computed without autograd.

    For outputs ``o_k`` whose weights ``w_k`` are 0 in value, ``total + sum_k w_k o_k`` equals ``total`` and its
    gradient to ``w_k`` is the inner product above; the inputs of ``o_k`` get no gradient through them (their
    contribution is multiplied by 0), nor do the parameters of the layers computing them.
    """

    @staticmethod
    def forward(ctx: Any, total: torch.Tensor, outputs: Any, *weights: torch.Tensor) -> torch.Tensor:
        ctx.outputs = outputs
        ctx.shapes = [w.shape for w in weights]
        return total.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple:
        with torch.no_grad():
            outs = ctx.outputs()
        ctx.outputs = None
        grads = [(o * grad).sum().reshape(shape) for o, shape in zip(outs, ctx.shapes)]
        return (grad, None, *grads)


ELEMENTWISE = (nn.ReLU, nn.ReLU6, nn.Hardswish, nn.SiLU, nn.GELU, nn.Identity, nn.LeakyReLU, nn.Hardsigmoid,
               nn.Sigmoid, nn.Tanh, nn.Mish, nn.ELU)


def _apply_pending_mask(act: nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor | None:
    pending = getattr(act, "_hwnas_pending_mask", None)
    if pending is None:
        return None
    act._hwnas_pending_mask = None
    return MixedState._scale(output, pending[1])


def _link_activations(root: nn.Module) -> None:
    """In every ``nn.Sequential``: mark a Conv2d whose next layer, a BatchNorm2d of the same width, masks for it,
    and a BatchNorm2d followed by an activation that can take its mask (the hook is registered once)."""
    for seq in root.modules():
        if not isinstance(seq, nn.Sequential):
            continue
        kids = list(seq.children())
        for conv, bn in zip(kids, kids[1:]):
            if isinstance(conv, Conv2d) and isinstance(bn, BatchNorm2d) and bn.num_features is conv.out_channels:
                conv._hwnas_bn_masks = True
        for bn, act in zip(kids, kids[1:]):
            if isinstance(bn, BatchNorm2d) and isinstance(act, ELEMENTWISE):
                bn._hwnas_next_act = act
                if getattr(act, "_hwnas_mask_hook", None) is None:
                    act._hwnas_mask_hook = act.register_forward_hook(_apply_pending_mask)
                    act._hwnas_pending_mask = None


def _samples_of(state: MixedState, *values: Any) -> list[dict[str, Any]]:
    labels = []
    for v in values:
        for c in leaf_choices(v):
            if c.label not in labels:
                labels.append(c.label)
    return [dict(zip(labels, combo)) for combo in itertools.product(*(state.choices[lab] for lab in labels))]


def _check_width(m: nn.Module, widths: list, c: int, what: str) -> None:
    top = max(w for w, _ in widths)
    if top != c:
        raise MixedError(f"{type(m).__name__}: its {what} is {top} at the largest active value but {c} channels flow "
                         "in; under relaxed widths the layer before must have the same channel choice.")


def set_mixed(root: nn.Module, state: MixedState) -> nn.Module:
    """Make every hwnas layer of ``root`` run relaxed under ``state``; returns ``root``.

    Raises:
        MixedError: ``root`` holds a hwnas layer with choices that has no relaxed form (e.g. a converted
            model's dynamic layers); train such spaces in mode ``index``.
    """
    state._cache.clear()
    for path, m in root.named_modules():
        if isinstance(m, HwnasModule):
            if not isinstance(m, RELAXABLE) and leaf_choices(m.choice_values()):
                raise MixedError(f"{path!r} ({type(m).__name__}) has choices but no relaxed (mixed) form; only "
                                 f"{[c.__name__ for c in RELAXABLE]} do. Use mode 'index' (RandomOneShot, ENAS) "
                                 "for this space.")
            m._hwnas_mixed = state
    _link_activations(root)
    return root


def clear_mixed(root: nn.Module) -> nn.Module:
    """Remove any :class:`MixedState` from ``root``'s layers (they compute the applied sample again)."""
    for m in root.modules():
        if isinstance(m, HwnasModule):
            m._hwnas_mixed = None
        hook = getattr(m, "_hwnas_mask_hook", None)
        if hook is not None:
            hook.remove()
            m._hwnas_mask_hook = m._hwnas_pending_mask = None
        if getattr(m, "_hwnas_next_act", None) is not None:
            m._hwnas_next_act = None
        if getattr(m, "_hwnas_bn_masks", False):
            m._hwnas_bn_masks = False
    return root
