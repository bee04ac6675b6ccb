"""Search over genomes with predictors in the loop. Never imports nasq.supernet: the search sees
genomes, predictors, a cost model and an injected ``evaluate(specs) -> top1`` callable.

``search_generic`` and ``costs_from_functions`` (:mod:`nasq.search.generic`) drive it on a foreign
problem from Python; they are resolved on first use, so importing a submodule stays light."""

from __future__ import annotations

from importlib import import_module
from typing import Any

_LAZY = {"search_generic": "nasq.search.generic", "costs_from_functions": "nasq.search.generic",
         "run_search": "nasq.search.loop", "SearchTask": "nasq.search.strategy", "Objective": "nasq.search.pareto"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'nasq.search' has no attribute {name!r}")
