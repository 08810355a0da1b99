"""Hessian spectra of an Objective: dense for small nets, matrix-free estimates for large ones.

Owns: the full spectrum and index α (dense ``eigh`` in float64), extreme eigenpairs by Lanczos,
trace estimates (Hutchinson, Hutch++), spectral densities by stochastic Lanczos quadrature and their
smoothing for plots. Every estimate carries its error: residual norms for eigenpairs, a standard
error for traces; every stochastic routine takes a ``seed`` (int or ``torch.Generator``).
Imports nothing from storage, tracking or plotting.

The operator: every function takes either an ``Objective`` and θ (the Hessian H(θ)) or any
``SymmetricOperator`` with θ omitted (a GGN, a shifted or rescaled Hessian, an explicit matrix),
e.g. ``extreme_eigenpairs(obj, theta, k=5)`` or ``extreme_eigenpairs(obj.hessian_op(theta),
k=5)``; the ``n_matvecs`` a result reports is what the operator's counter counted.

Index convention: with ``scale = max |λ|``, relative tolerance ``tol`` and absolute floor ``atol``,
eigenvalues below ``−max(tol·scale, atol)`` are negative, above ``+max(tol·scale, atol)``
positive, the rest near-zero; ``α = n_negative / n``. The count is stable when it does not change
for thresholds ×/÷ ``INDEX_BAND``; otherwise the index is reported as uncertain, with its range.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from landscape.linalg.epperly2024xnystrace import xnystrace_trace
from landscape.linalg.epperly2024xtrace import xtrace_trace
from landscape.linalg.golub1977block_lanczos import BlockLanczos
from landscape.linalg.hutchinson import TraceEstimate, hutchinson_trace
from landscape.linalg.meyer2020hutchpp import hutchpp_trace
from landscape.linalg.operator import SymmetricOperator
from landscape.linalg.probes import Seed, as_generator, gaussian
from landscape.linalg.slq import slq
from landscape.objective import Objective, check_dense_fits

Target = Objective | SymmetricOperator

DEFAULT_INDEX_TOL = 1e-11
DEFAULT_INDEX_ATOL = 1e-9
INDEX_BAND = 10.0
DENSE_SPECTRUM_MAX_PARAMS = 5000  # default size limit for choosing a dense spectrum over Lanczos
TRACE_METHODS = ("hutchinson", "hutch++", "xtrace", "xnystrace")

__all__ = [
    "DEFAULT_INDEX_ATOL", "DEFAULT_INDEX_TOL", "DENSE_SPECTRUM_MAX_PARAMS", "INDEX_BAND",
    "EigenPairs", "IndexEstimate", "Inertia", "SpectralDensity", "Spectrum", "SymmetricOperator",
    "TraceEstimate", "as_operator", "count_inertia", "estimate_index", "estimate_trace",
    "extreme_eigenpairs", "full_spectrum", "index_threshold", "smooth_density", "spectral_density",
]


def as_operator(target: Target, theta: Tensor | None = None) -> SymmetricOperator:
    """The operator the spectrum functions work on: ``target.hessian_op(theta)`` for an
    ``Objective`` (θ required), ``target`` itself for a ``SymmetricOperator`` (θ omitted)."""
    if isinstance(target, SymmetricOperator):
        if theta is not None:
            raise ValueError("theta is for an Objective only; a SymmetricOperator is already "
                             "evaluated at its point (pass theta=None)")
        return target
    if isinstance(target, Objective):
        if theta is None:
            raise ValueError("theta is required with an Objective (or pass "
                             "obj.hessian_op(theta))")
        return target.hessian_op(theta)
    raise TypeError(f"expected an Objective or a SymmetricOperator; got {type(target).__name__}")


@dataclass(frozen=True)
class Inertia:
    """Counts of negative / near-zero / positive eigenvalues at a threshold, and their robustness.

    ``threshold = max(tol · scale, atol)`` (scale: max |λ|): the relative part follows the size of
    the spectrum, the absolute floor keeps rounding-level and not-quite-critical eigenvalues
    (|λ| ~ ‖g‖ along the zero modes of a non-isolated critical set) out of the count when the whole
    spectrum is small. ``n_negative_min`` / ``n_negative_max`` are the counts at ``threshold ·
    band`` and ``threshold / band``: when they differ, some eigenvalue lies in the band and the
    index is *uncertain* (``stable`` is False) — it is then only known to lie in that range.
    """

    n_negative: int
    n_zero: int
    n_positive: int
    tol: float
    threshold: float
    atol: float = 0.0
    n_negative_min: int | None = None
    n_negative_max: int | None = None

    @property
    def index(self) -> float:
        """α: the fraction of eigenvalues that are negative."""
        return self.n_negative / (self.n_negative + self.n_zero + self.n_positive)

    @property
    def stable(self) -> bool:
        """The negative count is the same everywhere in the stability band."""
        return self.n_negative_min == self.n_negative_max


def index_threshold(scale: float, tol: float = DEFAULT_INDEX_TOL,
                    atol: float = DEFAULT_INDEX_ATOL) -> float:
    """``max(tol · scale, atol)``: eigenvalues within ± this are counted as zero."""
    if tol < 0 or atol < 0:
        raise ValueError(f"tol and atol must be non-negative; got {tol}, {atol}")
    return max(tol * scale, atol)


def count_inertia(eigenvalues: Tensor, tol: float = DEFAULT_INDEX_TOL, *,
                  atol: float = DEFAULT_INDEX_ATOL, scale: float | None = None,
                  band: float = INDEX_BAND) -> Inertia:
    """Inertia of ``eigenvalues`` ``[n]`` at ``max(tol · scale, atol)`` (scale: max |λ|), with
    the negative counts at that threshold × and ÷ ``band`` (see ``Inertia``)."""
    if band < 1:
        raise ValueError(f"band must be >= 1; got {band}")
    if scale is None:
        scale = float(eigenvalues.abs().max()) if eigenvalues.numel() else 0.0
    threshold = index_threshold(scale, tol, atol)
    n_neg = int((eigenvalues < -threshold).sum())
    n_pos = int((eigenvalues > threshold).sum())
    return Inertia(n_neg, eigenvalues.numel() - n_neg - n_pos, n_pos, tol, threshold, atol,
                   int((eigenvalues < -threshold * band).sum()),
                   int((eigenvalues < -threshold / band).sum()))


@dataclass(frozen=True)
class Spectrum:
    """Full Hessian spectrum at θ.

    Attributes:
        eigenvalues: ``[n]`` float64, ascending.
        eigenvectors: ``[n, n]`` float64 with eigenvectors as columns, or None.
        inertia: counts and index α at the relative tolerance ``inertia.tol``.
    """

    eigenvalues: Tensor
    eigenvectors: Tensor | None
    inertia: Inertia

    @property
    def index(self) -> float:
        return self.inertia.index

    @property
    def n_negative(self) -> int:
        return self.inertia.n_negative

    @property
    def n_zero(self) -> int:
        return self.inertia.n_zero

    @property
    def n_positive(self) -> int:
        return self.inertia.n_positive

    @property
    def tol(self) -> float:
        return self.inertia.tol

    def inertia_at(self, tol: float, atol: float = DEFAULT_INDEX_ATOL) -> Inertia:
        """Inertia at another tolerance."""
        return count_inertia(self.eigenvalues, tol, atol=atol)


def full_spectrum(target: Target, theta: Tensor | None = None, *,
                  tol: float = DEFAULT_INDEX_TOL, atol: float = DEFAULT_INDEX_ATOL,
                  eigenvectors: bool = False, block_size: int | None = None) -> Spectrum:
    """All eigenvalues (ascending) of the dense Hessian at θ (or of an operator), in float64.

    The matrix is built from blocks of ``block_size`` identity columns (``op.dense``, n matvecs)
    in the operator's dtype (use float64 for an index) and refused up front when it and the
    decomposition's workspace would not fit on the device.
    """
    op = as_operator(target, theta)
    check_dense_fits(op.n, torch.float64, op.device, copies=3 if eigenvectors else 2,
                     what="A dense spectrum")
    hessian = op.dense(block_size).to(torch.float64)
    if eigenvectors:
        values, vectors = torch.linalg.eigh(hessian)
    else:
        values, vectors = torch.linalg.eigvalsh(hessian), None
    return Spectrum(values, vectors, count_inertia(values, tol, atol=atol))


@dataclass(frozen=True)
class EigenPairs:
    """Extreme eigenpairs from (block) Lanczos.

    Attributes:
        eigenvalues: ``[k]``, largest first for ``which="largest"``, most negative first for
            ``which="smallest"``.
        eigenvectors: ``[k, n]`` unit Ritz vectors (rows).
        residuals: ``[k]`` explicit ``‖H v − λ v‖`` (each eigenvalue is within this of a true one),
            with H v from the stored images of the basis.
        converged: ``[k]`` bool, residual ≤ ``tol · |λ|``.
        n_matvecs: operator applications (HVPs) spent: ``n_steps · block_size``.
        multiplicity: ``[k]`` how many of the k values agree with this one within
            ``tol · |λ| + r_i + r_j`` (itself included): an eigenvalue of multiplicity up to the
            block size is found that many times.
        n_steps: (block) Lanczos steps taken; ``block_size``: vectors per step.
    """

    eigenvalues: Tensor
    eigenvectors: Tensor
    residuals: Tensor
    converged: Tensor
    n_matvecs: int
    multiplicity: Tensor
    n_steps: int
    block_size: int


def extreme_eigenpairs(target: Target, theta: Tensor | None = None, k: int = 1,
                       which: str = "largest", *, tol: float = 1e-6, max_steps: int | None = None,
                       seed: Seed = 0, block_size: int = 1) -> EigenPairs:
    """The k algebraically largest (or smallest) eigenpairs of H(θ) (or an operator) by
    (block) Lanczos.

    Full reorthogonalisation. The basis grows one block of ``block_size`` vectors per step (b
    matvecs in one batched product) and stops at the first step, once it holds ``2k`` vectors,
    where the Ritz residual estimates of the k wanted pairs are all below ``tol · |λ|`` (which
    bounds each eigenvalue's relative error by ``tol``), or at ``max_steps`` basis vectors
    (default ``min(n, max(300, 10k))``). With ``block_size = 1`` a multiple eigenvalue is found
    once, as with any single-vector Krylov method; a block of b finds multiplicities up to b
    (``multiplicity``), and its batched products cost less per vector.
    """
    if which not in ("largest", "smallest"):
        raise ValueError(f"which must be 'largest' or 'smallest'; got {which!r}")
    op = as_operator(target, theta)
    n, start = op.n, op.n_matvecs
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, n={n}]; got {k}")
    if isinstance(block_size, bool) or not isinstance(block_size, int) or not (
            1 <= block_size <= n):
        raise ValueError(f"block_size must be an integer in [1, n={n}]; got {block_size!r}")
    max_steps = min(n, max_steps if max_steps is not None else max(300, 10 * k))
    if max_steps // block_size * block_size < k:
        raise ValueError(f"max_steps={max_steps} holds fewer than k={k} vectors in whole "
                         f"blocks of block_size={block_size}")
    generator = as_generator(seed)
    v0 = gaussian(block_size, n, generator, dtype=op.dtype, device=op.device)
    process = BlockLanczos(op, v0, max_steps // block_size, generator)
    while True:
        process.step()
        m = process.size
        if m < k:
            continue
        lo, hi = (0, k) if which == "smallest" else (m - k, m)
        values, coords, estimates = process.ritz(lo, hi)
        done = m >= min(n, 2 * k) and bool((estimates <= tol * values.abs()).all())
        if done or process.steps >= process.max_steps:
            break
    if which == "largest":
        values, coords = values.flip(0), coords.flip(1)
    ritz_vectors, images = process.vectors(coords)
    ritz_values = values.to(op.device, op.dtype)
    residuals = (images - ritz_values[:, None] * ritz_vectors).norm(dim=1)
    gap = (ritz_values[:, None] - ritz_values[None, :]).abs()
    within = tol * ritz_values.abs()[:, None] + residuals[:, None] + residuals[None, :]
    return EigenPairs(ritz_values, ritz_vectors, residuals, residuals <= tol * ritz_values.abs(),
                      op.n_matvecs - start, (gap <= within).sum(dim=1), process.steps,
                      block_size)


@dataclass(frozen=True)
class IndexEstimate:
    """Index α from the Lanczos extremes, for nets too large for a dense spectrum.

    Attributes:
        n_negative: Ritz values below ``−threshold`` among ``smallest``; by interlacing each
            Ritz value is ≥ its eigenvalue, so this never overcounts.
        threshold: ``max(tol · scale, atol)`` with ``scale = max(|λ_min|, |λ_max|)``.
        complete: the largest of ``smallest`` is ≥ −threshold / band, so every eigenvalue below
            the stability band was reached. A multiple eigenvalue is found once (single-vector
            Krylov), so even a complete count is a lower bound at degenerate points.
        smallest: ascending Ritz values ``[k]``; ``residuals``: their ``‖Hv − λv‖``.
        n_matvecs: operator applications (HVPs) spent.
    """

    n_negative: int
    num_params: int
    tol: float
    atol: float
    threshold: float
    scale: float
    band: float
    complete: bool
    smallest: Tensor
    residuals: Tensor
    n_matvecs: int

    @property
    def index(self) -> float:
        return self.n_negative / self.num_params

    def n_negative_below(self, threshold: float) -> int | None:
        """The count below ``−threshold``; None if the Ritz values do not reach it."""
        if float(self.smallest[-1]) < -threshold and self.smallest.numel() < self.num_params:
            return None
        return int((self.smallest < -threshold).sum())

    @property
    def n_negative_min(self) -> int | None:
        return self.n_negative_below(self.threshold * self.band)

    @property
    def n_negative_max(self) -> int | None:
        return self.n_negative_below(self.threshold / self.band)

    @property
    def stable(self) -> bool:
        return self.complete and self.n_negative_min == self.n_negative_max


def estimate_index(target: Target, theta: Tensor | None = None, *,
                   tol: float = DEFAULT_INDEX_TOL, atol: float = DEFAULT_INDEX_ATOL,
                   band: float = INDEX_BAND, max_k: int = 256, seed: Seed = 0) -> IndexEstimate:
    """Count the negative eigenvalues of H(θ) (or an operator), those below
    ``−max(tol·max|λ|, atol)``, matrix-free.

    The smallest k eigenvalues are computed by Lanczos for k = 8, 16, 32, … until the k-th is
    above the stability band (``complete``) or k reaches ``max_k`` (then the count is a lower
    bound). Cost: a few hundred HVPs per doubling; for an index beyond ``max_k`` use
    ``spectral_density``.
    """
    op = as_operator(target, theta)
    n, start = op.n, op.n_matvecs
    top = extreme_eigenpairs(op, k=1, which="largest", seed=seed)
    k = min(8, n)
    while True:
        low = extreme_eigenpairs(op, k=k, which="smallest", seed=seed)
        values = low.eigenvalues
        scale = max(abs(float(top.eigenvalues[0])), abs(float(values[0])))
        threshold = index_threshold(scale, tol, atol)
        complete = float(values[-1]) >= -threshold / band or k == n
        if complete or k >= min(max_k, n):
            break
        k = min(2 * k, max_k, n)
    return IndexEstimate(int((values < -threshold).sum()), n, tol, atol, threshold, scale, band,
                         complete, values, low.residuals, op.n_matvecs - start)


def estimate_trace(target: Target, theta: Tensor | None = None, n_matvecs: int = 99,
                   method: str = "hutch++", *, seed: Seed = 0,
                   block_size: int = 32) -> TraceEstimate:
    """Stochastic estimate of tr H(θ) (or of an operator) with its standard error, spending
    ``n_matvecs`` operator applications (HVPs) in either method.

    ``"hutch++"`` (default) spends them as ``n_matvecs // 3`` sketch vectors, as many on the
    exact trace of the sketch's span, and the rest as Hutchinson probes of the deflated
    remainder; it wins whenever a few eigenvalues dominate. ``"hutchinson"`` is the plain
    Rademacher average of ``n_matvecs`` probes (one HVP each) — ``hutchinson_trace``'s
    ``n_probes``. ``"xtrace"`` (Epperly et al. 2024) uses each of ``n_matvecs // 2`` test
    vectors both in the sketch and as a deflated probe (leave-one-out): lower error than Hutch++
    at the same budget on decaying spectra. ``"xnystrace"`` (same paper) is its Nyström form for
    positive semi-definite operators only (a GGN ``obj.ggn_op(θ)``, H²; an indefinite one is
    refused): every one of ``n_matvecs`` vectors is a sketch vector and a probe at one product
    each, the lowest error of the four on PSD spectra. Equal ``n_matvecs`` is the fair
    comparison.
    """
    if method not in TRACE_METHODS:
        raise ValueError(f"method must be one of {TRACE_METHODS}; got {method!r}")
    op = as_operator(target, theta)
    estimator = {"hutch++": hutchpp_trace, "hutchinson": hutchinson_trace,
                 "xtrace": xtrace_trace, "xnystrace": xnystrace_trace}[method]
    return estimator(op, op.n, n_matvecs, as_generator(seed), dtype=op.dtype, device=op.device,
                     block_size=block_size)


@dataclass(frozen=True)
class SpectralDensity:
    """Raw SLQ quadrature: per probe, nodes ``[p, m]`` and weights ``[p, m]`` (rows sum to 1).

    The density estimate is ``(1/p) Σ_l Σ_j weights[l, j] · δ(λ − nodes[l, j])``.
    """

    nodes: Tensor
    weights: Tensor
    num_params: int

    def moment(self, power: int) -> tuple[float, float]:
        """Estimate of ``tr(H^power)/n`` and its standard error over probes.

        Exact per probe (``vᵀ H^power v``) for ``power < 2m``.
        """
        per_probe = (self.weights * self.nodes**power).sum(dim=1)
        p = per_probe.numel()
        stderr = float(per_probe.std(correction=1)) / math.sqrt(p) if p > 1 else math.nan
        return float(per_probe.mean()), stderr


def spectral_density(target: Target, theta: Tensor | None = None, n_steps: int = 90,
                     n_probes: int = 10, *, seed: Seed = 0) -> SpectralDensity:
    """Spectral density of H(θ) (or of an operator) by stochastic Lanczos quadrature.

    All probes run batched: ``n_steps`` applications of a ``[n_probes, n]`` block, i.e.
    ``n_steps · n_probes`` matvecs. Defaults follow Ghorbani et al. 2019 (80–90 steps, full
    reorthogonalisation); ``n_steps`` is capped at n.
    """
    op = as_operator(target, theta)
    nodes, weights = slq(op, op.n, min(n_steps, op.n), n_probes, as_generator(seed),
                         dtype=op.dtype, device=op.device)
    return SpectralDensity(nodes.cpu(), weights.cpu(), op.n)


def smooth_density(density: SpectralDensity, *, n_grid: int = 1000,
                   variance: float | None = None) -> tuple[Tensor, Tensor]:
    """Gaussian-smoothed density on a grid, for plotting: ``(grid [n_grid], values [n_grid])``.

    Each node becomes a Gaussian of the given ``variance`` (default ``1e-5 · max(1, range)``, the
    Ghorbani et al. / PyHessian choice); the values integrate to ≈1 over the grid.
    """
    nodes = density.nodes.reshape(-1).to(torch.float64)
    weights = density.weights.reshape(-1).to(torch.float64) / density.nodes.shape[0]
    lo, hi = float(nodes.min()), float(nodes.max())
    if variance is None:
        variance = 1e-5 * max(1.0, hi - lo)
    if variance <= 0:
        raise ValueError(f"variance must be positive; got {variance}")
    pad = max(0.01 * (hi - lo), 5 * math.sqrt(variance))
    grid = torch.linspace(lo - pad, hi + pad, n_grid, dtype=torch.float64)
    kernel = torch.exp(-((grid[:, None] - nodes[None, :]) ** 2) / (2 * variance))
    values = kernel @ weights / math.sqrt(2 * math.pi * variance)
    return grid, values
