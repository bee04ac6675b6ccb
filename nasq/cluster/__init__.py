"""Ray: the only package that imports ray. ``tasks`` starts or joins Ray and fans true evaluations
out as tasks, ``tune`` runs the optuna strategies as Ray Tune experiments, ``jobs`` submits
experiments to a cluster through the Ray Jobs API."""
