"""Trace a space once with torch.fx and interpret it symbolically into an :class:`OpGraph`.

The interpreter runs each node's shape rule in order (like torch.fx's ``ShapeProp``, but over
:class:`~hwnas.graph.larray.LArray` dims). Structural choices are interpreted here: each block of a
:class:`~hwnas.space.modules.Repeat` and each candidate of a :class:`~hwnas.space.modules.LayerChoice`
is traced once, its ops carry an *activity* (1 where the block runs, 0 elsewhere, over the depth or
candidate label), and the structure's output shape is selected by that label.

An op without a shape rule gets its shapes from PyTorch (:mod:`hwnas.graph.fallback`), and so does a call
whose rule defers by raising ``NotImplementedError``. A submodule that torch.fx cannot trace and that holds
no choice becomes a leaf (a *fixed block*, listed in :attr:`OpGraph.blocks`); so does the whole model when
its own code cannot be traced and it has no choices.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import math
import operator
import traceback
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import fx, nn
from torch.fx.proxy import ParameterProxy

import hwnas.graph.rules_extra  # noqa: F401  (dynamic layers of converted models)
from hwnas.graph import rules_nn, rules_ops, rules_tensor  # noqa: F401  (registers the built-in rules)
from hwnas.graph.example import ExampleValues
from hwnas.graph.fallback import fallback_rule
from hwnas.graph.inputs import positional_inputs
from hwnas.graph.larray import LArray, from_value, where
from hwnas.graph.leaves import (
    auto_leaf_reason,
    mark_auto_leaf,
    third_party_autowrap_modules,
    third_party_functions,
    third_party_leaf_classes,
    third_party_reason,
)
from hwnas.graph.registry import Call, TensorMeta, UnsupportedOpError, is_registered_leaf, lookup_rule
from hwnas.space.choice import Choice
from hwnas.space.modules import HwnasModule, LayerChoice, Repeat
from hwnas.space.space import collect_choices

__all__ = ["Op", "OpGraph", "build_graph", "HwnasTracer", "UntraceableError", "trace_module", "none_defaults"]


class UntraceableError(RuntimeError):
    """torch.fx could not trace a module (usually data-dependent control flow)."""


@dataclass
class Op:
    """One op of the op graph.

    Attributes:
        name: unique name (module path, or enclosing path and fx node name).
        op_type: canonical op name (``"conv"``, ``"relu"``, ``"add"``, ...), the key of cost rules.
        path: the module path in the space (for a function call, of the module that calls it).
        kind: the fx node kind (``call_module``, ``call_function``, ``call_method``, ``get_attr``).
        target: the module, function or method name called.
        inputs: the tensor inputs' symbolic shapes, in argument order.
        output: the symbolic output (a TensorMeta, or a tuple of them).
        attrs: what the shape rule recorded for cost rules (kernel, stride, groups, ...).
        activity: 1, or an LArray of 0/1 over depth/candidate labels saying when the op runs.
        module: the called module, if any.
        input_ops: for each tensor in ``inputs``, the name of the op that produced it (``None`` for the
            space's input or a structural choice's selected output).
    """

    name: str
    op_type: str
    path: str
    kind: str
    target: Any
    inputs: tuple[TensorMeta, ...]
    output: Any
    attrs: dict[str, Any] = field(default_factory=dict)
    activity: Any = 1
    module: nn.Module | None = None
    input_ops: tuple[str | None, ...] = ()

    @property
    def out(self) -> TensorMeta:
        """The first tensor output."""
        o = self.output
        while isinstance(o, (tuple, list)):
            o = o[0]
        return o


@dataclass
class OpGraph:
    """The result of symbolic shape inference over a whole space."""

    ops: list[Op]
    choices: dict[str, Choice]
    input: Any
    output: Any
    space: nn.Module
    blocks: list[tuple[str, str, str]] = field(default_factory=list)
    """``(path, class or function name, why)`` of every fixed block: an op without a shape rule that hwnas
    profiles as a whole (a module torch.fx cannot trace, a not-traceable mark of timm, a leaf without a rule)."""


class HwnasTracer(fx.Tracer):
    """torch.fx tracer that keeps hwnas layers, registered leaves and torch.nn layers as single ops.

    It also keeps whole what timm and torchvision mark as not traceable (when the program has imported them)
    and the modules that hwnas made leaves because torch.fx could not trace them (see :func:`trace_module`).
    """

    def __init__(self, n_inputs: int | None = None, example: Any = None) -> None:
        super().__init__(autowrap_modules=(math, *third_party_autowrap_modules()),
                         autowrap_functions=third_party_functions())
        self.failed_module: tuple[str, str, nn.Module] | None = None
        self._third_party = third_party_leaf_classes()
        self.n_inputs = n_inputs
        self.example = example
        """Example inputs: with them, Python control flow on traced values (``if x.shape[0] != n``, ``len(x)``,
        ``for t in x``) takes the example's value (:mod:`hwnas.graph.example`); without, it fails as in
        torch.fx."""
        self.example_values: ExampleValues | None = None
        self._tensor_names: tuple[dict[int, tuple[str, torch.Tensor]], ...] | None = None
        if example is not None:  # a buffer sliced by a traced size (BERT's position_ids) is traced too
            self.proxy_buffer_attributes = True

    def _values(self) -> ExampleValues | None:
        if self.example is None:
            return None
        if self.example_values is None or self.example_values.graph is not self.graph:
            self.example_values = ExampleValues(self.root, self.graph, self.example)
        return self.example_values

    def proxy(self, node: fx.Node) -> fx.Proxy:
        return _ExampleProxy(node, self) if self.example is not None else super().proxy(node)

    def _shape_value(self, obj: fx.Proxy, what: str) -> tuple[bool, Any]:
        values = self._values()
        if values is None:
            return False, None
        ok, value = values.shape_value(obj.node)
        if ok:
            values.decided(what)
        return ok, value

    def to_bool(self, obj: fx.Proxy) -> bool:
        ok, value = self._shape_value(obj, "if")
        return bool(value) if ok else super().to_bool(obj)

    def iter(self, obj: fx.Proxy) -> Any:
        values = self._values()
        if values is None:
            return super().iter(obj)
        value = values.value(obj.node)  # iterating a tensor follows its first size, not its data
        if not isinstance(value, torch.Tensor):
            ok, value = values.shape_value(obj.node)
            if not ok:
                return super().iter(obj)
        values.decided("for")
        return iter([obj[i] for i in range(len(value))])

    def example_index(self, obj: fx.Proxy) -> int:
        ok, value = self._shape_value(obj, "index")
        if not ok:
            raise TypeError("a value computed from tensor data cannot be used as an index or slice bound while "
                            "tracing (only sizes can)")
        return operator.index(value)

    def example_len(self, obj: fx.Proxy) -> int:
        values = self._values()
        if values is None:  # pragma: no cover - _ExampleProxy exists only with an example
            return fx.Proxy.__len__(obj)
        value = values.value(obj.node)
        if not isinstance(value, torch.Tensor) and not values.shape_value(obj.node)[0]:
            return fx.Proxy.__len__(obj)
        values.decided("len")
        return len(value)

    def create_args_for_root(self, root_fn: Any, is_module: bool, concrete_args: Any = None) -> tuple[Any, list]:
        """Like torch.fx's, except for a ``forward`` behind a decorator that takes ``*args, **kwargs``
        (Hugging Face's ``merge_with_config_defaults``, which writes ``kwargs[name] = value``): torch.fx would
        give the decorator a Proxy for ``kwargs``; here the decorator runs with a real tuple and dict, called
        with the model's inputs positionally, as the model is called (the other arguments keep their
        defaults)."""
        names = _decorated_inputs(root_fn, self.n_inputs) if is_module and concrete_args is None else None
        if names is None:
            return super().create_args_for_root(root_fn, is_module, concrete_args)
        proxies = [self.create_proxy("placeholder", name, (), {}) for name in names]

        def call_root(*args: Any) -> Any:
            return root_fn(*args)

        return call_root, [self.root, *proxies]

    def trace(self, root: Any, concrete_args: Any = None) -> fx.Graph:
        if isinstance(root, fx.GraphModule):  # its buffers are nodes of its graph: keep them so
            self.proxy_buffer_attributes = True
        self._tensor_names = None
        with _functions_kept_whole():
            return super().trace(root, concrete_args)

    def _name_of(self, t: torch.Tensor, table: int) -> str | None:
        """The root's name for parameter (``table`` 0) or buffer (1) ``t``, from a table made once per trace (the
        first name of a tensor, as ``named_parameters`` / ``named_buffers`` give), or ``None``."""
        if self._tensor_names is None:
            self._tensor_names = ({id(p): (n, p) for n, p in self.root.named_parameters()},
                                  {id(b): (n, b) for n, b in self.root.named_buffers()})
        found = self._tensor_names[table].get(id(t))
        return found[0] if found is not None and found[1] is t else None

    def create_arg(self, a: Any) -> Any:
        """As torch.fx's, which looks for a tensor argument among all the root's parameters or buffers
        (quadratic in the model's size: timm's ``BatchNormAct2d`` passes its buffers to ``F.batch_norm``); here
        :meth:`_name_of` finds it. Tensors that are not the root's go to torch.fx (constants, its errors)."""
        if isinstance(a, torch.Tensor):
            name = self._name_of(a, 0 if isinstance(a, nn.Parameter) else 1)
            if name is not None:
                return self.create_node("get_attr", name, (), {})
        return super().create_arg(a)

    def getattr(self, attr: str, attr_val: Any, parameter_proxy_cache: dict[str, fx.Proxy]) -> Any:
        """As torch.fx's, which looks for the tensor among all the root's parameters (and buffers) at every
        read of one (quadratic in the model's size: half of DenseNet-121's trace); here :meth:`_name_of` finds
        it. Same proxies, same names."""
        if not isinstance(attr_val, torch.Tensor):
            return attr_val
        tables = (0,) if isinstance(attr_val, nn.Parameter) else ()
        if self.proxy_buffer_attributes:
            tables += (1,)
        for table in tables:
            name = self._name_of(attr_val, table)
            if name is not None:
                if name not in parameter_proxy_cache:
                    factory = None if not self.param_shapes_constant else \
                        (lambda node, n=name: ParameterProxy(self, node, n, attr_val))
                    parameter_proxy_cache[name] = self.create_proxy("get_attr", name, (), {},
                                                                    proxy_factory_fn=factory)
                return parameter_proxy_cache[name]
        if tables:  # not a tensor of the root's (or one registered while tracing): torch.fx's own search
            return super().getattr(attr, attr_val, parameter_proxy_cache)
        return attr_val

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if isinstance(m, HwnasModule) or is_registered_leaf(m) or auto_leaf_reason(m) is not None:
            return True
        if self._third_party and isinstance(m, self._third_party):
            return True
        return super().is_leaf_module(m, qualname)

    def call_module(self, m: nn.Module, forward: Any, args: tuple, kwargs: dict) -> Any:
        if isinstance(m, fx.GraphModule) and type(m.graph._codegen) is fx.graph.CodeGen:
            # a graph made by torch.fx (a converted model's net) is copied, not traced again: its nodes keep
            # their module paths (nn_module_stack), so ops report the layers of the original model
            forward = functools.partial(self._inline, m)
        try:
            return super().call_module(m, forward, args, kwargs)
        except Exception:
            if self.failed_module is None:  # the innermost module that failed
                self.failed_module = (self.path_of_module(m), type(m).__name__, m)
            raise

    def _inline(self, m: fx.GraphModule, *args: Any, **kwargs: Any) -> Any:
        prefix = self.path_of_module(m)
        outer = dict(self.module_stack)
        inputs = list(args)
        env: dict[fx.Node, Any] = {}
        for node in m.graph.nodes:
            if node.op == "placeholder":
                name = str(node.target).lstrip("*")
                if inputs:
                    env[node] = inputs.pop(0)
                elif name in kwargs:
                    env[node] = kwargs[name]
                else:
                    env[node] = node.args[0] if node.args else None
                continue
            a = fx.node.map_arg(node.args, env.__getitem__)
            k = fx.node.map_arg(node.kwargs, env.__getitem__)
            if node.op == "output":
                return a[0]
            target = f"{prefix}.{node.target}" if node.op in ("call_module", "get_attr") else node.target
            proxy = self.create_proxy(node.op, target, a, k)
            stack = node.meta.get("nn_module_stack")
            if stack:
                proxy.node.meta["nn_module_stack"] = {
                    **outer, **{f"{prefix}.{key}": (f"{prefix}.{path}" if path else prefix, cls)
                                for key, (path, cls) in stack.items()}}
            env[node] = proxy
        raise RuntimeError("graph without output")  # pragma: no cover


