"""Exactness of the numeric formats against references built independently of the code under
test: representable sets enumerated from the bit layouts, nearest-value search in float64 with
ties to the even code, torch's float8 casts, and numpy re-implementations of MX and NVFP4."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nasq.formats import FORMATS, IntegerFormat, get_format
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
    round_float_ops,
)

FLOAT_FORMATS = {"bf16": BF16, "fp16": FP16, "fp8_e4m3": E4M3, "fp8_e5m2": E5M2,
                 "fp6_e3m2": E3M2, "fp6_e2m3": E2M3, "fp4_e2m1": E2M1}
LAYOUTS = list(FLOAT_FORMATS.values())
SYMMETRIC_INTS = [f"int{b}" for b in range(2, 9)]


# ---------------------------------------------------------------- references
def magnitudes(layout: FloatLayout) -> np.ndarray:
    """Finite non-negative values by code, decoded from the bit layout."""
    return np.array(layout.finite_magnitudes(), dtype=np.float64)


def nearest_even(x: np.ndarray, mags: np.ndarray) -> np.ndarray:
    """Nearest of ``±mags`` to each ``x`` (float64), ties to the even code, saturating."""
    a = np.minimum(np.abs(x.astype(np.float64)), mags[-1])
    hi = np.clip(np.searchsorted(mags, a), 1, len(mags) - 1)
    lo = hi - 1
    d_lo, d_hi = a - mags[lo], mags[hi] - a
    pick_hi = (d_hi < d_lo) | ((d_hi == d_lo) & (hi % 2 == 0))
    return np.copysign(np.where(pick_hi, mags[hi], mags[lo]), x)


def dense_grid(layout: FloatLayout) -> np.ndarray:
    """Every value, every midpoint and the fp32 neighbours of each, quarter points, and values
    beyond the range, both signs (all exactly representable in fp32)."""
    m = magnitudes(layout).astype(np.float32)
    mid = ((m[:-1].astype(np.float64) + m[1:]) / 2).astype(np.float32)
    quarter = ((3 * m[:-1].astype(np.float64) + m[1:]) / 4).astype(np.float32)
    # beyond the range (capped at fp32's largest finite value; infinity is added below)
    beyond = np.minimum(layout.max_value * np.array([1.0001, 1.5, 2, 1e3]), np.finfo(np.float32).max)
    beyond = beyond.astype(np.float32)
    parts = [m, mid, np.nextafter(mid, np.float32(0)), np.nextafter(mid, np.float32(np.inf)), quarter,
             beyond, np.array([np.inf], np.float32)]
    pos = np.concatenate(parts)
    return np.concatenate([pos, -pos])


def log_uniform(n: int, lo_exp: float, hi_exp: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mag = np.exp2(rng.uniform(lo_exp, min(hi_exp, 127.9), n))
    return (mag * rng.choice([-1.0, 1.0], n)).astype(np.float32)


def fake_quant_unit_scale(name: str, x: np.ndarray) -> np.ndarray:
    """fake_quant with a scale of exactly 1 (amax = the largest finite value)."""
    fmt = get_format(name)
    amax = torch.tensor(FLOAT_FORMATS[name].max_value)
    return fmt.fake_quant(torch.from_numpy(x), amax).numpy()


def bits_equal(a: np.ndarray, b: np.ndarray) -> bool:
    return np.array_equal(a.astype(np.float32).view(np.uint32), b.astype(np.float32).view(np.uint32))


# ---------------------------------------------------------------- layouts
def test_layout_anchors():
    assert [E4M3.max_value, E5M2.max_value, E3M2.max_value, E2M3.max_value, E2M1.max_value] == [448, 57344, 28, 7.5, 6]
    assert [E4M3.min_subnormal, E5M2.min_subnormal, E3M2.min_subnormal, E2M3.min_subnormal, E2M1.min_subnormal] == \
        [2**-9, 2**-16, 2**-4, 2**-3, 0.5]
    assert FP16.max_value == 65504 and BF16.max_value == float(torch.finfo(torch.bfloat16).max)
    assert magnitudes(E2M1).tolist() == [0, 0.5, 1, 1.5, 2, 3, 4, 6]
    # finite codes per sign: e4m3fn loses only its NaN, e5m2 its 4 inf/NaN codes, FP6/FP4 none
    assert [len(magnitudes(lay)) for lay in (E4M3, E5M2, E3M2, E2M3, E2M1)] == [127, 124, 32, 32, 8]


@pytest.mark.parametrize("layout", [E4M3, E5M2, FP16, BF16], ids=lambda lay: lay.torch_dtype)
def test_decode_agrees_with_torch_on_every_code(layout):
    n = 2**layout.bits
    if layout.bits == 8:
        ref = torch.arange(n, dtype=torch.int16).to(torch.uint8).view(getattr(torch, layout.torch_dtype))
    else:
        ref = torch.arange(n, dtype=torch.int32).to(torch.int16).view(getattr(torch, layout.torch_dtype))
    ref = ref.double().numpy()
    mine = np.array([layout.decode(c) for c in range(n)])
    assert np.array_equal(np.isnan(mine), np.isnan(ref))
    finite = ~np.isnan(ref)
    assert np.array_equal(mine[finite], ref[finite])


# ---------------------------------------------------------------- floats: nearest, ties to even
@pytest.mark.parametrize("name", list(FLOAT_FORMATS))
def test_float_fake_quant_is_nearest_even_on_dense_grid(name):
    x = dense_grid(FLOAT_FORMATS[name])
    got = fake_quant_unit_scale(name, x)
    assert bits_equal(got, nearest_even(x, magnitudes(FLOAT_FORMATS[name])))


@pytest.mark.parametrize("name", list(FLOAT_FORMATS))
def test_float_fake_quant_is_nearest_even_on_random_inputs(name):
    lay = FLOAT_FORMATS[name]
    x = log_uniform(100_000, lay.emin - lay.man_bits - 4, math.log2(lay.max_value) + 3, seed=len(name))
    assert bits_equal(fake_quant_unit_scale(name, x), nearest_even(x, magnitudes(lay)))


@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda lay: f"e{lay.exp_bits}m{lay.man_bits}")
def test_three_rounding_routes_agree_bit_for_bit(layout):
    x = np.concatenate([dense_grid(layout), log_uniform(50_000, layout.emin - layout.man_bits - 4,
                                                        math.log2(layout.max_value) + 3, seed=5)])
    xt = torch.from_numpy(x)
    bit_route = round_float(xt, layout, cast=False).numpy()
    assert bits_equal(bit_route, nearest_even(x, magnitudes(layout)))
    assert bits_equal(round_float(xt, layout).numpy(), bit_route)  # torch cast where there is one
    # The ONNX-op route writes the sign with Where(y < 0): an input of -0.0 comes out +0.0.
    signed_zero = (x == 0) & np.signbit(x)
    for other in (round_float_ops(xt, layout).numpy(), round_float(xt.double(), layout).float().numpy()):
        assert bits_equal(other[~signed_zero], bit_route[~signed_zero])
        assert (other[signed_zero] == 0).all()


@pytest.mark.parametrize("name,dtype", [("fp8_e4m3", torch.float8_e4m3fn), ("fp8_e5m2", torch.float8_e5m2)])
def test_fp8_bit_for_bit_with_torch_on_a_million_values(name, dtype):
    """Values from far below the subnormals to far beyond the range. Where torch's cast is
    finite the bits agree; beyond the range torch's e5m2 overflows to inf, ours saturates."""
    x = torch.from_numpy(log_uniform(1_000_000, -30, 20, seed=11))
    m = FLOAT_FORMATS[name].max_value
    mine = get_format(name).fake_quant(x, torch.tensor(m)).to(dtype)
    raw = x.to(dtype)
    finite = torch.isfinite(raw.float())
    assert torch.equal(mine.view(torch.uint8)[finite], raw.view(torch.uint8)[finite])
    assert torch.equal(mine.float()[~finite], torch.sign(x[~finite]) * m)
    assert torch.equal(mine.view(torch.uint8), x.clamp(-m, m).to(dtype).view(torch.uint8))
    ops = round_float_ops(x, FLOAT_FORMATS[name])
    assert torch.equal(ops.to(dtype).view(torch.uint8), mine.view(torch.uint8))
    assert (x.abs() > m).sum() > 1000 and (x.abs() < FLOAT_FORMATS[name].min_subnormal).sum() > 1000


