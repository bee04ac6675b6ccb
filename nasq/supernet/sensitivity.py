"""Per-layer quantization sensitivity of a trained supernet's subnet (torch + numpy only).

For a reference subnet (by default the largest architecture at fp32) and each of its active
layer slots (``stage{i}.layer{j}``, the unit that carries a ``w_format``/``a_format`` gene pair):

- ``trace``: Hutchinson estimate of the trace of the training loss's Hessian with respect to the
  slot's weights, ``E[v^T H v]`` over Rademacher ``v``, Hessian-vector products by double
  backprop (HAWQ-v2, Dong et al. 2020), averaged over a few calibration batches; seeded;
- ``fisher``: the empirical Fisher trace, the sum of squared loss gradients of those weights,
  averaged over the same batches;
- per format ``f``: ``proxy_delta = trace / n * ||Q_f(w) - w||^2`` (HAWQ-v2's second-order
  estimate of the loss increase when the slot's ``n`` weights take format ``f``), and
  ``top1_drop``: the measured top-1 loss (percentage points) on a fixed validation subset when
  that slot alone takes ``f`` for weights and activations, every other layer fp32.

Hessian and Fisher are taken on the static subnet extracted from the supernet (plain tensors,
exactly the active weights), batch norm folded as in evaluation; the measured drops go through the
supernet with recalibration, like every true evaluation (:mod:`nasq.supernet.evaluate`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nasq.formats import get_format
from nasq.space import SearchSpace, SubnetSpec
from nasq.space.types import LayerChoice
from nasq.supernet.evaluate import evaluate_spec
from nasq.supernet.layers import StaticQConv, per_channel_amax
from nasq.supernet.network import Supernet

COLUMNS = ("trace", "fisher", "proxy_delta", "top1_drop")
REFERENCE_FORMAT = "fp32"


@dataclass
class LayerSensitivity:
    name: str  # stage{i}.layer{j}
    params: int  # active weights of the slot
    trace: float
    fisher: float
    proxy_delta: dict[str, float] = field(default_factory=dict)  # format -> estimate
    top1_drop: dict[str, float] = field(default_factory=dict)  # format -> measured drop (points)


@dataclass
class SensitivityResult:
    reference: SubnetSpec
    base_top1: float
    formats: tuple[str, ...]
    layers: list[LayerSensitivity]

    def rows(self) -> list[dict[str, float | str]]:
        """One row per (layer, format): the artifact's CSV table."""
        return [{"layer": s.name, "format": f, "trace": s.trace, "fisher": s.fisher,
                 "proxy_delta": s.proxy_delta[f], "top1_drop": s.top1_drop[f]}
                for s in self.layers for f in self.formats]


def slot_names(spec: SubnetSpec) -> list[str]:
    return [f"stage{i}.layer{j}" for i, stage in enumerate(spec.stages) for j in range(len(stage))]


def with_formats(spec: SubnetSpec, formats: dict[str, tuple[str, str]], default: tuple[str, str] | None = None
                 ) -> SubnetSpec:
    """``spec`` with slot ``name`` taking ``formats[name]`` (w, a); other slots ``default`` (or unchanged)."""
    stages = []
    for i, stage in enumerate(spec.stages):
        layers = []
        for j, layer in enumerate(stage):
            w, a = formats.get(f"stage{i}.layer{j}", default or (layer.w_format, layer.a_format))
            layers.append(LayerChoice(w, a, layer.arch))
        stages.append(tuple(layers))
    return SubnetSpec(tuple(stages), spec.widths, spec.resolution)


def reference_spec(space: SearchSpace) -> SubnetSpec:
    """The largest architecture, every layer fp32."""
    return with_formats(space.largest(), {}, (REFERENCE_FORMAT, REFERENCE_FORMAT))


def slot_weights(model: nn.Module) -> list[list[torch.Tensor]]:
    """Per active slot of an extracted subnet (its ``blocks``, in order), the weights its format
    quantizes: every quantized conv/linear of the block."""
    return [[m.conv.weight for m in block.modules() if isinstance(m, StaticQConv)] for block in model.blocks]


