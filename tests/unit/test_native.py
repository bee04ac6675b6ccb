"""The fused C kernels of the block formats (nasq/formats/blockquant.c) equal the torch path bit
for bit, signed zeros included, in every layout the trainer hands them; a NaN or an infinity, a
tensor they do not take, or a machine without a compiler falls back to the torch path."""

from __future__ import annotations

import logging

import pytest
import torch

from nasq.formats import get_format, native

BLOCK_FORMATS = ["mxfp8", "mxfp6", "mxfp6_e3m2", "mxfp4", "nvfp4", "int4_g32", "int4_g128", "int8_g128"]
SHAPES = [(7, 45, 5, 3), (32, 24, 14, 14), (3, 33), (4, 9, 70), (100,), (2, 3, 1, 1), (1, 1)]

pytestmark = pytest.mark.skipif(native.library() is None, reason="no C compiler to build the kernels")


def hostile(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Magnitudes from fp32 subnormals to 2**100, signed zeros, whole blocks of zeros or tiny values."""
    g = torch.Generator().manual_seed(seed)
    mag = torch.exp2(torch.randint(-149, 100, shape, generator=g).float())
    x = torch.randn(*shape, generator=g) * torch.where(torch.rand(shape, generator=g) < 0.3, mag, 1.0)
    flat = x.view(-1)
    flat[::13] = 0.0
    flat[5::17] = -0.0
    flat[: min(40, flat.numel())] *= 1e-39
    return x


def torch_path(fmt, x, amax, monkeypatch) -> torch.Tensor:
    monkeypatch.setenv("NASQ_NATIVE", "0")
    try:
        return fmt._quantize(x, amax)
    finally:
        monkeypatch.setenv("NASQ_NATIVE", "1")


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(torch.int32)


def layouts(x: torch.Tensor):
    yield "contiguous", x
    if x.dim() == 4:
        yield "channels-last", x.contiguous(memory_format=torch.channels_last)
    if x.dim() >= 2:
        yield "transposed", x.transpose(0, -1).contiguous().transpose(0, -1)
        yield "sliced", torch.cat([x, x], dim=-1)[..., : x.shape[-1]]


@pytest.mark.parametrize("name", BLOCK_FORMATS)
def test_kernel_equals_torch_path_bit_for_bit(name, monkeypatch):
    monkeypatch.setenv("NASQ_NATIVE", "1")
    fmt = get_format(name)
    for i, shape in enumerate(SHAPES):
        for how, x in layouts(hostile(shape, seed=i)):
            amax = x.abs().amax().clamp_min(1e-12)
            assert native.applies(x, getattr(fmt, "block", getattr(fmt, "group_size", 0)))
            ref, got = torch_path(fmt, x, amax, monkeypatch), fmt._quantize(x, amax)
            assert torch.equal(bits(ref), bits(got)), f"{name} {shape} {how}"
            if x.dim() == 4 and how == "channels-last":
                assert got.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("name", BLOCK_FORMATS)
def test_fake_quant_trains_through_the_kernel(name, monkeypatch):
    """Training calls: the straight-through gradient is the identity, the values the kernel's."""
    monkeypatch.setenv("NASQ_NATIVE", "1")
    fmt = get_format(name)
    x = hostile((8, 40, 6, 6), seed=3).contiguous(memory_format=torch.channels_last).requires_grad_()
    y = fmt.fake_quant(x)
    y.backward(torch.ones_like(y))
    assert torch.equal(x.grad, torch.ones_like(x))
    assert torch.equal(bits(y.detach()), bits(torch_path(fmt, x.detach(), x.detach().abs().amax(), monkeypatch)))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_block_falls_back_to_the_torch_path(bad, monkeypatch):
    monkeypatch.setenv("NASQ_NATIVE", "1")
    x = hostile((4, 64), seed=5)
    x[2, 40] = bad
    mx = get_format("mxfp8")
    assert native.block_quant(x, 32, native.KIND_MX, (float(mx.element.emax),), mx.element) is None
    for name in ("mxfp8", "nvfp4", "int4_g32"):
        fmt = get_format(name)
        ref, got = torch_path(fmt, x, torch.tensor(1.0), monkeypatch), fmt._quantize(x, torch.tensor(1.0))
        assert torch.equal(ref.isnan(), got.isnan())
        assert torch.equal(torch.nan_to_num(ref), torch.nan_to_num(got))


def test_tensors_the_kernel_does_not_take(monkeypatch):
    monkeypatch.setenv("NASQ_NATIVE", "1")
    assert not native.applies(torch.randn(4, 8, dtype=torch.float64), 32)
    assert not native.applies(torch.randn(2, 2, 2, 2, 2), 32)
    assert not native.applies(torch.empty(0, 8), 32)
    assert not native.applies(torch.randn(4, 8), native.MAX_BLOCK + 1)
    assert native.applies(torch.randn(4, 8), 32)
    monkeypatch.setenv("NASQ_NATIVE", "0")
    assert not native.applies(torch.randn(4, 8), 32)
    x = torch.randn(3, 40, dtype=torch.float64)  # the torch path keeps the dtype
    assert get_format("mxfp8").quantize(x).dtype == torch.float64


def test_library_is_built_once_into_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NASQ_CACHE_DIR", str(tmp_path))
    native.library.cache_clear()
    try:
        assert native.library() is not None
        built = list((tmp_path / "kernels").iterdir())
        assert len(built) == 1 and built[0].name.startswith("blockquant-") and built[0].suffix == ".so"
        stamp = built[0].stat().st_mtime_ns
        native.library.cache_clear()
        assert native.library() is not None
        assert [p.stat().st_mtime_ns for p in (tmp_path / "kernels").iterdir()] == [stamp]  # reused
    finally:
        native.library.cache_clear()


def test_no_compiler_means_the_torch_path(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("NASQ_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("CC", "nasq-no-such-compiler")
    native.library.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger="nasq.formats.native"):
            assert native.library() is None
        assert "torch path" in caplog.text and "nasq-no-such-compiler" in caplog.text
        x = hostile((4, 64), seed=6)
        assert not native.applies(x, 32)
        assert torch.isfinite(get_format("mxfp4").quantize(x)).all()
        assert not (tmp_path / "kernels").exists() or not any((tmp_path / "kernels").iterdir())
    finally:
        native.library.cache_clear()


def test_nvfp4_ties_divide_as_the_torch_path(monkeypatch):
    """Elements a few ulps around the E2M1 midpoints of their block's scale: dividing by the scale
    and multiplying by its reciprocal round apart there, so the kernel must divide too."""
    from nasq.formats.floatbits import E4M3

    monkeypatch.setenv("NASQ_NATIVE", "1")
    fmt = get_format("nvfp4")
    g = torch.Generator().manual_seed(7)
    amax = torch.tensor(1.0)
    t = fmt.tensor_scale(amax)
    scales = torch.tensor([v for v in E4M3.finite_magnitudes() if v >= 2.0**-6])
    s0 = scales[torch.randint(0, len(scales), (4096,), generator=g)]
    d = s0 * t
    ties = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0])
    k = torch.randint(-3, 4, (4096, 15), generator=g).float()
    rest = ties[torch.randint(0, len(ties), (4096, 15), generator=g)] * d[:, None] * (1 + k * 2.0**-23)
    x = torch.cat([(6 * d)[:, None], rest * torch.where(torch.rand(4096, 15, generator=g) < 0.5, -1.0, 1.0)], 1)
    x = x.reshape(64, -1)
    ref, got = torch_path(fmt, x, amax, monkeypatch), fmt._quantize(x, amax)
    assert torch.equal(bits(ref), bits(got))


