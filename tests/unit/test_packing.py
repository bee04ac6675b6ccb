"""Packed integer weights: dense bit layout, exact round trips through safetensors."""

from __future__ import annotations

import math

import pytest
import safetensors.torch as safetensors_torch
import torch
from torch import nn

from nasq.formats import get_format
from nasq.formats.packing import (
    codes_per_byte,
    pack_int,
    packed_formats,
    packed_state,
    unpack_int,
    unpack_state,
)
from nasq.supernet.layers import StaticQConv, per_channel_amax


def _codes(bits: int, n: int, signed: bool, seed: int = 0) -> torch.Tensor:
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1)) if signed else (0, 2**bits)
    q = torch.randint(lo, hi, (n,), generator=torch.Generator().manual_seed(seed))
    return q.to(torch.int8 if signed else torch.uint8)


@pytest.mark.parametrize("signed", [True, False], ids=["signed", "unsigned"])
@pytest.mark.parametrize("bits", range(2, 9))
@pytest.mark.parametrize("n", [0, 1, 3, 7, 1000, 1001])
def test_pack_round_trip_is_exact(bits, n, signed):
    q = _codes(bits, n, signed, seed=bits * 31 + n)
    packed = pack_int(q, bits)
    assert packed.dtype == torch.uint8 and packed.numel() == math.ceil(n / codes_per_byte(bits))
    assert torch.equal(unpack_int(packed, bits, n, signed=signed), q)


def test_two_int4_and_four_int2_per_byte_low_bits_first():
    assert pack_int(torch.tensor([1, -1, 7, -8], dtype=torch.int8), 4).tolist() == [0xF1, 0x87]
    assert pack_int(torch.tensor([1, -1, 0, -2, 1], dtype=torch.int8), 2).tolist() == [0b10001101, 0b01]
    assert codes_per_byte(4) == 2 and codes_per_byte(2) == 4
    assert [codes_per_byte(b) for b in (3, 5, 6, 7, 8)] == [1] * 5


def test_pack_refuses_codes_that_do_not_fit():
    with pytest.raises(ValueError, match="do not fit 4 bits"):
        pack_int(torch.tensor([8], dtype=torch.int8), 4)
    with pytest.raises(TypeError, match="int8 or uint8"):
        pack_int(torch.tensor([1], dtype=torch.int32), 4)
    with pytest.raises(ValueError, match="flat uint8"):
        unpack_int(torch.zeros(2, dtype=torch.uint8), 4, 5)


WEIGHT_FORMATS = ["int2", "int3", "int4", "int5", "int6", "int7", "int8", "int4_mse", "int4_lsq",
                  "int4_asym", "int8_asym", "int4_g32", "int4_g128", "int8_g128"]


def _model(formats: list[str]) -> nn.Module:
    """A stack of StaticQConvs (one depthwise, rows of 9 < one group) plus a float layer."""
    g = torch.Generator().manual_seed(3)
    layers = []
    for i, name in enumerate(formats):
        depthwise = i % 3 == 2
        conv = nn.Conv2d(8, 8, 3, padding=1, groups=8 if depthwise else 1, bias=False)
        with torch.no_grad():
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * 0.2)
        layers.append(StaticQConv(conv, name, "fp32", torch.tensor(0.0)))
    layers.append(StaticQConv(nn.Conv2d(8, 8, 1, bias=False), "fp8_e4m3", "fp32", torch.tensor(0.0)))
    return nn.Sequential(*layers)


def test_packed_state_round_trips_through_safetensors_exactly(tmp_path):
    model = _model(WEIGHT_FORMATS)
    state = packed_state(model)
    formats = packed_formats(model)
    assert list(formats.values()) == WEIGHT_FORMATS  # the fp8 layer is not an integer format
    path = tmp_path / "packed.safetensors"
    safetensors_torch.save_file(state, str(path))
    restored = unpack_state(safetensors_torch.load_file(str(path)), formats)
    assert set(restored) == {f"{p}.conv.weight" for p in formats}
    for prefix, name in formats.items():
        w = model.get_submodule(prefix).conv.weight.detach()
        want = get_format(name).quantize(w, per_channel_amax(w))
        assert torch.equal(restored[f"{prefix}.conv.weight"], want), name


def test_packed_sizes_and_scale_shapes():
    model = _model(["int4", "int2", "int4_g32", "int8_asym"])
    state = packed_state(model)
    w_numel = 8 * 8 * 9
    assert state["0.weight_packed"].numel() == w_numel // 2
    assert state["1.weight_packed"].numel() == w_numel // 4
    assert state["0.weight_scale"].shape == (8,) and state["0.weight_scale"].dtype == torch.float32
    assert state["2.weight_scale"].shape == (8, 1)  # depthwise rows of 9: one group each
    assert state["3.weight_zero_point"].dtype == torch.uint8 and state["3.weight_zero_point"].shape == (8,)
    assert state["0.weight_shape"].tolist() == [8, 8, 3, 3]
    assert "0.weight_zero_point" not in state


def test_packing_a_prepared_model_gives_the_same_weights():
    """prepare_export pre-quantizes non-int8 weights; encoding them again is idempotent."""
    model = _model(["int4", "int4_g32", "int4_asym"])
    before = unpack_state(packed_state(model), packed_formats(model))
    for m in model:
        m.prepare_export()
    after = unpack_state(packed_state(model), packed_formats(model))
    for key in before:
        assert torch.equal(before[key], after[key])


def test_unpack_refuses_incomplete_or_non_integer():
    model = _model(["int4"])
    state = packed_state(model)
    del state["0.weight_scale"]
    with pytest.raises(KeyError, match="missing weight_scale"):
        unpack_state(state, {"0": "int4"})
    with pytest.raises(ValueError, match="not an integer format"):
        unpack_state({}, {"0": "fp8_e4m3"})


def test_extracted_subnet_reloads_from_packed_weights(space):
    """The way an export bundle would use it: packed weights replace the float ones, and the
    rebuilt subnet computes what the original does."""
    from nasq.space import LayerChoice as L
    from nasq.space import SubnetSpec
    from nasq.supernet.network import Supernet

    torch.manual_seed(0)
    net = Supernet(space)
    spec = SubnetSpec(((L.of("int8", "fp32", kernel=3, expand=3), L.of("int4", "fp32", kernel=5, expand=6)),
                       (L.of("int4", "int8", kernel=3, expand=6),), (L.of("fp8_e4m3", "fp32", kernel=5, expand=3),)))
    net.set_active(spec)
    model = net.extract().eval()
    formats = packed_formats(model)
    assert sorted(set(formats.values())) == ["int4", "int8"]
    state = {k: v for k, v in model.state_dict().items()
             if not any(k == f"{p}.conv.weight" for p in formats)}
    state.update(packed_state(model))
    rebuilt = net.extract().eval()
    rebuilt.load_state_dict(unpack_state(state, formats))
    x = torch.randn(2, *_input_shape(space), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), model(x), rtol=1e-5, atol=1e-5)


def _input_shape(space):
    inp = space.config.input
    return inp.channels, inp.resolution, inp.resolution
