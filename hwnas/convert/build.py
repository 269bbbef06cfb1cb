"""Turn an analysed model into a space: width labels, importance order, dynamic layers, depth runs.

Importance (documented in :func:`hwnas.convert`): a group's channels are sorted by the sum, over the
layers that produce them (convolutions, including depthwise and grouped ones, linear layers, attention
output projections), of the L1 norm of each channel's filter, each layer's norms divided by their mean so
that every producer weighs the same. Grouped convolutions move whole groups of channels (scored by their
sum). The same permutation is applied to every tensor that holds the group (producers' filters and
biases, batch/layer norm parameters and statistics, consumers' input weights, sliced parameters), so the
permuted full model computes the same function, and the first ``k`` channels are the ``k`` most important.
"""

from __future__ import annotations

import logging
import operator
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx, nn

from hwnas.convert.analysis import UNTRACKED, Analyzer, LayerRecord
from hwnas.convert.blocks import Block
from hwnas.convert.channels import Ann, Seg, Slot
from hwnas.convert.rules import RuleBook
from hwnas.convert.sizes import where as where_of
from hwnas.convert.space import Conversion, DepthReport, FixedReport, GroupReport, KernelReport
from hwnas.space.choice import Choice, is_choice
from hwnas.space.modules import Repeat
from hwnas.space.modules_data import DynEmbedding, DynParam, DynSlice, DynSplit
from hwnas.space.modules_extra import (
    DynBatchNorm,
    DynConv,
    DynGroupNorm,
    DynLayerNorm,
    DynLinear,
    DynMultiheadAttention,
    width_values,
)

__all__ = ["Options", "build", "MAX_LABELS_PER_AXIS"]

log = logging.getLogger(__name__)

#: At most this many width labels meet on one channel axis (a concatenation); beyond it, segments of the
#: same width share one label (a DenseNet block's growth is one decision), so that every shape and cost
#: stays a small table.
MAX_LABELS_PER_AXIS = 3


@dataclass
class Options:
    mode: str
    channel_ratios: tuple[float, ...]
    channel_divisor: int | None
    permute: bool = True
    rules: RuleBook | None = None  # per-layer settings (hwnas.convert.rules)
    importance: dict[int, torch.Tensor] | None = None  # id(parameter) -> channel scores (e.g. GradNAS's)


class _Labels:
    """Union-find over searched group roots: groups that share a width decision."""

    def __init__(self, roots: list[int]):
        self.parent = {r: r for r in roots}

    def find(self, r: int) -> int:
        while self.parent[r] != r:
            self.parent[r] = self.parent[self.parent[r]]
            r = self.parent[r]
        return r

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def _tensor_at(gm: nn.Module, owner: str, attr: str) -> torch.Tensor:
    obj: Any = gm
    for part in owner.split(".") + (attr.split(".") if attr else []):
        obj = getattr(obj, part)
    return obj


