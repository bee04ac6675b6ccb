"""The nasq.testing suites over every registered kind."""

from __future__ import annotations

import pytest

from nasq.formats import FORMATS
from nasq.predict.models import PREDICTORS
from nasq.supernet.network import BLOCKS
from nasq.supernet_kinds import BLOCK_KINDS
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


@pytest.mark.parametrize("block", BLOCKS.names())
def test_extract_equals_supernet(block, space):
    assert block in {st.block for st in space.config.stages}
    worst = check_extract_equals_supernet(space, n_specs=4)
    assert worst <= 1e-5
