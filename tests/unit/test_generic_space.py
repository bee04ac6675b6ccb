"""The generic categorical space (family: generic), user-named objectives with a goal, and a
search over a foreign objective with the user's evaluator and cost functions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nasq.errors import ConfigError, NasqError
from nasq.search.generic import costs_from_functions, search_generic
from nasq.search.pareto import Front, Objective, direction, objective, to_minimisation
from nasq.search.protocols import Space
from nasq.search.state import decode_saved_spec
from nasq.space import GenericSpace, GenericSpec, SearchSpace, load_space

OPS = ["none", "skip", "conv1x1", "conv3x3", "avgpool"]
GAIN = dict(zip(OPS, [0.0, 0.3, 0.6, 1.0, 0.2], strict=True))
PARAMS = dict(zip(OPS, [0.0, 0.0, 0.1, 0.9, 0.0], strict=True))


def cell(n: int = 6) -> GenericSpace:
    return GenericSpace.of("cell", {f"op_{i}": OPS for i in range(n)})


def accuracy(specs):
    return [50 + 8 * sum(GAIN[v] for _, v in s.genes) ** 0.7 for s in specs]


def params(specs):
    return [0.05 + sum(PARAMS[v] for _, v in s.genes) for s in specs]


AUC = {"name": "auc", "goal": "max"}
PARAMS_MIN = {"name": "params_m", "goal": "min"}


def test_yaml_space_loads_as_generic(tmp_path):
    path = tmp_path / "cell.yaml"
    path.write_text("name: cell\nfamily: generic\ngenes:\n"
                    + "".join(f"  - {{name: op_{i}, choices: [{', '.join(OPS)}]}}\n" for i in range(6))
                    + "  - {name: lr, choices: [0.1, 0.01]}\n  - {name: flag, choices: [true, 1]}\n")
    space = load_space(path)
    assert isinstance(space, GenericSpace) and space.n_genes == 8 and list(space.upper) == [4] * 6 + [1, 1]
    network = load_space(Path(__file__).resolve().parents[2] / "search_spaces" / "mbconv_small.yaml")
    assert isinstance(space, Space) and isinstance(network, SearchSpace) and isinstance(network, Space)
    spec = space.decode([3, 0, 1, 2, 4, 0, 1, 0])
    assert spec["op_0"] == "conv3x3" and spec["lr"] == 0.01 and spec["flag"] is True
    assert list(space.encode(spec)) == [3, 0, 1, 2, 4, 0, 1, 0]
    # True and 1 are different choices with different keys
    assert space.decode([0] * 7 + [1]).key() != spec.key() and list(space.encode(space.decode([0] * 7 + [1])))[-1] == 1


@pytest.mark.parametrize("genes, match", [
    ([{"name": "a", "choices": []}], "at least 1 item"),
    ([{"name": "a", "choices": [1]}, {"name": "a", "choices": [2]}], "gene names must be unique"),
    ([{"name": "a", "choices": [[1, 2]]}], "genes\\[0\\].choices\\[0\\]"),
    ([{"name": "a", "choices": ["x", "x"]}], "choices must be distinct"),
    ([], "genes"),
])
def test_schema_is_strict(genes, match):
    with pytest.raises(ConfigError, match=match):
        GenericSpace.from_dict({"name": "bad", "family": "generic", "genes": genes}, "bad.yaml")


def test_codec_sampling_and_saved_specs_round_trip():
    space = cell()
    specs = space.sample(np.random.default_rng(0), 50)
    again = cell().sample(np.random.default_rng(0), 50)
    assert [s.key() for s in specs] == [s.key() for s in again]
    G = np.stack([space.encode(s) for s in specs])
    assert np.array_equal(space.canonical_batch(G), G)
    assert space.smallest().key() == ",".join(f"op_{i}=none" for i in range(6)) and space.size() == 5 ** 6
    for s in specs[:5]:
        assert decode_saved_spec(s.to_dict()) == s and decode_saved_spec(s.to_dict(), space).key() == s.key()
    with pytest.raises(ValueError, match="out of range"):
        space.decode([5, 0, 0, 0, 0, 0])
    with pytest.raises(ValueError, match="not a choice"):
        space.encode(GenericSpec((("op_0", "conv5x5"),) + specs[0].genes[1:]))


def test_objectives_with_declared_goals():
    auc, loss = objective(AUC), objective({"name": "loss", "goal": "min"})
    assert isinstance(auc, Objective) and auc == "auc" and direction(auc) == 1 and direction(loss) == -1
    assert objective("latency_ms") == "latency_ms" and direction("top1") == 1
    F = to_minimisation(np.array([[0.9, 2.0]]), (auc, loss))
    assert F.tolist() == [[-0.9, 2.0]]
    with pytest.raises(ValueError, match="declare its goal"):
        objective("auc")
    with pytest.raises(ValueError, match="goes min"):
        objective({"name": "latency_ms", "goal": "max"})


def test_search_over_a_foreign_objective_is_seeded_and_its_front_round_trips(tmp_path):
    kw = dict(objectives=[AUC, PARAMS_MIN], max_true_evals=30, seed=1, generations=8, population=24)
    a = search_generic(cell(), accuracy, {"params_m": params}, **kw)
    b = search_generic(cell(), accuracy, {"params_m": params}, **kw)
    assert [p.spec.key() for p in a.points] == [p.spec.key() for p in b.points] and len(a.points) >= 2
    F = a.matrix()  # minimisation: -auc, params
    assert all(not (np.all(F <= f) & np.any(F < f, axis=1)).any() for f in F)
    assert a.points[0].value("auc") == max(p.value("auc") for p in a.points)
    a.save(tmp_path)
    back = Front.load(tmp_path / "front.json")
    assert back.objectives == a.objectives and direction(back.objectives[0]) == 1
    assert [p.spec for p in back.points] == [p.spec for p in a.points]
    assert "op_0" in (tmp_path / "front.csv").read_text().splitlines()[0]


def test_constraints_and_objective_checks():
    front = search_generic(cell(), accuracy, {"params_m": params}, [AUC, PARAMS_MIN],
                           {"params_m": {"max": 1.5}}, max_true_evals=20, seed=0, generations=5, population=16)
    assert front.points and all(p.value("params_m") <= 1.5 for p in front.points)
    with pytest.raises(NasqError, match="must be maximised"):
        search_generic(cell(), accuracy, {"params_m": params}, [{"name": "err", "goal": "min"}, PARAMS_MIN])
    with pytest.raises(NasqError, match="only one objective"):
        search_generic(cell(), accuracy, {"params_m": params}, [AUC, {"name": "f1", "goal": "max"}])
    with pytest.raises(NasqError, match="declare its goal"):
        search_generic(cell(), accuracy, {"params_m": params}, [AUC, "params_m"])


def test_features_are_onehot_genes_plus_injected_costs():
    from nasq.predict.features import encode, encode_genomes

    space, cost = cell(), costs_from_functions({"params_m": params, "zeta": lambda s: np.ones(len(s))})
    specs = space.sample(np.random.default_rng(2), 4)
    X = encode(("onehot", "costs"), space, specs, cost)
    assert X.shape == (4, 30 + 2)
    assert np.array_equal(X[:, :30].sum(axis=1), np.full(4, 6.0))
    assert np.allclose(X[:, 30], params(specs)) and np.array_equal(X[:, 31], np.ones(4))  # sorted by name
    G = np.stack([space.encode(s) for s in specs])
    assert np.array_equal(encode_genomes(("onehot", "costs"), space, G, cost), X)
    with pytest.raises(ValueError, match="has none"):
        encode(("layerwise",), space, specs, cost)


def test_cost_functions_are_checked():
    cost = costs_from_functions({"bad": lambda specs: [1.0]})
    with pytest.raises(NasqError, match="must return 3 finite numbers"):
        cost.score(cell().sample(np.random.default_rng(0), 3))


def test_the_example_runs():
    import subprocess
    import sys

    example = Path(__file__).resolve().parents[2] / "examples" / "custom_search.py"
    out = subprocess.run([sys.executable, str(example)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("points on the front") and "accuracy" in out.stdout


@pytest.mark.parametrize("strategy", ["random", "nsga2_true", "optuna_nsga2", "optuna_tpe"])
def test_every_baseline_searches_a_generic_space(strategy):
    front = search_generic(cell(), accuracy, {"params_m": params}, [AUC, PARAMS_MIN], {"params_m": {"max": 3.0}},
                           strategy=strategy, max_true_evals=16, batch_size=4, seed=0, population=8, generations=4)
    assert front.points and all(p.value("params_m") <= 3.0 for p in front.points)
