"""``benchmarks/supernet_quality.py --epochs``: one number for every family, or ``KEY=E`` per
family or space, the most specific entry winning; a word that is neither is refused by name.
``--distill-temperature``, ``--random-subnets``, ``--shrink`` and ``--seed`` reach the training
config; the first two are refused, exit 2, outside TrainConfig's bounds, and ``--shrink`` without
``--shrink-epochs``."""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from nasq.space import SearchSpace

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def sq(benchmark_module):
    return benchmark_module("supernet_quality")


@pytest.fixture(scope="module")
def spaces():
    return {n: SearchSpace.from_yaml(REPO / "search_spaces" / f"{n}.yaml") for n in ("mbconv_fmnist", "seq_fmnist")}


def test_the_most_specific_entry_wins(sq, spaces):
    words = ["6", "sequence=18", "mbconv_fmnist=7"]
    assert sq.epochs_for(spaces["mbconv_fmnist"], words) == 7.0  # the space's, over the bare number
    assert sq.epochs_for(spaces["seq_fmnist"], words) == 18.0  # the family's
    assert sq.epochs_for(spaces["seq_fmnist"], ["6", "seq_fmnist=2", "sequence=18"]) == 2.0
    assert sq.epochs_for(spaces["mbconv_fmnist"], ["vit=8"]) is None  # the recipe's
    assert sq.epochs_for(spaces["mbconv_fmnist"], 5.0) == 5.0  # one number (activation_ranges.py)
    assert sq.epochs_for(spaces["mbconv_fmnist"], None) is None


@pytest.mark.parametrize("words, says", [
    (["vitt=8"], "'vitt=8' names no family or space"),
    (["six"], "'six' is not a number of epochs"),
    (["vit=0"], "epochs must lie in (0, 1000]"),
    (["5", "4"], "the bare number given twice"),
    (["vit=5", "vit=6"], "vit given twice"),
])
def test_bad_words_are_refused_by_name(sq, words, says):
    with pytest.raises(ValueError, match=re.escape(says)):
        sq.parse_epochs(words, ["mbconv_fmnist", "vit_fmnist"])


def test_the_budget_named_in_help_parses(sq):
    per = sq.parse_epochs(list(sq.BUDGET_30MIN), ["mbconv_fmnist", "resnet_fmnist", "vit_fmnist", "seq_fmnist"])
    assert per[""] > 0 and set(per) <= {"", "mbconv", "resnet", "vit", "sequence"}
    assert sq.epochs_words(per[""]) == [f"{per['']:g}"] and sq.epochs_words(["6", "vit=8"]) == ["6", "vit=8"]


def test_distill_temperature_and_random_subnets_reach_the_training_config(sq, spaces):
    knobs = dict(distill="auto", epochs=None, batch_size=128, device="cpu", adamw_lr=2e-3, lr=0.05, amp="off",
                 compile="off")
    space = spaces["mbconv_fmnist"]
    assert sq.train_config(space, "full", argparse.Namespace(**knobs, distill_temperature=2.0)).distill_temperature == 2.0
    # benchmarks/activation_ranges.py passes knobs without it: the TrainConfig default, T = 1
    assert sq.train_config(space, "full", argparse.Namespace(**knobs)).distill_temperature == 1.0
    assert sq.train_config(space, "full", argparse.Namespace(**knobs, random_subnets=1)).random_subnets == 1
    assert sq.train_config(space, "full", argparse.Namespace(**knobs)).random_subnets == 2  # the default


def test_shrink_and_seed_reach_the_training_config(sq, spaces):
    knobs = dict(distill="auto", epochs=["7"], batch_size=128, device="cpu", adamw_lr=2e-3, lr=0.05, amp="off",
                 compile="off")
    space = spaces["mbconv_fmnist"]
    cfg = sq.train_config(space, "full", argparse.Namespace(**knobs, shrink=["kernel", "depth", "expand,width"],
                                                            shrink_epochs=3.0, seed=4))
    assert cfg.shrink == [["kernel"], ["depth"], ["expand", "width"]] and cfg.shrink_epochs == 3.0 and cfg.seed == 4
    plain = sq.train_config(space, "full", argparse.Namespace(**knobs))
    assert plain.shrink == [] and plain.shrink_epochs == 0.0 and plain.seed == 0


def test_shrink_without_its_epochs_is_refused(sq, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["supernet_quality.py", "--shrink", "kernel", "--no-write"])
    with pytest.raises(SystemExit) as exit_:
        sq.main()
    assert exit_.value.code == 2 and "--shrink and --shrink-epochs" in capsys.readouterr().err


