"""The registered refinement kinds (see :mod:`nasq.export.refine_base` for the contract).

* ``none``: nothing changes (the export's default).
* ``bias_correction`` (Nagel et al. 2019/2021, empirical): per output channel, add the mean of
  ``y_float - y_quant`` over the calibration images and positions to the bias.
* ``adaround`` (Nagel et al. 2020): each weight rounds down or up, chosen by a rectified sigmoid
  ``h(V)`` trained to reconstruct the layer's output, with the regulariser
  ``1 - |2h - 1|^beta`` (beta annealed 20 -> 2 after a 20 % warm-up) pushing ``h`` to 0 or 1.
* ``flexround`` (Lee et al. 2023): ``W_q = s1 · round(W / (s1 · S2 · s3 · s4))`` with a learned
  per-channel scale ``s1``, element-wise divisor ``S2`` and, for convs, per-output ``s3`` and
  per-input ``s4`` divisors (all in log space, straight-through rounding).
* ``quantease`` (Behdin et al. 2023): cyclic coordinate descent on the layer-wise quadratic
  ``||Y - W_q X||^2``: each weight in turn takes the quantized value of its exact 1-D minimiser.

Every gradient-based kind draws its mini-batches from the layer's seeded generator.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from nasq.export.refine_base import (
    REFINERS,
    LayerData,
    Refiner,
    add_bias,
    grid_scale,
    nearest_codes,
    pin_mask,
)
from nasq.formats import NumericFormat, SymmetricInt
from nasq.supernet.layers import StaticQConv, StaticQLinear, per_channel_amax

ZETA, GAMMA = 1.1, -0.1  # AdaRound's rectified-sigmoid stretch
WARMUP = 0.2  # fraction of AdaRound steps without the rounding regulariser
BETA = (20.0, 2.0)  # AdaRound's annealed regulariser exponent, start and end


@REFINERS.register("none")
class NoRefiner(Refiner):
    name = "none"

    def applies(self, fmt: NumericFormat) -> bool:
        return False

    def _refine(self, layer, w, fmt, data):
        return None


def _channel_mean(t: torch.Tensor) -> torch.Tensor:
    return t.mean(dim=tuple(d for d in range(t.dim()) if d != 1))


@REFINERS.register("bias_correction")
class BiasCorrection(Refiner):
    name = "bias_correction"
    all_formats, mean_only = True, True

    def _refine(self, layer, w, fmt, data):
        wq = fmt.quantize(w, per_channel_amax(w))
        with torch.no_grad():
            shift = sum(_channel_mean(data.y[lo:lo + 256] - data.op(data.x[lo:lo + 256], wq)) * len(data.x[lo:lo + 256])
                        for lo in range(0, len(data.x), 256)) / len(data.x)
        add_bias(layer, shift)
        return None


def _rect_sigmoid(v: torch.Tensor) -> torch.Tensor:
    return (torch.sigmoid(v) * (ZETA - GAMMA) + GAMMA).clamp(0, 1)


def _relative(data: LayerData, xb: torch.Tensor, yb: torch.Tensor, w: torch.Tensor, ref: float) -> torch.Tensor:
    return (data.op(xb, w) - yb).pow(2).mean() / ref


@REFINERS.register("adaround")
class AdaRound(Refiner):
    name = "adaround"
    default_lr = 1e-2

    def __init__(self, iters: int = 300, lr: float | None = None, batch: int = 32, reg: float = 0.01):
        super().__init__(iters, lr, batch)
        self.reg = reg

    def _refine(self, layer, w, fmt: SymmetricInt, data):
        s = grid_scale(fmt, w)
        v = w / s
        floor, pin = v.floor(), pin_mask(fmt, w)
        near = nearest_codes(fmt, w, s)
        frac = (v - floor).clamp(0.01, 0.99)  # h(V) starts at the fractional part
        param = nn.Parameter(-torch.log((ZETA - GAMMA) / (frac - GAMMA) - 1))
        opt = torch.optim.Adam([param], lr=self.lr)
        ref = max(data.mse(near * s), 1e-12)
        warm = int(WARMUP * self.iters)

        def weight(h: torch.Tensor) -> torch.Tensor:
            return torch.where(pin, near, (floor + h).clamp(fmt.qmin, fmt.qmax)) * s

        for t in range(self.iters):
            h = _rect_sigmoid(param)
            loss = _relative(data, *data.sample(), weight(h), ref)
            if t >= warm:
                beta = BETA[1] + (BETA[0] - BETA[1]) * (1 - (t - warm) / max(1, self.iters - warm))
                loss = loss + self.reg * (1 - (2 * h - 1).abs().pow(beta)).sum() / max(1, w.shape[0])
            opt.zero_grad()
            loss.backward()
            opt.step()
        return weight((param.detach() >= 0).float())  # h >= 0.5 exactly where V >= 0


def _round_ste(v: torch.Tensor) -> torch.Tensor:
    return v + (v.round() - v).detach()


@REFINERS.register("flexround")
class FlexRound(Refiner):
    name = "flexround"
    default_lr = 3e-3

    def _refine(self, layer, w, fmt: SymmetricInt, data):
        s0, pin = grid_scale(fmt, w), pin_mask(fmt, w)
        top = torch.sign(w) * fmt.qmax
        log_s1 = nn.Parameter(torch.zeros_like(s0))
        log_s2 = nn.Parameter(torch.zeros_like(w))
        extra = [nn.Parameter(torch.zeros(w.shape[0], *([1] * (w.dim() - 1))))]  # s3: per output
        if w.dim() == 4 and w.shape[1] > 1:  # s4: per input channel of a conv
            extra.append(nn.Parameter(torch.zeros(1, w.shape[1], 1, 1)))
        opt = torch.optim.Adam([log_s1, log_s2, *extra], lr=self.lr)
        ref = max(data.mse(nearest_codes(fmt, w, s0) * s0), 1e-12)

        def weight(ste: bool) -> torch.Tensor:
            s1 = s0 * log_s1.exp()
            v = w / (s1 * (log_s2 + sum(extra)).exp())
            codes = (_round_ste(v) if ste else v.round()).clamp(fmt.qmin, fmt.qmax)
            return torch.where(pin, top, codes) * s1

        for _ in range(self.iters):
            loss = _relative(data, *data.sample(), weight(True), ref)
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            return weight(False)


def _columns(layer: StaticQConv, x: torch.Tensor, y: torch.Tensor, bias: torch.Tensor | None):
    """The layer as grouped matrix products: inputs X (G, D, M), targets less the bias Y (G, R, M),
    so that ``Y ≈ W X`` with W (G, R, D) the weight of each group."""
    if bias is not None:
        y = y - bias.reshape(1, -1, *([1] * (y.dim() - 2)))
    if isinstance(layer, StaticQLinear):
        return x.reshape(-1, x.shape[-1]).T[None], y.reshape(-1, y.shape[-1]).T[None]
    conv = layer.conv
    g = conv.groups
    cols = F.unfold(x, conv.kernel_size, padding=conv.padding, stride=conv.stride)  # (N, cin·k·k, L)
    n, d, m = cols.shape[0], cols.shape[1] // g, cols.shape[2]
    xs = cols.reshape(n, g, d, m).permute(1, 2, 0, 3).reshape(g, d, n * m)
    ys = y.reshape(n, g, y.shape[1] // g, m).permute(1, 2, 0, 3).reshape(g, y.shape[1] // g, n * m)
    return xs, ys


@REFINERS.register("quantease")
class QuantEase(Refiner):
    """``iters`` is the number of full passes over the coordinates; ``damp`` adds that fraction
    of the mean diagonal of ``X Xᵀ`` (the inputs may be rank-deficient)."""

    name = "quantease"

    def __init__(self, iters: int = 4, lr: float | None = None, batch: int = 32, damp: float = 0.01,
                 max_columns: int = 200_000):
        super().__init__(iters, lr, batch)
        self.damp, self.max_columns = damp, max_columns

    @torch.no_grad()
    def _refine(self, layer, w, fmt: SymmetricInt, data):
        xs, ys = _columns(layer, data.x, data.y, layer.conv.bias)
        if xs.shape[-1] > self.max_columns:  # a seeded subset of positions keeps H cheap
            keep = torch.randperm(xs.shape[-1], generator=data.gen)[: self.max_columns]
            xs, ys = xs[..., keep], ys[..., keep]
        h = xs @ xs.transpose(1, 2)
        h = h + self.damp * h.diagonal(dim1=1, dim2=2).mean(-1).clamp_min(1e-12)[:, None, None] * torch.eye(h.shape[-1])
        c = ys @ xs.transpose(1, 2)  # (G, R, D)
        g, d = h.shape[0], h.shape[-1]
        s = grid_scale(fmt, w).reshape(g, -1, 1)
        pin = pin_mask(fmt, w).reshape(g, -1, d)
        wq = nearest_codes(fmt, w, grid_scale(fmt, w)).reshape(g, -1, d) * s
        for _ in range(self.iters):
            for j in range(d):
                hj = h[:, :, j]  # (G, D)
                r = c[..., j] - (wq @ hj[..., None]).squeeze(-1) + wq[..., j] * hj[:, j, None]
                target = r / hj[:, j, None]
                new = (target / s[..., 0]).round().clamp(fmt.qmin, fmt.qmax) * s[..., 0]
                wq[..., j] = torch.where(pin[..., j], wq[..., j], new)
        return wq.reshape(w.shape)


def default_options(kind: str) -> dict[str, float]:
    """The defaults, for the manifest (what was run)."""
    cls = REFINERS.get(kind)
    obj = cls()
    return {k: v for k, v in vars(obj).items() if isinstance(v, int | float) and not math.isnan(v)}
