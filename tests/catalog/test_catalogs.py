"""Every file of the three catalogs: schema, cross references, hash stability."""

from __future__ import annotations

from pathlib import Path

import pytest

from nasq.files import sha256_file
from nasq.hardware import HardwareProfile
from nasq.predict.fit import Recipe
from nasq.space import SearchSpace

REPO = Path(__file__).resolve().parents[2]
SPACES = sorted((REPO / "search_spaces").glob("*.yaml"))
PROFILES = sorted((REPO / "hardware_profiles").glob("*/profile.yaml"))
RECIPES = sorted((REPO / "predictors").glob("*.yaml"))


def test_catalogs_are_not_empty():
    assert SPACES and PROFILES and RECIPES


@pytest.mark.parametrize("path", SPACES, ids=lambda p: p.stem)
def test_space(path):
    space = SearchSpace.from_yaml(path)
    assert space.name == path.stem
    assert space.hash == sha256_file(path)
    assert space.n_genes == len(space.upper) > 0
    assert space.largest().key() != space.smallest().key()
    assert any(p.supported >= space.all_formats() for p in map(HardwareProfile.from_yaml, PROFILES))


@pytest.mark.parametrize("path", PROFILES, ids=lambda p: p.parent.name)
def test_profile(path):
    prof = HardwareProfile.from_yaml(path)
    assert prof.name == path.parent.name
    assert prof.hash == sha256_file(path)
    assert "fp32" in prof.supported


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipe(path):
    recipe = Recipe.from_yaml(path)
    assert recipe.config.name == path.stem
    assert recipe.hash == sha256_file(path)
