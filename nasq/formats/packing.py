"""Packed integer weights for the safetensors export.

:func:`pack_int` stores integer codes densely: two 4-bit codes per byte, four 2-bit codes per
byte (the first code in the lowest bits), every other width one code per byte. Signed codes are
stored in two's complement within their field. :func:`packed_state` packs the weights of every
quantized conv with an integer weight format; :func:`unpack_state` restores dequantized weights
that equal ``fmt.quantize(w, per_channel_amax(w))`` exactly.

Quantized convs are found by shape, not by type: a module with a ``w_format`` name and a ``conv``
holding the weight (``nasq.supernet.layers.StaticQConv``). The formats layer sits below the
supernet and must not import it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

from nasq.formats.base import FORMATS
from nasq.formats.integer import GroupInt, IntCodes, IntegerFormat

if TYPE_CHECKING:  # pragma: no cover
    import torch

DENSE_BITS = (2, 4)  # widths that share a byte; the others take one byte per code
SUFFIXES = ("weight_packed", "weight_scale", "weight_zero_point", "weight_shape")


def codes_per_byte(bits: int) -> int:
    return 8 // bits if bits in DENSE_BITS else 1


def pack_int(q: torch.Tensor, bits: int) -> torch.Tensor:
    """``q`` (int8 codes in ``-2**(bits-1) .. 2**(bits-1)-1``, or uint8 codes in
    ``0 .. 2**bits-1``), any shape, as a flat uint8 tensor of ``ceil(numel / codes_per_byte)``."""
    import torch

    if not 1 <= bits <= 8:
        raise ValueError(f"pack_int: bits must be 1..8, got {bits}")
    if q.dtype not in (torch.int8, torch.uint8):
        raise TypeError(f"pack_int: codes must be int8 or uint8, got {q.dtype}")
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if q.dtype == torch.int8 else (0, 2**bits - 1)
    if q.numel() and (int(q.min()) < lo or int(q.max()) > hi):
        raise ValueError(f"pack_int: codes outside {lo}..{hi} do not fit {bits} bits")
    fields = q.flatten().to(torch.int16) & (2**bits - 1)  # two's complement field of each code
    per = codes_per_byte(bits)
    if per == 1:
        return fields.to(torch.uint8)
    fields = torch.nn.functional.pad(fields, (0, -fields.numel() % per)).reshape(-1, per)
    shifts = torch.arange(per, dtype=torch.int16) * bits
    return (fields << shifts).sum(1).to(torch.uint8)


def unpack_int(packed: torch.Tensor, bits: int, numel: int, *, signed: bool = True) -> torch.Tensor:
    """Inverse of :func:`pack_int`: the first ``numel`` codes, flat, int8 (or uint8 unsigned)."""
    import torch

    per = codes_per_byte(bits)
    if packed.dtype != torch.uint8 or packed.dim() != 1 or packed.numel() * per < numel:
        raise ValueError(f"unpack_int: need a flat uint8 tensor holding {numel} {bits}-bit codes, "
                         f"got {packed.dtype} of shape {tuple(packed.shape)}")
    shifts = torch.arange(per, dtype=torch.int16) * bits
    fields = ((packed.to(torch.int16)[:, None] >> shifts) & (2**bits - 1)).flatten()[:numel]
    if not signed:
        return fields.to(torch.uint8)
    negative = fields >= 2 ** (bits - 1)
    return (fields - negative.to(torch.int16) * 2**bits).to(torch.int8)


def quantized_convs(model: torch.nn.Module) -> Iterator[tuple[str, torch.nn.Module]]:
    """(name, module) of every module with an integer ``w_format`` and a ``conv``."""
    for name, m in model.named_modules():
        fmt_name = getattr(m, "w_format", None)
        if isinstance(fmt_name, str) and hasattr(m, "conv") and isinstance(FORMATS.get(fmt_name), IntegerFormat):
            yield name, m


def packed_formats(model: torch.nn.Module) -> dict[str, str]:
    """Prefix -> weight format of every layer :func:`packed_state` packs (for the file's metadata)."""
    return {name: m.w_format for name, m in quantized_convs(model)}


def packed_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """For each quantized conv ``<prefix>`` with an integer weight format: ``<prefix>.weight_packed``
    (uint8), ``<prefix>.weight_scale`` (fp32: per channel, or channels × groups),
    ``<prefix>.weight_zero_point`` (uint8, unsigned formats only) and ``<prefix>.weight_shape``
    (int64). The weights are encoded with per-channel ``amax``, as the layer quantizes them."""
    import torch

    state: dict[str, torch.Tensor] = {}
    for name, m in quantized_convs(model):
        fmt: IntegerFormat = FORMATS.get(m.w_format)  # type: ignore[assignment]
        w = m.conv.weight.detach().float().cpu()
        enc = fmt.encode(w, w.abs().amax(dim=tuple(range(1, w.dim())), keepdim=True))
        state[f"{name}.weight_packed"] = pack_int(enc.codes, fmt.bits)
        state[f"{name}.weight_scale"] = _stored_scale(fmt, enc.scale, w.shape[0])
        if enc.zero_point is not None:
            state[f"{name}.weight_zero_point"] = _stored_scale(fmt, enc.zero_point, w.shape[0])
        state[f"{name}.weight_shape"] = torch.tensor(list(w.shape), dtype=torch.int64)
    return state


def _stored_scale(fmt: IntegerFormat, s: torch.Tensor, channels: int) -> torch.Tensor:
    """Per-channel scales as (cout,), per-group ones as (cout, groups): the trailing 1s dropped."""
    s = s.reshape(channels, -1)
    return (s if isinstance(fmt, GroupInt) else s.reshape(channels)).contiguous()


def unpack_state(state: Mapping[str, torch.Tensor], formats: Mapping[str, str]) -> dict[str, torch.Tensor]:
    """A copy of ``state`` with each packed layer of ``formats`` (prefix -> format name) replaced
    by its dequantized weight ``<prefix>.conv.weight`` (fp32)."""
    out = dict(state)
    for prefix, fmt_name in formats.items():
        fmt = FORMATS.get(fmt_name)
        if not isinstance(fmt, IntegerFormat):
            raise ValueError(f"{prefix}: format '{fmt_name}' is not an integer format; nothing is packed")
        parts = {s: out.pop(f"{prefix}.{s}", None) for s in SUFFIXES}
        missing = [s for s in ("weight_packed", "weight_scale", "weight_shape") if parts[s] is None]
        if missing:
            raise KeyError(f"{prefix}: packed weight incomplete, missing {', '.join(missing)}")
        out[f"{prefix}.conv.weight"] = unpack_weight(fmt, parts["weight_packed"], parts["weight_scale"],
                                                     parts["weight_shape"], parts["weight_zero_point"])
    return out


def unpack_weight(fmt: IntegerFormat, packed: torch.Tensor, scale: torch.Tensor, shape: torch.Tensor,
                  zero_point: torch.Tensor | None = None) -> torch.Tensor:
    """One layer's dequantized weight from its packed codes and scales."""
    dims = [int(d) for d in shape.tolist()]
    numel = 1
    for d in dims:
        numel *= d
    codes = unpack_int(packed, fmt.bits, numel, signed=fmt.signed).reshape(dims)
    # Back to the shapes encode gave: (rows, groups, 1) as to_blocks cut them, or per channel.
    lead = (dims[0], -1, 1) if isinstance(fmt, GroupInt) else (dims[0],) + (1,) * (len(dims) - 1)
    zero_point = None if zero_point is None else zero_point.reshape(lead)
    return fmt.decode(IntCodes(codes, scale.float().reshape(lead), zero_point))
