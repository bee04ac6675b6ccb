"""The training recipe's settings (nasq.specs.TrainConfig, nasq.supernet.train, .augment): each one
changes what it should and nothing else, presets fill only unset fields, bad values are one-line
ConfigErrors, and checkpoints keep their lineage across the new fields."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from nasq.errors import ConfigError, LineageError
from nasq.experiment import load_experiment
from nasq.space import SearchSpace
from nasq.specs import TrainConfig
from nasq.supernet.augment import crop_flip, pad_for
from nasq.supernet.network import Supernet
from nasq.supernet.train import (
    CHECKPOINT_STATE,
    _sandwich_step,
    augments,
    lr_at,
    train_supernet,
    warmup_steps,
    weights_config,
)

REPO = Path(__file__).resolve().parents[2]


def _data(n=128, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 1, 28, 28)).astype(np.float32)
    return x, (x[:, 0, :14].mean(axis=(1, 2)) > 0).astype(np.int64)


# ---------------------------------------------------------------- warm-up
def test_warmup_rises_linearly_then_follows_the_cosine():
    cfg = TrainConfig(epochs=2, warmup_epochs=0.2, lr=0.1)
    total = 100
    assert warmup_steps(cfg, total) == 10
    assert lr_at(cfg, 0, total) == pytest.approx(0.01)  # lr / warm: the first step already trains
    assert lr_at(cfg, 4, total) == pytest.approx(0.05)
    assert lr_at(cfg, 9, total) == pytest.approx(0.1)  # the end of the warm-up reaches lr
    assert lr_at(cfg, 10, total) == pytest.approx(0.1)  # the cosine starts there, at lr
    assert lr_at(cfg, 55, total) == pytest.approx(0.05)  # half-way through the cosine's 90 steps
    assert lr_at(cfg, 99, total) < 0.001


def test_no_warmup_keeps_the_plain_cosine():
    cfg = TrainConfig(epochs=1, lr=0.1)
    assert warmup_steps(cfg, 50) == 0
    assert lr_at(cfg, 0, 50) == pytest.approx(0.1)
    assert lr_at(cfg, 25, 50) == pytest.approx(0.05)


# ---------------------------------------------------------------- augmentation
def test_crop_flip_is_seeded_and_keeps_shape_dtype_and_content():
    x = torch.randn(16, 3, 12, 12, dtype=torch.float64)
    a, b = crop_flip(x, 0, 5), crop_flip(x, 0, 5)
    assert torch.equal(a, b) and a.shape == x.shape and a.dtype == x.dtype
    assert not torch.equal(a, x)
    assert not torch.equal(a, crop_flip(x, 0, 6)) and not torch.equal(a, crop_flip(x, 1, 5))
    pad = pad_for(12)
    # every output pixel is an input pixel of the same image and channel (crop of an edge-padded copy)
    padded = torch.nn.functional.pad(x, (pad,) * 4, mode="replicate")
    for i in range(4):
        values = set(padded[i, 0].flatten().tolist())
        assert set(a[i, 0].flatten().tolist()) <= values


def test_crop_flip_of_a_shard_is_its_part_of_the_global_batch():
    x = torch.randn(10, 1, 28, 28)
    whole = crop_flip(x, 3, 7)
    assert torch.equal(crop_flip(x[4:9], 3, 7, lo=4, n_total=10), whole[4:9])


def test_augmentation_only_for_image_inputs(space):
    assert augments(space)
    assert not augments(SearchSpace.from_yaml(REPO / "search_spaces" / "seq_series.yaml"))
    assert not augments(SearchSpace.from_yaml(REPO / "search_spaces" / "mlp_table.yaml"))


def test_augment_changes_image_training_and_is_deterministic(space):
    x, y = _data(64)
    runs = {}
    for aug in (False, True, True):
        torch.manual_seed(0)
        res = train_supernet(Supernet(space), space, x, y, TrainConfig(epochs=1, batch_size=32, augment=aug),
                             stop_after=1)
        runs.setdefault(aug, []).append(res.losses)
    assert runs[True][0] == runs[True][1]
    assert runs[True][0] != runs[False][0]


def test_augment_leaves_a_table_alone():
    space = SearchSpace.from_yaml(REPO / "search_spaces" / "mlp_table.yaml")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, space.config.input.features)).astype(np.float32)
    y = rng.integers(0, space.config.input.num_classes, 64)
    losses = []
    for aug in (False, True):
        torch.manual_seed(0)
        losses.append(train_supernet(Supernet(space), space, x, y, TrainConfig(epochs=1, batch_size=32, augment=aug)).losses)
    assert losses[0] == losses[1]


# ---------------------------------------------------------------- losses
def _step(space, **kw):
    torch.manual_seed(0)
    net = Supernet(space)
    net.train()
    x, y = _data(16)
    loss = _sandwich_step(net, net, torch.from_numpy(x), torch.from_numpy(y), space.largest(), [space.smallest()], True, **kw)
    grad = torch.cat([p.grad.flatten() for p in net.parameters() if p.grad is not None])
    return loss, grad


def test_label_smoothing_changes_the_loss(space):
    plain, _ = _step(space)
    smooth, _ = _step(space, smoothing=0.1)
    assert smooth != pytest.approx(plain)


def test_distill_temperature_one_is_the_old_loss_and_other_values_change_the_gradient(space):
    l0, g0 = _step(space)
    l1, g1 = _step(space, temperature=1.0)
    l4, g4 = _step(space, temperature=4.0)
    assert l0 == l1 and torch.equal(g0, g1)
    assert l4 == l0  # the largest subnet's hard-label loss is what is returned
    assert not torch.allclose(g4, g0)


# ---------------------------------------------------------------- presets and bad values
def test_preset_fills_only_unset_fields():
    demo = TrainConfig(recipe="demo", epochs=2)
    assert demo.label_smoothing == 0.1 and demo.warmup_epochs == pytest.approx(0.1) and not demo.augment
    full = TrainConfig(recipe="full")
    assert full.epochs == 10 and not full.augment and full.label_smoothing == 0.1 and full.warmup_epochs == pytest.approx(0.5)
    mine = TrainConfig(recipe="full", epochs=3, augment=False, label_smoothing=0.0, warmup_epochs=0.25, lr=0.02)
    assert (mine.epochs, mine.augment, mine.label_smoothing, mine.warmup_epochs, mine.lr) == (3, False, 0.0, 0.25, 0.02)
    assert TrainConfig(recipe="custom") == TrainConfig()


def _exp(tmp_path: Path, train: dict) -> Path:
    p = tmp_path / "exp.yaml"
    p.write_text(yaml.safe_dump({"name": "recipe", "data": {"name": "digits"}, "space": "mbconv_small",
                                 "hardware": ["cpu_roofline"], "predictor": "gbdt_onehot", "train": train}))
    return p


@pytest.mark.parametrize("train, field", [
    ({"recipe": "fast"}, "train.recipe"),
    ({"recipe": ["full"]}, "train.recipe"),
    ({"label_smoothing": 1.0}, "train.label_smoothing"),
    ({"label_smoothing": -0.1}, "train.label_smoothing"),
    ({"distill_temperature": 0}, "train.distill_temperature"),
    ({"warmup_epochs": -1}, "train.warmup_epochs"),
    ({"epochs": 1, "warmup_epochs": 1}, "train"),
    ({"augment": "maybe"}, "train.augment"),
    ({"shrink": [["kernel"]]}, "train"),
    ({"shrink": [["kernel"]], "shrink_epochs": 0.5, "epochs": 0.5}, "train"),
    ({"shrink": [["kernal"]], "shrink_epochs": 0.5}, "train.shrink[0][0]"),
])
def test_bad_recipe_values_are_one_line_config_errors(tmp_path, train, field):
    p = _exp(tmp_path, train)
    with pytest.raises(ConfigError) as e:
        load_experiment(p)
    msg = str(e.value)
    assert "\n" not in msg and str(p) in msg and field in msg


def test_experiment_file_with_a_preset_loads(tmp_path):
    exp = load_experiment(_exp(tmp_path, {"recipe": "demo", "epochs": 1.0}))
    assert exp.config.train.label_smoothing == 0.1 and exp.config.train.warmup_epochs == pytest.approx(0.05)


# ---------------------------------------------------------------- checkpoint lineage
def test_fingerprint_has_new_fields_only_when_they_change_training():
    old = weights_config(TrainConfig())
    assert not {"warmup_epochs", "label_smoothing", "augment", "distill_temperature", "shrink", "shrink_epochs",
                "recipe"} & set(old)
    assert weights_config(TrainConfig(label_smoothing=0.1))["label_smoothing"] == 0.1
    assert weights_config(TrainConfig(recipe="demo")) == weights_config(TrainConfig(label_smoothing=0.1, warmup_epochs=0.05))


def test_old_checkpoint_resumes_and_another_recipe_is_refused(space, tmp_path):
    x, y = _data(64)
    cfg = TrainConfig(epochs=1, batch_size=32, seed=3)
    torch.manual_seed(0)
    train_supernet(Supernet(space), space, x, y, cfg, checkpoint_dir=tmp_path, stop_after=1)
    state = json.loads((tmp_path / CHECKPOINT_STATE).read_text())
    # a checkpoint written before the recipe fields existed: its fingerprint lacks them
    state["train"] = {k: v for k, v in state["train"].items()
                      if k not in ("warmup_epochs", "label_smoothing", "augment", "distill_temperature")}
    (tmp_path / CHECKPOINT_STATE).write_text(json.dumps(state))
    with pytest.raises(LineageError, match="checkpoint.json: train: "):
        train_supernet(Supernet(space), space, x, y, TrainConfig(epochs=1, batch_size=32, seed=3, recipe="demo"),
                       checkpoint_dir=tmp_path, resume=True)
    # one written while a neutral field was kept at its default (shrink: [], 08f841d..306d30b): the same
    state["train"] = {**state["train"], "shrink": [], "shrink_epochs": 0.0}
    (tmp_path / CHECKPOINT_STATE).write_text(json.dumps(state))
    res = train_supernet(Supernet(space), space, x, y, cfg, checkpoint_dir=tmp_path, resume=True)
    assert res.resumed_from == 1 and res.completed
