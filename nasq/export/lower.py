"""Deployment lowering of a static subnet: what :func:`nasq.export.bundle.export_onnx` does around
the TorchScript exporter so that the ONNX graph stores and computes what the formats mean.

Before tracing (torch side):

* :func:`fold_batch_norms` folds every ``Sequential(StaticQConv, BatchNorm2d)`` pair (every
  :class:`~nasq.supernet.layers.StaticConvBN`, whatever block holds it) into the conv's weight
  and bias, before the weight is quantized (the fp32 stem's Conv + BatchNorm the exporter folds
  itself). Per-output-channel symmetric scaling commutes with the per-channel batch-norm scale,
  so this is exact up to float rounding for the formats :func:`~nasq.supernet.layers.foldable`
  accepts; the others (group/block scales, casts, asymmetric) keep their norm. The eval-mode
  supernet and static subnet compute the same folded arithmetic, so torch == onnxruntime.
* :func:`weight_codes` records, per quantized weight, the integer / FP8 codes and scales that the
  ONNX graph will store (computed from the float weight, as the fake quantizer does).

After tracing (ONNX side, :func:`lower_onnx`):

* the model is converted to opset :data:`LOWERED_OPSET` (INT4 and ``block_size`` need 21);
* each pre-quantized float weight of a native format (:func:`native_onnx_formats`) becomes a
  packed INT8 / INT4 / FLOAT8 initializer + per-channel scales (axis 0);
* an integer kernel (int8 weights on an int8 activation) reads it through DequantizeLinear and
  keeps an fp32 bias on the int32 grid input scale × weight scale: onnxruntime's
  WeightBiasQuantization recovers the exact int32 codes and fuses QLinearConv. Its weights are
  INT8 codes, or the same values as UINT8 codes with zero point 128 (:func:`int8_weight_type`):
  on an x86 CPU without VNNI, onnxruntime's uint8 x int8 kernel sums pairs of products in int16
  with saturation (VPMADDUBSW) and so computes something else than torch, while its uint8 x uint8
  kernel widens to int16 first and is exact;
* every other Conv/Gemm computes in float and keeps onnxruntime's fast path (prepacked constant
  weights): a packed weight is unpacked by Cast + Mul, which onnxruntime constant-folds (it never
  folds DequantizeLinear), and a quantized input is read through its own per-channel
  DequantizeLinear, since WeightBiasQuantization would quantize the float weight of a Conv fed by
  a per-tensor one (see :func:`_float_kernel`);
* int8 chains are one QuantizeLinear/DequantizeLinear per tensor: duplicates (a residual Add and
  the block's first conv both trace the block input's) are merged, a ReLU6 Clip after a uint8
  DequantizeLinear that cannot exceed it is dropped, and so is a Clip before a uint8
  QuantizeLinear that saturates inside it;
* scale subgraphs on constants are folded, constants deduplicated and names shortened, so that
  model.onnx weighs about what the cost model's ``size_mb`` says.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from nasq.formats import FORMATS, NumericFormat, ScaledFloat, SymmetricInt, Ternary, get_format
from nasq.hardware.host import cpu_flags
from nasq.supernet.layers import (
    StaticQConv,
    StaticQLinear,
    foldable,
    folded_weight_bias,
    integer_bias,
    per_channel_amax,
)

INT8_WEIGHTS = ("auto", "int8", "uint8")  # how an integer kernel's int8 weights are stored
_VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni"})  # u8 x s8 dot products without saturation
LOWERED_OPSET = 21  # INT4 QuantizeLinear/DequantizeLinear and DequantizeLinear's block_size
# The TorchScript exporter writes at most opset 20; FP8 activation QDQ (when asked for) needs 19.
TORCH_OPSET_RANGE = (19, 20)
_FP8_ONNX = {"float8_e4m3fn": 17, "float8_e5m2": 19}  # torch dtype name -> onnx.TensorProto enum


# ---------------------------------------------------------------- int8 weights on this CPU
def int8_weight_type(choice: str = "auto", flags: frozenset[str] | None = None, machine: str | None = None) -> str:
    """``int8`` or ``uint8``: how an integer kernel's int8 weights are stored (same values; a
    uint8 code is the int8 code + 128, zero point 128). ``auto``: ``uint8`` on an x86 CPU without
    VNNI (``avx512_vnni`` / ``avx_vnni``), where onnxruntime's uint8 x int8 kernel saturates pairs
    of products in int16 (its uint8 x uint8 kernel does not), or whose flags cannot be read;
    ``int8`` elsewhere (VNNI dot products, and other architectures, are exact). ``flags`` and
    ``machine`` default to this host's."""
    if choice not in INT8_WEIGHTS:
        raise ValueError(f"int8_weights must be one of {', '.join(INT8_WEIGHTS)}, got {choice!r}")
    if choice != "auto":
        return choice
    machine = (machine if machine is not None else platform.machine()).lower()
    if machine not in ("x86_64", "amd64", "i386", "i686", "x86"):
        return "int8"
    flags = cpu_flags() if flags is None else flags
    return "int8" if flags is not None and flags & _VNNI_FLAGS else "uint8"


