"""The learned predictor reads any ONNX model: transformers, hybrids, grouped/gated and concat-heavy CNNs, as torch's
exporter writes them (static and with a dynamic batch axis) and as other exporters do (onnx.helper graphs with
Gemm transB, broadcasting 3-D/4-D MatMul, com.microsoft ops).

References are independent of the reader: the node counts of the exported ONNX graph (every Conv, MatMul and
Gemm becomes a kernel), the shapes ONNX Runtime itself reports for each node it runs (its profiler), numpy's
broadcasting for MatMul, and the prediction of the same model exported with static shapes.
"""

from __future__ import annotations

import sys
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import lookalikes as la  # noqa: E402

from hwnas.hw.session import export_onnx  # noqa: E402
from hwnas.predict import load_predictor, predict_latency  # noqa: E402
from hwnas.predict.onnx_graph import ShapeError, UnknownOpError  # noqa: E402
from hwnas.predict.whole import onnx_kernels  # noqa: E402


@pytest.fixture(scope="module")
def predictor():
    return load_predictor(device="cpu-ort-1t")


def _small_models() -> dict[str, tuple[torch.nn.Module, torch.Tensor]]:
    """Small versions of the look-alikes (seconds to export)."""
    torch.manual_seed(0)
    mobilevit = torch.nn.Sequential(la._cbn(3, 16, 3, 2), la.MV2(16, 32, 2), la.MobileViTBlock(32, 48, 1))
    levit = torch.nn.Sequential(la._cbn(3, 64, 3, 4, act=torch.nn.Hardswish), torch.nn.Flatten(2),
                                _Transpose(), la.LeViTStage(64, 16, 2, 1, 8))
    return {
        "vit": (la.ViT(img=64, patch=16, dim=64, depth=2, heads=2, classes=10), torch.randn(1, 3, 64, 64)),
        "bert": (la.Bert(vocab=500, dim=64, depth=2, heads=2), torch.randint(1, 500, (1, 32))),
        "mobilevit": (mobilevit, torch.randn(1, 3, 64, 64)),
        "levit": (levit, torch.randn(1, 3, 32, 32)),
        "se_grouped": (torch.nn.Sequential(la._cbn(3, 32, 3, 2), la.SEGroupBlock(32, 64, 2, 16)),
                       torch.randn(1, 3, 64, 64)),
        "dense": (torch.nn.Sequential(la._cbn(3, 32, 3, 2), la.DenseBlock(32, 4, 16)), torch.randn(1, 3, 48, 48)),
    }


class _Transpose(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(1, 2)


def _export(model, x, path: Path, dynamic: bool) -> Path:
    if not dynamic:
        return export_onnx(model, x, path)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (x,), str(path), dynamo=False, opset_version=17, input_names=["input"],
                          dynamic_axes={"input": {0: "batch"}})
    return path


def _compute_nodes(path: Path) -> Counter:
    """Conv and MatMul/Gemm nodes of the exported graph: the independent count of compute kernels."""
    c = Counter()
    for n in onnx.load(str(path)).graph.node:
        if n.op_type == "Conv":
            c["conv"] += 1
        elif n.op_type in ("MatMul", "Gemm"):
            c["gemm"] += 1
    return c


@pytest.mark.parametrize("name", ["vit", "bert", "mobilevit", "levit", "se_grouped", "dense"])
def test_torch_exports_read_static_and_dynamic(name, predictor, tmp_path):
    model, x = _small_models()[name]
    totals = []
    for dynamic in (False, True):
        path = _export(model, x, tmp_path / f"{name}_{dynamic}.onnx", dynamic)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rec = predict_latency(path, predictor=predictor)
        assert np.isfinite(rec.total_ms) and rec.total_ms > 0
        kinds = Counter("conv" if s.startswith("conv|") else "gemm" if s.split("|")[0] in ("linear", "matmul")
                        else "other" for s in rec.layers["signature"] if isinstance(s, str) and "|in=" in s)
        ref = _compute_nodes(path)
        assert kinds["conv"] == ref["conv"], (name, dynamic, kinds, ref)
        assert kinds["gemm"] == ref["gemm"], (name, dynamic, kinds, ref)
        assert (rec.layers["predicted_ms"] > 0).all()
        totals.append(rec.total_ms)
    # a dynamic batch axis is bound to 1: the same kernels as the static export
    assert totals[1] == pytest.approx(totals[0], rel=1e-9)


def test_dynamic_batch_bound_from_dummy_input(predictor, tmp_path):
    model, x = _small_models()["vit"]
    path = _export(model, x, tmp_path / "vit.onnx", dynamic=True)
    one = onnx_kernels(path)
    four = onnx_kernels(path, dummy_input=torch.randn(4, 3, 64, 64))
    assert len(one) == len(four)
    lin1 = [r["signature"] for r in one if r["signature"].startswith("linear")]
    lin4 = [r["signature"] for r in four if r["signature"].startswith("linear")]
    # the patch tokens of 4 images: 4x the rows of every Linear (out shape's leading dims)
    rows = [int(np.prod([int(d) for d in s.split("|out=")[1].split("|")[0].split("x")[:-1]])) for s in lin1]
    rows4 = [int(np.prod([int(d) for d in s.split("|out=")[1].split("|")[0].split("x")[:-1]])) for s in lin4]
    assert rows4 == [4 * r for r in rows]


