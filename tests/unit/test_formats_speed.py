"""The fast fake-quantization paths equal the implementations they replaced, bit for bit: the
in-place bit rounding against the former select-based one, the in-place integer rounding against
torch's fused fake-quantize kernels, and the in-place straight-through step against the plain
expression. Edge inputs: signed zeros, fp32 and layout subnormals, ties, saturation, NaN."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nasq.formats import get_format, round_float
from nasq.formats.base import straight_through
from nasq.formats.floatbits import (
    BF16,
    E2M1,
    E2M3,
    E3M2,
    E4M3,
    E5M2,
    FP16,
    _round_by_fields,
    _round_by_step,
    _round_float32_bits,
)

LAYOUTS = [E2M1, E2M3, E3M2, E4M3, E5M2, FP16, BF16]


def edge_values(layout) -> torch.Tensor:
    mags = torch.tensor(layout.finite_magnitudes(), dtype=torch.float64)
    ties = (mags[:-1] + mags[1:]) / 2
    grid = torch.cat([mags, ties]).float()
    near = torch.cat([torch.nextafter(grid, torch.tensor(0.0)), torch.nextafter(grid, torch.tensor(1e38))])
    tiny = torch.tensor([0.0, 1e-45, 1e-40, 2.0**-126, 2.0**-127, layout.min_subnormal / 2,
                         layout.min_normal, layout.max_value, 3.0e38])
    pos = torch.cat([grid, near, tiny])
    return torch.cat([pos, -pos])


def random_values(layout, n: int = 20_000) -> torch.Tensor:
    gen = torch.Generator().manual_seed(layout.bits * 31 + layout.man_bits)
    exp = torch.empty(n).uniform_(layout.emin - layout.man_bits - 6, np.log2(layout.max_value) + 1, generator=gen)
    sign = torch.randint(0, 2, (n,), generator=gen) * 2 - 1
    return (torch.exp2(exp) * sign).float()


def _round_float32_select(y: torch.Tensor, layout) -> torch.Tensor:
    """The former bit rounding (a ``where`` between two roundings): the reference."""
    drop = 23 - layout.man_bits
    b = y.view(torch.int32)
    odd = (b >> drop) & 1
    normal = ((b + ((1 << (drop - 1)) - 1) + odd) & ~((1 << drop) - 1)).view(torch.float32)
    step = layout.min_subnormal
    small = torch.round(y / step) * step
    return torch.where(y.abs() < layout.min_normal, small, normal)


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(torch.int32)


@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda lay: f"e{lay.exp_bits}m{lay.man_bits}")
def test_inplace_bit_rounding_equals_select_version(layout):
    m = layout.max_value
    y = torch.cat([edge_values(layout), random_values(layout)]).clamp(-m, m)
    old = _round_float32_select(y.clone(), layout)
    assert torch.equal(bits(_round_float32_bits(y.clone(), layout)), bits(old))
    assert torch.equal(bits(_round_by_fields(y.clone(), layout)), bits(old))
    if layout is not BF16:  # its subnormal step is no normal fp32: only the field route takes it
        assert torch.equal(bits(_round_by_step(y.clone(), layout)), bits(old))
    nan = torch.tensor([float("nan"), -float("nan")]).clamp(-m, m)
    for route in (_round_by_step, _round_by_fields):
        assert torch.isnan(route(nan.clone(), layout)).all()


@pytest.mark.parametrize("name", ["int2", "int4", "int8", "int4_lsq", "ternary"])
def test_integer_rounding_equals_torch_fake_quantize(name):
    fmt = get_format(name)
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(16, 8, 3, 3, generator=gen) * 2
    x[0, 0, 0] = torch.tensor([0.0, -0.0, -1e-9])  # a negative value rounding to zero comes out +0
    for amax in (x.abs().amax(), x.abs().amax(dim=(1, 2, 3), keepdim=True)):
        s = fmt.scale(fmt.clip_amax(x, amax)).float()
        if s.numel() == 1:
            zero = torch.zeros((), dtype=torch.int32)
            ref = torch.fake_quantize_per_tensor_affine(x, s.reshape(()), zero, -fmt.qmax, fmt.qmax)
        else:
            zero = torch.zeros(s.numel(), dtype=torch.int32)
            ref = torch.fake_quantize_per_channel_affine(x, s.flatten(), zero, 0, -fmt.qmax, fmt.qmax)
        assert torch.equal(bits(fmt.quantize(x, amax)), bits(ref))


def test_straight_through_values_and_gradient():
    gen = torch.Generator().manual_seed(4)
    x = (torch.randn(64, generator=gen) * 1e3).requires_grad_()
    q = torch.round(x.detach())
    expected = (x + (q - x).detach()).detach()
    y = straight_through(x, q.clone())
    assert torch.equal(bits(y.detach()), bits(expected))
    y.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))


def test_straight_through_leaves_an_aliased_input_alone():
    x = torch.linspace(-2, 2, 9).requires_grad_()
    before = x.detach().clone()
    y = straight_through(x, x.detach())  # a format whose _quantize returns its input
    assert torch.equal(x.detach(), before)
    assert torch.equal(y.detach(), before)


@pytest.mark.parametrize("name", ["fp4_e2m1", "fp6_e3m2", "mxfp4", "nvfp4", "int4", "int4_g32"])
def test_training_and_evaluation_paths_agree(name):
    fmt = get_format(name)
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(4, 8, 5, 5, generator=gen)
    xg = x.clone().requires_grad_()
    out = fmt.fake_quant(xg)
    assert torch.equal(out.detach(), fmt.quantize(x))
    assert torch.equal(xg.detach(), x)  # the in-place steps never touch the input


@pytest.mark.parametrize("name", ["int2_mse", "int4_mse"])
def test_mse_search_in_place_equals_plain_expression(name):
    fmt = get_format(name)
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(8, 4, 3, 3, generator=gen) * torch.rand(8, 1, 1, 1, generator=gen)
    for amax in (x.abs().amax(), x.abs().amax(dim=(1, 2, 3), keepdim=True)):
        ratios = torch.tensor([1.0 - 0.05 * i for i in range(19)])
        errors = torch.stack([(fmt._rounded(x, fmt.scale(amax * r)) - x).pow(2).reshape(amax.numel(), -1).sum(1)
                              for r in ratios])
        expected = amax * ratios[errors.argmin(0)].reshape(amax.shape)
        assert torch.equal(fmt.clip_amax(x, amax), expected)


@pytest.mark.parametrize("name", ["int2_mse", "int4_mse"])
def test_mse_training_search_samples_large_tensors_only(name):
    """Training searches the clipping ratio on a strided sample: a tensor within the sample gets
    exactly the evaluation's values; a larger one a ratio whose error over the whole tensor is within
    1 % of the best ratio's, with the straight-through gradient either way."""
    from nasq.formats.integer import MSE_RATIOS, MSE_TRAIN_SAMPLE

    fmt = get_format(name)
    gen = torch.Generator().manual_seed(8)
    small = torch.randn(8, 4, 3, 3, generator=gen)
    xg = small.clone().requires_grad_()
    assert torch.equal(fmt.fake_quant(xg).detach(), fmt.quantize(small))
    big = torch.randn(4 * MSE_TRAIN_SAMPLE, generator=gen) ** 3  # heavy tails: the ratio matters
    amax = big.abs().amax()
    errors = torch.stack([(fmt._rounded(big, fmt.scale(amax * r)) - big).pow(2).sum() for r in MSE_RATIOS])
    xg = big.clone().requires_grad_()
    out = fmt.fake_quant(xg)
    out.sum().backward()
    assert torch.equal(xg.grad, torch.ones_like(big))
    chosen = float((out.detach() - big).pow(2).sum())
    assert chosen <= float(errors.min()) * 1.01
    assert chosen < float(errors[0])  # not simply the unclipped range


