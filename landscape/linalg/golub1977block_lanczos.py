"""Block Lanczos (Golub & Underwood 1977) with full reorthogonalisation, read out at every step.

From b orthonormal start vectors (rows of ``X₁ [b, n]``) the process builds an orthonormal basis
``X = [X₁; …; X_m]`` of the block Krylov space ``span{X₁, A X₁, …, A^{m-1} X₁}`` and the
symmetric block-tridiagonal ``T = X A Xᵀ`` (diagonal blocks ``A_j``, sub-diagonal blocks ``B_j``).
Unlike single-vector Lanczos, it finds an eigenvalue of multiplicity up to b as that many Ritz
values. Each step applies the operator to one ``[b, n]`` block (b matvecs, batched).

Every new block is orthogonalised twice against the whole basis (classical Gram–Schmidt twice),
so X stays orthonormal to working precision and no spurious Ritz copies appear. The new block and
``B_j`` come from an SVD of the residual ``W = B_jᵀ X_{j+1}`` (rows); a direction whose singular
value is at rounding level (the space is invariant there) is replaced by a fresh random vector
orthogonal to the basis with a zero row of ``B_j``, so T decouples and the rest of the spectrum
stays reachable.

Ritz pairs of any index range are read at every step from T's band (``scipy.linalg.eig_banded``,
only the wanted eigenpairs), with the residual estimates ``‖B_m s_m‖`` (``s_m``: the last block
of the Ritz vector's coordinates; in exact arithmetic ``‖A y − θ y‖``): this is what lets a
caller stop on the residual bound at the first step where it holds. The images ``A X`` are kept
beside the basis (twice its memory), so the explicit residual ``‖A y − θ y‖`` of a Ritz vector
``y = Xᵀ s`` is ``‖(A X)ᵀ s − θ y‖``, without another matvec. Storage grows by doubling.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from scipy.linalg import eig_banded
from torch import Tensor

MatMat = Callable[[Tensor], Tensor]
INITIAL_STEPS = 32  # block steps of storage allocated up front


class BlockLanczos:
    """Block Lanczos process from the rows of ``v0`` ``[b, n]``; ``max_steps`` block steps at
    most (``max_steps · b ≤ n``). Grow it with ``step()``; read it with ``ritz(lo, hi)``."""

    def __init__(self, matmat: MatMat, v0: Tensor, max_steps: int,
                 generator: torch.Generator | None = None):
        if v0.ndim != 2:
            raise ValueError(f"v0 must have shape [b, n]; got {tuple(v0.shape)}")
        b, n = v0.shape
        if not 1 <= max_steps * b <= n:
            raise ValueError(f"max_steps · b must be in [1, n={n}]; got {max_steps} · {b}")
        self._matmat = matmat
        self._generator = generator if generator is not None else torch.Generator().manual_seed(0)
        self.block = b
        rows = min(max_steps, INITIAL_STEPS) * b  # storage grows by doubling, up to max_steps
        self._basis = v0.new_zeros(rows, n)
        self._images = v0.new_zeros(rows, n)  # A X, kept for explicit Ritz residuals
        self._t = np.zeros((rows, rows))  # T, filled block by block
        self._last = np.zeros((b, b))  # B_m, the residual's coupling to the next block
        self.steps = 0
        self.max_steps = max_steps
        q, _ = torch.linalg.qr(v0.T)
        if bool((torch.linalg.svdvals(v0) <= torch.finfo(v0.dtype).eps * v0.norm()).any()):
            raise ValueError("the start vectors must be linearly independent")
        self._basis[:b] = q.T

    @property
    def size(self) -> int:
        """Basis vectors so far: ``steps · b``."""
        return self.steps * self.block

    def _orthogonalise(self, w: Tensor, m: int) -> Tensor:
        q = self._basis[:m]
        for _ in range(2):
            w = w - (w @ q.T) @ q
        return w

    def step(self) -> None:
        """One block step: b matvecs; a no-op at ``max_steps``."""
        if self.steps >= self.max_steps:
            return
        b, j = self.block, self.size
        x = self._basis[j:j + b]
        w = self._matmat(x)
        if w.shape != x.shape:
            raise ValueError(f"operator returned shape {tuple(w.shape)} for input "
                             f"{tuple(x.shape)}")
        self._images[j:j + b] = w
        a = (x @ w.T).double().cpu().numpy()
        self._t[j:j + b, j:j + b] = 0.5 * (a + a.T)
        scale = max(1.0, float(np.abs(a).max()))
        w = self._orthogonalise(w, j + b)
        u, s, vh = torch.linalg.svd(w.T, full_matrices=False)  # W = (s vh)ᵀ uᵀ
        broken = s <= torch.finfo(w.dtype).eps * scale * 10
        coupling = (s[:, None] * vh).double().cpu().numpy()  # B_j, [b, b]
        coupling[broken.cpu().numpy()] = 0.0
        self._last = coupling
        self.steps += 1
        if self.steps < self.max_steps:
            self._reserve(j + 2 * b)
            nxt = u.T.clone()
            if bool(broken.any()):
                nxt[broken] = self._fresh(int(broken.sum()), j + b)
            self._basis[j + b:j + 2 * b] = nxt
            self._t[j + b:j + 2 * b, j:j + b] = coupling
            self._t[j:j + b, j + b:j + 2 * b] = coupling.T

    def _reserve(self, rows: int) -> None:
        """Room for ``rows`` basis vectors (their images, T's rows): capacity doubles, capped at
        max_steps."""
        have = self._basis.shape[0]
        if rows <= have:
            return
        grown = min(self.max_steps * self.block, max(rows, 2 * have))
        for name in ("_basis", "_images"):
            old = getattr(self, name)
            new = old.new_zeros(grown, old.shape[1])
            new[:have] = old
            setattr(self, name, new)
        t = np.zeros((grown, grown))
        t[:have, :have] = self._t
        self._t = t

    def _fresh(self, count: int, m: int) -> Tensor:
        """``count`` orthonormal random rows orthogonal to the first m basis vectors."""
        n = self._basis.shape[1]
        draw = torch.randn(count, n, generator=self._generator, dtype=self._basis.dtype)
        draw = self._orthogonalise(draw.to(self._basis.device), m)
        q, _ = torch.linalg.qr(draw.T)
        return self._orthogonalise(q.T, m)

    def ritz(self, lo: int, hi: int) -> tuple[Tensor, Tensor, Tensor]:
        """Ritz values ``lo … hi-1`` (ascending positions among all ``size`` of them): values
        ``[hi-lo]``, their coordinates in the basis ``[size, hi-lo]`` (columns; ``vectors``
        turns them into Ritz vectors) and residual estimates ``‖B_m s_m‖`` ``[hi-lo]``, as
        float64 CPU tensors. Costs the band reduction, ``O(size · b²)``, and the wanted
        eigenvectors; no matvec."""
        m, b = self.size, self.block
        if not 0 <= lo < hi <= m:
            raise ValueError(f"need 0 <= lo < hi <= {m}; got {lo}, {hi}")
        width = min(2 * b - 1, m - 1)  # the SVD's B_j is full, not triangular
        band = np.zeros((width + 1, m))
        for i in range(width + 1):
            band[i, :m - i] = np.diagonal(self._t[:m, :m], -i)
        values, coords = eig_banded(band, lower=True, select="i", select_range=(lo, hi - 1))
        residuals = np.linalg.norm(self._last @ coords[m - b:], axis=0)
        return torch.from_numpy(values), torch.from_numpy(coords), torch.from_numpy(residuals)

    def vectors(self, coords: Tensor) -> tuple[Tensor, Tensor]:
        """Unit Ritz vectors y ``[c, n]`` (rows) from coordinates ``[size, c]`` (from
        ``ritz``), and their images A y ``[c, n]`` from the stored ``A X`` (no matvec)."""
        coords = coords.to(self._basis.device, self._basis.dtype).T
        return coords @ self._basis[:self.size], coords @ self._images[:self.size]
