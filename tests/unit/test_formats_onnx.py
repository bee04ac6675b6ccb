"""Formats in ONNX: int8 QDQ reaches onnxruntime's integer kernels, every format's activation
quantizer exports to values onnxruntime reproduces, FP8 activations become branch-free elementwise
rounding, bit for bit torch's cast on adversarial values (onnxruntime and OpenVINO), or FP8 QDQ at
opset 19 on request."""

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
def test_fp8_activation_is_fp8_qdq_at_opset_19_on_request(tmp_path, name, onnx_type):
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 4, 6, 6, generator=gen) * torch.logspace(-4, 2, 4).reshape(1, 4, 1, 1)
    amax = float(x.abs().amax()) * 0.5
    export_onnx(_ActQuant(name, amax), x[:1], tmp_path / "f.onnx", opset=19, fp8_activation_qdq=True)
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


# ---------------------------------------------------------------- FP8 activations, elementwise
FP8_DTYPES = {"fp8_e4m3": torch.float8_e4m3fn, "fp8_e5m2": torch.float8_e5m2}
ELEMENTWISE_FP8_OPS = {"Div", "Clip", "Mul", "Round", "Sub", "Add"}  # no Where, Log, Pow, Cast


def _fp32_range(lo: float, hi: float, stride: int = 1) -> np.ndarray:
    """Every ``stride``-th positive fp32 value in [lo, hi) (consecutive bit patterns)."""
    a, b = (int(np.float32(v).view(np.int32)) for v in (lo, hi))
    return np.arange(a, b, stride, dtype=np.int32).view(np.float32)


def adversarial_fp8_inputs(name: str) -> np.ndarray:
    """Values where a rounding onto the FP8 grid goes wrong first, both signs: every grid value,
    every midpoint (a tie) and its fp32 neighbours, every fp32 value around the subnormal/normal
    boundary and in the top binade up to past the saturation point, values far beyond the range
    and far below the smallest subnormal, zeros, and normals at scales from 1e-9 to 1e6."""
    fmt = get_format(name)
    layout, m = fmt.layout, np.float32(fmt.max_value)
    grid = np.array(layout.finite_magnitudes(), np.float64)
    mid = ((grid[:-1] + grid[1:]) / 2).astype(np.float32)
    edge = layout.min_normal
    rng = np.random.default_rng(5)
    scales = np.logspace(-9, 6, 64).astype(np.float32)
    parts = [grid.astype(np.float32), mid, np.nextafter(mid, np.float32(0)), np.nextafter(mid, np.float32(np.inf)),
             _fp32_range(edge / 4, edge * 4, stride=3),  # subnormal boundary, ~5.6M values
             _fp32_range(2.0**layout.emax, m * 1.25, stride=3),  # top binade and saturation
             np.float32(fmt.max_value) * np.array([1.0001, 2, 1e3, 1e30], np.float32),
             _fp32_range(1e-38, layout.min_subnormal / 2, stride=4099),  # rounds to zero
             np.zeros(4, np.float32),
             (rng.standard_normal((64, 16384)) * scales[:, None]).astype(np.float32).ravel()]
    x = np.concatenate([p.astype(np.float32) for p in parts])
    return np.concatenate([x, -x])


def _torch_fp8(name: str, x: np.ndarray) -> np.ndarray:
    """The reference: torch's saturating cast, as nasq's fake quant (scale 1) does it."""
    m = get_format(name).max_value
    return torch.from_numpy(x).clamp(-m, m).to(FP8_DTYPES[name]).float().numpy()


def _export_unit_scale(name: str, path, width: int = 4096) -> None:
    """The activation quantizer with amax = max_value: scale 1, so the graph's Div and Mul are
    exact in any runtime and the comparison is of the rounding alone."""
    export_onnx(_ActQuant(name, get_format(name).max_value), torch.zeros(1, width), path)


def _assert_bits_equal(got: np.ndarray, want: np.ndarray, x: np.ndarray) -> None:
    differ = (got.view(np.int32) != want.view(np.int32)) & ~((got == 0) & (want == 0))  # -0 == +0
    assert not differ.any(), f"{int(differ.sum())} values differ, e.g. x={x[differ][:4]}: {got[differ][:4]} != {want[differ][:4]}"


@pytest.mark.parametrize("name", list(FP8_DTYPES))
def test_fp8_activation_is_elementwise_and_bit_exact_in_onnxruntime(tmp_path, name):
    """The default FP8 activation lowering: a dozen elementwise ops, no FLOAT8 tensor, no branch
    (Where) and no transcendental op; under default session options, bit for bit torch's cast on
    ~31M adversarial values."""
    width = 4096
    _export_unit_scale(name, tmp_path / "e.onnx", width)
    model = onnx.load(str(tmp_path / "e.onnx"))
    ops = [n.op_type for n in model.graph.node]
    assert set(ops) <= ELEMENTWISE_FP8_OPS and len(ops) <= 12, ops
    x = adversarial_fp8_inputs(name)
    x = np.concatenate([x, np.zeros(-len(x) % width, np.float32)])
    got = _run(tmp_path / "e.onnx", x.reshape(-1, width)).ravel()
    _assert_bits_equal(got, _torch_fp8(name, x), x)


@pytest.mark.parametrize("name", list(FP8_DTYPES))
def test_fp8_activation_matches_fake_quant_at_any_scale(tmp_path, name):
    """With a scale that is not a power of two: onnxruntime divides by it as torch does, so the
    exported quantizer equals the format's fake quant bit for bit."""
    fmt = get_format(name)
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(64, 4096, generator=gen) * torch.logspace(-6, 3, 64).reshape(64, 1)
    amax = 3.1  # the top rows saturate, the bottom ones are subnormal or zero
    export_onnx(_ActQuant(name, amax), x[:1], tmp_path / "s.onnx")
    got = _run(tmp_path / "s.onnx", x.numpy())
    want = fmt.quantize(x, torch.tensor(amax)).numpy()
    _assert_bits_equal(got, want, x.numpy())


@pytest.mark.parametrize("name", list(FP8_DTYPES))
def test_fp8_activation_rounding_is_bit_exact_in_openvino(tmp_path, name):
    """OpenVINO fuses the ops into one kernel and simplifies arithmetic on constants (it folds a
    magic-number rounding (y + M) - M away): the rounding must survive that. The CPU plugin is
    asked for f32, as nasq's OpenVINO backend does."""
    ov = pytest.importorskip("openvino")
    import openvino.properties.hint as hints

    width = 4096
    _export_unit_scale(name, tmp_path / "e.onnx", width)
    x = adversarial_fp8_inputs(name)
    x = np.concatenate([x, np.zeros(-len(x) % width, np.float32)]).reshape(-1, width)
    core = ov.Core()
    model = core.read_model(str(tmp_path / "e.onnx"))
    model.reshape([x.shape[0], width])
    compiled = core.compile_model(model, "CPU", {hints.inference_precision(): "f32"})
    got = compiled.create_infer_request().infer({0: x})[0].ravel()
    _assert_bits_equal(got, _torch_fp8(name, x.ravel()), x.ravel())