class _ExampleProxy(fx.Proxy):
    """A proxy whose ``len()`` and integer value (as a slice bound or index of a real tensor or list) are the
    example's (see :attr:`HwnasTracer.example`)."""

    def __len__(self) -> int:
        return self.tracer.example_len(self)

    def __index__(self) -> int:
        return self.tracer.example_index(self)


_APPLY: dict[type, Any] = {}


def _function_call(cls: type) -> Any:
    """One callable per custom ``torch.autograd.Function``: the call node's target (a module-level function,
    so a GraphModule calls ``cls.apply`` and keeps the custom backward)."""
    if cls not in _APPLY:
        def apply(*args: Any, **kwargs: Any) -> Any:
            return cls.apply(*args, **kwargs)

        apply.__name__ = apply.__qualname__ = f"{cls.__name__}.apply"
        apply.__module__ = __name__
        _APPLY[cls] = apply
    return _APPLY[cls]


@contextlib.contextmanager
def _functions_kept_whole() -> Any:
    """While tracing, ``SomeFunction.apply(proxy)`` of a custom ``torch.autograd.Function`` is recorded as one
    call (torch.fx would trace through its ``forward`` and drop its ``backward``); hwnas profiles it as a fixed
    block and convert keeps the channels it touches fixed."""
    original = torch.autograd.Function.__dict__["apply"]

    def apply(cls: type, *args: Any, **kwargs: Any) -> Any:
        proxies = [a for a in torch.utils._pytree.tree_leaves((args, kwargs)) if isinstance(a, fx.Proxy)]
        if not proxies:
            return original.__func__(cls, *args, **kwargs)
        return proxies[0].tracer.create_proxy("call_function", _function_call(cls), args, kwargs)

    torch.autograd.Function.apply = classmethod(apply)
    try:
        yield
    finally:
        torch.autograd.Function.apply = original