def _importance(gm: nn.Module, slots: list[Slot], width: int, block: int,
                scores: dict[int, torch.Tensor] | None = None) -> torch.Tensor:
    score = torch.zeros(width, dtype=torch.float64)
    for s in slots:
        if s.role != "producer":
            continue
        t = _tensor_at(gm, s.owner, s.attr)
        t = (scores.get(id(t), t) if scores else t).detach()  # given scores (same shape) replace the weights
        view = t.narrow(s.axis, s.offset, width * s.mult)
        others = tuple(d for d in range(t.ndim) if d != s.axis)
        part = (torch.linalg.vector_norm(view, 1, dim=others) if others else view.abs()).to(torch.float64)
        part = part.view(width, s.mult).sum(1)
        mean = float(part.mean())
        score += part / mean if mean > 0 else part
    if block > 1:
        return score.view(width // block, block).sum(1)
    return score


def _permutation(score: torch.Tensor, block: int) -> torch.Tensor:
    order = torch.argsort(-score, stable=True)
    if block > 1:
        order = (order[:, None] * block + torch.arange(block)[None]).reshape(-1)
    return order


def _apply(gm: nn.Module, slots: list[Slot], perm: torch.Tensor) -> None:
    width = len(perm)
    for s in slots:
        t = _tensor_at(gm, s.owner, s.attr)
        idx = (perm[:, None] * s.mult + torch.arange(s.mult)[None]).reshape(-1)
        with torch.no_grad():
            if s.offset == 0 and width * s.mult == t.shape[s.axis]:  # the whole axis: one gather, no copy back
                t.data = t.data.index_select(s.axis, idx.to(t.device))
                continue
            view = t.data.narrow(s.axis, s.offset, width * s.mult)
            view.copy_(view.index_select(s.axis, idx.to(t.device)))


def _multi_seg_axes(an: Analyzer) -> list[tuple[str, Ann]]:
    """Every axis laid out from several segments (a concatenation), with where it is made."""
    out: list[tuple[str, Ann]] = []

    def walk(a: Any, where: str) -> None:
        if isinstance(a, tuple) and a and isinstance(a[0], Seg):
            if len(a) > 1:
                out.append((where, a))
        elif isinstance(a, (list, tuple)):
            for x in a:
                walk(x, where)

    for node in an.gm.graph.nodes:
        walk(an.ann.get(node), where_of(node))
    return out


def _choose_labels(an: Analyzer, opts: Options) -> tuple[dict[int, Choice], list[int]]:
    """Searched group roots -> their width :class:`Choice` (shared by groups that share a label)."""
    ch = an.ch
    for r in ch.roots():
        s = ch.state[r]
        if s.fixed is None and not any(sl.role == "producer" for sl in s.slots):
            s.fixed = "no layer computes these channels"
    changed = True
    while changed:  # parts of a chunk are searched together or fixed together
        changed = False
        for tie in an.ties:
            roots = [ch.find(g) for g in tie]
            why = next((ch.state[r].fixed for r in roots if ch.state[r].fixed is not None), None)
            if why is not None and any(ch.state[r].fixed is None for r in roots):
                for r in roots:
                    ch.fix(r, f"its equal part of a chunk is fixed ({why})")
                changed = True
    searched = [r for r in ch.roots() if ch.state[r].fixed is None]
    labels = _Labels(searched)
    for tie in an.ties:  # a tie is searched or fixed as a whole (above); a fixed one has no label
        if ch.find(tie[0]) not in labels.parent:
            continue
        for g in tie[1:]:
            labels.union(ch.find(tie[0]), ch.find(g))
    for where, ax in _multi_seg_axes(an):
        live = [s for s in ax if ch.find(s.group) in labels.parent and ch.state[ch.find(s.group)].fixed is None]
        if len({labels.find(ch.find(s.group)) for s in live}) <= MAX_LABELS_PER_AXIS:
            continue
        buckets: dict[tuple, list[int]] = {}
        for s in live:
            st = ch.state[ch.find(s.group)]
            buckets.setdefault((st.width, st.block, st.multiple), []).append(ch.find(s.group))
        for roots in buckets.values():
            for r in roots[1:]:
                labels.union(roots[0], r)
        distinct = sorted({labels.find(ch.find(s.group)) for s in live})
        for extra in distinct[MAX_LABELS_PER_AXIS:]:
            for s in live:
                if labels.find(ch.find(s.group)) == extra:
                    ch.fix(s.group, f"one of too many independently searched inputs of a concatenation at {where}")
    by_label: dict[int, list[int]] = {}
    for r in searched:
        if ch.state[r].fixed is None:
            by_label.setdefault(labels.find(r), []).append(r)
    choices: dict[int, Choice] = {}
    used: set[str] = set()
    by_divisor: list[str] = []
    for head, roots in by_label.items():
        st = ch.state[head]
        producer = next(sl.owner for sl in ch.state[head].slots if sl.role == "producer")
        producer = producer.removesuffix(".weight")  # a weight used directly (F.linear, addmm): its layer's name
        ratios, divisor = opts.channel_ratios, opts.channel_divisor
        if opts.rules:
            rule = opts.rules.lookup(producer, _module_at(an.gm, producer))
            if rule is None:
                for r in roots:
                    ch.fix(r, f"a convert rule turns off the search of {producer}")
                continue
            ratios, divisor = rule.get("channels_ratio", ratios), rule.get("channel_divisor", divisor)
        values = width_values(st.width, ratios, divisor, max(st.block, st.multiple))
        if len(values) < 2:
            if divisor and len(width_values(st.width, ratios, None, max(st.block, st.multiple))) >= 2:
                reason = (f"channel_divisor={divisor} leaves only its full width ({st.width} channels, "
                          f"not a multiple of {divisor} above it)")
                by_divisor.append(f"{producer!r} ({st.width} channels)")
            else:
                reason = f"too narrow ({st.width} channels) for the channel ratios"
            for r in roots:
                ch.fix(r, reason)
            continue
        name, i = f"{producer}.{st.unit}", 2
        while name in used:
            name, i = f"{producer}.{st.unit}{i}", i + 1
        used.add(name)
        choice = Choice(values, label=name)
        for r in roots:
            choices[r] = choice
    if by_divisor:
        warnings.warn(f"hwnas.convert: channel_divisor={opts.channel_divisor} leaves {len(by_divisor)} layer(s) "
                      f"with no width choice but their full width: {', '.join(by_divisor[:6])}"
                      f"{' ...' if len(by_divisor) > 6 else ''}; their widths are fixed. Pass a divisor that divides "
                      "them (e.g. 8), or channel_divisor=None.", UserWarning, stacklevel=3)
    return choices, searched


def _module_at(gm: nn.Module, path: str) -> nn.Module | None:
    try:
        return gm.get_submodule(path)
    except AttributeError:
        return None


def kernel_values(rec: LayerRecord, rules: RuleBook | None) -> list[int]:
    """The kernel choices of a layer: the analysis's candidates, restricted by a rule's ``kernel_size``."""
    kernels = list(rec.kernels)
    if rules and kernels:
        rule = rules.lookup(rec.path, rec.module)
        if rule is None:
            return kernels[-1:]
        if "kernel_size" in rule:
            kernels = [k for k in kernels if k in rule["kernel_size"] or k == kernels[-1]]
    return kernels


def _segs(an: Analyzer, ann: Ann, choices: dict[int, Choice]) -> list[tuple[Any, int, int]]:
    return [(choices.get(an.ch.find(s.group), s.width), s.width, s.mult) for s in ann]


def _dynamic(an: Analyzer, rec: LayerRecord, choices: dict[int, Choice], kernel: Choice | None) -> nn.Module | None:
    searched = any(an.ch.find(s.group) in choices for a in rec.axes.values() for s in a)
    if not searched and kernel is None:
        return None
    m, ax = rec.module, rec.axes
    if rec.kind == "conv":
        return DynConv(m, _segs(an, ax["in"], choices), _segs(an, ax["out"], choices), kernel, rec.groups)
    if rec.kind == "bn":
        return DynBatchNorm(m, _segs(an, ax["in"], choices))
    if rec.kind == "linear":
        return DynLinear(m, _segs(an, ax["in"], choices), _segs(an, ax["out"], choices))
    if rec.kind == "ln":
        return DynLayerNorm(m, _segs(an, ax["in"], choices))
    if rec.kind == "gn":
        return DynGroupNorm(m, _segs(an, ax["in"], choices), int(rec.groups))
    if rec.kind == "embedding":
        return DynEmbedding(m, _segs(an, ax["out"], choices))
    if rec.kind == "mha":
        return DynMultiheadAttention(m, _segs(an, ax["in"], choices))
    raise AssertionError(rec.kind)  # pragma: no cover


def build(gm: fx.GraphModule, an: Analyzer, runs: list[list[Block]], opts: Options,
          conversion: Conversion) -> fx.GraphModule:
    """Fill ``conversion`` and return the converted network (``gm``'s tensors are permuted in place)."""
    ch = an.ch
    choices, _ = _choose_labels(an, opts)

    # importance order, applied to every tensor that holds a searched group
    perms: dict[int, list[int]] = {}
    for r in ch.roots():
        st = ch.state[r]
        if r not in choices:
            continue
        perm = _permutation(_importance(gm, st.slots, st.width, st.block, opts.importance), st.block) \
            if opts.permute else torch.arange(st.width)
        if opts.permute:
            _apply(gm, st.slots, perm)
        perms[r] = perm.tolist()

    for r in ch.roots():
        st = ch.state[r]
        if r not in choices and (st.fixed == UNTRACKED or all(sl.attr == "" and sl.role != "producer"
                                                               for sl in st.slots)):
            continue  # untracked channels, or a fixed axis of a parameter used directly (a token axis)
        c = choices.get(r)
        searched = c is not None
        conversion.groups.append(GroupReport(c.label if searched else None, st.width,
                                             list(c.values) if searched else [st.width], list(st.layers),
                                             None if searched else st.fixed, perms.get(r), st.block, st.multiple))
    conversion.fixed_ops = [FixedReport(f.where, f.what, f.reason) for f in an.fixed_ops]

    # dynamic layers
    modules: dict[str, Any] = {}
    for n in gm.graph.nodes:
        if n.op == "call_module":
            modules[str(n.target)] = gm.get_submodule(str(n.target))
        elif n.op == "get_attr":
            modules[str(n.target)] = _tensor_at(gm, str(n.target), "")
    for path, rec in an.layers.items():
        kernel = None
        kernels = kernel_values(rec, opts.rules)
        if len(kernels) > 1:
            kernel = Choice(kernels, label=f"{path}.kernel")
            conversion.kernels.append(KernelReport(kernel.label, path, kernels))
        dyn = _dynamic(an, rec, choices, kernel)
        if dyn is not None:
            modules[path] = dyn
    dyn_params: set[str] = set()
    for target, axes in an.params.items():
        searched = {i: _segs(an, a, choices) for i, a in enumerate(axes)
                    if a is not None and any(ch.find(s.group) in choices for s in a)}
        if searched:
            t = modules[target]
            modules[target] = DynParam(t, searched, isinstance(t, nn.Parameter))
            dyn_params.add(target)

    # splits and slices along searched channel axes: layers whose sizes follow the sample
    cut_modules: dict[fx.Node, tuple[str, nn.Module]] = {}
    for n, cut in an.cuts.items():
        if cut[0] == "split":
            parts = [_segs(an, p, choices) for p in cut[2]]
            mod: nn.Module = DynSplit(parts, cut[1])
        else:
            mod = DynSlice(_segs(an, cut[2][0], choices) if cut[2] else [], _segs(an, cut[3], choices), cut[1])
        if any(ax.dynamic for ax in (mod.parts if isinstance(mod, DynSplit) else ())) or \
                isinstance(mod, DynSlice) and (is_choice(mod.start) or is_choice(mod.width)):
            cut_modules[n] = (f"cut_{n.name}", mod)

    # functional batch norms over the model's tensors become batch norm layers (they follow train()/eval())
    for n, (targets, momentum, eps) in an.functional_bns.items():
        cls = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d, 5: nn.BatchNorm3d}[len(an.shapes[n])]
        bn = cls(an.shapes[n][1], eps, momentum, targets["weight"] is not None, targets["running_mean"] is not None)
        for name, target in targets.items():
            if target is not None:
                t = _tensor_at(gm, target, "")
                is_param = name in ("weight", "bias")
                setattr(bn, name, t if not is_param or isinstance(t, nn.Parameter) else nn.Parameter(t))
        x = an._tensor(n.args[0])[1]
        dyn = x is not None and any(ch.find(s.group) in choices for s in x)
        cut_modules[n] = (f"bn_{n.name}", DynBatchNorm(bn, _segs(an, x, choices)) if dyn else bn)
        for t in n.all_input_nodes:
            if t.op == "get_attr" and all(u in an.functional_bns for u in t.users):
                cut_modules[t] = None  # read only by the layer above
    for n, (targets, eps) in an.functional_lns.items():
        ln = nn.LayerNorm(an.shapes[n][-1], eps, targets["weight"] is not None, bias=targets["bias"] is not None)
        for name, target in targets.items():
            if target is not None:
                t = _tensor_at(gm, target, "")
                setattr(ln, name, t if isinstance(t, nn.Parameter) else nn.Parameter(t))
        x = an._tensor(n.args[0])[-1]
        dyn = x is not None and any(ch.find(s.group) in choices for s in x)
        cut_modules[n] = (f"ln_{n.name}", DynLayerNorm(ln, _segs(an, x, choices)) if dyn else ln)
        for t in n.all_input_nodes:
            if t.op == "get_attr" and all(u in an.functional_lns for u in t.users):
                cut_modules[t] = None
    rewrites: dict[fx.Node, Any] = {**an.rewrites, **{n: ("groups", b) for n, b in an.group_counts.items()}}

    # depth runs
    first_of: dict[fx.Node, list[Block]] = {}
    in_run: set[fx.Node] = set()
    for run in runs:
        first_of[run[0].nodes[0]] = run
        for b in run:
            in_run.update(b.nodes)
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    root: dict[str, Any] = {}
    for n in gm.graph.nodes:
        if n in first_of:
            run = first_of[n]
            parent, _, last = run[0].path.rpartition(".")
            label = f"{run[0].path}.depth" if len(run) == 1 else \
                f"{parent}.{last}-{run[-1].path.rpartition('.')[2]}.depth"
            depth = Choice(list(range(len(run) + 1)), label=label)
            blocks = [_extract(b, modules, dyn_params, type(an.gm.get_submodule(b.path)).__name__, rewrites,
                               cut_modules)
                      for b in run]
            target = run[0].path
            root[target] = Repeat(blocks, depth=depth)
            env[run[-1].out] = graph.call_module(target, (env[run[0].inp],))
            conversion.depths.append(DepthReport(label, [b.path for b in run], list(depth.values)))
        if n in in_run:
            continue
        env[n] = _copy_node(graph, n, env, modules, dyn_params, root, rewrites=rewrites, cuts=cut_modules)
    return fx.GraphModule(root, graph, class_name=type(an.gm).__name__)


