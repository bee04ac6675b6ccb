"""Learned activation ranges (LSQ) of the narrow integer formats: gradients, start, use in
evaluation, calibration and extraction, old checkpoints, no weight decay."""

from __future__ import annotations

import math

import pytest
import torch

from nasq.formats import get_format
from nasq.specs import TrainConfig
from nasq.supernet.layers import (
    ActQuant,
    OutQuant,
    _range_step,
    activation_quant,
    learned_range_quant,
    learns_range,
)
from nasq.supernet.network import Supernet
from nasq.supernet.train import make_optimizer


def _plain(x, r, fmt, unsigned):
    """LSQ written out with autograd (the expression the exporter and compiler see)."""
    lo, hi = (0, 2 ** fmt.bits - 1) if unsigned else (-fmt.qmax, fmt.qmax)
    s = _range_step(r, fmt, unsigned)
    g = 1.0 / math.sqrt(x.numel() * hi)
    s = (s * g - (s * g).detach()) + s.detach()
    v = (x / s).clamp(lo, hi)
    return (v + (v.round() - v).detach()) * s


@pytest.mark.parametrize("native", ["1", "0"])
@pytest.mark.parametrize("fmt_name, unsigned, r0", [("int4", True, 2.5), ("int4", False, 1.7), ("int2", False, 0.9),
                                                    ("int6", True, 5.0), ("int4", True, 7.5)])
def test_lsq_gradients_match_autograd(monkeypatch, native, fmt_name, unsigned, r0):
    monkeypatch.setenv("NASQ_NATIVE", native)
    fmt = get_format(fmt_name)
    gen = torch.Generator().manual_seed(3)
    base = torch.randn(4, 6, 5, 5, generator=gen) * 2
    base = base.clamp_min(0) * 1.5 if unsigned else base
    grad = torch.randn(base.shape, generator=gen)
    got, want = [], []
    for fn, out in ((learned_range_quant, got), (_plain, want)):
        x, r = base.clone().requires_grad_(), torch.tensor(r0, requires_grad=True)
        y = fn(x, r, fmt, unsigned)
        y.backward(grad)
        out += [y.detach(), x.grad, r.grad]
    assert torch.equal(got[0], activation_quant(fmt, base, torch.tensor(r0), unsigned))  # the forward's values
    assert torch.allclose(got[0], want[0], atol=1e-6)
    lo, hi = (0, 2 ** fmt.bits - 1) if unsigned else (-fmt.qmax, fmt.qmax)
    v = base / _range_step(torch.tensor(r0), fmt, unsigned)
    assert torch.equal(got[1], grad * ((v >= lo) & (v <= hi)))  # x: the gradient inside the grid, 0 outside
    assert torch.allclose(got[1], want[1], atol=1e-6)  # autograd's differs in the last bit: (g / s) * s
    assert not torch.equal(got[1], grad)  # some inputs lie outside: the mask did something
    assert torch.allclose(got[2], want[2], rtol=1e-4, atol=1e-7)
    if unsigned and r0 > 6:  # the step stops at ReLU6's top: a range above it learns nothing
        assert float(got[2]) == 0.0
    else:
        assert float(got[2]) != 0.0


@pytest.mark.parametrize("unsigned", [True, False])
def test_a_gradient_in_another_memory_order_takes_the_tensor_path(unsigned):
    """The forward ran the kernel, the incoming gradient is not laid out as x (the backward's
    kernel refuses it): the tensor ops give the same gradients."""
    fmt = get_format("int4")
    gen = torch.Generator().manual_seed(5)
    base = torch.randn(4, 6, 5, 5, generator=gen) * 2
    base = base.clamp_min(0) * 1.5 if unsigned else base
    grad = torch.randn(5, 5, 6, 4, generator=gen).permute(3, 2, 1, 0)  # base's shape, not its strides
    assert not grad.is_contiguous()
    out = []
    for g in (grad, grad.contiguous()):
        x, r = base.clone().requires_grad_(), torch.tensor(2.0, requires_grad=True)
        learned_range_quant(x, r, fmt, unsigned).backward(g)
        out.append((x.grad, r.grad))
    assert torch.equal(out[0][0], out[1][0])
    assert torch.allclose(out[0][1], out[1][1], rtol=1e-5) and float(out[0][1]) != 0.0


def test_learned_range_formats():
    assert learns_range(get_format("int4")) and learns_range(get_format("int2"))
    for name in ("int8", "fp32", "fp8_e4m3", "int4_mse", "int4_lsq", "int4_g32", "mxfp4"):
        assert not learns_range(get_format(name)), name
    assert not hasattr(OutQuant(), "learned_amax")