def _decorated_inputs(root_fn: Any, n_inputs: int | None) -> list[str] | None:
    """The names of the first ``n_inputs`` parameters of ``root_fn`` (a method) when it is a wrapper taking
    ``*args``/``**kwargs`` around the real ``forward`` (``functools.wraps``); else ``None``."""
    inner = inspect.unwrap(root_fn)
    code = getattr(root_fn, "__code__", None)
    if inner is root_fn or code is None or not code.co_flags & (inspect.CO_VARARGS | inspect.CO_VARKEYWORDS):
        return None
    try:
        params = list(inspect.signature(inner).parameters.values())[1:]  # without self
    except (TypeError, ValueError):
        return None
    plain = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if n_inputs is None:
        n_inputs = max(1, sum(1 for p in plain if p.default is p.empty))
    if n_inputs > len(plain):
        return None
    return [p.name for p in plain[:n_inputs]]


def none_defaults(work: nn.Module, n_inputs: int) -> dict[str, Any] | None:
    """``forward``'s optional arguments after the given inputs whose default is ``None`` (Hiera's ``mask``):
    traced as ``None``, so ``if mask is not None`` takes the branch that the model runs."""
    try:
        params = list(inspect.signature(work.forward).parameters.values())
    except (TypeError, ValueError):
        return None
    plain = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    if len(plain) != len(params):  # *args / **kwargs: leave it to torch.fx
        return None
    found = {p.name: None for p in plain[n_inputs:] if p.default is None}
    return found or None


