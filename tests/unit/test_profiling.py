"""Latency tables, layer keys, the latency predictor and the measuring backends."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import yaml

from nasq.errors import ConfigError, LineageError, NasqError, NotFittedError
from nasq.files import sha256_file
from nasq.hardware import HardwareProfile
from nasq.hardware.keys import (
    LayerKey,
    execution_class,
    execution_classes,
    integer_kernel,
    residual_adds,
    space_keys,
    subnet_keys,
    transitions,
)
from nasq.hardware.table import COLUMNS, LatencyTable, Row, load_measurement_info
from nasq.predict.latency import LatencyPredictor, load_profile_predictor
from nasq.profiling.torch_cuda_backend import kernel_family, plan_kernel
from nasq.space import SearchSpace

KEY = LayerKey("conv", 16, 48, 1, 1, 14, "relu6", "int8", "int8")


def _synthetic_rows(space: SearchSpace) -> dict[LayerKey, Row]:
    """A deterministic table: 2 us + 1 us per 10k MACs, doubled for quantized inputs."""
    rows = {}
    for key in space_keys(space):
        us = (2.0 + key.shape().macs / 1e4) * (1.0 if key.a_format == "fp32" else 2.0)
        rows[key] = Row("supported", us, us * 0.9, us * 1.2, 30, "", "Conv")
    return rows


@pytest.fixture(scope="module")
def table(space) -> LatencyTable:
    return LatencyTable(_synthetic_rows(space), "synthetic/latency.csv")


def _csv_with(tmp_path, edit) -> str:
    text = LatencyTable({KEY: Row("supported", 10.0, 9.0, 12.0, 30, "", "Conv")}).to_csv()
    lines = text.splitlines()
    path = tmp_path / "latency.csv"
    path.write_text("\n".join(edit(lines)) + "\n")
    return str(path)


def _set_cell(column: str, value: str):
    def edit(lines):
        cells = lines[1].split(",")
        cells[COLUMNS.index(column)] = value
        return [lines[0], ",".join(cells)]

    return edit


# ---------------------------------------------------------------- table
def test_table_csv_round_trip(tmp_path, table):
    rows = dict(list(table.rows.items())[:5])
    rows[KEY] = Row.unsupported("no kernel,\nfor this")  # commas and newlines survive (one line)
    small = LatencyTable(rows)
    path = small.save(tmp_path / "latency.csv")
    back = LatencyTable.load(path)
    assert back.rows == {k: dataclasses.replace(r, median_us=round(r.median_us, 3), p10_us=round(r.p10_us, 3),
                                                p90_us=round(r.p90_us, 3)) if r.supported else r
                         for k, r in small.rows.items()}
    assert back.hash == sha256_file(path) == small.hash
    assert back.rows[KEY].reason == "no kernel, for this" and math.isinf(back.latency_us(KEY))
    assert path.read_text().splitlines()[0] == ",".join(COLUMNS)


@pytest.mark.parametrize(("edit", "message"), [
    (lambda ls: [ls[0].replace("latency_us_median", "latency_ms")] + ls[1:],
     r"header column 10: unknown column 'latency_ms'"),
    (lambda ls: [",".join(ls[0].split(",")[:-1])] + ls[1:], r"header: missing column\(s\) runtime_ops"),
    (_set_cell("latency_us_median", "abc"), r"row 1 \(line 2\), column latency_us_median: not a number, got 'abc'"),
    (_set_cell("latency_us_p90", "-1"), r"row 1 \(line 2\), column latency_us_p90: must be a finite number > 0"),
    (_set_cell("latency_us_p10", "11"), r"column latency_us_median: must lie between"),
    (_set_cell("cin", "16.5"), r"row 1 \(line 2\), column cin: not an integer, got '16.5'"),
    (_set_cell("w_format", "int9"), r"column w_format: unknown format 'int9'.*did you mean 'int8'"),
    (_set_cell("op", "pool"), r"column op: must be one of conv, dwconv, linear, matmul, got 'pool'"),
    (_set_cell("status", "unsupported"), r"column reason: an unsupported row must say why"),
    (_set_cell("status", "maybe"), r"column status: must be one of supported, unsupported"),
    (lambda ls: ls + [ls[1]], r"row 2 \(line 3\): duplicate key conv 16->48"),
    (lambda ls: ls + [ls[1] + ",extra"], r"row 2 \(line 3\): expected 16 columns, got 17"),
    (lambda ls: ls[:1], r"no rows"),
])
def test_table_validation_errors_are_one_line_naming_file_row_and_column(tmp_path, edit, message):
    path = _csv_with(tmp_path, edit)
    with pytest.raises(ConfigError, match=message) as err:
        LatencyTable.load(path)
    assert str(err.value).startswith(f"{path}: ") and "\n" not in str(err.value)


def test_missing_table_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="latency.csv: file not found"):
        LatencyTable.load(tmp_path / "latency.csv")


def test_profile_lacking_rows_for_the_space_is_an_error_listing_them(space, table):
    rows = dict(table.rows)
    gone = [k for k in rows if k.op == "dwconv" and k.kernel == 5 and k.w_format == "int4"]
    for k in gone:
        del rows[k]
    partial = LatencyTable(rows, "hardware_profiles/x/latency.csv")
    assert partial.missing(space) == sorted(gone)
    with pytest.raises(ConfigError) as err:
        LatencyPredictor(space, partial)
    text = str(err.value)
    assert text.startswith("hardware_profiles/x/latency.csv: ")
    assert f"lacks {len(gone)} of the {len(space_keys(space))} layer rows space 'mbconv_small' needs" in text
    assert gone[0].token() in text and f"(and {len(gone) - 5} more)" in text and "\n" not in text


# ---------------------------------------------------------------- keys
def test_layer_keys_cover_every_layer_of_random_specs(space):
    everything = set(space_keys(space))
    assert len(everything) == len(space_keys(space)) == 578
    seen: set[LayerKey] = set()
    for spec in [space.largest(), space.smallest(), *space.sample(np.random.default_rng(0), 300)]:
        keys = subnet_keys(space, spec)
        assert set(keys) <= everything
        assert len(keys) == len(space.layer_shapes(spec))
        seen.update(keys)
    assert len(seen) > 0.8 * len(everything)  # the enumeration is not padded with unreachable keys


def test_space_keys_are_enumerated_once_per_space(space, monkeypatch):
    """Loading an experiment asks for a space's keys several times; the walk (seconds for
    mbconv_fmnist) runs once per space object, and a caller changing its list changes no other's."""
    import nasq.hardware.keys as keys_mod

    walks = []
    real = keys_mod._enumerate_keys
    monkeypatch.setattr(keys_mod, "_enumerate_keys", lambda s: walks.append(s) or real(s))
    fresh = SearchSpace(space.config, space.source, space.hash)
    first = space_keys(fresh)
    first.clear()
    assert space_keys(fresh) == sorted(set(space_keys(fresh))) and len(space_keys(fresh)) == 578
    assert walks == [fresh]
    space_keys(SearchSpace(space.config, space.source, space.hash))  # another space object: walked again
    assert len(walks) == 2