def test_half_precision_inputs_keep_their_former_paths():
    """Under autocast activations arrive in bf16: the integer formats keep torch's fused kernel
    (it computes in fp32), and a per-channel fp32 scale still promotes the result as before."""
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(8, 4, 3, 3, generator=gen).to(torch.bfloat16)
    fmt = get_format("int4")
    s = fmt.scale(x.float().abs().amax()).reshape(())
    ref = torch.fake_quantize_per_tensor_affine(x, s, torch.zeros((), dtype=torch.int32), -7, 7)
    got = fmt.quantize(x, x.float().abs().amax())
    assert got.dtype == torch.bfloat16 and torch.equal(got, ref)
    amax = x.float().abs().amax(dim=(1, 2, 3), keepdim=True)
    fp6 = get_format("fp6_e3m2")
    out = fp6.quantize(x, amax)
    s6 = amax / fp6.max_value
    assert out.dtype == torch.float32  # bf16 values times an fp32 per-channel scale, as before
    assert torch.equal(out, round_float(x / s6, fp6.layout) * s6)


@pytest.mark.parametrize("unsigned", [False, True])
def test_int8_activation_equals_torch_fake_quantize(unsigned):
    """The int8 activation's in-place path gives torch's fused kernel's values (signed zeros
    included) and gradient (zero where the code saturates), with and without autograd."""
    from nasq.supernet.layers import int8_activation_quant, int8_activation_scale

    gen = torch.Generator().manual_seed(9)
    amax = torch.tensor(2.5)
    s = int8_activation_scale(amax, unsigned)
    steps = torch.arange(-300, 300, dtype=torch.float32) * 0.5 * s  # ties, and codes beyond the range
    x = torch.cat([torch.randn(400, generator=gen) * 3, steps, torch.tensor([0.0, -0.0, -1e-30, 6.0, -6.0])])
    zero = torch.tensor(0 if unsigned else 128, dtype=torch.int32)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ref = torch.fake_quantize_per_tensor_affine(xa, s, zero, 0, 255)
    out = int8_activation_quant(xb, amax, unsigned)
    assert torch.equal(out.detach().view(torch.int32), ref.detach().view(torch.int32))
    g = torch.randn(x.shape, generator=gen)
    ref.backward(g)
    out.backward(g)
    assert torch.equal(xb.grad, xa.grad) and bool((xb.grad == 0).any())
    with torch.no_grad():
        plain = int8_activation_quant(x, amax, unsigned)
    assert torch.equal(plain.view(torch.int32), ref.detach().view(torch.int32))


