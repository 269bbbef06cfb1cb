"""Export a subnet: a plain ``nn.Module`` with sliced weights, an ONNX file, an architecture JSON.

Example:
    >>> import torch, hwnas
    >>> space = hwnas.spaces.create("digits").eval()
    >>> sample = space.random_sample(0)
    >>> subnet = hwnas.export(space, sample)
    >>> x = torch.randn(2, 1, 8, 8)
    >>> torch.allclose(subnet(x), space.apply_arch(sample)(x), atol=1e-5)
    True
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import fx, nn

from hwnas.graph.subnet import export as _export_subnet
from hwnas.hw.device import OPSET
from hwnas.hw.session import export_onnx
from hwnas.io import atomic_write_bytes, atomic_write_json, read_json
from hwnas.space.arch_format import FORMATS, decode, encode
from hwnas.space.space import SampleError, Space, sample_from_json
from hwnas.space.space import apply_arch as _apply_sample

__all__ = ["export", "to_onnx", "save_arch", "load_arch", "apply_arch", "ONNX_OPSET"]

ONNX_OPSET = OPSET


def export(space: nn.Module, sample: dict[str, Any]) -> nn.Module:
    """The subnet ``sample`` of ``space`` as a plain PyTorch model (no hwnas class left).

    Weights are copied from the supernet's active slices, so the result computes exactly what the supernet
    computes under ``sample`` (:func:`hwnas.graph.subnet.export`). The subnet of a search space is named after
    the space with ``Subnet`` (``DigitsSpace`` -> ``DigitsSubnet``: it is not an instance of the space's class;
    a model of yours, converted or pruned, keeps its class's name), and
    every container lists its layers in the order the forward pass first uses them.
    """
    out = _export_subnet(space, sample)
    if isinstance(out, fx.GraphModule) and isinstance(space, Space):  # a converted model keeps its class's name
        name = type(space).__name__
        name = (name[:-5] if name.endswith("Space") and len(name) > 5 else name) + "Subnet"
        type(out).__name__ = type(out).__qualname__ = name
    for module in out.modules():
        if isinstance(module, fx.GraphModule):
            _order_children(module)
            if any(isinstance(node.type, str) for node in module.graph.nodes):
                # a string annotation (``x: "torch.Tensor"`` under ``from __future__ import annotations``) becomes
                # a global holding a str in the generated code, which torch.save cannot pickle
                for node in module.graph.nodes:
                    if isinstance(node.type, str):
                        node.type = None
                module.recompile()
    return out


def _order_children(gm: fx.GraphModule) -> None:
    """Reorder the submodules of ``gm`` (and of the plain containers fx made for dotted targets) by first use
    in its graph, so that printing the model reads top-down like its forward pass."""
    order: dict[str, int] = {}
    for node in gm.graph.nodes:
        if node.op in ("call_module", "get_attr"):
            parts = str(node.target).split(".")
            for i in range(1, len(parts) + 1):
                order.setdefault(".".join(parts[:i]), len(order))

    def reorder(module: nn.Module, prefix: str) -> None:
        keys = list(module._modules)
        rank = {k: order.get(prefix + k, len(order) + i) for i, k in enumerate(keys)}
        module._modules = {k: module._modules[k] for k in sorted(keys, key=rank.__getitem__)}
        for k, child in module._modules.items():
            if child is not None and type(child) is nn.Module:  # a container fx made for a dotted target
                reorder(child, f"{prefix}{k}.")

    reorder(gm, "")


def to_onnx(module: nn.Module, dummy_input: Any, path: str | os.PathLike, verify: bool = True,
            opset: int = ONNX_OPSET, atol: float = 1e-4, dynamic_batch: bool = False) -> Path:
    """Export ``module`` (in eval mode) to ONNX, check it with ``onnx.checker`` and, with ``verify``,
    run it in ONNX Runtime and compare with PyTorch.

    Args:
        module: the model, e.g. from :func:`export`.
        dummy_input: an input tensor (or a tuple of them) of the shape to export at.
        path: the ``.onnx`` file to write (atomically).
        verify: run the file in ONNX Runtime and compare with PyTorch (with ``dynamic_batch``, at the
            dummy's batch size and at twice it).
        opset: the ONNX opset.
        atol: allowed difference, relative to the output's scale.
        dynamic_batch: make the first axis of every input and output symbolic (``"batch"``), so that the file
            runs at any batch size.

    Raises:
        ValueError: ONNX Runtime's output differs from PyTorch's by more than ``atol`` (relative to the
            output's scale).
    """
    import onnx

    inputs = dummy_input if isinstance(dummy_input, tuple) else (dummy_input,)
    names = ["input"] if len(inputs) == 1 else [f"input_{i}" for i in range(len(inputs))]
    axes = None
    outputs = None
    if dynamic_batch:
        was = module.training
        module.eval()
        with torch.no_grad():
            out = module(*inputs)
        module.train(was)
        n_out = len(out) if isinstance(out, (tuple, list)) else 1
        outputs = ["output"] if n_out == 1 else [f"output_{i}" for i in range(n_out)]
        axes = {n: {0: "batch"} for n in names + outputs}
    path = Path(path)
    with tempfile.TemporaryDirectory(dir=path.parent if path.parent.is_dir() else None) as tmp:
        written = export_onnx(module, inputs, Path(tmp) / path.name, input_names=names, output_names=outputs,
                              opset=opset, dynamic_axes=axes)
        atomic_write_bytes(path, written.read_bytes())
    was_training = module.training
    module.eval()
    try:
        onnx.checker.check_model(onnx.load(str(path)))
        if verify:
            import onnxruntime as ort

            sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            batches = [inputs]
            if dynamic_batch:
                batches.append(tuple(torch.cat([t, t]) if isinstance(t, torch.Tensor) and t.dim() else t
                                     for t in inputs))
            for batch in batches:
                feed = {i.name: t.detach().cpu().numpy() for i, t in zip(sess.get_inputs(), batch)}
                got = sess.run(None, feed)[0]
                with torch.no_grad():
                    want = module(*batch)
                want = (want[0] if isinstance(want, (tuple, list)) else want).detach().cpu().numpy()
                scale = max(1.0, float(np.abs(want).max()))
                err = float(np.abs(got - want).max()) if got.shape == want.shape else float("inf")
                if err > atol * scale:
                    raise ValueError(f"ONNX Runtime's output for {str(path)!r} at batch {len(batch[0])} differs "
                                     f"from PyTorch's by {err:.3g} (allowed {atol * scale:.3g}; shapes "
                                     f"{tuple(got.shape)} and {tuple(want.shape)}); an op may export differently "
                                     f"at opset {opset}.")
    finally:
        module.train(was_training)
    return path


def apply_arch(space: nn.Module, arch: dict[str, Any], format: str | None = None) -> nn.Module:  # noqa: A002
    """Make ``space`` compute the subnet ``arch``, given by value, index or one-hot (see
    :mod:`hwnas.space.arch_format`; ``format=None`` detects it); returns ``space``."""
    sample = arch if format == "value" else decode(space, arch, format)
    return _apply_sample(space, sample)


def save_arch(sample: dict[str, Any], path: str | os.PathLike, format: str = "value",  # noqa: A002
              space: nn.Module | None = None) -> Path:
    """Write a sample as JSON (atomically): ``{"hwnas_arch": 1, "sample": {...}}``.

    ``format="index"`` or ``"onehot"`` (which need ``space``) writes ``{"hwnas_arch": 1, "format": ..., "arch":
    {...}}`` in that encoding instead.
    """
    if format == "value":
        return atomic_write_json(path, {"hwnas_arch": 1, "sample": dict(sample)})
    if format not in FORMATS:
        raise ValueError(f"save_arch: format must be one of {FORMATS}, got {format!r}.")
    if space is None:
        raise ValueError(f"save_arch: format={format!r} numbers each label's values, so it needs space= (the space "
                         "the sample belongs to).")
    return atomic_write_json(path, {"hwnas_arch": 1, "format": format, "arch": encode(space, sample, format)})


def load_arch(path: str | os.PathLike, space: nn.Module | None = None,
              format: str | None = None) -> dict[str, Any]:  # noqa: A002
    """Read a sample written by :func:`save_arch` (a bare JSON object of label -> value is accepted too).

    Index and one-hot files (hwnas's own, which name their format, or a bare object such as NNI's
    ``{"op": 1}`` with ``format="index"``) are decoded to values with ``space``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a folder, a binary file, invalid JSON, or (:class:`~hwnas.space.SampleError`) JSON that is
            not a label -> scalar object; each names the file. Validate the sample against its space with
            ``space.validate(sample)``.
    """
    where = f"architecture file {str(path)!r}"
    data = read_json(path, "architecture file")
    if isinstance(data, dict) and "hwnas_arch" in data:
        if "format" in data:
            format = format or data["format"]  # noqa: A001
            data = data.get("arch")
        else:
            data = data.get("sample")
    lists = [v for v in data.values() if isinstance(v, list)] if isinstance(data, dict) else []
    # one-hot / multi-hot lists hold only 0 and 1; another list (say [8]) is a malformed value, named as such below
    onehot = bool(lists) and all(v and all(x in (0, 1) and not isinstance(x, float) for x in v) for v in lists)
    encoded = format in ("index", "onehot") or (bool(lists) and (space is not None or onehot))
    if encoded:
        if space is None:
            raise SampleError(f"{where} holds an architecture by {format or 'one-hot'} index; pass space= to "
                              "load_arch to decode it to values.")
        return decode(space, data, format, where)
    sample = sample_from_json(data, where)
    return decode(space, sample, "value", where) if space is not None else sample
