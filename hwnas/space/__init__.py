"""Model spaces: choices, weight-sharing layers, structural choices and samples."""

from hwnas.space.choice import (
    Choice,
    ChoiceError,
    ChoiceExpr,
    evaluate,
    is_choice,
    labels_of,
    make_divisible,
    max_value,
    min_value,
    value_range,
)
from hwnas.space.modules import BatchNorm2d, Conv2d, HwnasModule, LayerChoice, Linear, Repeat
from hwnas.space.space import (
    SampleError,
    Space,
    apply_arch,
    as_rng,
    canonical_sample,
    collect_choices,
    count_subnets,
    validate_sample,
)

__all__ = [
    "BatchNorm2d", "Choice", "ChoiceError", "ChoiceExpr", "Conv2d", "HwnasModule", "LayerChoice", "Linear",
    "Repeat", "SampleError", "Space", "apply_arch", "as_rng", "canonical_sample", "collect_choices", "count_subnets", "evaluate",
    "is_choice", "labels_of", "make_divisible", "max_value", "min_value", "validate_sample", "value_range",
]
