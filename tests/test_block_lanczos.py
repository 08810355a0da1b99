"""Block Lanczos: an orthonormal basis and T = X A Xᵀ, residual estimates equal to explicit
residuals, multiple eigenvalues found with their multiplicity, and the per-step stop."""

from __future__ import annotations

import pytest
import torch

from landscape.linalg.golub1977block_lanczos import BlockLanczos
from landscape.spectrum import SymmetricOperator, extreme_eigenpairs
from tests.test_xtrace import symmetric

F64 = torch.float64


def clustered(n: int = 200, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A symmetric matrix whose top eigenvalue 10 has multiplicity 3 and bottom −4 has 2."""
    g = torch.Generator().manual_seed(seed)
    rest = torch.rand(n - 6, generator=g, dtype=F64) * 4 - 2
    values = torch.cat([torch.tensor([10.0, 10.0, 10.0, 7.0, -4.0, -4.0], dtype=F64), rest])
    return symmetric(n, values, seed), values


@pytest.mark.parametrize("b", [1, 3])
def test_basis_is_orthonormal_and_residual_estimates_are_explicit_residuals(b):
    a, _ = clustered()
    v0 = torch.randn(b, 200, dtype=F64, generator=torch.Generator().manual_seed(1))
    process = BlockLanczos(lambda v: v @ a, v0, 120 // b)
    for _ in range(40):  # past the initial storage of 32 steps: it grows
        process.step()
    basis = process._basis[:process.size]
    torch.testing.assert_close(basis @ basis.T, torch.eye(process.size, dtype=F64), atol=1e-12,
                               rtol=0)
    torch.testing.assert_close(torch.from_numpy(process._t[:process.size, :process.size]),
                               basis @ a @ basis.T, atol=1e-10, rtol=0)
    values, coords, estimates = process.ritz(process.size - 4, process.size)
    vectors, images = process.vectors(coords)
    torch.testing.assert_close(images, vectors @ a, atol=1e-12, rtol=0)
    explicit = (vectors @ a - values[:, None] * vectors).norm(dim=1)
    torch.testing.assert_close(estimates, explicit, atol=1e-9, rtol=1e-6)


def test_a_block_finds_multiplicities_up_to_its_size():
    a, _ = clustered()
    op = SymmetricOperator.from_dense(a)
    top = extreme_eigenpairs(op, k=4, block_size=4, tol=1e-9)
    torch.testing.assert_close(top.eigenvalues, torch.tensor([10.0, 10, 10, 7], dtype=F64),
                               atol=1e-7, rtol=0)
    assert top.multiplicity.tolist() == [3, 3, 3, 1] and bool(top.converged.all())
    low = extreme_eigenpairs(op, k=2, which="smallest", block_size=2, tol=1e-9)
    torch.testing.assert_close(low.eigenvalues, torch.tensor([-4.0, -4.0], dtype=F64),
                               atol=1e-7, rtol=0)
    assert low.multiplicity.tolist() == [2, 2] and low.block_size == 2


@pytest.mark.parametrize("b", [1, 2, 5])
def test_it_stops_at_the_step_the_residual_bound_holds(b):
    a, values = clustered(seed=3)
    op = SymmetricOperator.from_dense(a)
    pairs = extreme_eigenpairs(op, k=5, block_size=b, tol=1e-8, seed=2)
    exact = values.sort(descending=True).values[:5]
    assert (((pairs.eigenvalues - exact).abs() / exact.abs()) < 1e-7).all()
    assert pairs.n_matvecs == pairs.n_steps * b  # residuals from the stored images: no extra HVP
    shorter = extreme_eigenpairs(SymmetricOperator.from_dense(a), k=5, block_size=b, tol=1e-8,
                                 seed=2, max_steps=(pairs.n_steps - 1) * b)
    assert not bool(shorter.converged.all())  # one block step fewer is not enough


def test_bad_block_sizes_and_dependent_starts_are_refused():
    a, _ = clustered(n=20)
    op = SymmetricOperator.from_dense(a)
    with pytest.raises(ValueError, match="block_size"):
        extreme_eigenpairs(op, k=1, block_size=0)
    with pytest.raises(ValueError, match="fewer than k=6"):
        extreme_eigenpairs(op, k=6, block_size=5, max_steps=7)
    with pytest.raises(ValueError, match="linearly independent"):
        BlockLanczos(lambda v: v @ a, torch.ones(2, 20, dtype=F64), 3)
