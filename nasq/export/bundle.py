"""Deployable export of one subnet: ONNX graph, safetensors weights, architecture and manifest.

:func:`export_bundle` writes a folder holding

* ``model.onnx`` - the static subnet lowered to standard ONNX operators (opset 21): int8
  activations as QuantizeLinear/DequantizeLinear pairs, fp8 activations as branch-free
  elementwise rounding (or FLOAT8 QuantizeLinear/DequantizeLinear on request), int8/int4/fp8
  weights stored packed,
  other formats as pre-quantized fp32 weights and elementwise rounding
  ("emulated"), batch axis dynamic;
* ``model.safetensors`` - the static subnet's un-prepared state dict (no pickle anywhere);
* ``arch.json`` - the space config and the subnet spec, enough to rebuild the module skeleton;
* ``manifest.json`` - lineage, predicted and measured metrics, per-layer formats, file hashes
  and library versions.

The bundle is verified before it is published: onnxruntime must reproduce the torch logits on
the caller's sample, and the difference, top-1 agreement and latency go into the manifest.

Lowering (:mod:`nasq.export.lower`): batch norms are folded into the convs; int8 chains are one
uint8 QuantizeLinear/DequantizeLinear per activation tensor (after the ReLU6, shared by a
residual Add), so onnxruntime runs consecutive QLinearConv / QLinearAdd and OpenVINO int8
kernels; int8/int4/fp8 weights are stored as INT8 / INT4 / FLOAT8 initializers (opset 21),
behind DequantizeLinear for integer kernels and behind Cast + Mul (constant-folded at load, the
fast float path) for layers that compute in float, which read a quantized input through a
per-channel DequantizeLinear so that onnxruntime's ``WeightBiasQuantization`` leaves their float
weights alone. The bundle is therefore verified, and meant to run, under onnxruntime's default
session options.

Exports are all-or-nothing: everything is written into a hidden sibling folder that is renamed
onto ``out_dir`` at the end, and removed if anything fails.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import platform
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import safetensors
import safetensors.torch
import torch
from safetensors import safe_open
from torch.onnx import symbolic_helper, symbolic_opset13

import nasq
from nasq.errors import ConfigError, MissingDependencyError, NasqError
from nasq.export.lower import (
    LOWERED_OPSET,
    fold_batch_norms,
    int8_weight_type,
    lower_onnx,
    native_onnx_formats,
    torch_opset,
    weight_codes,
)
from nasq.files import read_json_object, sha256_file
from nasq.formats import get_format
from nasq.formats.floating import fp8_activations_as_qdq
from nasq.formats.packing import packed_formats, packed_state, unpack_state
from nasq.space import SearchSpace, SubnetSpec
from nasq.specs import SpaceConfig, validate
from nasq.supernet.layers import StaticQConv
from nasq.supernet.network import Supernet

MODEL_ONNX = "model.onnx"
MODEL_WEIGHTS = "model.safetensors"
ARCH_JSON = "arch.json"
MANIFEST_JSON = "manifest.json"
HASHED_FILES = (MODEL_ONNX, MODEL_WEIGHTS, ARCH_JSON)

INPUT_NAME, OUTPUT_NAME = "images", "logits"
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
# Optimisers nasq switches off in onnxruntime: none since the lowering (module docstring) makes
# the graph faithful under the defaults. Kept as a name for consumers of older manifests.
ORT_DISABLED_OPTIMIZERS: tuple[str, ...] = ()
PACKED_FORMATS_KEY = "nasq.packed_formats"
# Set in model.safetensors when its convs hold their batch norms folded in (see _save_weights).
FOLDED_KEY = "nasq.batch_norms_folded"
LATENCY_WARMUP, LATENCY_RUNS = 3, 20
# The (quant_min, quant_max) pairs torch's exporter can write as QuantizeLinear/DequantizeLinear.
_QDQ_RANGES = ((-128, 127), (0, 255), (0, 127))
# Order of "strength" used to summarise a layer's weight and activation export modes in one word.
_EXPORT_RANK = {"identity": 0, "dequantized": 1, "qdq_int8": 2}


@dataclass
class ExportResult:
    out_dir: Path
    files: dict[str, str]  # file name -> sha256, the manifest included
    max_abs_diff: float  # onnxruntime vs torch logits on the sample
    top1_agreement: float  # fraction of the sample whose argmax agrees
    ort_latency_ms: float  # median onnxruntime latency of one image, one thread
    qdq_nodes: int  # QuantizeLinear + DequantizeLinear nodes in model.onnx


@dataclass
class _Verification:
    max_abs_diff: float
    top1_agreement: float
    latency_ms: float


# ---------------------------------------------------------------- optional dependencies
REFINE_ATTR = "refine_report"  # a refined subnet's report (a dict), written as the manifest's "refine"
# the input transform the model expects (a dict: scale, mean, std, axis; nasq.data.Splits.normalisation),
# written as the manifest's "input_normalisation" so serving feeds (raw / scale - mean) / std
NORMALISATION_ATTR = "input_normalisation"


def _require_onnx() -> tuple[Any, Any]:
    """onnx and onnxruntime are imported here, not at module level, so that importing nasq.export.bundle
    (e.g. for load_export) works on a machine that only trains."""
    try:
        import onnx
        import onnxruntime
    except ImportError as e:
        raise MissingDependencyError(
            f"exporting needs onnx and onnxruntime ({e.name} is missing): pip install onnx onnxruntime"
        ) from None
    return onnx, onnxruntime


# ---------------------------------------------------------------- export
def export_bundle(model: torch.nn.Module, *, spec: SubnetSpec, space: SearchSpace, out_dir: str | os.PathLike,
                  sample_input: np.ndarray, predicted: dict[str, float], measured: dict[str, float],
                  lineage: dict[str, str], opset: int = LOWERED_OPSET, int8_weights: str = "auto") -> ExportResult:
    """Export ``model`` (a static subnet from ``Supernet.extract()``) to ``out_dir``, verify it in
    onnxruntime on ``sample_input`` (N, C, H, W float32) and return the verification figures.
    ``int8_weights``: how integer kernels' int8 weights are stored (``auto``, ``int8``, ``uint8``;
    :func:`nasq.export.lower.int8_weight_type`), recorded in the manifest's ``runtime``.

    Refuses a non-empty ``out_dir``; on any failure nothing is left behind."""
    onnx, ort = _require_onnx()
    out_dir = Path(out_dir)
    _refuse_non_empty(out_dir)
    sample = _check_sample(sample_input, space)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.tmp-"))
    try:
        # A CPU copy in eval mode: the caller's module (maybe on a GPU, maybe training) is not touched.
        cpu_model = copy.deepcopy(model).cpu().eval()
        result = _write_bundle(cpu_model, tmp, spec=spec, space=space, sample=sample, predicted=predicted,
                               measured=measured, lineage=lineage, opset=opset, onnx=onnx, ort=ort,
                               int8_weights=int8_weight_type(int8_weights))
        _match_umask(tmp)
        _publish(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return replace(result, out_dir=out_dir)


def _refuse_non_empty(out_dir: Path) -> None:
    if out_dir.is_dir() and any(out_dir.iterdir()):
        raise NasqError(f"{out_dir}: export folder exists and is not empty; remove it or pick another")
    if out_dir.exists() and not out_dir.is_dir():
        raise NasqError(f"{out_dir}: exists and is not a folder")


def _check_sample(sample_input: np.ndarray, space: SearchSpace) -> np.ndarray:
    sample = np.ascontiguousarray(sample_input, dtype=np.float32)
    expected = space.config.input_shape
    if sample.ndim != 1 + len(expected) or sample.shape[1:] != expected or len(sample) == 0:
        raise NasqError(f"sample_input must have shape (N>0, {', '.join(map(str, expected))}), "
                        f"got {sample.shape}")
    return sample


def _match_umask(folder: Path) -> None:
    """mkdtemp makes the folder private (0700); give it the permissions an ordinary mkdir would
    have. model.onnx was created with plain open(), so its mode already reflects the umask;
    reading it back avoids the racy os.umask() get-and-set."""
    file_mode = (folder / MODEL_ONNX).stat().st_mode & 0o666
    folder.chmod(file_mode | (file_mode & 0o444) >> 2)  # x wherever r, as for directories


def _publish(tmp: Path, out_dir: Path) -> None:
    """One rename: readers see either no bundle or a complete one. ``os.replace`` also replaces an
    empty ``out_dir``; it fails if something was written into ``out_dir`` meanwhile."""
    try:
        os.replace(tmp, out_dir)
    except OSError as e:
        raise NasqError(f"{out_dir}: could not publish the export ({e.strerror})") from e


def _write_bundle(model: torch.nn.Module, folder: Path, *, spec: SubnetSpec, space: SearchSpace,
                  sample: np.ndarray, predicted: dict[str, float], measured: dict[str, float],
                  lineage: dict[str, str], opset: int, onnx: Any, ort: Any, int8_weights: str) -> ExportResult:
    _save_weights(model, folder / MODEL_WEIGHTS)
    export_onnx(model, torch.from_numpy(sample[:1]), folder / MODEL_ONNX, opset=opset, int8_weights=int8_weights)
    onnx_model = onnx.load(str(folder / MODEL_ONNX))
    onnx.checker.check_model(onnx_model)
    qdq = sum(node.op_type in QDQ_OPS for node in onnx_model.graph.node)
    check = _verify(model, folder / MODEL_ONNX, sample)
    _write_json(folder / ARCH_JSON, _arch(spec, space, sample.shape[1:]))
    files = {name: sha256_file(folder / name) for name in HASHED_FILES}
    measured_all = {**measured, "onnx_max_abs_diff": check.max_abs_diff,
                    "onnx_top1_agreement": check.top1_agreement,
                    "onnx_latency_ms_batch1": check.latency_ms}
    manifest = _manifest(model, lineage=lineage, predicted=predicted, measured=measured_all,
                         files=files, opset=onnx_model.opset_import[0].version, traced_opset=torch_opset(opset),
                         qdq_nodes=qdq, onnx=onnx, ort=ort)
    manifest["runtime"]["int8_weights"] = int8_weights
    _write_json(folder / MANIFEST_JSON, manifest)
    files[MANIFEST_JSON] = sha256_file(folder / MANIFEST_JSON)
    return ExportResult(folder, files, check.max_abs_diff, check.top1_agreement, check.latency_ms, qdq)


def _save_weights(model: torch.nn.Module, path: Path) -> None:
    """Integer weights are stored packed (two int4 / four int2 per byte) with their scales; the
    formats used are recorded in the file's metadata so loading restores them exactly. Batch
    norms are folded first (what the model computes in eval mode), so that the packed codes are
    the folded weight's: quantizing the unfolded weight would lose what folding keeps."""
    model = copy.deepcopy(model)
    fold_batch_norms(model)
    formats = packed_formats(model)
    replaced = {f"{p}.conv.weight" for p in formats}
    # Clones: safetensors refuses tensors that share storage (and views of a bigger tensor).
    state = {k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items() if k not in replaced}
    state.update(packed_state(model))
    safetensors.torch.save_file(state, str(path), metadata={PACKED_FORMATS_KEY: json.dumps(formats, sort_keys=True),
                                                            FOLDED_KEY: "1"})


