"""Closed-form test functions f(θ) wrapped as Objectives (the data are a dummy sample)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from landscape.objective import Objective


class _Point(nn.Module):
    def __init__(self, theta0: Tensor):
        super().__init__()
        self.w = nn.Parameter(theta0.clone())

    def forward(self, x: Tensor) -> Tensor:
        return self.w.expand(x.shape[0], -1)


def toy_objective(f: Callable[[Tensor], Tensor], n: int) -> Objective:
    """Objective whose loss is exactly ``f(θ)`` for θ of length n."""
    return Objective(_Point(torch.zeros(n, dtype=torch.float64)),
                     lambda out, _: f(out[0]), (torch.zeros(1, 1), torch.zeros(1)))


def saddle(t: Tensor) -> Tensor:
    return t[0] ** 2 - t[1] ** 2


def monkey_saddle(t: Tensor) -> Tensor:
    return t[0] ** 3 - 3 * t[0] * t[1] ** 2


def frye_quartic(t: Tensor) -> Tensor:
    """Frye et al. 2021 toy: minimum at (−3, 0), strict gradient-flat points at (±√2, 0)."""
    x, y = t[0], t[1]
    return x**4 / 4 - 3 * x**2 + 9 * x + 0.9 * y**4 + 5 * y**2 + 40
