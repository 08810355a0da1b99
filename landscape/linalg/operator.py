"""A symmetric linear operator given matrix-free, with a count of the vectors it was applied to.

The package's convention: vectors are *rows*, so the operator's ``matmat`` maps ``V [k, n]`` to
``[k, n]`` with row i equal to ``A v_i`` (for symmetric A this is ``V @ A``). Every algorithm in
``landscape.linalg`` takes such a callable; a ``SymmetricOperator`` is one (it is callable), and
it also carries ``n``, ``dtype``, ``device`` and ``n_matvecs``, the number of vectors applied so
far — the machine-independent cost the estimators report. Hessian, GGN, a shifted or rescaled
Hessian are all operators of this kind (``Objective.hessian_op`` gives the Hessian at θ).
Imports nothing but torch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import Tensor

MatMat = Callable[[Tensor], Tensor]
DEFAULT_BLOCK_SIZE = 128  # identity rows per application when an operator is made dense


class SymmetricOperator:
    """A symmetric ``n×n`` operator A given by ``matmat(V [k, n]) -> [k, n]`` (rows ``A v_i``).

    ``op(V)`` / ``op.matmat(V)`` accept ``[k, n]`` or a single vector ``[n]`` (returned as
    ``[n]``; the wrapped ``matmat`` always sees ``[k, n]``), move V to ``device`` / ``dtype`` and
    add k to ``n_matvecs``. ``op @ X`` is the matrix product ``A X`` for ``X [n]`` or
    ``[n, k]`` (columns), so an operator can stand in for a dense matrix. Symmetry is the
    caller's promise; it is not checked.

    Example:
        >>> A = torch.tensor([[2.0, 1.0], [1.0, 3.0]], dtype=torch.float64)
        >>> op = SymmetricOperator(lambda V: V @ A, 2, dtype=torch.float64)
        >>> op(torch.eye(2, dtype=torch.float64)).tolist(), op.n_matvecs
        ([[2.0, 1.0], [1.0, 3.0]], 2)
        >>> (op @ torch.ones(2, dtype=torch.float64)).tolist(), op.n_matvecs
        ([3.0, 4.0], 3)
    """

    def __init__(self, matmat: MatMat, n: int, *, dtype: torch.dtype = torch.float64,
                 device: torch.device | str = "cpu",
                 block_size: int | Callable[[], int] | None = None):
        if not callable(matmat):
            raise TypeError(f"matmat must be callable; got {type(matmat).__name__}")
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive integer; got {n!r}")
        if not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating type; got {dtype}")
        self._matmat = matmat
        self.n = n
        self.dtype = dtype
        self.device = torch.device(device)
        self._block_size = min(n, DEFAULT_BLOCK_SIZE) if block_size is None else block_size
        self.n_matvecs = 0

    def matmat(self, vectors: Tensor) -> Tensor:
        """``A v`` for every row of ``vectors`` (``[k, n]``, or ``[n]`` for one vector)."""
        if not isinstance(vectors, Tensor) or vectors.ndim not in (1, 2) or (
                vectors.shape[-1] != self.n):
            shape = tuple(vectors.shape) if isinstance(vectors, Tensor) else type(vectors).__name__
            raise ValueError(f"vectors must have shape [n] or [k, n] with n={self.n}; got {shape}")
        batch = vectors.to(self.device, self.dtype).reshape(-1, self.n)
        out = self._matmat(batch)
        if out.shape != batch.shape:
            raise ValueError(f"matmat returned shape {tuple(out.shape)} for input "
                             f"{tuple(batch.shape)}")
        self.n_matvecs += batch.shape[0]
        return out.reshape(vectors.shape)

    __call__ = matmat

    def __matmul__(self, x: Tensor) -> Tensor:
        return self.matmat(x) if x.ndim == 1 else self.matmat(x.T).T

    @property
    def block_size(self) -> int:
        """Rows per application in ``row_blocks`` / ``dense`` by default: ``min(n, 128)``, the
        maker's int, or what the maker's sizing function returns (called on first use only, so
        operators that are never made dense pay nothing for it)."""
        if callable(self._block_size):
            self._block_size = self._block_size()
        return self._block_size

    def row_blocks(self, block_size: int | None = None) -> Iterator[tuple[slice, Tensor]]:
        """``(rows, A[rows])`` for consecutive blocks of ``block_size`` rows of A (default: the
        operator's ``block_size``, ``min(n, 128)`` unless its maker sized it), each from one
        application to identity rows: n matvecs in all, one block in memory at a time."""
        block_size = self.block_size if block_size is None else block_size
        if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
            raise ValueError(f"block_size must be a positive integer; got {block_size!r}")
        for start in range(0, self.n, block_size):
            stop = min(self.n, start + block_size)
            eye = torch.zeros(stop - start, self.n, dtype=self.dtype, device=self.device)
            eye[:, start:stop].fill_diagonal_(1.0)
            yield slice(start, stop), self.matmat(eye)

    def dense(self, block_size: int | None = None) -> Tensor:
        """The ``[n, n]`` matrix from ``row_blocks``, symmetrised ``(A + Aᵀ)/2`` (removes
        rounding asymmetry only).

        Costs n matvecs; peak memory is the result plus one block. The caller checks that
        ``[n, n]`` fits (``landscape.objective.check_dense_fits``).
        """
        out = torch.empty(self.n, self.n, dtype=self.dtype, device=self.device)
        for rows, block in self.row_blocks(block_size):
            out[rows] = block
        return 0.5 * (out + out.T)

    @classmethod
    def from_dense(cls, matrix: Tensor) -> SymmetricOperator:
        """The operator ``V ↦ V @ matrix`` of a dense symmetric ``matrix [n, n]``."""
        if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
            raise ValueError(f"matrix must be square; got shape {tuple(matrix.shape)}")
        return cls(lambda V: V @ matrix, matrix.shape[0], dtype=matrix.dtype,
                   device=matrix.device)

    def __repr__(self) -> str:
        return (f"SymmetricOperator(n={self.n:,}, dtype={self.dtype}, device={self.device}, "
                f"n_matvecs={self.n_matvecs})")
