"""The runtime-backend contract (nasq.testing.backends) over every registered backend that can
run here; torch-cuda's runtime checks carry the ``gpu`` marker (skipped without CUDA)."""

from __future__ import annotations

import pytest

from nasq.profiling.backend import BACKENDS
from nasq.testing.backends import (
    check_declarations,
    check_layers,
    check_whole_model,
    unavailable_reason,
)

# Backends that need a device this suite marks: the conftest skips ``gpu`` tests without CUDA.
NEEDS_GPU = {"torch-cuda"}


def _runtime_params() -> list:
    return [pytest.param(name, marks=[pytest.mark.gpu] if name in NEEDS_GPU else []) for name in BACKENDS.names()]


def _available(name: str) -> None:
    reason = unavailable_reason(name)
    if reason:
        pytest.skip(f"{name} cannot run here: {reason}")


@pytest.mark.parametrize("name", BACKENDS.names())
def test_backend_declares_native_and_emulated_formats(name):
    check_declarations(name)


@pytest.mark.parametrize("name", _runtime_params())
def test_backend_measures_layers(name):
    _available(name)
    check_layers(name)


@pytest.mark.parametrize("name", _runtime_params())
def test_backend_runs_and_checks_a_whole_model(name):
    _available(name)
    check_whole_model(name)


@pytest.mark.parametrize("name", [n for n in BACKENDS.names() if n in NEEDS_GPU])
def test_layer_only_backend_refuses_whole_models_without_its_device(name):
    """Checked without the device too: refusing an ONNX file needs no GPU."""
    check_whole_model(name)
