from __future__ import annotations

import numpy as np
import pytest
import torch

from nasq.specs import TrainConfig
from nasq.supernet.evaluate import EvalPayload, SubnetEvaluator, state_to_numpy
from nasq.supernet.network import Supernet
from nasq.supernet.train import train_supernet


def _data(n=256, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 1, 28, 28)).astype(np.float32)
    y = (x[:, 0, :14].mean(axis=(1, 2)) > 0).astype(np.int64)  # learnable
    return x, y


def test_training_is_deterministic_and_learns(space):
    x, y = _data()
    cfg = TrainConfig(epochs=2, batch_size=64, lr=0.05, seed=5)
    losses = []
    for _ in range(2):
        torch.manual_seed(0)
        net = Supernet(space)
        res = train_supernet(net, space, x, y, cfg)
        losses.append(res.losses)
    assert losses[0] == losses[1]
    assert np.mean(losses[0][-2:]) < losses[0][0]


def test_fake_quant_gradients_reach_weights(space):
    net = Supernet(space)
    net.set_active(space.smallest())  # int4 weights and activations
    net.train()
    net(torch.randn(8, 1, 28, 28)).sum().backward()
    grads = [p.grad for p in net.stages[0][0].parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)


def test_evaluator_rebuilds_from_numpy(space):
    x, y = _data(128)
    torch.manual_seed(0)
    net = Supernet(space)
    ev = SubnetEvaluator(EvalPayload(space.config.model_dump(mode="json"), state_to_numpy(net), x[:64], x, y, 64))
    specs = space.sample(np.random.default_rng(0), 2)
    a, b = ev(specs), ev(specs)
    assert a == b and all(0 <= v <= 100 for v in a)


@pytest.mark.parametrize("optimizer, lr", [("sgd", 0.05), ("adamw", 1e-3)])
def test_resumed_training_continues_the_same_loss_curve(space, tmp_path, optimizer, lr):
    from nasq.supernet.train import CHECKPOINT_STATE

    x, y = _data(384)
    cfg = TrainConfig(epochs=2, batch_size=64, seed=3, checkpoint_every=4, optimizer=optimizer, lr=lr)
    torch.manual_seed(0)
    whole = train_supernet(Supernet(space), space, x, y, cfg)
    torch.manual_seed(0)
    cut = train_supernet(Supernet(space), space, x, y, cfg, checkpoint_dir=tmp_path, stop_after=7)
    assert not cut.completed and (tmp_path / CHECKPOINT_STATE).is_file()
    torch.manual_seed(123)  # a different initialisation: the checkpoint must overwrite it
    net = Supernet(space)
    resumed = train_supernet(net, space, x, y, cfg, checkpoint_dir=tmp_path, resume=True)
    assert resumed.resumed_from == 7 and resumed.completed
    assert resumed.losses == whole.losses


def test_checkpoint_of_another_config_is_refused(space, tmp_path):
    import pytest

    from nasq.errors import LineageError

    x, y = _data(128)
    cfg = TrainConfig(epochs=1, batch_size=64, seed=3)
    train_supernet(Supernet(space), space, x, y, cfg, checkpoint_dir=tmp_path, stop_after=1)
    with pytest.raises(LineageError, match="checkpoint.json: train: "):
        train_supernet(Supernet(space), space, x, y, TrainConfig(epochs=1, batch_size=64, seed=4),
                       checkpoint_dir=tmp_path, resume=True)


@pytest.mark.gpu
def test_gpu_training_with_bf16_and_compile(tmp_path):
    """On a GPU the trainer's defaults are bf16 autocast and torch.compile; it must still learn and
    hand back a CPU supernet whose extraction matches it."""
    from pathlib import Path

    from nasq.space import SearchSpace

    space = SearchSpace.from_yaml(Path(__file__).resolve().parents[2] / "search_spaces" / "vit_fmnist.yaml")
    x, y = _data(512)
    torch.manual_seed(0)
    net = Supernet(space)
    res = train_supernet(net, space, x, y, TrainConfig(epochs=2, batch_size=64, device="auto"))
    assert res.device == "cuda" and np.mean(res.losses[-2:]) < res.losses[0]
    assert next(net.parameters()).device.type == "cpu"
