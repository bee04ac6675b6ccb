"""Numeric formats: the precision half of the search space.

A :class:`NumericFormat` knows its bit width, its kind, the bits it costs per element once scale
storage is counted, how to fake-quantize a tensor (straight-through gradient) and how it exports.
Metadata is torch-free so the cost model and the search never import torch; torch is imported
inside the quantizing methods only.
"""

from __future__ import annotations

import abc
import math
from typing import TYPE_CHECKING, Literal

from nasq.registry import Registry

if TYPE_CHECKING:  # pragma: no cover
    import torch

FormatKind = Literal["none", "int", "float"]
ExportMode = Literal["identity", "qdq_int8", "dequantized"]

FORMATS: Registry[NumericFormat] = Registry("format")

SCALE_BITS = 32  # one fp32 scale per output channel (weights) or per tensor (activations)


class NumericFormat(abc.ABC):
    """Base class. ``fake_quant`` owns the contract (scale, straight-through gradient); subclasses
    fill ``_quantize`` which maps a tensor and its absolute-max (broadcastable) to representable
    values, with no gradient bookkeeping."""

    name: str
    bits: int
    kind: FormatKind
    export_mode: ExportMode = "dequantized"

    @property
    def is_identity(self) -> bool:
        return self.kind == "none"

    def effective_bits(self, elements_per_scale: int | None = None) -> float:
        """Bits per element including scale storage, for ``elements_per_scale`` elements per scale."""
        if self.is_identity or not elements_per_scale:
            return float(self.bits)
        return self.bits + SCALE_BITS / elements_per_scale

    def fake_quant(self, x: torch.Tensor, amax: torch.Tensor | None = None) -> torch.Tensor:
        """Quantize-dequantize ``x``; gradients pass straight through. ``amax`` defaults to the
        tensor's own absolute maximum (per tensor); pass a per-channel one shaped for broadcast."""
        if self.is_identity:
            return x
        if amax is None:
            amax = x.detach().abs().amax()
        q = self._quantize(x.detach(), amax.detach().clamp_min(1e-12))
        if not x.requires_grad:  # evaluation: skip the straight-through bookkeeping
            return q
        return x + (q - x).detach()

    def quantize(self, x: torch.Tensor, amax: torch.Tensor | None = None) -> torch.Tensor:
        """Quantize-dequantize without autograd (for weight export and tests)."""
        import torch

        with torch.no_grad():
            return self.fake_quant(x, amax)

    @abc.abstractmethod
    def _quantize(self, x: torch.Tensor, amax: torch.Tensor) -> torch.Tensor:
        """Called by ``fake_quant`` with a detached tensor and a positive ``amax``."""

    def export_activation(self, x: torch.Tensor, amax: torch.Tensor) -> torch.Tensor:
        """The same values as ``fake_quant(x, amax)``, written with ops the ONNX exporter maps to
        standard ONNX operators (QuantizeLinear/DequantizeLinear for int8)."""
        return self._quantize(x, amax.clamp_min(1e-12))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class Passthrough(NumericFormat):
    kind: FormatKind = "none"
    export_mode: ExportMode = "identity"

    def __init__(self, name: str, bits: int):
        self.name, self.bits = name, bits

    def _quantize(self, x, amax):
        return x


class CastFloat(NumericFormat):
    """IEEE-like formats torch can cast to (bf16, fp16): no scale."""

    kind: FormatKind = "float"

    def __init__(self, name: str, bits: int, dtype_name: str):
        self.name, self.bits, self.dtype_name = name, bits, dtype_name

    def effective_bits(self, elements_per_scale: int | None = None) -> float:
        return float(self.bits)

    def fake_quant(self, x, amax=None):
        import torch

        q = x.detach().to(getattr(torch, self.dtype_name)).to(x.dtype)
        return x + (q - x).detach()

    def _quantize(self, x, amax):
        import torch

        return x.to(getattr(torch, self.dtype_name)).to(x.dtype)


