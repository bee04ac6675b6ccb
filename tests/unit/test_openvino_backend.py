"""The OpenVINO backend with real OpenVINO (CPU plugin): layer rows, the kernels that ran, a whole
model against torch, the profile it writes, no telemetry, and a clear error without openvino."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest
import yaml

from nasq.errors import MissingDependencyError, NasqError
from nasq.hardware.keys import LayerKey

ov = pytest.importorskip("openvino")

from nasq.profiling.backend import get_backend  # noqa: E402 - after the skip, as it needs no openvino itself
from nasq.testing.backends import TOY_SPACE, toy_export  # noqa: E402

FP32_3X3 = LayerKey("conv", 16, 32, 3, 1, 14, "relu6", "fp32", "fp32")
INT8_3X3 = LayerKey("conv", 16, 32, 3, 1, 14, "relu6", "int8", "int8")
INT8_1X1 = LayerKey("conv", 16, 48, 1, 1, 14, "relu6", "int8", "int8")
INT8_DW = LayerKey("dwconv", 48, 48, 3, 1, 14, "relu6", "int8", "int8")
FP32_DW = LayerKey("dwconv", 48, 48, 3, 1, 14, "relu6", "fp32", "fp32")
INTEGER_CONV = re.compile(r"(Group)?Convolution\((u8|i8)\)")


@pytest.fixture
def no_telemetry(monkeypatch):
    """Any attempt to create or use OpenVINO's telemetry client fails the test."""
    import openvino_telemetry

    def refuse(*args, **kwargs):
        raise AssertionError("openvino telemetry was used")

    for method in ("init", "send_event", "send_error", "send_stack_trace", "start_session", "end_session",
                   "send_opt_in_event"):
        monkeypatch.setattr(openvino_telemetry.Telemetry, method, refuse)


def test_measures_fp32_and_int8_layers_and_shows_the_kernels_that_ran(no_telemetry):
    keys = [FP32_3X3, INT8_3X3, INT8_1X1, INT8_DW, FP32_DW]
    rows = get_backend("openvino", warmup=1, repeats=4, rounds=2).measure(keys)
    assert list(rows) == sorted(keys)
    for key, row in rows.items():
        assert row.supported, f"{key.token()}: {row.reason}"
        assert 0 < row.p10_us <= row.median_us <= row.p90_us and row.repeats == 4
        assert "Const" not in row.runtime_ops and "Input" not in row.runtime_ops  # plumbing left out
    # fp32 runs in f32, not the plugin's bf16 default; int8 dense convs run an integer kernel.
    assert "Convolution(f32)" in rows[FP32_3X3].runtime_ops
    for key in (INT8_3X3, INT8_1X1):
        assert INTEGER_CONV.search(rows[key].runtime_ops), rows[key].runtime_ops


def test_layers_nasq_cannot_export_are_unsupported_rows():
    key = LayerKey("linear", 8, 2, 1, 1, 1, "none", "int8", "int8")
    row = get_backend("openvino", repeats=2, warmup=0).measure([key])[key]
    assert row.status == "unsupported" and "fp32 only" in row.reason


def test_whole_model_check_matches_torch(tmp_path, no_telemetry):
    backend = get_backend("openvino")
    path, x, want = toy_export(tmp_path, seed=1, batch=8)
    result = backend.check(path, x, want)
    assert result["max_abs_diff"] < 1e-4 and result["top1_agreement"] == 1.0 and result["samples"] == 8
    handle = backend.load_model(path)
    np.testing.assert_allclose(backend.run_model(handle, x), want, atol=1e-4)
    one = backend.run_model(handle, x[:1])  # another batch size: compiled again for that shape
    np.testing.assert_allclose(one, want[:1], atol=1e-4)
    assert set(handle.compiled) == {(8, 1, 8, 8), (1, 1, 8, 8)}
    # int8 runs real integer kernels, so it is close to torch's fake quantization, not equal
    (tmp_path / "int8").mkdir()
    path8, x8, want8 = toy_export(tmp_path / "int8", ("int8", "int8"), seed=1, batch=8)
    int8 = backend.check(path8, x8, want8)
    assert int8["max_abs_diff"] < 0.25 * np.abs(want8).max()


def test_whole_model_errors_are_one_line(tmp_path):
    backend = get_backend("openvino")
    with pytest.raises(NasqError, match="nothing.onnx: file not found"):
        backend.load_model(tmp_path / "nothing.onnx")
    (tmp_path / "bad.onnx").write_bytes(b"not a model")
    with pytest.raises(NasqError, match=r"bad.onnx: OpenVINO could not read it") as err:
        backend.load_model(tmp_path / "bad.onnx")
    assert "\n" not in str(err.value)


def test_describe_records_versions_overhead_and_precision():
    about = get_backend("openvino", repeats=5, warmup=1).describe()
    assert about["versions"]["openvino"].startswith(ov.get_version()[:4]) and "onnx" in about["versions"]
    assert 0 < about["session_overhead_us"] < 10_000
    assert about["settings"]["INFERENCE_PRECISION_HINT"].startswith("f32 (CPU plugin default here: ")


def test_unknown_backend_name_suggests_openvino():
    with pytest.raises(NasqError, match=r"unknown latency backend 'openvno' \(known: onnxruntime, openvino, "
                                         r"torch-cuda\); did you mean 'openvino'"):
        get_backend("openvno")


def test_missing_openvino_names_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino now raises ImportError
    with pytest.raises(MissingDependencyError, match="pip install openvino"):
        get_backend("openvino").check_available()


def test_import_nasq_and_the_registry_do_not_import_openvino():
    code = ("import sys, nasq, nasq.profiling.backend as b; b.get_backend('openvino'); "
            "sys.exit('openvino' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_profile_measure_with_openvino_fits_the_correction(tmp_path, no_telemetry):
    from nasq.hardware import HardwareProfile
    from nasq.hardware.table import LatencyTable, load_measurement_info
    from nasq.predict.latency import load_profile_predictor
    from nasq.profiling.measure import profile_measure
    from nasq.space import SearchSpace

    space_path = tmp_path / "toy.yaml"
    space_path.write_text(yaml.safe_dump(TOY_SPACE))
    out = tmp_path / "toy_ov"
    profile_path = profile_measure(str(space_path), "openvino", out, repeats=3, warmup=1, fit_subnets=6)
    profile = HardwareProfile.from_yaml(profile_path)
    doc = yaml.safe_load(profile_path.read_text())
    assert (doc["backend"], doc["threads"], doc["batch_sizes"]) == ("openvino", 1, [1])
    assert (doc["native_formats"], doc["emulated_formats"]) == (["fp32", "int8"], [])
    assert "openvino" in profile.config.measured_on and "INFERENCE_PRECISION_HINT f32" in profile.config.description
    assert "Integer kernels seen in runtime_ops: Convolution(u8)" in profile.config.description
    space = SearchSpace.from_yaml(space_path)
    assert LatencyTable.load(out / "latency.csv").missing(space) == []
    info = load_measurement_info(out / "measurement.json")
    assert info.backend == "openvino" and info.int8_weights == "int8"  # forced: OpenVINO runs uint8+zp in f32
    predictor = load_profile_predictor(profile_path, space)
    assert predictor is not None and predictor.n_fit == 6
    assert np.all(predictor.predict(space.sample(np.random.default_rng(0), 3)) > 0)
