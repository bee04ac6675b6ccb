"""Elastic blocks, one per registered block kind, and the static modules they extract to.

Contract (checked for every kind by ``nasq.testing.blocks``): built with the largest channels a
stage can have, ``set_active(choice, cout)`` selects a layer choice and the active output width
(the input width is read from the input), ``forward`` computes it with fake quantization, and
``extract()`` returns a plain static module, weights copied, whose output equals the block's.
Every conv and linear takes the layer's weight format and quantizes its input to the activation
format; int8 x int8 layers also requantize their output (integer kernels).

int8 chains (one QuantizeLinear/DequantizeLinear per activation tensor, what onnxruntime and
OpenVINO run as integer kernels back to back): after ``set_active`` the supernet calls
``set_io(cin, relu6_input, int8_consumer)`` on each block in order. An int8 input quantizer of a
ReLU6 output takes the unsigned grid; an integer kernel followed by a ReLU6 requantizes after it
(unsigned); an integer kernel whose output goes straight to an int8 input quantizer (the next
unit's, or the next block's when ``int8_consumer``) leaves the requantizing to that quantizer; a
residual Add reads the block input as the first unit's int8 quantizer made it (the same tensor).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from nasq.formats import get_format
from nasq.registry import Registry
from nasq.space.kinds import mid_channels, residual, se_channels, vit_head_dim
from nasq.space.types import LayerChoice
from nasq.specs import StageSpec
from nasq.supernet.layers import ElasticLayerNorm, QConvBN, QLinear, QuantizedUnit, int8_activation

BLOCKS: Registry[type[nn.Module]] = Registry("block")


class ElasticBlock(nn.Module):
    """Base of the elastic blocks: owns the active choice and width; kinds fill ``_formats``."""

    def __init__(self) -> None:
        super().__init__()
        self.choice: LayerChoice | None = None
        self.cout = 0

    def set_active(self, choice: LayerChoice, cout: int) -> None:
        self.choice, self.cout = choice, cout
        for unit in self._units():
            unit.set_format(choice.w_format, choice.a_format)

    def _units(self) -> list[nn.Module]:
        """The quantized convs/linears whose formats follow the layer's choice."""
        return [m for m in self.children() if isinstance(m, QuantizedUnit)]

    def set_io(self, cin: int, relu6_input: bool, int8_consumer: bool) -> None:
        """Where the active block sits in the chain (module docstring): ``cin`` its input width,
        ``relu6_input`` whether its input is a ReLU6 output, ``int8_consumer`` whether its output
        goes straight to an int8 input quantizer. Default: no chaining (transformer layers)."""

    def int8_input(self) -> bool:
        """Whether the active block's first units quantize its input to int8 (one shared tensor)."""
        return False

    def relu6_output(self, cin: int) -> bool:
        """Whether the active block's output is a ReLU6 output (no residual Add after it)."""
        return False


def _chain(unit: QuantizedUnit, relu6_input: bool, relu6_after: bool, consumer_quantizes: bool) -> None:
    unit.q.unsigned = relu6_input
    unit.o.relu6 = relu6_after
    unit.o.consumer_quantizes = consumer_quantizes


