"""Lanczos tridiagonalisation with full reorthogonalisation, for k independent starts at once.

Lanczos (1950) builds, from a start ``q₁``, an orthonormal basis ``Q = [q₁ … q_m]`` of the Krylov
space ``span{q₁, A q₁, …, A^{m-1} q₁}`` and the tridiagonal ``T = Qᵀ A Q`` (diagonal α, off-diagonal
β). In floating point the basis loses orthogonality as Ritz values converge, which creates spurious
copies of eigenvalues; here every new vector is orthogonalised twice against the whole basis
(classical Gram–Schmidt twice), so ``Q`` stays orthonormal to working precision. Cost: one operator
application per step for all k starts together (the operator takes ``[k, n]`` blocks), plus
``O(k·m·n)`` flops and ``k·m·n`` memory for the stored bases.

On breakdown (``β_j ≈ 0``: the Krylov space is invariant) the run continues from a random vector
orthogonal to the basis with ``β_j = 0``: T becomes block diagonal, Gauss quadrature from q₁ is
unaffected (the new block has zero weight) and the remaining spectrum stays reachable.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

MatMat = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class LanczosResult:
    """Output of ``lanczos`` for k starts and m steps.

    Attributes:
        alpha: ``[k, m]`` diagonal of T.
        beta: ``[k, m]``; ``beta[:, j]`` couples steps j and j+1; ``beta[:, -1]`` is the norm of the
            final residual (the Ritz-residual estimate uses it).
        basis: ``[k, m, n]`` orthonormal Lanczos vectors (rows).
    """

    alpha: Tensor
    beta: Tensor
    basis: Tensor

    def tridiagonal(self) -> Tensor:
        """``[k, m, m]`` symmetric tridiagonal matrices T."""
        off = self.beta[:, :-1]
        return (torch.diag_embed(self.alpha) + torch.diag_embed(off, 1)
                + torch.diag_embed(off, -1))

    def ritz(self) -> tuple[Tensor, Tensor, Tensor]:
        """Ritz values ``[k, m]`` (ascending), eigenvectors of T ``[k, m, m]`` (columns), and the
        residual estimates ``|β_m · s_{m,i}|`` ``[k, m]`` (exact arithmetic: ‖A y_i − θ_i y_i‖)."""
        values, vectors = torch.linalg.eigh(self.tridiagonal())
        residuals = (self.beta[:, -1:] * vectors[:, -1, :]).abs()
        return values, vectors, residuals


class Lanczos:
    """Step-by-step Lanczos process for the rows of ``v0`` (``[k, n]``); see the module docstring.

    Use ``extend(steps)`` to grow the basis and ``result()`` to read it; ``lanczos()`` wraps both.
    """

    def __init__(self, matmat: MatMat, v0: Tensor, max_steps: int,
                 generator: torch.Generator | None = None):
        if v0.ndim != 2:
            raise ValueError(f"v0 must have shape [k, n]; got {tuple(v0.shape)}")
        k, n = v0.shape
        if not 1 <= max_steps <= n:
            raise ValueError(f"max_steps must be in [1, n={n}]; got {max_steps}")
        norms = v0.norm(dim=1, keepdim=True)
        if bool((norms == 0).any()):
            raise ValueError("every start vector must be non-zero")
        self._matmat = matmat
        self._generator = generator if generator is not None else torch.Generator().manual_seed(0)
        self._basis = v0.new_zeros(k, max_steps, n)
        self._basis[:, 0] = v0 / norms
        self._alpha: list[Tensor] = []
        self._beta: list[Tensor] = []
        self.steps = 0

    def _orthogonalise(self, w: Tensor, m: int) -> Tensor:
        q = self._basis[:, :m]
        for _ in range(2):
            w = w - torch.einsum("kmn,km->kn", q, torch.einsum("kmn,kn->km", q, w))
        return w

    def extend(self, steps: int) -> None:
        """Run ``steps`` more Lanczos steps (capped at ``max_steps``)."""
        max_steps = self._basis.shape[1]
        for _ in range(min(steps, max_steps - self.steps)):
            j = self.steps
            q = self._basis[:, j]
            w = self._matmat(q)
            if w.shape != q.shape:
                raise ValueError(f"operator returned shape {tuple(w.shape)} for input "
                                 f"{tuple(q.shape)}")
            alpha = (q * w).sum(dim=1)
            w = self._orthogonalise(w, j + 1)
            beta = w.norm(dim=1)
            self._alpha.append(alpha)
            self._beta.append(beta)
            self.steps += 1
            if self.steps < max_steps:
                self._basis[:, j + 1] = self._next_vector(w, beta, j + 1)

    def _next_vector(self, w: Tensor, beta: Tensor, m: int) -> Tensor:
        scale = max(1.0, float(self._alpha[-1].abs().max()))
        broken = beta <= torch.finfo(w.dtype).eps * scale * 10
        if bool(broken.any()):
            fresh = self._fresh_vectors(w, m)
            w = torch.where(broken[:, None], fresh, w)
            beta[broken] = 0.0  # the stored β_j: T decouples at this step
        return w / w.norm(dim=1, keepdim=True)

    def _fresh_vectors(self, like: Tensor, m: int) -> Tensor:
        """Random rows orthogonal to the first m basis vectors. A draw that falls (almost) inside
        the basis — e.g. the start itself, when it came from a generator with the same seed —
        is drawn again."""
        fresh = like.new_zeros(like.shape)
        todo = torch.ones(like.shape[0], dtype=torch.bool, device=like.device)
        while bool(todo.any()):
            draw = torch.randn(like.shape, generator=self._generator, dtype=like.dtype)
            draw = self._orthogonalise(draw.to(like.device), m)
            ok = todo & (draw.norm(dim=1) > 1e-3 * (like.shape[1] - m) ** 0.5)
            fresh[ok] = draw[ok]
            todo &= ~ok
        return fresh

    def result(self) -> LanczosResult:
        return LanczosResult(alpha=torch.stack(self._alpha, dim=1),
                             beta=torch.stack(self._beta, dim=1),
                             basis=self._basis[:, :self.steps])


def lanczos(matmat: MatMat, v0: Tensor, n_steps: int,
            generator: torch.Generator | None = None) -> LanczosResult:
    """Run ``n_steps`` Lanczos steps from each row of ``v0`` ``[k, n]`` (``n_steps ≤ n``).

    Example:
        >>> A = torch.diag(torch.arange(1.0, 6.0, dtype=torch.float64))
        >>> res = lanczos(lambda V: V @ A, torch.ones(1, 5, dtype=torch.float64), 5)
        >>> torch.allclose(res.ritz()[0][0], torch.arange(1.0, 6.0, dtype=torch.float64))
        True
    """
    process = Lanczos(matmat, v0, n_steps, generator)
    process.extend(n_steps)
    return process.result()
