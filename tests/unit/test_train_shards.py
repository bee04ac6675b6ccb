"""Data-parallel supernet training, the pure-logic pieces: how a global batch is split, that every
rank draws the same subnets and data, and that the shards' share-weighted gradients add up to the
global batch's. The last test runs two real ``torch.distributed`` (gloo) processes without Ray."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from nasq.specs import TrainConfig
from nasq.supernet.network import Supernet
from nasq.supernet.train import (
    Shard,
    _sandwich_step,
    epoch_order,
    shard_bounds,
    step_subnets,
    train_supernet,
    weights_config,
)


@pytest.mark.parametrize("n", [2, 7, 64, 65, 128])
@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_shards_cover_the_batch_once_and_evenly(n, world):
    bounds = [shard_bounds(n, Shard(r, world)) for r in range(world)]
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:], strict=False))  # contiguous, no overlap
    sizes = [hi - lo for lo, hi in bounds]
    assert max(sizes) - min(sizes) <= 1


def test_every_rank_draws_the_same_subnets_and_batches(space):
    """The draws depend on (seed, step) and (seed, epoch) only: what rank 1 computes is what rank 0
    computes, and a different seed draws differently (so the check can fail)."""
    cfg = TrainConfig(seed=7, random_subnets=3)
    for step in range(5):
        a, b = step_subnets(space, cfg, step, 10), step_subnets(space, cfg, step, 10)
        assert [s.to_dict() for s in a] == [s.to_dict() for s in b]
    other = TrainConfig(seed=8, random_subnets=3)
    assert [s.to_dict() for s in step_subnets(space, cfg, 0, 10)] != [s.to_dict() for s in step_subnets(space, other, 0, 10)]
    assert np.array_equal(epoch_order(cfg, 100, 2), epoch_order(cfg, 100, 2))
    assert not np.array_equal(epoch_order(cfg, 100, 2), epoch_order(other, 100, 2))


def test_workers_do_not_change_the_weights_fingerprint():
    assert weights_config(TrainConfig(workers=1)) == weights_config(TrainConfig(workers=4))


def _grads(net: Supernet) -> dict[str, torch.Tensor]:
    out = {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}
    net.zero_grad(set_to_none=True)
    return out


def test_share_weighted_shard_gradients_add_up_to_the_global_batch(space):
    """With batch norm on its running statistics (eval mode) a sample's gradient does not depend on
    the rest of its batch, so the sum over unequal shards must equal one process's gradient."""
    torch.manual_seed(0)
    net = Supernet(space).eval()
    x = torch.randn(13, 1, 28, 28)
    y = torch.randint(0, 10, (13,))
    others = [space.smallest()]
    whole_loss = _sandwich_step(net, net, x, y, space.largest(), others, True)
    whole = _grads(net)
    total, summed = 0.0, {}
    for rank in range(2):  # unequal shards: 6 and 7
        lo, hi = shard_bounds(13, Shard(rank, 2))
        total += _sandwich_step(net, net, x[lo:hi], y[lo:hi], space.largest(), others, True, (hi - lo) / 13)
        for name, g in _grads(net).items():
            summed[name] = summed.get(name, 0) + g
    assert summed.keys() == whole.keys()
    assert total == pytest.approx(whole_loss, rel=1e-5)
    for name, g in whole.items():
        torch.testing.assert_close(summed[name], g, rtol=1e-4, atol=1e-6)


def _rank(rank: int, world: int, folder: str, space, x, y, cfg) -> None:
    import torch.distributed as dist

    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # loopback only
    dist.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank, world_size=world)
    torch.set_num_threads(1)
    torch.manual_seed(rank)  # different initial weights: the broadcast from rank 0 must fix them
    net = Supernet(space)
    res = train_supernet(net, space, x, y, cfg, checkpoint_dir=f"{folder}/ckpt", shard=Shard(rank, world))
    torch.save({"state": net.state_dict(), "losses": res.losses}, f"{folder}/rank{rank}.pt")
    dist.destroy_process_group()


def test_two_gloo_ranks_stay_identical_and_follow_one_process(space, tmp_path):
    """Two real processes: the same weights on both ranks after training (every rank takes the same
    optimizer step), rank 0's checkpoint written, and a loss curve within batch-norm noise of one
    process's (BN statistics per shard of 16 instead of the batch of 32)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 1, 28, 28)).astype(np.float32)
    y = (x[:, 0, :14].mean(axis=(1, 2)) > 0).astype(np.int64)
    cfg = TrainConfig(epochs=1, batch_size=32, seed=2, threads=1, random_subnets=0, checkpoint_every=1)
    mp.start_processes(_rank, args=(2, str(tmp_path), space, x, y, cfg), nprocs=2, join=True, start_method="spawn")
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in range(2))  # our own files, written just above
    assert r0["losses"] == r1["losses"]
    for k, v in r0["state"].items():
        assert torch.equal(v, r1["state"][k]), k
    assert (tmp_path / "ckpt" / "checkpoint.safetensors").is_file()
    torch.manual_seed(0)
    one = train_supernet(Supernet(space), space, x, y, cfg)
    assert len(one.losses) == len(r0["losses"]) == 2
    assert np.max(np.abs(np.array(one.losses) - np.array(r0["losses"]))) < 0.02


@pytest.mark.parametrize("train, ray, field", [
    ({"workers": 2}, {"address": "none"}, "ray.address is 'none'"),
    ({"workers": 3, "batch_size": 4}, {"address": "local"}, "train.batch_size >= 6"),
])
def test_workers_the_train_stage_cannot_run_are_one_line_config_errors(tmp_path, train, ray, field):
    import yaml

    from nasq.errors import ConfigError
    from nasq.experiment import load_experiment
    from nasq.stages.train import check_workers

    p = tmp_path / "w.yaml"
    p.write_text(yaml.safe_dump({"name": "w", "workdir": str(tmp_path / "run"), "data": {"name": "digits"},
                                 "space": "mbconv_small", "train": train, "ray": ray}))
    with pytest.raises(ConfigError, match="train.workers") as e:
        check_workers(load_experiment(p))
    assert field in str(e.value) and "\n" not in str(e.value) and str(p.name) in str(e.value)