# ---------------------------------------------------------------- formats
def _native_weight(fmt: NumericFormat) -> bool:
    if isinstance(fmt, Ternary):  # codes -1..1 fit INT4; the absmean scale is its per-channel scale
        return True
    if isinstance(fmt, SymmetricInt):
        return fmt.bits in (4, 8)
    return isinstance(fmt, ScaledFloat) and fmt.dtype_name in _FP8_ONNX


def native_onnx_formats() -> frozenset[str]:
    """Weight formats stored in model.onnx in a real ONNX type (fp32; INT8, INT4, FLOAT8E4M3FN,
    FLOAT8E5M2 + DequantizeLinear). The others are "emulated": fp32 initializers holding the
    quantized values. Activations: int8 are QuantizeLinear/DequantizeLinear pairs, fp8 too when
    exported with ``fp8_activation_qdq``; the rest (int4 included) elementwise rounding ops."""
    return frozenset(n for n in FORMATS.names() if get_format(n).is_identity or _native_weight(get_format(n)))


# ---------------------------------------------------------------- batch-norm folding
def conv_bn_pairs(model: nn.Module) -> list[tuple[nn.Sequential, int]]:
    """Every (Sequential, index) where item ``index`` is a StaticQConv and the next one a
    BatchNorm2d. A plain fp32 ``nn.Conv2d`` + BatchNorm2d (the stem) is left to the exporter,
    which folds it itself in eval mode: folding it here too would change the static subnet's
    float rounding, and so make load_export's model differ from the one exported."""
    pairs = []
    for m in model.modules():
        if not isinstance(m, nn.Sequential):
            continue
        items = list(m)
        for i in range(len(items) - 1):
            if isinstance(items[i], StaticQConv) and isinstance(items[i + 1], nn.BatchNorm2d):
                pairs.append((m, i))
    return pairs


@torch.no_grad()
def fold_batch_norms(model: nn.Module) -> int:
    """Fold each conv + eval-mode batch-norm pair of ``model`` (in place) whose weight format is
    foldable (:func:`nasq.supernet.layers.foldable`) with the same float operations the eval-mode
    forward uses; the norm becomes ``nn.Identity``. Returns the number folded."""
    folded = 0
    for seq, i in conv_bn_pairs(model):
        conv_mod, norm = seq[i], seq[i + 1]
        conv = conv_mod.conv
        if not foldable(conv_mod.w_format) or norm.training or not norm.track_running_stats:
            continue
        w, b = folded_weight_bias(conv.weight, conv.bias, norm)
        conv.weight.copy_(w)
        conv.bias = nn.Parameter(b.detach().clone())
        seq[i + 1] = nn.Identity()
        folded += 1
    return folded


# ---------------------------------------------------------------- codes of native weights
@dataclass
class WeightCodes:
    """What model.onnx stores for one weight: codes (numpy, the ONNX element type's bytes or
    values), ``data_type`` (onnx.TensorProto enum), per-channel fp32 ``scale`` and, for an
    integer kernel, its bias (fp32, on the int32 grid input scale x weight scale)."""

    codes: np.ndarray
    data_type: int
    scale: np.ndarray
    integer_bias: np.ndarray | None = None
    zero_point: np.ndarray | None = None  # UINT8 codes of an int8 weight: 128 per channel


@torch.no_grad()
def weight_codes(model: nn.Module, int8_weights: str = "int8") -> dict[str, WeightCodes]:
    """Per ``<layer>.conv.weight`` of a native low-bit or fp8 format (int8 is written by the
    exporter as QuantizeLinear already), the codes the
    lowered graph stores. Call on the folded, not yet prepared, model. ``int8_weights`` (int8 or
    uint8, :func:`int8_weight_type`): how an integer kernel's int8 weights are stored."""
    import onnx

    out = {}
    for name, m in model.named_modules():
        if not isinstance(m, StaticQConv):
            continue
        fmt, w = get_format(m.w_format), m.conv.weight
        codes = _codes(fmt, w)
        if codes is None:
            continue
        if m.integer and m.conv.bias is not None and float(m.a_amax) > 0 and not isinstance(m, StaticQLinear):
            # the values torch's forward adds (StaticQConv._bias), stored as they are: the traced
            # subgraph that computes them would keep the float weight alive
            codes.integer_bias = integer_bias(m.conv.bias, m.a_amax, w, m.a_unsigned).numpy().astype(np.float32)
        if m.integer and int8_weights == "uint8" and codes.data_type == onnx.TensorProto.INT8:
            codes.codes = (codes.codes.astype(np.int16) + 128).astype(np.uint8)
            codes.data_type, codes.zero_point = onnx.TensorProto.UINT8, np.full(codes.scale.shape, 128, np.uint8)
        out[f"{name}.conv.weight"] = codes
    return out


