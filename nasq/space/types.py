"""The value types of a search space: a layer's choices, a subnet, a gene, a layer's shape.

Kept apart from :mod:`nasq.space` so that the block-kind metadata (:mod:`nasq.space.kinds`) and
the space can both use them without importing each other.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from nasq.files import sha256_bytes

FORMAT_FIELDS = ("w_format", "a_format")
ARCH_FIELDS = ("kernel", "expand", "heads", "mlp_ratio")  # every per-layer architecture gene, in key order
_TOKENS = {"kernel": "k", "expand": "e", "heads": "h", "mlp_ratio": "m"}
STEM_FORMAT = "fp32"  # stem and classifier stay fp32: first/last layers are the most sensitive


def _order(name: str) -> tuple[int, str]:
    return (ARCH_FIELDS.index(name) if name in ARCH_FIELDS else len(ARCH_FIELDS), name)


@dataclass(frozen=True)
class LayerChoice:
    """One layer's architecture genes (``arch``: (name, value) pairs in a fixed order, e.g.
    kernel and expand for mbconv, heads and mlp_ratio for vit) and its weight/activation formats.
    Architecture genes read as attributes: ``choice.kernel``."""

    w_format: str
    a_format: str
    arch: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def of(cls, w_format: str, a_format: str, **arch: Any) -> LayerChoice:
        return cls(w_format, a_format, tuple(sorted(arch.items(), key=lambda kv: _order(kv[0]))))

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name == "arch":
            raise AttributeError(name)
        for key, value in object.__getattribute__(self, "arch"):
            if key == name:
                return value
        raise AttributeError(f"layer choice has no gene '{name}' (genes: {[k for k, _ in self.arch]})")

    def token(self) -> str:
        genes = "".join(f"{_TOKENS.get(k, k)}{v:g}" if isinstance(v, float) else f"{_TOKENS.get(k, k)}{v}"
                        for k, v in self.arch)
        return f"{genes}.{self.w_format}.{self.a_format}"

    def to_dict(self) -> dict[str, Any]:
        return {**dict(self.arch), "w_format": self.w_format, "a_format": self.a_format}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LayerChoice:
        arch = {k: v for k, v in data.items() if k not in FORMAT_FIELDS}
        return cls.of(data["w_format"], data["a_format"], **arch)


@dataclass(frozen=True)
class SubnetSpec:
    """A concrete subnet: active layers per stage, and where the space makes them elastic, the
    width of each stage and the input resolution (empty / 0 otherwise). Frozen and hashable;
    ``key()`` is canonical."""

    stages: tuple[tuple[LayerChoice, ...], ...]
    widths: tuple[int, ...] = ()
    resolution: int = 0

    @property
    def depths(self) -> tuple[int, ...]:
        return tuple(len(s) for s in self.stages)

    def key(self) -> str:
        body = []
        for i, stage in enumerate(self.stages):
            text = "+".join(layer.token() for layer in stage)
            body.append(f"w{self.widths[i]}:{text}" if self.widths else text)
        return (f"r{self.resolution}/" if self.resolution else "") + "-".join(body)

    def short_key(self) -> str:
        return sha256_bytes(self.key().encode())[:12]

    def layers(self) -> list[LayerChoice]:
        return [layer for stage in self.stages for layer in stage]

    def formats_used(self) -> set[tuple[str, str]]:
        return {(layer.w_format, layer.a_format) for layer in self.layers()}

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"stages": [[layer.to_dict() for layer in stage] for stage in self.stages]}
        if self.widths:
            out["widths"] = list(self.widths)
        if self.resolution:
            out["resolution"] = self.resolution
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SubnetSpec:
        stages = tuple(tuple(LayerChoice.from_dict(layer) for layer in stage) for stage in data["stages"])
        return cls(stages, tuple(data.get("widths", ())), int(data.get("resolution", 0)))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


@dataclass(frozen=True)
class Gene:
    name: str
    choices: tuple[Any, ...]
    stage: int  # -1 for network-wide genes (resolution)
    slot: int | None  # None for stage-level genes (depth, width) and network-wide ones
    field: str


@dataclass(frozen=True)
class LayerShape:
    """One weight layer (or attention matmul) of a subnet, as the cost model sees it.

    ``tokens`` > 0 marks a layer applied at every position of a token sequence (transformer
    linears and the attention matmul); conv layers use the spatial size ``hin`` / ``hout``."""

    name: str
    op: str  # conv | dwconv | linear | matmul
    cin: int
    cout: int
    kernel: int
    stride: int
    hin: int
    hout: int
    w_format: str
    a_format: str
    tokens: int = 0

    @property
    def groups(self) -> int:
        return self.cin if self.op == "dwconv" else 1

    @property
    def params(self) -> int:
        if self.op == "matmul":
            return 0
        return self.cout * (self.cin // self.groups) * self.kernel * self.kernel

    @property
    def has_bias(self) -> bool:
        return self.op != "matmul"

    @property
    def positions_in(self) -> int:
        return self.tokens or self.hin * self.hin

    @property
    def positions_out(self) -> int:
        return self.tokens or self.hout * self.hout

    @property
    def macs(self) -> int:
        if self.op == "matmul":  # scores = Q K^T and context = A V, each tokens x tokens x cin
            return 2 * self.cin * self.cout * self.tokens
        return self.params * self.positions_out

    @property
    def in_elements(self) -> int:
        return self.cin * self.positions_in

    @property
    def out_elements(self) -> int:
        return self.cout * self.positions_out
