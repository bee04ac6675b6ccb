"""The predictor contract bound to a space: over every registered kind and every recipe file."""

from __future__ import annotations

from pathlib import Path

import pytest

from nasq.hardware import CostModel
from nasq.predict.fit import Recipe
from nasq.predict.models import PREDICTORS
from nasq.specs import RecipeConfig
from nasq.testing.predictors import FAST_PARAMS, check_recipe_round_trip

RECIPES = sorted((Path(__file__).resolve().parents[2] / "predictors").glob("*.yaml"))


@pytest.mark.parametrize("kind", PREDICTORS.names())
def test_kind_round_trip_and_foreign_space(kind, space, profile):
    config = RecipeConfig(name=f"contract_{kind}", kind=kind, features=("onehot", "costs"),
                          params=FAST_PARAMS.get(kind, {}))
    check_recipe_round_trip(Recipe(config), space, CostModel(space, profile))


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipe_file_round_trip_and_foreign_space(path, space, profile):
    check_recipe_round_trip(Recipe.from_yaml(path), space, CostModel(space, profile), n=24)