def _codes(fmt: NumericFormat, w: torch.Tensor) -> WeightCodes | None:
    import onnx

    if _native_weight(fmt) and isinstance(fmt, SymmetricInt):
        enc = fmt.encode(w, per_channel_amax(w))
        dtype = onnx.TensorProto.INT8 if fmt.bits == 8 else onnx.TensorProto.INT4
        return WeightCodes(enc.codes.numpy(), dtype, enc.scale.flatten().float().numpy())
    if isinstance(fmt, ScaledFloat) and fmt.dtype_name in _FP8_ONNX:
        from nasq.formats import MIN_AMAX, round_float

        s = per_channel_amax(w).clamp_min(MIN_AMAX) / fmt.max_value
        q = round_float(w / s, fmt.layout).to(getattr(torch, fmt.dtype_name))
        return WeightCodes(q.view(torch.uint8).numpy(), _FP8_ONNX[fmt.dtype_name], s.flatten().float().numpy())
    return None


# ---------------------------------------------------------------- ONNX rewriting
def lower_onnx(model_proto: Any, codes: dict[str, WeightCodes]) -> Any:
    """The traced graph, lowered (module docstring): opset 21, packed native weights, biases of
    DequantizeLinear-fed convs from DequantizeLinear. Returns a new ModelProto."""
    from onnx import version_converter

    model = version_converter.convert_version(model_proto, LOWERED_OPSET)
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    for name, c in codes.items():
        if name in inits:
            _pack_weight(graph, inits[name], c)
    _constants_to_initializers(graph)
    _fold_scale_chains(graph)
    for name, c in codes.items():
        if c.integer_bias is not None:
            _plain_bias(graph, name, c.integer_bias)
    for node in list(graph.node):
        _float_kernel(graph, node)
    for node in list(graph.node):
        _dq_bias(graph, node)
    for node in list(graph.node):
        _split_clip_before_fp8_quantize(graph, node)
    _constants_to_initializers(graph)
    _fold_scale_chains(graph)
    _merge_clips(graph)
    _drop_dead_nodes(graph)
    _drop_unused_initializers(graph)
    _dedupe_initializers(graph)
    _merge_duplicate_nodes(graph)
    _drop_saturated_clips(graph)
    _drop_clips_before_saturating_quantize(graph)
    _drop_unused_initializers(graph)
    _short_names(graph)
    del graph.value_info[:]  # shapes onnxruntime infers itself; bytes a small model notices
    return model


def _producers(graph: Any) -> dict[str, Any]:
    return {o: n for n in graph.node for o in n.output}


def _consumers(graph: Any, name: str) -> list[tuple[Any, int]]:
    return [(n, i) for n in graph.node for i, x in enumerate(n.input) if x == name]


def _pack_weight(graph: Any, init: Any, c: WeightCodes) -> None:
    """Replace the float initializer ``init`` (the pre-quantized weight) by its codes + scales and
    a per-channel DequantizeLinear (axis 0) producing the same values."""
    import onnx
    from onnx import helper, numpy_helper

    from nasq.formats.packing import pack_int

    name = init.name
    dims = list(init.dims)
    if c.data_type == onnx.TensorProto.INT4:  # two codes per byte, the first in the low nibble
        raw = pack_int(torch.from_numpy(c.codes.astype(np.int8)), 4).numpy().tobytes()
    else:  # INT8 or UINT8 codes, or the FLOAT8 bytes torch wrote
        raw = np.ascontiguousarray(c.codes).astype(np.int8 if c.data_type == onnx.TensorProto.INT8 else np.uint8).tobytes()
    packed = helper.make_tensor(f"{name}_q", c.data_type, dims, raw, raw=True)
    scale = numpy_helper.from_array(c.scale.astype(np.float32), f"{name}_scale")
    graph.initializer.extend([packed, scale])
    inputs = [packed.name, scale.name]
    if c.zero_point is not None:
        zero = numpy_helper.from_array(c.zero_point, f"{name}_zero")
        graph.initializer.append(zero)
        inputs.append(zero.name)
    dq = helper.make_node("DequantizeLinear", inputs, [f"{name}_dq"], name=f"{name}_DequantizeLinear", axis=0)
    # The exporter writes an int8 weight as float -> QuantizeLinear -> DequantizeLinear: the new
    # DequantizeLinear replaces that pair (same codes, same scales), the float copy goes.
    quantizers = [n for n, _ in _consumers(graph, name) if n.op_type == "QuantizeLinear"]
    if len(quantizers) == 1:
        q = quantizers[0]
        deq = [n for n, _ in _consumers(graph, q.output[0]) if n.op_type == "DequantizeLinear"]
        if len(deq) == 1:
            _insert_before_consumers(graph, dq, deq[0].output[0])
            return
    _insert_before_consumers(graph, dq, name)


