"""``nasq profile check`` / ``calibrate``, the drift note, and the latency predictor's transition features."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from nasq.errors import NasqError
from nasq.files import atomic_write_json
from nasq.hardware import HardwareProfile
from nasq.hardware.keys import space_keys, subnet_keys, transitions
from nasq.hardware.table import LatencyTable, Row
from nasq.predict.latency import LatencyPredictor, load_profile_predictor, transition_formats
from nasq.profiling import check
from nasq.space import SearchSpace, SubnetSpec

REPO = Path(__file__).resolve().parents[2]
TINY_SPACE = {
    "name": "tiny", "input": {"channels": 1, "resolution": 8, "num_classes": 2},
    "stem": {"channels": 4, "kernel": 3, "stride": 2},
    "stages": [{"block": "mbconv", "width": 8, "stride": 1, "depth": [1], "kernel": [3, 5], "expand": [1]}],
    "precision": {"w_format": ["fp32", "int8"], "a_format": ["fp32", "int8"]},
}
MEASURED_CPU = "Vendor Model 9000 (CPU, 1 thread)"


def _synthetic_rows(space: SearchSpace) -> dict:
    """2 us + 1 us per 10k MACs, doubled for quantized inputs (as tests/unit/test_profiling.py)."""
    rows = {}
    for key in space_keys(space):
        us = (2.0 + key.shape().macs / 1e4) * (1.0 if key.a_format == "fp32" else 2.0)
        rows[key] = Row("supported", us, us * 0.9, us * 1.2, 30, "", "Conv")
    return rows


def _truth(predictor: LatencyPredictor, specs, per_transition: float = 0.0) -> np.ndarray:
    """A known law: table sum x 1.1 + 0.003 ms per layer, plus a fixed cost per transition."""
    keys = [subnet_keys(predictor.space, s) for s in specs]
    return np.array([1.1 * predictor.table_sum_ms([s])[0] + 0.003 * len(k) + per_transition * transitions(k)
                     for s, k in zip(specs, keys, strict=True)])


@pytest.fixture(scope="module")
def catalog(tmp_path_factory) -> Path:
    """A catalog root with the tiny space and a measured profile for it (``tiny_cpu``): a synthetic
    table and a correction fitted on a synthetic law, so building it times nothing."""
    root = tmp_path_factory.mktemp("catalog")
    (root / "search_spaces").mkdir()
    (root / "search_spaces" / "tiny.yaml").write_text(yaml.safe_dump(TINY_SPACE))
    space = SearchSpace.from_yaml(root / "search_spaces" / "tiny.yaml")
    folder = root / "hardware_profiles" / "tiny_cpu"
    folder.mkdir(parents=True)
    table = LatencyTable(_synthetic_rows(space), str(folder / "latency.csv"))
    table.save(folder / "latency.csv")
    table = LatencyTable.load(folder / "latency.csv")
    specs = space.sample(np.random.default_rng(0), 12) + [space.smallest(), space.largest()]
    model = LatencyPredictor(space, table)
    model.fit(specs, _truth(model, specs)).save(folder / "latency_model.json")
    (folder / "profile.yaml").write_text(yaml.safe_dump({
        "name": "tiny_cpu", "version": 1, "kind": "roofline", "status": "measured", "description": "synthetic",
        "peak_gops": {"fp32": 50.0, "int8": 40.0}, "memory_gbs": 10.0, "measured_on": "test"}))
    atomic_write_json(folder / "measurement.json", {
        "backend": "onnxruntime", "spaces": ["tiny"], "device": MEASURED_CPU, "measured_on": "test",
        "versions": {}, "threads": 1, "warmup": 1, "repeats": 3, "rounds": 1, "rows": len(table),
        "unsupported_rows": 0, "wall_s": 1.0})
    return root


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("NASQ_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _fake_host(monkeypatch, cpu: str, node: str = "testhost") -> check.Host:
    host = check.Host(node, cpu)
    monkeypatch.setattr(check, "host_identity", lambda: host)
    return host


# ---------------------------------------------------------------- check
def test_reference_specs_are_deterministic_and_cover_the_range(catalog, space):
    specs = check.reference_specs(space, 8, seed=0)
    assert specs == check.reference_specs(space, 8, seed=0) and len({s.key() for s in specs}) == 8
    assert specs[:2] == [space.smallest(), space.largest()]
    assert all(len(s.formats_used()) > 1 for s in specs[2:])  # mixed precision, as a front holds
    assert specs[2:] != check.reference_specs(space, 8, seed=1)[2:]
    assert len(check.reference_specs(space, 3)) == 3


@pytest.mark.parametrize(("factor", "tau", "expected"), [
    (1.0, 0.95, "holds"), (0.92, 0.8, "holds"), (1.57, 0.97, "scaled"), (0.7, 1.0, "scaled"),
    (1.0, 0.5, "drifted"), (1.6, 0.3, "drifted"), (1.5, None, "scaled")])
def test_verdict(factor, tau, expected):
    assert check.verdict(factor, tau) == expected


def test_score_speed_factor_and_shares():
    predicted = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    got = check.score(predicted, predicted * 1.5)
    assert got["factor"] == 1.5 and got["tau"] == 1.0 and got["verdict"] == "scaled"
    assert got["within_10pct"] == 0.0 and got["within_10pct_scaled"] == 1.0


def test_check_times_reference_subnets_and_caches_the_result(catalog, cache):
    result = check.check_profile("tiny_cpu", subnets=3, repeats=4, warmup=1, rounds=2, base_dir=catalog)
    assert result["profile"] == "tiny_cpu" and result["space"] == "tiny" and len(result["subnets"]) == 3
    assert result["factor"] > 0 and (result["tau"] is None or -1 <= result["tau"] <= 1)
    assert result["verdict"] in check.VERDICTS and result["backend"] == "onnxruntime" and result["threads"] == 1
    assert all(r["measured_ms"] > 0 and r["predicted_ms"] > 0 for r in result["subnets"])
    path = Path(result["cache"])
    profile = HardwareProfile.from_yaml(catalog / "hardware_profiles" / "tiny_cpu" / "profile.yaml")
    assert path == cache / "profile_checks" / f"tiny_cpu-{profile.hash[:12]}.json" and path.is_file()
    stored = json.loads(path.read_text())
    host = check.host_identity()
    assert stored["hosts"][host.key]["verdict"] == result["verdict"]
    assert not any((catalog / "hardware_profiles" / "tiny_cpu").glob("*check*"))  # nothing in the catalog
    from nasq.export.lower import int8_weight_type
    # the catalog's measurement.json predates the field: not recorded, so no storage note
    assert result["int8_weights"] == {"profile": None, "here": int8_weight_type("auto")}
    assert "different kernels" not in result["advice"]


@pytest.mark.parametrize("timed", ["int8", "uint8"])
def test_check_advice_names_an_int8_storage_the_profile_did_not_time(timed):
    from types import SimpleNamespace

    from nasq.export.lower import int8_weight_type

    here = int8_weight_type("auto")
    m = SimpleNamespace(backend="onnxruntime", info=SimpleNamespace(int8_weights=timed))
    result = {"advice": "rankings hold"}
    check._note_int8_storage(result, m)
    assert result["int8_weights"] == {"profile": timed, "here": here}
    if timed == here:
        assert result["advice"] == "rankings hold"
    else:
        assert result["advice"].startswith("rankings hold (the profile timed integer kernels with "
                                           f"{timed} weights, this machine's export stores {here}")
    m = SimpleNamespace(backend="torch-cuda", info=SimpleNamespace(int8_weights=timed))
    result = {"advice": "x"}
    check._note_int8_storage(result, m)  # torch kernels: nothing lowered, nothing to compare
    assert result == {"advice": "x", "int8_weights": {"profile": timed, "here": None}}


def test_check_refuses_a_modelled_profile_and_an_unknown_space(catalog, cache):
    from nasq.errors import ConfigError

    with pytest.raises(ConfigError, match="cpu_roofline.*modelled, not measured"):
        check.check_profile("cpu_roofline", subnets=3, base_dir=REPO)
    with pytest.raises(ConfigError, match="--space: no space named 'nope'"):
        check.check_profile("tiny_cpu", space="nope", subnets=3, base_dir=catalog)
    assert not cache.exists()


def test_timing_an_unknown_backend_is_a_clear_error(catalog):
    space = SearchSpace.from_yaml(catalog / "search_spaces" / "tiny.yaml")
    with pytest.raises(NasqError, match="unknown latency backend 'onnxruntme'.*did you mean 'onnxruntime'"):
        check.time_subnets_ms(space, [space.smallest()], backend="onnxruntme", threads=1)


# ---------------------------------------------------------------- calibrate
def test_calibrate_writes_a_complete_profile_folder_that_loads(catalog, cache, tmp_path, monkeypatch):
    host = _fake_host(monkeypatch, "Other CPU 1", "box")
    out = tmp_path / "user" / "hardware_profiles" / "tiny_cpu_box"
    path, cal = check.calibrate_profile("tiny_cpu", subnets=8, out=out, repeats=4, warmup=1, rounds=2,
                                        base_dir=catalog)
    assert path == out / "profile.yaml"
    assert sorted(p.name for p in out.iterdir()) == sorted(check.PROFILE_FILES)
    assert [p.name for p in out.parent.iterdir()] == ["tiny_cpu_box"]  # no temp folder left behind
    space = SearchSpace.from_yaml(catalog / "search_spaces" / "tiny.yaml")
    profile = HardwareProfile.from_yaml(path)
    assert profile.name == "tiny_cpu_box" and profile.config.status == "measured"
    predictor = load_profile_predictor(path, space)
    assert predictor is not None and predictor.n_fit == 8 and predictor.transition_formats
    assert np.all(predictor.predict(space.sample(np.random.default_rng(3), 4)) > 0)
    info, calibration = check.read_measurement(out / "measurement.json")
    assert info.spaces == ("tiny",) and calibration is not None
    assert calibration.host == "box" and calibration.cpu == "Other CPU 1" and calibration.subnets == 8
    assert cal["median_abs_error_before"] >= 0 and cal["median_abs_error_after"] >= 0
    assert (out / "latency.csv").read_bytes() == (catalog / "hardware_profiles" / "tiny_cpu" / "latency.csv").read_bytes()
    # The cache holds this host's check of the calibrated profile, so the search does not warn.
    assert check.cached_checks("tiny_cpu_box", profile.hash)[host.key]["source"] == "calibrate"
    # The catalog finds it by name from the user's folder; the original is unchanged.
    from nasq.experiment import resolve

    assert resolve("hardware", "tiny_cpu_box", tmp_path / "user", "test", "hardware") == path
    assert HardwareProfile.from_yaml(catalog / "hardware_profiles" / "tiny_cpu" / "profile.yaml").name == "tiny_cpu"
    # Calibrating again replaces the folder whole.
    check.calibrate_profile("tiny_cpu", subnets=8, out=out, seed=1, repeats=2, warmup=0, rounds=1, base_dir=catalog)
    assert check.read_measurement(out / "measurement.json")[1].seed == 1


def test_calibrate_refuses_a_folder_holding_other_files(catalog, cache, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep")
    with pytest.raises(NasqError, match="notes.txt"):
        check.calibrate_profile("tiny_cpu", subnets=8, out=out, repeats=2, warmup=0, rounds=1, base_dir=catalog)
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    assert [p.name for p in tmp_path.iterdir() if p.name != "cache"] == ["mine"]


def test_default_calibrated_folder_is_in_the_users_catalog(tmp_path):
    host = check.Host("My Box.local", "cpu")
    assert check.default_calibrated_dir("cpu_ort_epyc", host, tmp_path) == tmp_path / "hardware_profiles" / "cpu_ort_epyc_My-Box.local"
    # a profile calibrated for this host is recalibrated in place
    assert check.default_calibrated_dir("cpu_ort_epyc_My-Box.local", host, tmp_path).name == "cpu_ort_epyc_My-Box.local"


# ---------------------------------------------------------------- drift note
def _tiny_profile(catalog: Path) -> Path:
    return catalog / "hardware_profiles" / "tiny_cpu" / "profile.yaml"


def _cache_verdict(catalog: Path, host: check.Host, verdict: str, factor: float = 1.6, tau: float = 0.95) -> None:
    profile = HardwareProfile.from_yaml(_tiny_profile(catalog))
    check.store_check({"profile": profile.name, "profile_hash": profile.hash, "host": {"key": host.key},
                       "verdict": verdict, "factor": factor, "tau": tau, "checked_at": "2026-11-29T00:00:00Z"})


def test_drift_note_same_cpu_without_check_is_none(catalog, cache, monkeypatch):
    _fake_host(monkeypatch, "Vendor Model 9000")
    assert check.drift_note(_tiny_profile(catalog)) is None
    assert check.drift_note(HardwareProfile.from_yaml(_tiny_profile(catalog))) is None


def test_drift_note_other_cpu_without_check(catalog, cache, monkeypatch):
    _fake_host(monkeypatch, "Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz")
    note = check.drift_note(_tiny_profile(catalog))
    assert note == ("latency predictions for tiny_cpu were measured on Vendor Model 9000; this machine is "
                    "Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz: run `nasq profile check tiny_cpu`")


@pytest.mark.parametrize(("verdict", "expected"), [
    ("scaled", "tiny_cpu are 1.60x slower than predicted on this machine .*run `nasq profile calibrate tiny_cpu`"),
    ("drifted", "rank subnets unlike this machine \\(Kendall tau 0.5.*nasq profile measure"),
    ("holds", None)])
def test_drift_note_from_a_cached_check(catalog, cache, monkeypatch, verdict, expected):
    host = _fake_host(monkeypatch, "Intel Xeon")  # a cached check wins over the CPU comparison
    _cache_verdict(catalog, host, verdict, tau=0.5 if verdict == "drifted" else 0.95)
    note = check.drift_note(_tiny_profile(catalog))
    if expected is None:
        assert note is None
    else:
        assert note is not None and "\n" not in note
        assert __import__("re").search(expected, note), note
    # another host's check says nothing about this one
    other = check.Host("elsewhere", "Vendor Model 9000")
    monkeypatch.setattr(check, "host_identity", lambda: other)
    assert check.drift_note(_tiny_profile(catalog)) is None


def test_drift_note_never_raises(catalog, cache, monkeypatch, tmp_path):
    _fake_host(monkeypatch, "Vendor Model 9000")
    assert check.drift_note(REPO / "hardware_profiles" / "cpu_roofline" / "profile.yaml") is None  # modelled
    assert check.drift_note(tmp_path / "absent" / "profile.yaml") is None
    profile = HardwareProfile.from_yaml(_tiny_profile(catalog))
    broken = check.cache_path(profile.name, profile.hash)
    broken.parent.mkdir(parents=True, exist_ok=True)
    broken.write_text("{not json")
    assert check.drift_note(_tiny_profile(catalog)) is None and check.cached_checks(profile.name, profile.hash) == {}


@pytest.mark.parametrize(("a", "b", "same"), [
    ("AMD EPYC", "AMD EPYC 7B13 64-Core Processor", True), ("AMD EPYC 7B13", "AMD EPYC 7763", False),
    ("Intel(R) Xeon(R) CPU @ 2.2GHz", "Intel Xeon", True), ("AMD EPYC", "Intel Xeon", False), ("", "x", False)])
def test_same_cpu(a, b, same):
    assert check.same_cpu(a, b) is same


# ---------------------------------------------------------------- latency predictor: transitions
@pytest.fixture(scope="module")
def big_table(space) -> LatencyTable:
    return LatencyTable(_synthetic_rows(space), "synthetic/latency.csv")


def _uniform(spec: SubnetSpec, fmt: str) -> SubnetSpec:
    import dataclasses

    return SubnetSpec(tuple(tuple(dataclasses.replace(c, w_format=fmt, a_format=fmt) for c in st)
                            for st in spec.stages), spec.widths, spec.resolution)


def test_transition_features_count_format_changes_by_target_format(space, big_table):
    predictor = LatencyPredictor(space, big_table)
    assert transition_formats(space) == ["fp32", "fp8_e4m3", "int4", "int8"]
    names = predictor.features_names
    first, end = names.index("transitions.to_fp32"), names.index("chains.int8")
    assert names[first:end] == [f"transitions.to_{f}" for f in transition_formats(space)]
    specs = space.sample(np.random.default_rng(5), 20)
    counts = predictor.features(specs)[:, first:end]
    assert counts.sum(axis=1).tolist() == [transitions(subnet_keys(space, s)) for s in specs]
    fp32 = _uniform(space.largest(), "fp32")
    assert not predictor.features([fp32])[0, first:].any()
    # all-int8 convs: into int8 after the image, back to fp32 at the classifier (exported fp32 only),
    # and one chain of integer kernels
    assert predictor.features([_uniform(space.largest(), "int8")])[0, first:].tolist() == [1, 0, 0, 1, 1]
    spec = specs[0]
    a_formats = [k.a_format for k in subnet_keys(space, spec)]
    into_int8 = sum(b == "int8" and a != b for a, b in zip(["fp32", *a_formats[:-1]], a_formats, strict=True))
    assert predictor.features([spec])[0, names.index("transitions.to_int8")] == into_int8


def test_transition_features_change_predictions_only_for_subnets_with_transitions(space, big_table):
    predictor = LatencyPredictor(space, big_table)
    specs = space.sample(np.random.default_rng(6), 30)
    predictor.fit(specs, _truth(predictor, specs, per_transition=0.01))
    fp32 = [_uniform(s, "fp32") for s in specs[:5]]
    mixed = [s for s in specs if transitions(subnet_keys(space, s)) > 0][:5]
    first = len(predictor.features_names) - len(predictor.transition_formats)
    before_fp32, before_mixed = predictor.predict(fp32), predictor.predict(mixed)
    predictor.coef = predictor.coef.copy()
    predictor.coef[first:] += 0.05
    np.testing.assert_array_equal(predictor.predict(fp32), before_fp32)
    assert np.all(predictor.predict(mixed) > before_mixed + 0.04)


def test_transition_features_learn_a_per_transition_cost(space, big_table):
    """A law with a cost per transition: the affine per-class model cannot express it, the new one can."""
    rng = np.random.default_rng(7)
    fit, test = space.sample(rng, 120), space.sample(rng, 40)
    probe = LatencyPredictor(space, big_table)
    y_fit, y_test = _truth(probe, fit, 0.02), _truth(probe, test, 0.02)
    old = LatencyPredictor(space, big_table, ridge=1e-9, transitions=False).fit(fit, y_fit)
    new = LatencyPredictor(space, big_table, ridge=1e-9).fit(fit, y_fit)
    err_old = np.median(np.abs(old.predict(test) / y_test - 1))
    err_new = np.median(np.abs(new.predict(test) / y_test - 1))
    assert err_new < 1e-3 < err_old


def test_old_latency_model_without_transitions_loads_and_predicts_as_before(space, big_table, tmp_path):
    specs = space.sample(np.random.default_rng(8), 40)
    old = LatencyPredictor(space, big_table, transitions=False)
    old.fit(specs, _truth(old, specs))
    path = old.save(tmp_path / "latency_model.json")
    data = json.loads(path.read_text())
    assert not any(f.startswith("transitions.") for f in data["features"])  # what files before this change hold
    back = LatencyPredictor.load(path, space, big_table)
    assert back.transition_formats == [] and back.features_names == data["features"]
    test = space.sample(np.random.default_rng(9), 10)
    by_hand = data["intercept"] + back.features(test) @ np.array(data["coef"])  # the formula those files meant
    np.testing.assert_allclose(back.predict(test), by_hand, rtol=1e-12)
    np.testing.assert_array_equal(back.predict(test), old.predict(test))
    # and a file with transition features round-trips with them
    new = LatencyPredictor(space, big_table).fit(specs, _truth(old, specs, 0.01))
    again = LatencyPredictor.load(new.save(tmp_path / "new.json"), space, big_table)
    assert again.transition_formats == new.transition_formats and np.array_equal(again.predict(test), new.predict(test))


def test_shipped_latency_model_still_loads(space, repo):
    predictor = load_profile_predictor(repo / "hardware_profiles" / "cpu_ort_epyc" / "profile.yaml", space)
    assert predictor is not None
    assert np.all(np.isfinite(predictor.predict(space.sample(np.random.default_rng(0), 5))))


# ---------------------------------------------------------------- CLI
def test_cli_check_json(catalog, tmp_path):
    env = {"PATH": "/usr/bin:/bin", "NASQ_CACHE_DIR": str(tmp_path / "cache"), "HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-m", "nasq.cli", "profile", "check", "tiny_cpu", "--subnets", "3",
                          "--repeats", "2", "--warmup", "0", "--rounds", "1", "--json"], cwd=catalog,
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["verdict"] in check.VERDICTS and len(result["subnets"]) == 3
    assert Path(result["cache"]).is_relative_to(tmp_path / "cache")


def test_the_search_stage_warns_for_each_drifted_target(catalog, cache, monkeypatch):
    """The pipeline's drift_notes (said before the search stage) asks drift_note of every target."""
    from types import SimpleNamespace

    from nasq.stages.pipeline import drift_notes

    _fake_host(monkeypatch, "Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz")
    profile = _tiny_profile(catalog)
    roofline = HardwareProfile.from_yaml(Path(__file__).resolve().parents[2] / "hardware_profiles" / "cpu_roofline" / "profile.yaml")
    notes = drift_notes(SimpleNamespace(profiles=[roofline, profile]))
    assert len(notes) == 1 and "run `nasq profile check tiny_cpu`" in notes[0]


def test_int8_chains_count_runs_of_integer_kernels(space, big_table):
    """An isolated integer kernel pays its quantizer and dequantizer; inside a run of them only the
    ends do: the correction sees the number of runs, the same on the per-spec and genome paths."""
    predictor = LatencyPredictor(space, big_table)
    col = predictor.features_names.index("chains.int8")
    specs = space.sample(np.random.default_rng(7), 40)
    for spec in specs:
        flags = [k.w_format == "int8" and k.a_format == "int8" for k in subnet_keys(space, spec)]
        runs = sum(f and not p for p, f in zip([False, *flags[:-1]], flags, strict=True))
        assert predictor.features([spec])[0, col] == runs
    genomes = np.stack([space.encode(s) for s in specs])
    assert np.array_equal(predictor.features_genomes(genomes), predictor.features(specs))