def test_symbolic_sequence_needs_an_input(tmp_path):
    model, ids = _small_models()["bert"]
    path = tmp_path / "bert_seq.onnx"
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (ids,), str(path), dynamo=False, opset_version=17, input_names=["ids"],
                          dynamic_axes={"ids": {0: "batch", 1: "seq"}})
    with pytest.raises(ShapeError, match="dummy_input"):
        onnx_kernels(path)
    rows = onnx_kernels(path, dummy_input=torch.randint(1, 500, (1, 48)))
    mm = [r["signature"] for r in rows if r["signature"].startswith("matmul")]
    assert mm and all("x48x48" in s for s in mm if "tb=1" in s)  # Q K^T over 48 tokens


def test_kernel_shapes_match_ort_profile(tmp_path):
    """Every kernel's output shape is the one ONNX Runtime reports for that node when it runs the model."""
    from hwnas.hw.profiling import profile_run

    model, x = _small_models()["vit"]
    path = export_onnx(model, x, tmp_path / "vit.onnx")
    rows = onnx_kernels(path)
    prof = profile_run(path, "cpu-ort-1t", x.numpy(), runs=2, warmup=1).nodes
    shapes = {n: o for n, o in zip(prof["node"], prof["output_shapes"])}
    checked = 0
    for r in rows:
        if r["node"] in shapes and not r["signature"].startswith("conv"):  # NCHWc convolutions run blocked
            out = [int(d) for d in r["signature"].split("|out=")[1].split("|")[0].split("x")]
            got = shapes[r["node"]][0]
            assert int(np.prod(out)) == int(np.prod(got)), (r, got)  # Gemm after ORT's reshape: same elements
            checked += 1
    assert checked >= 0.8 * len(rows)


def _helper_model(path: Path, extra_nodes=(), extra_inits=(), opsets=(("", 17),)) -> Path:
    """Another exporter's style: Gemm with transB, MatMul 3-D x 2-D weight, batched 4-D x 3-D broadcasting
    MatMul, Softmax, LayerNormalization and GELU in its Erf form."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((32, 16)).astype(np.float32), "w_gemm"),  # transB: N x K
             numpy_helper.from_array(np.zeros(32, np.float32), "b_gemm"),
             numpy_helper.from_array(rng.standard_normal((16, 24)).astype(np.float32), "w_mm"),
             numpy_helper.from_array(np.ones(24, np.float32), "ln_s"), numpy_helper.from_array(np.zeros(24, np.float32),
                                                                                                  "ln_b"),
             numpy_helper.from_array(np.array(np.sqrt(2.0), np.float32), "c_sqrt"),
             numpy_helper.from_array(np.array(1.0, np.float32), "c_one"),
             numpy_helper.from_array(np.array(0.5, np.float32), "c_half"),
             numpy_helper.from_array(rng.standard_normal((3, 24, 8)).astype(np.float32), "w_b3"), *extra_inits]
    nodes = [helper.make_node("Gemm", ["x2", "w_gemm", "b_gemm"], ["g"], transB=1, name="gemm_tb"),
             helper.make_node("MatMul", ["x3", "w_mm"], ["m3"], name="mm_3d"),
             helper.make_node("LayerNormalization", ["m3", "ln_s", "ln_b"], ["ln"], axis=-1, name="ln"),
             helper.make_node("Div", ["ln", "c_sqrt"], ["e0"], name="gelu_scale"),
             helper.make_node("Erf", ["e0"], ["e1"], name="gelu_erf"),
             helper.make_node("Add", ["e1", "c_one"], ["e2"], name="gelu_add"),
             helper.make_node("Mul", ["ln", "e2"], ["e3"], name="gelu_mul"),
             helper.make_node("Mul", ["e3", "c_half"], ["gelu"], name="gelu_half"),
             helper.make_node("Unsqueeze", ["gelu", "axes1"], ["g4"], name="unsq"),
             helper.make_node("MatMul", ["g4", "w_b3"], ["bm"], name="mm_bcast"),  # (2,1,5,24) x (3,24,8)
             helper.make_node("Softmax", ["bm"], ["sm"], axis=-1, name="softmax"), *extra_nodes]
    inits.append(numpy_helper.from_array(np.array([1], np.int64), "axes1"))
    outs = [helper.make_tensor_value_info("g", TensorProto.FLOAT, None),
            helper.make_tensor_value_info("sm", TensorProto.FLOAT, None)]
    outs += [helper.make_tensor_value_info(n.output[0], TensorProto.FLOAT, None) for n in extra_nodes]
    graph = helper.make_graph(nodes, "other_exporter", [
        helper.make_tensor_value_info("x2", TensorProto.FLOAT, ["batch", 16]),
        helper.make_tensor_value_info("x3", TensorProto.FLOAT, [2, 5, 16])], outs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_helper_built_graph(predictor, tmp_path):
    path = _helper_model(tmp_path / "h.onnx")
    rows = {r["layer"]: r["signature"] for r in onnx_kernels(path)}
    sigs = list(rows.values())
    assert "linear|in=1x16|out=1x32|act=none" in sigs  # Gemm transB: 32 outputs, batch bound to 1
    assert any(s.startswith("linear|in=2x5x16|out=2x5x24") or s.startswith("linear|in=10x16|out=10x24")
               for s in sigs)
    want = np.matmul(np.zeros((2, 1, 5, 24)), np.zeros((3, 24, 8))).shape  # numpy's broadcasting
    assert any(s.startswith("matmul|") and f"out={'x'.join(map(str, want))}" in s for s in sigs), sigs
    assert any(s.startswith(("layer_norm|", "skip_layer_norm|")) for s in sigs)
    assert any(s.startswith("gelu|") for s in sigs)  # ORT fuses the Erf formulation into Gelu
    assert any(s.startswith("softmax|") for s in sigs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rec = predict_latency(path, predictor=predictor)
    assert np.isfinite(rec.total_ms) and rec.total_ms > 0


def test_contrib_ops(predictor, tmp_path):
    """com.microsoft Gelu and MultiHeadAttention, which ONNX's own inference does not know."""
    nodes = [helper.make_node("Gelu", ["m3"], ["cg"], domain="com.microsoft", name="ms_gelu"),
             helper.make_node("MultiHeadAttention", ["m3", "m3", "m3"], ["mha"], domain="com.microsoft",
                              num_heads=4, name="ms_mha")]
    path = _helper_model(tmp_path / "ms.onnx", nodes, opsets=(("", 17), ("com.microsoft", 1)))
    import onnxruntime as ort

    out = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {"x2": np.zeros((1, 16), np.float32), "x3": np.zeros((2, 5, 16), np.float32)})
    rows = onnx_kernels(path)
    mha = [r["signature"] for r in rows if r["node"] == "ms_mha"]
    assert [s.split("|")[0] for s in mha] == ["matmul", "softmax", "matmul"]
    assert f"out={'x'.join(map(str, (2, 4, 5, 6)))}" in mha[-1]  # per head: 24 / 4 = 6
    assert out[3].shape == (2, 5, 24)
    assert any(r["node"] == "ms_gelu" and r["signature"].startswith("gelu|in=2x5x24") for r in rows)


