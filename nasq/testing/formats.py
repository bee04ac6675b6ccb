"""Contract of a NumericFormat: idempotent, straight-through gradient, bounded levels, bits,
export values, integer codes, per-channel weights, (for LSQ formats) learned-step gradients, and
(for formats marked ``reads_amax = False``) values that do not depend on ``amax``."""

from __future__ import annotations

import torch

from nasq.formats import FORMATS, IntegerFormat, NumericFormat, size_bits


def check_format(name: str, seed: int = 0) -> None:
    fmt = FORMATS.get(name)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(4096, generator=gen) * 3
    q = fmt.quantize(x)
    assert q.shape == x.shape and q.dtype == x.dtype, f"{name}: shape/dtype changed"
    assert torch.isfinite(q).all(), f"{name}: non-finite output"
    q2 = fmt.quantize(q, x.abs().amax())
    assert torch.equal(q, q2), f"{name}: not idempotent (max diff {(q - q2).abs().max():.3g})"
    xg = x.clone().requires_grad_(True)
    fmt.fake_quant(xg).sum().backward()
    assert torch.equal(xg.grad, torch.ones_like(x)), f"{name}: gradient is not straight-through"
    _check_bits(fmt)
    if fmt.is_identity:
        assert torch.equal(q, x), f"{name}: identity format changed values"
    else:
        _check_error(fmt, x, q)
    _check_export_values(fmt, x)
    _check_weight(fmt, torch.randn(6, 5, 3, 3, generator=gen))
    if isinstance(fmt, IntegerFormat):
        _check_codes(fmt, x)
    if fmt.learns_scale:
        _check_learned_step(fmt, x)
    if not fmt.reads_amax:
        _check_ignores_amax(fmt, x.reshape(4, 16, 8, 8))


def _check_bits(fmt: NumericFormat) -> None:
    name = fmt.name
    assert fmt.bits >= 1 and fmt.effective_bits(64) >= fmt.bits, f"{name}: bits accounting"
    assert fmt.kind in ("none", "int", "float", "block"), f"{name}: unknown kind {fmt.kind!r}"
    assert fmt.export_mode in ("identity", "qdq_int8", "dequantized"), f"{name}: export mode"
    for params, channels in ((4096, 32), (27, 3), (1, 1)):
        bits = size_bits(name, params, channels)
        assert bits >= params * fmt.bits, f"{name}: size_bits below params × bits"
    if fmt.kind == "block" or hasattr(fmt, "group_size"):  # rows of 256: whole blocks and groups
        want = 256 * 64 * fmt.effective_bits() + (32 if name == "nvfp4" else 0)
        assert size_bits(name, 256 * 64, 64) == want, f"{name}: size_bits disagrees with effective bits"


def _check_error(fmt: NumericFormat, x: torch.Tensor, q: torch.Tensor) -> None:
    noise = (q - x).pow(2).mean()
    assert noise < x.pow(2).mean(), f"{fmt.name}: quantization noise exceeds the signal"
    if getattr(fmt, "scale_method", "max") == "max":  # clipping formats may cut the max further
        err = (q - x).abs().max() / x.abs().max()
        assert err < 0.6, f"{fmt.name}: relative error {err:.3f} is implausible"


def _check_export_values(fmt: NumericFormat, x: torch.Tensor) -> None:
    """``export_activation`` is what ONNX computes; in eager mode it must equal fake_quant."""
    act = x.reshape(4, 16, 8, 8)
    amax = act.abs().amax() * 0.9  # a calibrated range the batch slightly exceeds
    want = fmt.quantize(act, amax)
    got = fmt.export_activation(act, amax)
    assert got.shape == act.shape, f"{fmt.name}: export_activation changed the shape"
    diff = float((got - want).abs().max())
    assert diff <= 1e-6 * float(amax), f"{fmt.name}: export_activation differs from fake_quant by {diff:.3g}"


def _check_weight(fmt: NumericFormat, w: torch.Tensor) -> None:
    """Per-channel ``amax`` as the layers pass it; 45 elements per row is not a whole block."""
    amax = w.abs().amax(dim=(1, 2, 3), keepdim=True)
    q = fmt.quantize(w, amax)
    assert q.shape == w.shape and torch.isfinite(q).all(), f"{fmt.name}: per-channel weights"
    assert torch.equal(fmt.quantize(q, amax), q), f"{fmt.name}: per-channel weights not idempotent"


def _check_codes(fmt: IntegerFormat, x: torch.Tensor) -> None:
    enc = fmt.encode(x)
    codes = enc.codes.to(torch.int16)
    assert int(codes.min()) >= fmt.qmin and int(codes.max()) <= fmt.qmax, f"{fmt.name}: code out of range"
    assert fmt.qmax - fmt.qmin + 1 <= 2**fmt.bits, f"{fmt.name}: more than 2**bits levels"
    assert torch.equal(fmt.decode(enc), fmt.quantize(x)), f"{fmt.name}: decode(encode(x)) != quantize(x)"


def _check_learned_step(fmt: NumericFormat, x: torch.Tensor) -> None:
    amax = (x.abs().amax() * 0.5).clone().requires_grad_(True)
    xg = x.clone().requires_grad_(True)
    out = fmt.fake_quant(xg, amax)
    assert torch.equal(out.detach(), fmt.quantize(x, amax.detach())), f"{fmt.name}: LSQ values differ"
    out.pow(2).sum().backward()
    assert amax.grad is not None and torch.isfinite(amax.grad) and amax.grad != 0, f"{fmt.name}: no step gradient"
    outside = x.abs() > amax.detach() * 1.01
    assert outside.any() and (xg.grad[outside] == 0).all(), f"{fmt.name}: clipped inputs must get no gradient"


def _check_ignores_amax(fmt: NumericFormat, x: torch.Tensor) -> None:
    """``reads_amax = False`` lets fake_quant skip measuring the tensor's maximum: the values must
    then be the same whatever ``amax`` holds (only its shape may count)."""
    measured = fmt.quantize(x, x.abs().amax())
    for amax in (None, torch.tensor(123.0), torch.tensor(1e-3)):
        assert torch.equal(fmt.quantize(x, amax), measured), f"{fmt.name}: reads_amax is False but amax changes the values"