def _insert_before_consumers(graph: Any, node: Any, old_output: str) -> None:
    consumers = _consumers(graph, old_output)
    for n, i in consumers:
        n.input[i] = node.output[0]
    first = min((list(graph.node).index(n) for n, _ in consumers), default=len(graph.node))
    graph.node.insert(first, node)


def _weight_consumer_conv(graph: Any, weight: str) -> Any | None:
    """The Conv/Gemm a weight reaches, through its QuantizeLinear/DequantizeLinear if any."""
    frontier = [weight]
    for _ in range(4):
        nxt = []
        for name in frontier:
            for n, i in _consumers(graph, name):
                if n.op_type in ("Conv", "Gemm") and i == 1:
                    return n
                if n.op_type in ("QuantizeLinear", "DequantizeLinear") and i == 0:
                    nxt.append(n.output[0])
        frontier = nxt
    return None


def _plain_bias(graph: Any, weight: str, bias: np.ndarray) -> None:
    """An integer kernel's bias as a plain fp32 initializer holding the int32 grid values torch
    adds: onnxruntime's WeightBiasQuantization turns it into int32 codes on input scale x weight
    scale (round(bias / scale) gives the codes back exactly), then QLinearConv; runtimes without
    that pass add the same float values."""
    from onnx import numpy_helper

    conv = _weight_consumer_conv(graph, f"{weight}_q")  # the packed weight (_pack_weight)
    if conv is None:
        return
    t = numpy_helper.from_array(bias, weight.removesuffix(".weight") + ".bias_int_grid")
    graph.initializer.append(t)
    while len(conv.input) < 3:
        conv.input.append("")
    conv.input[2] = t.name


def _set_bias(graph: Any, conv: Any, dq: Any) -> None:
    while len(conv.input) < 3:
        conv.input.append("")
    conv.input[2] = dq.output[0]
    graph.node.insert(list(graph.node).index(conv), dq)


def _init_array(graph: Any, name: str) -> np.ndarray | None:
    from onnx import numpy_helper

    t = next((t for t in graph.initializer if t.name == name), None)
    return None if t is None else numpy_helper.to_array(t)


def _integer_kernel(graph: Any, node: Any) -> bool:
    """A Conv/Gemm onnxruntime fuses into an integer kernel: int8 activations in (a uint8/int8
    DequantizeLinear with a scalar scale) and int8 weights (a DequantizeLinear of an INT8
    initializer, or of UINT8 codes with zero point 128, :func:`int8_weight_type`)."""
    import onnx

    producers = _producers(graph)
    src, w = producers.get(node.input[0]), producers.get(node.input[1])
    if src is None or w is None or src.op_type != "DequantizeLinear" or w.op_type != "DequantizeLinear":
        return False
    inits = {t.name: t for t in graph.initializer}
    int8 = (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)
    zp = inits.get(src.input[2]) if len(src.input) > 2 else None
    weight = inits.get(w.input[0])
    scale = inits.get(src.input[1])
    return (zp is not None and zp.data_type in int8 and weight is not None
            and weight.data_type in int8 and scale is not None and len(scale.dims) == 0)


