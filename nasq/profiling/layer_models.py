"""The torch modules that latency measurements time: one layer as the exporter writes it, and a
whole static subnet. Imports torch at module level: only the measuring code imports this module."""

from __future__ import annotations

import torch
from torch import nn

from nasq.errors import NasqError
from nasq.hardware.keys import LayerKey
from nasq.space import SearchSpace, SubnetSpec
from nasq.supernet.layers import StaticConvBN, StaticQConv
from nasq.supernet.network import StaticSubnet, Supernet

# Calibrated activation range of a measured layer. Run time does not depend on it; it only has to
# be positive, as after calibration, so the exporter writes static scales.
ACT_AMAX = 4.0


class UnsupportedLayer(NasqError):
    """nasq itself never exports this layer (recorded as an unsupported row, not an error)."""


class LayerUnit(nn.Sequential):
    """A StaticConvBN (StaticQConv + BatchNorm2d) (+ ReLU6): exactly one part of a StaticMBConv
    (or the stem), with ``prepare_export`` like StaticSubnet so that export_onnx lowers it the
    same way (batch norm folded, weights packed, integer-kernel requantizer after the norm and
    its ReLU6, quantizers placed as in a chain: see :func:`layer_module`)."""

    def prepare_export(self) -> None:
        for m in self.modules():
            if isinstance(m, StaticQConv):
                m.prepare_export()


def layer_module(key: LayerKey, seed: int = 0) -> nn.Module:
    """A freshly initialised module for ``key`` in eval mode (weights from a seeded generator)."""
    gen = torch.Generator().manual_seed(seed)
    if key.op == "linear":
        if (key.w_format, key.a_format) != ("fp32", "fp32"):
            raise UnsupportedLayer("nasq exports linear layers (the classifier) in fp32 only")
        linear = nn.Linear(key.cin, key.cout)
        with torch.no_grad():
            linear.weight.copy_(torch.randn(linear.weight.shape, generator=gen) / key.cin**0.5)
            linear.bias.copy_(torch.randn(key.cout, generator=gen) * 0.1)
        return linear.eval()
    groups = key.cin if key.op == "dwconv" else 1
    conv = nn.Conv2d(key.cin, key.cout, key.kernel, key.stride, key.kernel // 2, groups=groups, bias=False)
    fan_in = (key.cin // groups) * key.kernel**2
    norm = nn.BatchNorm2d(key.cout)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
        norm.weight.copy_(1.0 + 0.1 * torch.randn(key.cout, generator=gen))
        norm.bias.copy_(0.1 * torch.randn(key.cout, generator=gen))
        norm.running_mean.copy_(0.1 * torch.randn(key.cout, generator=gen))
        norm.running_var.copy_(0.5 + torch.rand(key.cout, generator=gen))
    relu6 = key.act == "relu6"
    # As inside a subnet (nasq.supernet.blocks): a depthwise conv or a project conv (no ReLU6 after
    # it) reads a ReLU6 output, an int8 input of which takes the unsigned grid; an integer kernel
    # requantizes once, after its ReLU6 (unsigned) or on its output - in a chain that
    # QuantizeLinear/DequantizeLinear is the next layer's input quantizer, the same graph.
    qconv = StaticQConv(conv, key.w_format, key.a_format, torch.tensor(ACT_AMAX), torch.tensor(ACT_AMAX),
                        a_unsigned=key.op == "dwconv" or not relu6, o_relu6=relu6)
    parts: list[nn.Module] = [StaticConvBN(qconv, norm)]
    if relu6:
        parts.append(nn.ReLU6())  # exported as Clip(0, 6), as F.relu6 in the static subnet
    return LayerUnit(*parts).eval()


def example_input(key: LayerKey, gen: torch.Generator, batch: int = 1) -> torch.Tensor:
    shape = (batch, key.cin) if key.op == "linear" else (batch, key.cin, key.hin, key.hin)
    return torch.randn(shape, generator=gen)


def static_subnet(net: Supernet, spec: SubnetSpec, gen: torch.Generator, calib_batches: int = 2,
                  batch: int = 16) -> StaticSubnet:
    """Activate ``spec`` on ``net``, recalibrate on random data from ``gen`` and extract it, as
    the pipeline does before exporting (the weights do not change run time)."""
    space: SearchSpace = net.space
    shape = space.config.input_shape
    net.set_active(spec)
    net.calibrate([torch.randn(batch, *shape, generator=gen) for _ in range(calib_batches)])
    net.eval()
    return net.extract()
