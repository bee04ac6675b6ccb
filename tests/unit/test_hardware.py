from __future__ import annotations

import dataclasses

import numpy as np
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


# ---------------------------------------------------------------- runtime backend and honest formats
def test_known_backends_are_the_registered_ones():
    # nasq.hardware may not import nasq.profiling (layers), so it keeps the names as data: they must agree
    from nasq.hardware.profile import ANALYTIC_BACKEND, KNOWN_BACKENDS
    from nasq.profiling.backend import BACKENDS

    assert sorted(KNOWN_BACKENDS) == BACKENDS.names()
    assert ANALYTIC_BACKEND not in BACKENDS


def test_shipped_profiles_name_their_runtime(repo):
    ort = HardwareProfile.from_yaml(repo / "hardware_profiles" / "cpu_ort_epyc" / "profile.yaml")
    cfg = ort.config
    # measured tables are batch-1 (nasq profile measure writes the batch it timed)
    assert (cfg.backend, cfg.threads, cfg.batch_sizes, ort.max_batch) == ("onnxruntime", 1, (1,), 1)
    assert ort.native == {"fp32", "int8"} and ort.emulated == {"int4", "fp8_e4m3"}
    ov = HardwareProfile.from_yaml(repo / "hardware_profiles" / "cpu_ov_epyc" / "profile.yaml")
    assert (ov.config.backend, ov.config.status, ov.native, ov.emulated) == ("openvino", "measured", {"fp32", "int8"},
                                                                             {"int4", "fp8_e4m3"})
    roof = HardwareProfile.from_yaml(repo / "hardware_profiles" / "cpu_roofline" / "profile.yaml")
    assert roof.config.backend == "roofline" and roof.native == roof.supported and not roof.emulated


def test_profile_without_runtime_fields_keeps_loading(profile):
    data = profile.config.model_dump(exclude={"backend", "threads", "batch_sizes", "native_formats",
                                              "emulated_formats"})
    old = HardwareProfile.from_dict(data, "old.yaml")
    assert old.config.backend == "roofline" and old.config.batch_sizes == (1,)
    assert old.native == old.supported and not old.emulated  # no lists: every rated format is native


def test_formats_listed_in_neither_count_as_emulated(space, profile):
    data = {**profile.config.model_dump(), "native_formats": ["fp32", "int8"], "emulated_formats": ["int4"]}
    hw = HardwareProfile.from_dict(data, "hw.yaml")
    assert "int4" in hw.emulated and "fp8_e4m3" in hw.emulated and "fp32" not in hw.emulated
    assert hw.emulated_in(space) == ["fp8_e4m3", "int4"]


@pytest.mark.parametrize("over, match", [
    ({"backend": "tensorrt"}, r"hw.yaml: backend: unknown backend 'tensorrt' \(known: onnxruntime, openvino"),
    ({"native_formats": ["fp33"]}, r"hw.yaml: native_formats\[0\]: unknown format 'fp33'"),
    ({"peak_gops": {"fp32": 1.0}, "depthwise_peak_gops": {}, "emulated_formats": ["int8"]},
     r"hw.yaml: emulated_formats\[0\]: format 'int8' has no rate in peak_gops"),
    ({"native_formats": ["int8"], "emulated_formats": ["int8"]}, r"hw.yaml: emulated_formats: format 'int8' is also"),
])
def test_bad_backend_or_format_lists_are_one_line(profile, over, match):
    with pytest.raises(ConfigError, match=match):
        HardwareProfile.from_dict({**profile.config.model_dump(), **over}, "hw.yaml")


def test_throughput_is_the_batch_one_prediction(space, profile):
    from nasq.hardware import TargetsCostModel

    cm = TargetsCostModel([CostModel(space, profile)])
    values = cm.score([space.smallest(), space.largest()])
    np.testing.assert_allclose(values["throughput_ips"], 1000.0 / values["latency_ms"])
    np.testing.assert_array_equal(values[f"latency_ms@{profile.name}"], values["latency_ms"])
