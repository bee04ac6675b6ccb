"""The elastic MBConv supernet and the static subnets extracted from it."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from nasq.formats import get_format
from nasq.registry import Registry
from nasq.space import LayerChoice, SearchSpace, SubnetSpec
from nasq.supernet.layers import (
    ActQuant,
    ElasticBatchNorm2d,
    ElasticConv2d,
    OutQuant,
    StaticQConv,
    integer_kernel,
)

BLOCKS: Registry[type[nn.Module]] = Registry("block")


@BLOCKS.register("mbconv")
class ElasticMBConv(nn.Module):
    """Inverted residual (expand 1x1 -> depthwise kxk -> project 1x1) with elastic kernel and
    expand ratio; every conv's weights and input activations take the layer's formats."""

    def __init__(self, cin: int, cout: int, stride: int, max_kernel: int, max_expand: int):
        super().__init__()
        self.cin, self.cout, self.stride = cin, cout, stride
        mid = cin * max_expand
        self.expand_conv, self.expand_bn = ElasticConv2d(cin, mid, 1), ElasticBatchNorm2d(mid)
        self.dw_conv = ElasticConv2d(mid, mid, max_kernel, stride, depthwise=True)
        self.dw_bn = ElasticBatchNorm2d(mid)
        self.project_conv, self.project_bn = ElasticConv2d(mid, cout, 1), ElasticBatchNorm2d(cout)
        self.q_expand, self.q_dw, self.q_project = ActQuant(), ActQuant(), ActQuant()
        self.o_expand, self.o_dw, self.o_project = OutQuant(), OutQuant(), OutQuant()
        self.choice: LayerChoice | None = None

    @property
    def residual(self) -> bool:
        return self.stride == 1 and self.cin == self.cout

    def set_active(self, choice: LayerChoice) -> None:
        self.choice = choice
        for q in (self.q_expand, self.q_dw, self.q_project):
            q.set_format(choice.a_format)
        out = "int8" if integer_kernel(choice.w_format, choice.a_format) else "fp32"
        for o in (self.o_expand, self.o_dw, self.o_project):
            o.set_format(out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.choice
        w_fmt = get_format(c.w_format)
        h = x
        mid = self.cin * c.expand
        if c.expand != 1:
            h = F.relu6(self.expand_bn(self.o_expand(self.expand_conv(self.q_expand(h), mid, 1, w_fmt))))
        h = F.relu6(self.dw_bn(self.o_dw(self.dw_conv(self.q_dw(h), mid, c.kernel, w_fmt))))
        h = self.project_bn(self.o_project(self.project_conv(self.q_project(h), self.cout, 1, w_fmt)))
        return h + x if self.residual else h

    def extract(self) -> StaticMBConv:
        c = self.choice
        mid = self.cin * c.expand
        parts = []
        if c.expand != 1:
            parts.append(("expand", _static(self.expand_conv, self.expand_bn, self.cin, mid, 1, (self.q_expand, self.o_expand), c)))
        parts.append(("dw", _static(self.dw_conv, self.dw_bn, mid, mid, c.kernel, (self.q_dw, self.o_dw), c)))
        parts.append(("project", _static(self.project_conv, self.project_bn, mid, self.cout, 1, (self.q_project, self.o_project), c)))
        return StaticMBConv(dict(parts), self.residual)


def _static(conv: ElasticConv2d, bn: ElasticBatchNorm2d, cin: int, cout: int, kernel: int,
            quants: tuple[ActQuant, OutQuant], c: LayerChoice) -> nn.Sequential:
    q, o = quants
    groups = cout if conv.depthwise else 1
    plain = nn.Conv2d(cin, cout, kernel, conv.stride, kernel // 2, groups=groups, bias=False)
    plain.weight.data.copy_(conv.active_weight(cin, cout, kernel))
    norm = nn.BatchNorm2d(cout, eps=bn.eps)
    for name in ("weight", "bias", "running_mean", "running_var"):
        getattr(norm, name).data.copy_(getattr(bn, name)[:cout])
    return nn.Sequential(StaticQConv(plain, c.w_format, c.a_format, q.amax, o.amax), norm)


class StaticMBConv(nn.Module):
    def __init__(self, parts: dict[str, nn.Sequential], residual: bool):
        super().__init__()
        self.parts = nn.ModuleDict(parts)
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        names = list(self.parts)
        for name in names:
            h = self.parts[name](h)
            if name != "project":
                h = F.relu6(h)
        return h + x if self.residual else h


class Supernet(nn.Module):
    """All subnets of a space in one network. ``set_active(spec)`` selects one; ``extract()``
    returns it as a static module with copied weights whose output equals the supernet's."""

    def __init__(self, space: SearchSpace):
        super().__init__()
        cfg = space.config
        self.space = space
        self.stem = nn.Conv2d(cfg.input.channels, cfg.stem.channels, cfg.stem.kernel, cfg.stem.stride,
                              cfg.stem.kernel // 2, bias=False)
        self.stem_bn = nn.BatchNorm2d(cfg.stem.channels)
        self.stages = nn.ModuleList()
        cin = cfg.stem.channels
        for st in cfg.stages:
            block_cls = BLOCKS.get(st.block)
            blocks = [block_cls(cin if j == 0 else st.width, st.width, st.stride if j == 0 else 1,
                                max(st.kernel), max(st.expand)) for j in range(max(st.depth))]
            self.stages.append(nn.ModuleList(blocks))
            cin = st.width
        self.classifier = nn.Linear(cin, cfg.input.num_classes)
        self.spec: SubnetSpec | None = None
        self.set_active(space.largest())

    def set_active(self, spec: SubnetSpec) -> None:
        self.spec = spec
        for blocks, layers in zip(self.stages, spec.stages, strict=True):
            for block, choice in zip(blocks, layers, strict=False):
                block.set_active(choice)

    def active_blocks(self) -> list[nn.Module]:
        return [b for blocks, layers in zip(self.stages, self.spec.stages, strict=True) for b in blocks[: len(layers)]]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu6(self.stem_bn(self.stem(x)))
        for block in self.active_blocks():
            h = block(h)
        return self.classifier(h.mean(dim=(2, 3)))

    @torch.no_grad()
    def calibrate(self, batches: list[torch.Tensor]) -> None:
        """Recompute batch-norm statistics and activation ranges of the active subnet."""
        bns = [m for m in self.modules() if isinstance(m, nn.BatchNorm2d)]
        quants = [m for m in self.modules() if isinstance(m, ActQuant)]
        was_training = self.training
        self.train()
        for q in quants:
            q.amax.zero_()
            q.calibrating = True
        for i, xb in enumerate(batches):
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
        stem = nn.Sequential(self.stem, self.stem_bn)
        blocks = [b.extract() for b in self.active_blocks()]
        return copy.deepcopy(StaticSubnet(stem, blocks, self.classifier)).eval()


class StaticSubnet(nn.Module):
    def __init__(self, stem: nn.Module, blocks: list[nn.Module], classifier: nn.Linear):
        super().__init__()
        self.stem = stem
        self.blocks = nn.Sequential(*blocks)
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.blocks(F.relu6(self.stem(x)))
        return self.classifier(h.mean(dim=(2, 3)))

    def prepare_export(self) -> None:
        for m in self.modules():
            if isinstance(m, StaticQConv):
                m.prepare_export()

