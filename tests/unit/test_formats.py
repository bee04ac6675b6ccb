from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch

from nasq.formats import (
    FORMATS,
    CastFloat,
    GroupInt,
    Passthrough,
    ScaledFloat,
    SymmetricInt,
    get_format,
    highest_bits,
    log2_levels,
    lowest_bits,
    size_bits,
)
from nasq.formats.integer import MSE_RATIOS
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


# ---------------------------------------------------------------- registry and metadata
CANONICAL = {"fp32", "bf16", "fp16", "fp8_e4m3", "fp8_e5m2", "fp6_e3m2", "fp6_e2m3", "fp4_e2m1",
             "int2", "int3", "int4", "int5", "int6", "int7", "int8", "int4_asym", "int8_asym",
             "int4_g32", "int4_g128", "mxfp8", "mxfp6", "mxfp4", "nvfp4", "int4_lsq", "int4_mse"}


def test_every_issue_format_is_registered_with_its_kind():
    assert CANONICAL <= set(FORMATS.names())
    kinds = {n: get_format(n).kind for n in FORMATS.names()}
    assert kinds["fp32"] == "none" and kinds["bf16"] == kinds["fp6_e2m3"] == "float"
    assert kinds["int4_asym"] == kinds["int4_g32"] == "int"
    assert {kinds[n] for n in ("mxfp8", "mxfp6", "mxfp4", "nvfp4")} == {"block"}
    assert all(get_format(n).name == n for n in FORMATS.names())


def test_unknown_format_lists_the_known_ones():
    with pytest.raises(UnknownKindError) as e:
        get_format("mxfp5")
    assert "mxfp4" in str(e.value) and "nvfp4" in str(e.value) and "int4_g32" in str(e.value)


