"""Contract of a NumericFormat: idempotent, straight-through gradient, bounded levels, bits."""

from __future__ import annotations

import torch

from nasq.formats import FORMATS, SymmetricInt


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
    assert fmt.bits >= 1 and fmt.effective_bits(64) >= fmt.bits, f"{name}: bits accounting"
    if isinstance(fmt, SymmetricInt):
        assert q.unique().numel() <= 2**fmt.bits, f"{name}: more than 2**bits levels"
    if fmt.is_identity:
        assert torch.equal(q, x), f"{name}: identity format changed values"
    else:
        err = (q - x).abs().max() / x.abs().max()
        assert err < 0.6, f"{name}: relative error {err:.3f} is implausible"