def _user_frame(exc: BaseException) -> str:
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if "/torch/" not in f.filename and "/hwnas/graph/" not in f.filename]
    if not frames:
        return ""
    f = frames[-1]
    return f" at {f.filename}:{f.lineno}: `{(f.line or '').strip()}`"


_SETITEM = ("does not support item assignment",)


def _is_setitem(e: BaseException) -> bool:
    return any(phrase in str(e) for phrase in _SETITEM)


def _why(e: BaseException) -> str:
    """What torch.fx's error ``e`` means for the user, with the fix."""
    if _is_setitem(e):
        return ("An in-place slice assignment (such as `x[:, :4] = 0`) cannot be traced: torch.fx records calls, "
                "not writes into a tensor. Write it out-of-place (e.g. `x = torch.cat([torch.zeros_like(x[:, :4]), "
                "x[:, 4:]], 1)`, `x = x.masked_fill(mask, 0)` or `torch.where`), or make the module a leaf with "
                "hwnas.graph.register_leaf(ThatModule).")
    return "Data-dependent Python control flow cannot be traced."


def trace_module(module: nn.Module, path: str = "", auto_leaf: bool = True, n_inputs: int | None = None) -> fx.Graph:
    """Trace ``module`` with :class:`HwnasTracer`.

    Args:
        module: the module to trace.
        path: its path in the model (for messages).
        auto_leaf: a submodule that torch.fx cannot trace and that holds no choice becomes a leaf (it is then
            profiled as a fixed block) and the trace is retried.
        n_inputs: how many inputs the module is called with (for a ``forward`` behind a ``*args, **kwargs``
            decorator, see :meth:`HwnasTracer.create_args_for_root`).

    Raises:
        UntraceableError: ``module``'s own code cannot be traced, or the submodule that cannot be traced holds
            choices (searchable parts cannot be hidden inside a fixed block).
    """
    for _ in range(sum(1 for _ in module.modules()) + 1):
        tracer = HwnasTracer(n_inputs)
        try:
            return tracer.trace(module, none_defaults(module, n_inputs) if n_inputs is not None else None)
        except Exception as e:  # torch.fx raises several types here (TraceError, TypeError, ...)
            failed = tracer.failed_module
            if auto_leaf and failed is not None and failed[0] and _can_be_block(failed[2]):
                mark_auto_leaf(failed[2], _leaf_reason(e))
                continue
            _raise_untraceable(module, path, failed, e)
    raise RuntimeError("trace_module: no progress")  # pragma: no cover - each retry adds one leaf


