"""The nasq.testing suites over every registered kind."""

from __future__ import annotations

from pathlib import Path

import pytest

from nasq.formats import FORMATS
from nasq.predict.models import PREDICTORS
from nasq.space import SearchSpace
from nasq.space.kinds import BLOCK_KINDS
from nasq.supernet.network import BLOCKS
from nasq.testing.blocks import check_extract_equals_supernet
from nasq.testing.formats import check_format
from nasq.testing.predictors import check_predictor


@pytest.mark.parametrize("name", FORMATS.names())
def test_format_contract(name):
    check_format(name)


@pytest.mark.parametrize("kind", PREDICTORS.names())
def test_predictor_contract(kind):
    check_predictor(kind)


def test_block_names_agree():
    assert BLOCKS.names() == BLOCK_KINDS.names()


SPACES = sorted((Path(__file__).parents[2] / "search_spaces").glob("*.yaml"))


@pytest.mark.parametrize("block", BLOCKS.names())
def test_every_block_kind_has_a_catalog_space(block):
    assert any(block in {st.block for st in SearchSpace.from_yaml(p).config.stages} for p in SPACES)


@pytest.mark.parametrize("path", SPACES, ids=lambda p: p.stem)
def test_extract_equals_supernet(path):
    """Every catalog space (so every block kind and family), random specs, formats included."""
    worst = check_extract_equals_supernet(SearchSpace.from_yaml(path), n_specs=4)
    assert worst <= 1e-5
