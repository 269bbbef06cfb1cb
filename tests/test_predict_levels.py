"""The predictor reads a model for a device below ORT's "extended" optimisation level.

At ``graph_optimization="basic"`` ORT keeps the Sigmoid and Mul of a SiLU that the extended fusions merge into
one QuickGelu, so the graph it runs has tensors the shape source (the extended graph) lacks; each node must
still be costed. (``hwnas adapt`` to such a device failed on its own generator's models before.)
"""

from hwnas.hw import Device
from hwnas.hw.profiling import optimized_graph
from hwnas.predict.train import export_training_model
from hwnas.predict.whole import onnx_kernels

# a generator model (hwnas.predict.generator's format) whose head is a 1x1 convolution with a SiLU
CFG = {"input": [1, 3, 32, 32], "style": "shuffle",
       "blocks": [["conv", 3, 16, 3, 2, "relu", True], ["shuffle", 16, 16, 1]],
       "head": {"pool": "avg", "fcs": [10], "act": "relu", "conv": 24, "conv_act": "silu"}}


def test_basic_level_costs_the_nodes_ort_runs(tmp_path):
    path, x = export_training_model(CFG, tmp_path / "m.onnx")
    basic = Device("test-basic-level", intra_op_threads=1, graph_optimization="basic")
    ran = optimized_graph(path, basic)
    sigmoids = {n.name for n in ran.graph.node if n.op_type == "Sigmoid"}
    assert sigmoids, "ORT fused the SiLU at the basic level: the case this test is about is gone"
    rows = onnx_kernels(path, basic, x)
    costed = {r["node"] for r in rows}
    # ORT's own graph is the reference: every convolution, Gemm and Sigmoid it runs has a kernel row
    assert {n.name for n in ran.graph.node if n.op_type in ("Conv", "Gemm", "Sigmoid")} <= costed
    assert sigmoids <= costed
