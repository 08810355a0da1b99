"""Regularised least-squares solutions of ``A p ≈ −g`` for a symmetric A, in a Krylov space
(matrix-free) or in A's eigenbasis (dense, small n). Both spaces offer the same solves; the
Krylov space's Ritz basis (``KrylovSpace.ritz``) is an eigenbasis of the projected operator.

Lanczos from ``q₁ = g/‖g‖`` (full reorthogonalisation) gives ``A Q_k = Q_{k+1} T̄_k`` with the
``(k+1)×k`` extended tridiagonal ``T̄_k``. For ``p = Q_k y``,
``‖g + A p‖ = ‖‖g‖e₁ + T̄_k y‖`` exactly, so once the basis is built every solve below costs only
``O(k³)`` on small matrices (no further operator applications):

* ``levenberg_marquardt(μ)``: ``min ‖g + Ap‖² + μ‖p‖²`` → ``y = −(T̄ᵀT̄ + μI)⁻¹ T̄ᵀ‖g‖e₁``
  (the Levenberg–Marquardt step for the system ``∇L = 0`` with Jacobian A = H; μ = 0 gives the
  minimum-length least-squares Newton step within the space, i.e. MINRES's iterate);
* ``shifted_solve(γ)``: ``(T_k + γI) y = −‖g‖e₁`` in the minimum-norm least-squares sense
  (the damped-Newton step ``−(A + γI)⁻¹ g`` projected on the space);
* ``predicted_residual(y)``: ``‖g + A Q y‖`` for any coefficient vector.

The basis grows until the least-squares residual is below ``rtol·‖g‖``, the space becomes
invariant, or ``max_dim`` is reached. When g has a component in ker A (an incompatible system) the
least-squares iterate carries a kernel component until the space becomes invariant — as for MINRES;
only then is the minimum-norm solution ``−A⁺g`` reached, so ``max_dim`` should allow it. Cost: k operator
applications; memory ``k·n``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from landscape.linalg.lanczos import Lanczos, MatMat


def pseudo_inverse(values: Tensor, size: int | None = None) -> Tensor:
    """Elementwise ``1/v``, with 0 where ``|v| ≤ eps · size · max|v|`` (rounding level)."""
    size = values.numel() if size is None else size
    keep = values.abs() > values.abs().max() * torch.finfo(values.dtype).eps * size
    return torch.where(keep, 1.0 / torch.where(keep, values, 1.0), 0.0)


@dataclass(frozen=True)
class KrylovSpace:
    """Basis ``[k, n]`` (rows), extended tridiagonal ``tbar [k+1, k]`` and ``‖g‖``."""

    basis: Tensor
    tbar: Tensor
    gnorm: float

    @property
    def dim(self) -> int:
        return self.basis.shape[0]

    def _rhs(self) -> Tensor:
        b = self.tbar.new_zeros(self.tbar.shape[0])
        b[0] = self.gnorm
        return b

    def levenberg_marquardt(self, mu: float) -> Tensor:
        """Coefficients y ``[k]`` of the LM step for damping ``mu ≥ 0`` (min-norm when μ = 0)."""
        u, s, vh = torch.linalg.svd(self.tbar, full_matrices=False)
        coeff = u.T @ self._rhs()
        scale = s / (s**2 + mu) if mu > 0 else pseudo_inverse(s, max(self.tbar.shape))
        return -(vh.T @ (scale * coeff))

    def shifted_solve(self, gamma: float) -> Tensor:
        """Coefficients y ``[k]`` of the min-norm solution of ``(T + γI) y = −‖g‖e₁``."""
        k = self.dim
        t = self.tbar[:k] + gamma * torch.eye(k, dtype=self.tbar.dtype, device=self.tbar.device)
        values, vectors = torch.linalg.eigh(t)
        return -(vectors @ (pseudo_inverse(values) * (vectors[0] * self.gnorm)))

    def predicted_residual(self, y: Tensor) -> float:
        """``‖g + A Q y‖`` (exact up to the orthogonality of the basis)."""
        return float((self._rhs() + self.tbar @ y).norm())

    def to_full(self, y: Tensor) -> Tensor:
        """Step ``p = Qᵀ y`` of shape ``[n]``."""
        return y @ self.basis

    @property
    def norm(self) -> float:
        """‖T̄‖₂, a lower bound of ‖A‖₂."""
        return float(torch.linalg.matrix_norm(self.tbar, 2))

    def ritz(self) -> EigenSpace:
        """The space in its Ritz basis: ``T = S diag(θ) Sᵀ``, eigenvectors ``QᵀS [n, k]``,
        coefficients ``SᵀQg = ‖g‖ S[0]`` (g is the first basis direction)."""
        values, vectors = torch.linalg.eigh(self.tbar[:self.dim])
        return EigenSpace(values, self.basis.T @ vectors, self.gnorm * vectors[0])


@dataclass(frozen=True)
class EigenSpace:
    """The whole space in A's eigenbasis: ``A = V diag(λ) Vᵀ``; coefficients are ``y = Vᵀp``.

    Same solves as ``KrylovSpace``, exact: LM ``y = −λ c/(λ² + μ)``, shifted ``y = −c/(λ + γ)``
    (min-norm: terms with ``|λ + γ|`` at rounding level dropped), with ``c = Vᵀg``. From
    ``KrylovSpace.ritz`` V is ``[n, k]`` (Ritz vectors): the solves are then those of the
    projected ``QᵀTQ`` and ``predicted_residual`` ignores A's part outside the space.
    """

    eigenvalues: Tensor
    eigenvectors: Tensor
    coefficients: Tensor

    @property
    def dim(self) -> int:
        return self.eigenvalues.shape[0]

    def levenberg_marquardt(self, mu: float) -> Tensor:
        lam = self.eigenvalues
        scale = lam / (lam**2 + mu) if mu > 0 else pseudo_inverse(lam)
        return -scale * self.coefficients

    def shifted_solve(self, gamma: float) -> Tensor:
        return -pseudo_inverse(self.eigenvalues + gamma) * self.coefficients

    def predicted_residual(self, y: Tensor) -> float:
        return float((self.coefficients + self.eigenvalues * y).norm())

    def to_full(self, y: Tensor) -> Tensor:
        return self.eigenvectors @ y

    @property
    def norm(self) -> float:
        """‖A‖₂."""
        return float(self.eigenvalues.abs().max())

    def absolute(self) -> EigenSpace:
        """The same space for ``|A| = V diag(|λ|) Vᵀ`` (saddle-free Newton's matrix)."""
        return EigenSpace(self.eigenvalues.abs(), self.eigenvectors, self.coefficients)


def eigen_space(hessian: Tensor, g: Tensor) -> EigenSpace:
    """``EigenSpace`` of a dense symmetric ``hessian [n, n]`` for right-hand side ``g [n]``."""
    values, vectors = torch.linalg.eigh(hessian)
    return EigenSpace(values, vectors, vectors.T @ g)


def krylov_space(matmat: MatMat, g: Tensor, *, max_dim: int, rtol: float = 1e-10,
                 check_every: int = 5) -> KrylovSpace:
    """Build ``K_k(A, g)`` (see the module docstring); ``g`` has shape ``[n]`` and must be non-zero."""
    n = g.shape[0]
    max_dim = min(max_dim, n)
    process = Lanczos(matmat, g.unsqueeze(0), max_dim)
    gnorm = float(g.norm())
    while True:
        process.extend(check_every)
        res = process.result()
        alpha, beta = res.alpha[0], res.beta[0]
        k = alpha.shape[0]
        broken = (beta[:-1] == 0).nonzero()
        if broken.numel():  # invariant subspace: the space is complete at the first break
            k = int(broken[0]) + 1
            alpha, beta = alpha[:k], beta[:k].clone()
            beta[-1] = 0.0
        tbar = alpha.new_zeros(k + 1, k)
        idx = torch.arange(k)
        tbar[idx, idx] = alpha
        tbar[idx + 1, idx] = beta
        tbar[idx[:-1], idx[:-1] + 1] = beta[:-1]
        space = KrylovSpace(res.basis[0, :k], tbar, gnorm)
        rnorm = space.predicted_residual(space.levenberg_marquardt(0.0))
        if (rnorm <= rtol * gnorm or broken.numel() or float(beta[-1]) == 0.0
                or process.steps >= max_dim):
            return space
