"""A search over a foreign objective from Python: a NAS-Bench-201-like cell (6 edges x 5 ops) with a
deterministic synthetic "accuracy" and a "params" cost, searched by LINAS. No network, no torch:
`pip install nasq[search]` is enough.

    python examples/custom_search.py
"""

import nasq

OPS = ["none", "skip", "conv1x1", "conv3x3", "avgpool"]
GAIN = {"none": 0.0, "skip": 0.3, "conv1x1": 0.6, "conv3x3": 1.0, "avgpool": 0.2}
PARAMS = {"none": 0.0, "skip": 0.0, "conv1x1": 0.1, "conv3x3": 0.9, "avgpool": 0.0}

space = nasq.GenericSpace.of("nb201_cell", {f"edge_{i}": OPS for i in range(6)})
front = nasq.search_generic(
    space,
    evaluate=lambda cells: [50 + 8 * sum(GAIN[op] for _, op in c.genes) ** 0.7 for c in cells],
    costs={"params_m": lambda cells: [0.05 + sum(PARAMS[op] for _, op in c.genes) for c in cells]},
    objectives=[{"name": "accuracy", "goal": "max"}, {"name": "params_m", "goal": "min"}],
    strategy="linas", max_true_evals=40, seed=0)
for p in front.points:
    print(f"accuracy {p.value('accuracy'):6.2f}  params {p.value('params_m'):5.2f} M  {p.spec.key()}")
print(len(front.points), "points on the front")