@pytest.mark.parametrize("name", list(FLOAT_FORMATS))
def test_scaled_float_lands_on_scaled_grid(name):
    """Any scale: fake_quant(x) / s is a representable value (to fp32 rounding of the product)."""
    fmt = get_format(name)
    x = torch.randn(20_000, generator=torch.Generator().manual_seed(4)) * 7
    q = fmt.quantize(x)
    s = x.abs().amax() / getattr(fmt, "max_value", 1.0) if fmt.name not in ("bf16", "fp16") else torch.tensor(1.0)
    y = (q / s).double().numpy()
    assert np.allclose(nearest_even(y, magnitudes(FLOAT_FORMATS[name])), y, rtol=1e-6, atol=0)


@settings(max_examples=200, derandomize=True, deadline=None)
@given(st.lists(st.floats(-1e6, 1e6, width=32), min_size=2, max_size=50), st.sampled_from(LAYOUTS))
def test_rounding_is_monotone_odd_and_idempotent(values, layout):
    x = torch.tensor(sorted(values), dtype=torch.float32)
    q = round_float(x, layout, cast=False)
    assert (q[1:] >= q[:-1]).all()
    assert torch.equal(round_float(-x, layout, cast=False), -q)
    assert torch.equal(round_float(q, layout, cast=False), q)


