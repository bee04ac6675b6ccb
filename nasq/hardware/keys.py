"""Latency-table keys: what identifies one measured layer, and every layer a space can contain.

A key is everything that changes a layer's run time in an exported subnet: the op, its shape, its
stride, whether a ReLU6 follows, and its weight and activation formats. The activation format is
the format of the layer's *input*, because nasq quantizes each conv's input (``StaticQConv``): the
cost of entering a format (QuantizeLinear/DequantizeLinear, or rounding ops) is part of the layer
that consumes it, so a change of format between two layers is already inside the table rows. What
the isolated measurement cannot see (onnxruntime's layout reorders between neighbouring fp32 convs,
the residual adds, session overhead) is left to the predictor's learned correction, whose features
are counted here too (:func:`transitions`, :func:`residual_adds`).

Torch-free: the search and the predictor use these keys without importing torch.
"""

from __future__ import annotations

import itertools
import weakref
from dataclasses import dataclass, fields

from nasq.space import LayerChoice, LayerShape, SearchSpace, SubnetSpec, layer_fields

OPS = ("conv", "dwconv", "linear", "matmul")
ACTIVATIONS = ("relu6", "none")


@dataclass(frozen=True, order=True)
class LayerKey:
    op: str  # conv | dwconv | linear
    cin: int
    cout: int
    kernel: int
    stride: int
    hin: int  # input height = width, pixels (1 for linear); tokens for transformer linears
    act: str  # relu6 | none: the activation that follows the layer's batch norm
    w_format: str
    a_format: str  # format of the layer's input activation

    @property
    def hout(self) -> int:
        return (self.hin + self.stride - 1) // self.stride

    def shape(self) -> LayerShape:
        """The key as a :class:`LayerShape` (for MACs, parameter and byte counts)."""
        if self.op in ("linear", "matmul") and self.hin > 1:
            return LayerShape(self.token(), self.op, self.cin, self.cout, self.kernel, self.stride,
                              1, 1, self.w_format, self.a_format, self.hin)
        return LayerShape(self.token(), self.op, self.cin, self.cout, self.kernel, self.stride,
                          self.hin, self.hout, self.w_format, self.a_format)

    def token(self) -> str:
        return (f"{self.op} {self.cin}->{self.cout} k{self.kernel} s{self.stride} @{self.hin} "
                f"{self.act} w={self.w_format} a={self.a_format}")


KEY_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(LayerKey))


def activation_of(shape: LayerShape) -> str:
    """The static subnet applies ReLU6 after every conv except a block's projection (the linear
    bottleneck of an inverted residual) and the classifier."""
    if shape.op in ("linear", "matmul") or shape.name.endswith((".project", ".downsample")):
        return "none"
    return "relu6"


def layer_key(shape: LayerShape) -> LayerKey:
    return LayerKey(shape.op, shape.cin, shape.cout, shape.kernel, shape.stride, shape.tokens or shape.hin,
                    activation_of(shape), shape.w_format, shape.a_format)


def subnet_keys(space: SearchSpace, spec: SubnetSpec) -> list[LayerKey]:
    """The keys of one subnet's layers, in execution order (stem first, classifier last)."""
    return [layer_key(s) for s in space.layer_shapes(spec)]


# space -> its keys: a SearchSpace is never mutated, and loading an experiment asks for them several
# times (the table's coverage, the latency predictor's formats, the execution classes): 117k subnets
# walked per call for mbconv_fmnist, seconds each.
_SPACE_KEYS: weakref.WeakKeyDictionary[SearchSpace, tuple[LayerKey, ...]] = weakref.WeakKeyDictionary()


def space_keys(space: SearchSpace) -> list[LayerKey]:
    """Every distinct layer key a subnet of ``space`` can contain, sorted (computed once per space)."""
    keys = _SPACE_KEYS.get(space)
    if keys is None:
        keys = _SPACE_KEYS[space] = tuple(_enumerate_keys(space))
    return list(keys)


def _enumerate_keys(space: SearchSpace) -> list[LayerKey]:
    """Every distinct layer key a subnet of ``space`` can contain, sorted.

    A slot's input shape depends only on the stage widths, strides and the input resolution,
    never on other layers' choices, so filling one stage at its deepest with one choice per
    combination of its layer genes, for every width and resolution, and keeping the other stages
    at their smallest visits every reachable key of that stage."""
    cfg, menu = space.config, space.config.precision
    smallest = space.smallest()
    widths_all = list(itertools.product(*(st.width for st in cfg.stages))) if smallest.widths else [()]
    resolutions = cfg.input.resolution_choices or (0,)
    keys: set[LayerKey] = set()
    for i, stage in enumerate(cfg.stages):
        fields = layer_fields(stage)
        menus = [getattr(menu, f) if f in ("w_format", "a_format") else getattr(stage, f) for f in fields]
        for choice in itertools.product(*menus):
            filled = (LayerChoice.of(**dict(zip(fields, choice, strict=True))),) * max(stage.depth)
            for widths in widths_all:
                for res in resolutions:
                    spec = SubnetSpec(smallest.stages[:i] + (filled,) + smallest.stages[i + 1:], widths, res)
                    keys.update(subnet_keys(space, spec))
    return sorted(keys)


def transitions(keys: list[LayerKey]) -> int:
    """Changes of activation format between consecutive layers (the input image is fp32)."""
    prev, count = "fp32", 0
    for key in keys:
        count += key.a_format != prev
        prev = key.a_format
    return count


def residual_adds(space: SearchSpace, spec: SubnetSpec) -> int:
    """Blocks with a skip connection: one Add each at run time (two per transformer layer)."""
    cfg = space.config
    if cfg.family in ("vit", "sequence"):
        return 2 * sum(spec.depths)
    count, cin = 0, cfg.stem.channels
    for i, (stage, layers) in enumerate(zip(cfg.stages, spec.stages, strict=True)):
        width = space.stage_width(spec, i)
        for j in range(len(layers)):
            stride = stage.stride if j == 0 else 1
            count += cfg.family == "resnet" or (stride == 1 and cin == width)
            cin = width
    return count


def integer_kernel(w_format: str, a_format: str) -> bool:
    """int8 weights on int8 inputs: the layer runs as an integer kernel (QLinearConv in
    onnxruntime, an u8 Convolution in OpenVINO); everything else runs a float kernel."""
    return w_format == "int8" and a_format == "int8"


def execution_class(key: LayerKey) -> str:
    """The group of layers a CPU runtime runs alike with nasq's lowering, for the latency
    predictor's correction: the op (``conv``, ``dwconv``, ``linear``: layouts and reorders differ),
    then ``int8`` for an integer kernel (measured alone with its input and output quantizers,
    which vanish inside a chain of integer kernels) or ``a_<format>`` for a float kernel behind
    that input format (none, a QuantizeLinear/DequantizeLinear pair, or rounding ops). Packed
    weights cost nothing at run time: their Cast + Mul is folded when the model loads."""
    kind = "int8" if integer_kernel(key.w_format, key.a_format) else f"a_{key.a_format}"
    return f"{key.op}.{kind}"


def execution_classes(space: SearchSpace) -> list[str]:
    """Every execution class a layer of ``space`` can fall in, in a fixed order."""
    return sorted({execution_class(k) for k in space_keys(space)})
