"""The contract of a post-training refiner and the integer grid it works on (torch only).

A refiner changes one quantized layer of a static subnet (a ``StaticQConv`` / ``StaticQLinear``
whose batch norm is already folded) so that its output on calibration data comes closer to a
float target. :class:`Refiner.refine_layer` owns the contract; a kind fills ``_refine``.

The refined weight must be what the export writes. The static layers re-derive their per-channel
scale from the weight itself (``fmt.quantize(w, per_channel_amax(w))``) at every forward and at
export, so a refined weight is stored *on its own grid*: ``refine_layer`` projects the hook's
result with the format and checks that the projection is a fixed point (formats are idempotent).
For max-scaled integer formats the grid's scale is ``max|w| / qmax`` per channel: a refiner that
moves the scale (FlexRound) or the rounding of the largest weight (AdaRound) would silently move
the grid, so each channel's largest weight stays at code ±qmax (:func:`pin_mask`) and the scale
it then carries is the learned one.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from nasq.errors import NasqError
from nasq.formats import MIN_AMAX, NumericFormat, SymmetricInt, Ternary, get_format
from nasq.registry import Registry
from nasq.supernet.layers import StaticQConv, per_channel_amax

REFINERS: Registry[type[Refiner]] = Registry("refinement")


@dataclass
class LayerData:
    """What a refiner sees of one layer: ``x`` its quantized input (the layer's input quantizer
    applied) on the calibration images, ``y`` the target output (the float twin's, before any
    requantizer), ``op(x, w)`` the layer's arithmetic with its bias, a seeded generator and the
    mini-batch size (in images) for gradient steps."""

    x: torch.Tensor
    y: torch.Tensor
    op: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    gen: torch.Generator
    batch: int = 32

    def sample(self) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.randint(len(self.x), (min(self.batch, len(self.x)),), generator=self.gen)
        return self.x[idx], self.y[idx]

    def mse(self, w: torch.Tensor, chunk: int = 256) -> float:
        """Mean squared error of the layer with weight ``w`` against the target, all images."""
        total = 0.0
        with torch.no_grad():
            for lo in range(0, len(self.x), chunk):
                total += float((self.op(self.x[lo:lo + chunk], w) - self.y[lo:lo + chunk]).pow(2).sum())
        return total / max(1, self.y.numel())


def refinable(fmt: NumericFormat) -> bool:
    """Per-channel symmetric integer weights (int2..int8, their MSE/LSQ variants, ternary): the
    formats whose rounding and scale a layer-wise reconstruction can choose."""
    return isinstance(fmt, SymmetricInt)


def grid_scale(fmt: SymmetricInt, w: torch.Tensor) -> torch.Tensor:
    """The per-output-channel step the layer's fake quantizer uses for ``w`` (shape (cout, 1, ...))."""
    amax = per_channel_amax(w).clamp_min(MIN_AMAX)
    return fmt.scale(fmt.clip_amax(w, amax)).float()


def pin_mask(fmt: SymmetricInt, w: torch.Tensor) -> torch.Tensor:
    """True at each channel's largest |w| for max-scaled formats (their grid is set by it, see the
    module docstring); all False for ternary (its grid follows any nonzero code) and clipping
    formats (whose grid the final projection re-derives)."""
    if isinstance(fmt, Ternary) or fmt.scale_method != "max":
        return torch.zeros_like(w, dtype=torch.bool)
    rows = w.detach().abs().reshape(w.shape[0], -1)
    mask = torch.zeros_like(rows, dtype=torch.bool)
    mask[torch.arange(rows.shape[0]), rows.argmax(1)] = True
    return mask.reshape(w.shape)


def nearest_codes(fmt: SymmetricInt, w: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    return (w * s.reciprocal()).round().clamp(fmt.qmin, fmt.qmax)


def project(fmt: NumericFormat, w: torch.Tensor) -> torch.Tensor:
    """``w`` as the layer will compute it; raises if that is not a fixed point of the format."""
    final = fmt.quantize(w, per_channel_amax(w))
    if not torch.equal(fmt.quantize(final, per_channel_amax(final)), final):
        raise NasqError(f"format '{fmt.name}': a refined weight is not on its own grid (q(q(w)) != q(w))")
    return final


class Refiner(abc.ABC):
    """Base class. ``refine_layer`` is called once per quantized layer, in forward order, with
    the layer's input already produced by the refined layers before it (sequential
    reconstruction). It calls ``_refine``, projects the weight it returns onto the format's grid,
    and keeps the nearest-rounded weight instead when the result reconstructs the calibration
    target worse (a few hundred steps are a budget, not a guarantee). Returns whether the layer
    changed."""

    name: str = ""
    all_formats = False  # True: any quantized weight format, not only per-channel integers
    mean_only = False  # True: only the mean output changes (layers with a batch norm are skipped)

    def __init__(self, iters: int = 300, lr: float | None = None, batch: int = 32):
        self.iters, self.batch = iters, batch
        self.lr = lr if lr is not None else self.default_lr

    default_lr = 1e-2

    def applies(self, fmt: NumericFormat) -> bool:
        return not fmt.is_identity and (self.all_formats or refinable(fmt))

    def refine_layer(self, layer: StaticQConv, data: LayerData) -> bool:
        fmt = get_format(layer.w_format)
        w = layer.conv.weight.detach().clone()
        with torch.enable_grad():
            new_w = self._refine(layer, w, fmt, data)
        if new_w is None:
            return True
        new_w = project(fmt, new_w.detach())
        if data.mse(new_w) > data.mse(fmt.quantize(w, per_channel_amax(w))):
            return False
        with torch.no_grad():
            layer.conv.weight.copy_(new_w)
        return True

    @abc.abstractmethod
    def _refine(self, layer: StaticQConv, w: torch.Tensor, fmt: NumericFormat, data: LayerData) -> torch.Tensor | None:
        """The refined float weight for ``layer`` (any values; the base projects them onto the
        grid), or None after changing something else in place (the bias)."""


def add_bias(layer: StaticQConv, delta: torch.Tensor) -> None:
    """Add ``delta`` (one value per output channel) to the layer's bias, creating it if absent."""
    conv = layer.conv
    if conv.bias is None:
        conv.bias = nn.Parameter(torch.zeros(conv.weight.shape[0]))
    with torch.no_grad():
        conv.bias.add_(delta.to(conv.bias.dtype))
