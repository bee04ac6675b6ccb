"""Export bundles: files and hashes, onnxruntime vs torch, QDQ nodes, load round trip, atomicity.

Why the end-to-end checks are split. With quantized activations, onnxruntime and torch sum conv
products in different orders; the last-bit differences occasionally push a value across a rounding
boundary, and that one-step change then cascades through later quantizers. So a subnet with
quantized activations cannot match to 1e-3 on every image, however correct the export is. The
tests therefore check (a) weight-only-quantized and fp32 subnets end to end at atol 1e-3, (b) every
quantized conv of the mixed subnet alone at fp32 precision, and (c) the mixed subnet end to end
per image: almost every image must match at 1e-3, which fails at once if the graph computes
something else (onnxruntime's WeightBiasQuantization rewriting a conv, for instance, moves every
logit). Sessions use onnxruntime's default options, as the bundle's manifest says.
"""

from __future__ import annotations

import json
import shutil
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from nasq.errors import ConfigError, MissingDependencyError, NasqError
from nasq.export.bundle import export_bundle, export_onnx, load_export
from nasq.files import sha256_file
from nasq.formats import get_format
from nasq.space import LayerChoice, SearchSpace, SubnetSpec
from nasq.supernet.layers import StaticConvBN, StaticQConv
from nasq.supernet.network import StaticSubnet, Supernet

REPO = Path(__file__).resolve().parents[2]
SPACE_YAML = REPO / "search_spaces" / "mbconv_small.yaml"
L = LayerChoice
# Every format of the space on weights and on activations, including int8 weights behind fp8
# activations and int4 weights behind int8 activations.
MIXED = SubnetSpec((
    (L.of("int8", "int8", kernel=3, expand=3), L.of("fp32", "fp32", kernel=5, expand=6)),
    (L.of("int4", "int4", kernel=3, expand=6), L.of("fp8_e4m3", "fp8_e4m3", kernel=5, expand=3)),
    (L.of("int8", "fp8_e4m3", kernel=3, expand=3), L.of("int4", "int8", kernel=5, expand=6)),
))
WEIGHT_ONLY = SubnetSpec((
    (L.of("int8", "fp32", kernel=3, expand=3),),
    (L.of("int4", "fp32", kernel=5, expand=6), L.of("fp8_e4m3", "fp32", kernel=3, expand=3)),
    (L.of("fp32", "fp32", kernel=5, expand=3),),
))
FP32 = SubnetSpec(((L.of("fp32", "fp32", kernel=3, expand=3),), (L.of("fp32", "fp32", kernel=3, expand=3),), (L.of("fp32", "fp32", kernel=5, expand=6),)))
SPECS = {"mixed": MIXED, "weight_only": WEIGHT_ONLY, "fp32": FP32}
N_SAMPLE = 64
ATOL = 1e-3


# ---------------------------------------------------------------- fixtures and helpers
@pytest.fixture(scope="module")
def space() -> SearchSpace:
    return SearchSpace.from_yaml(SPACE_YAML)


@pytest.fixture(scope="module")
def supernet(space: SearchSpace) -> Supernet:
    torch.manual_seed(0)
    return Supernet(space)


@pytest.fixture(scope="module")
def sample() -> np.ndarray:
    return np.random.default_rng(7).standard_normal((N_SAMPLE, 1, 28, 28), dtype=np.float32)


def _subnet(net: Supernet, spec: SubnetSpec) -> StaticSubnet:
    """Calibration fully resets the active layers' statistics, so sharing one supernet between
    specs gives the same subnet whatever ran before."""
    net.set_active(spec)
    g = torch.Generator().manual_seed(1)
    net.calibrate([torch.randn(16, 1, 28, 28, generator=g) for _ in range(2)])
    return net.extract()


def _export(model, spec, space, out_dir, sample, **kw):
    return export_bundle(model, spec=spec, space=space, out_dir=out_dir, sample_input=sample,
                         predicted={"top1": 0.9, "latency_ms": 1.5}, measured={"top1": 0.88},
                         lineage={"space_hash": space.hash, "run": "unit-test"}, **kw)