SYMMETRIC = ["int2", "int3", "int4", "int5", "int6", "int7", "int8", "int4_lsq", "int2_mse", "int4_mse", "ternary"]


SCALED_FLOATS = ["fp8_e4m3", "fp8_e5m2", "fp6_e3m2", "fp6_e2m3", "fp4_e2m1"]


@pytest.mark.parametrize("name", SYMMETRIC + ["int4_asym", "int8_asym"] + SCALED_FLOATS)
def test_row_kernels_equal_torch_path_bit_for_bit(name, monkeypatch):
    """Per tensor and per channel, contiguous and channels-last; the scales as each format finds
    them (max, MSE over every element, absmean, the asymmetric range, or the float's largest value)."""
    monkeypatch.setenv("NASQ_NATIVE", "1")
    fmt = get_format(name)
    for i, shape in enumerate([(16, 24, 7, 7), (24, 8, 3, 3), (5, 70), (300,)]):
        for how, x in layouts(hostile(shape, seed=20 + i)):
            for amax in (x.abs().amax().clamp_min(1e-12), x.abs().amax(dim=tuple(range(1, x.dim())), keepdim=True)
                         .clamp_min(1e-12) if x.dim() > 1 else None):
                if amax is None:
                    continue
                rows = amax.numel()
                ref, got = torch_path(fmt, x, amax, monkeypatch), fmt._quantize(x, amax)
                assert torch.equal(bits(ref), bits(got)), f"{name} {shape} {how} rows={rows}"
                if how in ("contiguous", "channels-last"):
                    assert native.applies_rows(x, rows)