def export_onnx(module: torch.nn.Module, example: torch.Tensor, path: str | os.PathLike, *, opset: int = LOWERED_OPSET,
                input_name: str = INPUT_NAME, output_name: str = OUTPUT_NAME,
                fp8_activation_qdq: bool = False, int8_weights: str = "auto") -> None:
    """Write ``module`` (a StaticSubnet, one layer, or any module) to ``path`` as lowered ONNX
    (see :mod:`nasq.export.lower`: batch norms folded, native weights packed, opset 21), in export
    mode where it has ``prepare_export``; batch axis dynamic, traced with ``example``. ``opset``
    is the TorchScript exporter's (clamped to 19..20); the written model is opset 21.
    FP8 activations are branch-free elementwise rounding (bit-exact with torch, and in
    onnxruntime faster than FLOAT8 QuantizeLinear/DequantizeLinear, at a speed that does not
    depend on the data, which a latency table measured on random inputs needs; OpenVINO 2026.4's
    CPU plugin refuses FP8 activation tensors, "unsupported src_prc: f8e4m3");
    ``fp8_activation_qdq=True`` writes them as FLOAT8 QuantizeLinear/DequantizeLinear (same
    values), for runtimes with FP8 kernels. FP8 weights are FLOAT8 initializers either way.
    ``int8_weights`` (auto, int8, uint8): how integer kernels' int8 weights are stored
    (:func:`nasq.export.lower.int8_weight_type`; auto: uint8 on an x86 CPU without VNNI).
    ``module`` itself is not modified."""
    import onnx

    # folding and prepare_export mutate the module (pre-quantized weights, export-mode
    # quantizers): work on a copy.
    m = copy.deepcopy(module).eval()
    fold_batch_norms(m)
    codes = weight_codes(m, int8_weight_type(int8_weights))
    if hasattr(m, "prepare_export"):
        m.prepare_export()
    else:  # e.g. one StaticConvBN pair: its quantized convs still export in export mode
        for sub in m.modules():
            if isinstance(sub, StaticQConv):
                sub.prepare_export()
    traced_opset = torch_opset(opset)
    with (warnings.catch_warnings(), _any_range_fake_quant_symbolic(traced_opset),
          fp8_activations_as_qdq(fp8_activation_qdq)):
        # The TorchScript exporter warns about its own deprecation and about tracing
        # float(tensor) in the quantizers; neither is actionable here.
        warnings.simplefilter("ignore")
        torch.onnx.export(m, example, str(path), dynamo=False, opset_version=traced_opset,
                          input_names=[input_name], output_names=[output_name],
                          dynamic_axes={input_name: {0: "batch"}, output_name: {0: "batch"}})
    onnx.save(lower_onnx(onnx.load(str(path)), codes), str(path))


