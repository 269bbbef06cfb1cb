"""Dynamic layers that move data, for converted models (:func:`hwnas.convert`): a parameter used directly
and sliced (:class:`DynParam`), an embedding lookup (:class:`DynEmbedding`), and splits and slices along a
searched channel axis whose sizes follow the sample (:class:`DynSplit`, :class:`DynSlice`).

Like the layers of :mod:`hwnas.space.modules_extra`, each exports a plain PyTorch module: ``nn.Embedding``, or a
``torch.fx.GraphModule`` holding the sliced tensor or calling ``torch.split`` / indexing with the sample's sizes.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from hwnas.space.choice import evaluate
from hwnas.space.modules import HwnasModule
from hwnas.space.modules_extra import Resolve, SegAxis, _copy_into, _param, _take

__all__ = ["DynParam", "DynEmbedding", "DynSplit", "DynSlice"]


class DynParam(HwnasModule):
    """A parameter or buffer used directly in ``forward`` (a class token, a position embedding, a layer
    scale), sliced along its searchable axes. Called with no arguments, it returns the active slice.

    Args:
        tensor: the tensor.
        axes: tensor axis -> segments of that axis.
        is_parameter: whether it is an ``nn.Parameter`` (counted in params) or a buffer.
    """

    def __init__(self, tensor: torch.Tensor, axes: dict[int, Sequence], is_parameter: bool = True):
        super().__init__()
        self.axes = {int(a): SegAxis(s) for a, s in sorted(axes.items())}
        self.is_parameter = is_parameter
        if is_parameter:
            self.value = _param(tensor)
        else:
            self.register_buffer("value", tensor.detach().clone())

    def choice_values(self) -> list[Any]:
        return [ax.width for ax in self.axes.values()]

    def shape(self, resolve: Resolve) -> tuple:
        shape = list(self.value.shape)
        for a, ax in self.axes.items():
            shape[a] = resolve(ax.width)
        return tuple(shape)

    def _slice(self, resolve: Resolve) -> torch.Tensor:
        t = self.value
        for a, ax in self.axes.items():
            t = _take(t, ax.index(resolve), a)
        return t

    def forward(self) -> torch.Tensor:
        return self._slice(self.active)

    def export(self, sample: dict[str, Any]) -> nn.Module:
        t = self._slice(lambda v: evaluate(v, sample)).detach().clone()
        root = nn.Module()
        if self.is_parameter:
            root.value = nn.Parameter(t, requires_grad=self.value.requires_grad)
        else:
            root.register_buffer("value", t)
        graph = fx.Graph()
        graph.output(graph.get_attr("value"))
        return fx.GraphModule(root, graph, class_name="Parameter" if self.is_parameter else "Buffer")

class DynEmbedding(HwnasModule):
    """``nn.Embedding`` whose embedding width is searchable (the first active features of every row)."""

    def __init__(self, emb: nn.Embedding, segs: Sequence):
        super().__init__()
        self.axis = SegAxis(segs)
        self.num_embeddings, self.embedding_dim = emb.num_embeddings, self.axis.width
        self.padding_idx, self.scale_grad_by_freq, self.sparse = emb.padding_idx, emb.scale_grad_by_freq, emb.sparse
        self.weight = _param(emb.weight)

    def choice_values(self) -> list[Any]:
        return [self.embedding_dim]

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        w = _take(self.weight, self.axis.index(self.active), 1)
        return F.embedding(ids, w, self.padding_idx, None, 2.0, self.scale_grad_by_freq, self.sparse)

    def export(self, sample: dict[str, Any]) -> nn.Embedding:
        w = _take(self.weight, self.axis.index(lambda v: evaluate(v, sample)), 1)
        out = nn.Embedding(self.num_embeddings, w.shape[1], self.padding_idx,
                           scale_grad_by_freq=self.scale_grad_by_freq, sparse=self.sparse)
        _copy_into(out.weight, w)
        return out

class DynSplit(HwnasModule):
    """``torch.split`` along a channel axis whose parts are searchable: each part's size follows the sample.

    Args:
        parts: the segments of each part (as for :class:`SegAxis`).
        dim: the axis.
    """

    def __init__(self, parts: Sequence[Sequence], dim: int):
        super().__init__()
        self.parts = [SegAxis(p) for p in parts]
        self.sizes = [p.width for p in self.parts]
        self.dim = dim

    def choice_values(self) -> list[Any]:
        return list(self.sizes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return torch.split(x, [int(self.active(s)) for s in self.sizes], self.dim)

    def export(self, sample: dict[str, Any]) -> nn.Module:
        graph = fx.Graph()
        x = graph.placeholder("x")
        graph.output(graph.call_function(torch.split, (x, [int(evaluate(s, sample)) for s in self.sizes], self.dim)))
        return fx.GraphModule(nn.Module(), graph, class_name="Split")

class DynSlice(HwnasModule):
    """``x[..., a:b, ...]`` along a channel axis: the bounds follow the widths of the parts before and inside.

    Args:
        before: the segments before the slice (may be empty).
        inside: the segments of the slice.
        dim: the axis (counted from the front of ``x``).
    """

    def __init__(self, before: Sequence, inside: Sequence, dim: int):
        super().__init__()
        self.start = SegAxis(before).width if before else 0
        self.width = SegAxis(inside).width
        self.dim = dim

    def choice_values(self) -> list[Any]:
        return [self.start, self.width]

    def _index(self, resolve: Resolve) -> tuple:
        start = int(resolve(self.start))
        return (slice(None),) * self.dim + (slice(start, start + int(resolve(self.width))),)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[self._index(self.active)]

    def export(self, sample: dict[str, Any]) -> nn.Module:
        graph = fx.Graph()
        x = graph.placeholder("x")
        graph.output(graph.call_function(operator.getitem, (x, self._index(lambda v: evaluate(v, sample)))))
        return fx.GraphModule(nn.Module(), graph, class_name="Slice")
