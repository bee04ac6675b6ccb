"""Contract of a runtime backend (nasq.profiling.backend.LatencyBackend): declared native and
emulated formats, single-layer rows, and the whole-model hooks with the fidelity check built on
them. Cheap settings throughout (a few timed runs, an 8x8 toy space): the suite checks shape
and behaviour, not speed."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nasq.errors import NasqError
from nasq.export.bundle import export_onnx
from nasq.formats import FORMATS
from nasq.hardware.keys import LayerKey
from nasq.profiling.backend import LatencyBackend, get_backend
from nasq.profiling.layer_models import static_subnet
from nasq.profiling.measure import uniform_formats
from nasq.space import SearchSpace
from nasq.supernet.network import Supernet

# A space small enough to build, export and run a whole subnet in well under a second.
TOY_SPACE = {
    "name": "toy", "input": {"channels": 1, "resolution": 8, "num_classes": 3},
    "stem": {"channels": 4, "kernel": 3, "stride": 2},
    "stages": [{"block": "mbconv", "width": 8, "stride": 1, "depth": [1], "kernel": [3], "expand": [1, 2]}],
    "precision": {"w_format": ["fp32", "int8"], "a_format": ["fp32", "int8"]},
}
# Layers every backend must answer for: a row each, supported with sane times or unsupported with a reason.
CONTRACT_KEYS = (
    LayerKey("conv", 8, 16, 1, 1, 4, "relu6", "fp32", "fp32"),
    LayerKey("conv", 8, 16, 3, 1, 4, "relu6", "int8", "int8"),
    LayerKey("dwconv", 8, 8, 3, 1, 4, "relu6", "int8", "int8"),
    LayerKey("linear", 8, 3, 1, 1, 1, "none", "fp32", "fp32"),
)


def unavailable_reason(name: str) -> str:
    """Why backend ``name`` cannot run here ('' when it can): a test skips with this."""
    try:
        get_backend(name).check_available()
    except NasqError as e:
        return str(e)
    return ""


def check_declarations(name: str) -> None:
    """native | emulated is every registered format, without overlap; fp32 is native."""
    backend = get_backend(name)
    assert isinstance(backend, LatencyBackend) and backend.name == name, f"{name}: registered under another name"
    native, emulated = backend.native_formats, backend.emulated_formats
    assert isinstance(native, frozenset) and isinstance(emulated, frozenset), f"{name}: formats must be frozensets"
    assert not native & emulated, f"{name}: {sorted(native & emulated)} both native and emulated"
    assert native | emulated == set(FORMATS.names()), \
        f"{name}: formats declared neither native nor emulated: {sorted(set(FORMATS.names()) - native - emulated)}"
    assert "fp32" in native, f"{name}: fp32 must be native"


def check_layers(name: str, seed: int = 0) -> None:
    """measure() gives one row per key, sorted; supported rows have ordered positive times."""
    backend = get_backend(name, warmup=1, repeats=3, rounds=2, seed=seed)
    rows = backend.measure([*CONTRACT_KEYS, CONTRACT_KEYS[0]])
    assert list(rows) == sorted(CONTRACT_KEYS), f"{name}: rows are not one per distinct key, sorted"
    for key, row in rows.items():
        if row.supported:
            assert 0 < row.p10_us <= row.median_us <= row.p90_us, f"{name}: {key.token()}: times {row}"
            assert row.repeats == 3, f"{name}: {key.token()}: {row.repeats} repeats, asked for 3"
        else:
            assert row.reason and "\n" not in row.reason, f"{name}: {key.token()}: unsupported without a one-line reason"
    assert rows[CONTRACT_KEYS[0]].supported, f"{name}: an fp32 1x1 conv must be supported"


def toy_export(folder: Path, formats: tuple[str, str] = ("fp32", "fp32"), seed: int = 0,
               batch: int = 4, backend: LatencyBackend | None = None) -> tuple[Path, np.ndarray, np.ndarray]:
    """The toy space's largest subnet with every layer in ``formats`` (w, a), exported to
    ``folder/model.onnx``; returns the path, a seeded sample and the torch logits on it."""
    space = SearchSpace.from_dict(TOY_SPACE)
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # Supernet's initialisation draws from the global RNG
        model = static_subnet(Supernet(space), uniform_formats(space.largest(), *formats), gen)
    x = torch.randn(batch, 1, 8, 8, generator=gen)
    path = folder / "model.onnx"
    if backend is not None:
        backend.lower(model, x[:1], path)  # the runtime's own lowering
    else:
        export_onnx(model, x[:1], path)
    with torch.no_grad():
        return path, x.numpy(), model(x).numpy()


def check_whole_model(name: str, seed: int = 0) -> dict[str, Any]:
    """load_model / run_model / time_model_ms on a toy fp32 subnet, and check() against torch:
    the logits agree (|diff| < 1e-4, same argmax) at a batch other than the export's. A backend
    with ``whole_models = False`` must refuse load_model with a NasqError instead. Returns the
    check's result (empty for such a backend)."""
    backend = get_backend(name, seed=seed)
    with tempfile.TemporaryDirectory(prefix="nasq-contract-") as tmp:
        path, x, want = toy_export(Path(tmp), seed=seed, backend=backend)
        if not backend.whole_models:
            try:
                backend.load_model(path)
            except NasqError:
                return {}
            raise AssertionError(f"{name}: whole_models is False but load_model did not refuse")
        handle = backend.load_model(path)
        got = backend.run_model(handle, x)
        assert got.shape == want.shape, f"{name}: logits of shape {got.shape}, want {want.shape}"
        times = backend.time_model_ms(handle, x[:1], 1, 3)
        assert times.shape == (3,) and np.all(times > 0), f"{name}: time_model_ms gave {times}"
        result = backend.check(path, x, want)
        try:
            backend.check(path, x[:2], want)
        except NasqError:
            pass
        else:
            raise AssertionError(f"{name}: check accepted logits for another number of samples")
    assert result["max_abs_diff"] < 1e-4 and result["top1_agreement"] == 1.0, f"{name}: fp32 subnet differs: {result}"
    return result
