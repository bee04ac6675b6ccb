"""Formats in ONNX: int8 QDQ reaches onnxruntime's integer kernels, every format's activation
quantizer exports to values onnxruntime reproduces, FP8 becomes FP8 QDQ at opset 19."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nasq.export.bundle import export_onnx
from nasq.formats import FORMATS, get_format

INTEGER_KERNELS = {"QLinearConv", "ConvInteger", "QLinearMatMul", "MatMulInteger"}


class _QDQConv(nn.Module):
    """int8 QDQ around a conv as onnxruntime's QDQ fusion wants it: Q/DQ on the input
    activation, per-channel Q/DQ on the weight, and a Q/DQ after the conv's output."""

    def __init__(self, linear: bool = False):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.linear = linear
        shape = (16, 32) if linear else (16, 8, 3, 3)
        self.weight = nn.Parameter(torch.randn(shape, generator=g) * 0.1)
        amax = self.weight.detach().abs().amax(dim=tuple(range(1, len(shape))))
        self.register_buffer("w_scale", amax / 127)
        self.register_buffer("w_zero", torch.zeros(shape[0], dtype=torch.int32))

    def forward(self, x):
        x = torch.fake_quantize_per_tensor_affine(x, 0.03, 0, -128, 127)
        w = torch.fake_quantize_per_channel_affine(self.weight, self.w_scale, self.w_zero, 0, -128, 127)
        y = F.linear(x, w) if self.linear else F.conv2d(x, w, None, 1, 1)
        return torch.fake_quantize_per_tensor_affine(y, 0.05, 0, -128, 127)


def _optimized_op_types(path, tmp_path, level) -> list[str]:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = level
    opts.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return [n.op_type for n in onnx.load(opts.optimized_model_filepath).graph.node]


def _export(module, example, path, opset=17):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's own deprecation notice
        torch.onnx.export(module.eval(), example, str(path), dynamo=False, opset_version=opset,
                          input_names=["x"], output_names=["y"])


@pytest.mark.parametrize("linear", [False, True], ids=["conv", "linear"])
@pytest.mark.parametrize("level", ["ORT_ENABLE_EXTENDED", "ORT_ENABLE_ALL"])
def test_int8_qdq_runs_integer_kernels(tmp_path, linear, level):
    module = _QDQConv(linear)
    example = torch.randn((4, 32) if linear else (1, 8, 10, 10), generator=torch.Generator().manual_seed(1))
    _export(module, example, tmp_path / "m.onnx")
    before = {n.op_type for n in onnx.load(str(tmp_path / "m.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= before and not before & INTEGER_KERNELS
    ops = _optimized_op_types(tmp_path / "m.onnx", tmp_path, getattr(ort.GraphOptimizationLevel, level))
    assert set(ops) & INTEGER_KERNELS, f"no integer kernel in the optimised graph: {ops}"
    assert "Conv" not in ops and "MatMul" not in ops and "Gemm" not in ops  # no float compute left


class _ActQuant(nn.Module):
    def __init__(self, name: str, amax: float):
        super().__init__()
        self.fmt = get_format(name)
        self.register_buffer("amax", torch.tensor(amax))

    def forward(self, x):
        return self.fmt.export_activation(x, self.amax)


def _run(path, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"images": x})[0]


@pytest.mark.parametrize("name", [n for n in FORMATS.names() if not get_format(n).is_identity])
def test_activation_quantizer_exports_exactly(tmp_path, name):
    """Traced with one image, run on three (the batch axis is dynamic): onnxruntime gives the
    fake-quantized values. int8 is QDQ, where onnxruntime divides by the scale while torch
    multiplies by its reciprocal: a tie may round apart, so it may differ by one step."""
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(3, 8, 5, 7, generator=gen) * torch.logspace(-3, 1, 8).reshape(1, 8, 1, 1)
    amax = float(x.abs().amax()) * 0.8  # calibrated on other data: this batch saturates
    module = _ActQuant(name, amax)
    export_onnx(module, x[:1], tmp_path / "a.onnx")
    got = _run(tmp_path / "a.onnx", x.numpy())
    want = get_format(name).quantize(x, torch.tensor(amax)).numpy()
    fmt = get_format(name)
    if fmt.export_mode == "qdq_int8":
        step = amax / fmt.qmax
        assert np.abs(got - want).max() <= step * 1.0001 and np.mean(got != want) < 1e-3
    else:
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("name,onnx_type", [("fp8_e4m3", "FLOAT8E4M3FN"), ("fp8_e5m2", "FLOAT8E5M2")])
def test_fp8_activation_is_fp8_qdq_at_opset_19(tmp_path, name, onnx_type):
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 4, 6, 6, generator=gen) * torch.logspace(-4, 2, 4).reshape(1, 4, 1, 1)
    amax = float(x.abs().amax()) * 0.5
    export_onnx(_ActQuant(name, amax), x[:1], tmp_path / "f.onnx", opset=19)
    model = onnx.load(str(tmp_path / "f.onnx"))
    onnx.checker.check_model(model)
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("QuantizeLinear") == 1 and ops.count("DequantizeLinear") == 1
    q_types = {t.tensor_type.elem_type for t in _value_types(model)}
    assert getattr(onnx.TensorProto, onnx_type) in q_types
    want = get_format(name).quantize(x, torch.tensor(amax)).numpy()
    np.testing.assert_array_equal(_run(tmp_path / "f.onnx", x.numpy()), want)


def _value_types(model):
    """Types of the graph's values after shape inference (the QuantizeLinear output among them)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    return [v.type for v in inferred.graph.value_info]