def test_key_fields_activation_transitions_and_residuals(space):
    spec = space.largest()
    keys = subnet_keys(space, spec)
    assert keys[0] == LayerKey("conv", 1, 16, 3, 2, 28, "relu6", "fp32", "fp32")
    assert keys[-1].op == "linear" and keys[-1].act == "none"
    assert [k.act for k in keys[1:4]] == ["relu6", "relu6", "none"]  # expand, dw, project
    assert transitions(keys) == 0  # largest() is all fp32
    mixed = [dataclasses.replace(k, a_format=f) for k, f in zip(keys, ["fp32", "int8", "int8", "fp32"], strict=False)]
    assert transitions(mixed) == 2
    assert residual_adds(space, spec) == 6  # stride-1 blocks with equal widths (the ONNX graph has 6 Adds)
    assert residual_adds(space, space.smallest()) == 1  # stage 0: 16 -> 16, stride 1


def test_execution_class_rule(space):
    """Integer kernels (int8 x int8) form one class per op; every other layer is a float kernel
    classed by its input's format (its quantizer ops); packed weights cost nothing at run time."""
    assert integer_kernel("int8", "int8") and not integer_kernel("int8", "fp32") and not integer_kernel("int4", "int8")
    keys = space_keys(space)
    by_formats = {(k.op, k.w_format, k.a_format): execution_class(k) for k in keys}
    assert by_formats[("conv", "int8", "int8")] == "conv.int8"
    assert by_formats[("dwconv", "int4", "fp8_e4m3")] == "dwconv.a_fp8_e4m3"
    assert by_formats[("conv", "int8", "fp32")] == by_formats[("conv", "fp32", "fp32")] == "conv.a_fp32"
    assert execution_classes(space) == sorted(set(by_formats.values()))


