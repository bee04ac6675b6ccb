"""Every measured latency table: it validates, its notes agree with it, and it covers every layer
of the spaces it claims (``spaces`` in the measurement.json beside it)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nasq.hardware import CostModel, HardwareProfile
from nasq.hardware.table import LATENCY_CSV, MEASUREMENT_JSON, LatencyTable, load_measurement_info
from nasq.predict.latency import (
    LATENCY_MODEL_JSON,
    LatencyPredictor,
    load_profile_predictor,
)
from nasq.space import SearchSpace

REPO = Path(__file__).resolve().parents[2]
TABLES = sorted((REPO / "hardware_profiles").glob(f"*/{LATENCY_CSV}"))


def test_mbconv_small_has_a_measured_table():
    claimed = {s for t in TABLES for s in load_measurement_info(t.parent / MEASUREMENT_JSON).spaces}
    assert "mbconv_small" in claimed


@pytest.mark.parametrize("path", TABLES, ids=lambda p: p.parent.name)
def test_latency_table(path):
    table = LatencyTable.load(path)
    info = load_measurement_info(path.parent / MEASUREMENT_JSON)
    profile = HardwareProfile.from_yaml(path.parent / "profile.yaml")
    assert profile.config.status == "measured" and profile.config.measured_on
    assert info.rows == len(table)
    assert info.unsupported_rows == sum(not r.supported for r in table.rows.values())
    assert all(r.repeats == info.repeats for r in table.rows.values() if r.supported)
    for name in info.spaces:
        space = SearchSpace.from_yaml(REPO / "search_spaces" / f"{name}.yaml")
        assert table.missing(space) == [], f"{path}: lacks rows for space {name}"
        LatencyPredictor(space, table)  # the predictor accepts it
        CostModel(space, profile)  # and the derived roofline covers every format of the space
        if info.fit_subnets:  # the shipped correction was fitted on this very table and space
            assert (path.parent / LATENCY_MODEL_JSON).is_file()
            predictor = load_profile_predictor(path.parent / "profile.yaml", space)
            assert predictor.n_fit == info.fit_subnets
            assert np.all(predictor.predict([space.largest(), space.smallest()]) > 0)