class SymmetricInt(NumericFormat):
    """Signed symmetric integers with ``2**bits - 1`` levels (narrow range, zero-point 0)."""

    kind: FormatKind = "int"

    def __init__(self, name: str, bits: int):
        self.name, self.bits = name, bits
        self.qmax = 2 ** (bits - 1) - 1
        self.export_mode = "qdq_int8" if bits == 8 else "dequantized"

    def scale(self, amax):
        return amax / self.qmax

    def _quantize(self, x, amax):
        import torch

        s = self.scale(amax).to(torch.float32)
        if s.numel() == 1:  # one fused kernel instead of five elementwise passes
            zero = torch.zeros((), dtype=torch.int32)
            return torch.fake_quantize_per_tensor_affine(x, s.reshape(()), zero, -self.qmax, self.qmax)
        if s.dim() == x.dim() and all(d == 1 for d in s.shape[1:]):  # per output channel
            zero = torch.zeros(s.numel(), dtype=torch.int32)
            return torch.fake_quantize_per_channel_affine(x, s.flatten(), zero, 0, -self.qmax, self.qmax)
        return (x / s).round().clamp(-self.qmax, self.qmax) * s

    def export_activation(self, x, amax):
        import torch

        s = self.scale(amax.clamp_min(1e-12))
        if self.bits == 8:
            s = float(s)
            # QuantizeLinear's int8 range is -128..127: clip first so the export saturates at -127
            # exactly like _quantize does.
            x = x.clamp(-self.qmax * s, self.qmax * s)
            return torch.fake_quantize_per_tensor_affine(x, s, 0, -128, 127)
        # ONNX has no narrow-range QDQ: plain ops, x * (1/s) as torch's fake-quantize kernel computes it.
        return (x * s.reciprocal()).round().clamp(-self.qmax, self.qmax) * s


class ScaledFloat(NumericFormat):
    """Low-precision floats (FP8) with a scale mapping ``amax`` to the largest finite value;
    round-to-nearest-even, saturating."""

    kind: FormatKind = "float"

    def __init__(self, name: str, bits: int, exp_bits: int, man_bits: int, max_value: float,
                 dtype_name: str):
        self.name, self.bits = name, bits
        self.exp_bits, self.man_bits, self.max_value = exp_bits, man_bits, max_value
        self.dtype_name = dtype_name
        self.min_exp = 2 - 2 ** (exp_bits - 1)  # exponent of the smallest normal

    def _quantize(self, x, amax):
        import torch

        s = amax / self.max_value
        y = (x / s).clamp(-self.max_value, self.max_value)
        return y.to(getattr(torch, self.dtype_name)).to(x.dtype) * s

    def export_activation(self, x, amax):
        """Round to the format with elementwise ops (ONNX has no portable FP8 cast on CPU)."""
        import torch

        s = amax.clamp_min(1e-12) / self.max_value
        y = (x / s).clamp(-self.max_value, self.max_value)
        a = y.abs()
        e = torch.floor(torch.log2(a.clamp_min(2.0**self.min_exp))).clamp_min(self.min_exp)
        step = torch.pow(2.0, e - self.man_bits)
        q = torch.round(a / step) * step
        return torch.sign(y) * q.clamp(max=self.max_value) * s


for _fmt in (
    Passthrough("fp32", 32),
    CastFloat("bf16", 16, "bfloat16"),
    CastFloat("fp16", 16, "float16"),
    SymmetricInt("int8", 8),
    SymmetricInt("int4", 4),
    SymmetricInt("int2", 2),
    ScaledFloat("fp8_e4m3", 8, 4, 3, 448.0, "float8_e4m3fn"),
    ScaledFloat("fp8_e5m2", 8, 5, 2, 57344.0, "float8_e5m2"),
):
    FORMATS.add(_fmt.name, _fmt)


def get_format(name: str) -> NumericFormat:
    return FORMATS.get(name)


def bits_of(name: str) -> int:
    return FORMATS.get(name).bits


def size_bits(name: str, params: int, channels: int) -> float:
    """Storage of ``params`` weights in this format with one scale per output channel."""
    fmt = FORMATS.get(name)
    if fmt.is_identity or fmt.kind == "float" and isinstance(fmt, CastFloat):
        return float(params * fmt.bits)
    return params * fmt.bits + channels * SCALE_BITS


def lowest_bits(names: tuple[str, ...] | list[str]) -> str:
    return min(names, key=lambda n: (FORMATS.get(n).bits, n))


def highest_bits(names: tuple[str, ...] | list[str]) -> str:
    return max(names, key=lambda n: (FORMATS.get(n).bits, n))


def log2_levels(name: str) -> float:
    fmt = FORMATS.get(name)
    return math.log2(2 * fmt.qmax + 1) if isinstance(fmt, SymmetricInt) else float(fmt.bits)