# ---------------------------------------------------------------- predictor
def _truth(predictor: LatencyPredictor, specs) -> np.ndarray:
    """A known per-class affine law: each class rescales its table time and adds a per-layer cost
    (and any further count features, e.g. format transitions, a small cost each)."""
    n, extra = len(predictor.classes), len(predictor.features_names) - 2 * len(predictor.classes)
    coef = np.concatenate([0.6 + 0.1 * np.arange(n), -0.002 + 0.001 * np.arange(n), 0.001 + 0.0005 * np.arange(extra)])
    return 0.02 + predictor.features(specs) @ coef


def test_predictor_fit_predict_save_load_round_trip(space, table, tmp_path):
    predictor = LatencyPredictor(space, table, ridge=1e-9)
    assert predictor.classes == execution_classes(space)
    assert {c.split(".")[0] for c in predictor.classes} == {"conv", "dwconv", "linear"}
    rng = np.random.default_rng(0)
    train, test = space.sample(rng, 60), space.sample(rng, 20)
    with pytest.raises(NotFittedError):
        predictor.predict(test)
    assert predictor.fit(train, _truth(predictor, train)) is predictor
    np.testing.assert_allclose(predictor.predict(test), _truth(predictor, test), rtol=1e-4)
    assert predictor.fit_rmse_ms < 1e-5
    path = predictor.save(tmp_path / "latency_model.json")
    assert "pickle" not in path.read_text() and path.read_text().startswith("{")
    back = LatencyPredictor.load(path, space, table)
    np.testing.assert_array_equal(back.predict(test), predictor.predict(test))
    other = LatencyTable({**table.rows, KEY: Row.unsupported("x")}, "other.csv")
    with pytest.raises(LineageError, match="fitted for another table"):
        LatencyPredictor.load(path, space, other)
    # Same data, same fit: nothing random.
    again = LatencyPredictor(space, table, ridge=1e-9).fit(train, _truth(predictor, train))
    np.testing.assert_array_equal(again.predict(test), predictor.predict(test))


def test_default_ridge_stays_close_and_handles_unseen_classes(space, table):
    predictor = LatencyPredictor(space, table)
    fp32_only = [s for s in space.sample(np.random.default_rng(1), 400)
                 if all(c.w_format != "int8" and c.a_format == "fp32" for c in s.layers())]
    mixed = space.sample(np.random.default_rng(2), 80)
    predictor.fit(mixed, _truth(predictor, mixed))
    rel = np.abs(predictor.predict(mixed) / _truth(predictor, mixed) - 1)
    assert rel.max() < 0.02
    # fitted on fp32 subnets only: the other classes' coefficients stay finite (ridge), no error
    narrow = LatencyPredictor(space, table).fit(fp32_only + [space.largest()] * 2, _truth(predictor, fp32_only + [space.largest()] * 2))
    assert np.isfinite(narrow.predict(mixed)).all()


def test_broken_latency_model_files_are_one_line_errors(space, table, tmp_path):
    path = tmp_path / "latency_model.json"
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="latency_model.json: not valid JSON"):
        LatencyPredictor.load(path, space, table)
    path.write_text('{"kind": "gbdt"}')
    with pytest.raises(ConfigError, match="latency_model.json: kind: expected 'table_per_class_affine', got 'gbdt'"):
        LatencyPredictor.load(path, space, table)


