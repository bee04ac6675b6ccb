"""Numeric formats: the precision half of the search space.

A :class:`NumericFormat` knows its bit width, its kind, the bits it costs per element once scale
storage is counted, how to fake-quantize a tensor (straight-through gradient) and how it exports.
Metadata is torch-free so the cost model and the search never import torch.

Registered names (``FORMATS.names()``; docs/formats.md has the table):

* ``fp32``; ``bf16``, ``fp16`` (casts, no scale);
* ``fp8_e4m3``, ``fp8_e5m2``, ``fp6_e3m2``, ``fp6_e2m3``, ``fp4_e2m1``: scaled floats, one fp32
  scale per tensor (activations) or per output channel (weights);
* ``int2`` .. ``int8``: symmetric, narrow range, scale from the max; ``int2_mse``, ``int4_mse``
  clip at the MSE-optimal ratio; ``int4_lsq`` learns its step (LSQ) when given a trainable range;
* ``ternary``: BitNet b1.58, codes {-1, 0, +1} x an absmean scale per channel (weight-only);
* ``int4_asym``, ``int8_asym``: unsigned codes with a zero point (suffix ``_asym``);
* ``int4_g32``, ``int4_g128``, ``int8_g128``: symmetric with one scale per group of N elements
  (suffix ``_gN``);
* ``mxfp8`` (E4M3), ``mxfp6`` (E2M3), ``mxfp6_e3m2``, ``mxfp4`` (E2M1): OCP MX, 32 elements per
  E8M0 scale; ``nvfp4``: 16 E2M1 elements per E4M3 scale plus an fp32 scale per tensor.
"""

from __future__ import annotations

import math

from nasq.formats.base import (
    FORMATS,
    MIN_AMAX,
    SCALE_BITS,
    CastFloat,
    ExportMode,
    FormatKind,
    NumericFormat,
    Passthrough,
    from_blocks,
    to_blocks,
)
from nasq.formats.block import NVFP4, BlockFloat, MXFloat
from nasq.formats.floatbits import (
    BF16,
    E2M1,
    E2M3,
    E3M2,
    E4M3,
    E5M2,
    FP16,
    FloatLayout,
    round_float,
)
from nasq.formats.floating import ScaledFloat, fp8_qdq
from nasq.formats.integer import AsymmetricInt, GroupInt, IntCodes, IntegerFormat, SymmetricInt
from nasq.formats.ternary import Ternary

__all__ = [
    "FORMATS", "MIN_AMAX", "SCALE_BITS", "AsymmetricInt", "BlockFloat", "CastFloat", "ExportMode",
    "FloatLayout", "FormatKind", "GroupInt", "IntCodes", "IntegerFormat", "MXFloat", "NVFP4",
    "NumericFormat", "Passthrough", "ScaledFloat", "SymmetricInt", "Ternary", "bits_of", "fp8_qdq",
    "from_blocks", "get_format", "highest_bits", "log2_levels", "lowest_bits", "round_float",
    "size_bits", "to_blocks",
]


def _builtin_formats() -> list[NumericFormat]:
    return [
        Passthrough("fp32", 32),
        CastFloat("bf16", BF16),
        CastFloat("fp16", FP16),
        ScaledFloat("fp8_e4m3", E4M3),
        ScaledFloat("fp8_e5m2", E5M2),
        ScaledFloat("fp6_e3m2", E3M2),
        ScaledFloat("fp6_e2m3", E2M3),
        ScaledFloat("fp4_e2m1", E2M1),
        *(SymmetricInt(f"int{b}", b) for b in range(2, 9)),
        SymmetricInt("int2_mse", 2, scale_method="mse"),
        SymmetricInt("int4_mse", 4, scale_method="mse"),
        SymmetricInt("int4_lsq", 4, lsq=True),
        Ternary("ternary"),
        AsymmetricInt("int4_asym", 4),
        AsymmetricInt("int8_asym", 8),
        GroupInt("int4_g32", 4, 32),
        GroupInt("int4_g128", 4, 128),
        GroupInt("int8_g128", 8, 128),
        MXFloat("mxfp8", E4M3),
        MXFloat("mxfp6", E2M3),
        MXFloat("mxfp6_e3m2", E3M2),
        MXFloat("mxfp4", E2M1),
        NVFP4("nvfp4"),
    ]


for _fmt in _builtin_formats():
    FORMATS.add(_fmt.name, _fmt)


def get_format(name: str) -> NumericFormat:
    return FORMATS.get(name)


def bits_of(name: str) -> int:
    return FORMATS.get(name).bits


def size_bits(name: str, params: int, channels: int) -> float:
    """Storage of ``params`` weights of ``channels`` output channels in this format, scales
    included: params × bits plus an fp32 scale per channel for per-channel formats; for group and
    block formats params × effective bits, a partial group or block at the end of a row costing
    a whole scale; nothing extra for fp32/bf16/fp16."""
    return FORMATS.get(name).storage_bits(params, channels)


def lowest_bits(names: tuple[str, ...] | list[str]) -> str:
    return min(names, key=lambda n: (FORMATS.get(n).bits, n))


def highest_bits(names: tuple[str, ...] | list[str]) -> str:
    return max(names, key=lambda n: (FORMATS.get(n).bits, n))


def log2_levels(name: str) -> float:
    fmt = FORMATS.get(name)
    if isinstance(fmt, IntegerFormat):
        return math.log2(fmt.qmax - fmt.qmin + 1)
    return float(fmt.bits)