@pytest.mark.parametrize("unsigned", [False, True])
def test_int8_activation_in_range_skips_the_mask_and_agrees_with_torch(unsigned):
    """Training's case: the scale from the tensor's own maximum, so every code lies inside and the
    mask is skipped; values and gradient still equal torch's fused kernel's."""
    from nasq.supernet.layers import int8_activation_quant, int8_activation_scale

    gen = torch.Generator().manual_seed(10)
    x = torch.randn(2, 8, 6, 6, generator=gen) * 2
    x = x.clamp(0, 6) if unsigned else x
    s = int8_activation_scale(x.abs().amax(), unsigned)
    zero = torch.tensor(0 if unsigned else 128, dtype=torch.int32)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ref = torch.fake_quantize_per_tensor_affine(xa, s, zero, 0, 255)
    out = int8_activation_quant(xb, None, unsigned)
    assert out.grad_fn.all_inside  # the fast path is the one compared
    assert torch.equal(out.detach().view(torch.int32), ref.detach().view(torch.int32))
    g = torch.randn(x.shape, generator=gen)
    ref.backward(g)
    out.backward(g)
    assert torch.equal(xb.grad, xa.grad)


def test_straight_through_output_takes_in_place_ops():
    """Its output is a tensor of its own to autograd (not a view made inside a custom function),
    even when the quantizer returned a view, so a later in-place op works and keeps the gradient."""
    x = torch.linspace(-2, 2, 12).requires_grad_()
    q = torch.round(x.detach()).reshape(3, 4)[1:].reshape(-1)  # a view, as from_blocks returns
    y = straight_through(x[4:], q)
    assert torch.equal(y.detach(), q)
    y.mul_(3).sum().backward()
    assert torch.equal(x.grad, torch.tensor([0.0] * 4 + [3.0] * 8))



@pytest.mark.parametrize("name", ["mxfp4", "nvfp4", "int4_g32"])
def test_block_formats_keep_a_channels_last_activation_channels_last(name):
    """Blocks run along C·H·W whatever the memory layout; the result comes back in the input's
    channels-last layout (so the next convolution converts nothing), with the same values."""
    fmt = get_format(name)
    x = torch.randn(2, 8, 5, 5, generator=torch.Generator().manual_seed(6))
    cl = x.contiguous(memory_format=torch.channels_last)
    out = fmt.quantize(cl)
    assert out.is_contiguous(memory_format=torch.channels_last) and not out.is_contiguous()
    assert torch.equal(bits(out), bits(fmt.quantize(x)))



def test_the_formats_that_skip_measuring_amax():
    """fake_quant skips measuring an activation's maximum for these (their scales come from their
    own blocks, groups or measured ranges); the format contract checks their values ignore it."""
    from nasq.formats import FORMATS

    skipping = {n for n in FORMATS.names() if not FORMATS.get(n).reads_amax}
    assert {"mxfp4", "mxfp8", "int4_g32", "int8_g128", "int4_asym", "ternary"} <= skipping
    assert not skipping & {"int4", "int8", "fp8_e4m3", "nvfp4", "int4_mse", "int4_lsq"}
