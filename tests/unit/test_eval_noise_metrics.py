"""``benchmarks/eval_noise.py``'s per-image scores: correctness, the true class's log-probability
and the margin from one forward pass, and the metric table derived from them."""

from __future__ import annotations

import numpy as np
import pytest
import torch


@pytest.fixture(scope="module")
def en(benchmark_module):
    return benchmark_module("eval_noise")


def test_image_scores_match_a_direct_computation(en):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 4))
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(23, 3, 2, 2)).astype(np.float32), rng.integers(0, 4, 23)
    correct, ll, margin = en.image_scores(model, x, y, batch_size=5)  # batches of 5 and a ragged 3
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.from_numpy(x)), 1).numpy()
    true = logp[np.arange(23), y]
    other = np.where(np.eye(4, dtype=bool)[y], -np.inf, logp).max(1)
    assert np.array_equal(correct, logp.argmax(1) == y) and 0 < correct.sum() < 23
    np.testing.assert_allclose(ll, true, rtol=1e-6)
    np.testing.assert_allclose(margin, true - other, rtol=1e-5, atol=1e-6)
    assert np.array_equal(margin > 0, correct)  # no exact ties in random logits


def test_metric_rows_rank_and_repeat(en):
    rng = np.random.default_rng(1)
    n_sub, n_val, n_test = 6, 400, 600
    skill = np.linspace(-1.0, 1.0, n_sub)[:, None]  # subnet i is better than subnet i-1 on every image

    def draw(n):
        margin = (skill + rng.normal(size=(1, n)) * 0.5).astype(np.float32)  # same images for every subnet
        ll = -np.log1p(np.exp(-margin)).astype(np.float32)
        return margin > 0, ll, margin

    vc, vll, vm = draw(n_val)
    tc, tll, tm = draw(n_test)
    meas = {"val": {(512, 1): vc}, "test": tc, "sizes": [512], "seeds": [1],
            "soft": {"val_ll": vll, "val_margin": vm, "test_ll": tll, "test_margin": tm}}
    rows = {r["metric"]: r for r in en.metric_rows(meas)}
    assert set(rows) >= {"top-1", "probability of the true class", "log-probability of the true class"}
    assert len([k for k in rows if "smoothed" in k]) == len(en.SMOOTHING)
    # every score is monotone in skill here, so the smooth ones rank perfectly; top-1 nearly
    for k in ("probability of the true class", "log-probability of the true class"):
        assert rows[k]["retest"] == pytest.approx(1.0) and rows[k]["vs_test_same"] == pytest.approx(1.0)
    assert rows["top-1"]["retest"] > 0.5
    reversed_meas = dict(meas, test=tc[::-1])  # the deployed ranking reversed: every score disagrees
    assert all(r["vs_test_top1"] < 0 for r in en.metric_rows(reversed_meas))
    assert "retest tau" in en.metric_reading(list(rows.values()))


def test_bootstrap_rows_rise_with_images_and_repeat_by_seed(en):
    rng = np.random.default_rng(2)
    acc = np.linspace(0.80, 0.86, 8)[:, None]
    correct = rng.random((8, 3000)) < acc  # 8 subnets 0.86 points apart in truth
    meas = {"val": {(512, 1): correct[:, :1000]}, "test": correct[:, 1000:], "sizes": [512], "seeds": [1]}
    rows = en.bootstrap_rows(meas, seed=0)
    assert [r["m"] for r in rows] == list(en.BOOT_SIZES) and all(r["pool"] == 3000 for r in rows)
    assert rows[-1]["tau"] > rows[0]["tau"] and all(0 <= r["std"] < 0.5 for r in rows)
    assert rows == en.bootstrap_rows(meas, seed=0) and rows != en.bootstrap_rows(meas, seed=1)


@pytest.mark.parametrize(("taus", "expected"), [
    ((0.7, 0.8, 0.85, 0.88, 0.93, 0.95), "between 20000 and 40000 images per evaluation at this signal, beyond"),
    ((0.7, 0.8, 0.91, 0.93, 0.95, 0.96), "between 5000 and 10000 images per evaluation at this signal, within"),
    ((0.95,) * 6, "2500 images or fewer"),
    ((0.5,) * 6, "more than 80000 images"),
])
def test_needed_images_names_the_bracket(en, taus, expected):
    boot = [{"m": m, "tau": t} for m, t in zip(en.BOOT_SIZES, taus, strict=True)]
    assert expected in en.needed_images(boot, 10000)