def _skip(unit: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A residual's view of the block input: the first unit's int8 quantized tensor, else ``x``."""
    if isinstance(unit, QuantizedUnit):
        return unit.q(x) if unit.q.int8 else x
    return unit.quantize_input(x) if unit.int8_input else x


class ConvChainBlock(ElasticBlock):
    """Base of the conv blocks: the active choice's activation format decides ``int8_input``."""

    def int8_input(self) -> bool:
        return int8_activation(get_format(self.choice.a_format))


# ---------------------------------------------------------------- mbconv
@BLOCKS.register("mbconv")
class ElasticMBConv(ConvChainBlock):
    """Inverted residual (expand 1x1 -> depthwise kxk -> [squeeze-excite] -> project 1x1) with
    elastic kernel, expand ratio and width."""

    def __init__(self, cin: int, stage: StageSpec, first: bool):
        super().__init__()
        self.stride = stage.stride if first else 1
        cout, mid = stage.max_width, mid_channels(cin, max(stage.expand))
        self.expand = QConvBN(cin, mid, 1)
        self.dw = QConvBN(mid, mid, max(stage.kernel), self.stride, depthwise=True)
        self.se = stage.se
        if self.se:
            self.se_reduce, self.se_expand = QLinear(mid, se_channels(mid)), QLinear(se_channels(mid), mid)
        self.project = QConvBN(mid, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c, cin = self.choice, x.shape[1]
        mid = mid_channels(cin, c.expand)
        h = F.relu6(self.expand(x, mid, 1)) if c.expand != 1 else x
        h = F.relu6(self.dw(h, mid, c.kernel))
        if self.se:
            s = F.relu(self.se_reduce(h.mean(dim=(2, 3)), se_channels(mid)))
            h = h * F.hardsigmoid(self.se_expand(s, mid))[:, :, None, None]
        h = self.project(h, self.cout, 1)
        return h + _skip(self._first(), x) if self.stride == 1 and cin == self.cout else h

    def _first(self) -> QConvBN:
        return self.expand if self.choice.expand != 1 else self.dw

    def set_io(self, cin: int, relu6_input: bool, int8_consumer: bool) -> None:
        int8 = self.int8_input()
        has_expand = self.choice.expand != 1
        if has_expand:
            _chain(self.expand, relu6_input, True, int8)
        # relu6(dw), times a hardsigmoid in [0, 1] with squeeze-excite, lies in [0, 6]
        _chain(self.dw, True if has_expand else relu6_input, True, int8 and not self.se)
        res = self.stride == 1 and cin == self.cout
        _chain(self.project, True, False, int8_consumer and not res)

    def extract(self, cin: int) -> StaticMBConv:
        c = self.choice
        mid = mid_channels(cin, c.expand)
        parts = {}
        if c.expand != 1:
            parts["expand"] = self.expand.extract(cin, mid, 1)
        parts["dw"] = self.dw.extract(mid, mid, c.kernel)
        if self.se:
            parts["se_reduce"] = self.se_reduce.extract(mid, se_channels(mid))
            parts["se_expand"] = self.se_expand.extract(se_channels(mid), mid)
        parts["project"] = self.project.extract(mid, self.cout, 1)
        return StaticMBConv(parts, self.stride == 1 and cin == self.cout)


class StaticMBConv(nn.Module):
    def __init__(self, parts: dict[str, nn.Module], residual: bool):
        super().__init__()
        self.parts = nn.ModuleDict(parts)
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.parts
        h = F.relu6(p["expand"](x)) if "expand" in p else x
        h = F.relu6(p["dw"](h))
        if "se_reduce" in p:
            s = F.relu(p["se_reduce"](h.mean(dim=(2, 3))))
            h = h * F.hardsigmoid(p["se_expand"](s))[:, :, None, None]
        h = p["project"](h)
        return h + _skip(p["expand"] if "expand" in p else p["dw"], x) if self.residual else h


# ---------------------------------------------------------------- fused_mbconv and conv
@BLOCKS.register("fused_mbconv")
class ElasticFusedMBConv(ConvChainBlock):
    """Fused inverted residual (EfficientNetV2, SpaceEvo): a dense kxk conv expands to
    ``cin * expand`` (with the stride), a 1x1 conv projects to the width; elastic kernel, expand
    ratio and width. Expand 1 is one kxk conv straight to the width with its own weights (``conv``,
    built only when the stage offers expand 1), since it maps cin to cout, not to a hidden width."""

    def __init__(self, cin: int, stage: StageSpec, first: bool):
        super().__init__()
        self.stride = stage.stride if first else 1
        cout, kernel, ratios = stage.max_width, max(stage.kernel), [e for e in stage.expand if e != 1]
        if ratios:
            mid = mid_channels(cin, max(ratios))
            self.expand, self.project = QConvBN(cin, mid, kernel, self.stride), QConvBN(mid, cout, 1)
        if len(ratios) < len(stage.expand):
            self.conv = QConvBN(cin, cout, kernel, self.stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c, cin = self.choice, x.shape[1]
        if c.expand == 1:
            h = F.relu6(self.conv(x, self.cout, c.kernel))
        else:
            h = self.project(F.relu6(self.expand(x, mid_channels(cin, c.expand), c.kernel)), self.cout, 1)
        if not residual(cin, self.cout, self.stride):
            return h
        return h + _skip(self.conv if c.expand == 1 else self.expand, x)

    def set_io(self, cin: int, relu6_input: bool, int8_consumer: bool) -> None:
        last = int8_consumer and not residual(cin, self.cout, self.stride)
        if self.choice.expand == 1:
            _chain(self.conv, relu6_input, True, last)
        else:
            _chain(self.expand, relu6_input, True, self.int8_input())
            _chain(self.project, True, False, last)

    def relu6_output(self, cin: int) -> bool:
        return self.choice.expand == 1 and not residual(cin, self.cout, self.stride)

    def extract(self, cin: int) -> StaticFusedMBConv:
        c = self.choice
        if c.expand == 1:
            parts = {"conv": self.conv.extract(cin, self.cout, c.kernel)}
        else:
            mid = mid_channels(cin, c.expand)
            parts = {"expand": self.expand.extract(cin, mid, c.kernel), "project": self.project.extract(mid, self.cout, 1)}
        return StaticFusedMBConv(parts, residual(cin, self.cout, self.stride))


@BLOCKS.register("conv")
class ElasticConvBlock(ConvChainBlock):
    """Plain dense kxk conv + batch norm + ReLU6 with elastic kernel and width; identity skip
    where the block keeps the shape (stride 1, same width in and out)."""

    def __init__(self, cin: int, stage: StageSpec, first: bool):
        super().__init__()
        self.stride = stage.stride if first else 1
        self.conv = QConvBN(cin, stage.max_width, max(stage.kernel), self.stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu6(self.conv(x, self.cout, self.choice.kernel))
        return h + _skip(self.conv, x) if residual(x.shape[1], self.cout, self.stride) else h

    def set_io(self, cin: int, relu6_input: bool, int8_consumer: bool) -> None:
        _chain(self.conv, relu6_input, True, int8_consumer and not residual(cin, self.cout, self.stride))

    def relu6_output(self, cin: int) -> bool:
        return not residual(cin, self.cout, self.stride)

    def extract(self, cin: int) -> StaticFusedMBConv:
        parts = {"conv": self.conv.extract(cin, self.cout, self.choice.kernel)}
        return StaticFusedMBConv(parts, residual(cin, self.cout, self.stride))


class StaticFusedMBConv(StaticMBConv):
    """Static fused-MBConv: ``expand`` (kxk) -> ReLU6 -> ``project`` (1x1), or a single ``conv``
    (kxk) -> ReLU6, which is also what a plain ``conv`` block extracts to. Its parts and residual
    flag are held as StaticMBConv holds them; only the arithmetic differs."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.parts
        h = F.relu6(p["conv"](x)) if "conv" in p else p["project"](F.relu6(p["expand"](x)))
        return h + _skip(p["conv"] if "conv" in p else p["expand"], x) if self.residual else h


# ---------------------------------------------------------------- resnet
@BLOCKS.register("resnet")
class ElasticBottleneck(ConvChainBlock):
    """ResNet bottleneck: reduce 1x1 to ``width * expand``, kxk conv, project 1x1 back to width;
    the first block of a stage has a 1x1 (strided) shortcut conv since its input width varies."""

    def __init__(self, cin: int, stage: StageSpec, first: bool):
        super().__init__()
        self.stride = stage.stride if first else 1
        cout = stage.max_width
        mid = mid_channels(cout, max(stage.expand))
        self.reduce = QConvBN(cin, mid, 1)
        self.conv = QConvBN(mid, mid, max(stage.kernel), self.stride)
        self.project = QConvBN(mid, cout, 1)
        self.first = first
        if first:
            self.downsample = QConvBN(cin, cout, 1, self.stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.choice
        mid = mid_channels(self.cout, c.expand)
        h = F.relu6(self.reduce(x, mid, 1))
        h = F.relu6(self.conv(h, mid, c.kernel))
        h = self.project(h, self.cout, 1)
        skip = self.downsample(x, self.cout, 1) if self.first else _skip(self.reduce, x)
        return F.relu6(h + skip)

    def set_io(self, cin: int, relu6_input: bool, int8_consumer: bool) -> None:
        int8 = self.int8_input()
        _chain(self.reduce, relu6_input, True, int8)
        _chain(self.conv, True, True, int8)
        _chain(self.project, True, False, False)  # into the residual Add
        if self.first:
            _chain(self.downsample, relu6_input, False, False)

    def relu6_output(self, cin: int) -> bool:
        return True

    def extract(self, cin: int) -> StaticBottleneck:
        c = self.choice
        mid = mid_channels(self.cout, c.expand)
        parts = {"reduce": self.reduce.extract(cin, mid, 1), "conv": self.conv.extract(mid, mid, c.kernel),
                 "project": self.project.extract(mid, self.cout, 1)}
        if self.first:
            parts["downsample"] = self.downsample.extract(cin, self.cout, 1)
        return StaticBottleneck(parts)


class StaticBottleneck(nn.Module):
    def __init__(self, parts: dict[str, nn.Module]):
        super().__init__()
        self.parts = nn.ModuleDict(parts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.parts
        h = p["project"](F.relu6(p["conv"](F.relu6(p["reduce"](x)))))
        skip = p["downsample"](x) if "downsample" in p else _skip(p["reduce"], x)
        return F.relu6(h + skip)


# ---------------------------------------------------------------- vit encoder layer
@torch.no_grad()
def xavier_groups(weight: torch.Tensor, groups: int = 1) -> None:
    """Xavier-uniform init of a linear's weight, each of its ``groups`` stacked outputs (q, k, v)
    on its own, as the original ViT does. The DeiT-style trunc normal 0.02 is tuned for widths of
    several hundred: at this project's widths (48-64) it starts every residual branch near zero,
    and the largest vit_fmnist subnet trained alone reached 59.7 % instead of 73.8 % top-1 after
    one short epoch (docs/benchmarks.md, "Supernet quality")."""
    for part in weight.view(groups, weight.shape[0] // groups, weight.shape[1]):
        nn.init.xavier_uniform_(part)


def attention(qkv: torch.Tensor, heads: int) -> torch.Tensor:
    """Multi-head self-attention of packed q, k, v (B, T, 3*A) -> (B, T, A); kept in fp32."""
    b, t, three_a = qkv.shape
    a = three_a // 3
    q, k, v = qkv.reshape(b, t, 3, heads, a // heads).permute(2, 0, 3, 1, 4)
    scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(a // heads))
    out = scores.softmax(dim=-1) @ v
    return out.transpose(1, 2).reshape(b, t, a)


@BLOCKS.register("vit")
class ElasticEncoderLayer(ElasticBlock):
    """Pre-norm transformer encoder layer over tokens (B, T, D): elastic heads (each
    ``max(width)/max(heads)`` wide), MLP ratio and embedding width D. q/k/v, the output
    projection and both MLP linears take the layer's formats; attention itself stays fp32."""

    def __init__(self, cin: int, stage: StageSpec, first: bool):
        super().__init__()
        dim, self.head_dim = stage.max_width, vit_head_dim(stage)
        attn = max(stage.heads) * self.head_dim
        self.norm1, self.norm2 = ElasticLayerNorm(dim), ElasticLayerNorm(dim)
        self.qkv = QLinear(dim, attn, groups=3)
        self.proj = QLinear(attn, dim)
        self.fc1 = QLinear(dim, mid_channels(dim, max(stage.mlp_ratio)))
        self.fc2 = QLinear(mid_channels(dim, max(stage.mlp_ratio)), dim)
        for unit in (self.qkv, self.proj, self.fc1, self.fc2):
            xavier_groups(unit.linear.weight, unit.linear.groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c, dim = self.choice, x.shape[-1]
        attn = c.heads * self.head_dim
        x = x + self.proj(attention(self.qkv(self.norm1(x), attn), c.heads), dim)
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x), mid_channels(dim, c.mlp_ratio))), dim)

    def extract(self, cin: int) -> StaticEncoderLayer:
        c, dim = self.choice, cin
        attn, hidden = c.heads * self.head_dim, mid_channels(dim, c.mlp_ratio)
        parts = {"norm1": self.norm1.static(dim), "qkv": self.qkv.extract(dim, attn),
                 "proj": self.proj.extract(attn, dim), "norm2": self.norm2.static(dim),
                 "fc1": self.fc1.extract(dim, hidden), "fc2": self.fc2.extract(hidden, dim)}
        return StaticEncoderLayer(parts, c.heads)


class StaticEncoderLayer(nn.Module):
    def __init__(self, parts: dict[str, nn.Module], heads: int):
        super().__init__()
        self.parts = nn.ModuleDict(parts)
        self.heads = heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.parts
        x = x + p["proj"](attention(p["qkv"](p["norm1"](x)), self.heads))
        return x + p["fc2"](F.gelu(p["fc1"](p["norm2"](x))))


# ---------------------------------------------------------------- dense (mlp family)
@BLOCKS.register("dense")
class ElasticDense(ElasticBlock):
    """One MLP layer over table rows (B, F): layer norm, linear to the elastic stage width with the
    layer's formats, ReLU; an identity skip where the width is kept. A layer norm, not a batch
    norm: it needs no recalibration per subnet and exports as it is."""

    def __init__(self, cin: int, stage: StageSpec, first: bool):
        super().__init__()
        self.norm = ElasticLayerNorm(cin)
        self.fc = QLinear(cin, stage.max_width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.fc(self.norm(x), self.cout))
        return x + h if x.shape[-1] == self.cout else h

    def extract(self, cin: int) -> StaticDense:
        return StaticDense({"norm": self.norm.static(cin), "fc": self.fc.extract(cin, self.cout)}, cin == self.cout)


class StaticDense(StaticMBConv):
    """Static dense layer: ``norm`` -> ``fc`` -> ReLU, plus the input where ``residual``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.parts["fc"](self.parts["norm"](x)))
        return x + h if self.residual else h
