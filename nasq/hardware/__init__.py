"""Hardware: profiles (catalog entries), the cost model, layer keys and measured latency tables.
Torch-free."""

from nasq.hardware.cost import (
    BIAS_BITS,
    CostModel,
    TargetsCostModel,
    compute_format,
    layer_bits,
    throughput_ips,
)
from nasq.hardware.profile import HardwareProfile

__all__ = ["BIAS_BITS", "CostModel", "HardwareProfile", "TargetsCostModel", "compute_format", "layer_bits",
           "throughput_ips"]
