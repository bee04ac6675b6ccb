"""Ternary weights (BitNet b1.58, Ma et al. 2024): codes {-1, 0, +1} times one scale per output
channel, the scale being the channel's mean absolute value ("absmean").

Information is log2(3) ≈ 1.58 bits per weight; storage is a 2-bit code (four per byte in the
packed safetensors, an INT4 initializer in model.onnx) plus an fp32 scale per output channel,
so ``bits`` is 2 and the cost model counts ``params × 2 + channels × 32`` bits.

Weight-only: an absmean scale is a statistic of the whole tensor, which a static activation
quantizer cannot compute ahead of time; ``weight_only`` marks it so a precision menu can refuse
it as an activation format.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nasq.formats.base import MIN_AMAX
from nasq.formats.integer import SymmetricInt, _per_scale

if TYPE_CHECKING:  # pragma: no cover
    import torch


class Ternary(SymmetricInt):
    """``clip(round(x / s), -1, 1) · s`` with ``s = mean|x|`` per row of ``amax``'s shape (per
    tensor or per output channel; only ``amax``'s shape is used).

    Idempotence: absmean of an already ternary row (values 0 and ±m) is m × the fraction of
    nonzeros, not m, so a row whose nonzero magnitudes are all equal keeps that magnitude as its
    scale: a ternary tensor is a fixed point (q(q(x)) == q(x)), and weights refined on the grid
    (nasq.export.refine) export as they are."""

    weight_only = True
    reads_amax = False  # only its shape: the scale is the rows' absmean

    def __init__(self, name: str = "ternary"):
        super().__init__(name, 2)
        self.scale_method = "absmean"  # not "max": the largest weights are clipped to the scale

    def clip_amax(self, x: torch.Tensor, amax: torch.Tensor) -> torch.Tensor:
        import torch

        rows = _per_scale(x.detach(), amax).abs()
        mean = rows.mean(1)
        top = rows.amax(1)
        # a row on a ternary grid already: every element is 0 or the row's largest magnitude, that
        # is min(|x|, top - |x|) is 0 throughout (exact: top - |x| is 0 only where |x| == top; a
        # NaN stays NaN); two float passes where two comparisons, an or and an all took three times as long
        d = top[:, None] - rows
        on_grid = torch.minimum(d, rows).amax(1) == 0
        return mean.where(~on_grid, top).clamp_min(MIN_AMAX).reshape(amax.shape).to(amax.dtype)