def _leaf_reason(e: BaseException) -> str:
    return f"torch.fx cannot trace it{_user_frame(e)}: " + (_why(e) if _is_setitem(e) else str(e))


def _can_be_block(m: nn.Module) -> bool:
    """A module can be profiled as a fixed block when nothing in it is searchable."""
    return not isinstance(m, HwnasModule) and not any(isinstance(s, HwnasModule) for s in m.modules()) \
        and not collect_choices(m)


def _raise_untraceable(module: nn.Module, path: str, failed: Any, e: Exception) -> None:
    where = f"{path or '<root>'} ({type(module).__name__})"
    if failed is not None:
        inner = f"{path}.{failed[0]}" if path else failed[0]
        where = f"{where}, in its submodule {inner!r} ({failed[1]})"
        fix = (f"It holds choices, so it cannot be profiled as a fixed block: make {failed[1]} a leaf with "
               f"hwnas.graph.register_leaf({failed[1]}) and give it a shape rule with "
               f"@hwnas.graph.register_shape_rule({failed[1]}), or move the data-dependent code out of it.")
    elif _is_setitem(e):
        fix = ""  # the diagnosis says the fix
    else:
        fix = ("Move that code into its own module, make it a leaf with hwnas.graph.register_leaf(ThatModule) "
               "and give it a shape rule with @hwnas.graph.register_shape_rule(ThatModule).")
    raise UntraceableError(
        f"torch.fx could not trace {where}{_user_frame(e)}: {e}. "
        f"{_why(e)} {fix}".rstrip()
    ) from e


def _map(value: Any, fn) -> Any:
    if isinstance(value, fx.Node):
        return fn(value)
    if isinstance(value, tuple):
        return tuple(_map(v, fn) for v in value)
    if isinstance(value, list):
        return [_map(v, fn) for v in value]
    if isinstance(value, dict):
        return {k: _map(v, fn) for k, v in value.items()}
    if isinstance(value, slice):
        return slice(_map(value.start, fn), _map(value.stop, fn), _map(value.step, fn))
    return value


