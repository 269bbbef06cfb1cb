"""Functions that compute with the model's own tensors, and products over heads, for the convert analysis.

A part of :class:`hwnas.convert.analysis.Analyzer` (a mixin):

- ``F.batch_norm(x, running_mean, running_var, weight, bias)`` (timm's ``BatchNormAct2d``): the tensors slice
  with the channels of ``x`` (they become sliced parameters, :class:`hwnas.space.modules_data.DynParam`);
- ``torch.addmm(bias, x, weight)`` with a weight of shape (in, out) (Hugging Face's GPT-2 ``Conv1D``): a layer;
- matrix products and ``F.scaled_dot_product_attention``: the contracted axes unite, and so do the batch
  dims (attention heads) of the operands;
- ``unbind`` along an axis that is not a channel axis (q, k, v of a packed projection).
"""

from __future__ import annotations

from typing import Any

from torch import fx

from hwnas.convert.channels import UNTRACKED, Ann, Slot
from hwnas.convert.sizes import nodes_in as _nodes_in
from hwnas.convert.sizes import what as _what
from hwnas.convert.sizes import where as _where

__all__ = ["FunctionalOps"]


class FunctionalOps:
    """The handlers (see the module docstring); state and helpers come from the Analyzer."""

    ch: Any
    ann: dict
    params: dict
    shapes: dict
    group_counts: dict
    functional_bns: dict
    functional_lns: dict

    def _batch_norm_f(self, n: fx.Node, x: list[Ann]) -> None:
        """``F.batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps)`` with the model's
        own tensors (timm's ``BatchNormAct2d``): a batch norm layer over those tensors (it replaces the call,
        so it follows ``train()``/``eval()``); they slice with the channels of ``x``."""
        names = ("running_mean", "running_var", "weight", "bias")
        targets: dict[str, Any] = {}
        for i, name in enumerate(names, start=1):
            t = n.args[i] if i < len(n.args) else n.kwargs.get(name)
            if t is not None and (not isinstance(t, fx.Node) or t.op != "get_attr" or
                                  len(self.shapes.get(t) or ()) != 1):
                self.opaque(n, f"batch norm with a computed {name}")
                return
            targets[name] = t
        if (targets["running_mean"] is None) != (targets["running_var"] is None) or \
                (targets["weight"] is None) != (targets["bias"] is None) or len(self.shapes[n]) not in (2, 3, 4, 5):
            self.opaque(n, "batch norm with only some of its tensors")
            return
        for t in targets.values():
            if t is not None:
                self._bind_param(t, 0, x[1], f"batch norm at {_where(n)}")

        def arg(i: int, name: str, default: float) -> float:
            v = n.args[i] if i < len(n.args) else n.kwargs.get(name, default)
            return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else default

        self.functional_bns[n] = ({k: (str(t.target) if t is not None else None) for k, t in targets.items()},
                                  arg(6, "momentum", 0.1), arg(7, "eps", 1e-5))
        self.ann[n] = x

    def _layer_norm_f(self, n: fx.Node, x: list[Ann]) -> None:
        """``F.layer_norm(x, (C,), weight, bias, eps)`` with the model's own tensors (timm's ``LayerNorm2d``
        over permuted maps): a layer norm layer over those tensors replaces the call (its width follows the
        sample; the literal ``(C,)`` would not)."""
        shape = n.args[1] if len(n.args) > 1 else n.kwargs.get("normalized_shape")
        targets: dict[str, Any] = {}
        for i, name in ((2, "weight"), (3, "bias")):
            t = n.args[i] if i < len(n.args) else n.kwargs.get(name)
            if t is not None and (not isinstance(t, fx.Node) or t.op != "get_attr"):
                self.opaque(n, f"layer norm with a computed {name}")
                return
            targets[name] = t
        if not isinstance(shape, (tuple, list)) or len(shape) != 1 or shape[0] != self.shapes[n][-1] or \
                (targets["weight"] is None and targets["bias"] is not None):
            self.opaque(n, "layer norm over several dims")
            return
        if x[-1] is not None and any(sg.mult != 1 for sg in x[-1]):
            self.ch.fix_ann(x[-1], f"layer norm over flattened features at {_where(n)}")
        for t in targets.values():
            if t is not None:
                self._bind_param(t, 0, x[-1], f"layer norm at {_where(n)}")
        eps = n.args[4] if len(n.args) > 4 else n.kwargs.get("eps", 1e-5)
        self.functional_lns[n] = ({k: (str(t.target) if t is not None else None) for k, t in targets.items()},
                                  float(eps) if isinstance(eps, (int, float)) else 1e-5)
        self.ann[n] = x

    def _group_norm_f(self, n: fx.Node, x: list[Ann]) -> None:
        """``F.group_norm(x, num_groups, weight, bias, eps)`` with the model's own tensors (timm's
        ``GroupNormAct``): whole groups move together, and the group count is rewritten to follow the width
        (``x.size(1) // channels_per_group``)."""
        groups = n.args[1] if len(n.args) > 1 else n.kwargs.get("num_groups")
        a = x[1]
        if not isinstance(groups, int) or len(n.args) < 2 or a is None:
            self.opaque(n, "group norm with a computed group count")
            return
        block = self.shapes[n][1] // groups if groups > 1 else 0  # one group: any width, the count stays 1
        if any(sg.mult != 1 or (block and sg.width % block) for sg in a):
            self.opaque(n, "group norm over flattened features or groups across a concatenation")
            return
        for sg in a:
            self.ch.constrain(sg.group, block=max(block, 1))
        for i, name in ((2, "weight"), (3, "bias")):
            t = n.args[i] if i < len(n.args) else n.kwargs.get(name)
            if isinstance(t, fx.Node):
                if t.op != "get_attr":
                    self.opaque(n, f"group norm with a computed {name}")
                    return
                self._bind_param(t, 0, a, f"group norm at {_where(n)}")
        if block:
            self.group_counts[n] = block
        self.ann[n] = x

    def _addmm(self, n: fx.Node) -> None:
        """``torch.addmm(bias, x, weight)`` with the model's own ``weight`` of shape (in, out) (Hugging Face's
        GPT-2 ``Conv1D``): a layer whose output channels are the weight's second axis."""
        bias, x, w = n.args
        self._weight_product(n, x, w, bias, 1, "addmm")

    def _linear_f(self, n: fx.Node) -> None:
        """``F.linear(x, weight, bias)`` with the model's own ``weight`` of shape (out, in) (timm's ``Linear``)."""
        x = n.args[0]
        w = n.args[1] if len(n.args) > 1 else n.kwargs.get("weight")
        bias = n.args[2] if len(n.args) > 2 else n.kwargs.get("bias")
        self._weight_product(n, x, w, bias, 0, "linear")

    def _weight_product(self, n: fx.Node, x: Any, w: Any, bias: Any, out_axis: int, what: str) -> None:
        xa = self._tensor(x)
        if not all(isinstance(t, fx.Node) and t.op == "get_attr" for t in (w, bias) if t is not None) or \
                xa is None or len(self.shapes.get(w) or ()) != 2 or \
                bias is not None and len(self.shapes.get(bias) or ()) != 1:
            self.opaque(n, f"{what} with computed tensors")
            return
        out = self.params[str(w.target)][out_axis]
        if out is None:
            self.opaque(n, f"{what} with one output feature")
            return
        st = self.ch.info(out[0].group)  # the weight's own slot on that axis: it produces these channels
        st.slots = [Slot(sl.owner, sl.attr, sl.axis, sl.offset, sl.mult, "producer")
                    if (sl.owner, sl.attr, sl.axis) == (str(w.target), "", out_axis) else sl for sl in st.slots]
        self._bind_param(w, 1 - out_axis, xa[-1], f"{what} at {_where(n)}")
        if bias is not None:
            self._bind_param(bias, 0, out, f"{what} at {_where(n)}")
        self.ann[n] = xa[:-1] + [out]

    def _unbind(self, n: fx.Node, a: list[Ann]) -> None:
        d = self._axis_arg(n, 1, "dim", 0, len(a))
        if a[d] is not None:
            self.ch.fix_ann(a[d], f"unbind along the channel axis at {_where(n)}{self.untracked(n)}")
            self._note_fixed(n, _what(n), "unbinds the channel axis")
        self.ann[n] = tuple(a[:d] + a[d + 1:] for _ in self.shapes[n])

    def _sdpa(self, n: fx.Node) -> None:
        """``F.scaled_dot_product_attention(q, k, v, ...)``: q and k meet on their last axis, the batch dims
        (heads) of all three unite, the output has v's last axis."""
        qkv = [n.args[i] if i < len(n.args) else n.kwargs.get(name) for i, name in enumerate(("query", "key", "value"))]
        axes = [self._tensor(x) for x in qkv]
        mask = [x for x in _nodes_in((n.args[3:], {k: v for k, v in n.kwargs.items()
                                                   if k not in ("query", "key", "value")}))
                if isinstance(self.shapes.get(x), tuple)]
        if any(a is None for a in axes) or any(len(a) < 2 for a in axes) or mask:
            self.opaque(n, "attention with a mask or untracked operands")
            return
        why = f"attention at {_where(n)} with an untracked operand"
        self.ch.unite(axes[0][-1], axes[1][-1], why + self.untracked(n))
        nb = len(self.shapes[n]) - 2
        self.ann[n] = self._batch_dims(n, qkv, nb, why) + [axes[0][-2], axes[2][-1]]

    def _bind_param(self, node: fx.Node, axis: int, ann: Ann, what: str) -> None:
        """Make axis ``axis`` of the parameter read by ``node`` hold the channels ``ann``: a parameter axis that
        nothing else has touched takes the layout of ``ann`` (a concatenation's segments), else the two unite."""
        target = str(node.target)
        axes = self.params.get(target)
        cur = axes[axis] if axes else None
        if ann is not None and cur is not None and len(cur) == 1 and (len(ann) > 1 or ann[0].mult != 1):
            g = self.ch.find(cur[0].group)
            st = self.ch.state[g]
            pristine = st.fixed is None and st.slots == [Slot(target, "", axis, 0, 1, "member")] and \
                sum(s.width * s.mult for s in ann) == cur[0].width
            if pristine:
                st.slots, st.layers, st.fixed = [], [], UNTRACKED
                self._segs_slots(ann, target, ("",), axis, "member")
                axes[axis] = ann
                self.ann[node] = list(axes)
                return
        if what:
            self.ch.unite(ann, cur, f"{what} with an untracked tensor")

    def _matmul(self, n: fx.Node) -> None:
        a, b = self._tensor(n.args[0]), self._tensor(n.args[1] if len(n.args) > 1 else n.kwargs.get("other"))
        if a is None or b is None or len(a) < 2 or len(b) < 2:
            self.opaque(n, "matrix product with a 1-D or untracked operand")
            return
        why = f"matrix product at {_where(n)} with an untracked operand"
        self.ch.unite(a[-1], b[-2], why + (self.untracked(n) if a[-1] is None or b[-2] is None else ""))
        nd = len(self.shapes[n])
        self.ann[n] = self._batch_dims(n, [n.args[0], n.args[1] if len(n.args) > 1 else n.kwargs.get("other")],
                                       nd - 2, why) + [a[-2], b[-1]]

    def _batch_dims(self, n: fx.Node, xs: list[fx.Node], nb: int, why: str) -> list[Ann]:
        """The broadcast batch dims of a matrix product or attention (attention heads): united across the
        operands that have them at full size."""
        out: list[Ann] = []
        for j in range(nb):
            parts = []
            for x in xs:
                xs_shape, ax = self.shapes[x], self._tensor(x)
                i = j - (nb - (len(xs_shape) - 2))
                if i >= 0 and xs_shape[i] != 1:
                    parts.append(ax[i])
            acc = parts[0] if parts else None
            for p in parts[1:]:
                acc = self.ch.unite(acc, p, why + (self.untracked(n) if p is None or acc is None else ""))
            out.append(acc if parts and all(p is not None for p in parts) else None)
        return out