@contextlib.contextmanager
def _any_range_fake_quant_symbolic(opset: int) -> Iterator[None]:
    """While exporting, let ``fake_quantize_per_tensor_affine`` take any integer range.

    torch's symbolic only accepts the ranges QuantizeLinear can hold and raises SymbolicValueError
    for others, e.g. the narrow (-7, 7) that nasq.formats uses for int4 activations. Those become
    the same arithmetic in plain ops (Reciprocal, Mul, Round, Clip, Mul: what torch's kernel
    computes), the standard ranges still become QDQ. Registered for this export only, because the
    exporter's registry is process-wide."""
    name = "aten::fake_quantize_per_tensor_affine"
    symbolic = symbolic_helper.parse_args("v", "v", "v", "i", "i")(_fake_quant_symbolic)
    torch.onnx.register_custom_op_symbolic(name, symbolic, opset)
    try:
        yield
    finally:
        torch.onnx.unregister_custom_op_symbolic(name, opset)


def _fake_quant_symbolic(g: Any, x: Any, scale: Any, zero_point: Any, lo: int, hi: int) -> Any:
    if (lo, hi) in _QDQ_RANGES:
        return symbolic_opset13.fake_quantize_per_tensor_affine(g, x, scale, zero_point, lo, hi)
    float_type = 1  # onnx.TensorProto.FLOAT
    scale = g.op("Cast", scale, to_i=float_type)
    zero = g.op("Cast", zero_point, to_i=float_type)
    q = g.op("Add", g.op("Round", g.op("Mul", x, g.op("Reciprocal", scale))), zero)
    q = g.op("Clip", q, g.op("Constant", value_t=torch.tensor(float(lo))),
             g.op("Constant", value_t=torch.tensor(float(hi))))
    return g.op("Mul", g.op("Sub", q, zero), scale)