# ---------------------------------------------------------------- integers
INTEGER_NAMES = [n for n in FORMATS.names() if isinstance(get_format(n), IntegerFormat)]


def _weights(seed=0):
    return torch.randn(16, 8, 3, 3, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", INTEGER_NAMES)
def test_integer_levels_at_most_2_pow_bits(name):
    """At most 2**bits codes (2**bits - 1 for the narrow symmetric range), and uniform data
    fills every one of them; one scale per tensor also means as many values. (A group of 128
    cannot fill 255 codes: there the bound alone is checked.)"""
    fmt = get_format(name)
    x = torch.linspace(-3.0, 3.0, 50_001)
    codes = fmt.encode(x).codes.unique()
    assert codes.numel() <= 2**fmt.bits
    if getattr(fmt, "group_size", 2**fmt.bits) >= 2**fmt.bits:
        assert codes.numel() == 2**fmt.bits - (1 if fmt.signed else 0)
    if not hasattr(fmt, "group_size"):
        assert fmt.quantize(x).unique().numel() == codes.numel()


@pytest.mark.parametrize("name", INTEGER_NAMES)
def test_integer_idempotent_per_tensor_and_per_channel(name):
    fmt = get_format(name)
    x = torch.randn(10_000, generator=torch.Generator().manual_seed(7)) * 5
    q = fmt.quantize(x)
    assert torch.equal(fmt.quantize(q, x.abs().amax()), q)
    w = _weights()
    amax = w.abs().amax(dim=(1, 2, 3), keepdim=True)
    qw = fmt.quantize(w, amax)
    assert torch.equal(fmt.quantize(qw, amax), qw)


@settings(max_examples=100, derandomize=True, deadline=None)
@given(st.lists(st.floats(-100, 100, width=32), min_size=1, max_size=300), st.sampled_from(INTEGER_NAMES))
def test_integer_property_levels_and_idempotence(values, name):
    fmt = get_format(name)
    x = torch.tensor(values, dtype=torch.float32)
    enc = fmt.encode(x)
    codes = enc.codes.to(torch.int16)
    assert int(codes.min()) >= fmt.qmin and int(codes.max()) <= fmt.qmax
    q = fmt.quantize(x)
    assert torch.equal(fmt.decode(enc), q)
    assert torch.equal(fmt.quantize(q, x.abs().amax()), q)


def _sqnr_db(x: torch.Tensor, q: torch.Tensor) -> float:
    return float(10 * torch.log10(x.pow(2).mean() / (x - q).pow(2).mean()))


def _data(kind: str) -> torch.Tensor:
    rng = np.random.default_rng(8)
    x = rng.standard_normal(2**16) if kind == "gauss" else rng.standard_t(3, 2**16)
    return torch.from_numpy(x.astype(np.float32))


@pytest.mark.parametrize("kind", ["gauss", "student_t3"])
@pytest.mark.parametrize("family", [SYMMETRIC_INTS, ["int2_mse", "int4_mse"], ["int4_asym", "int8_asym"],
                                    ["int4_g128", "int8_g128"]], ids=["symmetric", "mse", "asym", "group"])
def test_sqnr_never_falls_as_bits_rise(kind, family):
    x = _data(kind)
    values = [_sqnr_db(x, get_format(n).quantize(x)) for n in family]
    assert all(b > a for a, b in zip(values, values[1:], strict=False)), dict(zip(family, values, strict=True))


@pytest.mark.parametrize("kind", ["gauss", "student_t3"])
def test_mse_clipping_never_loses_to_max(kind):
    x = _data(kind)
    for bits in (2, 4):
        assert _sqnr_db(x, get_format(f"int{bits}_mse").quantize(x)) >= _sqnr_db(x, get_format(f"int{bits}").quantize(x))


def test_asymmetric_uses_every_code_and_keeps_zero_exact():
    fmt = get_format("int4_asym")
    x = torch.cat([torch.linspace(-1.0, 3.0, 1001), torch.zeros(3)])
    enc = fmt.encode(x)
    assert enc.codes.min() == 0 and enc.codes.max() == 15
    assert (fmt.quantize(x)[-3:] == 0).all()


# ---------------------------------------------------------------- block formats
def test_block_effective_bits():
    eff = {n: get_format(n).effective_bits() for n in ("mxfp4", "mxfp6", "mxfp6_e3m2", "mxfp8", "nvfp4")}
    assert eff == {"mxfp4": 4.25, "mxfp6": 6.25, "mxfp6_e3m2": 6.25, "mxfp8": 8.25, "nvfp4": 4.5}
    assert get_format("int4_g32").effective_bits() == 5.0 and get_format("int4_g128").effective_bits() == 4.25


def _rows_blocks(x: np.ndarray, block: int) -> tuple[np.ndarray, int]:
    rows = x.reshape(x.shape[0], -1).astype(np.float64)
    n = rows.shape[1]
    rows = np.pad(rows, ((0, 0), (0, -n % block)))
    return rows.reshape(rows.shape[0], -1, block), n


def mx_reference(x: np.ndarray, element: FloatLayout) -> np.ndarray:
    blocks, n = _rows_blocks(x, 32)
    amax = np.abs(blocks).max(-1, keepdims=True)
    _, exp = np.frexp(np.where(amax > 0, amax, 1.0))  # amax = m · 2**exp, m in [0.5, 1)
    shared = np.where(amax > 0, exp - 1 - element.emax, -127).clip(-127, 127)
    scale = np.ldexp(1.0, shared)
    q = nearest_even(blocks / scale, magnitudes(element)) * scale
    return q.reshape(x.shape[0], -1)[:, :n].reshape(x.shape).astype(np.float32)


def _blocky(seed: int, shape=(6, 70)) -> np.ndarray:
    """Rows not a multiple of the block; block magnitudes spread over many binades; one zero row."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape) * np.exp2(rng.integers(-20, 20, size=(shape[0], 1)))
    x[:, 3] *= 2**30  # some elements far above their neighbours: many flush to zero
    x[-1] = 0
    return x.astype(np.float32)


@pytest.mark.parametrize("name,element", [("mxfp8", E4M3), ("mxfp6", E2M3), ("mxfp6_e3m2", E3M2), ("mxfp4", E2M1)])
def test_mx_matches_reference(name, element):
    for seed in range(4):
        x = _blocky(seed)
        got = get_format(name).quantize(torch.from_numpy(x)).numpy()
        assert bits_equal(got, mx_reference(x, element))


def test_mx_scale_is_ocp_power_of_two():
    fmt = get_format("mxfp4")
    # 2**(floor(log2(block amax)) - 2): amax 7.9 -> 1 (7.9 saturates to 6), 8 -> 2, 0 -> 2**-127
    blocks = torch.tensor([[[7.9] + [0.0] * 31, [-8.0] + [1.0] * 31, [0.0] * 32]])
    assert fmt.block_scales(blocks).flatten().tolist() == [1.0, 2.0, 2.0**-127]


def nvfp4_reference(x: np.ndarray, amax: float) -> np.ndarray:
    """In fp32 arithmetic, as the format computes: t = amax / 2688; block scale = e4m3(bmax / 6 / t)."""
    f32 = np.float32
    t = f32(amax) / f32(448 * 6)
    rows = x.reshape(x.shape[0], -1)
    n = rows.shape[1]
    blocks = np.pad(rows, ((0, 0), (0, -n % 16))).reshape(rows.shape[0], -1, 16)
    bmax = np.abs(blocks).max(-1, keepdims=True)
    s = nearest_even((bmax / f32(6)) / t, magnitudes(E4M3)).astype(np.float32)
    denom = np.where(s > 0, s * t, f32(1))
    r = nearest_even(blocks / denom, magnitudes(E2M1)).astype(np.float32)
    q = (r * s) * t
    return q.reshape(rows.shape[0], -1)[:, :n].reshape(x.shape)


def test_nvfp4_matches_reference():
    fmt = get_format("nvfp4")
    for seed in range(4):
        x = _blocky(seed, (5, 40)) / 2**20
        amax = float(np.abs(x).max())
        got = fmt.quantize(torch.from_numpy(x), torch.tensor(amax)).numpy()
        assert bits_equal(got, nvfp4_reference(x, amax))
        # a calibrated range below the data's: block scales saturate at 448, elements at 6
        got = fmt.quantize(torch.from_numpy(x), torch.tensor(amax / 8)).numpy()
        assert bits_equal(got, nvfp4_reference(x, amax / 8))


def test_nvfp4_largest_block_keeps_amax():
    x = torch.randn(4, 64, generator=torch.Generator().manual_seed(9))
    q = get_format("nvfp4").quantize(x)
    assert q.abs().max() == x.abs().max()
