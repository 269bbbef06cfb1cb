"""Cost rules for the dynamic layers of converted models (:mod:`hwnas.space.modules_extra`).

FLOPs: the dynamic layers reuse the op names of their ``torch.nn`` counterparts, so the fvcore-matching
rules of :mod:`hwnas.profile.rules` count them; a sliced parameter (``"param_slice"``) moves data only.
Parameters: exactly what the exported ``torch.nn`` layer holds.
"""

from __future__ import annotations

from typing import Any

from hwnas.graph.trace import Op
from hwnas.profile.rules import _BUILTIN, _FLOPS, register_cost_rule

__all__: list[str] = []


@register_cost_rule("flops", "param_slice", by_default=True)
def _param_slice_flops(op: Op) -> Any:
    return 0


@register_cost_rule("params", "param_slice")
def _param_slice_params(op: Op) -> Any:
    return op.attrs["numel"] if op.attrs["is_parameter"] else 0


@register_cost_rule("params", "layer_norm")
def _layer_norm_params(op: Op) -> Any:
    m = op.module
    if not m.elementwise_affine:
        return 0
    width = op.inputs[0].shape[-1]
    return width * (2 if m.bias is not None else 1)


@register_cost_rule("params", "multihead_attention")
def _mha_params(op: Op) -> Any:
    e = op.attrs["embed_dim"]
    return 4 * e * e + (4 * e if op.attrs["bias"] else 0)


_BUILTIN.update(_FLOPS)