def _copy_node(graph: fx.Graph, n: fx.Node, env: dict[fx.Node, fx.Node], modules: dict[str, Any],
               dyn_params: set[str], root: dict[str, Any], prefix: str = "", rewrites: dict | None = None,
               cuts: dict | None = None) -> fx.Node:
    rewrites, cuts = rewrites or {}, cuts or {}
    target = str(n.target)
    local = target[len(prefix) + 1:] if prefix and target.startswith(prefix + ".") else target
    if n in cuts:
        if cuts[n] is None:
            return None
        name, mod = cuts[n]
        root[name] = mod
        return graph.call_module(name, (env[n.args[0]],))
    if n.op == "get_attr" and target in dyn_params:
        new = graph.call_module(local, ())
        new.name = n.name
    elif n in rewrites and isinstance(rewrites[n], tuple):  # F.group_norm: the group count follows the width
        args = list(fx.map_arg(n.args, lambda a: env[a]))
        size = graph.call_method("size", (args[0], 1))
        args[1] = graph.call_function(operator.floordiv, (size, rewrites[n][1]))
        new = graph.create_node(n.op, n.target, tuple(args), fx.map_arg(n.kwargs, lambda a: env[a]), n.name)
        new.meta = dict(n.meta)
    elif n in rewrites:
        args = _minus_one(graph, fx.map_arg(n.args, lambda a: env[a]), rewrites[n])
        new = graph.create_node(n.op, n.target, args, fx.map_arg(n.kwargs, lambda a: env[a]), n.name)
        new.meta = dict(n.meta)
    else:
        new = graph.node_copy(n, lambda a: env[a])
        if n.op in ("call_module", "get_attr"):
            new.target = local
    if n.op in ("call_module", "get_attr"):
        root[local] = modules[target]
    return new


