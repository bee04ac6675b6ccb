from __future__ import annotations

import pytest
import torch

from nasq.formats import FORMATS, get_format
from nasq.registry import UnknownKindError


def test_unknown_format_is_helpful():
    with pytest.raises(UnknownKindError, match="did you mean 'int8'"):
        get_format("int9")


@pytest.mark.parametrize("name,dtype", [("fp8_e4m3", torch.float8_e4m3fn), ("fp8_e5m2", torch.float8_e5m2)])
def test_fp8_matches_torch_cast(name, dtype):
    fmt = get_format(name)
    x = torch.randn(100_000, generator=torch.Generator().manual_seed(0)) * 100
    amax = torch.tensor(fmt.max_value)  # scale 1: values beyond the range saturate
    q = fmt.quantize(x, amax)
    ref = x.clamp(-fmt.max_value, fmt.max_value).to(dtype).float()
    assert torch.equal(q, ref)


@pytest.mark.parametrize("name", ["fp8_e4m3", "fp8_e5m2"])
def test_fp8_export_ops_agree_with_cast(name):
    fmt = get_format(name)
    x = torch.randn(50_000, generator=torch.Generator().manual_seed(1)) * 5
    amax = x.abs().amax()
    a, b = fmt.quantize(x, amax), fmt.export_activation(x, amax)
    assert (a - b).abs().max() <= 1e-6 * amax


@pytest.mark.parametrize("name", ["int2", "int4", "int8"])
def test_integer_levels(name):
    fmt = get_format(name)
    x = torch.randn(20_000, generator=torch.Generator().manual_seed(2))
    q = fmt.quantize(x)
    assert q.unique().numel() <= 2**fmt.bits - 1  # symmetric narrow range
    assert torch.equal(fmt.quantize(q, x.abs().amax()), q)


def test_sqnr_rises_with_bits():
    x = torch.randn(20_000, generator=torch.Generator().manual_seed(3))

    def sqnr(name):
        q = get_format(name).quantize(x)
        return float(10 * torch.log10(x.pow(2).mean() / (x - q).pow(2).mean()))

    values = [sqnr(n) for n in ("int2", "int4", "int8")]
    assert values == sorted(values) and values[2] > 35


def test_effective_bits_counts_scales():
    assert get_format("int4").effective_bits(32) == pytest.approx(5.0)
    assert get_format("fp32").effective_bits(32) == 32
    assert set(FORMATS.names()) >= {"fp32", "int8", "int4", "fp8_e4m3"}
