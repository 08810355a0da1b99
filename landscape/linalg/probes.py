"""Random probe vectors for stochastic estimators, drawn from an explicit seed.

Probes are drawn on the CPU from a ``torch.Generator`` and then moved to the target device, so the
same seed gives the same numbers on every device.
"""

from __future__ import annotations

import torch
from torch import Tensor

Seed = int | torch.Generator


def as_generator(seed: Seed) -> torch.Generator:
    """An int seed → a fresh CPU generator; a generator is returned as is."""
    if isinstance(seed, torch.Generator):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int or a torch.Generator; got {seed!r}")
    return torch.Generator().manual_seed(seed)


def rademacher(k: int, n: int, generator: torch.Generator, *, dtype: torch.dtype,
               device: torch.device | str) -> Tensor:
    """``[k, n]`` matrix of independent ±1 entries."""
    signs = torch.randint(0, 2, (k, n), generator=generator).to(dtype=dtype) * 2 - 1
    return signs.to(device)


def gaussian(k: int, n: int, generator: torch.Generator, *, dtype: torch.dtype,
             device: torch.device | str) -> Tensor:
    """``[k, n]`` matrix of independent standard normal entries."""
    return torch.randn(k, n, generator=generator, dtype=dtype).to(device)
