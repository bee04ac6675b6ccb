"""Integer formats: symmetric (per tensor / per channel, scale from max, percentile or MSE, LSQ),
per-group symmetric, and asymmetric (unsigned codes with a zero point).

Every integer format can :meth:`~IntegerFormat.encode` a tensor into integer codes plus scales
(what the packed safetensors export stores) and :meth:`~IntegerFormat.decode` them back;
``decode(encode(x, amax))`` equals ``quantize(x, amax)`` exactly. Codes are multiplied by the
scale in fp32 (``x * (1/s)``, round half to even, clamp, times ``s``), as torch's fake-quantize
kernels compute, so the fast kernel paths and the plain-op paths agree bit for bit.
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from nasq.formats import native
from nasq.formats.base import (
    MIN_AMAX,
    SCALE_BITS,
    ExportMode,
    FormatKind,
    NumericFormat,
    from_blocks,
    plain_ops,
    to_blocks,
)
from nasq.formats.floatbits import snap_significand

if TYPE_CHECKING:  # pragma: no cover
    import torch

ScaleMethod = Literal["max", "percentile", "mse"]
SCALE_METHODS = ("max", "percentile", "mse")
# Clipping ratios tried by the MSE search, largest first: argmin keeps the first minimum, so a
# tensor that is already quantized on one of these grids finds that grid again (idempotence).
MSE_RATIOS = tuple(1.0 - 0.05 * i for i in range(19))
# Training searches the clipping ratio on a strided sample of at most this many elements per
# tensor (per channel: the same stride in every row); evaluation and export search all of them.
MSE_TRAIN_SAMPLE = 1 << 13
MSE_BROADCAST_MAX = 1 << 15  # up to this many elements all ratios are tried in one broadcast pass
SCALE_SIGNIFICAND_BITS = 11  # fp16-like precision, fp32 range: code x scale stays exact in fp32


@dataclass
class IntCodes:
    codes: torch.Tensor  # x's shape; int8 (signed formats) or uint8 (unsigned)
    scale: torch.Tensor  # fp32: amax's shape, or (rows, groups, 1) for per-group formats
    zero_point: torch.Tensor | None = None  # unsigned formats: the code of 0.0, scale's shape


class IntegerFormat(NumericFormat):
    """Integer codes in ``[qmin, qmax]`` times a scale (minus a zero point when unsigned)."""

    kind: FormatKind = "int"
    signed: bool = True
    qmin: int
    qmax: int

    def __init__(self, name: str, bits: int):
        if not 2 <= bits <= 8:
            raise ValueError(f"format '{name}': bits must be 2..8, got {bits}")
        self.name, self.bits = name, bits

    @abc.abstractmethod
    def encode(self, x: torch.Tensor, amax: torch.Tensor | None = None) -> IntCodes:
        """Integer codes and scales of ``x`` (no autograd)."""

    @abc.abstractmethod
    def decode(self, codes: IntCodes) -> torch.Tensor:
        """The fp32 values of ``codes``: equal to ``quantize`` of the encoded tensor."""

    def _default_amax(self, x, amax):
        return (x.detach().abs().amax() if amax is None else amax.detach()).clamp_min(MIN_AMAX)


def _per_scale(x: torch.Tensor, amax: torch.Tensor) -> torch.Tensor:
    """``x`` as rows, one row per element of ``amax`` (per tensor, or per channel along dim 0)."""
    if amax.numel() == 1:
        return x.reshape(1, -1)
    if amax.numel() != x.shape[0] or amax.dim() != x.dim():
        raise ValueError(f"amax of shape {tuple(amax.shape)} is neither per tensor nor per output "
                         f"channel of a tensor of shape {tuple(x.shape)}")
    return x.reshape(x.shape[0], -1)


def _memory_order(x: torch.Tensor) -> torch.Tensor:
    """A channels-last 4-D tensor as the (N, H, W, C) view of its memory, else ``x``: the same
    rows along dim 0, each row's elements in the order they lie."""
    import torch

    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return x.permute(0, 2, 3, 1)
    return x


