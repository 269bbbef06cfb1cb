"""The cost-table engine behind every profiler.

Each op's cost is a small table over the few labels it depends on (an
:class:`~hwnas.graph.larray.LArray`, already multiplied by the op's activity). Tables over the same
labels, or over a subset of another table's labels, are summed into one, so a whole space becomes a
handful of arrays plus a constant. Then:

- ``profile(sample)`` is one gather per table: a generated Python function that turns the sample's
  values into indices and adds the table cells (a few microseconds).
- ``profile_batch(indices[N, L])`` is the same gather, vectorised in numpy.
- ``expectation(probs)`` is exact under independent per-label distributions:
  ``sum_t einsum(table_t, p_a, p_b, ...)``, and differentiable when the probabilities are torch tensors.
- ``extreme(largest)`` is the exact largest (or smallest) total over all subnets and a sample reaching it,
  by max-sum variable elimination over the tables (each label eliminated by maximising the sum of the
  tables that read it), not a guess from the "largest" choice of every label, which need not be largest
  in every metric (operator choices, depth masking the other labels).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from hwnas.graph.larray import LArray
from hwnas.space.choice import Choice
from hwnas.space.space import validate_sample

__all__ = ["CostModel"]

_BOOLS = (bool, np.bool_)


def _bool_risk(values: Sequence[Any]) -> bool | None:
    """For a label's values: None when no bool can be mistaken for one of them (no 0 or 1, or a mix of bools and
    numbers, which validation sorts out), else whether they are bools (then only bools are valid; else none)."""
    numbers = [v for v in values if isinstance(v, (int, float, np.bool_, np.integer, np.floating))]
    if len(numbers) != len(values) or not any(v in (0, 1) for v in numbers):
        return None
    bools = [isinstance(v, _BOOLS) for v in values]
    return bools[0] if all(b == bools[0] for b in bools) else None


class CostModel:
    """Sum of cost tables over a space's labels.

    Args:
        choices: the space's labels and choices (this fixes the index order of samples).
        costs: per-op costs, each a number or an :class:`LArray` over some of the labels.
    """

    def __init__(self, choices: dict[str, Choice], costs: Iterable[Any]):
        self.choices = dict(choices)
        self.labels: tuple[str, ...] = tuple(choices)
        self.position = {lab: i for i, lab in enumerate(self.labels)}
        self.sizes = {lab: len(c.values) for lab, c in choices.items()}
        self.value_index = [{v: i for i, v in enumerate(c.values)} for c in choices.values()]
        # per label: None when no bool equals a value, else whether its values are bools
        self._bool_risk = [_bool_risk(c.values) for c in choices.values()]
        const = 0.0
        groups: dict[tuple[str, ...], np.ndarray] = {}
        for cost in costs:
            if isinstance(cost, LArray) and cost.labels:
                unknown = [lab for lab in cost.labels if lab not in self.position]
                if unknown:
                    raise ValueError(f"a cost depends on labels {unknown} that the space does not have.")
                key = tuple(sorted(cost.labels, key=self.position.__getitem__))
                arr = np.asarray(cost.expand_to(key, self.sizes), dtype=np.float64)
                groups[key] = groups[key] + arr if key in groups else arr.copy()
            else:
                const += float(cost.data.item() if isinstance(cost, LArray) else cost)
        self.const = const
        self.tables = self._merge(groups)
        self._compile()
        self._torch_cache: dict[Any, list] = {}

    # ------------------------------------------------------------------ construction
    def _merge(self, groups: dict[tuple[str, ...], np.ndarray]) -> list[tuple[tuple[str, ...], np.ndarray]]:
        """Fold every table whose labels are a subset of a larger table's labels into that table."""
        keys = sorted(groups, key=len, reverse=True)
        merged: dict[tuple[str, ...], np.ndarray] = {}
        for key in keys:
            host = next((k for k in merged if set(key) <= set(k)), None)
            if host is None:
                merged[key] = groups[key]
            else:
                shape = [self.sizes[lab] if lab in key else 1 for lab in host]
                merged[host] = merged[host] + groups[key].reshape(shape)
        return list(merged.items())

    def _compile(self) -> None:
        """Generate the single-sample function: values -> indices -> table cells -> sum."""
        ns: dict[str, Any] = {"C": self.const, "N": len(self.labels), "B": _BOOLS}
        lines = ["def profile(s):", "    if len(s) != N: raise KeyError"]
        for i in range(len(self.labels)):
            ns[f"V{i}"], ns[f"K{i}"] = self.value_index[i], self.labels[i]
            kind = self._bool_risk[i]
            if kind is None:  # no value a bool equals (0/1/True/False): the dict lookup alone is exact
                lines.append(f"    i{i} = V{i}[s[K{i}]]")
            else:  # True == 1 and hash(True) == hash(1): check the type (validate_sample then explains)
                lines.append(f"    v{i} = s[K{i}]")
                lines.append(f"    if v{i}.__class__ {'not in' if kind else 'in'} B: raise TypeError")
                lines.append(f"    i{i} = V{i}[v{i}]")
        terms = ["C"]
        self._flat = []
        for t, (key, arr) in enumerate(self.tables):
            strides = np.cumprod([1] + [self.sizes[lab] for lab in key[::-1]])[:-1][::-1]
            ns[f"T{t}"] = arr.ravel().tolist()
            index = " + ".join(f"i{self.position[lab]} * {int(st)}" for lab, st in zip(key, strides))
            terms.append(f"T{t}[{index}]")
            self._flat.append(([self.position[lab] for lab in key], [int(st) for st in strides], arr.ravel()))
        lines.append("    return " + " + ".join(terms))
        exec(compile("\n".join(lines), "<hwnas cost model>", "exec"), ns)  # code built from ints only
        self._fast = ns["profile"]

    # ------------------------------------------------------------------ evaluation
    def encode(self, sample: dict[str, Any]) -> np.ndarray:
        """The sample as an index vector in label order (validated)."""
        try:
            if len(sample) != len(self.labels):
                raise KeyError
            for i, lab in enumerate(self.labels):
                kind = self._bool_risk[i]
                if kind is not None and isinstance(sample[lab], _BOOLS) != kind:
                    raise TypeError
            return np.array([self.value_index[i][sample[lab]] for i, lab in enumerate(self.labels)], dtype=np.int64)
        except (KeyError, TypeError):
            validate_sample(self.choices, sample)
            raise

    def encode_batch(self, samples: Sequence[dict[str, Any]]) -> np.ndarray:
        """Samples as an ``[N, L]`` index array in label order."""
        return np.stack([self.encode(s) for s in samples]) if len(samples) else \
            np.zeros((0, len(self.labels)), dtype=np.int64)

    def decode(self, indices: Sequence[int]) -> dict[str, Any]:
        """An index vector back to a sample dict."""
        return {lab: self.choices[lab].values[int(i)] for lab, i in zip(self.labels, indices)}

    def profile(self, sample: dict[str, Any]) -> float:
        """The total cost of one sample."""
        try:
            return self._fast(sample)
        except (KeyError, TypeError):
            validate_sample(self.choices, sample)
            raise

    def profile_batch(self, samples: np.ndarray | Sequence[dict[str, Any]]) -> np.ndarray:
        """Total costs of many samples: an ``[N, L]`` integer index array (fastest) or a list of dicts."""
        if isinstance(samples, np.ndarray):
            idx = samples
            if idx.ndim != 2 or idx.shape[1] != len(self.labels):
                raise ValueError(f"profile_batch expects indices of shape [N, {len(self.labels)}] (one column per "
                                 f"label, in the order of .labels), got {idx.shape}.")
            if idx.size and (idx.min() < 0 or np.any(idx.max(axis=0) >= [self.sizes[lab] for lab in self.labels])):
                raise ValueError("profile_batch: an index is out of range for its label; encode samples with "
                                 ".encode_batch(samples).")
        else:
            idx = self.encode_batch(list(samples))
        cols = np.ascontiguousarray(idx.T, dtype=np.intp)  # one contiguous row per label
        total = np.full(idx.shape[0], self.const)
        for pos, strides, flat in self._flat:
            flat_index = cols[pos[0]] * strides[0]
            for p, st in zip(pos[1:], strides[1:]):
                flat_index += cols[p] * st
            total += flat.take(flat_index)
        return total

    def expectation(self, probs: dict[str, Any]) -> Any:
        """The exact expected cost when each label is drawn independently from ``probs[label]``.

        Args:
            probs: label -> probability vector over that label's choices (numpy array, list, or torch
                tensor; with torch tensors the result is a differentiable scalar tensor).
        """
        missing = [lab for lab in self.labels if lab not in probs]
        if missing:
            raise ValueError(f"expectation needs a probability vector for every label; missing {missing}.")
        for lab in self.labels:
            n = len(probs[lab])
            if n != self.sizes[lab]:
                raise ValueError(f"probs[{lab!r}] has {n} entries but label {lab!r} has {self.sizes[lab]} choices "
                                 f"{list(self.choices[lab].values)!r}.")
        if any(type(p).__module__.startswith("torch") for p in probs.values()):
            return self._expectation_torch(probs)
        total = self.const
        for key, arr in self.tables:
            operands: list[Any] = [arr, list(range(len(key)))]
            for i, lab in enumerate(key):
                operands += [np.asarray(probs[lab], dtype=np.float64), [i]]
            total += float(np.einsum(*operands, []))
        return total

    def extreme(self, largest: bool = True, max_cells: int = 20_000_000) -> tuple[float, dict[str, Any]]:
        """The exact largest (``largest=True``) or smallest total cost over every sample, and such a sample.

        Max-sum (min-sum) variable elimination: labels are eliminated one at a time, cheapest first, each by
        combining the tables that read it and keeping the best value for every choice of their other labels;
        the choices are recovered backwards. Exact whatever the tables; the work is bounded by the largest
        combined table, which stays small for spaces whose labels interact locally (stages, blocks).

        Raises:
            ValueError: a combined table would exceed ``max_cells`` (labels too entangled for exact search).
        """
        pick = np.max if largest else np.min
        arg = np.argmax if largest else np.argmin
        factors: list[tuple[tuple[str, ...], np.ndarray]] = [(k, a) for k, a in self.tables]
        remaining = [lab for lab in self.labels]
        trace: list[tuple[str, tuple[str, ...], np.ndarray]] = []
        def cost(lab: str, factors: list) -> int:
            scope = {x for k, _ in factors if lab in k for x in k} - {lab}
            return int(np.prod([self.sizes[x] for x in scope])) if scope else 1

        while remaining:
            lab = min(remaining, key=lambda lab_, f=factors: cost(lab_, f))
            remaining.remove(lab)
            mine = [(k, a) for k, a in factors if lab in k]
            factors = [(k, a) for k, a in factors if lab not in k]
            scope = tuple(x for x in self.labels if any(x in k for k, _ in mine))
            cells = int(np.prod([self.sizes[x] for x in scope])) if scope else 1
            if cells > max_cells:
                raise ValueError(f"exact extreme: eliminating label {lab!r} needs a table of {cells:,} cells over "
                                 f"{len(scope)} labels (limit {max_cells:,}); the labels interact too widely for "
                                 "exact search. Estimate from random samples instead.")
            joint = np.zeros([self.sizes[x] for x in scope])
            for k, a in mine:
                shape = [self.sizes[x] if x in k else 1 for x in scope]
                order = sorted(range(len(k)), key=lambda i: scope.index(k[i]))
                joint = joint + np.transpose(a, order).reshape(shape)
            axis = scope.index(lab) if lab in scope else None
            if axis is None:  # a label no table reads: any choice
                trace.append((lab, (), np.zeros((), dtype=np.int64)))
                continue
            rest = scope[:axis] + scope[axis + 1:]
            trace.append((lab, rest, arg(joint, axis=axis)))
            factors.append((rest, pick(joint, axis=axis)))
        total = self.const + sum(float(a) for _, a in factors)
        chosen: dict[str, int] = {}
        for lab, rest, best in reversed(trace):
            chosen[lab] = int(best[tuple(chosen[x] for x in rest)]) if rest else int(best)
        sample = self.decode([chosen[lab] for lab in self.labels])
        return total, sample

    def _expectation_torch(self, probs: dict[str, Any]) -> Any:
        import torch

        ref = next(p for p in probs.values() if isinstance(p, torch.Tensor))
        key_ = (ref.dtype, ref.device)
        if key_ not in self._torch_cache:
            self._torch_cache[key_] = [torch.as_tensor(arr, dtype=ref.dtype, device=ref.device)
                                       for _, arr in self.tables]
        total = torch.tensor(self.const, dtype=ref.dtype, device=ref.device)
        for (key, _), tab in zip(self.tables, self._torch_cache[key_]):
            operands: list[Any] = [tab, list(range(len(key)))]
            for i, lab in enumerate(key):
                operands += [torch.as_tensor(probs[lab], dtype=ref.dtype, device=ref.device), [i]]
            total = total + torch.einsum(*operands, [])
        return total