def test_predictor_table_sum_and_unsupported_rows(space, table):
    spec = space.largest()
    predictor = LatencyPredictor(space, table)
    keys = subnet_keys(space, spec)
    assert predictor.table_sum_ms([spec])[0] == pytest.approx(sum(table.latency_us(k) for k in keys) / 1e3)
    broken = LatencyTable({**table.rows, keys[2]: Row.unsupported("no kernel")})
    other = LatencyPredictor(space, broken)
    other.coef, other.intercept = np.ones(len(other.features_names)), 0.0
    assert np.isinf(other.predict([spec])[0]) and np.isfinite(other.predict([space.smallest()])[0])
    with pytest.raises(ValueError, match="supported subnets"):
        LatencyPredictor(space, broken).fit([spec] * 8, np.ones(8))


# ---------------------------------------------------------------- backend contract
def _fake_backend(**kwargs):
    """A backend registered nowhere: times nothing, records what the base class asks of it."""
    from nasq.profiling.backend import LatencyBackend, Prepared

    class Fake(LatencyBackend):
        name = "fake"

        def __init__(self, **kw):
            super().__init__(**kw)
            self.calls: list[tuple[str, int, int]] = []

        def check_available(self) -> None:
            pass

        def _prepare(self, key):
            return Row.unsupported("no\nkernel") if key.op == "linear" else Prepared(key.token(), "Op", "note")

        def _time_us(self, handle, warmup, repeats):
            self.calls.append((handle, warmup, repeats))
            return np.full(repeats, float(len(self.calls)))

        def load_model(self, onnx_path):
            return str(onnx_path)

        def run_model(self, handle, x):
            return np.zeros((len(x), 2), dtype=np.float32)

        def time_model_ms(self, handle, x, warmup, repeats):
            return np.ones(repeats)

    return Fake(**kwargs)


def test_correction_specs_mix_random_and_uniform_subnets(space):
    from nasq.profiling.measure import correction_specs

    specs = correction_specs(space, 50, seed=3)
    assert len(specs) == 50 and specs == correction_specs(space, 50, seed=3)
    uniform = [s for s in specs if len(s.formats_used()) == 1 and len(set(next(iter(s.formats_used())))) == 1]
    assert {s.layers()[0].w_format for s in uniform} == {"fp32", "fp8_e4m3", "int4", "int8"}
    assert len(uniform) >= 10 and len({s.key() for s in specs[:40]}) == 40


def test_backend_measure_interleaves_rounds_and_records_unsupported():
    from nasq.profiling.backend import round_sizes

    assert round_sizes(30, 3) == [10, 10, 10] and round_sizes(10, 3) == [4, 3, 3] and round_sizes(2, 5) == [1, 1]
    backend = _fake_backend(warmup=2, repeats=7, rounds=3)
    a, b = KEY, dataclasses.replace(KEY, cin=8)
    linear = LayerKey("linear", 8, 2, 1, 1, 1, "none", "fp32", "fp32")
    rows = backend.measure([a, b, a, linear])
    assert list(rows) == sorted({a, b, linear})
    # every round visits every prepared layer before the next round starts
    assert [(h, r) for h, _, r in backend.calls] == [(b.token(), 3), (a.token(), 3), (b.token(), 2), (a.token(), 2),
                                                    (b.token(), 2), (a.token(), 2)]
    assert all(w == 2 for _, w, _ in backend.calls)
    assert rows[a].repeats == 7 and rows[a].runtime_ops == "Op" and rows[a].reason == "note"
    assert rows[linear].status == "unsupported" and rows[linear].reason == "no kernel"