def test_metadata_needs_no_torch():
    code = ("import sys; from nasq.formats import FORMATS, size_bits, get_format; "
            "[get_format(n).effective_bits(64) for n in FORMATS]; size_bits('mxfp4', 64, 2); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_existing_names_keep_their_behaviour():
    """The names the supernet and export used before keep bits, kind, export mode and sizes."""
    want = {"fp32": (32, "none", "identity"), "bf16": (16, "float", "dequantized"),
            "fp16": (16, "float", "dequantized"), "int8": (8, "int", "qdq_int8"),
            "int4": (4, "int", "dequantized"), "int2": (2, "int", "dequantized"),
            "fp8_e4m3": (8, "float", "dequantized"), "fp8_e5m2": (8, "float", "dequantized")}
    for name, (bits, kind, mode) in want.items():
        fmt = get_format(name)
        assert (fmt.bits, fmt.kind, fmt.export_mode) == (bits, kind, mode), name
    assert isinstance(get_format("int8"), SymmetricInt) and get_format("int8").qmax == 127
    assert isinstance(get_format("fp8_e4m3"), ScaledFloat) and get_format("fp8_e4m3").max_value == 448
    assert isinstance(get_format("bf16"), CastFloat) and isinstance(get_format("fp32"), Passthrough)
    assert lowest_bits(["fp32", "int4", "int8"]) == "int4" and highest_bits(["int4", "fp16"]) == "fp16"


# ---------------------------------------------------------------- size accounting
@pytest.mark.parametrize("name,params,channels,bits", [
    ("fp32", 1000, 10, 32_000), ("bf16", 1000, 10, 16_000),
    ("int8", 1000, 10, 8_000 + 320), ("int4", 1000, 10, 4_000 + 320), ("fp8_e4m3", 1000, 10, 8_000 + 320),
    ("int4_asym", 1000, 10, 4_000 + 10 * 36),
    ("mxfp4", 64 * 96, 64, 64 * 96 * 4.25), ("mxfp8", 64 * 96, 64, 64 * 96 * 8.25),
    ("nvfp4", 64 * 96, 64, 64 * 96 * 4.5 + 32), ("int4_g32", 64 * 96, 64, 64 * 96 * 5.0),
    # rows of 9 (depthwise 3x3): every row is one partial block that still needs its scale
    ("mxfp4", 9 * 64, 64, 9 * 64 * 4 + 64 * 8), ("int4_g128", 9 * 64, 64, 9 * 64 * 4 + 64 * 32),
])
def test_size_bits(name, params, channels, bits):
    assert size_bits(name, params, channels) == bits


def test_log2_levels():
    assert log2_levels("int8") == pytest.approx(math.log2(255))
    assert log2_levels("int4_asym") == 4 and log2_levels("mxfp4") == 4 and log2_levels("fp32") == 32


# ---------------------------------------------------------------- constructors and options
def test_constructors_validate():
    with pytest.raises(ValueError, match="bits must be 2..8"):
        SymmetricInt("int9", 9)
    with pytest.raises(ValueError, match="scale_method must be one of"):
        SymmetricInt("x", 4, scale_method="minmax")
    with pytest.raises(ValueError, match="LSQ learns the scale"):
        SymmetricInt("x", 4, scale_method="mse", lsq=True)
    with pytest.raises(ValueError, match="group_size"):
        GroupInt("x", 4, 1)


def test_percentile_clips_outliers_per_channel():
    fmt = SymmetricInt("int4_p99", 4, scale_method="percentile", percentile=99.0)
    w = torch.randn(4, 1000, generator=torch.Generator().manual_seed(5))
    w[:, 0] = 50.0  # one outlier per channel
    amax = w.abs().amax(1, keepdim=True)
    clip = fmt.clip_amax(w, amax)
    assert clip.shape == amax.shape and (clip < 5).all()
    assert fmt.quantize(w, amax).abs().amax() <= clip.max() + 1e-6
    assert fmt.export_mode == "dequantized"


def test_mse_picks_a_clipping_ratio_from_the_grid():
    fmt = get_format("int2_mse")
    x = torch.randn(10_000, generator=torch.Generator().manual_seed(6))
    amax = x.abs().amax()
    ratio = float(fmt.clip_amax(x, amax) / amax)
    assert ratio < 0.6 and min(abs(ratio - r) for r in MSE_RATIOS) < 1e-6


def test_lsq_gradient_matches_the_paper():
    """d q / d s = round(v) - v inside the range, ±qmax outside; times g = 1/sqrt(N · qmax)."""
    fmt = get_format("int4_lsq")
    x = torch.tensor([0.3, -0.26, 5.0, -7.0])
    amax = torch.tensor(2.1, requires_grad=True)
    fmt.fake_quant(x, amax).sum().backward()
    s = 2.1 / 7
    v = x / s
    per_step = torch.where(v.abs() <= 7, v.round() - v, torch.sign(v) * 7)
    want = float(per_step.sum()) / math.sqrt(4 * 7) / 7  # ds/damax = 1/qmax
    assert float(amax.grad) == pytest.approx(want, rel=1e-5)


def test_lsq_without_a_trainable_range_is_plain_int4():
    x = torch.randn(1000, generator=torch.Generator().manual_seed(7))
    assert torch.equal(get_format("int4_lsq").quantize(x), get_format("int4").quantize(x))


@pytest.mark.parametrize("name", ["fp6_e3m2", "fp6_e2m3", "fp4_e2m1", "mxfp4", "nvfp4", "int4_g32", "int4_asym"])
def test_new_formats_export_ops_agree(name):
    fmt = get_format(name)
    x = torch.randn(2, 8, 6, 6, generator=torch.Generator().manual_seed(8)) * 3
    amax = x.abs().amax()
    assert torch.equal(fmt.export_activation(x, amax), fmt.quantize(x, amax))


def test_block_formats_ignore_amax_but_nvfp4_uses_it_per_tensor():
    x = torch.randn(4, 64, generator=torch.Generator().manual_seed(9))
    mx = get_format("mxfp4")
    assert torch.equal(mx.quantize(x, torch.tensor(100.0)), mx.quantize(x))
    nv = get_format("nvfp4")
    per_channel = x.abs().amax(1, keepdim=True)
    assert torch.equal(nv.quantize(x, per_channel), nv.quantize(x))  # the largest channel's range
    assert not torch.equal(nv.quantize(x, torch.tensor(100.0)), nv.quantize(x))


def test_casts_saturate_instead_of_overflowing():
    x = torch.tensor([1e5, -1e6, 70000.0])
    assert torch.equal(get_format("fp16").quantize(x), torch.tensor([65504.0, -65504.0, 65504.0]))


def test_ternary_is_absmean_per_channel():
    """BitNet b1.58: codes {-1, 0, 1} times the channel's mean |w|, 2-bit storage + fp32 scale."""
    fmt = get_format("ternary")
    w = torch.randn(4, 3, 3, 3, generator=torch.Generator().manual_seed(0))
    amax = w.abs().amax(dim=(1, 2, 3), keepdim=True)
    q = fmt.quantize(w, amax)
    s = w.abs().mean(dim=(1, 2, 3), keepdim=True)
    assert torch.allclose(q, (w / s).round().clamp(-1, 1) * s)
    assert set(torch.unique((q / s).round()).tolist()) <= {-1.0, 0.0, 1.0}
    assert torch.equal(fmt.quantize(q, amax), q)  # a ternary tensor keeps its own scale
    assert fmt.bits == 2 and math.isclose(log2_levels("ternary"), math.log2(3))
    assert size_bits("ternary", 1000, 10) == 2_000 + 320
    assert getattr(fmt, "weight_only", False) and not getattr(get_format("int2"), "weight_only", False)


def test_ternary_keeps_the_scale_of_rows_on_its_grid_only():
    """A row of zeros and ±m keeps m; a row one ulp off the grid, or with a NaN, takes its absmean."""
    fmt = get_format("ternary")
    m = 0.75
    off = torch.nextafter(torch.tensor(m), torch.tensor(0.0)).item()
    w = torch.tensor([[m, 0.0, -m, 0.0], [m, 0.0, -off, 0.0], [0.0, 0.0, 0.0, 0.0], [m, float("nan"), -m, 0.0]])
    got = fmt.clip_amax(w, torch.ones(4, 1)).flatten()
    assert got[0] == m and got[2] > 0  # on the grid; an all-zero row clamps to the smallest range
    assert got[1] == w[1].abs().mean()
    assert torch.isnan(got[3])


def test_ternary_weights_lower_to_int4_storage(tmp_path):
    import onnx

    from nasq.export.bundle import export_onnx
    from nasq.export.lower import native_onnx_formats
    from nasq.supernet.layers import StaticQConv

    assert "ternary" in native_onnx_formats()
    conv = torch.nn.Conv2d(4, 6, 3, padding=1, bias=False)
    layer = torch.nn.Sequential(StaticQConv(conv, "ternary", "fp32", torch.tensor(0.0))).eval()
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    export_onnx(layer, x, tmp_path / "t.onnx")
    model = onnx.load(str(tmp_path / "t.onnx"))
    assert onnx.TensorProto.INT4 in {t.data_type for t in model.graph.initializer}
    import onnxruntime as ort

    got = ort.InferenceSession(str(tmp_path / "t.onnx")).run(None, {model.graph.input[0].name: x.numpy()})[0]
    with torch.no_grad():
        want = layer(x).numpy()
    assert abs(got - want).max() < 1e-4