def _minus_one(graph: fx.Graph, args: tuple, j: int) -> tuple:
    """A reshape's arguments with its ``j``-th size written as ``-1`` (the size then follows the sample)."""
    x, rest = args[0], list(args[1:])
    if len(rest) == 1 and isinstance(rest[0], fx.Node):  # one torch.Size-like argument: rebuild the tuple
        sizes = rest[0]
        head = graph.call_function(operator.getitem, (sizes, slice(None, j)))
        tail = graph.call_function(operator.getitem, (sizes, slice(j + 1, None)))
        mid = graph.call_function(operator.add, (head, (-1,)))
        return (x, graph.call_function(operator.add, (mid, tail)))
    if len(rest) == 1 and isinstance(rest[0], (tuple, list)):
        seq = list(rest[0])
        seq[j] = -1
        return (x, type(rest[0])(seq))
    rest[j] = -1
    return (x, *rest)


def _extract(block: Block, modules: dict[str, Any], dyn_params: set[str], class_name: str,
             rewrites: dict, cuts: dict) -> fx.GraphModule:
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {block.inp: graph.placeholder("x")}
    root: dict[str, Any] = {}
    for n in block.nodes:
        env[n] = _copy_node(graph, n, env, modules, dyn_params, root, block.path, rewrites, cuts)
    graph.output(env[block.out])
    return fx.GraphModule(root, graph, class_name=class_name)
