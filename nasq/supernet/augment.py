"""Training-time augmentation of image batches: a random crop of the edge-padded image and a
random horizontal flip, as batched tensor ops on the batch's own device.

Each step's draws come from a ``torch.Generator`` seeded by ``(seed, step)`` alone, drawn for
the whole global batch and sliced to this shard's part: a resumed run, and every data-parallel
split of the batch, augment exactly as the uninterrupted single process does."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

STREAM = 2_000_003  # keeps these draws apart from the subnet and data-order streams of the same seed


def pad_for(resolution: int) -> int:
    """Crop padding: 2 pixels for 28x28 Fashion-MNIST, about 1/12 of the side in general."""
    return max(1, round(resolution / 12))


def step_generator(seed: int, step: int) -> torch.Generator:
    """A CPU generator seeded from ``(seed, step)``: the same draws on every device."""
    state = np.random.SeedSequence([seed, STREAM, step]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def crop_flip(x: torch.Tensor, seed: int, step: int, lo: int = 0, n_total: int | None = None) -> torch.Tensor:
    """``x`` (N, C, H, W), rows ``lo .. lo + N`` of a global batch of ``n_total`` (default N):
    each image shifted by up to ``pad_for(W)`` pixels each way (the border repeats the edge, so
    it stays background whatever the normalisation) and flipped left-right with probability
    1/2. Same shape, dtype and device; the draws depend on ``(seed, step)`` and the row only."""
    n, _, h, w = x.shape
    total = n if n_total is None else n_total
    pad = pad_for(w)
    gen = step_generator(seed, step)
    # Drawn for the whole global batch, then sliced: a shard sees its rows' draws.
    offsets = torch.randint(0, 2 * pad + 1, (total, 2), generator=gen)[lo:lo + n].to(x.device)
    flips = (torch.rand(total, generator=gen) < 0.5)[lo:lo + n].to(x.device)
    padded = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    rows = offsets[:, 0, None] + torch.arange(h, device=x.device)  # (N, H)
    cols = offsets[:, 1, None] + torch.arange(w, device=x.device)  # (N, W)
    cols = torch.where(flips[:, None], cols.flip(1), cols)
    batch = torch.arange(n, device=x.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]  # (N, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous()
