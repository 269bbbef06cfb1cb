"""Devices from configuration: register_device with any ONNX Runtime provider and its options, device files
(JSON/TOML, the CLI's --device-file), fingerprints that cover the provider and its options, clear errors for a
provider that is not installed (no agent needed; fast)."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch

from hwnas.hw import device as devmod
from hwnas.hw.device import (
    Device,
    fingerprint,
    fingerprint_matches,
    get_device,
    load_device_file,
    register_device,
)
from hwnas.hw.session import create_session, export_onnx


@pytest.fixture(autouse=True)
def _restore_registry():
    saved = dict(devmod._REGISTRY)
    yield
    devmod._REGISTRY.clear()
    devmod._REGISTRY.update(saved)


def test_register_device_by_name_with_fields():
    dev = register_device("t-cpu-3t", threads=3, graph_optimization="basic", allow_spinning=False,
                          description="three threads")
    assert get_device("t-cpu-3t") is dev and dev.intra_op_threads == 3 and dev.provider == "CPUExecutionProvider"
    so = dev.session_options()  # what ONNX Runtime is given
    assert so.intra_op_num_threads == 3 and so.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    assert register_device("t-cpu-3t", threads=3, graph_optimization="basic", allow_spinning=False,
                           description="three threads") == dev  # the same configuration again is fine
    with pytest.raises(ValueError, match="already registered"):
        register_device("t-cpu-3t", threads=4)
    with pytest.raises(ValueError, match="unknown field"):
        register_device("t-bad", thread=2)
    with pytest.raises(ValueError, match="ExecutionProvider"):
        register_device("t-bad", provider="cuda")


def test_provider_options_are_string_pairs_and_in_the_fingerprint():
    a = Device("t-ov", provider="OpenVINOExecutionProvider", provider_options={"num_of_threads": 4,
                                                                                "device_type": "CPU"})
    assert a.provider_options == (("device_type", "CPU"), ("num_of_threads", "4"))
    assert a.providers() == [("OpenVINOExecutionProvider", {"device_type": "CPU", "num_of_threads": "4"})]
    b = a.replace(name="t-ov2", provider_options={"device_type": "GPU"})
    fa, fb = fingerprint(a), fingerprint(b)
    assert fa["provider"] == "OpenVINOExecutionProvider" and fa["provider_options"] == [["device_type", "CPU"],
                                                                                          ["num_of_threads", "4"]]
    assert any("provider options" in d for d in fingerprint_matches(fa, fb))
    assert not fingerprint_matches(fa, json.loads(json.dumps(fa)))  # a LUT file's copy matches
    with pytest.raises(ValueError, match="provider option"):
        Device("t-x", provider_options={"a": [1, 2]})


@pytest.mark.parametrize("provider, package", [("CUDAExecutionProvider", "onnxruntime-gpu"),
                                               ("OpenVINOExecutionProvider", "onnxruntime-openvino"),
                                               ("TensorrtExecutionProvider", "onnxruntime-gpu")])
def test_missing_provider_names_the_package(provider, package, tmp_path):
    if provider in ort.get_available_providers():
        pytest.skip(f"{provider} is installed here")
    dev = Device("t-missing", provider=provider)
    with pytest.raises(RuntimeError, match=package) as e:
        dev.check_available()
    assert "only has" in str(e.value) and "CPUExecutionProvider" in str(e.value)
    path = export_onnx(torch.nn.Conv2d(1, 2, 3), torch.randn(1, 1, 8, 8), tmp_path / "c.onnx")
    with pytest.raises(RuntimeError, match=package):
        create_session(path, dev)


def test_unknown_provider_is_a_spelling_error():
    with pytest.raises(RuntimeError, match="does not know"):
        Device("t-typo", provider="CudaExecutionProvider").check_available()


def test_gpu_fingerprint_only_for_gpu_providers(monkeypatch):
    monkeypatch.setattr(devmod, "_gpu", lambda: {"gpu_name": "Test GPU", "gpu_driver": "1.0"})
    assert fingerprint(Device("t-cuda", provider="CUDAExecutionProvider"))["gpu_name"] == "Test GPU"
    assert "gpu_name" not in fingerprint(Device("t-cpu"))
    a = fingerprint(Device("t-cuda", provider="CUDAExecutionProvider"))
    assert fingerprint_matches(a, {**a, "gpu_driver": "2.0"}) == ["GPU driver: '1.0' != '2.0'"]


def test_device_files_json_and_toml(tmp_path):
    (tmp_path / "d.json").write_text(json.dumps({"devices": [
        {"name": "t-json-2t", "threads": 2, "graph_optimization": "extended"},
        {"name": "t-json-ov", "provider": "OpenVINOExecutionProvider", "provider_options": {"device_type": "CPU"}}]}))
    (tmp_path / "d.toml").write_text('[[device]]\nname = "t-toml-3t"\nthreads = 3\nallow_spinning = false\n'
                                     '[device.provider_options]\nx = 1\n')
    a, b = load_device_file(tmp_path / "d.json")
    assert (a.intra_op_threads, a.graph_optimization) == (2, "extended")
    assert b.provider_options == (("device_type", "CPU"),)
    (c,) = load_device_file(tmp_path / "d.toml")
    assert get_device("t-toml-3t") is c and c.intra_op_threads == 3 and not c.allow_spinning
    (tmp_path / "bad.toml").write_text("[[device]]\nthreads = 2\n")
    with pytest.raises(ValueError, match="no \"name\""):
        load_device_file(tmp_path / "bad.toml")
    (tmp_path / "bad.json").write_text('{"devices": [{"name": "t-b", "threads": 0}]}')
    with pytest.raises(ValueError, match="t-b.*intra_op_threads must be an int >= 1"):
        load_device_file(tmp_path / "bad.json")
    (tmp_path / "junk.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_device_file(tmp_path / "junk.json")
    with pytest.raises(FileNotFoundError, match="device file"):
        load_device_file(tmp_path / "none.toml")


def test_cli_device_file(tmp_path, capsys):
    from hwnas.cli import main

    (tmp_path / "d.toml").write_text('[[device]]\nname = "t-cli-2t"\nthreads = 2\ndescription = "from a file"\n')
    assert main(["--device-file", str(tmp_path / "d.toml"), "device", "list"]) == 0
    out = capsys.readouterr().out
    assert any(line.strip("│| ").startswith("t-cli-2t ") and "2 thread(s)" in line for line in out.splitlines())
    assert main(["--device-file", str(tmp_path / "no.toml"), "device", "list"]) == 2
    assert "device file" in capsys.readouterr().err


def test_configured_device_measures_with_its_threads(tmp_path):
    """A registered device opens sessions with its own settings, and they compute what the default device does."""
    register_device("t-2t", threads=2)
    x = torch.randn(1, 512)
    path = export_onnx(torch.nn.Linear(512, 2048), x, tmp_path / "l.onnx")
    s1, s2 = create_session(path, "cpu-ort-1t"), create_session(path, "t-2t")
    feed = {"input": x.numpy()}
    assert np.allclose(s1.run(None, feed)[0], s2.run(None, feed)[0], atol=1e-5)


@pytest.mark.parametrize("level, fused", [("all", True), ("extended", True), ("basic", False)])
def test_fusion_is_read_from_the_optimised_model(tmp_path, level, fused):
    """fused_nodes reads what ORT fused from the model it writes (optimized_model_filepath): against the exported
    model's own nodes, Conv+Relu and Gemm+Relu are one group each from the 'extended' level on, separate below."""
    import onnx

    from hwnas.hw.profiling import fused_nodes, optimized_graph

    m = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                            torch.nn.Linear(8 * 6 * 6, 10), torch.nn.ReLU())
    path = export_onnx(m, torch.randn(1, 3, 8, 8), tmp_path / "m.onnx")
    original = onnx.load(str(path))
    names = {n.op_type + str(i): n.name for i, n in enumerate(original.graph.node)}
    groups = [sorted(orig) for _, orig in fused_nodes(original, optimized_graph(path, Device("t", graph_optimization=level)))]
    assert sorted(n for g in groups for n in g) == sorted(names.values())  # every original node, once
    conv_relu = sorted([names["Conv0"], names["Relu1"]])
    gemm_relu = sorted([names["Gemm3"], names["Relu4"]])
    assert (conv_relu in groups and gemm_relu in groups) == fused
    if not fused:
        assert [names["Conv0"]] in groups and [names["Relu1"]] in groups
