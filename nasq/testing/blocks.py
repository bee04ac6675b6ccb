"""Contract of elastic blocks and the supernet: set_active / extract equality, config round trip."""

from __future__ import annotations

import numpy as np
import torch

from nasq.space import SearchSpace, SubnetSpec
from nasq.supernet.network import Supernet


def check_extract_equals_supernet(space: SearchSpace, n_specs: int = 4, seed: int = 0, atol: float = 1e-5) -> float:
    """For random specs: the extracted static subnet's output equals the supernet's (formats
    included). Returns the largest difference seen."""
    torch.manual_seed(seed)
    net = Supernet(space)
    gen = torch.Generator().manual_seed(seed)
    shape = space.config.input_shape  # (C, H, W) image, (C, T) series, (F,) table row
    calib = [torch.randn(32, *shape, generator=gen) for _ in range(2)]
    x = torch.randn(16, *shape, generator=gen)
    rng = np.random.default_rng(seed)
    worst = 0.0
    for spec in [space.largest(), space.smallest(), *space.sample(rng, n_specs)]:
        net.set_active(spec)
        net.calibrate(calib)
        net.eval()
        static = net.extract()
        with torch.no_grad():
            diff = float((net(x) - static(x)).abs().max())
        assert diff <= atol, f"{spec.key()}: extracted subnet differs by {diff:.3g}"
        assert SubnetSpec.from_dict(spec.to_dict()) == spec, "spec config round trip"
        worst = max(worst, diff)
    return worst
