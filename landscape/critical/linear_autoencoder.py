"""Closed-form critical points of the deep linear autoencoder (Baldi & Hornik 1989), the benchmark
of Frye et al. 2019 for critical-point finders.

Network ``x ↦ W₂W₁x`` with ``W₁ [p, d]``, ``W₂ [d, p]``, no biases, loss
``L = ½ · mean over samples of ‖x − W₂W₁x‖²`` on centred data with covariance ``Σ = XᵀX/N``
(eigenvalues ``λ₁ > … > λ_d``, assumed distinct). Every critical point makes ``W₂W₁`` the orthogonal
projector onto the span of a subset S of Σ's eigenvectors, ``|S| = m ≤ p``, so

* ``L_S = ½ Σ_{i∉S} λ_i``,
* the number of negative Hessian eigenvalues is
  ``Σ_{i∈S} #{j ∉ S : λ_j > λ_i} + (p − m)(d − m)``, of ``n = 2dp`` parameters.

A representative is ``W₁ = U_Sᵀ`` padded with zero rows and ``W₂ = W₁ᵀ`` (U_S: the chosen eigenvectors).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class AnalyticCriticalPoint:
    subset: tuple[int, ...]  # indices into the descending eigenvalues
    loss: float
    n_negative: int


def autoencoder_loss(outputs: Tensor, inputs: Tensor) -> Tensor:
    """½ · mean over samples of the squared reconstruction error (targets are the inputs)."""
    return 0.5 * ((outputs - inputs) ** 2).sum(dim=1).mean()


def linear_autoencoder(d: int, p: int) -> nn.Module:
    """The bias-free ``d → p → d`` linear autoencoder (parameters: W₁ then W₂)."""
    return nn.Sequential(nn.Linear(d, p, bias=False), nn.Linear(p, d, bias=False))


def analytic_critical_points(eigenvalues: Tensor, p: int) -> list[AnalyticCriticalPoint]:
    """All critical-point classes for covariance eigenvalues ``[d]`` and hidden width p."""
    lam = sorted((float(v) for v in eigenvalues), reverse=True)
    d = len(lam)
    if len(set(lam)) != d:
        raise ValueError("the closed form assumes distinct covariance eigenvalues")
    total = sum(lam)
    out = []
    for m in range(min(p, d) + 1):
        for subset in itertools.combinations(range(d), m):
            kept = set(subset)
            negatives = sum(1 for i in subset for j in range(d) if j not in kept and lam[j] > lam[i])
            negatives += (p - m) * (d - m)
            out.append(AnalyticCriticalPoint(subset, 0.5 * (total - sum(lam[i] for i in subset)),
                                             negatives))
    return out


def representative(subset: tuple[int, ...], eigenvectors: Tensor, p: int) -> Tensor:
    """Flat θ (W₁ then W₂) of the critical point for ``subset``; ``eigenvectors [d, d]`` as
    columns ordered by descending eigenvalue."""
    d = eigenvectors.shape[0]
    w1 = eigenvectors.new_zeros(p, d)
    for row, i in enumerate(subset):
        w1[row] = eigenvectors[:, i]
    return torch.cat([w1.reshape(-1), w1.T.reshape(-1)])