def _select(label_value: Any, options: list[tuple[Any, Any]]) -> Any:
    """The value of ``options[i][1]`` where ``label_value == options[i][0]``, folded over the options."""
    first = options[0][1]
    if isinstance(first, TensorMeta):
        ranks = {o.ndim for _, o in options}
        if len(ranks) != 1:
            raise ValueError(f"the outputs of a structural choice have different ranks {sorted(ranks)}; every "
                             "block or candidate must return tensors of the same rank.")
        return TensorMeta(tuple(_select(label_value, [(k, o.shape[i]) for k, o in options])
                                for i in range(first.ndim)))
    if isinstance(first, dict):
        keys = [sorted(map(str, o)) for _, o in options]
        if any(k != keys[0] for k in keys):
            raise ValueError(f"the candidates of a structural choice return dicts with different keys {keys}; every "
                             "candidate must return the same keys.")
        return {k: _select(label_value, [(i, o[k]) for i, o in options]) for k in first}
    if isinstance(first, (tuple, list)):
        if any(len(o) != len(first) for _, o in options):
            raise ValueError("the candidates of a structural choice return sequences of different lengths "
                             f"{[len(o) for _, o in options]}; every candidate must return as many outputs.")
        return type(first)(_select(label_value, [(k, o[i]) for k, o in options]) for i in range(len(first)))
    if first is None:
        return None
    out = first
    for key, value in options[1:]:
        out = where(label_value == key, value, out)
    return out.squeeze() if isinstance(out, LArray) else out


def _and(activity: Any, cond: Any) -> Any:
    """``activity`` restricted to where ``cond`` holds (activities are 0/1 ints or LArrays of them)."""
    if isinstance(cond, LArray):
        cond = cond.squeeze()
    if not isinstance(cond, LArray):
        return activity if cond else 0
    return activity * LArray(cond.labels, cond.data.astype(np.int64))


