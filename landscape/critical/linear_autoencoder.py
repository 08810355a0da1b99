"""Closed-form critical points of the deep linear autoencoder (Baldi & Hornik 1989), the benchmark
of Frye et al. 2019 for critical-point finders.

Network ``x ↦ W₂W₁x`` with ``W₁ [p, d]``, ``W₂ [d, p]``, no biases, on centred data with
covariance ``Σ = XᵀX/N`` (eigenvalues ``λ₁ > … > λ_d``, assumed distinct), and the loss
``L = s · mean over samples of ‖x − W₂W₁x‖²`` with ``s = ½`` (``losses.autoencoder_loss``) or
``s = 1/d`` (``losses.mean_squared_error``: the mean over all N·d entries, Frye et al.'s). Every
critical point makes ``W₂W₁`` the orthogonal projector onto the span of a subset S of Σ's
eigenvectors, ``|S| = m ≤ p``, so

* ``L_S = s · Σ_{i∉S} λ_i``,
* the number of negative Hessian eigenvalues is
  ``Σ_{i∈S} #{j ∉ S : λ_j > λ_i} + (p − m)(d − m)``, of ``n = 2dp`` parameters.

A representative is ``W₁ = U_Sᵀ`` padded with zero rows and ``W₂ = W₁ᵀ`` (U_S: the chosen
eigenvectors); the GL(p) orbit ``(CW₁, W₂C⁻¹)`` of each is a set of equivalent critical points, with
the same inertia (the Hessians are congruent) and at least p² zero eigenvalues.

The loss depends on the data only through ``XᵀX/N``, so ``second_moment_factor`` replaces N samples
by d rows with the same second moment: the same function of θ, at d/N of the cost.

Example (d = 3, p = 1: keeping the top eigenvector is a critical point of loss ½(λ₂ + λ₃)):
    >>> from landscape.losses import autoencoder_loss
    >>> from landscape.objective import Objective
    >>> x = gaussian_data([3.0, 2.0, 1.0], 500, seed=0)
    >>> lam, vecs = torch.linalg.eigh(x.T @ x / len(x))
    >>> lam, vecs = lam.flip(0), vecs.flip(1)  # descending
    >>> [top] = [c for c in analytic_critical_points(lam, 1) if c.subset == (0,)]
    >>> obj = Objective(linear_autoencoder(3, 1), autoencoder_loss, (x, x))
    >>> theta = representative(top.subset, vecs, 1)
    >>> abs(float(obj.loss(theta)) - top.loss) < 1e-12, float(obj.grad(theta).norm()) < 1e-12
    (True, True)
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from landscape.linalg.probes import Seed, as_generator


@dataclass(frozen=True)
class AnalyticCriticalPoint:
    subset: tuple[int, ...]  # indices into the descending eigenvalues
    loss: float
    n_negative: int


def linear_autoencoder(d: int, p: int) -> nn.Module:
    """The bias-free ``d → p → d`` linear autoencoder (parameters: W₁ then W₂)."""
    return nn.Sequential(nn.Linear(d, p, bias=False), nn.Linear(p, d, bias=False))


def analytic_critical_points(eigenvalues: Tensor, p: int, *,
                             loss_scale: float = 0.5) -> list[AnalyticCriticalPoint]:
    """All critical-point classes for covariance eigenvalues ``[d]`` and hidden width p;
    ``loss_scale`` is s of the module docstring (½, or 1/d for the mean over entries)."""
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
            out.append(AnalyticCriticalPoint(
                subset, loss_scale * (total - sum(lam[i] for i in subset)), negatives))
    return out


def representative(subset: tuple[int, ...], eigenvectors: Tensor, p: int) -> Tensor:
    """Flat θ (W₁ then W₂) of the critical point for ``subset``; ``eigenvectors [d, d]`` as
    columns ordered by descending eigenvalue."""
    d = eigenvectors.shape[0]
    w1 = eigenvectors.new_zeros(p, d)
    for row, i in enumerate(subset):
        w1[row] = eigenvectors[:, i]
    return torch.cat([w1.reshape(-1), w1.T.reshape(-1)])


def gaussian_data(variances: Sequence[float], n_samples: int, *, seed: Seed = 0,
                  rotate: bool = False, dtype: torch.dtype = torch.float64) -> Tensor:
    """``[n_samples, d]`` centred Gaussian samples with population covariance ``diag(variances)``
    (rotated by a random orthogonal matrix if ``rotate``); the sample covariance differs from it
    at O(1/√N), so closed forms must use the sample covariance's eigenvalues."""
    scale = torch.as_tensor(variances, dtype=dtype)
    if scale.ndim != 1 or not bool((scale > 0).all()):
        raise ValueError(f"variances must be a 1-d sequence of positive numbers; got {variances}")
    generator = as_generator(seed)
    x = torch.randn(n_samples, scale.numel(), generator=generator, dtype=dtype) * scale.sqrt()
    if rotate:
        q, _ = torch.linalg.qr(torch.randn(scale.numel(), scale.numel(), generator=generator,
                                           dtype=dtype))
        x = x @ q.T
    return x - x.mean(dim=0)


def second_moment_factor(x: Tensor) -> Tensor:
    """``[d, d]`` rows F with ``FᵀF/d = XᵀX/N`` for data ``x [N, d]``: as inputs and targets of a
    linear autoencoder, F gives the same loss function of θ as X (for either loss of
    ``landscape.losses``)."""
    n, d = x.shape
    values, vectors = torch.linalg.eigh(x.T @ x / n)
    return (vectors * (values.clamp_min(0) * d).sqrt()) @ vectors.T
