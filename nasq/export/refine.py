"""Post-training refinement of a static subnet before export (torch and numpy only, so it runs
on a GPU machine that has nothing else): ``refine_subnet(model, calib, kind)``.

Protocol (sequential reconstruction, AdaRound's layer-wise objective): layer by layer in
forward order, the layer's input is captured from the *quantized* subnet whose earlier layers are
already refined, and the target is the same layer with its float weight on that same input,
``W x_q``, before its batch norm (for a layer followed by one, under the per-channel gain and
offset that best fit the nearest-rounded output, which the norm absorbs: see ``_affine_fit``);
the kind (:mod:`nasq.export.refiners`) changes the layer. Then
the batch-norm statistics are re-estimated on the calibration images (as the search's evaluation
calibrates them), so the next layer sees the refined layers as the export will compute them.
Inputs are captured by wrapping the layer's ``compute`` (the container of a conv + norm pair
calls it directly), and the forward stops at the captured layer.

Why this target and not the float subnet's own outputs ("asymmetric" reconstruction): nasq
calibrates batch norms on the quantized path, so a float twin with those norms is not a better
model (on the demo it cost every refiner 1-4 points of top-1). For the same reason bias
correction only touches layers without a batch norm after them: re-estimating a norm's running
mean already removes the quantized layer's mean output shift, and would undo a bias change.

Only per-channel integer weights (int2..int8 and variants, ternary) are re-rounded; other
formats are left as they are and counted as skipped (bias correction applies to every quantized
weight format of a layer without a batch norm after it). The refined subnet keeps unfolded batch
norms; the export folds them as for any subnet.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from nasq.errors import NasqError
from nasq.export.lower import conv_bn_pairs
from nasq.export.refine_base import REFINERS, LayerData, Refiner
from nasq.export.refiners import default_options
from nasq.formats import get_format
from nasq.supernet.layers import StaticQConv, per_channel_amax

Progress = Callable[[int, int, str], None]


class NoQuantizedLayerError(NasqError):
    """Refinement asked for on a subnet whose layers all have fp32 weights."""


@dataclass
class RefineReport:
    kind: str
    seconds: float = 0.0
    layers_refined: int = 0
    layers_skipped: int = 0  # formats the kind does not refine (and fp32 layers are not counted)
    layers_kept_nearest: int = 0  # refined, but nearest rounding reconstructed better: kept
    options: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def quantized_layers(model: nn.Module) -> list[tuple[str, StaticQConv]]:
    """The model's layers with a quantized weight format, in forward (definition) order."""
    return [(n, m) for n, m in model.named_modules()
            if isinstance(m, StaticQConv) and not get_format(m.w_format).is_identity]


class _Captured(Exception):
    """Stops the forward once the layer of interest has been seen."""


@torch.no_grad()
def capture(model: nn.Module, layer: StaticQConv, calib: list[torch.Tensor]) -> torch.Tensor:
    """``layer``'s quantized input (its input quantizer applied) on each calibration batch,
    concatenated."""
    got: list[torch.Tensor] = []

    def spy(x: torch.Tensor, norm: nn.Module | None = None) -> torch.Tensor:
        got.append(layer.quantize_input(x))
        raise _Captured

    layer.compute = spy  # an instance attribute shadows the method for this layer only
    try:
        for xb in calib:
            try:
                model(xb)
            except _Captured:
                pass
    finally:
        del layer.compute
    return torch.cat(got)


@torch.no_grad()
def _target(layer: StaticQConv, x: torch.Tensor, chunk: int = 256, nearest: bool = False) -> torch.Tensor:
    """The layer's output with its float (or ``nearest``-rounded) weight on the quantized input."""
    w = layer.conv.weight.detach()
    if nearest:
        w = get_format(layer.w_format).quantize(w, per_channel_amax(w))
    return torch.cat([layer._op(x[lo:lo + chunk], w, layer.conv.bias) for lo in range(0, len(x), chunk)])


def _affine_fit(y: torch.Tensor, y_near: torch.Tensor) -> torch.Tensor:
    """``y`` under the per-output-channel gain and offset that best fit ``y_near`` (least
    squares). The batch norm after the layer absorbs any per-channel gain and offset, so only the
    shape of the float output is worth reconstructing; the raw float output would spend the
    reconstruction on a gain the grid's fixed scale cannot give (ternary: a 4x lower layer error
    and 10 points less top-1 on the demo)."""
    dims = tuple(d for d in range(y.dim()) if d != 1)
    mu, mu_n = y.mean(dims, keepdim=True), y_near.mean(dims, keepdim=True)
    yc = y - mu
    gain = (yc * (y_near - mu_n)).mean(dims, keepdim=True) / yc.pow(2).mean(dims, keepdim=True).clamp_min(1e-12)
    return yc * gain + mu_n


def _op(layer: StaticQConv) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    return lambda x, w: layer._op(x, w, layer.conv.bias)


@torch.no_grad()
def refine_subnet(model: nn.Module, calib: list[torch.Tensor], kind: str, *, seed: int = 0,
                  progress: Progress | None = None, **options: float) -> RefineReport:
    """Refine ``model`` (a static subnet, eval mode) in place on the calibration batches with the
    refinement ``kind`` (``REFINERS``); see the module docstring. ``options`` go to the kind
    (``iters``, ``lr``, ``batch``...). Raises :class:`NoQuantizedLayerError` when no layer has a
    quantized weight format."""
    refiner: Refiner = REFINERS.get(kind)(**options)
    if not quantized_layers(model):
        raise NoQuantizedLayerError(f"refine '{kind}': the subnet has no quantized layer (every weight is fp32)")
    t0 = time.perf_counter()
    model.eval()
    normed = {id(seq[i]) for seq, i in conv_bn_pairs(model)}
    report = RefineReport(kind, options={**default_options(kind), **options})
    layers = quantized_layers(model)
    gen = torch.Generator().manual_seed(seed)
    for i, (name, layer) in enumerate(layers):
        skip = refiner.mean_only and id(layer) in normed
        if refiner.applies(get_format(layer.w_format)) and not skip:
            x = capture(model, layer, calib)
            y = _target(layer, x)
            if id(layer) in normed:
                y = _affine_fit(y, _target(layer, x, nearest=True))
            data = LayerData(x, y, _op(layer), gen, refiner.batch)
            changed = refiner.refine_layer(layer, data)
            report.layers_refined += 1
            report.layers_kept_nearest += not changed
            if changed and normed:
                reestimate_norms(model, calib)
        else:
            report.layers_skipped += 1
        if progress is not None:
            progress(i + 1, len(layers), name)
    report.seconds = round(time.perf_counter() - t0, 3)
    return report


@torch.no_grad()
def reestimate_norms(model: nn.Module, calib: list[torch.Tensor]) -> None:
    """Batch-norm statistics of the conv + norm pairs as the plain average over the calibration
    batches (what ``Supernet.calibrate`` computes), the rest of the model in eval mode."""
    norms = [seq[i + 1] for seq, i in conv_bn_pairs(model)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average
        norm.train()
    try:
        for xb in calib:
            model(xb)
    finally:
        for norm in norms:
            norm.momentum = 0.1
            norm.eval()