@pytest.mark.parametrize("flag, value, bounds", [
    ("--distill-temperature", "0", "(0, 100]"), ("--distill-temperature", "-1", "(0, 100]"),
    ("--distill-temperature", "101", "(0, 100]"), ("--random-subnets", "-1", "[0, 64]"),
    ("--random-subnets", "65", "[0, 64]"),
])
def test_a_knob_out_of_bounds_is_refused_by_name(sq, flag, value, bounds, monkeypatch, capsys):
    # refused while parsing the arguments, before any data is loaded: main() in-process is enough
    monkeypatch.setattr(sys, "argv", ["supernet_quality.py", flag, value, "--no-write"])
    with pytest.raises(SystemExit) as exit_:
        sq.main()
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and flag in err and bounds in err


def test_retest_rows_render_and_keep_the_budget_time(sq, tmp_path):
    row = {"space": "mbconv_fmnist", "recipe": "full", "alone": [1.0, 2.0, 3.0], "inherited": [3.0, 2.0, 1.0]}
    sq.save_row(row, str(tmp_path), started=0.0)  # a timed part: total_s from the family's start
    timed = row["total_s"]
    assert timed > 0
    row.update({"retest_tau": 0.5, "tau_again": -0.25, "retest_s": 90.0})
    sq.save_row(row, str(tmp_path), started=None)  # the retest: not in the budget's time
    assert row["total_s"] == timed
    assert (tmp_path / "mbconv_fmnist_full.json").read_text().count(str(timed)) == 1
    note = sq.retest_note([row, {"space": "seq_fmnist", "recipe": "full"}])
    assert "mbconv_fmnist (full): uniform draws: 0.50 between the two fine-tunings, -0.25 inherited" in note
    assert "1.5 min more" in note and "seq_fmnist" not in note and "spread by size" not in note
    assert sq.retest_note([{"space": "seq_fmnist", "recipe": "full"}]) == ""


def test_the_reference_averages_its_batch_orders_and_reports_its_halves(sq, monkeypatch):
    # finetune_alone stood in by a function of (subnet, seed): the averaging and the seeds are ours
    calls = []

    def fake(net, spec, splits, held, calib, steps, batch, lr, seed, device, adamw=False):
        calls.append((spec, seed, steps))
        return np.arange(100) < 10 * spec + seed  # per-image correctness: top-1 10 * spec + seed %

    monkeypatch.setattr(sq, "finetune_alone", fake)
    args = argparse.Namespace(finetune_steps=150, batch_size=128, reference_seeds=2)
    masks = sq.reference(None, [1, 2, 3], None, None, None, 0.01, "cpu", args, range(2, 4), adamw=False)
    per_seed = sq.top1(masks)
    assert masks.shape == (2, 3, 100) and per_seed.tolist() == [[12, 22, 32], [13, 23, 33]]
    assert {seed for _, seed, _ in calls} == {2, 3} and {steps for *_, steps in calls} == {150}
    row = {"space": "mbconv_fmnist", "recipe": "full", "args": {"reference_seeds": 2},
           "alone_seeds": per_seed.tolist(), "half_tau": 0.75, "retest_tau": 0.5, "tau_again": 0.25, "retest_s": 60.0}
    note = sq.retest_note([row])
    assert "2 other batch orders (seeds 2-3, averaged)" in note and "0.50 between the two means" in note
    assert "halves" in note and "uniform draws: 0.75 (2 batch orders)" in note
    # a row of one batch order renders as before: no halves, "fine-tunings", seed 1
    single = {"space": "mbconv_fmnist", "recipe": "full", "retest_tau": 0.5, "tau_again": 0.25, "retest_s": 60.0}
    assert "halves" not in sq.retest_note([single]) and "(seed 1)" in sq.retest_note([single])


def test_reference_seeds_out_of_bounds_are_refused(sq, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["supernet_quality.py", "--reference-seeds", "0", "--no-write"])
    with pytest.raises(SystemExit) as exit_:
        sq.main()
    assert exit_.value.code == 2 and "--reference-seeds: 0 must lie in [1, 16]" in capsys.readouterr().err


