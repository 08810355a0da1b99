"""Closed-form test functions f(θ) wrapped as Objectives (the data are a dummy sample)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from scipy.integrate import quad
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


def entropy_toy_eigenvalues() -> Tensor:
    """The flatness.md §2.6 spectrum (shaped like Entropy-SGD's Fig. 1), d = 200, float64:
    150 near-zero values evenly spaced in [−1e-4, 1e-4], 30 evenly spaced in [0.01, 1], 15
    log-spaced in [1, 40], and the negatives −0.46, −0.2, −0.1, −0.05, −0.02. Exact Φ (β = 1,
    quartic 0.05): −5.72 / −37.78 / −186.82 at γ = 10 / 1 / 0.1; Laplace at γ = 10: −5.44
    (flatness.md's instance: −5.76 / −38.04 / −187.23, Laplace −5.48)."""
    return torch.cat([
        torch.linspace(-1e-4, 1e-4, 150, dtype=torch.float64),
        torch.linspace(0.01, 1, 30, dtype=torch.float64),
        torch.logspace(0, math.log10(40), 15, dtype=torch.float64),
        torch.tensor([-0.46, -0.2, -0.1, -0.05, -0.02], dtype=torch.float64)])


def separable_quartic(eigenvalues: Tensor, quartic: float) -> Callable[[Tensor], Tensor]:
    """f(θ) = Σᵢ (λᵢ θᵢ²/2 + c θᵢ⁴): the §2.6 toy, Hessian diag(λ) at θ = 0."""
    return lambda t: (0.5 * eigenvalues * t**2 + quartic * t**4).sum()


def separable_quartic_entropy(eigenvalues: Tensor, quartic: float, gamma: float,
                              beta: float = 1.0) -> float:
    """Exact Φ_γ(0) of ``separable_quartic``: Σᵢ log ∫ exp(−β(λᵢx²/2 + c x⁴)) N(x; 0, 1/(βγ)) dx,
    one 1-D quadrature per coordinate."""
    total = 0.0
    for lam in eigenvalues.tolist():
        def density(x, lam=lam):
            return math.exp(-beta * (0.5 * (lam + gamma) * x * x + quartic * x**4))
        integral, _ = quad(density, 0.0, math.inf, epsabs=0.0, epsrel=1e-12)
        total += math.log(2 * integral * math.sqrt(beta * gamma / (2 * math.pi)))
    return total


def diagonal_quadratic(h: Tensor, center: Tensor | None = None,
                       constant: float = 0.0) -> Objective:
    """``L(θ) = ½ Σ hᵢ (θᵢ − cᵢ)² + constant``: Hessian diag(h) everywhere, minimum at c."""
    c = torch.zeros_like(h) if center is None else center
    return toy_objective(lambda t: 0.5 * (h * (t - c) ** 2).sum() + constant, h.numel())


class _Rows(nn.Module):
    def __init__(self, rows: Tensor):
        super().__init__()
        self.w = nn.Parameter(rows.clone())

    def forward(self, x: Tensor) -> Tensor:
        return self.w


def logit_table(rows: Tensor) -> Objective:
    """A classifier whose logits for sample i are the parameters ``rows[i]`` (θ = rows.ravel()),
    all labels 0, cross-entropy loss: ``error(θ)`` is the fraction of rows whose argmax ≠ 0, so
    under Gaussian noise it is known in closed form."""
    n = rows.shape[0]
    return Objective(_Rows(rows.to(torch.float64)), nn.functional.cross_entropy,
                     (torch.zeros(n, 1), torch.zeros(n, dtype=torch.long)))
