"""The predictor contract bound to a space: over every registered kind and every recipe file."""

from __future__ import annotations

from pathlib import Path

import pytest

from nasq.hardware import CostModel
from nasq.hardware.table import LATENCY_CSV, MEASUREMENT_JSON, LatencyTable, load_measurement_info
from nasq.predict.fit import Recipe
from nasq.predict.models import PREDICTORS
from nasq.space import SearchSpace
from nasq.specs import RecipeConfig
from nasq.testing.predictors import FAST_PARAMS, check_latency_predictor, check_recipe_round_trip

REPO = Path(__file__).resolve().parents[2]
RECIPES = sorted((REPO / "predictors").glob("*.yaml"))
# every measured table with each space it was measured for
MEASURED = [(t, name) for t in sorted((REPO / "hardware_profiles").glob(f"*/{LATENCY_CSV}"))
            for name in load_measurement_info(t.parent / MEASUREMENT_JSON).spaces]


@pytest.mark.parametrize("kind", PREDICTORS.names())
def test_kind_round_trip_and_foreign_space(kind, space, profile):
    config = RecipeConfig(name=f"contract_{kind}", kind=kind, features=("onehot", "costs"),
                          params=FAST_PARAMS.get(kind, {}))
    check_recipe_round_trip(Recipe(config), space, CostModel(space, profile))


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipe_file_round_trip_and_foreign_space(path, space, profile):
    check_recipe_round_trip(Recipe.from_yaml(path), space, CostModel(space, profile), n=24)


@pytest.mark.parametrize(("table_path", "space_name"), MEASURED, ids=lambda v: getattr(v, "parent", Path(str(v))).name)
def test_latency_predictor_contract(table_path, space_name):
    space = SearchSpace.from_yaml(REPO / "search_spaces" / f"{space_name}.yaml")
    check_latency_predictor(space, LatencyTable.load(table_path))