@pytest.fixture(scope="module")
def bundles(supernet, space, sample, tmp_path_factory) -> dict:
    """One exported bundle per spec: (model, ExportResult, folder)."""
    root = tmp_path_factory.mktemp("bundles")
    out = {}
    for name, spec in SPECS.items():
        model = _subnet(supernet, spec)
        out[name] = (model, _export(model, spec, space, root / name, sample), root / name)
    return out


def _session(path: Path, disabled=(), level=None, optimized_to: Path | None = None):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    if level is not None:
        opts.graph_optimization_level = level
    if optimized_to is not None:
        opts.optimized_model_filepath = str(optimized_to)
        opts.log_severity_level = 3  # the "hardware specific optimizations" notice is expected
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"],
                                disabled_optimizers=list(disabled))


def _run(session, x: np.ndarray) -> np.ndarray:
    return session.run(None, {session.get_inputs()[0].name: x})[0]


@torch.no_grad()
def _torch(model, x: np.ndarray) -> np.ndarray:
    return model(torch.from_numpy(x)).numpy()


def _disabled(folder: Path) -> list[str]:
    """The optimisers the bundle tells consumers to switch off."""
    return json.loads((folder / "manifest.json").read_text())["runtime"]["onnxruntime_disabled_optimizers"]


def _qconvs(model) -> list[tuple[str, StaticQConv]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, StaticQConv)]


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ---------------------------------------------------------------- the bundle
def test_bundle_files_exist_and_hashes_match_manifest(bundles, tmp_path):
    _, result, folder = bundles["mixed"]
    assert _listing(folder) == ["arch.json", "manifest.json", "model.onnx", "model.safetensors"]
    (tmp_path / "probe").mkdir()
    assert folder.stat().st_mode & 0o777 == (tmp_path / "probe").stat().st_mode & 0o777, \
        "the bundle folder should get ordinary mkdir permissions, not mkdtemp's 0700"
    assert result.out_dir == folder
    manifest = json.loads((folder / "manifest.json").read_text())
    assert set(manifest["files"]) == {"arch.json", "model.onnx", "model.safetensors"}
    for name, digest in manifest["files"].items():
        assert sha256_file(folder / name) == digest, name
    assert result.files == {**manifest["files"], "manifest.json": sha256_file(folder / "manifest.json")}


def test_manifest_and_arch_contents(bundles, space):
    model, result, folder = bundles["mixed"]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["lineage"] == {"space_hash": space.hash, "run": "unit-test"}
    assert manifest["predicted"] == {"top1": 0.9, "latency_ms": 1.5}
    measured = manifest["measured"]
    assert measured["top1"] == 0.88
    assert measured["onnx_max_abs_diff"] == pytest.approx(result.max_abs_diff)
    assert measured["onnx_top1_agreement"] == pytest.approx(result.top1_agreement)
    assert measured["onnx_latency_ms_batch1"] == pytest.approx(result.ort_latency_ms)
    assert 0 < result.ort_latency_ms < 1000
    assert set(manifest["versions"]) >= {"torch", "onnx", "onnxruntime", "numpy"}
    arch = json.loads((folder / "arch.json").read_text())
    assert arch["key"] == MIXED.key() and SubnetSpec.from_dict(arch["spec"]) == MIXED
    assert arch["space"] == space.name and arch["space_hash"] == space.hash
    assert arch["input_shape"] == [1, 28, 28]


def test_manifest_formats_describe_every_quantized_conv(bundles):
    model, _, folder = bundles["mixed"]
    rows = json.loads((folder / "manifest.json").read_text())["formats"]
    assert [r["layer"] for r in rows] == [n for n, _ in _qconvs(model)]
    by_formats = {(r["w_format"], r["a_format"]): r["export"] for r in rows}
    assert by_formats == {("int8", "int8"): "qdq_int8", ("fp32", "fp32"): "identity",
                          ("int4", "int4"): "dequantized", ("fp8_e4m3", "fp8_e4m3"): "dequantized",
                          ("int8", "fp8_e4m3"): "qdq_int8", ("int4", "int8"): "qdq_int8"}
    assert {r["w_format"] for r in rows} == {"fp32", "int8", "int4", "fp8_e4m3"}


