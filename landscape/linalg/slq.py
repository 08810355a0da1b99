"""Stochastic Lanczos quadrature (Lin, Saad & Yang 2016; Ubaru, Chen & Saad 2017; Ghorbani,
Krishnan & Xiao 2019) for the spectral density of a symmetric operator.

For a unit probe v, m Lanczos steps from v give ``T = S diag(θ) Sᵀ``; the Gauss quadrature
``Σ_j τ_j² δ(λ − θ_j)`` with ``τ_j = S[0, j]`` reproduces ``vᵀ f(A) v`` exactly for polynomials f of
degree < 2m. With ``v = z/√n`` for Rademacher z, ``E[vᵀ f(A) v] = tr f(A)/n``, so averaging the
quadratures over probes estimates the density ``(1/n) Σ_i δ(λ − λ_i)``. All probes run as one batched
Lanczos process (one operator application per step for all of them). Cost: ``m`` applications of
a ``[p, n]`` block; memory ``p · m · n`` for the bases (needed for full reorthogonalisation, which
Ghorbani et al. found necessary for accurate outer nodes).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from landscape.linalg.lanczos import MatMat, lanczos
from landscape.linalg.probes import rademacher


def slq(matmat: MatMat, n: int, n_steps: int, n_probes: int, generator: torch.Generator, *,
        dtype: torch.dtype, device: torch.device | str) -> tuple[Tensor, Tensor]:
    """Quadrature nodes and weights, each ``[n_probes, n_steps]``; weights sum to 1 per probe.

    Example:
        >>> A = torch.diag(torch.tensor([-1.0, 0.0, 2.0], dtype=torch.float64))
        >>> nodes, weights = slq(lambda V: V @ A, 3, 3, 1, torch.Generator().manual_seed(0),
        ...                      dtype=torch.float64, device="cpu")
        >>> [round(x, 10) for x in nodes[0].tolist()], [round(w, 10) for w in weights[0].tolist()]
        ([-1.0, 0.0, 2.0], [0.3333333333, 0.3333333333, 0.3333333333])
    """
    if n_probes < 1 or n_steps < 1:
        raise ValueError(f"n_probes and n_steps must be positive; got {n_probes}, {n_steps}")
    if n_steps > n:
        raise ValueError(f"n_steps must be at most n={n}; got {n_steps}")
    probes = rademacher(n_probes, n, generator, dtype=dtype, device=device) / math.sqrt(n)
    nodes, vectors, _ = lanczos(matmat, probes, n_steps, generator).ritz()
    return nodes, vectors[:, 0, :] ** 2
