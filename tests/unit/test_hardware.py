from __future__ import annotations

import dataclasses

import pytest

from nasq.errors import ConfigError
from nasq.hardware import CostModel, HardwareProfile
from nasq.space import SubnetSpec


def _with_formats(spec, w, a):
    return SubnetSpec(tuple(tuple(dataclasses.replace(layer, w_format=w, a_format=a) for layer in st) for st in spec.stages))


def test_size_falls_with_bits(space, profile):
    cm = CostModel(space, profile)
    big = space.largest()
    sizes = [cm.score([_with_formats(big, f, f)])["size_mb"][0] for f in ("fp32", "int8", "int4")]
    assert sizes[0] > sizes[1] > sizes[2] > 0
    bops = [cm.score([_with_formats(big, f, f)])["bops_g"][0] for f in ("fp32", "int8", "int4")]
    assert bops[0] > bops[1] > bops[2]


def test_latency_prefers_int8_dense_but_not_depthwise(space, profile):
    cm = CostModel(space, profile)
    dense = [layer for layer in space.layer_shapes(space.largest()) if layer.op == "conv" and layer.name != "stem"][0]
    dw = [layer for layer in space.layer_shapes(space.largest()) if layer.op == "dwconv"][0]
    f32 = dataclasses.replace(dense, w_format="fp32", a_format="fp32")
    i8 = dataclasses.replace(dense, w_format="int8", a_format="int8")
    assert cm.layer_latency_us(i8, "int8") < cm.layer_latency_us(f32, "fp32")
    dw32 = dataclasses.replace(dw, w_format="fp32", a_format="fp32")
    dw8 = dataclasses.replace(dw, w_format="int8", a_format="int8")
    assert cm.layer_latency_us(dw8, "int8") > cm.layer_latency_us(dw32, "fp32")


def test_profile_missing_format_is_an_error(space, profile):
    data = profile.config.model_dump()
    data["peak_gops"] = {"fp32": 1.0, "int8": 2.0}
    data.pop("depthwise_peak_gops")
    small = HardwareProfile.from_dict(data, "hw.yaml")
    with pytest.raises(ConfigError, match=r"hw.yaml: peak_gops: formats \['fp8_e4m3', 'int4'\]"):
        CostModel(space, small)


def test_profile_unknown_format(profile):
    data = profile.config.model_dump()
    data["peak_gops"] = {"fp33": 1.0}
    with pytest.raises(ConfigError, match="unknown format 'fp33'"):
        HardwareProfile.from_dict(data, "hw.yaml")
