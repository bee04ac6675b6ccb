"""The cost model: size, BOPs and latency of subnets on one hardware profile (roofline, or the
profile's measured latency predictor), and :class:`TargetsCostModel` over several profiles. The
roofline estimate is marked ``modelled`` wherever it is shown."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from nasq.formats import FORMATS, ScaledFloat, SymmetricInt, size_bits
from nasq.hardware.profile import HardwareProfile
from nasq.space import LayerShape, SearchSpace, SubnetSpec
from nasq.space.search_space import ordered_sum

BIAS_BITS = 32  # folded batch-norm bias, one fp32 per output channel


# A float-kernel conv reading a QuantizeLinear/DequantizeLinear activation reads it through its own
# per-channel DequantizeLinear: an fp32 scale and an 8-bit zero point per input channel.
QDQ_INPUT_BITS = 32 + 8
FP8_ONNX_DTYPES = ("float8_e4m3fn", "float8_e5m2")  # FP8 weights are stored as FLOAT8 initializers
# One ONNX node with its short value names and the scalar constants it reads (scale, zero
# point, clip bounds), as model.onnx stores it: about 48 bytes.
NODE_BITS = 48 * 8
# What every model.onnx stores besides its layers: the graph header (opset, input and output
# declarations), the stem's fp32 nodes, pooling, flatten and the classifier's nodes. Fitted on
# the demo front's exports: file bytes ~= 1.008 x counted bytes + 1,411 (13 subnets, 12-236 KB).
GRAPH_OVERHEAD_BYTES = 1400
ELEMENTWISE_ROUNDING_NODES = 4  # x * (1/s), Round, Clip, * s: an activation format without QDQ
FP8_ELEMENTWISE_NODES = 12  # fp8 activations: Div, Clip x2, Mul x4, Round, Sub x3, Add (formats.floating)


def size_mb_of(bits: float | np.ndarray) -> float | np.ndarray:
    """Megabytes of a model.onnx whose layers store ``bits`` (:func:`layer_bits` summed), the
    fixed :data:`GRAPH_OVERHEAD_BYTES` included."""
    return (bits / 8 + GRAPH_OVERHEAD_BYTES) / 1e6


def layer_bits(layer: LayerShape) -> float:
    """Stored bits of one layer as model.onnx stores it (nasq.export.lower; an attention matmul
    stores nothing):

    * the weights in their format with their scales (:func:`nasq.formats.size_bits`: INT8 / INT4
      / FP8 codes and one fp32 scale per output channel; fp32 weights as they are);
    * one 32-bit bias per output channel: the folded batch norm as fp32, or, for an integer kernel
      (int8 weights on int8 activations), int32 codes whose scale (input scale x weight scale) is
      one Mul of stored scales, not stored again;
    * for a conv that computes in float on an int8 or FP8 activation (any other format pair),
      :data:`QDQ_INPUT_BITS` per input channel: the per-channel DequantizeLinear copy that keeps
      onnxruntime's WeightBiasQuantization off its float weight;
    * its graph nodes, :data:`NODE_BITS` each (:func:`layer_nodes`).

    model.onnx then weighs size_mb within a few per cent for the demo spaces (tests/unit/
    test_lowering.py); the stem, classifier and pooling nodes and the graph's own header are the
    fixed :data:`GRAPH_OVERHEAD_BYTES` every subnet's size_mb adds once."""
    if not layer.has_bias:
        return 0.0
    bits = size_bits(layer.w_format, layer.params, layer.cout) + layer.cout * BIAS_BITS
    return bits + layer_nodes(layer) * NODE_BITS + (QDQ_INPUT_BITS * layer.cin if _float_on_qdq(layer) else 0.0)


def layer_bops(layer: LayerShape) -> int:
    """Bit operations of one layer: MACs x weight bits x activation bits."""
    return layer.macs * FORMATS.get(layer.w_format).bits * FORMATS.get(layer.a_format).bits


