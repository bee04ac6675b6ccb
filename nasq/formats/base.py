"""The NumericFormat contract, the registry, and the formats that need no scale.

Metadata is torch-free so the cost model and the search never import torch; torch is imported
inside the quantizing methods only.
"""

from __future__ import annotations

import abc
import functools
import math
from typing import TYPE_CHECKING, Any, Literal

from nasq.formats import native
from nasq.formats.floatbits import FP32, FloatLayout
from nasq.formats.native import plain_ops
from nasq.registry import Registry

if TYPE_CHECKING:  # pragma: no cover
    import torch

FormatKind = Literal["none", "int", "float", "block"]
# How a layer in this format reaches ONNX: not at all (identity), as int8 QuantizeLinear /
# DequantizeLinear pairs, or as pre-quantized weights and elementwise rounding of activations.
ExportMode = Literal["identity", "qdq_int8", "dequantized"]

FORMATS: Registry[NumericFormat] = Registry("format")

SCALE_BITS = 32  # one fp32 scale per output channel (weights) or per tensor (activations)
MIN_AMAX = 1e-12  # an all-zero tensor still gets a positive scale


class NumericFormat(abc.ABC):
    """Base class. ``fake_quant`` owns the contract (default range, straight-through gradient);
    subclasses fill ``_quantize``, which maps a tensor and its absolute max (broadcastable) to
    representable values, with no gradient bookkeeping.

    ``amax`` is the range the caller measured: a scalar for per-tensor activations, shaped
    ``(cout, 1, 1, 1)`` for per-channel weights. Formats with their own finer scales (per group,
    per block) use only its shape or ignore it."""

    name: str
    bits: int
    kind: FormatKind
    export_mode: ExportMode = "dequantized"
    learns_scale: bool = False  # LSQ: gradients reach an ``amax`` that requires grad
    # False where ``_quantize`` reads only ``amax``'s shape, or nothing of it (block and group
    # scales, ranges measured on the tensor): ``fake_quant`` then skips measuring the maximum
    reads_amax: bool = True

    @property
    def is_identity(self) -> bool:
        return self.kind == "none"

    def effective_bits(self, elements_per_scale: int | None = None) -> float:
        """Bits per element including scale storage, for ``elements_per_scale`` elements per scale."""
        if self.is_identity or not elements_per_scale:
            return float(self.bits)
        return self.bits + SCALE_BITS / elements_per_scale

    def storage_bits(self, params: int, channels: int) -> float:
        """Bits to store ``params`` weights of ``channels`` output channels (scales included).
        Default: one fp32 scale per output channel."""
        return float(params * self.bits + channels * SCALE_BITS)

    def fake_quant(self, x: torch.Tensor, amax: torch.Tensor | None = None) -> torch.Tensor:
        """Quantize-dequantize ``x``; gradients pass straight through. ``amax`` defaults to the
        tensor's own absolute maximum (per tensor); pass a per-channel one shaped for broadcast.
        A format that learns its scale, given an ``amax`` that requires grad, trains it (LSQ)."""
        if self.is_identity:
            return x
        if amax is not None and self.learns_scale and amax.requires_grad:
            import torch

            if torch.is_grad_enabled():
                return self._learned_step(x, amax)
        if amax is None:
            amax = abs_max(x.detach()) if self.reads_amax else x.detach().new_ones(())
        amax = amax.detach().clamp_min(MIN_AMAX)
        if not x.requires_grad:  # evaluation: skip the straight-through bookkeeping
            return self._quantize(x, amax)
        return straight_through(x, self._training_quantize(x.detach(), amax))

    def quantize(self, x: torch.Tensor, amax: torch.Tensor | None = None) -> torch.Tensor:
        """Quantize-dequantize without autograd (for weight export and tests)."""
        import torch

        with torch.no_grad():
            return self.fake_quant(x, amax)

    @abc.abstractmethod
    def _quantize(self, x: torch.Tensor, amax: torch.Tensor) -> torch.Tensor:
        """Called by ``fake_quant`` with a detached tensor and a positive ``amax``."""

    def _training_quantize(self, x: torch.Tensor, amax: torch.Tensor) -> torch.Tensor:
        """``_quantize`` as training calls it (``x`` required grad): a format may take a cheaper
        estimate of its scale there (``*_mse`` does); by default the same."""
        return self._quantize(x, amax)

    def _learned_step(self, x: torch.Tensor, amax: torch.Tensor) -> torch.Tensor:
        """Called by ``fake_quant`` instead of ``_quantize`` when ``learns_scale`` is set and
        ``amax`` requires grad; must return the same values with LSQ gradients."""
        raise NotImplementedError(f"{self.name} does not learn its scale")

    def export_activation(self, x: torch.Tensor, amax: torch.Tensor) -> torch.Tensor:
        """The same values as ``fake_quant(x, amax)``, written with ops the ONNX exporter maps to
        standard ONNX operators (QuantizeLinear/DequantizeLinear for int8)."""
        return self._quantize(x, amax.clamp_min(MIN_AMAX))

    def dynamic_range_db(self) -> float:
        """20·log10 of the largest over the smallest positive magnitude one scale can express."""
        return math.inf

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class Passthrough(NumericFormat):
    kind: FormatKind = "none"
    export_mode: ExportMode = "identity"

    def __init__(self, name: str, bits: int):
        self.name, self.bits = name, bits
        self.layout = FP32

    def storage_bits(self, params, channels):
        return float(params * self.bits)

    def _quantize(self, x, amax):
        return x

    def dynamic_range_db(self) -> float:
        return 20 * math.log10(self.layout.max_value / self.layout.min_subnormal)


