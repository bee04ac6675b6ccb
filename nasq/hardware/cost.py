"""The cost model: size, BOPs and latency of subnets on one hardware profile (roofline, or the
profile's measured latency predictor), and :class:`TargetsCostModel` over several profiles. The
roofline estimate is marked ``modelled`` wherever it is shown."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from nasq.formats import FORMATS, size_bits
from nasq.hardware.profile import HardwareProfile
from nasq.space import LayerShape, SearchSpace, SubnetSpec

BIAS_BITS = 32  # folded batch-norm bias, one fp32 per output channel


def layer_bits(layer: LayerShape) -> float:
    """Stored bits of one layer: weights in their format with scales, plus an fp32 bias per channel
    (an attention matmul stores nothing)."""
    if not layer.has_bias:
        return 0.0
    return size_bits(layer.w_format, layer.params, layer.cout) + layer.cout * BIAS_BITS


def compute_format(w_format: str, a_format: str) -> str:
    """Kernels run at the wider of the two formats (a narrower operand is widened first)."""
    w, a = FORMATS.get(w_format), FORMATS.get(a_format)
    return w_format if w.bits >= a.bits else a_format


class CostModel:
    """Scores subnets of one space on one profile. Results are cached by canonical key.

    ``latency_ms`` (a measured profile's ``LatencyPredictor.predict``, see
    nasq.predict.latency.load_profile_predictor) replaces the roofline latency when
    given; size and BOPs stay analytic."""

    def __init__(self, space: SearchSpace, profile: HardwareProfile,
                 latency_ms: Callable[[list[SubnetSpec]], np.ndarray] | None = None):
        profile.check_space(space)
        self.space, self.profile, self.latency_ms = space, profile, latency_ms
        self._cache: dict[str, tuple[float, float, float]] = {}

    @property
    def latency_source(self) -> str:
        """How ``latency_ms`` is obtained, for reports."""
        if self.latency_ms is not None:
            return "measured table + fitted correction"
        return f"roofline ({self.profile.config.status})"

    def layer_latency_us(self, layer: LayerShape, prev_a_format: str) -> float:
        cfg = self.profile.config
        fmt = compute_format(layer.w_format, layer.a_format)
        rate = cfg.peak_gops[fmt]
        if layer.op == "dwconv":
            rate = cfg.depthwise_peak_gops.get(fmt, rate * cfg.depthwise_efficiency)
        compute_us = 2.0 * layer.macs / (rate * 1e3)
        w_bytes = size_bits(layer.w_format, layer.params, layer.cout) / 8 if layer.params else 0.0
        a_bytes = layer.in_elements * FORMATS.get(layer.a_format).bits / 8
        out_bytes = layer.out_elements * 4
        memory_us = (w_bytes + a_bytes + out_bytes) / (cfg.memory_gbs * 1e3)
        transition_us = 0.0
        if layer.a_format != prev_a_format:
            transition_us = layer.in_elements * cfg.transition_ns_per_element / 1e3
        return max(compute_us, memory_us) + cfg.layer_overhead_us + transition_us

    def _score_one(self, spec: SubnetSpec) -> tuple[float, float, float]:
        key = spec.key()
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        latency_us, bits, bops = 0.0, 0.0, 0.0
        prev = "fp32"
        for layer in self.space.layer_shapes(spec):
            latency_us += self.layer_latency_us(layer, prev)
            prev = layer.a_format
            bits += layer_bits(layer)
            bops += layer.macs * FORMATS.get(layer.w_format).bits * FORMATS.get(layer.a_format).bits
        out = (latency_us / 1e3, bits / 8 / 1e6, bops / 1e9)
        self._cache[key] = out
        return out

    def score(self, specs: list[SubnetSpec]) -> dict[str, np.ndarray]:
        """``latency_ms``, ``size_mb`` and ``bops_g`` for each spec, as arrays."""
        rows = np.array([self._score_one(s) for s in specs], dtype=np.float64).reshape(-1, 3)
        latency = rows[:, 0] if self.latency_ms is None else np.asarray(self.latency_ms(specs), dtype=np.float64)
        return {"latency_ms": latency, "size_mb": rows[:, 1], "bops_g": rows[:, 2]}


def throughput_ips(latency_ms: np.ndarray, batch: int) -> np.ndarray:
    """Images per second at ``batch``: ``1000 * batch / latency of one batch``. The latency tables and
    rooflines are per image at batch 1, so a batch is taken to cost ``batch`` times one image (no
    batching speed-up is claimed): throughput is ``1000 / latency_ms`` whatever the batch size."""
    batch_ms = np.asarray(latency_ms, dtype=np.float64) * batch
    return 1000.0 * batch / batch_ms


class TargetsCostModel(CostModel):
    """Scores subnets on several hardware profiles at once (the experiment's ``hardware`` list).

    :meth:`score` gives what :class:`CostModel` gives for the first profile (``latency_ms``,
    ``size_mb``, ``bops_g``: size and BOPs do not depend on the profile) and, with ``per_target``,
    also ``throughput_ips`` and, for every profile ``p``, ``latency_ms@p`` and ``throughput_ips@p``
    (at ``p``'s largest batch size, see :func:`throughput_ips`). ``per_target`` is off for an
    experiment that names none of them, so one-target runs keep their columns."""

    def __init__(self, models: list[CostModel], per_target: bool = True):
        if not models:
            raise ValueError("TargetsCostModel needs at least one cost model")
        first = models[0]
        super().__init__(first.space, first.profile, first.latency_ms)
        self.models, self.per_target = list(models), per_target
        self._cache = first._cache  # one cache for the first target's rows

    def score(self, specs: list[SubnetSpec]) -> dict[str, np.ndarray]:
        out = super().score(specs)
        if not self.per_target:
            return out
        out["throughput_ips"] = throughput_ips(out["latency_ms"], self.profile.max_batch)
        for i, model in enumerate(self.models):
            latency = out["latency_ms"] if i == 0 else model.score(specs)["latency_ms"]
            out[f"latency_ms@{model.profile.name}"] = latency
            out[f"throughput_ips@{model.profile.name}"] = throughput_ips(latency, model.profile.max_batch)
        return out