def _qdq(fmt: object) -> bool:
    """Activations in ``fmt`` export as one QuantizeLinear/DequantizeLinear pair (int8; fp8
    activations are branch-free elementwise rounding, see nasq.formats.floating)."""
    return fmt.export_mode == "qdq_int8"


def _packed(fmt: object) -> bool:
    """Weights in ``fmt`` are stored as INT8 / INT4 / FLOAT8 codes (nasq.export.lower)."""
    if isinstance(fmt, ScaledFloat):
        return fmt.dtype_name in FP8_ONNX_DTYPES
    return isinstance(fmt, SymmetricInt) and fmt.bits in (4, 8)


def _integer(layer: LayerShape) -> bool:
    return FORMATS.get(layer.a_format).export_mode == "qdq_int8" == FORMATS.get(layer.w_format).export_mode


def _float_on_qdq(layer: LayerShape) -> bool:
    return layer.op in ("conv", "dwconv") and _qdq(FORMATS.get(layer.a_format)) and not _integer(layer)


def layer_nodes(layer: LayerShape) -> int:
    """The ONNX nodes the lowering writes for one layer: the op; its input quantizer (a
    QuantizeLinear/DequantizeLinear pair, or elementwise rounding); the weight's unpacking (one
    DequantizeLinear for an integer kernel, Cast + Mul for a packed weight computing in float);
    a float kernel's per-channel DequantizeLinear copy of a quantized input."""
    a, w = FORMATS.get(layer.a_format), FORMATS.get(layer.w_format)
    nodes = 1
    if _qdq(a):
        nodes += 2
    elif isinstance(a, ScaledFloat) and a.dtype_name in FP8_ONNX_DTYPES:
        nodes += FP8_ELEMENTWISE_NODES
    elif not a.is_identity:
        nodes += ELEMENTWISE_ROUNDING_NODES
    if _integer(layer):
        nodes += 1
    elif _packed(w):
        nodes += 2
    return nodes + int(_float_on_qdq(layer))


def compute_format(w_format: str, a_format: str) -> str:
    """Kernels run at the wider of the two formats (a narrower operand is widened first)."""
    w, a = FORMATS.get(w_format), FORMATS.get(a_format)
    return w_format if w.bits >= a.bits else a_format


