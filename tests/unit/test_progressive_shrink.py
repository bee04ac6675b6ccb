"""Progressive shrinking (TrainConfig.shrink / shrink_epochs; SearchSpace.sample and smallest with
``elastic``): the phases' timing, what a partly elastic draw may vary, and that training under it
is deterministic, resumable and different from training without it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nasq.specs import TrainConfig
from nasq.supernet.network import Supernet
from nasq.supernet.train import elastic_at, step_subnets, train_supernet

SHRINK = TrainConfig(epochs=4, shrink=[["kernel"], ["depth", "expand"]], shrink_epochs=2)


def _data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 1, 28, 28)).astype(np.float32)
    return x, (x[:, 0, :14].mean(axis=(1, 2)) > 0).astype(np.int64)


def test_the_phases_split_the_shrinking_epochs_equally_then_everything_varies():
    total = 100  # 4 epochs: the 2 shrinking epochs are steps 0-49, in two phases of 25
    assert [elastic_at(SHRINK, s, total) for s in (0, 24)] == [{"kernel"}] * 2
    assert [elastic_at(SHRINK, s, total) for s in (25, 49)] == [{"kernel", "depth", "expand"}] * 2
    assert elastic_at(SHRINK, 50, total) is None and elastic_at(SHRINK, 99, total) is None
    assert elastic_at(TrainConfig(epochs=4), 0, total) is None  # no shrink: every field from the start


def test_a_partly_elastic_draw_varies_only_its_fields(space):
    largest = space.largest()
    kernels = set()
    for spec in space.sample(np.random.default_rng(0), 40, elastic={"kernel"}):
        assert spec.depths == largest.depths and spec.widths == largest.widths
        for layer, big in zip(spec.layers(), largest.layers(), strict=True):
            assert (layer.expand, layer.w_format, layer.a_format) == (big.expand, big.w_format, big.a_format)
            kernels.add(layer.kernel)
    assert kernels == {3, 5}
    depths = {spec.depths for spec in space.sample(np.random.default_rng(0), 40, elastic={"depth"})}
    assert len(depths) > 1


def test_elastic_draws_the_same_numbers_so_every_field_is_the_plain_draw(space):
    plain = space.sample(np.random.default_rng(4), 10)
    assert space.sample(np.random.default_rng(4), 10, elastic=space.gene_fields()) == plain
    assert space.sample(np.random.default_rng(4), 10, elastic=()) == [space.largest()] * 10


def test_the_smallest_of_a_phase_is_smallest_in_its_fields_and_largest_elsewhere(space):
    small, big = space.smallest(["kernel"]), space.largest()
    assert small.depths == big.depths
    assert {layer.kernel for layer in small.layers()} == {3}
    assert {(layer.expand, layer.w_format) for layer in small.layers()} == {(6, "fp32")}
    assert space.smallest(space.gene_fields()) == space.smallest()
    assert space.smallest([]) == big


def test_the_step_subnets_follow_the_phase(space):
    early = step_subnets(space, SHRINK, 0, 100)
    assert all(s.depths == space.largest().depths for s in early)
    assert step_subnets(space, SHRINK, 60, 100) == space.sample(np.random.default_rng([SHRINK.seed, 60]), 2)  # the plain draw


def test_unknown_shrink_fields_are_named(space):
    assert space.shrink_problems([["kernel"], ["depth", "heads"]]) == [
        ("train.shrink[1][1]", "must name a gene field of space 'mbconv_small' (depth, kernel, expand, w_format, "
                               "a_format), got 'heads'")]
    with pytest.raises(ValueError, match=r"train.shrink\[0\]\[0\].*got 'width'"):
        train_supernet(Supernet(space), space, *_data(), TrainConfig(epochs=2, shrink=[["width"]], shrink_epochs=1))


@pytest.mark.parametrize("bad", [{"shrink": [["kernel"]]}, {"shrink_epochs": 1.0},
                                 {"shrink": [["kernel"]], "shrink_epochs": 2.0}])
def test_shrink_and_its_epochs_go_together_and_end_before_the_training(bad):
    with pytest.raises(ValueError, match="shrink"):
        TrainConfig(epochs=2, **bad)


def test_shrinking_trains_otherwise_and_resumes_on_the_same_curve(space, tmp_path):
    x, y = _data()
    cfg = TrainConfig(epochs=2, batch_size=16, seed=1, shrink=[[], ["kernel"]], shrink_epochs=1)  # 8 steps
    runs = []
    for c in (cfg, cfg.model_copy(update={"shrink": [], "shrink_epochs": 0.0})):
        torch.manual_seed(0)
        runs.append(train_supernet(Supernet(space), space, x, y, c).losses)
    assert runs[0] != runs[1]
    torch.manual_seed(0)
    train_supernet(Supernet(space), space, x, y, cfg, checkpoint_dir=tmp_path, stop_after=3)  # mid-phase 2
    torch.manual_seed(1)  # the resumed run takes everything from the checkpoint
    resumed = train_supernet(Supernet(space), space, x, y, cfg, checkpoint_dir=tmp_path, resume=True)
    assert resumed.resumed_from == 3 and resumed.losses == pytest.approx(runs[0], rel=1e-5)
