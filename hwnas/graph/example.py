"""Control flow decided by an example input while torch.fx traces (as ``torch.jit.trace`` decides it).

torch.fx records calls on proxies that carry no values, so Python code that branches on a tensor's shape or
dtype (``if batch_size != position_ids.shape[0]``, ``if pixel_values.dtype != expected_dtype``: Hugging Face
models do this at every entry point) stops the trace. :class:`ExampleValues` evaluates the nodes traced so far
on the example input, once each and in order, so that such a condition, an iteration over a proxy or its
``len`` gets the value it has for the example. The graph is then valid for inputs that take the same
branches (the same shapes and dtypes); :func:`hwnas.convert` checks its result against the model's own output
on the example.
"""

from __future__ import annotations

import contextlib
import traceback
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import fx, nn
from torch.fx import _symbolic_trace

__all__ = ["ExampleValues"]

_READS_DATA = frozenset({"item", "tolist", "numpy"})


class ExampleValues:
    """Concrete values of the nodes of a graph under construction, for one example input.

    Args:
        root: the module being traced (``get_attr`` and ``call_module`` targets are looked up in it).
        graph: the graph the tracer builds (nodes are only appended while tracing).
        inputs: the example inputs, in the order of the graph's placeholders.
    """

    def __init__(self, root: nn.Module, graph: fx.Graph, inputs: Sequence[Any]) -> None:
        self.root = root
        self.graph = graph
        self.inputs = list(inputs)
        self.env: dict[fx.Node, Any] = {}
        self._from_data: set[fx.Node] = set()  # nodes whose value was read out of a tensor's data
        self._placeholders = 0
        self.decisions: list[str] = []
        """Where control flow was decided by the example (``file:line: code``), in order."""

    def shape_value(self, node: fx.Node) -> tuple[bool, Any]:
        """``(True, value)`` when ``node``'s value on the example follows from shapes, dtypes and constants only
        (a size, a comparison of sizes); ``(False, None)`` when it depends on tensor data (``x.sum() > 0``,
        ``t.item()``): the graph must not be specialised to one input's values."""
        value = self.value(node)
        if isinstance(value, torch.Tensor) or node in self._from_data:
            return False, None
        return True, value

    def value(self, node: fx.Node) -> Any:
        """``node``'s value on the example input (every node before it is evaluated first, once)."""
        if node in self.env:
            return self.env[node]
        with torch.no_grad(), _untraced():
            for n in self.graph.nodes:
                if n not in self.env:
                    self.env[n] = self._run(n)
                    if n.op == "call_method" and n.target in _READS_DATA or any(
                            a in self._from_data for a in n.all_input_nodes):
                        self._from_data.add(n)
                if n is node:
                    break
        return self.env[node]

    def decided(self, what: str) -> None:
        """Record that ``what`` (e.g. ``"if"``) took the example's value, at the user's line."""
        frames = [f for f in traceback.extract_stack()[:-2]
                  if "/torch/" not in f.filename and "/hwnas/graph/" not in f.filename]
        if frames:
            f = frames[-1]
            self.decisions.append(f"{f.filename}:{f.lineno}: {what} `{(f.line or '').strip()}`")

    def _run(self, n: fx.Node) -> Any:
        if n.op == "placeholder":
            i = self._placeholders
            self._placeholders += 1
            if i < len(self.inputs):
                return self.inputs[i]
            return n.args[0] if n.args else None
        if n.op == "output":
            return None
        args = fx.node.map_arg(n.args, self.env.__getitem__)
        kwargs = fx.node.map_arg(n.kwargs, self.env.__getitem__)
        if n.op == "get_attr":
            obj: Any = self.root
            for part in str(n.target).split("."):
                obj = getattr(obj, part)
            return obj
        if n.op == "call_function":
            return n.target(*args, **kwargs)
        if n.op == "call_method":
            self_obj, *rest = args
            return getattr(self_obj, n.target)(*rest, **kwargs)
        if n.op == "call_module":
            return self.root.get_submodule(n.target)(*args, **kwargs)
        raise RuntimeError(f"unknown fx node kind {n.op!r}")  # pragma: no cover


@contextlib.contextmanager
def _untraced() -> Iterator[None]:
    """torch.fx's patches (``nn.Module.__call__``, wrapped functions) and its tracing flag off for a while, so
    that modules and functions compute values instead of recording calls."""
    patcher = getattr(_symbolic_trace, "CURRENT_PATCHER", None)
    flag = getattr(_symbolic_trace, "_is_fx_tracing_flag", False)
    if patcher is not None:
        patcher.revert_all_patches()
    _symbolic_trace._is_fx_tracing_flag = False
    try:
        yield
    finally:
        _symbolic_trace._is_fx_tracing_flag = flag
        if patcher is not None:
            patcher.reapply_all_patches()
