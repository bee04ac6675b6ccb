"""The predictor's training sample: largest, smallest, the largest at each uniform baseline format,
then seeded random subnets, all truly evaluated through the ledger."""

from __future__ import annotations

from nasq.experiment import load_experiment
from nasq.search.ledger import Ledger
from nasq.stages import baselines, evaluate


def test_sample_holds_the_uniform_twins_of_the_largest_subnet(repo):
    exp = load_experiment(repo / "examples" / "demo.yaml")
    asked: list[str] = []

    def fake(specs):
        asked.extend(s.key() for s in specs)
        return [50.0 + i % 7 for i, _ in enumerate(specs)]

    samples = evaluate.run(exp, Ledger(fake))
    keys = [s.key() for s in samples.specs]
    largest = exp.space.largest()
    twins = [baselines.uniform(exp, largest, f).key() for f in baselines.uniform_formats(exp)]
    assert set(baselines.uniform_formats(exp)) >= {"int8", "int4"}  # the demo's menu has both
    assert keys[:2] == [largest.key(), exp.space.smallest().key()]
    assert keys[2:2 + len(twins)] == twins  # evaluated for real, known to the predictor and the front
    assert len(keys) == len(set(keys)) == exp.config.evaluate.num_subnets
    assert asked == keys
    again = evaluate.run(exp, Ledger(fake))
    assert [s.key() for s in again.specs] == keys  # seeded: the same sample