def test_range_starts_from_the_first_batch_then_serves_evaluation_and_calibration():
    q = ActQuant()
    q.set_format("int4")
    q.unsigned = True
    x = torch.rand(8, 4, 3, 3, generator=torch.Generator().manual_seed(0)) * 1.2
    assert not bool(q.learned_set.any())
    q.eval()
    with torch.no_grad():  # never trained: the tensor's own max, as before ranges were learned
        assert torch.equal(q(x), activation_quant(get_format("int4"), x, None, True))
    assert not bool(q.learned_set.any())  # evaluation starts no range
    q.train()
    q(x.clone().requires_grad_())
    start = 2 * float(x.abs().mean()) * math.sqrt(15)
    assert bool(q.learned_set[1, 4]) and int(q.learned_set.sum()) == 1
    assert start < 6 and float(q.learned_amax[1, 4].detach()) == pytest.approx(start, rel=1e-6)
    r = q.learned_amax[1, 4].detach()
    want = activation_quant(get_format("int4"), x, r, True)
    q.eval()
    with torch.no_grad():
        assert torch.equal(q(x), want)  # evaluation uses the learned range, not x's max
        assert not torch.equal(want, activation_quant(get_format("int4"), x, None, True))
        assert torch.equal(q.static_amax(), r)  # an extraction without calibration takes it
        q.calibrating = True
        q.train()
        q(x * 3)  # calibration records the learned range, not the larger max it sees
        q.calibrating = False
    assert torch.equal(q.amax, r)
    q.unsigned = False  # the signed grid has its own range
    q.train()
    q(x.clone().requires_grad_())
    assert bool(q.learned_set[0, 4]) and int(q.learned_set.sum()) == 2


def test_checkpoint_without_ranges_loads_and_keeps_the_maximum(space):
    torch.manual_seed(0)
    net = Supernet(space)
    old = {k: v for k, v in net.state_dict().items() if "learned_" not in k}
    assert len(old) < len(net.state_dict())
    fresh = Supernet(space)
    fresh.load_state_dict(old)  # strict: the missing ranges are filled as never trained
    quants = [m for m in fresh.modules() if isinstance(m, ActQuant) and m.LEARNS]
    assert quants and not any(bool(q.learned_set.any()) for q in quants)


def test_training_moves_the_ranges_without_weight_decay(space):
    torch.manual_seed(0)
    net = Supernet(space)
    cfg = TrainConfig(epochs=1, lr=0.05, weight_decay=0.1)
    opt = make_optimizer(net, cfg)
    ranges = [g for g in opt.param_groups if g["weight_decay"] == 0.0]
    assert len(ranges) == 1 and all(p.shape == (2, 8) for p in ranges[0]["params"])
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(net.parameters()))
    net.set_active(space.smallest())  # int4 activations
    net.train()
    x, y = torch.randn(16, 1, 28, 28, generator=torch.Generator().manual_seed(1)), torch.arange(16) % 10
    torch.nn.functional.cross_entropy(net(x), y).backward()
    started = {n: p.detach().clone() for n, p in net.named_parameters() if n.endswith("learned_amax")}
    assert any(bool((v != 0).any()) for v in started.values())
    opt.step()
    moved = [n for n, p in net.named_parameters() if n in started and not torch.equal(p.detach(), started[n])]
    assert moved
    params = dict(net.named_parameters())  # ranges never started stay 0: no decay, no drift
    assert all(bool((params[n].detach()[v == 0] == 0).all()) for n, v in started.items())


def test_extracted_subnet_keeps_the_learned_ranges(space):
    from nasq.supernet.train import train_supernet

    torch.manual_seed(0)
    net = Supernet(space)
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(128, 1, 28, 28, generator=gen)
    y = (x[:, 0, :14].mean(dim=(1, 2)) > 0).long()
    train_supernet(net, space, x.numpy(), y.numpy(), TrainConfig(epochs=1, batch_size=32, seed=0))
    spec = space.smallest()
    net.set_active(spec)
    net.calibrate([x[:64]])
    net.eval()
    learned = [m for m in net.modules() if isinstance(m, ActQuant) and m.active and learns_range(m.fmt)]
    assert learned and all(bool(m.learned_set.any()) for m in learned)
    static = net.extract().eval()
    with torch.no_grad():
        assert torch.allclose(static(x[64:]), net(x[64:]), atol=1e-4)


def test_max_ranges_setting_starts_none(space):
    from nasq.supernet.train import train_supernet, weights_config

    gen = torch.Generator().manual_seed(2)
    x = torch.randn(64, 1, 28, 28, generator=gen)
    y = (x[:, 0, :14].mean(dim=(1, 2)) > 0).long()
    for ranges, started in (("max", False), ("learned", True)):
        torch.manual_seed(0)
        net = Supernet(space)
        cfg = TrainConfig(epochs=1, batch_size=32, seed=0, activation_ranges=ranges)
        train_supernet(net, space, x.numpy(), y.numpy(), cfg)
        quants = [m for m in net.modules() if isinstance(m, ActQuant) and m.LEARNS]
        assert any(bool(q.learned_set.any()) for q in quants) is started
        assert weights_config(cfg)["activation_ranges"] == ranges  # it decides the weights
