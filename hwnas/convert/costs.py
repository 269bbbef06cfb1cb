"""Cost rules of the layers that :func:`hwnas.convert` inserts beyond :mod:`hwnas.profile.rules_extra`.

- :class:`DynSplit`, :class:`DynSlice`: no parameters (registered only where no rule exists yet, because
  :class:`~hwnas.profile.NumParamsProfiler` asks every hwnas layer for one); zero FLOPs as data movement
  (``"split"`` and ``"getitem"`` are movement ops).
- :class:`DynGroupNorm` (``"group_norm"``): ``2 * channels`` with an affine transform (where no rule exists).
- :class:`DynEmbedding` (``"dyn_embedding"``): ``num_embeddings * embedding_dim`` parameters; a lookup, which
  fvcore does not count (listed in ``uncounted_ops``)."""

from __future__ import annotations

from typing import Any

from hwnas.graph.trace import Op
from hwnas.profile.rules import param_count, register_cost_rule

__all__: list[str] = []


def _none(op: Op) -> Any:
    return 0


for _op in ("split", "getitem"):
    if param_count(_op) is None:
        register_cost_rule("params", _op)(_none)


def _group_norm_params(op: Op) -> Any:
    return 2 * op.attrs["channels"] if op.attrs.get("affine") else 0


if param_count("group_norm") is None:
    register_cost_rule("params", "group_norm")(_group_norm_params)


@register_cost_rule("params", "dyn_embedding")
def _embedding_params(op: Op) -> Any:
    return op.attrs["num_embeddings"] * op.attrs["embedding_dim"]


register_cost_rule("flops", "dyn_embedding", by_default=False)(_none)  # a lookup: fvcore does not count it
