"""The supernet of a space (any family: mbconv, resnet, vit, sequence, mlp) and the static
subnets extracted from it. Blocks live in :mod:`nasq.supernet.blocks`; this module adds the
family's stem and head, elastic input resolution and width, calibration and extraction.

Inputs: an image (N, C, H, W) for mbconv, resnet and vit; a series (N, C, T) - or an image read
by rows - for sequence; a table (N, F) for mlp (``SpaceConfig.input_shape`` per example)."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from nasq.formats import get_format
from nasq.space import SearchSpace, SubnetSpec
from nasq.space.kinds import conv_stem_channels, sequence_layout, tokenized
from nasq.supernet.blocks import BLOCKS, ElasticMBConv, xavier_groups
from nasq.supernet.layers import (
    ActQuant,
    ElasticBatchNorm2d,
    ElasticLayerNorm,
    ElasticLinear,
    StaticQConv,
)

__all__ = ["BLOCKS", "ElasticMBConv", "StaticSubnet", "Supernet"]
FP32 = get_format("fp32")


class PatchEmbed(nn.Module):
    """ViT stem: non-overlapping ``patch`` x ``patch`` patches to tokens of elastic width, plus a
    learned position embedding; with ``conv_channels`` (a convolutional stem, ``stem.convs``),
    3x3 stride-2 conv + batch norm + ReLU layers first, each halving the image, and patches of
    ``patch / 2**len(conv_channels)`` over their output. Kept fp32, like every stem."""

    def __init__(self, channels: int, dim: int, patch: int, tokens: int, conv_channels: tuple[int, ...] = ()):
        super().__init__()
        self.conv_channels = tuple(conv_channels)
        layers, cin = [], channels
        for cout in self.conv_channels:
            layers += [nn.Conv2d(cin, cout, 3, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
            cin = cout
        self.convs = nn.Sequential(*layers)
        self.patch = patch >> len(self.conv_channels)
        self.weight = nn.Parameter(torch.empty(dim, cin, self.patch, self.patch))
        nn.init.kaiming_normal_(self.weight, mode="fan_out")
        self.bias = nn.Parameter(torch.zeros(dim))
        self.pos = nn.Parameter(torch.zeros(1, tokens, dim))
        nn.init.trunc_normal_(self.pos, std=0.02)

    def forward(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        h = F.conv2d(self.convs(x), self.weight[:dim], self.bias[:dim], self.patch)
        return h.flatten(2).transpose(1, 2) + self.pos[:, :, :dim]

    def static(self, dim: int) -> PatchEmbed:
        patch = self.patch << len(self.conv_channels)
        channels = self.convs[0].in_channels if self.conv_channels else self.weight.shape[1]
        out = PatchEmbed(channels, dim, patch, self.pos.shape[1], self.conv_channels)
        out.convs.load_state_dict(self.convs.state_dict())
        for name in ("weight", "bias"):
            getattr(out, name).data.copy_(getattr(self, name)[:dim])
        out.pos.data.copy_(self.pos[:, :, :dim])
        return out


class TokenEmbed(nn.Module):
    """Sequence stem: a series (B, C, T) cut into tokens of ``patch`` consecutive steps (C*patch
    features each); a linear embeds each token to the elastic width and a learned position
    embedding marks its place. An image (B, C, H, W) is read by rows: a series of C*W channels
    over H steps (with patch 1, each row is one token)."""

    def __init__(self, channels: int, patch: int, dim: int, tokens: int):
        super().__init__()
        self.channels, self.patch = channels, patch
        self.linear = ElasticLinear(channels * patch, dim)
        xavier_groups(self.linear.weight)  # trunc normal 0.02 embeds a 28-feature row near zero
        self.pos = nn.Parameter(torch.zeros(1, tokens, dim))
        nn.init.trunc_normal_(self.pos, std=0.02)

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:  # an image: rows are the steps, (channel, column) the features
            b, c, h, w = x.shape
            x = x.permute(0, 1, 3, 2).reshape(b, c * w, h)
        b, c, t = x.shape
        n = t // self.patch
        return x.reshape(b, c, n, self.patch).permute(0, 2, 1, 3).reshape(b, n, c * self.patch)

    def forward(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        return self.linear(self.tokens(x), dim, FP32) + self.pos[:, :, :dim]

    def static(self, dim: int) -> TokenEmbed:
        out = TokenEmbed(self.channels, self.patch, dim, self.pos.shape[1])
        out.linear.weight.data.copy_(self.linear.active_weight(self.linear.fin, dim))
        out.linear.bias.data.copy_(self.linear.active_bias(dim))
        out.pos.data.copy_(self.pos[:, :, :dim])
        return out


class TableStem(nn.Module):
    """MLP stem: a linear from the table's features to ``stem.channels``, batch norm, ReLU; kept
    fp32 like every stem. The batch norm standardises the learned features, so columns of very
    different scales train alike; ``static`` folds it into the linear."""

    def __init__(self, features: int, channels: int):
        super().__init__()
        self.linear, self.bn = nn.Linear(features, channels), nn.BatchNorm1d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.linear(x)))

    @torch.no_grad()
    def static(self) -> nn.Sequential:
        bn, lin = self.bn, self.linear
        scale = bn.weight * (bn.running_var + bn.eps).rsqrt()
        plain = nn.Linear(lin.in_features, lin.out_features)
        plain.weight.copy_(lin.weight * scale[:, None])
        plain.bias.copy_((lin.bias - bn.running_mean) * scale + bn.bias)
        return nn.Sequential(plain, nn.ReLU())


class Supernet(nn.Module):
    """All subnets of a space in one network. ``set_active(spec)`` selects one; ``extract()``
    returns it as a static module with copied weights whose output equals the supernet's."""

    def __init__(self, space: SearchSpace):
        super().__init__()
        cfg = space.config
        self.space, self.tokens, self.table = space, tokenized(cfg), cfg.family == "mlp"
        first = cfg.stages[0]
        if cfg.family == "vit":
            n_tok = (cfg.input.resolution // cfg.stem.kernel) ** 2
            self.stem = PatchEmbed(cfg.input.channels, first.max_width, cfg.stem.kernel, n_tok,
                                   tuple(conv_stem_channels(cfg)))
            cin = first.max_width
        elif cfg.family == "sequence":
            channels, steps, patch = sequence_layout(cfg)
            self.stem = TokenEmbed(channels, patch, first.max_width, steps // patch)
            cin = first.max_width
        elif self.table:
            self.stem = TableStem(cfg.input.features, cfg.stem.channels)
            cin = cfg.stem.channels
        else:
            self.stem = nn.Conv2d(cfg.input.channels, cfg.stem.channels, cfg.stem.kernel, cfg.stem.stride,
                                  cfg.stem.kernel // 2, bias=False)
            self.stem_bn = nn.BatchNorm2d(cfg.stem.channels)
            cin = cfg.stem.channels
        self.stages = nn.ModuleList()
        for st in cfg.stages:
            block_cls = BLOCKS.get(st.block)
            self.stages.append(nn.ModuleList(block_cls(cin if j == 0 else st.max_width, st, j == 0)
                                             for j in range(max(st.depth))))
            cin = st.max_width
        if self.tokens:
            self.norm = ElasticLayerNorm(cin)
        self.classifier = ElasticLinear(cin, cfg.input.num_classes)
        self.spec: SubnetSpec | None = None
        self.set_active(space.largest())

    def set_active(self, spec: SubnetSpec) -> None:
        self.spec = spec
        for i, (blocks, layers) in enumerate(zip(self.stages, spec.stages, strict=True)):
            width = self.space.stage_width(spec, i)
            for block, choice in zip(blocks, layers, strict=False):
                block.set_active(choice, width)
        self._chain_blocks()

    def _chain_blocks(self) -> None:
        """Tell each active block where it sits in the int8 chain (see nasq.supernet.blocks): its
        input width, whether its input is a ReLU6 output (the stem's is) and whether the next
        block quantizes its output to int8 (the last block's output goes to the fp32 pooling)."""
        if self.tokens or self.table:
            return
        active = self.active_blocks()
        cin, relu6_input = self.space.config.stem.channels, True
        widths = [self.space.stage_width(self.spec, i) for i, st in enumerate(self.active_blocks_by_stage()) for _ in st]
        for j, block in enumerate(active):
            nxt = active[j + 1] if j + 1 < len(active) else None
            block.set_io(cin, relu6_input, nxt is not None and nxt.int8_input())
            relu6_input = block.relu6_output(cin)
            cin = widths[j]

    def active_blocks(self) -> list[nn.Module]:
        return [b for stage in self.active_blocks_by_stage() for b in stage]

    def _resize(self, x: torch.Tensor) -> torch.Tensor:
        res = self.spec.resolution
        if res and x.shape[-1] != res:
            return F.interpolate(x, size=(res, res), mode="bilinear", align_corners=False)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._resize(x)
        if self.tokens:
            h = self.stem(x, self.space.stage_width(self.spec, 0))
        elif self.table:
            h = self.stem(x)
        else:
            # channels-last from the stem's output on (a one-channel input has no layout to set):
            # oneDNN's CPU convolutions, depthwise and 1x1 above all, train ~1.4x faster, and every
            # later op keeps the layout. Extracted subnets use it too, so that both run the same
            # kernels and agree bit for bit (quantized activations would amplify any difference).
            h = self.stem(x).contiguous(memory_format=torch.channels_last)
            h = F.relu6(self.stem_bn(h))
        for block in self.active_blocks():
            h = block(h)
        if self.tokens:
            h = self.norm(h).mean(dim=1)
        elif not self.table:
            h = h.mean(dim=(2, 3))
        return self.classifier(h, self.classifier.fout, FP32)

    def learn_ranges(self, on: bool) -> None:
        """Whether training starts learned activation ranges (``TrainConfig.activation_ranges``);
        ranges already learned are used either way."""
        for m in self.modules():
            if isinstance(m, ActQuant):
                m.starts_ranges = on

    @torch.no_grad()
    def calibrate(self, batches: list[torch.Tensor]) -> None:
        """Recompute batch-norm statistics and activation ranges of the active subnet."""
        bns = [m for m in self.modules() if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d))]
        quants = [m for m in self.modules() if isinstance(m, ActQuant)]
        was_training = self.training
        self.train()
        for q in quants:
            q.amax.zero_()
            q.calibrating = True
        device = next(self.parameters()).device
        for i, xb in enumerate(batches):
            xb = xb.to(device)
            for bn in bns:
                bn.calib_step = i if isinstance(bn, ElasticBatchNorm2d) else None
                if not isinstance(bn, ElasticBatchNorm2d):
                    bn.momentum = 1.0 / (i + 1)
            self(xb)
        for bn in bns:
            if isinstance(bn, ElasticBatchNorm2d):
                bn.calib_step = None
            else:
                bn.momentum = 0.1
        for q in quants:
            q.calibrating = False
        self.train(was_training)

    def extract(self) -> StaticSubnet:
        spec, space = self.spec, self.space
        width0 = space.stage_width(spec, 0)
        if self.tokens:
            stem, cin = self.stem.static(width0), width0
        elif self.table:
            stem, cin = self.stem.static(), space.config.stem.channels
        else:
            stem, cin = nn.Sequential(self.stem, self.stem_bn), space.config.stem.channels
        blocks = []
        for i, block in enumerate(self.active_blocks_by_stage()):
            for b in block:
                blocks.append(b.extract(cin))
                cin = space.stage_width(spec, i)
        norm = self.norm.static(cin) if self.tokens else None
        classifier = self.classifier.static(cin, self.classifier.fout)
        return copy.deepcopy(StaticSubnet(stem, blocks, classifier, norm, spec.resolution, self.table)).eval()

    def active_blocks_by_stage(self) -> list[list[nn.Module]]:
        return [list(blocks[: len(layers)]) for blocks, layers in zip(self.stages, self.spec.stages, strict=True)]


class StaticSubnet(nn.Module):
    def __init__(self, stem: nn.Module, blocks: list[nn.Module], classifier: nn.Linear,
                 norm: nn.LayerNorm | None = None, resolution: int = 0, table: bool = False):
        super().__init__()
        self.table = table  # an mlp: (N, F) in, no pooling
        self.stem = stem
        self.blocks = nn.Sequential(*blocks)
        self.norm = norm
        self.classifier = classifier
        self.resolution = resolution

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.resolution and x.shape[-1] != self.resolution:
            x = F.interpolate(x, size=(self.resolution, self.resolution), mode="bilinear", align_corners=False)
        if self.table:
            return self.classifier(self.blocks(self.stem(x)))
        if self.norm is not None:
            h = self.blocks(self.stem(x, self.stem.pos.shape[-1]))
            return self.classifier(self.norm(h).mean(dim=1))
        h = self.stem(x)
        if not (torch.onnx.is_in_onnx_export() or torch.jit.is_tracing()):
            h = h.contiguous(memory_format=torch.channels_last)  # the supernet's layout: its very kernels
        h = self.blocks(F.relu6(h))
        return self.classifier(h.mean(dim=(2, 3)))

    def prepare_export(self) -> None:
        for m in self.modules():
            if isinstance(m, StaticQConv):
                m.prepare_export()
