"""Devices, ONNX Runtime measurement, kernels and latency lookup tables."""
