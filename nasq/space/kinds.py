"""Block kinds and model families as torch-free metadata: which per-layer genes a block searches,
which families it belongs to, and the layer shapes it contributes (what the cost model, the
latency tables and the feature encoders see). Catalogs are validated against this without torch.

The torch implementations register themselves in :mod:`nasq.supernet.blocks` (``BLOCKS``) under the
same names; a contract test checks that the two registries agree.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from nasq.registry import Registry
from nasq.space.types import ARCH_FIELDS, STEM_FORMAT, LayerChoice, LayerShape
from nasq.specs import SpaceConfig, StageSpec

ShapeFn = Callable[[str, int, int, int, int, LayerChoice, StageSpec, bool], tuple[list[LayerShape], int]]


@dataclass(frozen=True)
class BlockKind:
    name: str
    families: tuple[str, ...]
    layer_fields: tuple[str, ...]  # genes searched per layer, besides w_format and a_format
    shapes: ShapeFn  # (prefix, cin, cout, stride, res_or_tokens, choice, stage, first) -> (shapes, res_out)
    description: str = ""


BLOCK_KINDS: Registry[BlockKind] = Registry("block")


def conv_out(res: int, stride: int) -> int:
    return (res + stride - 1) // stride


def mid_channels(channels: int, ratio: float) -> int:
    """Hidden width of a block: ``channels * ratio`` rounded, at least 1 (expand, MLP ratio)."""
    return max(1, int(round(channels * ratio)))


def se_channels(mid: int) -> int:
    return max(4, mid // 4)


def _mbconv_shapes(p: str, cin: int, cout: int, stride: int, res: int, c: LayerChoice, st: StageSpec,
                   first: bool) -> tuple[list[LayerShape], int]:
    mid, hout, w, a = mid_channels(cin, c.expand), conv_out(res, stride), c.w_format, c.a_format
    out = []
    if c.expand != 1:
        out.append(LayerShape(f"{p}.expand", "conv", cin, mid, 1, 1, res, res, w, a))
    out.append(LayerShape(f"{p}.dw", "dwconv", mid, mid, c.kernel, stride, res, hout, w, a))
    if st.se:
        sq = se_channels(mid)
        out.append(LayerShape(f"{p}.se_reduce", "linear", mid, sq, 1, 1, 1, 1, w, a))
        out.append(LayerShape(f"{p}.se_expand", "linear", sq, mid, 1, 1, 1, 1, w, a))
    out.append(LayerShape(f"{p}.project", "conv", mid, cout, 1, 1, hout, hout, w, a))
    return out, hout


def _resnet_shapes(p: str, cin: int, cout: int, stride: int, res: int, c: LayerChoice, st: StageSpec,
                   first: bool) -> tuple[list[LayerShape], int]:
    mid, hout, w, a = mid_channels(cout, c.expand), conv_out(res, stride), c.w_format, c.a_format
    out = [LayerShape(f"{p}.reduce", "conv", cin, mid, 1, 1, res, res, w, a),
           LayerShape(f"{p}.conv", "conv", mid, mid, c.kernel, stride, res, hout, w, a),
           LayerShape(f"{p}.project", "conv", mid, cout, 1, 1, hout, hout, w, a)]
    if first:
        out.append(LayerShape(f"{p}.downsample", "conv", cin, cout, 1, stride, res, hout, w, a))
    return out, hout


def _fused_mbconv_shapes(p: str, cin: int, cout: int, stride: int, res: int, c: LayerChoice, st: StageSpec,
                         first: bool) -> tuple[list[LayerShape], int]:
    hout, w, a = conv_out(res, stride), c.w_format, c.a_format
    if c.expand == 1:  # EfficientNetV2's fused-MBConv with expansion 1: one kxk conv straight to cout
        return [LayerShape(f"{p}.conv", "conv", cin, cout, c.kernel, stride, res, hout, w, a)], hout
    mid = mid_channels(cin, c.expand)
    return [LayerShape(f"{p}.expand", "conv", cin, mid, c.kernel, stride, res, hout, w, a),
            LayerShape(f"{p}.project", "conv", mid, cout, 1, 1, hout, hout, w, a)], hout


def _conv_shapes(p: str, cin: int, cout: int, stride: int, res: int, c: LayerChoice, st: StageSpec,
                 first: bool) -> tuple[list[LayerShape], int]:
    hout = conv_out(res, stride)
    return [LayerShape(f"{p}.conv", "conv", cin, cout, c.kernel, stride, res, hout, c.w_format, c.a_format)], hout


def residual(cin: int, cout: int, stride: int) -> bool:
    """The identity skip of the mbconv family's blocks (mbconv, fused_mbconv, conv): only where the
    block keeps the shape, so no projection shortcut is ever needed."""
    return stride == 1 and cin == cout


def vit_head_dim(st: StageSpec) -> int:
    """Each attention head is ``max(width) / max(heads)`` wide; fewer heads, narrower attention."""
    return max(1, st.max_width // max(st.heads))


def _vit_shapes(p: str, cin: int, cout: int, stride: int, tokens: int, c: LayerChoice, st: StageSpec,
                first: bool) -> tuple[list[LayerShape], int]:
    dim, attn, hidden = cout, c.heads * vit_head_dim(st), mid_channels(cout, c.mlp_ratio)
    w, a = c.w_format, c.a_format
    out = [LayerShape(f"{p}.qkv", "linear", dim, 3 * attn, 1, 1, 1, 1, w, a, tokens),
           LayerShape(f"{p}.attention", "matmul", attn, tokens, 1, 1, 1, 1, "fp32", "fp32", tokens),
           LayerShape(f"{p}.proj", "linear", attn, dim, 1, 1, 1, 1, w, a, tokens),
           LayerShape(f"{p}.fc1", "linear", dim, hidden, 1, 1, 1, 1, w, a, tokens),
           LayerShape(f"{p}.fc2", "linear", hidden, dim, 1, 1, 1, 1, w, a, tokens)]
    return out, tokens


BLOCK_KINDS.add("mbconv", BlockKind("mbconv", ("mbconv",), ("kernel", "expand"), _mbconv_shapes,
                                    "inverted residual: expand 1x1, depthwise kxk, [squeeze-excite], project 1x1"))
# Dense-conv blocks (SpaceEvo, EfficientNetV2): no depthwise conv. With integer kernels a dense
# 3x3 conv ran 2.8-3.5x faster in int8 than in fp32 on CPU (onnxruntime, openvino), a depthwise one
# 0.8x: MBConv's depthwise-heavy blocks cannot profit from int8 there, these can.
BLOCK_KINDS.add("fused_mbconv", BlockKind("fused_mbconv", ("mbconv",), ("kernel", "expand"), _fused_mbconv_shapes,
                                          "fused inverted residual: dense kxk expand conv, project 1x1; "
                                          "expand 1 is a single kxk conv"))
BLOCK_KINDS.add("conv", BlockKind("conv", ("mbconv",), ("kernel",), _conv_shapes,
                                  "plain dense kxk conv, batch norm, ReLU6; identity skip when the shape allows"))
BLOCK_KINDS.add("resnet", BlockKind("resnet", ("resnet",), ("kernel", "expand"), _resnet_shapes,
                                    "bottleneck: reduce 1x1 to width*expand, kxk conv, project 1x1, identity or 1x1 shortcut"))
BLOCK_KINDS.add("vit", BlockKind("vit", ("vit", "sequence"), ("heads", "mlp_ratio"), _vit_shapes,
                                 "pre-norm transformer encoder layer: multi-head self-attention and an MLP"))


def _dense_shapes(p: str, cin: int, cout: int, stride: int, res: int, c: LayerChoice, st: StageSpec,
                  first: bool) -> tuple[list[LayerShape], int]:
    return [LayerShape(f"{p}.fc", "linear", cin, cout, 1, 1, 1, 1, c.w_format, c.a_format)], res


BLOCK_KINDS.add("dense", BlockKind("dense", ("mlp",), (), _dense_shapes,
                                   "layer norm, linear to the stage width, ReLU; identity skip when the width is kept"))



# ---------------------------------------------------------------- families: stem and head

def tokenized(config: SpaceConfig) -> bool:
    return config.family in ("vit", "sequence")


IMAGE_FAMILIES = ("mbconv", "resnet", "vit")


def sequence_layout(config: SpaceConfig) -> tuple[int, int, int]:
    """``(channels, steps, patch)`` the sequence stem reads: a series is C channels over T steps;
    an image is read by rows, a series of C*W channels over H steps. Each token is ``patch`` =
    ``stem.kernel`` consecutive steps (``channels * patch`` features), ``steps // patch`` tokens
    in all (``stem.kernel: 1``: one token per step; the patch must divide the steps)."""
    inp, patch = config.input, config.stem.kernel
    if inp.length is not None:
        return inp.channels, inp.length, patch
    return inp.channels * inp.resolution, inp.resolution, patch


def stem_shapes(config: SpaceConfig, res: int, width: int) -> tuple[list[LayerShape], int, int]:
    """The stem's layers, its output channels and its output resolution (tokens for transformers,
    1 for a table row)."""
    f, cfg = STEM_FORMAT, config
    if cfg.family == "vit":
        patch, cin, convs = cfg.stem.kernel, cfg.input.channels, []
        for i, cout in enumerate(conv_stem_channels(cfg)):
            convs.append(LayerShape(f"stem.conv{i}", "conv", cin, cout, 3, 2, res, conv_out(res, 2), f, f))
            cin, res, patch = cout, conv_out(res, 2), patch // 2
        tokens = (res // patch) ** 2
        return [*convs, LayerShape("stem", "conv", cin, width, patch, patch, res, res // patch, f, f)], width, tokens
    if cfg.family == "sequence":
        channels, steps, patch = sequence_layout(cfg)
        tokens = steps // patch
        return [LayerShape("stem", "linear", channels * patch, width, 1, 1, 1, 1, f, f, tokens)], width, tokens
    if cfg.family == "mlp":
        return [LayerShape("stem", "linear", cfg.input.features, cfg.stem.channels, 1, 1, 1, 1, f, f)], cfg.stem.channels, 1
    out_res = conv_out(res, cfg.stem.stride)
    return [LayerShape("stem", "conv", cfg.input.channels, cfg.stem.channels, cfg.stem.kernel, cfg.stem.stride,
                       res, out_res, f, f)], cfg.stem.channels, out_res


def conv_stem_channels(config: SpaceConfig) -> list[int]:
    """Output channels of a vit's convolutional stem (``stem.convs`` layers; empty without one):
    ``stem.channels`` for the last, half as many for each before it."""
    n = config.stem.convs
    return [max(1, config.stem.channels >> (n - 1 - i)) for i in range(n)]


def head_shapes(config: SpaceConfig, cin: int) -> list[LayerShape]:
    return [LayerShape("classifier", "linear", cin, config.input.num_classes, 1, 1, 1, 1, STEM_FORMAT, STEM_FORMAT)]


def check_family(config: SpaceConfig) -> list[tuple[str, str]]:
    """Problems as (field, message); empty when the space is consistent with its family."""
    problems = []
    for i, st in enumerate(config.stages):
        kind = BLOCK_KINDS.get(st.block) if st.block in BLOCK_KINDS else None
        if kind is None:
            problems.append((f"stages[{i}].block", BLOCK_KINDS.miss_message(st.block)))
            continue
        if config.family not in kind.families:
            problems.append((f"stages[{i}].block", f"block '{st.block}' does not belong to family "
                             f"'{config.family}' (it serves {list(kind.families)}), got '{st.block}'"))
        for name in ARCH_FIELDS:
            given = getattr(st, name)
            if name in kind.layer_fields and not given:
                problems.append((f"stages[{i}].{name}", f"block '{st.block}' needs choices for '{name}', got []"))
            elif name not in kind.layer_fields and given:
                problems.append((f"stages[{i}].{name}", f"block '{st.block}' has no '{name}' gene, got {list(given)}"))
        if st.se and st.block != "mbconv":
            problems.append((f"stages[{i}].se", f"only mbconv blocks have squeeze-excite, got se: true on '{st.block}'"))
        if st.block == "vit" and st.heads and st.max_width % max(st.heads):
            problems.append((f"stages[{i}].heads", f"max width {st.max_width} must divide by the most heads, got {max(st.heads)}"))
    if tokenized(config) and len(config.stages) != 1:
        problems.append(("stages", f"a {config.family} space has one stage of encoder layers, got {len(config.stages)}"))
    return problems + _check_input(config)


def _check_input(config: SpaceConfig) -> list[tuple[str, str]]:
    """The input a family reads: images (conv families, vit), an image or a series (sequence),
    a table row (mlp); elastic resolution for the conv families only; patches that fit."""
    inp, family, problems = config.input, config.family, []
    given = "resolution" if inp.resolution is not None else "length" if inp.length is not None else "features"
    wanted = {"sequence": ("resolution", "length"), "mlp": ("features",)}.get(family, ("resolution",))
    if given not in wanted:
        what = {"resolution": "an image", "length": "a series", "features": "a table row"}
        takes = " or ".join(f"input.{w} ({what[w]})" for w in wanted)
        problems.append((f"input.{given}", f"a {family} space takes {takes}, got {given}: {getattr(inp, given)}"))
        return problems
    if inp.resolution_choices and family not in ("mbconv", "resnet"):
        problems.append(("input.resolution_choices", f"elastic resolution is for conv families, got {list(inp.resolution_choices)}"))
    if family == "vit" and inp.resolution % config.stem.kernel:
        problems.append(("stem.kernel", f"the patch size must divide the resolution {inp.resolution}, got {config.stem.kernel}"))
    if config.stem.convs and family != "vit":
        problems.append(("stem.convs", f"a convolutional stem is for the vit family, got convs: {config.stem.convs} "
                         f"on a {family} space"))
    elif config.stem.convs and config.stem.kernel % (1 << config.stem.convs):
        problems.append(("stem.convs", f"each stem conv halves the image, so the patch {config.stem.kernel} must "
                         f"divide by 2**convs = {1 << config.stem.convs}, got convs: {config.stem.convs}"))
    if family == "sequence":
        _, steps, patch = sequence_layout(config)
        if steps % patch:
            problems.append(("stem.kernel", f"the patch (time steps per token) must divide the {given} {steps}, got {patch}"))
    if family == "mlp":  # not model_fields_set: a config dumped and validated again sets every field
        fields = type(config.stem).model_fields
        for name in ("kernel", "stride"):
            if getattr(config.stem, name) != fields[name].default:
                problems.append((f"stem.{name}", f"the mlp stem is one linear layer to stem.channels (no {name}), "
                                 f"got {name}: {getattr(config.stem, name)}"))
    return problems