# ---------------------------------------------------------------- verification
def _verify(model: torch.nn.Module, onnx_path: Path, sample: np.ndarray) -> _Verification:
    want = _torch_logits(model, sample)
    session = ort_session(onnx_path)  # onnxruntime's default optimisers, nothing disabled
    got = session.run([OUTPUT_NAME], {INPUT_NAME: sample})[0]
    return _Verification(
        max_abs_diff=float(np.max(np.abs(got - want))),
        top1_agreement=float(np.mean(got.argmax(1) == want.argmax(1))),
        latency_ms=_latency_ms(session, sample[:1]),
    )


@torch.no_grad()
def _torch_logits(model: torch.nn.Module, sample: np.ndarray) -> np.ndarray:
    """The reference: the un-prepared module (export_bundle's eval-mode CPU copy)."""
    return model(torch.from_numpy(sample)).numpy()


def ort_session(path: str | os.PathLike, threads: int = 1, *, disabled: tuple[str, ...] = ORT_DISABLED_OPTIMIZERS,
                optimized_to: str | os.PathLike | None = None) -> Any:
    """The one way nasq opens an onnxruntime CPU session: ``threads`` intra-op threads (one by
    default: latency comparable across machines and runs, no contention with torch), one inter-op
    thread, onnxruntime's default graph optimisations (``disabled`` names any to switch off; none
    by default, see the module docstring), and with ``optimized_to`` the optimised graph saved
    there (the profiler reads its fused ops)."""
    _, ort = _require_onnx()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    opts.log_severity_level = 3  # the NCHWc "optimized model is hardware specific" warning is expected
    if optimized_to is not None:
        opts.optimized_model_filepath = str(optimized_to)
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"],
                                disabled_optimizers=list(disabled))


