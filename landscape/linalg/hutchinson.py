"""Hutchinson's trace estimator (Hutchinson 1990) with a standard error.

For Rademacher probes z (entries ±1), ``E[zᵀ A z] = tr(A)`` and
``Var[zᵀ A z] = 2 Σ_{i≠j} A_ij²``. The estimate is the mean of s samples ``z_iᵀ A z_i``; its standard
error is the sample standard deviation over √s. Cost: s operator applications, sent through the
operator in blocks of ``block_size`` probes; memory ``O(block_size · n)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from landscape.linalg.probes import rademacher

MatMat = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class TraceEstimate:
    """A stochastic trace estimate.

    Attributes:
        value: the estimate of tr(A).
        stderr: its standard error (for Hutch++: conditional on the sketch, from the residual
            Hutchinson samples); NaN when fewer than two samples define it.
        n_matvecs: operator applications spent.
        method: ``"hutchinson"`` or ``"hutch++"``.
    """

    value: float
    stderr: float
    n_matvecs: int
    method: str


def quadratic_forms(matmat: MatMat, probes: Tensor, block_size: int) -> Tensor:
    """``[s]`` values ``z_iᵀ A z_i`` for the rows of ``probes`` ``[s, n]``, ``block_size`` at once."""
    return torch.cat([(block * matmat(block)).sum(dim=1) for block in probes.split(block_size)])


def mean_and_stderr(samples: Tensor) -> tuple[float, float]:
    """Sample mean and its standard error (ddof = 1; NaN for one sample)."""
    s = samples.numel()
    mean = float(samples.mean())
    stderr = float(samples.std(correction=1)) / math.sqrt(s) if s > 1 else math.nan
    return mean, stderr


def hutchinson_trace(matmat: MatMat, n: int, n_probes: int, generator: torch.Generator, *,
                     dtype: torch.dtype, device: torch.device | str,
                     block_size: int = 32) -> TraceEstimate:
    """Hutchinson estimate of tr(A) for an ``n×n`` operator from ``n_probes`` Rademacher probes.

    Example:
        >>> A = torch.diag(torch.arange(1.0, 101.0, dtype=torch.float64))
        >>> est = hutchinson_trace(lambda V: V @ A, 100, 10, torch.Generator().manual_seed(0),
        ...                        dtype=torch.float64, device="cpu")
        >>> est.value  # diagonal A: every Rademacher sample is exact
        5050.0
    """
    if n_probes < 1:
        raise ValueError(f"n_probes must be at least 1; got {n_probes}")
    probes = rademacher(n_probes, n, generator, dtype=dtype, device=device)
    value, stderr = mean_and_stderr(quadratic_forms(matmat, probes, block_size))
    return TraceEstimate(value, stderr, n_probes, "hutchinson")
