"""The data-source contract (nasq.testing.sources) over every registered source kind, each on a
small case built from real data that ships with packages: a new kind fails here until it has one."""

from __future__ import annotations

import os

import pytest

from nasq.data import SOURCES
from nasq.testing.sources import FIXTURES, check_source


def test_every_registered_source_has_a_fixture():
    assert sorted(FIXTURES) == SOURCES.names()


@pytest.mark.parametrize("kind", SOURCES.names())
def test_source_contract(kind, tmp_path, repo):
    case = FIXTURES[kind](tmp_path, repo)
    if case is None:
        reason = (f"the real data for {kind!r} is absent (Fashion-MNIST: `make data`; "
                  "aeon's series: `pip install --no-deps aeon==1.3.0`, done by `make install`)")
        if os.environ.get("CI", "").strip().lower() == "true":
            pytest.fail(f"{reason}; CI=true: the data-source contract must run in CI, not skip", pytrace=False)
        pytest.skip(reason)
    splits = check_source(case)
    assert splits.name == kind