class CastFloat(NumericFormat):
    """IEEE-like formats torch can cast to (bf16, fp16): no scale; round-to-nearest-even and,
    unlike a bare cast, saturating at the largest finite value instead of overflowing to inf."""

    kind: FormatKind = "float"

    def __init__(self, name: str, layout: FloatLayout):
        if layout.torch_dtype is None:
            raise ValueError(f"{name}: CastFloat needs a layout torch can cast to")
        self.name, self.bits, self.layout = name, layout.bits, layout
        self.dtype_name = layout.torch_dtype

    def effective_bits(self, elements_per_scale: int | None = None) -> float:
        return float(self.bits)

    def storage_bits(self, params, channels):
        return float(params * self.bits)

    def fake_quant(self, x, amax=None):
        q = self._quantize(x.detach(), None)
        if not x.requires_grad:
            return q
        return straight_through(x, q)

    def _quantize(self, x, amax):
        import torch

        m = self.layout.max_value
        return x.clamp(-m, m).to(getattr(torch, self.dtype_name)).to(x.dtype)

    def export_activation(self, x, amax):
        return self._quantize(x, None)

    def dynamic_range_db(self) -> float:
        return 20 * math.log10(self.layout.max_value / self.layout.min_subnormal)


def abs_max(x: torch.Tensor) -> torch.Tensor:
    """``x.abs().amax()``; on CPU in one fused pass where the kernels apply (the same value)."""
    if native.applies_rows(x, 1):
        m = native.abs_max(x)
        if m is not None:
            return m
    return x.abs().amax()


def scale_back(q: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """``q * s``, in place on ``q`` (a fresh tensor of the caller's) where that gives the same
    dtype and values: not while exporting or compiling, nor when ``s`` would promote ``q``."""
    import torch

    if plain_ops() or torch.result_type(q, s) != q.dtype:
        return q * s
    return q.mul_(s)


def straight_through(x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """The values of ``q``, the gradient of ``x`` (``q`` holds no graph). In eager mode one
    autograd function that returns ``q`` as it is and hands the gradient through: no full-size pass
    in either direction (``x + (q - x).detach()`` took two forward, and its values could differ
    from ``q`` in the last bit). While exporting or compiling, that plain expression, which the
    exporter and the compiler know."""

    if plain_ops():
        return x + (q - x.detach())
    if q.untyped_storage().data_ptr() == x.untyped_storage().data_ptr():
        q = q.clone()  # a format that returned its input: never hand back ``x``'s storage
    # Passed boxed, not as an input, and detached (no view of another tensor): the output is then
    # a tensor of its own to autograd, which later in-place ops may modify.
    return _straight_through_function().apply(x, [q.detach()])


@functools.cache
def _straight_through_function() -> Any:
    """The autograd function behind :func:`straight_through`, built on first use (importing this
    module must not import torch)."""
    import torch

    class StraightThrough(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, box):
            return box[0]

        @staticmethod
        def backward(ctx, grad):
            return grad, None

    return StraightThrough


def to_blocks(x: torch.Tensor, block: int) -> tuple[torch.Tensor, int]:
    """View ``x`` as rows (dim 0 × the rest flattened; one row for a 1-D tensor) cut into blocks
    of ``block`` consecutive elements, zero-padding the end of each row. Returns the blocks,
    shaped (rows, blocks per row, block), and the row length before padding.

    For a conv weight (cout, cin, kh, kw) the blocks run along the reduction (cin·kh·kw) as in
    im2col; an activation (N, C, H, W) is blocked along C·H·W of each sample. Only standard ONNX
    ops (Reshape, Pad), so block formats export as they compute."""
    import torch.nn.functional as F

    rows = x.reshape(x.shape[0], -1) if x.dim() >= 2 else x.reshape(1, -1)
    n = rows.shape[1]
    pad = -n % block
    if pad:
        rows = F.pad(rows, (0, pad))
    return rows.reshape(rows.shape[0], -1, block), n


def from_blocks(blocks: torch.Tensor, n: int, like: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`to_blocks`: drop the padding and restore ``like``'s shape, and in eager
    mode its channels-last layout (image activations): a convolution fed the other layout converts
    its input and its gradient, each a pass more."""
    import torch

    rows = blocks.reshape(blocks.shape[0], -1)
    if rows.shape[1] != n:
        rows = rows[:, :n]
    out = rows.reshape(like.shape)
    if like.dim() == 4 and not plain_ops() and not like.is_contiguous() \
            and like.is_contiguous(memory_format=torch.channels_last):
        return out.contiguous(memory_format=torch.channels_last)
    return out
