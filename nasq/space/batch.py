"""One population's per-genome tables, computed once per scoring call and shared by its consumers.

A predictor-scored search hands each population's genome matrix to several consumers in one
scoring call: the accuracy predictor's feature encoders, the cost model, the latency model (one
per hardware target). Each needs the same tables of the matrix - its canonical rows, the stages'
depths, which genes are active, the layer ids of :class:`~nasq.space.layer_table.LayerTable`,
where the activation format changes - and each used to compute them again (issue 17: the layer
ids three times and the canonical rows four times per call). :meth:`SearchSpace.batch` gives
every consumer the same :class:`GenomeBatch` for the same matrix, from a small cache keyed by
the matrix's bytes, so consumers keep taking plain arrays and nothing is threaded through their
signatures.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

import numpy as np

# Matrices whose batches the space keeps. One scoring call asks for one matrix (its raw and its
# canonical rows: two entries); a few more let callers interleave without losing the hits.
BATCH_CACHE_SIZE = 4


def read_only(a: np.ndarray) -> np.ndarray:
    """A read-only view: the tables are shared between consumers, none may write into another's."""
    view = a.view()
    view.flags.writeable = False
    return view


class GenomeBatch:
    """The tables of a matrix of valid genomes (rows: genomes), each computed on first use and
    then kept: ``G`` (canonical rows), ``depths`` (active depth per stage), ``active`` (active
    genes), ``ids`` (layer ids in execution order, ``table.pad`` where a row has fewer layers;
    None for a space without a layer table) and ``format_changes`` (where a layer's input format
    differs from the previous layer's). Every array is read-only. Built by
    :meth:`SearchSpace.batch`, which has checked and canonicalised ``G`` (or been told by the
    caller that it is canonical)."""

    def __init__(self, space: Any, canonical: np.ndarray, depths: np.ndarray | None = None,
                 active: np.ndarray | None = None):
        self.space = space
        self.G = read_only(canonical)
        # tables canonicalisation already computed: cached_property reads them from __dict__
        if depths is not None:
            self.__dict__["depths"] = read_only(depths)
        if active is not None:
            self.__dict__["active"] = read_only(active)

    def __len__(self) -> int:
        return len(self.G)

    @cached_property
    def depths(self) -> np.ndarray:
        return read_only(self.space.depths_of(self.G))

    @cached_property
    def active(self) -> np.ndarray:
        return read_only(self.space.active_from_depths(self.depths))

    @cached_property
    def table(self) -> Any:
        return self.space.layer_table()

    @cached_property
    def ids(self) -> np.ndarray | None:
        if self.table is None:
            return None
        return read_only(self.table.ids(self.G, self.depths))

    @cached_property
    def present(self) -> np.ndarray | None:
        """Where ``ids`` holds a layer (not the pad)."""
        return None if self.ids is None else read_only(self.ids != self.table.pad)

    @cached_property
    def previous(self) -> np.ndarray | None:
        """Per position of ``ids``, the id of the layer before it in the subnet (pads skipped);
        ``table.pad`` before the first layer, where the input image comes from."""
        if self.ids is None:
            return None
        n, width = self.ids.shape
        last = np.maximum.accumulate(np.where(self.present, np.arange(1, width + 1), 0), axis=1)
        ids_after_pad = np.concatenate([np.full((n, 1), self.table.pad, dtype=np.int64), self.ids], axis=1)
        return read_only(np.take_along_axis(ids_after_pad, np.concatenate([np.zeros((n, 1), dtype=np.int64),
                                                                          last[:, :-1]], axis=1), axis=1))

    @cached_property
    def format_changes(self) -> np.ndarray | None:
        """Where a layer's input format differs from the previous layer's (the image is fp32)."""
        if self.ids is None:
            return None
        return read_only(self.present & (self.table.a_code[self.ids] != self.table.a_code_before[self.previous]))


class BatchCache:
    """The batches of the last :data:`BATCH_CACHE_SIZE` matrices, found by content: same shape
    and every gene equal (one vectorised comparison, newest first; hashing the matrix's bytes
    cost several times more at 1,000 rows). Holds its own copies of the matrices, so a caller
    changing its array in place later finds nothing stale."""

    def __init__(self) -> None:
        self._entries: list[tuple[np.ndarray, GenomeBatch]] = []

    def find(self, G: np.ndarray) -> GenomeBatch | None:
        for matrix, batch in reversed(self._entries):
            if matrix.shape == G.shape and np.array_equal(matrix, G):
                return batch
        return None

    def add(self, G: np.ndarray, batch: GenomeBatch) -> None:
        """Keep ``batch`` for matrices equal to ``G`` (copied unless it is the batch's own rows)."""
        self._entries = [*self._entries[-(BATCH_CACHE_SIZE - 1):], (G if G is batch.G else G.copy(), batch)]