class CostModel:
    """Scores subnets of one space on one profile. Results are cached by canonical key.

    ``latency_ms`` (a measured profile's ``LatencyPredictor.predict``, see
    nasq.predict.latency.load_profile_predictor) replaces the roofline latency when
    given; size and BOPs stay analytic.

    :meth:`score_genomes` gives the same values for a genome matrix by array lookups in the
    space's :class:`~nasq.space.layer_table.LayerTable`. Its measured latency comes from
    ``latency_genomes`` (genomes -> ms), or, when ``latency_ms`` is the bound ``predict`` of an
    object that also has ``predict_genomes`` (a LatencyPredictor), from that; any other
    ``latency_ms`` is called on the decoded specs."""

    def __init__(self, space: SearchSpace, profile: HardwareProfile,
                 latency_ms: Callable[[list[SubnetSpec]], np.ndarray] | None = None,
                 latency_genomes: Callable[[np.ndarray], np.ndarray] | None = None):
        profile.check_space(space)
        self.space, self.profile, self.latency_ms = space, profile, latency_ms
        if latency_genomes is None and getattr(latency_ms, "__name__", "") == "predict":
            latency_genomes = getattr(getattr(latency_ms, "__self__", None), "predict_genomes", None)
        self.latency_genomes = latency_genomes
        self._cache: dict[str, tuple[float, float, float]] = {}
        self._columns: dict[str, np.ndarray] | None = None

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
            bops += layer_bops(layer)
        out = (latency_us / 1e3, size_mb_of(bits), bops / 1e9)
        self._cache[key] = out
        return out

    def score(self, specs: list[SubnetSpec]) -> dict[str, np.ndarray]:
        """``latency_ms``, ``size_mb`` and ``bops_g`` for each spec, as arrays."""
        rows = np.array([self._score_one(s) for s in specs], dtype=np.float64).reshape(-1, 3)
        latency = rows[:, 0] if self.latency_ms is None else np.asarray(self.latency_ms(specs), dtype=np.float64)
        return {"latency_ms": latency, "size_mb": rows[:, 1], "bops_g": rows[:, 2]}

    def layer_columns(self) -> dict[str, np.ndarray] | None:
        """Per layer of the space's table (indexed by layer id, 0 at the pad): stored bits
        (:func:`layer_bits`) and BOPs - from the per-layer functions themselves, so their changes
        flow in; built once per table (:meth:`LayerTable.shared_column`), not per cost model. None
        for a space too large for a table."""
        table = self.space.layer_table()
        if table is None:
            return None
        return {"bits": table.shared_column("cost.layer_bits", layer_bits),
                "bops": table.shared_column("cost.layer_bops", layer_bops)}

    def roofline_columns(self) -> dict[str, np.ndarray]:
        """Per layer of the space's table: the roofline time with and without a format change
        before the layer (:meth:`layer_latency_us`); built on first use, by a model that scores
        the roofline latency (a measured profile's never needs it)."""
        if self._columns is None:
            table = self.space.layer_table()
            self._columns = {"us_same": table.column(lambda s: self.layer_latency_us(s, s.a_format)),
                             # any name that is not the layer's own format counts as a change
                             "us_change": table.column(lambda s: self.layer_latency_us(s, "\0"))}
        return self._columns

    def score_genomes(self, genomes: np.ndarray) -> dict[str, np.ndarray]:
        """:meth:`score` of the decoded ``genomes`` (rows of gene indices), without decoding them:
        the same values, added in the same order."""
        table, cols = self.space.layer_table(), self.layer_columns()
        if table is None or cols is None:
            return self.score([self.space.decode(g) for g in self.space.canonical_batch(genomes)])
        batch = self.space.batch(genomes)  # the tables the scoring call's other consumers share
        G, ids = batch.G, batch.ids
        if self.latency_genomes is not None:
            latency = np.asarray(self.latency_genomes(G), dtype=np.float64)
        elif self.latency_ms is not None:
            latency = np.asarray(self.latency_ms([self.space.decode(g) for g in G]), dtype=np.float64)
        else:
            roofline = self.roofline_columns()
            us = np.where(batch.format_changes, roofline["us_change"][ids], roofline["us_same"][ids])
            latency = ordered_sum(us) / 1e3
        return {"latency_ms": latency, "size_mb": size_mb_of(ordered_sum(cols["bits"][ids])),
                "bops_g": ordered_sum(cols["bops"][ids]) / 1e9}


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
        super().__init__(first.space, first.profile, first.latency_ms, first.latency_genomes)
        self.models, self.per_target = list(models), per_target
        self._cache = first._cache  # one cache for the first target's rows

    def score(self, specs: list[SubnetSpec]) -> dict[str, np.ndarray]:
        return self._with_targets(super().score(specs), lambda model: model.score(specs))

    def score_genomes(self, genomes: np.ndarray) -> dict[str, np.ndarray]:
        """:meth:`score` of the decoded ``genomes``, on the genome path of every target's model."""
        return self._with_targets(super().score_genomes(genomes), lambda model: model.score_genomes(genomes))

    def _with_targets(self, out: dict[str, np.ndarray],
                      score: Callable[[CostModel], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        """``out`` (the first target's scores) plus, with ``per_target``, every target's latency
        and throughput (``score(model)`` scores with a target's own model; the first is reused)."""
        if not self.per_target:
            return out
        out["throughput_ips"] = throughput_ips(out["latency_ms"], self.profile.max_batch)
        for i, model in enumerate(self.models):
            latency = out["latency_ms"] if i == 0 else score(model)["latency_ms"]
            out[f"latency_ms@{model.profile.name}"] = latency
            out[f"throughput_ips@{model.profile.name}"] = throughput_ips(latency, model.profile.max_batch)
        return out