# ---------------------------------------------------------------- torch-cuda backend (pure logic)
def test_gpu_kernel_plans():
    assert [kernel_family(f) for f in ("fp32", "bf16", "int8", "int4", "fp8_e4m3")] == ["bf16", "bf16", "int8", "int8", "fp8"]
    dw = plan_kernel(LayerKey("dwconv", 96, 96, 3, 1, 14, "relu6", "int8", "int8"))
    assert dw.kernel == "bf16_conv" and "depthwise" in dw.reason
    i8 = plan_kernel(LayerKey("conv", 24, 144, 1, 1, 4, "relu6", "int8", "int8"))
    assert (i8.kernel, i8.m, i8.k, i8.n, i8.padded) == ("int8_int_mm", 24, 24, 144, True)  # m = 16 is too small
    i4 = plan_kernel(LayerKey("conv", 16, 48, 1, 1, 14, "relu6", "int4", "int8"))
    assert (i4.kernel, i4.m, i4.padded) == ("int8_int_mm", 200, True) and "int4" in i4.reason
    f8 = plan_kernel(LayerKey("conv", 24, 144, 1, 1, 7, "none", "fp8_e4m3", "fp8_e4m3"))
    assert (f8.kernel, f8.m, f8.k, f8.n) == ("fp8_scaled_mm", 64, 32, 144)
    assert plan_kernel(LayerKey("conv", 16, 48, 1, 1, 14, "relu6", "int8", "fp8_e4m3")).kernel == "bf16_conv"
    dense = plan_kernel(LayerKey("conv", 16, 16, 3, 1, 14, "relu6", "int8", "int8"))
    assert not dense.supported and "no int8 3x3 convolution" in dense.reason


def test_torch_cuda_backend_without_cuda_is_a_clear_error():
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    from nasq.profiling.backend import get_backend

    with pytest.raises(NasqError, match=r"CUDA is not available .*use --backend onnxruntime"):
        get_backend("torch-cuda").measure([KEY])


@pytest.mark.gpu
def test_torch_cuda_backend_measures_on_a_gpu():
    from nasq.profiling.backend import get_backend

    keys = [KEY, dataclasses.replace(KEY, w_format="fp32", a_format="fp32"),
            dataclasses.replace(KEY, w_format="fp8_e4m3", a_format="fp8_e4m3"),
            LayerKey("dwconv", 48, 48, 3, 1, 14, "relu6", "int8", "int8")]
    rows = get_backend("torch-cuda", warmup=2, repeats=5).measure(keys)
    for key in keys:
        row = rows[key]
        assert row.supported or "compute capability" in row.reason
        if row.supported:
            assert 0 < row.p10_us <= row.median_us <= row.p90_us


# ---------------------------------------------------------------- onnxruntime backend (one tiny real run)
TINY_SPACE = {
    "name": "tiny", "input": {"channels": 1, "resolution": 8, "num_classes": 2},
    "stem": {"channels": 4, "kernel": 3, "stride": 2},
    "stages": [{"block": "mbconv", "width": 8, "stride": 1, "depth": [1], "kernel": [3, 5], "expand": [1]}],
    "precision": {"w_format": ["fp32", "int8"], "a_format": ["fp32", "int8"]},
}


def test_unknown_backend_suggests():
    from nasq.profiling.backend import get_backend

    with pytest.raises(NasqError, match="unknown latency backend 'onnxruntme'.*did you mean 'onnxruntime'"):
        get_backend("onnxruntme")


def test_onnxruntime_backend_times_one_small_layer():
    from nasq.profiling.backend import get_backend

    key = LayerKey("dwconv", 4, 4, 3, 1, 4, "relu6", "int8", "int8")
    row = get_backend("onnxruntime", warmup=1, repeats=5).measure([key])[key]
    assert row.supported and 0 < row.p10_us <= row.median_us <= row.p90_us and row.repeats == 5
    # What actually ran: an int8/int8 conv requantizes its output, so onnxruntime fuses it into an
    # integer kernel (QLinearConv) between the input QuantizeLinear and the output DequantizeLinear.
    assert "QuantizeLinear" in row.runtime_ops and "QLinearConv" in row.runtime_ops