def test_row_kernels_take_dense_rows_only():
    x = torch.randn(6, 8, 5, 5)
    assert native.applies_rows(x, 1) and native.applies_rows(x, 6)
    assert native.applies_rows(x.contiguous(memory_format=torch.channels_last), 6)
    assert not native.applies_rows(x, 8)  # rows are dim-0 slices or the whole tensor
    assert not native.applies_rows(x.transpose(0, 1), 8)  # not dense in any order the kernel reads
    assert not native.applies_rows(x[:, :4], 6)


@pytest.mark.parametrize("name", ["int2_mse", "int4_mse"])
def test_mse_search_picks_the_least_error_ratio(name, monkeypatch):
    """The fused search in training picks, per row, the first ratio whose fp32 errors over the
    strided sample sum least (in float64); the torch path sums in fp32, so where the two differ
    the errors of their picks agree to 1e-5."""
    from nasq.formats.integer import MSE_RATIOS, MSE_TRAIN_SAMPLE

    monkeypatch.setenv("NASQ_NATIVE", "1")
    fmt = get_format(name)
    g = torch.Generator().manual_seed(11)
    ratios = torch.tensor(MSE_RATIOS)
    for shape in [(12, 3000), (1, 8000), (40, 9)]:
        x = torch.randn(*shape, generator=g) * torch.rand(shape[0], 1, generator=g).add(0.1)
        x[:, ::7] *= 8  # heavy tails: the best ratio lies well inside the range
        amax = x.abs().amax(1, keepdim=True)
        got = fmt._mse_amax(x, amax, MSE_TRAIN_SAMPLE)
        sample = x[:, :: -(-x.numel() // MSE_TRAIN_SAMPLE)] if x.numel() > MSE_TRAIN_SAMPLE else x
        s = amax[None] * ratios[:, None, None] / fmt.qmax  # (ratios, rows, 1), fp32 as the kernel
        err = ((sample[None] * s.reciprocal()).round().clamp(-fmt.qmax, fmt.qmax) * s - sample[None]) ** 2
        total = err.double().sum(2)  # (ratios, rows)
        best = total.argmin(0)
        assert (best > 0).any()  # the search clips somewhere
        assert torch.equal(got, amax * ratios[best].reshape(amax.shape))
        monkeypatch.setenv("NASQ_NATIVE", "0")
        ref = fmt._mse_amax(x, amax, MSE_TRAIN_SAMPLE)
        monkeypatch.setenv("NASQ_NATIVE", "1")
        ref_idx = torch.tensor([int((ratios - r).abs().argmin()) for r in (ref / amax).flatten()])
        assert torch.allclose(total.gather(0, ref_idx[None]).flatten(), total.min(0).values, rtol=1e-5)


def test_abs_max_is_torchs(monkeypatch):
    monkeypatch.setenv("NASQ_NATIVE", "1")
    for i, shape in enumerate([(16, 24, 7, 7), (5, 70), (1,)]):
        for _, x in layouts(hostile(shape, seed=40 + i)):
            if native.applies_rows(x, 1):
                assert torch.equal(bits(native.abs_max(x)), bits(x.abs().amax()))
    x = torch.zeros(3, 5)
    assert native.abs_max(x) == 0 and native.abs_max(-x) == 0
    x[1, 2] = -float("inf")
    assert native.abs_max(x) == float("inf")
    x[2, 2] = float("nan")
    assert native.abs_max(x) is None
    assert get_format("int8").fake_quant(x).isnan().any()  # torch's NaN maximum, as before


@pytest.mark.parametrize("name", SCALED_FLOATS)
def test_scaled_float_ties_divide_as_the_torch_path(name, monkeypatch):
    """Elements a few ulps around the midpoints of the format's grid times the scale: a kernel
    multiplying by 1 / s instead of dividing by s rounds some of them the other way."""
    monkeypatch.setenv("NASQ_NATIVE", "1")
    fmt = get_format(name)
    g = torch.Generator().manual_seed(9)
    mags = torch.tensor(fmt.layout.finite_magnitudes(), dtype=torch.float64)
    ties = ((mags[:-1] + mags[1:]) / 2).float()
    amax = torch.rand(64, 1, 1, 1, generator=g).add(0.5)
    s = amax / fmt.max_value
    k = torch.randint(-3, 4, (64, 4, 8, len(ties)), generator=g).float()
    x = ties * s * (1 + k * 2.0**-23) * torch.where(torch.rand(64, 4, 8, 1, generator=g) < 0.5, -1.0, 1.0)
    ref, got = torch_path(fmt, x, amax, monkeypatch), fmt._quantize(x, amax)
    assert torch.equal(bits(ref), bits(got))


def _activation_paths(x, amax, monkeypatch, fn):
    """fn(x, amax) through the kernels and through torch: values (bits) and input gradients."""
    outs = []
    for flag in ("1", "0"):
        monkeypatch.setenv("NASQ_NATIVE", flag)
        xg = x.clone().requires_grad_()
        y = fn(xg, amax)
        g = torch.linspace(-1, 1, y.numel()).reshape(y.shape)
        (y * g).sum().backward()
        outs.append((y.detach(), xg.grad))
    monkeypatch.setenv("NASQ_NATIVE", "1")
    return outs


@pytest.mark.parametrize("unsigned", [True, False])
def test_int8_activation_kernel_equals_torch_values_and_gradient_mask(unsigned, monkeypatch):
    """Own-range scale (training: every code inside, no mask) and a calibrated range the tensor
    exceeds (codes outside: the kernel's mask must zero those gradients as torch's does)."""
    from nasq.supernet.layers import int8_activation_quant

    x = torch.relu(hostile((8, 16, 6, 6), seed=50)).clamp_max(6) if unsigned else hostile((8, 16, 6, 6), seed=50)
    x = x.contiguous(memory_format=torch.channels_last)
    for amax in (None, x.abs().amax() / 3):
        (y1, g1), (y0, g0) = _activation_paths(x, amax, monkeypatch,
                                               lambda t, a: int8_activation_quant(t, a, unsigned))
        assert torch.equal(bits(y1), bits(y0))
        assert torch.equal(g1, g0)
        if amax is not None:
            assert (g1 == 0).any()  # some codes fell outside and their gradient was masked


@pytest.mark.parametrize("bits_", [2, 4, 6])
def test_unsigned_grid_kernel_equals_torch(bits_, monkeypatch):
    from nasq.supernet.layers import unsigned_activation_quant

    x = torch.nn.functional.relu6(hostile((8, 16, 6, 6), seed=60) * 3)
    x.view(-1)[::11] = -0.0
    x = x.contiguous(memory_format=torch.channels_last)
    for amax in (None, torch.tensor(2.5)):
        (y1, g1), (y0, g0) = _activation_paths(x, amax, monkeypatch,
                                               lambda t, a: unsigned_activation_quant(t, a, bits_))
        assert torch.equal(bits(y1), bits(y0)) and torch.equal(g1, g0)
        assert y1.is_contiguous(memory_format=torch.channels_last)
    # a few ulps around every midpoint between codes: x / s and x * (1 / s) round some apart
    n = 2**bits_ - 1
    for amax in (2.5, 0.7, 5.3):
        s = torch.tensor(amax) / n
        k = torch.arange(-3, 4).float()
        ties = ((torch.arange(n).float() + 0.5)[:, None] * s * (1 + k * 2.0**-23)).reshape(1, -1)
        ref = unsigned_activation_quant(ties, torch.tensor(amax), bits_)
        monkeypatch.setenv("NASQ_NATIVE", "0")
        assert torch.equal(bits(ref), bits(unsigned_activation_quant(ties, torch.tensor(amax), bits_)))
        monkeypatch.setenv("NASQ_NATIVE", "1")