def _latency_ms(session: Any, one: np.ndarray) -> float:
    feed = {INPUT_NAME: one}
    for _ in range(LATENCY_WARMUP):
        session.run([OUTPUT_NAME], feed)
    times = []
    for _ in range(LATENCY_RUNS):
        t0 = time.perf_counter()
        session.run([OUTPUT_NAME], feed)
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1e3)


# ---------------------------------------------------------------- JSON documents
def _write_json(path: Path, obj: Any) -> None:
    """Plain write: the whole folder is published with one rename, so per-file atomicity (and the
    0600 mode of nasq.files' temp files) is not wanted here."""
    text = json.dumps(obj, indent=2, sort_keys=True, default=_json_default)
    path.write_text(text + "\n", encoding="utf-8")


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):  # numpy scalars and arrays, 0-d tensors among metrics
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _arch(spec: SubnetSpec, space: SearchSpace, input_shape: tuple[int, ...]) -> dict[str, Any]:
    return {"space": space.name, "space_hash": space.hash,
            "space_config": space.config.model_dump(mode="json"),
            "spec": spec.to_dict(), "key": spec.key(), "input_shape": [int(d) for d in input_shape]}


def _manifest(model: torch.nn.Module, *, lineage: dict[str, str], predicted: dict[str, float],
              measured: dict[str, float], files: dict[str, str], opset: int, traced_opset: int,
              qdq_nodes: int, onnx: Any, ort: Any) -> dict[str, Any]:
    return {
        "nasq_version": _nasq_version(),
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "lineage": dict(lineage),
        "predicted": dict(predicted),
        "measured": measured,
        "formats": layer_formats(model),
        # a subnet refined before export (nasq.export.refine) carries what was done and what it gave
        **({"refine": dict(getattr(model, REFINE_ATTR))} if hasattr(model, REFINE_ATTR) else {}),
        **({NORMALISATION_ATTR: dict(getattr(model, NORMALISATION_ATTR))} if hasattr(model, NORMALISATION_ATTR) else {}),
        "files": files,
        "onnx": {"opset": opset, "traced_opset": traced_opset, "input": INPUT_NAME,
                 "output": OUTPUT_NAME, "qdq_nodes": qdq_nodes,
                 "native_formats": sorted(native_onnx_formats())},
        # verified with exactly these settings: onnxruntime's defaults, nothing disabled
        "runtime": {"onnxruntime_disabled_optimizers": list(ORT_DISABLED_OPTIMIZERS),
                    "onnxruntime_graph_optimization_level": "ORT_ENABLE_ALL (default)",
                    "onnxruntime_intra_op_threads": 1},
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "onnx": onnx.__version__, "onnxruntime": ort.__version__,
                     "numpy": np.__version__, "safetensors": safetensors.__version__},
    }