@pytest.mark.slow
def test_profile_measure_writes_a_valid_measured_profile(tmp_path):
    from nasq.profiling.measure import profile_measure

    space_path = tmp_path / "tiny.yaml"
    space_path.write_text(yaml.safe_dump(TINY_SPACE))
    out = tmp_path / "tiny_cpu"
    profile_path = profile_measure(str(space_path), "onnxruntime", out, threads=1, repeats=3, warmup=1, fit_subnets=8)
    profile = HardwareProfile.from_yaml(profile_path)
    assert profile.config.status == "measured" and profile.name == "tiny_cpu"
    assert profile.supported == {"fp32", "int8"} and "onnxruntime" in profile.config.measured_on
    space = SearchSpace.from_yaml(space_path)
    table = LatencyTable.load(out / "latency.csv")
    assert table.missing(space) == [] and len(table) == 14  # stem, 8 dw, 4 project, classifier
    info = load_measurement_info(out / "measurement.json")
    assert info.spaces == ("tiny",) and info.rows == 14 and info.repeats == 3 and info.fit_subnets == 8
    from nasq.export.lower import int8_weight_type
    assert info.int8_weights == int8_weight_type("auto")  # what this host's lowering stored and timed
    predictor = load_profile_predictor(profile_path, space)
    assert predictor is not None and predictor.n_fit == 8
    assert np.all(predictor.predict(space.sample(np.random.default_rng(0), 4)) > 0)
    key = LayerKey("dwconv", 4, 4, 3, 1, 4, "relu6", "int8", "int8")
    row = table.rows[key]
    assert row.supported and 0 < row.p10_us <= row.median_us <= row.p90_us and row.repeats == 3
    assert "QuantizeLinear" in row.runtime_ops and "Conv" in row.runtime_ops


def test_modelled_profile_has_no_shipped_predictor(space, repo, tmp_path):
    assert load_profile_predictor(repo / "hardware_profiles" / "cpu_roofline" / "profile.yaml", space) is None
    LatencyTable(_synthetic_rows(space)).save(tmp_path / "latency.csv")
    with pytest.raises(ConfigError, match="latency_model.json: file not found"):
        load_profile_predictor(tmp_path / "profile.yaml", space)


def test_correction_needs_a_backend_that_runs_whole_models(space, tmp_path):
    from nasq.profiling.measure import measure_profile

    with pytest.raises(NasqError, match="which the torch-cuda backend cannot run; with --backend torch-cuda "
                                        "pass --fit-subnets 0"):
        measure_profile(space, "torch-cuda", tmp_path / "gpu", fit_subnets=10)
    assert not (tmp_path / "gpu").exists()  # refused before any layer is measured


def test_profile_records_the_runtime_and_its_formats():
    from nasq.profiling.backend import get_backend
    from nasq.profiling.measure import runtime_fields
    from nasq.specs import ProfileConfig

    fields = runtime_fields(get_backend("onnxruntime", threads=2), {"fp32", "int8", "int4", "int4_g32", "mxfp8"})
    want = {"backend": "onnxruntime", "threads": 2, "batch_sizes": [1], "native_formats": ["fp32", "int8"],
            "emulated_formats": ["int4", "int4_g32", "mxfp8"]}  # only formats the profile rates (peak_gops)
    assert fields == {k: v for k, v in want.items() if k in ProfileConfig.model_fields}


def test_whole_subnets_are_timed_through_the_backend_contract(space):
    """subnet_session / time_interleaved_ms / measure_subnet_ms go through load_model and
    time_model_ms, on onnxruntime by default (their callers' signatures unchanged)."""
    import torch

    from nasq.profiling.layer_models import static_subnet
    from nasq.profiling.measure import measure_subnet_ms, subnet_session, time_interleaved_ms
    from nasq.supernet.network import Supernet

    tiny = SearchSpace.from_dict(TINY_SPACE)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = static_subnet(Supernet(tiny), tiny.largest(), torch.Generator().manual_seed(0))
    pair = subnet_session(model, (1, 1, 8, 8), 1, 0)
    assert pair[0].get_inputs()[0].name == "images" and pair[1]["images"].shape == (1, 1, 8, 8)
    ms = time_interleaved_ms([pair, pair], warmup=1, repeats=4, rounds=2)
    assert ms.shape == (2,) and np.all(ms > 0)
    stats = measure_subnet_ms(model, (1, 1, 8, 8), repeats=5, warmup=1)
    assert 0 < stats["p10_ms"] <= stats["median_ms"] <= stats["p90_ms"]


def test_onnxruntime_backend_marks_layers_nasq_cannot_export_unsupported():
    from nasq.profiling.backend import get_backend

    key = LayerKey("linear", 8, 2, 1, 1, 1, "none", "int8", "int8")
    row = get_backend("onnxruntime", repeats=2, warmup=0).measure([key])[key]
    assert row.status == "unsupported" and "fp32 only" in row.reason