def _float_kernel(graph: Any, node: Any) -> None:
    """A Conv/Gemm that computes in float (not an integer kernel) gets onnxruntime's fast float
    path, which prepacks constant weights and biases, with the same values:

    * a packed weight is unpacked by Cast + Mul (its per-channel scale) instead of
      DequantizeLinear: the same float32 products, and onnxruntime's constant folding (which
      leaves DequantizeLinear alone) turns them into a constant at session start, OpenVINO reads
      them as compressed weights; the file keeps the packed codes;
    * an int8/fp8 activation input is read through its own DequantizeLinear with the scale and
      zero point repeated per channel (axis 1): onnxruntime's WeightBiasQuantization, which would
      quantize the float weight and bias of a Conv fed by a per-tensor DequantizeLinear, leaves
      it alone, so the bias stays a plain constant too."""
    from onnx import helper, numpy_helper

    if node.op_type not in ("Conv", "Gemm") or _integer_kernel(graph, node):
        return
    producers = _producers(graph)
    w = producers.get(node.input[1])
    if w is not None and w.op_type == "DequantizeLinear" and len(_consumers(graph, w.output[0])) == 1:
        scale = _init_array(graph, w.input[1])
        codes = next((t for t in graph.initializer if t.name == w.input[0]), None)
        if scale is not None and codes is not None and len(w.input) < 3:
            shaped = numpy_helper.from_array(scale.reshape(-1, *([1] * (len(codes.dims) - 1))).astype(np.float32),
                                             f"{w.input[1]}_b")
            graph.initializer.append(shaped)
            at = list(graph.node).index(w)
            graph.node.remove(w)
            cast = helper.make_node("Cast", [w.input[0]], [f"{w.output[0]}_f"], name=f"{w.name}_cast", to=1)
            mul = helper.make_node("Mul", [cast.output[0], shaped.name], [w.output[0]], name=f"{w.name}_mul")
            graph.node.insert(at, mul)
            graph.node.insert(at, cast)
    src = producers.get(node.input[0])
    if src is None or src.op_type != "DequantizeLinear" or len(src.input) < 3:
        return
    scale, zero = _init_array(graph, src.input[1]), _init_array(graph, src.input[2])
    cin = _in_channels(graph, node)
    if scale is None or zero is None or scale.size != 1 or cin is None:
        return
    zt = next(t for t in graph.initializer if t.name == src.input[2])
    per_c = [numpy_helper.from_array(np.full(cin, scale.reshape(()), np.float32), f"{node.input[0]}_pcs"),
             numpy_helper.from_array(np.full(cin, zero.reshape(()), zero.dtype), f"{node.input[0]}_pcz")]
    per_c[1].data_type = zt.data_type
    if zt.raw_data:
        per_c[1].raw_data = np.repeat(np.frombuffer(zt.raw_data, np.uint8), cin).tobytes()
    graph.initializer.extend(per_c)
    dq = helper.make_node("DequantizeLinear", [src.input[0], per_c[0].name, per_c[1].name], [f"{node.input[0]}_pc"],
                          name=f"{src.name}_pc", axis=1)
    node.input[0] = dq.output[0]
    graph.node.insert(list(graph.node).index(node), dq)


def _in_channels(graph: Any, node: Any) -> int | None:
    """Input channels of a Conv (weight dims[1] x group) or Gemm (its reduced dimension)."""
    producers = _producers(graph)
    w, frontier = node.input[1], 0
    while w not in {t.name for t in graph.initializer} and frontier < 3:
        p = producers.get(w)
        if p is None:
            return None
        w, frontier = p.input[0], frontier + 1
    t = next((t for t in graph.initializer if t.name == w), None)
    if t is None:
        return None
    dims = list(t.dims)
    if node.op_type == "Gemm":
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return dims[1] if trans_b else dims[0]
    group = next((a.i for a in node.attribute if a.name == "group"), 1)
    return dims[1] * group


def _dq_bias(graph: Any, node: Any) -> None:
    """A Conv/Gemm fed by DequantizeLinear whose bias is a float initializer (or absent) gets it
    from an exact int32 × power-of-two DequantizeLinear instead (see the module docstring)."""
    from onnx import helper, numpy_helper

    if node.op_type not in ("Conv", "Gemm") or _integer_kernel(graph, node):
        return
    producers = _producers(graph)
    src = producers.get(node.input[0])
    if src is None or src.op_type != "DequantizeLinear" or any(a.name == "axis" for a in src.attribute):
        return  # not from a per-tensor DequantizeLinear: WeightBiasQuantization leaves it alone
    inits = {t.name: t for t in graph.initializer}
    has_bias = len(node.input) >= 3 and node.input[2] != ""
    if has_bias and node.input[2] not in inits:
        return  # already from a node (our own DequantizeLinear)
    if has_bias:
        bias = numpy_helper.to_array(inits[node.input[2]]).astype(np.float32)
    else:
        bias = np.zeros(_out_channels(node, inits, producers), np.float32)
    codes, scale = exact_pow2_codes(bias)
    base = f"{node.name or node.output[0]}_bias"
    graph.initializer.extend([numpy_helper.from_array(codes, f"{base}_int32"),
                              numpy_helper.from_array(scale, f"{base}_scale")])
    dq = helper.make_node("DequantizeLinear", [f"{base}_int32", f"{base}_scale"], [f"{base}_dq"],
                          name=f"{base}_DequantizeLinear", axis=0)
    _set_bias(graph, node, dq)


def _out_channels(node: Any, inits: dict[str, Any], producers: dict[str, Any]) -> int:
    w = node.input[1]
    if w not in inits:  # through a DequantizeLinear
        w = producers[w].input[0]
    dims = list(inits[w].dims)
    if node.op_type == "Gemm":
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return dims[0] if trans_b else dims[1]
    return dims[0]


