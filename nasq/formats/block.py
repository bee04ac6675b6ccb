"""Block-scaled floats: OCP Microscaling (MXFP8/6/4) and NVIDIA NVFP4.

Blocks run along each row (dim 0 × the rest flattened, see :func:`~nasq.formats.base.to_blocks`),
zero-padded at the end of a row. The blocks compute their own scales, so ``amax`` is ignored
(MX) or only sets NVFP4's per-tensor scale.

* MX (OCP Microscaling Formats v1.0): 32 elements share an E8M0 scale, a power of two,
  ``2**(floor(log2(block amax)) - emax_elem)``, clamped to ``2**-127 .. 2**127``; the elements are
  rounded to nearest even in the element format and saturate at its largest value.
* NVFP4: 16 FP4 (E2M1) elements share an E4M3 scale ``block amax / 6`` expressed in units of a
  per-tensor fp32 scale ``amax / (448 · 6)``, so the block scales use E4M3's whole range.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from nasq.formats import native
from nasq.formats.base import (
    SCALE_BITS,
    FormatKind,
    NumericFormat,
    from_blocks,
    scale_back,
    to_blocks,
)
from nasq.formats.floatbits import E2M1, E4M3, E8M0_BITS, FloatLayout, floor_log2, round_float

if TYPE_CHECKING:  # pragma: no cover
    import torch

MX_BLOCK = 32
NVFP4_BLOCK = 16
E8M0_MIN_EXP, E8M0_MAX_EXP = -127, 127


class BlockFloat(NumericFormat):
    """Elements of a small float ``element`` layout, one ``scale_bits`` scale per ``block``."""

    kind: FormatKind = "block"
    scale_bits: int

    def __init__(self, name: str, element: FloatLayout, block: int):
        self.name, self.bits, self.element, self.block = name, element.bits, element, block

    def effective_bits(self, elements_per_scale=None):
        return self.bits + self.scale_bits / self.block

    def storage_bits(self, params, channels):
        blocks = channels * math.ceil(params / max(channels, 1) / self.block)
        return float(params * self.bits + blocks * self.scale_bits)

    def dynamic_range_db(self) -> float:
        """Of the elements under one block scale; the scales widen it by far."""
        return 20 * math.log10(self.element.max_value / self.element.min_subnormal)


class MXFloat(BlockFloat):
    scale_bits = E8M0_BITS
    reads_amax = False

    def __init__(self, name: str, element: FloatLayout, block: int = MX_BLOCK):
        super().__init__(name, element, block)

    def block_scales(self, blocks: torch.Tensor) -> torch.Tensor:
        """The E8M0 scale of each block (last dim), as fp32 powers of two."""
        import torch

        amax = blocks.abs().amax(-1, keepdim=True).clamp_min(2.0**E8M0_MIN_EXP)
        e = (floor_log2(amax) - self.element.emax).clamp(E8M0_MIN_EXP, E8M0_MAX_EXP)
        return torch.pow(2.0, e)

    def _quantize(self, x, amax):
        if native.applies(x, self.block):  # one fused pass, bit-equal to what follows
            q = native.block_quant(x, self.block, native.KIND_MX, (float(self.element.emax),), self.element)
            if q is not None:
                return q
        blocks, n = to_blocks(x, self.block)
        s = self.block_scales(blocks)
        # Dividing and multiplying by a power of two is exact: all rounding is the element's.
        return from_blocks(scale_back(round_float(blocks / s, self.element, own=True), s), n, x)


class NVFP4(BlockFloat):
    """FP4 E2M1 elements, an E4M3 scale per 16, and one fp32 scale per tensor (from ``amax``:
    the calibrated range for activations, the largest channel range for weights)."""

    scale_bits = 8

    def __init__(self, name: str = "nvfp4"):
        super().__init__(name, E2M1, NVFP4_BLOCK)

    def storage_bits(self, params, channels):
        return super().storage_bits(params, channels) + SCALE_BITS

    def tensor_scale(self, amax: torch.Tensor) -> torch.Tensor:
        return amax.amax() / (E4M3.max_value * E2M1.max_value)

    def block_scales(self, blocks: torch.Tensor, tensor_scale: torch.Tensor) -> torch.Tensor:
        """Each block's E4M3 scale (saturating at 448), in units of ``tensor_scale``."""
        amax = blocks.abs().amax(-1, keepdim=True)
        return round_float(amax / E2M1.max_value / tensor_scale, E4M3)

    def _quantize(self, x, amax):
        import torch

        t = self.tensor_scale(amax)
        if native.applies(x, self.block):  # one fused pass, bit-equal to what follows
            q = native.block_quant(x, self.block, native.KIND_NVFP4, (float(t), E2M1.max_value), E2M1, E4M3)
            if q is not None:
                return q
        blocks, n = to_blocks(x, self.block)
        s = self.block_scales(blocks, t)
        # A block whose scale underflowed to 0 decodes to 0 whatever its elements round to.
        y = blocks / torch.where(s > 0, s * t, torch.ones_like(s))
        # (code × block scale) is exact; one rounding when the tensor scale is applied, which a
        # second pass reproduces exactly (idempotence).
        return from_blocks(scale_back(scale_back(round_float(y, E2M1, own=True), s), t), n, x)
