"""Scaled low-precision floats (FP8, FP6, FP4): a per-tensor or per-channel fp32 scale maps
``amax`` onto the format's largest finite value; elements round to nearest, ties to even, and
saturate.

Export. FP8 activations become QuantizeLinear/DequantizeLinear with a FLOAT8E4M3FN or FLOAT8E5M2
zero point where the ONNX opset allows it (19 and later; onnxruntime's CPU provider runs them, and
``saturate=1`` matches the saturating cast bit for bit). Below opset 19, and for FP6/FP4, the
rounding is written as elementwise ops (see :func:`~nasq.formats.floatbits.round_float_ops`).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from nasq.formats.base import MIN_AMAX, FormatKind, NumericFormat
from nasq.formats.floatbits import E4M3, E5M2, FloatLayout, round_float

if TYPE_CHECKING:  # pragma: no cover
    import torch

FP8_QDQ_MIN_OPSET = 19
# torch dtypes that ONNX (opset >= 19) has as QuantizeLinear outputs, with their layouts
_ONNX_FP8 = {"float8_e4m3fn": E4M3, "float8_e5m2": E5M2}


class ScaledFloat(NumericFormat):
    """A small float with one fp32 scale per tensor or per output channel (``amax``'s shape)."""

    kind: FormatKind = "float"

    def __init__(self, name: str, layout: FloatLayout):
        self.name, self.bits, self.layout = name, layout.bits, layout
        self.exp_bits, self.man_bits = layout.exp_bits, layout.man_bits
        self.max_value = layout.max_value
        self.dtype_name = layout.torch_dtype  # None: rounded with elementwise ops
        self.min_exp = layout.emin  # exponent of the smallest normal

    def _quantize(self, x, amax):
        s = amax / self.max_value
        return round_float(x / s, self.layout) * s

    def export_activation(self, x, amax):
        s = amax.clamp_min(MIN_AMAX) / self.max_value
        if self.dtype_name in _ONNX_FP8 and s.numel() == 1:
            return fp8_qdq(x, s.reshape(()), self.layout)
        return round_float(x / s, self.layout) * s

    def dynamic_range_db(self) -> float:
        return 20 * math.log10(self.layout.max_value / self.layout.min_subnormal)


def fp8_qdq(x: torch.Tensor, scale: torch.Tensor, layout: FloatLayout) -> torch.Tensor:
    """Scale, round to an FP8 ``layout`` (saturating) and scale back. In eager mode this is the
    torch cast; exported at opset >= 19 it is one QuantizeLinear/DequantizeLinear pair with an
    FP8 zero point, below that the same rounding in elementwise ops."""
    if layout.torch_dtype not in _ONNX_FP8:
        raise ValueError(f"fp8_qdq: {layout} is not an FP8 layout ONNX knows")
    # The Function gets the dtype's name: the exporter passes strings, not arbitrary objects, on
    # to the symbolic.
    return _fp8_function().apply(x, scale, layout.torch_dtype)


_FUNCTION: Any = None


def _fp8_function() -> Any:
    """The autograd Function is built on first use: defining it needs torch at import time."""
    global _FUNCTION
    if _FUNCTION is None:
        import torch

        class Fp8QDQ(torch.autograd.Function):
            @staticmethod
            def forward(ctx, x, scale, dtype_name):
                return round_float(x / scale, _ONNX_FP8[dtype_name]) * scale

            @staticmethod
            def backward(ctx, grad):  # straight through; the scale is calibrated, not learned
                return grad, None, None

            @staticmethod
            def symbolic(g, x, scale, dtype_name):
                return _fp8_symbolic(g, x, scale, _ONNX_FP8[dtype_name])

        _FUNCTION = Fp8QDQ
    return _FUNCTION


def _fp8_symbolic(g: Any, x: Any, scale: Any, layout: FloatLayout) -> Any:
    import torch

    if g.opset >= FP8_QDQ_MIN_OPSET:
        zero = g.op("Constant", value_t=torch.zeros((), dtype=getattr(torch, layout.torch_dtype)))
        q = g.op("QuantizeLinear", x, scale, zero, saturate_i=1)
        return g.op("DequantizeLinear", q, scale, zero)
    return g.op("Mul", _rounding_graph(g, g.op("Div", x, scale), layout), scale)


def _rounding_graph(g: Any, y: Any, layout: FloatLayout) -> Any:
    """The rounding of :func:`~nasq.formats.floatbits.round_float_ops` as ONNX nodes, for opsets
    without FP8 types."""
    import torch

    def const(v: float) -> Any:
        return g.op("Constant", value_t=torch.tensor(v, dtype=torch.float32))

    def as_float(b: Any) -> Any:
        return g.op("Cast", b, to_i=1)  # onnx.TensorProto.FLOAT

    y = g.op("Clip", y, const(-layout.max_value), const(layout.max_value))
    a = g.op("Abs", y)
    ac = g.op("Max", a, const(layout.min_normal))
    e = g.op("Floor", g.op("Div", g.op("Log", ac), const(math.log(2.0))))
    p = g.op("Pow", const(2.0), e)
    e = g.op("Sub", e, as_float(g.op("Less", ac, p)))
    e = g.op("Add", e, as_float(g.op("GreaterOrEqual", ac, g.op("Mul", p, const(2.0)))))
    step = g.op("Pow", const(2.0), g.op("Sub", e, const(float(layout.man_bits))))
    q = g.op("Mul", g.op("Round", g.op("Div", a, step)), step)
    return g.op("Where", g.op("Less", y, const(0.0)), g.op("Neg", q), q)