def exact_pow2_codes(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """int32 codes and per-element power-of-two fp32 scales with ``codes * scales == values``
    exactly (a float32 significand has 24 bits)."""
    v = np.asarray(values, np.float32).astype(np.float64)
    mant, exp = np.frexp(v)
    exp = np.where(v == 0, 0, exp)
    exp = np.maximum(exp - 24, -126)  # keep scales normal; tiny values lose nothing they had
    codes = np.round(v / np.ldexp(1.0, exp)).astype(np.int32)
    scales = np.ldexp(1.0, exp).astype(np.float32)
    return codes, scales


def _split_clip_before_fp8_quantize(graph: Any, node: Any) -> None:
    """Clip -> QuantizeLinear with an FP8 zero point is written Max -> Min: onnxruntime 1.32's
    ClipQuantFusion fails on FP8 zero points (``Unexpected data type for QuantizeLinear input
    y_zero_point``), aborting session creation under default options. Same values."""
    from onnx import helper

    if node.op_type != "Clip" or len(node.input) < 3 or "" in node.input[1:3]:
        return
    fp8 = _fp8_zero_points(graph)
    if not any(n.op_type == "QuantizeLinear" and len(n.input) > 2 and n.input[2] in fp8
               for n, _ in _consumers(graph, node.output[0])):
        return
    mid = f"{node.output[0]}_max"
    at = list(graph.node).index(node)
    graph.node.remove(node)
    graph.node.insert(at, helper.make_node("Min", [mid, node.input[2]], list(node.output), name=f"{node.name}_min"))
    graph.node.insert(at, helper.make_node("Max", [node.input[0], node.input[1]], [mid], name=f"{node.name}_max"))


def _fp8_zero_points(graph: Any) -> set[str]:
    fp8_types = set(_FP8_ONNX.values())
    names = {t.name for t in graph.initializer if t.data_type in fp8_types}
    for n in graph.node:
        if n.op_type == "Constant" and any(a.name == "value" and a.t.data_type in fp8_types for a in n.attribute):
            names.update(n.output)
    return names


def _drop_dead_nodes(graph: Any) -> None:
    """Nodes whose outputs nothing reads (e.g. the traced bias the lowering replaced)."""
    while True:
        used = {x for n in graph.node for x in n.input} | {o.name for o in graph.output}
        dead = [n for n in graph.node if not any(o in used for o in n.output)]
        if not dead:
            return
        for n in dead:
            graph.node.remove(n)


def _constants_to_initializers(graph: Any) -> None:
    """Constant nodes (the exporter writes every scalar as one) become initializers."""
    for n in list(graph.node):
        if n.op_type == "Constant" and len(n.attribute) == 1 and n.attribute[0].name == "value":
            t = type(n.attribute[0].t)()
            t.CopyFrom(n.attribute[0].t)
            t.name = n.output[0]
            graph.initializer.append(t)
            graph.node.remove(n)


# Ops whose result on initializers is computed here, in float32 numpy as onnxruntime would: the
# activation and output scales the exporter writes as Clip(amax) / qmax -> Reshape -> Cast. Not
# Mul: the integer-kernel bias scale stays one Mul node rather than a stored per-channel vector.
_FOLDABLE_OPS = {"Clip", "Div", "Reshape", "Cast", "Identity"}


def _fold_scale_chains(graph: Any) -> None:
    from onnx import helper, numpy_helper

    inits = {t.name: t for t in graph.initializer}
    changed = True
    while changed:
        changed = False
        for n in list(graph.node):
            if n.op_type not in _FOLDABLE_OPS or not all(x == "" or x in inits for x in n.input):
                continue
            values = [None if x == "" else numpy_helper.to_array(inits[x]) for x in n.input]
            out = _evaluate(n, values, helper)
            if out is None:
                continue
            t = numpy_helper.from_array(out, n.output[0])
            graph.initializer.append(t)
            inits[t.name] = t
            graph.node.remove(n)
            changed = True


def _evaluate(node: Any, v: list[Any], helper: Any) -> np.ndarray | None:
    """One small op on constant inputs; None when it is not one this folder knows exactly."""
    x = v[0]
    if x is None or x.dtype.kind not in "fi" or x.size > 4096:
        return None
    if node.op_type == "Identity":
        return x
    if node.op_type == "Reshape":
        return x.reshape(v[1]) if 0 not in v[1] else None
    if node.op_type == "Cast":
        if x.size != 1:  # a scale's or zero point's cast; not a packed weight's unpacking (_float_kernel)
            return None
        to = next(a.i for a in node.attribute if a.name == "to")
        return x.astype(helper.tensor_dtype_to_np_dtype(to)) if to in (1, 2, 3, 6, 7) else None
    if x.dtype != np.float32 or any(y is not None and y.dtype != np.float32 for y in v[1:]):
        return None
    if node.op_type == "Clip":
        lo = v[1] if len(v) > 1 and v[1] is not None else None
        hi = v[2] if len(v) > 2 and v[2] is not None else None
        out = x if lo is None else np.maximum(x, lo)
        return np.asarray(out if hi is None else np.minimum(out, hi), np.float32)
    if node.op_type == "Div":
        return np.asarray(x / v[1], np.float32)
    return np.asarray(x * v[1], np.float32)  # Mul


def _merge_clips(graph: Any) -> None:
    """Clip -> Clip with constant bounds (ReLU6, then an int8 input quantizer's narrow-range clamp)
    is one Clip on the intersected range: the same values, one elementwise pass fewer."""
    from onnx import numpy_helper

    inits = {t.name: t for t in graph.initializer}
    producers = _producers(graph)

    def bounds(n: Any) -> tuple[Any, Any] | None:
        ins = list(n.input) + ["", ""]
        if any(x and x not in inits for x in ins[1:3]):
            return None
        lo, hi = (numpy_helper.to_array(inits[x]) if x else None for x in ins[1:3])
        if any(v is not None and (v.size != 1 or v.dtype != np.float32) for v in (lo, hi)):
            return None
        return lo, hi

    for n in list(graph.node):
        a = producers.get(n.input[0]) if n.op_type == "Clip" else None
        if a is None or a.op_type != "Clip" or len(_consumers(graph, a.output[0])) != 1:
            continue
        ba, bb = bounds(a), bounds(n)
        if ba is None or bb is None:
            continue
        lo = [v for v in (ba[0], bb[0]) if v is not None]
        hi = [v for v in (ba[1], bb[1]) if v is not None]
        lo_v = np.float32(max(lo)) if lo else None
        hi_v = np.float32(min(hi)) if hi else None
        if lo_v is not None and hi_v is not None and lo_v > hi_v:
            continue  # empty intersection: Clip(Clip(x)) is then not one Clip
        names = []
        for v, tag in ((lo_v, "lo"), (hi_v, "hi")):
            if v is None:
                names.append("")
                continue
            t = numpy_helper.from_array(np.asarray(v, np.float32), f"{n.output[0]}_{tag}")
            graph.initializer.append(t)
            inits[t.name] = t
            names.append(t.name)
        del n.input[:]
        n.input.extend([a.input[0], *names])
        graph.node.remove(a)
        producers = _producers(graph)


def _node_key(n: Any) -> tuple:
    return (n.op_type, n.domain, tuple(n.input), tuple(a.SerializeToString() for a in n.attribute))


def _merge_duplicate_nodes(graph: Any) -> None:
    """Nodes with the same op, inputs and attributes computed once (common subexpressions): a
    residual Add and the block's first conv each trace the block input's int8 QuantizeLinear /
    DequantizeLinear (one tensor, one pair in the graph, as onnxruntime and OpenVINO want it)."""
    changed = True
    while changed:
        changed, seen, alias = False, {}, {}
        for n in graph.node:
            if n.op_type not in ("QuantizeLinear", "DequantizeLinear") or len(n.output) != 1:
                continue
            key = _node_key(n)
            if key in seen:
                alias[n.output[0]] = seen[key]
            else:
                seen[key] = n.output[0]
        if not alias:
            return
        for n in graph.node:
            for i, x in enumerate(n.input):
                if x in alias:
                    n.input[i] = alias[x]
                    changed = True
        for o in graph.output:
            if o.name in alias:  # never: the graph output is the classifier's
                return
        _drop_dead_nodes(graph)


def _drop_saturated_clips(graph: Any) -> None:
    """A Clip right after a uint8 DequantizeLinear whose whole range lies inside the Clip's bounds
    is the identity: the block's ReLU6 after an integer kernel that requantized after that ReLU6
    (nasq.supernet.layers.OutQuant). Dropped, so that the next Add or conv reads the
    DequantizeLinear (onnxruntime then fuses QLinearAdd / QLinearConv)."""
    from onnx import TensorProto, numpy_helper

    inits = {t.name: t for t in graph.initializer}
    producers = _producers(graph)
    outputs = {o.name for o in graph.output}

    def value(name: str) -> np.ndarray | None:
        return numpy_helper.to_array(inits[name]) if name in inits else None

    for n in list(graph.node):
        dq = producers.get(n.input[0]) if n.op_type == "Clip" else None
        if dq is None or dq.op_type != "DequantizeLinear" or len(dq.input) < 3 or n.output[0] in outputs:
            continue
        scale, zero = value(dq.input[1]), value(dq.input[2])
        ins = list(n.input) + ["", ""]
        lo, hi = (value(x) if x else None for x in ins[1:3])
        if scale is None or zero is None or inits[dq.input[2]].data_type != TensorProto.UINT8:
            continue
        if scale.size != 1 or zero.size != 1 or (ins[1] and lo is None) or (ins[2] and hi is None):
            continue
        z = int(zero.reshape(()))
        s = np.float32(scale.reshape(()))
        bottom, top = np.float32(-z) * s, np.float32(255 - z) * s  # DequantizeLinear's float32 range
        if (lo is not None and bottom < lo.reshape(())) or (hi is not None and top > hi.reshape(())):
            continue
        for c, i in _consumers(graph, n.output[0]):
            c.input[i] = n.input[0]
        graph.node.remove(n)


def _uint8_range(graph: Any, node: Any) -> tuple[np.float32, np.float32] | None:
    """The float32 range a uint8 QuantizeLinear/DequantizeLinear with constant per-tensor scale
    and zero point covers, else None."""
    from onnx import TensorProto, numpy_helper

    inits = {t.name: t for t in graph.initializer}
    if len(node.input) < 3 or node.input[1] not in inits or node.input[2] not in inits:
        return None
    zt = inits[node.input[2]]
    scale, zero = numpy_helper.to_array(inits[node.input[1]]), numpy_helper.to_array(zt)
    if zt.data_type != TensorProto.UINT8 or scale.size != 1 or zero.size != 1:
        return None
    s, z = np.float32(scale.reshape(())), int(zero.reshape(()))
    return np.float32(-z) * s, np.float32(255 - z) * s


def _clip_bounds(graph: Any, clip: Any) -> tuple[float, float] | None:
    from onnx import numpy_helper

    inits = {t.name: t for t in graph.initializer}
    ins = list(clip.input) + ["", ""]
    if any(x and x not in inits for x in ins[1:3]):
        return None
    lo, hi = (float(numpy_helper.to_array(inits[x]).reshape(())) if x else None for x in ins[1:3])
    return (-np.inf if lo is None else lo), (np.inf if hi is None else hi)


def _drop_clips_before_saturating_quantize(graph: Any) -> None:
    """Clip -> uint8 QuantizeLinear whose range lies inside the Clip's (ReLU6, then the unsigned
    int8 grid of scale <= 6/255): the QuantizeLinear saturates by itself, so it reads the Clip's
    input (onnxruntime's ClipQuantFusion does the same at load; OpenVINO needs no Clip). Values
    are unchanged: below 0 both give code 0, above the top both give 255."""
    producers = _producers(graph)
    for q in list(graph.node):
        clip = producers.get(q.input[0]) if q.op_type == "QuantizeLinear" else None
        if clip is None or clip.op_type != "Clip":
            continue
        rng, bounds = _uint8_range(graph, q), _clip_bounds(graph, clip)
        if rng is None or bounds is None or not (bounds[0] <= rng[0] and rng[1] <= bounds[1]):
            continue
        q.input[0] = clip.input[0]
    _drop_dead_nodes(graph)


def _dedupe_initializers(graph: Any) -> None:
    """Identical small initializers (the exporter's many equal zero points and scalars) once."""
    first: dict[tuple, str] = {}
    alias: dict[str, str] = {}
    keep = []
    for t in graph.initializer:
        if len(t.SerializeToString()) > 256:
            keep.append(t)
            continue
        key = (t.data_type, tuple(t.dims), t.raw_data, tuple(t.float_data), tuple(t.int32_data), tuple(t.int64_data))
        if key in first:
            alias[t.name] = first[key]
        else:
            first[key] = t.name
            keep.append(t)
    if not alias:
        return
    for n in graph.node:
        for i, x in enumerate(n.input):
            n.input[i] = alias.get(x, x)
    del graph.initializer[:]
    graph.initializer.extend(keep)


def _short_names(graph: Any) -> None:
    """Values and initializers get short names (``v12``, ``c12``), nodes none: the traced
    names ("/blocks/blocks.0/expand/Constant_3_output_0", each weight's module path, repeated
    by every node that reads it) are a fifth of a small model's bytes. Graph inputs and outputs
    keep theirs; the manifest's ``formats`` rows name the layers."""
    keep = {i.name for i in graph.input} | {o.name for o in graph.output}
    renamed: dict[str, str] = {"": ""}
    for t in graph.initializer:
        renamed[t.name] = f"c{len(renamed)}"
        t.name = renamed[t.name]
    for n in graph.node:
        for o in n.output:
            if o not in keep and o not in renamed:
                renamed[o] = f"v{len(renamed)}"
    for n in graph.node:
        n.name = ""  # optional in ONNX; a few bytes per node
        n.doc_string = ""
        for j, x in enumerate(n.input):
            n.input[j] = renamed.get(x, x)
        for j, x in enumerate(n.output):
            n.output[j] = renamed.get(x, x)
    vi = [v for v in graph.value_info if v.name in renamed]
    for v in vi:
        v.name = renamed[v.name]


def _drop_unused_initializers(graph: Any) -> None:
    used = {x for n in graph.node for x in n.input} | {o.name for o in graph.output}
    keep = [t for t in graph.initializer if t.name in used]
    if len(keep) != len(graph.initializer):
        del graph.initializer[:]
        graph.initializer.extend(keep)


def torch_opset(opset: int) -> int:
    """The opset the TorchScript exporter is asked for: ``opset`` within :data:`TORCH_OPSET_RANGE`."""
    lo, hi = TORCH_OPSET_RANGE
    return min(max(opset, lo), hi)

