"""Measured hardware profiles: per-layer latency tables and the latency predictor built on them.

``nasq profile measure`` enumerates every distinct layer a search space can contain
(:mod:`~nasq.hardware.keys`), times each one on a runtime backend
(:mod:`~nasq.profiling.onnxruntime_backend`, :mod:`~nasq.profiling.torch_cuda_backend`), and writes
``hardware_profiles/<name>/latency.csv`` (:mod:`~nasq.hardware.table`) next to a ``profile.yaml``
whose roofline rates are derived from the same measurements (:mod:`~nasq.profiling.measure`).
:class:`~nasq.predict.latency.LatencyPredictor` sums a subnet's table rows and corrects the
sum with a linear model fitted on whole-subnet measurements.

The torch-free parts live below this package: layer keys and tables in :mod:`nasq.hardware`, the
latency predictor in :mod:`nasq.predict.latency`; this package holds the backends and measurement.
"""