def test_a_saved_supernet_loads_whole_and_only_under_its_own_recipe(sq, spaces, tmp_path, capsys):
    import torch

    from nasq.supernet.network import Supernet

    space = spaces["mbconv_fmnist"]
    knobs = dict(distill="auto", epochs=["3"], batch_size=128, device="cpu", adamw_lr=2e-3, lr=0.05, amp="off",
                 compile="off")
    cfg = sq.train_config(space, "full", argparse.Namespace(**knobs))
    torch.manual_seed(3)
    net = Supernet(space)
    sq.save_supernet(net, tmp_path / "mbconv_fmnist_full", space, cfg,
                     {"train_s": 12.5, "steps": 7, "device": "cpu", "train_limit": None})
    loaded, record = sq.load_supernet(tmp_path / "mbconv_fmnist_full", space, cfg)
    assert (record["train_s"], record["steps"], record["device"]) == (12.5, 7, "cpu")
    theirs = loaded.state_dict()
    assert all(torch.equal(v, theirs[k]) for k, v in net.state_dict().items())
    # a record that kept a field at its neutral value (shrink: [], written 08f841d..306d30b) still loads
    saved = tmp_path / "mbconv_fmnist_full" / "supernet.json"
    record = json.loads(saved.read_text())
    saved.write_text(json.dumps({**record, "train": {**record["train"], "shrink": []}}))
    assert sq.load_supernet(tmp_path / "mbconv_fmnist_full", space, cfg)[1]["train"]["shrink"] == []
    # trained for 3 epochs; asked for 5: refused by name, exit 2
    other = sq.train_config(space, "full", argparse.Namespace(**{**knobs, "epochs": ["5"]}))
    with pytest.raises(SystemExit) as exit_:
        sq.load_supernet(tmp_path / "mbconv_fmnist_full", space, other)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "supernet.json: train.epochs is 3.0, the arguments give 5.0" in err
    with pytest.raises(SystemExit) as exit_:  # trained on all the images; asked for 2,000
        sq.load_supernet(tmp_path / "mbconv_fmnist_full", space, cfg, train_limit=2000)
    assert exit_.value.code == 2 and "train_limit is None, the arguments give 2000" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        sq.load_supernet(tmp_path / "nowhere", space, cfg)
    assert exit_.value.code == 2 and "no trained supernet" in capsys.readouterr().err


def test_the_fp32_twins_keep_each_architecture_and_drop_every_format(sq, spaces):
    space = spaces["mbconv_fmnist"]
    drawn, twins = sq.ranked_subnets(space, "random"), sq.ranked_subnets(space, "random_fp32")
    assert len(twins) == len(drawn) == sq.N_RANKED
    for spec, twin in zip(drawn, twins, strict=True):
        assert {(layer.w_format, layer.a_format) for layer in twin.layers()} == {("fp32", "fp32")}
        assert [layer.arch for layer in twin.layers()] == [layer.arch for layer in spec.layers()]
        assert (twin.widths, twin.resolution, twin.depths) == (spec.widths, spec.resolution, spec.depths)
    assert any(layer.w_format != "fp32" for spec in drawn for layer in spec.layers())


def test_the_gain_note_correlates_what_fine_tuning_adds_with_the_formats(sq, spaces):
    space = spaces["mbconv_fmnist"]
    drawn = sq.ranked_subnets(space, "random")
    fp32_share = sq.gain_features(drawn)["the share of layers with fp32 weights"]
    inherited = np.linspace(85.0, 88.0, len(drawn))
    row = {"space": "mbconv_fmnist", "recipe": "full", "inherited": inherited.tolist(),
           "alone": (inherited + 2.0 - fp32_share).tolist(),  # the more fp32 weights, the less it gains
           "subnets": [s.to_dict() for s in drawn],
           "inherited_random_fp32": [87.0] * len(drawn),
           "alone_random_fp32": [87.0 + s.resolution / 28 for s in drawn], "tau_random_fp32": 0.25}
    note = sq.gain_note([row])
    assert "uniform draws: mean" in note and "r with the share of layers with fp32 weights -1.00" in note
    # the fp32 twins: no format varies, so only the resolution is correlated; tau is given here
    twins = note.split("all fp32: ")[1]
    assert twins.startswith("tau 0.25; mean +") and "r with the resolution +1.00" in twins
    assert "fp32 weights" not in twins and "4 bits" not in twins
    assert "tau 0.25" not in note.split("all fp32: ")[0]  # the table has the uniform draws' tau
    # both sets in one row: how far the twins' gains follow their originals', subnet by subnet
    res = np.array([s.resolution for s in drawn], float)
    assert "own formats" in twins and sq.twins_gain_r(row, "_random_fp32") == pytest.approx(
        np.corrcoef(2.0 - fp32_share, res)[0, 1])
    assert sq.twins_gain_r(row, "") is None and sq.twins_gain_r({"alone_random_fp32": [1.0]}, "_random_fp32") is None
    # a row written before rows kept their subnets: drawn again the same way
    assert sq.ranked_specs({"space": "mbconv_fmnist"}, "random") == drawn
    assert sq.ranked_specs(row, "random") == drawn
    assert sq.gain_note([{"space": "mbconv_fmnist", "recipe": "full"}]) == ""