def rademacher(like: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return torch.randint(0, 2, like.shape, generator=gen, dtype=torch.int64).to(like.dtype).mul_(2).sub_(1)


def hutchinson_traces(loss_fn: Callable[[], torch.Tensor], groups: list[list[torch.Tensor]], probes: int,
                      gen: torch.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Per group of parameters: (Hutchinson trace of the Hessian of ``loss_fn()``, sum of squared
    gradients), one loss evaluation. ``probes`` Rademacher vectors drawn from ``gen``."""
    flat = [p for g in groups for p in g]
    loss = loss_fn()
    grads = torch.autograd.grad(loss, flat, create_graph=True)
    sizes = [len(g) for g in groups]
    fisher = np.array([sum(float(gr.detach().pow(2).sum()) for gr in part) for part in _split(grads, sizes)])
    traces = np.zeros(len(groups))
    for _ in range(probes):
        vs = [rademacher(p, gen) for p in flat]
        hv = torch.autograd.grad(grads, flat, grad_outputs=vs, retain_graph=True)
        prods = [float((v * h).sum()) for v, h in zip(vs, hv, strict=True)]
        traces += np.array([sum(part) for part in _split(prods, sizes)])
    return traces / max(probes, 1), fisher


def _split(items, sizes: list[int]) -> list[list]:
    out, lo = [], 0
    for n in sizes:
        out.append(list(items[lo: lo + n]))
        lo += n
    return out


def quant_error(weights: list[torch.Tensor], fmt_name: str) -> float:
    """``||Q_f(w) - w||^2`` over ``weights``, per-channel scales as the supernet quantizes them."""
    fmt = get_format(fmt_name)
    if fmt.is_identity:
        return 0.0
    with torch.no_grad():
        return float(sum((fmt.fake_quant(w, per_channel_amax(w)) - w).pow(2).sum() for w in weights))


def measure(net: Supernet, space: SearchSpace, formats: tuple[str, ...], calib: list[torch.Tensor],
            loss_batches: list[tuple[torch.Tensor, torch.Tensor]], val_x: np.ndarray, val_y: np.ndarray, *,
            seed: int = 0, probes: int = 4, reference: SubnetSpec | None = None,
            progress: Callable[[str], None] | None = None) -> SensitivityResult:
    """The sensitivity table of ``reference`` (default :func:`reference_spec`); see the module
    docstring. ``calib``: recalibration batches; ``loss_batches``: (images, labels) for the
    Hessian and Fisher; ``val_x``/``val_y``: the fixed validation subset of the measured drops."""
    spec = reference or reference_spec(space)
    gen = torch.Generator().manual_seed(seed)
    base = evaluate_spec(net, spec, calib, val_x, val_y)
    model = net.extract()
    groups = slot_weights(model)
    for p in model.parameters():
        p.requires_grad_(False)
    for g in groups:
        for w in g:
            w.requires_grad_(True)
    traces, fisher = np.zeros(len(groups)), np.zeros(len(groups))
    for xb, yb in loss_batches:
        t, f = hutchinson_traces(lambda xb=xb, yb=yb: F.cross_entropy(model(xb), yb), groups, probes, gen)
        traces, fisher = traces + t, fisher + f
    n = max(len(loss_batches), 1)
    traces, fisher = traces / n, fisher / n
    names = slot_names(spec)
    layers, seen = [], {spec.key(): base}
    for k, name in enumerate(names):
        count = sum(w.numel() for w in groups[k])
        s = LayerSensitivity(name, count, float(traces[k]), float(fisher[k]))
        for fmt in formats:
            s.proxy_delta[fmt] = float(traces[k]) / count * quant_error(groups[k], fmt)
            probe = with_formats(spec, {name: (fmt, fmt)})
            if probe.key() not in seen:
                seen[probe.key()] = evaluate_spec(net, probe, calib, val_x, val_y)
            s.top1_drop[fmt] = base - seen[probe.key()]
            if progress is not None:
                progress(f"{name} {fmt}")
        layers.append(s)
    net.set_active(spec)
    return SensitivityResult(spec, base, tuple(formats), layers)


__all__ = ["COLUMNS", "LayerSensitivity", "SensitivityResult", "hutchinson_traces", "measure",
           "quant_error", "reference_spec", "slot_names", "with_formats"]
