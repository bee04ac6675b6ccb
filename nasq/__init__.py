"""nasq: neural architecture and quantization-policy search.

``import nasq`` is light: it loads no torch, ray, mlflow or onnxruntime. The public API below is
resolved lazily on first use.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_API = {
    "SearchSpace": "nasq.space",
    "SubnetSpec": "nasq.space",
    "GenericSpace": "nasq.space",
    "load_space": "nasq.space",
    "search_generic": "nasq.search.generic",
    "costs_from_functions": "nasq.search.generic",
    "LayerChoice": "nasq.space",
    "HardwareProfile": "nasq.hardware",
    "CostModel": "nasq.hardware",
    "ExperimentConfig": "nasq.specs",
    "load_experiment": "nasq.experiment",
    "run_pipeline": "nasq.stages.pipeline",
    "Front": "nasq.search.pareto",
    "FORMATS": "nasq.formats",
    "get_format": "nasq.formats",
    "load_export": "nasq.export.bundle",
    "NasqError": "nasq.errors",
    "ConfigError": "nasq.errors",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(import_module(_API[name]), name)
    raise AttributeError(f"module 'nasq' has no attribute {name!r}")
