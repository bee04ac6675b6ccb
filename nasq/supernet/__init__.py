"""Weight-sharing supernet: elastic layers with fake quantization, training and evaluation.

Needs torch and numpy (and nasq's own configs), not ray, mlflow or pymoo, so training and
evaluation run on a GPU machine that lacks them. ``checkpoint`` is the one reader and writer of a
run's trained supernet.
"""