class SymmetricInt(IntegerFormat):
    """Signed symmetric integers with ``2**bits - 1`` levels (narrow range, zero-point 0).

    ``scale_method``: ``max`` (scale from ``amax``), ``percentile`` (clip at that percentile of
    ``|x|``, per tensor or per channel as ``amax`` is shaped; for weights and offline
    calibration, since it is data-dependent and not exportable as activations) or ``mse`` (the
    clipping ratio of :data:`MSE_RATIOS` with the least squared error; exportable).
    ``lsq=True``: an ``amax`` that requires grad is trained with learned-step-size gradients."""

    def __init__(self, name: str, bits: int, *, scale_method: ScaleMethod = "max",
                 percentile: float = 99.99, lsq: bool = False):
        super().__init__(name, bits)
        if scale_method not in SCALE_METHODS:
            raise ValueError(f"format '{name}': scale_method must be one of {SCALE_METHODS}, got {scale_method!r}")
        if lsq and scale_method != "max":
            raise ValueError(f"format '{name}': LSQ learns the scale itself; scale_method must be 'max'")
        if not 0 < percentile <= 100:
            raise ValueError(f"format '{name}': percentile must be in (0, 100], got {percentile}")
        self.qmax = 2 ** (bits - 1) - 1
        self.qmin = -self.qmax
        self.scale_method, self.percentile, self.learns_scale = scale_method, percentile, lsq
        qdq = bits == 8 and scale_method == "max"
        self.export_mode: ExportMode = "qdq_int8" if qdq else "dequantized"

    def scale(self, amax):
        return amax / self.qmax

    def clip_amax(self, x: torch.Tensor, amax: torch.Tensor) -> torch.Tensor:
        """The range actually quantized: ``amax`` itself, or a clipped one (same shape)."""
        if self.scale_method == "max":
            return amax
        if self.scale_method == "percentile":
            rows = _per_scale(x, amax).abs()
            k = max(1, math.ceil(self.percentile / 100 * rows.shape[1]))
            return amax.minimum(rows.kthvalue(k, dim=1).values.reshape(amax.shape))
        return self._mse_amax(x, amax)

    def _mse_amax(self, x, amax, sample: int | None = None):
        """``amax`` times the ratio of :data:`MSE_RATIOS` with the least squared error per scale,
        searched over every element, or over a strided sample of at most ``sample`` of them."""
        import torch

        # a sample is drawn in memory order: a channels-last tensor is not copied into NCHW rows
        rows, a = _per_scale(x if sample is None else _memory_order(x), amax), amax.reshape(-1, 1)
        if sample is not None and rows.numel() > sample:
            rows = rows[:, :: -(-rows.numel() // sample)].contiguous()  # one gather, then dense passes
        ratios = torch.tensor(MSE_RATIOS, dtype=amax.dtype, device=amax.device)
        if sample is not None and rows.is_contiguous() and native.applies(rows, 1):
            # training: all ratios in one fused pass per row (errors summed in double)
            best = native.int_mse_search(rows, a, ratios, self.qmax)
            if best is not None:
                return amax * ratios[best].reshape(amax.shape)
        if rows.numel() <= MSE_BROADCAST_MAX and not plain_ops():
            # all ratios in one broadcast pass: a small tensor's time is the per-op overhead
            s = self.scale(a * ratios.reshape(-1, 1, 1))  # (ratios, rows, 1)
            err = (rows * s.reciprocal()).round_().clamp_(-self.qmax, self.qmax)
            best = err.mul_(s).sub_(rows).pow_(2).sum(2).argmin(0)
            return amax * ratios[best].reshape(amax.shape)
        # one scratch tensor for all ratios (the same values as the plain expression, in place)
        buf = None if plain_ops() or amax.dtype != x.dtype else torch.empty_like(rows)
        errors = []
        for i in range(len(MSE_RATIOS)):
            s = self.scale(a * ratios[i])
            if buf is None:
                err = (self._rounded(rows, s) - rows).pow(2)
            else:
                err = torch.mul(rows, s.reciprocal(), out=buf).round_().clamp_(-self.qmax, self.qmax)
                err = err.mul_(s).sub_(rows).pow_(2)
            errors.append(err.sum(1))
        best = torch.stack(errors).argmin(0)
        return amax * ratios[best].reshape(amax.shape)

    def _rounded(self, x, s):
        return (x * s.reciprocal()).round().clamp(-self.qmax, self.qmax) * s

    def _training_quantize(self, x, amax):
        """In training an ``mse`` scale is searched on a strided sample of ``x``
        (:data:`MSE_TRAIN_SAMPLE`), 19 passes over the whole activation being most of a training
        step's time otherwise."""
        if self.scale_method != "mse":
            return self._quantize(x, amax)
        return self._quantize(x, amax, self._mse_amax(x, amax, MSE_TRAIN_SAMPLE))

    def _quantize(self, x, amax, clipped=None):
        import torch

        clipped = self.clip_amax(x, amax) if clipped is None else clipped
        s = self.scale(clipped).to(torch.float32)
        per_channel = s.dim() == x.dim() and all(d == 1 for d in s.shape[1:])
        if x.dtype != torch.float32 and (s.numel() == 1 or per_channel):  # bf16/fp16 under autocast
            zero = torch.zeros(s.numel(), dtype=torch.int32, device=x.device)
            if s.numel() == 1:
                return torch.fake_quantize_per_tensor_affine(x, s.reshape(()), zero[0], -self.qmax, self.qmax)
            return torch.fake_quantize_per_channel_affine(x, s.flatten(), zero, 0, -self.qmax, self.qmax)
        if s.numel() == 1 or per_channel:
            return self._fake_quantize(x, s)
        return self._rounded(x, s)

    def _fake_quantize(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """torch's fake_quantize_per_tensor/per_channel_affine (zero point 0), bit for bit, as four
        in-place passes: on a CPU that kernel, which also builds a gradient mask we do not use,
        took several times as long. Its codes pass through int64, so a zero comes out +0 (the
        ``+ 0.0`` here); like it, inputs are finite and within 2**63 steps of zero."""
        if native.per_row(x, s) and native.applies_rows(x, s.numel()):  # one fused pass, bit-equal to what follows
            q = native.int_symmetric(x, s, self.qmax)
            if q is not None:
                return q
        q = x * s.reciprocal()
        return q.round_().add_(0.0).clamp_(-self.qmax, self.qmax).mul_(s)

    def _learned_step(self, x, amax):
        """LSQ (Esser et al. 2020): the step gets gradient ``round(v) - v`` inside the range and
        ``±qmax`` outside, scaled by ``1/sqrt(elements per step · qmax)``; ``x`` gets 1 inside the
        range, 0 outside. Values equal ``_quantize``'s bit for bit (the detach tricks add exact
        zeros)."""
        s = self.scale(amax.clamp_min(MIN_AMAX))
        g = 1.0 / math.sqrt(x.numel() / s.numel() * self.qmax)
        sg = s * g
        s = (sg - sg.detach()) + s.detach()  # value s, gradient g · ds
        v = (x * s.reciprocal()).clamp(-self.qmax, self.qmax)
        v = v + (v.round() - v).detach()
        return v * s

    def export_activation(self, x, amax):
        import torch

        amax = amax.clamp_min(MIN_AMAX)
        if self.export_mode == "qdq_int8":
            s = float(self.scale(amax))
            # QuantizeLinear's int8 range is -128..127: clip first so the export saturates at -127
            # exactly like _quantize does.
            x = x.clamp(-self.qmax * s, self.qmax * s)
            return torch.fake_quantize_per_tensor_affine(x, s, 0, -128, 127)
        # ONNX has no narrow-range QDQ: plain ops, x * (1/s) as torch's fake-quantize kernel computes it.
        return self._rounded(x, self.scale(self.clip_amax(x, amax)))

    def encode(self, x, amax=None):
        import torch

        with torch.no_grad():
            amax = self._default_amax(x, amax)
            s = self.scale(self.clip_amax(x, amax)).to(torch.float32)
            codes = (x * s.reciprocal()).round().clamp(-self.qmax, self.qmax)
        return IntCodes(codes.to(torch.int8), s)

    def decode(self, codes):
        return codes.codes.float() * codes.scale

    def dynamic_range_db(self) -> float:
        return 20 * math.log10(self.qmax)


class GroupInt(IntegerFormat):
    """Signed symmetric integers with one scale per group of ``group_size`` consecutive
    elements along each row (dim 0 × the rest; zero-padded), whatever ``amax`` says. Scales are
    fp32 with an 11-bit significand, so re-quantizing recovers them exactly (idempotence)."""

    reads_amax = False

    def __init__(self, name: str, bits: int, group_size: int):
        super().__init__(name, bits)
        if group_size < 2:
            raise ValueError(f"format '{name}': group_size must be at least 2, got {group_size}")
        self.group_size = group_size
        self.qmax = 2 ** (bits - 1) - 1
        self.qmin = -self.qmax

    def effective_bits(self, elements_per_scale=None):
        return self.bits + SCALE_BITS / self.group_size

    def storage_bits(self, params, channels):
        groups = channels * math.ceil(params / max(channels, 1) / self.group_size)
        return float(params * self.bits + groups * SCALE_BITS)

    def _scales(self, blocks):
        amax = blocks.abs().amax(-1, keepdim=True).clamp_min(MIN_AMAX)
        return snap_significand(amax / self.qmax, SCALE_SIGNIFICAND_BITS)

    def _codes(self, blocks, s):
        return (blocks * s.reciprocal()).round().clamp(-self.qmax, self.qmax)

    def _quantize(self, x, amax):
        if native.applies(x, self.group_size):  # one fused pass, bit-equal to what follows
            q = native.block_quant(x, self.group_size, native.KIND_GROUP,
                                   (float(self.qmax), MIN_AMAX, SCALE_SIGNIFICAND_BITS))
            if q is not None:
                return q
        blocks, n = to_blocks(x, self.group_size)
        s = self._scales(blocks)
        if plain_ops():
            return from_blocks(self._codes(blocks, s) * s, n, x)
        q = (blocks * s.reciprocal()).round_().clamp_(-self.qmax, self.qmax)  # _codes, in place
        return from_blocks(q.mul_(s), n, x)

    def encode(self, x, amax=None):
        import torch

        with torch.no_grad():
            blocks, n = to_blocks(x, self.group_size)
            s = self._scales(blocks)
            codes = from_blocks(self._codes(blocks, s), n, x)
        return IntCodes(codes.to(torch.int8), s)

    def decode(self, codes):
        blocks, n = to_blocks(codes.codes.float(), self.group_size)
        return from_blocks(blocks * codes.scale, n, codes.codes)

    def dynamic_range_db(self) -> float:
        return 20 * math.log10(self.qmax)


class AsymmetricInt(IntegerFormat):
    """Unsigned codes ``0 .. 2**bits - 1`` with a zero point: ``(code - z) · s`` covers
    ``[min(x, 0), max(x, 0)]``, per tensor or per channel as ``amax`` is shaped (only its shape
    is used: the range is measured on ``x``, so activations are quantized dynamically).

    The scale is rounded *down* to an 11-bit significand: then the extreme values land on codes
    0 and ``2**bits - 1``, code × scale is exact, and re-quantizing finds the same scale and zero
    point (idempotence). Storage: an fp32 scale and a ``bits``-bit zero point per scale."""

    signed = False
    reads_amax = False  # only its shape

    def __init__(self, name: str, bits: int):
        super().__init__(name, bits)
        self.qmin, self.qmax = 0, 2**bits - 1

    def effective_bits(self, elements_per_scale=None):
        if not elements_per_scale:
            return float(self.bits)
        return self.bits + (SCALE_BITS + self.bits) / elements_per_scale

    def storage_bits(self, params, channels):
        return float(params * self.bits + channels * (SCALE_BITS + self.bits))

    def _params(self, x, amax):
        rows = _per_scale(x, amax)
        lo = rows.amin(1).reshape(amax.shape).clamp_max(0.0)
        hi = rows.amax(1).reshape(amax.shape).clamp_min(0.0)
        s = snap_significand(((hi - lo) / self.qmax).clamp_min(MIN_AMAX), SCALE_SIGNIFICAND_BITS, down=True)
        return s, (-lo * s.reciprocal()).round()

    def _codes(self, x, s, z):
        return ((x * s.reciprocal()).round() + z).clamp(0, self.qmax)

    def _quantize(self, x, amax):
        if native.applies_rows(x, amax.numel()):  # two fused passes, bit-equal to what follows
            q = native.int_asymmetric(x, amax.numel(), self.qmax, MIN_AMAX, SCALE_SIGNIFICAND_BITS)
            if q is not None:
                return q
        s, z = self._params(x, amax)
        if plain_ops():
            return (self._codes(x, s, z) - z) * s
        q = (x * s.reciprocal()).round_().add_(z).clamp_(0, self.qmax)  # _codes, in place
        return q.sub_(z).mul_(s)

    def encode(self, x, amax=None):
        import torch

        with torch.no_grad():
            s, z = self._params(x, self._default_amax(x, amax))
            codes = self._codes(x, s, z)
        return IntCodes(codes.to(torch.uint8), s.float(), z.to(torch.uint8))

    def decode(self, codes):
        return (codes.codes.float() - codes.zero_point.float()) * codes.scale

    def dynamic_range_db(self) -> float:
        return 20 * math.log10(self.qmax)