# ---------------------------------------------------------------- numerics
@pytest.mark.parametrize("name", ["weight_only", "fp32"])
def test_onnxruntime_matches_torch_end_to_end(bundles, name):
    """No activation quantizer, so no rounding cascades: fp32-level agreement on every logit."""
    model, result, folder = bundles[name]
    x = np.random.default_rng(11).standard_normal((N_SAMPLE, 1, 28, 28), dtype=np.float32)
    got, want = _run(_session(folder / "model.onnx", _disabled(folder)), x), _torch(model, x)
    diff = float(np.abs(got - want).max())
    assert diff < ATOL, f"{name}: onnxruntime vs torch max |diff| {diff:.3g} (export reported {result.max_abs_diff:.3g})"
    assert result.max_abs_diff < ATOL, f"{name}: export_bundle reported {result.max_abs_diff:.3g}"
    assert np.mean(got.argmax(1) == want.argmax(1)) >= 0.99
    assert result.top1_agreement >= 0.99


def test_mixed_subnet_matches_torch_per_image(bundles):
    """Rounding-boundary cascades (module docstring) may move a few images; the rest must match."""
    model, result, folder = bundles["mixed"]
    x = np.random.default_rng(11).standard_normal((N_SAMPLE, 1, 28, 28), dtype=np.float32)
    got, want = _run(_session(folder / "model.onnx", _disabled(folder)), x), _torch(model, x)
    per_image = np.abs(got - want).max(axis=1)
    matching = float(np.mean(per_image < ATOL))
    assert matching >= 0.9, (f"only {matching:.0%} of images match at {ATOL}; max |diff| "
                             f"{per_image.max():.3g}, median {np.median(per_image):.3g}")
    assert np.mean(got.argmax(1) == want.argmax(1)) >= 0.95
    assert result.top1_agreement >= 0.95, f"export_bundle reported {result.top1_agreement}"


def test_every_quantized_conv_of_the_mixed_subnet_exports_exactly(bundles, tmp_path):
    """Each conv + batch-norm pair alone, exported (folded, packed) and run in onnxruntime with its
    default options, equals the un-prepared torch pair on real inputs. Inputs are clipped to the
    calibrated range: beyond it int8 differs (see
    test_int8_activation_saturates_like_torch_beyond_calibrated_range)."""
    model, _, folder = bundles["mixed"]
    x = torch.from_numpy(np.random.default_rng(3).standard_normal((8, 1, 28, 28), dtype=np.float32))
    pairs = [(n, m) for n, m in model.named_modules() if isinstance(m, StaticConvBN)]
    inputs: dict[str, torch.Tensor] = {}
    hooks = [m.register_forward_hook(lambda m, i, o, n=n: inputs.__setitem__(n, i[0])) for n, m in pairs]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    assert len(pairs) == len(_qconvs(model))
    for name, pair in pairs:
        layer = pair[0]
        amax = float(layer.a_amax)
        xi = inputs[name].clamp(-amax, amax) if amax > 0 else inputs[name]
        with torch.no_grad():
            want = pair(xi).numpy()
        export_onnx(pair, xi, tmp_path / "layer.onnx")
        got = _run(_session(tmp_path / "layer.onnx", _disabled(folder)), xi.numpy())
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5,
                                   err_msg=f"{name} ({layer.w_format}/{layer.a_format})")


def test_int8_activation_saturates_like_torch_beyond_calibrated_range(tmp_path):
    torch.manual_seed(5)
    conv = torch.nn.Conv2d(4, 4, 1, bias=False)
    layer = StaticQConv(conv, "fp32", "int8", torch.tensor(1.0)).eval()
    x = torch.full((1, 4, 2, 2), -3.0)  # three times the calibrated range, negative
    with torch.no_grad():
        want = layer(x).numpy()
    export_onnx(layer, x, tmp_path / "layer.onnx")
    got = _run(_session(tmp_path / "layer.onnx"), x.numpy())  # onnxruntime's defaults
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