class _Interpreter:
    def __init__(self) -> None:
        self.ops: list[Op] = []
        self._names: dict[str, int] = {}
        self._producer: dict[int, str] = {}  # id(TensorMeta) -> name of the op that made it

    def _unique(self, name: str) -> str:
        n = self._names.get(name, 0)
        self._names[name] = n + 1
        return name if n == 0 else f"{name}#{n + 1}"

    def run_module(self, module: nn.Module, args: list, path: str, activity: Any) -> Any:
        if isinstance(module, Repeat):
            return self._repeat(module, args, path, activity)
        if isinstance(module, LayerChoice):
            return self._layer_choice(module, args, path, activity)
        if HwnasTracer().is_leaf_module(module, path):
            return self._call("call_module", module, tuple(args), {}, path, path or "<root>", activity, module)
        try:
            graph = trace_module(module, path, n_inputs=len(args))
        except UntraceableError as e:
            if not _can_be_block(module):
                raise
            cause = e.__cause__ or e
            mark_auto_leaf(module, _leaf_reason(cause))
            return self._call("call_module", module, tuple(args), {}, path, path or "<root>", activity, module)
        return self._run_graph(module, graph, args, path, activity)

    def _repeat(self, m: Repeat, args: list, path: str, activity: Any) -> Any:
        depth = from_value(m.depth)
        outs = [args[0]]
        n = depth if isinstance(depth, int) else int(depth.data.max())
        for i in range(n):
            act = activity if isinstance(depth, int) else _and(activity, depth > i)
            outs.append(self.run_module(m.blocks[i], [outs[-1]], f"{path}.blocks.{i}", act))
        if isinstance(depth, int):
            return outs[depth]
        return _select(depth, [(d, outs[d]) for d in sorted(set(depth.data.ravel().tolist()))])

    def _layer_choice(self, m: LayerChoice, args: list, path: str, activity: Any) -> Any:
        idx = LArray((m.label,), np.arange(len(m.candidates)))
        outs = []
        for i, cand in enumerate(m.candidates):
            outs.append((i, self.run_module(cand, list(args), f"{path}.candidates.{i}", _and(activity, idx == i))))
        return _select(idx, outs)

    def _run_graph(self, module: nn.Module, graph: fx.Graph, args: list, path: str, activity: Any) -> Any:
        env: dict[fx.Node, Any] = {}
        inputs = iter(args)
        prefix = f"{path}." if path else ""
        for node in graph.nodes:
            if node.op == "placeholder":
                try:
                    env[node] = next(inputs)
                except StopIteration:
                    env[node] = node.args[0] if node.args else None
                continue
            if node.op == "output":
                return _map(node.args[0], env.__getitem__)
            a = _map(node.args, env.__getitem__)
            kw = _map(node.kwargs, env.__getitem__)
            if node.op == "get_attr":
                env[node] = self._get_attr(module, node, prefix + node.target, activity)
            elif node.op == "call_module":
                sub = module.get_submodule(node.target)
                sub_path = prefix + node.target
                if isinstance(sub, (Repeat, LayerChoice)):
                    if kw:
                        raise UnsupportedOpError(f"{sub_path!r}: {type(sub).__name__} takes positional inputs only.")
                    env[node] = self.run_module(sub, list(a), sub_path, activity)
                else:
                    env[node] = self._call("call_module", sub, a, kw, sub_path, sub_path, activity, sub)
            else:  # a function or method call: its path is the innermost module whose code makes it
                stack = node.meta.get("nn_module_stack")
                op_path = prefix + list(stack.values())[-1][0] if stack else path
                env[node] = self._call(node.op, node.target, a, kw, op_path, f"{prefix}{node.name}", activity, None)
        raise RuntimeError("graph without output")  # pragma: no cover

    def _get_attr(self, module: nn.Module, node: fx.Node, name: str, activity: Any) -> Any:
        obj: Any = module
        for part in node.target.split("."):
            obj = getattr(obj, part)
        if isinstance(obj, torch.Tensor):
            meta = TensorMeta(tuple(obj.shape), obj.dtype)
            if isinstance(obj, nn.Parameter):
                self.ops.append(Op(self._unique(name), "parameter", name.rsplit(".", 1)[0], "get_attr", node.target,
                                   (), meta, {"numel": obj.numel(), "tensor": obj}, activity))
            return meta
        return obj

    def _call(self, kind: str, target: Any, args: tuple, kwargs: dict, path: str, name: str, activity: Any,
              module: nn.Module | None) -> Any:
        found = lookup_rule(kind, target)
        op_type, rule = found if found is not None else fallback_rule(kind, target)
        call = Call(op_type, tuple(args), dict(kwargs), module, path, activity=activity)
        tensors = tuple(call.tensors()) + tuple(t for v in args if isinstance(v, (list, tuple))
                                                for t in v if isinstance(t, TensorMeta))
        if tensors and op_type in _FLOAT_INPUT and not (tensors[0].dtype.is_floating_point
                                                        or tensors[0].dtype.is_complex):
            raise TypeError(
                f"{path or '<root>'!r} ({type(module).__name__ if module is not None else op_type}) gets an input of "
                f"dtype {tensors[0].dtype}, but a {op_type} layer needs a floating-point input (PyTorch would refuse "
                f"it: its weights are floats). Pass a float dummy input, e.g. torch.randn(shape), or x.float(); "
                "integer inputs (token ids) belong to a model whose first layer is an nn.Embedding.")
        try:
            out = rule(call)
        except UnsupportedOpError:
            raise
        except NotImplementedError as e:  # the hand-written rule defers to PyTorch for this call
            call = Call(op_type, tuple(args), dict(kwargs), module, path, activity=activity)
            try:
                out = fallback_rule(kind, target)[1](call)
            except UnsupportedOpError as e2:
                raise type(e2)(f"{e2} (its shape rule: {e})") from e
        except (ValueError, TypeError, IndexError) as e:
            if type(e) not in (ValueError, TypeError, IndexError) or not _bare(e):  # rules' own errors say where
                raise
            raise type(e)(_rule_failed(op_type, path, tensors, e)) from e
        if found is not None and tensors and tensors[0].dtype != torch.float32 and op_type in _KEEPS_DTYPE:
            out = _with_dtype(out, tensors[0].dtype)
        out = _fresh(out, {id(t) for t in tensors})
        if tensors or module is not None:
            op = Op(self._unique(name), op_type, path, kind, target, tensors, out, call.attrs, activity, module,
                    tuple(self._producer.get(id(t)) for t in tensors))
            self.ops.append(op)
            for t in _tensor_leaves(out):
                self._producer[id(t)] = op.name
        return out


# layers whose weights are floats: PyTorch refuses an integer input
_FLOAT_INPUT = frozenset({"conv", "linear", "batch_norm", "layer_norm", "group_norm", "instance_norm",
                          "multihead_attention"})

# hand-written rules may build new TensorMetas of the default dtype; these ops move data: they keep their input's
_KEEPS_DTYPE = frozenset({"reshape", "permute", "transpose", "flatten", "unsqueeze", "squeeze", "expand", "cat",
                          "stack", "split", "getitem", "tile", "pad", "unbind", "dropout"})


