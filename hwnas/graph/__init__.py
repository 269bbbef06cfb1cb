"""The op graph: tracing once, symbolic shapes over choices, and the shape-rule registry."""

from hwnas.graph.fallback import DataDependentOpError
from hwnas.graph.larray import LArray, SymbolicValueError, dims_equal, from_value, maximum, minimum, where
from hwnas.graph.registry import (
    Call,
    TensorMeta,
    UnsupportedOpError,
    numel,
    register_leaf,
    register_shape_rule,
)
from hwnas.graph.rules_nn import ShapeMismatchError
from hwnas.graph.trace import HwnasTracer, Op, OpGraph, UntraceableError, build_graph, trace_module

__all__ = [
    "Call", "DataDependentOpError", "HwnasTracer", "LArray", "Op", "OpGraph", "ShapeMismatchError",
    "SymbolicValueError", "TensorMeta", "UnsupportedOpError", "UntraceableError", "build_graph", "dims_equal",
    "from_value", "maximum", "minimum", "numel", "register_leaf", "register_shape_rule", "trace_module", "where",
]