class _NarrowFakeQuant(torch.nn.Module):
    """The op nasq.formats uses for int4 activations: a range QuantizeLinear cannot hold."""

    def forward(self, x):
        return torch.fake_quantize_per_tensor_affine(x, 0.1, 0, -7, 7)


def test_narrow_range_fake_quant_exports_exactly_and_only_inside_export_onnx(tmp_path):
    g = torch.Generator().manual_seed(4)
    ties = (torch.arange(-90, 90) + 0.5) * 0.1  # exact and near rounding ties, saturation both sides
    x = torch.cat([torch.randn(4000, generator=g) * 0.5, ties]).reshape(1, -1)
    export_onnx(_NarrowFakeQuant(), x, tmp_path / "fq.onnx", input_name="x", output_name="y")
    got = _run(_session(tmp_path / "fq.onnx"), x.numpy())
    assert np.array_equal(got, _NarrowFakeQuant()(x).numpy())
    # The permissive symbolic was registered for that export only: torch's own is back.
    with warnings.catch_warnings(), pytest.raises(torch.onnx.errors.SymbolicValueError, match=r"\(-7, 7\)"):
        warnings.simplefilter("ignore")
        torch.onnx.export(_NarrowFakeQuant(), x, str(tmp_path / "plain.onnx"), dynamo=False, opset_version=17)


def _identity_conv(channels: int) -> torch.nn.Conv2d:
    conv = torch.nn.Conv2d(channels, channels, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.eye(channels).reshape(channels, channels, 1, 1))
    return conv


def test_int4_activation_after_relu6_takes_the_unsigned_grid_in_eval_training_and_onnx(tmp_path):
    """A post-ReLU6 int4 input uses codes 0..15 (step 6/15), the signed grid only 0..7: the same
    values in the static layer, in the supernet's quantizer while training, and in onnxruntime."""
    from nasq.supernet.layers import ActQuant

    g = torch.Generator().manual_seed(5)
    x = torch.nn.functional.relu6(torch.randn(1, 4, 16, 16, generator=g) * 3)
    unsigned = StaticQConv(_identity_conv(4), "fp32", "int4", torch.tensor(6.0), a_unsigned=True).eval()
    signed = StaticQConv(_identity_conv(4), "fp32", "int4", torch.tensor(6.0)).eval()
    with torch.no_grad():
        want, coarse = unsigned(x), signed(x)
    assert torch.equal(torch.unique(want), torch.arange(16) * torch.tensor(6.0 / 15))
    assert len(torch.unique(coarse)) == 8
    assert (want - x).abs().max() <= 6.0 / 30 + 1e-6 < (coarse - x).abs().max()
    q = ActQuant()
    q.set_format("int4")
    q.unsigned = True
    xg = x.clone().requires_grad_(True)
    trained = q.train()(xg)  # its own max: 6 here, so the same grid as the calibrated layer
    assert torch.equal(trained.detach(), want)
    trained.sum().backward()
    assert torch.equal(xg.grad, torch.ones_like(x))
    export_onnx(unsigned, x, tmp_path / "u4.onnx")
    np.testing.assert_array_equal(_run(_session(tmp_path / "u4.onnx"), x.numpy()), want.numpy())


def test_fp8_activation_export_equals_fake_quant():
    """The elementwise FP8 rounding used for export gives fake_quant's values exactly (in torch),
    including subnormals, saturation and both signs."""
    fmt = get_format("fp8_e4m3")
    g = torch.Generator().manual_seed(2)
    x = torch.cat([torch.randn(20000, generator=g) * 3, torch.tensor([0.0, 1e-6, -1e-6, 9.0, -9.0])])
    amax = torch.tensor(3.0)
    assert torch.equal(fmt.export_activation(x, amax), fmt.quantize(x, amax))