def test_kendall_tau_rows_match_the_pairwise_definition(sq):
    from scipy.stats import kendalltau

    rng = np.random.default_rng(0)
    a = rng.integers(0, 5, size=(20, 12)).astype(float)  # ties on both sides
    b = a + rng.integers(0, 3, size=(20, 12))
    rows = sq.kendall_tau_rows(a, b)
    assert rows == pytest.approx([kendalltau(x, y)[0] for x, y in zip(a, b, strict=True)])
    assert sq.kendall_tau(a[0], b[0]) == pytest.approx(rows[0])
    assert sq.kendall_tau_rows(np.ones((1, 4)), np.arange(4.0)[None]).tolist() == [0.0]  # all tied: no ranking
    # a mean of masks and a mean of top-1s differ in the last bits: still a tie
    masks = np.array([[[1, 1, 0], [1, 0, 1]], [[1, 1, 1], [1, 1, 0]]], dtype=bool)  # (orders, subnets, images)
    assert sq.kendall_tau(sq.top1(masks.mean(0)), [1.0, 2.0]) == sq.kendall_tau(sq.top1(masks).mean(0), [1.0, 2.0])
    assert sq.kendall_tau([0.1 + 0.2, 0.3, 1.0], [1.0, 2.0, 3.0]) == pytest.approx(sq.kendall_tau([0.3, 0.3, 1.0], [1.0, 2.0, 3.0]))


def test_image_noise_tells_the_images_chance_from_the_subnets(sq):
    rng = np.random.default_rng(1)
    n, subnets = 4000, 12
    truth = rng.random(n) < 0.85
    inh = np.array([truth & (rng.random(n) > 0.01 * i) for i in range(subnets)])  # subnet i loses i %
    same = sq.image_noise(inh, inh, resamples=200)
    assert same["tau_ci"] == [1.0, 1.0] and same["gain_noise"] == 0.0
    # the reference gains 0.25 * i points on subnet i: a gain of the subnets', seen on both halves
    fixed = inh | (np.arange(n) < 0.0025 * n * np.arange(subnets)[:, None])
    assert sq.image_noise(inh, fixed, resamples=200)["gain_half_r"] > 0.8
    # the reference redraws 6 % of each subnet's images at the subnet's own top-1: no gain on
    # average, only the images' chance
    redrawn = rng.random((subnets, n)) < 0.06
    draws = rng.random((subnets, n)) < inh.mean(axis=1, keepdims=True)
    chance = sq.image_noise(inh, np.where(redrawn, draws, inh), resamples=200)
    assert abs(chance["gain_half_r"]) < 0.4
    flipped = (np.where(redrawn, draws, inh) != inh).mean()
    assert chance["gain_noise"] == pytest.approx(100 * np.sqrt(flipped / n), rel=0.15)
    assert chance["tau_ci"][0] < chance["tau_ci"][1] <= 1.0


def test_test_and_val_together_and_the_masks_beside_the_row(sq, tmp_path):
    import types

    splits = types.SimpleNamespace(test_x=np.zeros((3, 1)), test_y=np.array([0, 1, 2]),
                                   val_x=np.ones((2, 1)), val_y=np.array([7, 8]))
    x, y = sq.held_images(splits, "test+val")
    assert y.tolist() == [0, 1, 2, 7, 8] and x[:, 0].tolist() == [0, 0, 0, 1, 1]
    assert sq.held_images(splits, "val")[1].tolist() == [7, 8]
    assert "5 images: the test split and the validation images" in sq.held_note(5, "test+val")
    row = {"space": "mbconv_fmnist", "recipe": "full", "tau": 0.5, "tau_ci": [0.25, 0.75]}
    assert sq._tau(row) == "0.50 (0.25 to 0.75)" and sq._tau({"tau": 0.5}) == "0.50"
    inh, ref = np.eye(3, dtype=bool), np.ones((2, 3, 3), dtype=bool)
    sq.save_masks(row, str(tmp_path), "_random_fp32", inh, ref)
    with np.load(tmp_path / "mbconv_fmnist_full_masks_random_fp32.npz", allow_pickle=False) as saved:
        assert saved["inherited"].tolist() == inh.tolist() and saved["reference"].shape == (2, 3, 3)
    sq.save_masks(row, None, "", inh, ref)  # without --json-out: nothing written
    assert len(list(tmp_path.iterdir())) == 1
