"""Scaled low-precision floats (FP8, FP6, FP4): a per-tensor or per-channel fp32 scale maps
``amax`` onto the format's largest finite value; elements round to nearest, ties to even, and
saturate.

Export. FP8 activations are written by default as branch-free elementwise ONNX ops (ten for the
rounding, see :func:`_rounding_graph`, and a Div and a Mul for the scale): bit for bit the
saturating cast. Their speed in onnxruntime does not depend on the data, unlike a FLOAT8
QuantizeLinear/DequantizeLinear pair (onnxruntime 1.32's CPU conversion to FLOAT8 takes from 0.3x
to 2x its randn time depending on the values, and ~4x the elementwise ops' time on randn), and
OpenVINO, which refuses FLOAT8 activation tensors, runs them too. Inside
:func:`fp8_activations_as_qdq` and at opset 19 or later they become the FLOAT8E4M3FN / FLOAT8E5M2
QuantizeLinear/DequantizeLinear pair instead (``saturate=1`` matches the cast bit for bit), for
runtimes with FP8 kernels. FP6/FP4 are rounded with elementwise ops traced from torch (see
:func:`~nasq.formats.floatbits.round_float_ops`).
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from nasq.formats import native
from nasq.formats.base import MIN_AMAX, FormatKind, NumericFormat, scale_back
from nasq.formats.floatbits import E4M3, E5M2, FloatLayout, round_float

if TYPE_CHECKING:  # pragma: no cover
    import torch

FP8_QDQ_MIN_OPSET = 19
# torch dtypes that ONNX (opset >= 19) has as QuantizeLinear outputs, with their layouts
_ONNX_FP8 = {"float8_e4m3fn": E4M3, "float8_e5m2": E5M2}
_FP32_MAN_BITS = 23
# Read by the symbolic while tracing (the exporter hands it no options): FLOAT8 QDQ or elementwise.
_ACTIVATIONS_AS_QDQ = False


@contextlib.contextmanager
def fp8_activations_as_qdq(enabled: bool = True) -> Iterator[None]:
    """While exporting inside this block (opset >= 19), FP8 activations are written as FLOAT8
    QuantizeLinear/DequantizeLinear instead of elementwise rounding; the same values either way."""
    global _ACTIVATIONS_AS_QDQ
    before, _ACTIVATIONS_AS_QDQ = _ACTIVATIONS_AS_QDQ, enabled
    try:
        yield
    finally:
        _ACTIVATIONS_AS_QDQ = before


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
        if s.dtype == x.dtype and native.per_row(x, s) and native.applies_rows(x, s.numel()):
            q = native.scaled_float(x, s, self.layout)  # one fused pass, bit-equal to what follows
            if q is not None:
                return q
        return scale_back(round_float(x / s, self.layout, own=True), s)  # its output is a new tensor

    def export_activation(self, x, amax):
        s = amax.clamp_min(MIN_AMAX) / self.max_value
        if self.dtype_name in _ONNX_FP8 and s.numel() == 1:
            return fp8_qdq(x, s.reshape(()), self.layout)
        return round_float(x / s, self.layout) * s

    def dynamic_range_db(self) -> float:
        return 20 * math.log10(self.layout.max_value / self.layout.min_subnormal)


def fp8_qdq(x: torch.Tensor, scale: torch.Tensor, layout: FloatLayout) -> torch.Tensor:
    """Scale, round to an FP8 ``layout`` (saturating) and scale back. In eager mode this is the
    torch cast, bit for bit (computed on the fp32 bits, faster on CPU); exported it is the same
    rounding in elementwise ops, or inside :func:`fp8_activations_as_qdq` at opset >= 19 one QuantizeLinear/DequantizeLinear pair with an
    FP8 zero point."""
    if layout.torch_dtype not in _ONNX_FP8:
        raise ValueError(f"fp8_qdq: {layout} is not an FP8 layout ONNX knows")
    # The Function gets the dtype's name: the exporter passes strings, not arbitrary objects, on
    # to the symbolic.
    return _fp8_function().apply(x, scale, layout.torch_dtype)


@functools.cache
def _fp8_function() -> Any:
    """The autograd Function is built on first use: defining it needs torch at import time."""
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

    return Fp8QDQ


def _fp8_symbolic(g: Any, x: Any, scale: Any, layout: FloatLayout) -> Any:
    import torch

    if _ACTIVATIONS_AS_QDQ and g.opset >= FP8_QDQ_MIN_OPSET:
        zero = g.op("Constant", value_t=torch.zeros((), dtype=getattr(torch, layout.torch_dtype)))
        q = g.op("QuantizeLinear", x, scale, zero, saturate_i=1)
        return g.op("DequantizeLinear", q, scale, zero)
    # Div, as the torch path (x / s), not a multiplication by the reciprocal: a product can land
    # on the other side of a rounding boundary. (OpenVINO rewrites a Div by a constant into that
    # product anyway: there about one value in 4M comes out a step away from torch's.)
    return g.op("Mul", _rounding_graph(g, g.op("Div", x, scale), layout), scale)


def _rounding_graph(g: Any, y: Any, layout: FloatLayout) -> Any:
    """``y`` rounded onto ``layout`` as the saturating cast does (to nearest, ties to even,
    subnormals), in fp32 arithmetic that no input's value can slow down: no FLOAT8 tensor, no
    Log/Pow, no Where (onnxruntime's Where slows down 2-3x when its condition is unpredictable,
    e.g. on ReLU outputs). Checked bit for bit against torch's cast in onnxruntime on all 2**32
    fp32 inputs; the tests keep the adversarial ones (ties, both sides of the subnormal boundary,
    saturation) for onnxruntime and OpenVINO.

    * Subnormal range: the step is fixed, 2**(emin - man): Round (ties to even) on the value scaled
      by a power of two. Computed on ``y`` clamped to ±2**emin, where it is exact, and moved into
      ``y`` as a difference that is 0 wherever ``|y| >= 2**emin`` (there the clamp is ±2**emin,
      already on the grid) and otherwise turns ``y`` into its rounded value (exact: both are within
      a factor 2 of each other, or the rounded value is 0).
    * Normal range: Veltkamp's split, ``t - (t - w)`` with ``t = w * (2**(23 - man) + 1)``, is ``w``
      rounded to ``1 + man`` significant bits, ties to even under fp32's own rounding; values
      already on the subnormal grid have fewer bits and come through unchanged.
    The magic-number form of the subnormal step ((y + M) - M) is one op shorter, but OpenVINO
    simplifies it away."""
    import torch

    if not layout.man_bits < _FP32_MAN_BITS:
        raise ValueError(f"_rounding_graph: {layout} has no fewer mantissa bits than fp32")

    def const(v: float) -> Any:
        return g.op("Constant", value_t=torch.tensor(v, dtype=torch.float32))

    m, edge = layout.max_value, layout.min_normal
    y = g.op("Clip", y, const(-m), const(m))  # saturate first, as the torch path clamps before the cast
    small = g.op("Clip", y, const(-edge), const(edge))
    step = layout.min_subnormal
    on_grid = g.op("Mul", g.op("Round", g.op("Mul", small, const(1.0 / step))), const(step))
    w = g.op("Add", y, g.op("Sub", on_grid, small))
    t = g.op("Mul", w, const(2.0 ** (_FP32_MAN_BITS - layout.man_bits) + 1))
    return g.op("Sub", t, g.op("Sub", t, w))