# ---------------------------------------------------------------- graph structure
def _op_counts(path: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in onnx.load(str(path)).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def test_int8_layers_become_qdq_pairs(bundles):
    model, result, folder = bundles["mixed"]
    ops = _op_counts(folder / "model.onnx")
    # One QuantizeLinear per int8 activation (a residual Add shares its block's) and per kept
    # requantizer of an int8/int8 conv; fp8 activations are elementwise rounding. Integer kernels read INT8 weights through
    # DequantizeLinear and an fp32 bias on the int32 grid (onnxruntime's WeightBiasQuantization
    # recovers the int32 codes exactly); every other packed weight is unpacked by Cast + Mul (constant-
    # folded by onnxruntime), and float convs read quantized activations through a per-channel
    # DequantizeLinear copy (no WeightBiasQuantization), their bias a plain constant.
    convs = [m for _, m in _qconvs(model)]
    quantized_acts = sum(m.a_format == "int8" for m in convs)
    quantize = quantized_acts + sum(m.quantize_output for m in convs)
    packed = sum(m.w_format in ("int8", "int4", "fp8_e4m3") for m in convs)
    integer = sum(m.integer for m in convs)
    assert ops.get("QuantizeLinear") == quantize
    assert ops.get("Cast") == packed - integer
    assert ops.get("DequantizeLinear") >= quantize + integer
    assert result.qdq_nodes == ops["QuantizeLinear"] + ops["DequantizeLinear"]
    graph = onnx.load(str(folder / "model.onnx")).graph
    producers = {o: n for n in graph.node for o in n.output}
    inits = {t.name for t in graph.initializer}
    float_convs = [n for n in graph.node if n.op_type == "Conv" and producers.get(n.input[1]) is not None
                   and producers[n.input[1]].op_type == "Mul"]
    assert len(float_convs) == packed - integer
    for conv in [n for n in graph.node if n.op_type == "Conv"]:
        assert len(conv.input) < 3 or conv.input[2] in inits
    for conv in float_convs:
        src = producers.get(conv.input[0])
        if src is not None and src.op_type == "DequantizeLinear":
            assert any(a.name == "axis" and a.i == 1 for a in src.attribute)


def test_all_fp32_subnet_has_no_qdq_nodes(bundles):
    _, result, folder = bundles["fp32"]
    ops = _op_counts(folder / "model.onnx")
    assert result.qdq_nodes == 0
    assert "QuantizeLinear" not in ops and "DequantizeLinear" not in ops and "Conv" in ops


def test_onnxruntime_optimised_int8_graph_runs(bundles, tmp_path):
    """The fully optimised graph (what a deployment runs) is runnable, agrees with the
    un-optimised one, and runs every int8-weight/int8-activation conv as an integer kernel:
    those convs requantize their output, so onnxruntime fuses DequantizeLinear -> Conv ->
    QuantizeLinear into QLinearConv, their weights stored as INT8 or UINT8 codes as the manifest
    says. Other int8 weights are unpacked by Cast + Mul, which onnxruntime folds into float
    constants (its fast float path)."""
    model, _, folder = bundles["mixed"]
    level = ort.GraphOptimizationLevel
    optimised = _session(folder / "model.onnx", _disabled(folder), level.ORT_ENABLE_ALL, tmp_path / "opt.onnx")
    plain = _session(folder / "model.onnx", _disabled(folder), level.ORT_DISABLE_ALL)
    x = np.random.default_rng(13).standard_normal((16, 1, 28, 28), dtype=np.float32)
    got, ref = _run(optimised, x), _run(plain, x)
    assert got.shape == (16, 10) and np.isfinite(got).all()
    assert np.mean(np.abs(got - ref).max(axis=1) < ATOL) >= 0.9
    graph = onnx.load(str(tmp_path / "opt.onnx")).graph
    stored = json.loads((folder / "manifest.json").read_text())["runtime"]["int8_weights"]
    dtype = {"int8": onnx.TensorProto.INT8, "uint8": onnx.TensorProto.UINT8}[stored]
    int8_weights = [i for i in graph.initializer if i.data_type == dtype and len(i.dims) == 4]
    integer_convs = sum(m.integer for _, m in _qconvs(model))
    # the other int8 weights (float kernels: Cast + Mul) onnxruntime folds to float constants
    assert len(int8_weights) == integer_convs
    assert integer_convs > 0
    assert sum(n.op_type == "QLinearConv" for n in graph.node) == integer_convs


@pytest.mark.parametrize("flags, host_flags, machine, want", [
    (frozenset({"avx2", "fma"}), None, "x86_64", "uint8"),  # VPMADDUBSW saturates: uint8 x uint8 kernels
    (frozenset({"avx2", "avx512bw", "avx512_vnni"}), None, "x86_64", "int8"),
    (frozenset({"avx2", "avx_vnni"}), None, "AMD64", "int8"),
    # flags=None: this host's, as cpu_flags() reads them (faked here, so the case does not depend on
    # the machine the tests run on); None from the reader: unreadable, the kernel exact everywhere
    (None, None, "x86_64", "uint8"),
    (None, frozenset({"avx2", "avx512_vnni"}), "x86_64", "int8"),
    (None, frozenset({"avx2"}), "x86_64", "uint8"),
    (None, None, "aarch64", "int8"),
])
def test_int8_weight_type_follows_the_cpu(flags, host_flags, machine, want, monkeypatch):
    from nasq.export import lower
    from nasq.export.lower import int8_weight_type

    monkeypatch.setattr(lower, "cpu_flags", lambda: host_flags)
    assert int8_weight_type("auto", flags, machine) == want
    assert int8_weight_type("int8", flags, machine) == "int8" and int8_weight_type("uint8", flags, machine) == "uint8"
    with pytest.raises(ValueError, match="int8_weights must be one of"):
        int8_weight_type("s8", flags, machine)


def test_uint8_and_int8_weights_store_the_same_values(supernet, space, sample, tmp_path):
    """Both ways of storing an integer kernel's weights compute the same function: unfused
    (every DequantizeLinear in float) the two graphs agree to the last bit; fused, the uint8 one
    (uint8 x uint8 kernels, exact on every CPU) agrees with torch on every image."""
    model = _subnet(supernet, MIXED)
    x = np.random.default_rng(11).standard_normal((N_SAMPLE, 1, 28, 28), dtype=np.float32)
    out = {}
    for kind in ("int8", "uint8"):
        res = export_bundle(model, spec=MIXED, space=space, out_dir=tmp_path / kind, sample_input=sample,
                            predicted={}, measured={}, lineage={}, int8_weights=kind)
        assert json.loads((tmp_path / kind / "manifest.json").read_text())["runtime"]["int8_weights"] == kind
        out[kind] = (res, _run(_session(tmp_path / kind / "model.onnx", level=ort.GraphOptimizationLevel.ORT_DISABLE_ALL), x))
    assert np.array_equal(out["int8"][1], out["uint8"][1])
    got = _run(_session(tmp_path / "uint8" / "model.onnx", _disabled(tmp_path / "uint8")), x)
    # int8 codes on an x86 CPU without VNNI matched 80 % of these images here (saturation); a
    # rounding-boundary cascade (module docstring) may still move one image
    assert np.mean(np.abs(got - _torch(model, x)).max(axis=1) < ATOL) >= 0.95


# ---------------------------------------------------------------- loading
def test_load_export_round_trip_is_exact(bundles, sample):
    """The bundle stores the folded convs (packed codes of the folded weights): the loaded model
    computes what the exported one does, bit for bit."""
    model, _, folder = bundles["mixed"]
    rng_before = torch.get_rng_state()
    loaded = load_export(folder)
    assert torch.equal(torch.get_rng_state(), rng_before), "load_export must not consume torch's RNG"
    assert isinstance(loaded, StaticSubnet) and not loaded.training
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in loaded.blocks.modules())
    with torch.no_grad():
        assert torch.equal(loaded(torch.from_numpy(sample)), model(torch.from_numpy(sample)))


