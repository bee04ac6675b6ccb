from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Real Ray in tests stays on loopback with no leftover auth state (see docs/architecture.md).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


def _load_benchmark(name: str):
    """``benchmarks/<name>.py`` as a module (benchmarks are scripts, not a package), for tests of
    their own logic."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def benchmark_module():
    """A loader: ``benchmark_module("eval_noise")`` is benchmarks/eval_noise.py as a module."""
    return _load_benchmark


@pytest.fixture(scope="session")
def space():
    from nasq.space import SearchSpace

    return SearchSpace.from_yaml(REPO / "search_spaces" / "mbconv_small.yaml")


@pytest.fixture(scope="session")
def profile():
    from nasq.hardware import HardwareProfile

    return HardwareProfile.from_yaml(REPO / "hardware_profiles" / "cpu_roofline" / "profile.yaml")


@pytest.fixture(scope="session")
def cost(space, profile):
    """The demo space's cost model on the roofline profile (search tests with synthetic evaluators)."""
    from nasq.hardware import CostModel

    return CostModel(space, profile)


@pytest.fixture(scope="session")
def fit_predictor(space, cost, repo):
    """The gbdt_onehot recipe's predictor fitter, as the pipeline injects it into a search."""
    from nasq.predict.fit import AccuracyPredictor, Recipe

    recipe = Recipe.from_yaml(repo / "predictors" / "gbdt_onehot.yaml")
    return lambda specs, top1, seed: AccuracyPredictor(recipe, space, cost, seed).fit(specs, top1)


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        has_cuda = False
    skip_gpu = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(skip_gpu)