def _nasq_version() -> str:
    if getattr(nasq, "__version__", None):
        return nasq.__version__

    try:  # an installed distribution without the package attribute (e.g. a namespace checkout)
        return version("nasq")
    except PackageNotFoundError:
        return "unknown"


def layer_formats(model: torch.nn.Module) -> list[dict[str, str]]:
    """Per quantized conv: its formats and how each side is exported. ``export`` summarises the
    two sides as the stronger one (qdq_int8 > dequantized > identity)."""
    rows = []
    for name, m in model.named_modules():
        if isinstance(m, StaticQConv):
            w_mode, a_mode = get_format(m.w_format).export_mode, get_format(m.a_format).export_mode
            rows.append({"layer": name, "w_format": m.w_format, "a_format": m.a_format,
                         "export": max(w_mode, a_mode, key=_EXPORT_RANK.__getitem__),
                         "w_export": w_mode, "a_export": a_mode,
                         "w_storage": "native" if m.w_format in native_onnx_formats() else "emulated"})
    return rows


# ---------------------------------------------------------------- loading
def load_export(folder: str | os.PathLike) -> torch.nn.Module:
    """Rebuild the static subnet of an export bundle (eval mode) from arch.json and
    model.safetensors. Checks the files against the manifest's hashes when it is present."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(str(folder), "", "export folder not found")
    _check_hashes(folder)
    arch_path = folder / ARCH_JSON
    arch = read_json_object(arch_path)
    space, spec = _space_and_spec(arch, arch_path)
    # Building the supernet and extracting from it draw initial weights (soon overwritten) from
    # torch's global RNG; loading must not shift the caller's random stream.
    with torch.random.fork_rng(devices=[]):
        net = Supernet(space)
        net.set_active(spec)
        model = net.extract()
    _load_weights(model, folder / MODEL_WEIGHTS)
    return model.eval()


def _space_and_spec(arch: dict[str, Any], path: Path) -> tuple[SearchSpace, SubnetSpec]:
    for field in ("space_config", "spec"):
        if field not in arch:
            raise ConfigError(str(path), field, "missing")
    try:
        config = validate(SpaceConfig, arch["space_config"], str(path))
    except ConfigError as e:
        raise ConfigError(str(path), f"space_config.{e.field}".rstrip("."), e.detail) from None
    space = SearchSpace(config, str(path), str(arch.get("space_hash", "")))
    try:
        spec = SubnetSpec.from_dict(arch["spec"])
        space.encode(spec)  # every choice must exist in the space
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(str(path), "spec", f"not a subnet of space {space.name}: {e}") from None
    if "key" in arch and arch["key"] != spec.key():
        raise ConfigError(str(path), "key", f"{arch['key']!r} does not match the spec ({spec.key()!r})")
    return space, spec


def _load_weights(model: torch.nn.Module, path: Path) -> None:
    if not path.is_file():
        raise ConfigError(str(path), "", "file not found")
    try:
        state = safetensors.torch.load_file(str(path))
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except MissingDependencyError:
        raise
    except Exception as e:  # safetensors raises its own error type for corrupt headers
        raise ConfigError(str(path), "", f"not a readable safetensors file ({e})") from None

    if metadata.get(FOLDED_KEY) == "1":
        fold_batch_norms(model)  # the skeleton takes the folded layout; its values are loaded next
    try:
        state = unpack_state(state, json.loads(metadata.get(PACKED_FORMATS_KEY, "{}")))
    except (KeyError, ValueError) as e:
        raise ConfigError(str(path), "state_dict", f"packed weights unreadable ({e})") from None
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        # torch's message spans lines (missing keys, unexpected keys, shapes); errors here are one line.
        raise ConfigError(str(path), "state_dict", " ".join(str(e).split())) from None


def _check_hashes(folder: Path) -> None:
    manifest_path = folder / MANIFEST_JSON
    if not manifest_path.is_file():
        return
    files = read_json_object(manifest_path).get("files", {})
    for name in HASHED_FILES:
        path = folder / name
        if name in files and path.is_file() and sha256_file(path) != files[name]:
            raise ConfigError(str(path), "", f"sha256 differs from {MANIFEST_JSON}; the bundle was modified")
