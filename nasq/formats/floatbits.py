"""Bit layouts of floating-point formats, and exact round-to-nearest-even onto any of them.

:class:`FloatLayout` is metadata (torch-free): exponent and mantissa widths, bias and which codes
are reserved. :func:`round_float` maps a tensor onto the layout's representable values,
saturating, by one of three routes that agree bit for bit: torch's cast (fp8, bf16, fp16), fp32
bit arithmetic, or :func:`round_float_ops`, written only in ops the TorchScript ONNX exporter maps
to standard operators and used while exporting. That one is exact too: the exponent is found with
``log2`` and then corrected by comparing with the power of two, so a ``log2`` that rounds up just
below a power of two (or an ONNX ``Log``/``Div`` pair off by an ulp) cannot shift the step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:  # pragma: no cover
    import torch

# ieee:   the top exponent code holds infinities and NaNs (fp16, bf16, fp8_e5m2);
# fn:     only S.1111.111 is NaN, no infinities (OCP fp8 E4M3 "fn");
# finite: every code is a number (OCP FP6 and FP4).
Special = Literal["ieee", "fn", "finite"]


@dataclass(frozen=True)
class FloatLayout:
    exp_bits: int
    man_bits: int
    bias: int
    special: Special
    torch_dtype: str | None = None  # a torch dtype that casts to exactly this layout, if any

    @property
    def bits(self) -> int:
        return 1 + self.exp_bits + self.man_bits

    @property
    def emin(self) -> int:
        """Exponent of the smallest normal (subnormals share its step)."""
        return 1 - self.bias

    @property
    def emax(self) -> int:
        """Exponent of the largest finite value."""
        top = 2**self.exp_bits - 1 - self.bias
        return top - 1 if self.special == "ieee" else top

    @property
    def max_value(self) -> float:
        lost = 2 if self.special == "fn" else 1  # fn: the all-ones mantissa of the top binade is NaN
        return 2.0**self.emax * (2 - lost * 2.0**-self.man_bits)

    @property
    def min_normal(self) -> float:
        return 2.0**self.emin

    @property
    def min_subnormal(self) -> float:
        return 2.0 ** (self.emin - self.man_bits)

    def decode(self, code: int) -> float:
        """The value of one bit pattern (sign, exponent, mantissa from the top bit down)."""
        sign = -1.0 if code >> (self.bits - 1) & 1 else 1.0
        e = code >> self.man_bits & (2**self.exp_bits - 1)
        m = code & (2**self.man_bits - 1)
        top = 2**self.exp_bits - 1
        if self.special == "ieee" and e == top:
            return sign * math.inf if m == 0 else math.nan
        if self.special == "fn" and e == top and m == 2**self.man_bits - 1:
            return math.nan
        if e == 0:
            return sign * m * self.min_subnormal
        return sign * 2.0 ** (e - self.bias) * (1 + m * 2.0**-self.man_bits)

    def finite_magnitudes(self) -> list[float]:
        """Every finite non-negative value, ascending; the index is the code of the value."""
        values = [self.decode(c) for c in range(2 ** (self.bits - 1))]
        return [v for v in values if math.isfinite(v)]


FP32 = FloatLayout(8, 23, 127, "ieee", "float32")
BF16 = FloatLayout(8, 7, 127, "ieee", "bfloat16")
FP16 = FloatLayout(5, 10, 15, "ieee", "float16")
E4M3 = FloatLayout(4, 3, 7, "fn", "float8_e4m3fn")
E5M2 = FloatLayout(5, 2, 15, "ieee", "float8_e5m2")
E3M2 = FloatLayout(3, 2, 3, "finite")
E2M3 = FloatLayout(2, 3, 1, "finite")
E2M1 = FloatLayout(2, 1, 1, "finite")
E8M0_BITS = 8  # OCP MX shared scale: a bare power of two, 2**-127 .. 2**127
_SIGN_BIT = -(2**31)  # fp32's sign bit as an int32 mask
_MAGNITUDE = 2**31 - 1
_EXP_FIELD = 0xFF << 23
# torch casts fp32 to these with vectorised CPU kernels; its FP8 casts convert one value at a time,
# slower than the bit arithmetic (which is bit-equal to them, see the tests)
_VECTORISED_CASTS = ("float16", "bfloat16")
_FP32_BIAS = 127


def floor_log2(a: torch.Tensor) -> torch.Tensor:
    """``floor(log2(a))`` exactly, as a float tensor, for positive finite ``a``."""
    import torch

    e = torch.floor(torch.log2(a))
    p = torch.pow(2.0, e)
    return e - (a < p).to(a.dtype) + (a >= 2 * p).to(a.dtype)


def round_float(y: torch.Tensor, layout: FloatLayout, *, cast: bool = True, own: bool = False) -> torch.Tensor:
    """Round ``y`` to the nearest value of ``layout``, ties to even, saturating at
    ``±max_value`` (infinities too); NaN stays NaN. In eager mode this takes torch's own cast
    where the layout has one and ``cast`` is set (bit-exact with it), except FP8 from fp32 (torch
    converts to FP8 one value at a time on CPU: the bit arithmetic is faster), else fp32 bit
    arithmetic; while exporting to ONNX it is :func:`round_float_ops`. All three agree exactly.
    ``own``: ``y`` is the caller's scratch tensor, which the bit arithmetic may clamp in place (one
    full-size temporary fewer)."""
    import torch

    m = layout.max_value
    if torch.onnx.is_in_onnx_export():
        return round_float_ops(y, layout)
    fp32_bits = y.dtype == torch.float32 and layout.man_bits < 23
    if cast and layout.torch_dtype and not (fp32_bits and layout.torch_dtype not in _VECTORISED_CASTS):
        return y.clamp(-m, m).to(getattr(torch, layout.torch_dtype)).to(y.dtype)
    if fp32_bits:
        return _round_float32_bits(y.clamp_(-m, m) if own else y.clamp(-m, m), layout)
    return round_float_ops(y, layout)


def round_float_ops(y: torch.Tensor, layout: FloatLayout) -> torch.Tensor:
    """:func:`round_float` in ops the ONNX exporter writes as standard operators."""
    import torch

    m = layout.max_value
    y = y.clamp(-m, m)
    a = y.abs()
    e = floor_log2(a.clamp_min(layout.min_normal))  # subnormals share the smallest normal's step
    step = torch.pow(2.0, e - layout.man_bits)
    q = torch.round(a / step) * step  # a / step is exact: step is a power of two
    return torch.where(y < 0, -q, q)


def _round_float32_bits(y: torch.Tensor, layout: FloatLayout) -> torch.Tensor:
    """:func:`round_float` for fp32 in eager mode, on the bits: no transcendental functions and no
    ``where`` (slow on CPU), in place on ``y`` (already clamped, and the caller's own), since on a
    CPU each pass costs about what a fresh output costs. Bit-equal to :func:`round_float_ops` and
    to the former select-based version (the tests keep it)."""
    if layout.emin + _FP32_BIAS - layout.man_bits >= 1:
        return _round_by_step(y, layout)
    return _round_by_fields(y, layout)


def _round_by_step(y: torch.Tensor, layout: FloatLayout) -> torch.Tensor:
    """Each value's step, ``2**(exponent - man_bits)`` but never below the subnormal step, is built
    from its exponent field; then ``round(y / step) · step`` is exact (powers of two) and rounds
    half to even, keeps the sign (zeros included) and NaN. Needs that step to be a normal fp32."""
    import torch

    field = y.view(torch.int32) & _EXP_FIELD
    step = field.clamp_min_((layout.emin + _FP32_BIAS) << 23).sub_(layout.man_bits << 23).view(torch.float32)
    return y.div_(step).round_().mul_(step)


def _round_by_fields(y: torch.Tensor, layout: FloatLayout) -> torch.Tensor:
    """Layouts whose subnormal step is an fp32 subnormal (bf16): round the mantissa bits, after
    moving values below the smallest normal onto their fixed-step grid."""
    import torch

    drop = 23 - layout.man_bits  # fp32 mantissa bits below the layout's
    step = layout.min_subnormal
    bits = y.view(torch.int32)
    sign = bits & _SIGN_BIT  # the result keeps the input's sign, zeros and NaNs included
    # Below the smallest normal: y - (y - q) with q = round(y / step) · step (each step exact;
    # elsewhere the difference is +0). On-grid values have at most man_bits significant bits, so
    # the bit rounding below leaves them alone.
    t = y.clamp(-layout.min_normal, layout.min_normal).div_(step)
    r = torch.round(t)
    y.sub_(t.sub_(r).mul_(step))
    odd = torch.bitwise_right_shift(bits, drop, out=r.view(torch.int32)).bitwise_and_(1)
    bits.add_(odd.add_((1 << (drop - 1)) - 1)).bitwise_and_(~((1 << drop) - 1))  # ties to even
    return bits.bitwise_and_(_MAGNITUDE).bitwise_or_(sign).view(torch.float32)


def snap_significand(s: torch.Tensor, bits: int, *, down: bool = False) -> torch.Tensor:
    """``s`` (positive) with its significand rounded to ``bits`` bits (to nearest, or down).

    Integer scales are snapped so that code × scale is exact in fp32 (a code has at most 8 bits):
    then a re-quantized tensor recovers the very same scale and quantization is idempotent."""
    import torch

    unit = torch.pow(2.0, floor_log2(s) - (bits - 1))
    r = s / unit
    return (torch.floor(r) if down else torch.round(r)) * unit