def test_unknown_op_is_a_clear_error(tmp_path):
    nodes = [helper.make_node("Hardmax", ["sm"], ["hm"], name="my_hardmax")]
    path = _helper_model(tmp_path / "hardmax.onnx", nodes)
    with pytest.raises(UnknownOpError, match=r"my_hardmax.*'Hardmax'.*ELTWISE_NAMES"):
        onnx_kernels(path)


def test_training_models_cover_transformers(tmp_path):
    from hwnas.predict.generator import build_model, config_input, random_config
    from hwnas.predict.train import model_signatures

    seen = Counter()
    for style in ("vit", "seq"):
        cfg = random_config(np.random.default_rng([5, len(style)]), style, max_macs=1e8, min_macs=1e6)
        torch.manual_seed(0)
        seen.update(s.split("|")[0] for s in model_signatures(build_model(cfg), config_input(cfg)))
    for op in ("matmul", "softmax", "layer_norm", "linear", "conv"):
        assert seen[op] > 0, seen


def test_matmul_kernel_macs_equal_fvcore(tmp_path):
    """The multiply-adds of attention's batched matmuls as read from ONNX, against fvcore's count."""
    from conftest import fvcore_flops

    from hwnas.predict.features import kernel_flops

    class QK(torch.nn.Module):
        def forward(self, q, k):
            return torch.matmul(q, k.transpose(-1, -2))

    q, k = torch.randn(2, 3, 17, 8), torch.randn(2, 3, 17, 8)
    path = tmp_path / "qk.onnx"
    export_onnx(QK(), (q, k), path)
    (row,) = [r for r in onnx_kernels(path) if r["signature"].startswith("matmul")]
    assert kernel_flops(row["signature"]) == fvcore_flops(QK(), (q, k))


def test_multihead_attention_layout(tmp_path):
    """``nn.MultiheadAttention`` exports (L, N, E) tensors; ORT folds their transposes into FusedMatMul's
    transBatch attributes: the attention matmuls are still (1, heads, L, L) and (1, heads, L, d)."""
    from hwnas import zoo

    torch.manual_seed(0)
    model, x = zoo.create("vit_tiny", image_size=64).eval(), torch.randn(1, 3, 64, 64)
    path = export_onnx(model, x, tmp_path / "mha.onnx")
    mm = [r["signature"] for r in onnx_kernels(path) if r["signature"].startswith("matmul")]
    heads, tokens = model.blocks[0].attention.num_heads, (64 // 16) ** 2 + 1
    assert mm and all(f"out=1x{heads}x{tokens}x" in s for s in mm), mm
    assert sum(f"out=1x{heads}x{tokens}x{tokens}|" in s for s in mm) == len(mm) // 2