def _with_dtype(value: Any, dtype: torch.dtype) -> Any:
    if isinstance(value, TensorMeta):
        return value if value.dtype != torch.float32 else TensorMeta(value.shape, dtype)
    if isinstance(value, (tuple, list)):
        return _same_kind(value, [_with_dtype(v, dtype) for v in value])
    return value


_BARE = ("unpack", "not subscriptable", "not iterable", "unsupported operand", "positional argument", "out of range")


def _bare(e: Exception) -> bool:
    """A Python error from inside a rule (such as a shape of the wrong rank), not one a rule raised on purpose."""
    return isinstance(e, IndexError) or any(phrase in str(e) for phrase in _BARE)


def _rule_failed(op_type: str, path: str, tensors: tuple, e: Exception) -> str:
    shapes = ", ".join("(" + ", ".join(repr(d) for d in t.shape) + ")" for t in tensors)
    hint = ""
    if "unpack" in str(e):
        hint = (" Is an input missing its batch dimension? hwnas profiles batched inputs: give the model e.g. "
                "x.unsqueeze(0) for one sample.")
    msg = str(e).rstrip(".")
    return f"shape rule of op {op_type!r} at {path or '<root>'!r} failed on inputs of shapes [{shapes}]: {msg}.{hint}"


def _tensor_leaves(value: Any) -> list[TensorMeta]:
    if isinstance(value, TensorMeta):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _tensor_leaves(v)]
    return []


def _fresh(value: Any, input_ids: set[int]) -> Any:
    """``value`` with every tensor that is one of the inputs replaced by a copy (each op output is its own)."""
    if isinstance(value, TensorMeta):
        return TensorMeta(value.shape, value.dtype) if id(value) in input_ids else value
    if isinstance(value, (tuple, list)):
        return _same_kind(value, [_fresh(v, input_ids) for v in value])
    return value


def _same_kind(seq: Any, items: list) -> Any:
    """``items`` as a sequence of ``seq``'s type (a tuple, list, namedtuple or ``torch.return_types`` record)."""
    if hasattr(seq, "_fields"):
        return type(seq)(*items)
    if hasattr(type(seq), "n_fields"):
        return type(seq)(items)
    return tuple(items) if isinstance(seq, tuple) else items


def build_graph(space: nn.Module, dummy_input: Any) -> OpGraph:
    """Trace ``space`` once and infer every op's shapes symbolically over its choices.

    Args:
        space: an ``nn.Module`` with hwnas layers (usually a :class:`~hwnas.space.space.Space`).
        dummy_input: a tensor, a tuple of tensors, or a tuple ending in a dict of keyword arguments
            (:mod:`hwnas.graph.inputs`) of the input's shape; when the space has a
            ``resolution`` choice, the last two dims of a 4-D input follow it instead.
    """
    choices = collect_choices(space)
    inputs = positional_inputs(space, dummy_input)  # keyword arguments sorted into their positions
    metas = [TensorMeta(tuple(t.shape), t.dtype) for t in inputs]
    res = getattr(space, "resolution", None)
    if isinstance(res, Choice):
        if metas[0].ndim != 4:
            raise ValueError(f"the space has a resolution choice, so the input must be (N, C, H, W); got shape "
                             f"{tuple(inputs[0].shape)}.")
        r = LArray.from_choice(res)
        metas[0] = TensorMeta((*metas[0].shape[:2], r, r), metas[0].dtype)
    interp = _Interpreter()
    out = interp.run_module(space, metas, "", 1)
    blocks = [(op.path or "<root>", op.module.__class__.__name__ if op.module is not None else
               getattr(op.target, "__name__", str(op.target)), _block_reason(op))
              for op in interp.ops if op.attrs.get("fallback") == "block"]
    return OpGraph(interp.ops, choices, metas[0] if len(metas) == 1 else tuple(metas), out, space, blocks)


def _block_reason(op: Op) -> str:
    if op.module is None and op.target in _APPLY.values():
        return ("a custom torch.autograd.Function, kept whole so that its backward stays (shapes from PyTorch, "
                "FLOPs from fvcore)")
    if op.module is None:
        return "a function from outside torch that is not traced (timm's or torchvision's mark, or torch.fx.wrap)"
    return auto_leaf_reason(op.module) or third_party_reason(op.module) or \
        "a leaf module without a shape rule (shapes from PyTorch, FLOPs from fvcore)"