def test_load_export_rejects_missing_bad_and_tampered_files(bundles, tmp_path):
    _, _, folder = bundles["fp32"]
    missing = tmp_path / "missing"
    shutil.copytree(folder, missing)
    (missing / "arch.json").unlink()
    with pytest.raises(ConfigError, match="arch.json: file not found"):
        load_export(missing)
    bad = tmp_path / "bad"
    shutil.copytree(folder, bad)
    (bad / "manifest.json").unlink()  # no hashes to check: the JSON parser must catch it
    (bad / "arch.json").write_text("{not json")
    with pytest.raises(ConfigError, match="arch.json: not valid JSON"):
        load_export(bad)
    tampered = tmp_path / "tampered"
    shutil.copytree(folder, tampered)
    data = bytearray((tampered / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (tampered / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(ConfigError, match="model.safetensors: sha256 differs"):
        load_export(tampered)
    other = tmp_path / "other_spec"  # a consistent arch.json for another subnet, no manifest
    shutil.copytree(folder, other)
    (other / "manifest.json").unlink()
    arch = json.loads((other / "arch.json").read_text())
    arch["spec"], arch["key"] = WEIGHT_ONLY.to_dict(), WEIGHT_ONLY.key()
    (other / "arch.json").write_text(json.dumps(arch))
    with pytest.raises(ConfigError, match="model.safetensors: state_dict: ") as err:
        load_export(other)
    assert "\n" not in str(err.value)


def test_missing_onnxruntime_is_a_clear_error(supernet, space, sample, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes `import onnxruntime` fail
    with pytest.raises(MissingDependencyError, match="pip install .*onnxruntime"):
        _export(_subnet(supernet, FP32), FP32, space, tmp_path / "bundle", sample[:4])
    assert _listing(tmp_path) == []


# ---------------------------------------------------------------- all or nothing
def test_export_refuses_a_non_empty_folder_and_leaves_it_untouched(supernet, space, sample, tmp_path):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    model = _subnet(supernet, FP32)
    with pytest.raises(NasqError, match="taken") as err:
        _export(model, FP32, space, out, sample[:4])
    assert "\n" not in str(err.value)
    assert _listing(out) == ["notes.txt"] and (out / "notes.txt").read_text() == "keep me"
    assert _listing(tmp_path) == ["taken"]


@pytest.mark.parametrize("where", ["torch.onnx.export", "manifest"])
def test_failure_midway_leaves_nothing_behind(supernet, space, sample, tmp_path, monkeypatch, where):
    def boom(*args, **kwargs):
        raise RuntimeError("injected failure")

    if where == "torch.onnx.export":
        monkeypatch.setattr(torch.onnx, "export", boom)
    else:  # after the ONNX file is written and verified
        monkeypatch.setattr("nasq.export.bundle._manifest", boom)
    model = _subnet(supernet, FP32)
    with pytest.raises(RuntimeError, match="injected failure"):
        _export(model, FP32, space, tmp_path / "bundle", sample[:4])
    assert _listing(tmp_path) == []


def test_export_into_an_existing_empty_folder_leaves_the_model_alone(supernet, space, sample, tmp_path):
    out = tmp_path / "empty"
    out.mkdir()
    model = _subnet(supernet, FP32).train()  # a caller's module in training mode
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = _export(model, FP32, space, out, sample[:4])
    assert result.out_dir == out and (out / "model.onnx").is_file()
    assert _listing(tmp_path) == ["empty"]
    assert model.training, "export_bundle must not switch the caller's module to eval"
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    # ... and the bundle holds the eval-mode subnet: batch-norm running statistics, not batch ones.
    with torch.no_grad():
        assert torch.equal(load_export(out)(torch.from_numpy(sample)), model.eval()(torch.from_numpy(sample)))
