"""SymmetricOperator on explicit matrices, the spectrum functions on operators against closed forms,
and Objective.hessian_op against Objective.hessian."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from landscape.linalg.operator import SymmetricOperator
from landscape.linalg.regularised_ls import eigen_space, krylov_space
from landscape.objective import Objective
from landscape.spectrum import (
    count_inertia,
    estimate_index,
    estimate_trace,
    extreme_eigenpairs,
    full_spectrum,
    spectral_density,
)
from tests.conftest import mlp

F64 = torch.float64


def symmetric(n: int, eigenvalues: list[float] | None = None, seed: int = 0) -> torch.Tensor:
    """``Q diag(λ) Qᵀ`` with a random orthogonal Q (λ: the given values, else standard normal)."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=F64))
    values = (torch.tensor(eigenvalues, dtype=F64) if eigenvalues is not None
              else torch.randn(n, generator=g, dtype=F64))
    a = q @ torch.diag(values) @ q.T
    return 0.5 * (a + a.T)


# ---------------------------------------------------------------------------------- the type
def test_operator_applies_the_matrix_and_counts_vectors():
    a = symmetric(7)
    op = SymmetricOperator.from_dense(a)
    assert (op.n, op.dtype, op.device, op.n_matvecs) == (7, F64, torch.device("cpu"), 0)
    v = torch.randn(3, 7, dtype=F64, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(op(v), v @ a, rtol=1e-14, atol=1e-14)  # rows: A v_i
    assert op.n_matvecs == 3
    one = op.matmat(v[0])
    assert one.shape == (7,) and op.n_matvecs == 4
    torch.testing.assert_close(one, a @ v[0], rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(op @ v.T, a @ v.T, rtol=1e-14, atol=1e-14)  # columns: A X
    assert op.n_matvecs == 7
    torch.testing.assert_close(op.dense(block_size=3), a, rtol=1e-14, atol=1e-14)
    assert op.n_matvecs == 7 + 7  # the dense matrix costs n matvecs, in any blocking
    assert "n_matvecs=14" in repr(op)


def test_operator_converts_inputs_to_its_dtype():
    op = SymmetricOperator.from_dense(torch.eye(3, dtype=F64))
    assert op(torch.ones(2, 3, dtype=torch.float32)).dtype == F64


def test_operator_validates_its_arguments():
    with pytest.raises(TypeError, match="matmat must be callable; got Tensor"):
        SymmetricOperator(torch.eye(2), 2)
    with pytest.raises(ValueError, match="n must be a positive integer; got 0"):
        SymmetricOperator(lambda V: V, 0)
    with pytest.raises(ValueError, match="dtype must be a floating type; got torch.int64"):
        SymmetricOperator(lambda V: V, 2, dtype=torch.int64)
    with pytest.raises(ValueError, match="must be square; got shape \\(2, 3\\)"):
        SymmetricOperator.from_dense(torch.zeros(2, 3))
    op = SymmetricOperator(lambda V: V[:, :1], 3)
    with pytest.raises(ValueError, match="n=3; got \\(2, 4\\)"):
        op(torch.zeros(2, 4))
    with pytest.raises(ValueError, match="matmat returned shape \\(1, 1\\) for input \\(1, 3\\)"):
        op(torch.zeros(3))
    assert op.n_matvecs == 0  # failed applications are not counted
    with pytest.raises(ValueError, match="block_size must be a positive integer; got 0"):
        SymmetricOperator.from_dense(torch.eye(3)).dense(block_size=0)


def test_krylov_ritz_space_of_an_operator_solves_with_a_and_abs_a():
    """The optimizers' spaces: k = n Ritz pairs are A's eigenpairs; the shifted solves of the
    space and of its absolute value are −(A + γI)⁻¹g and −(|A| + γI)⁻¹g."""
    values = torch.tensor([-3.0, -1.0, 0.5, 2.0, 4.0, 6.0], dtype=F64)
    a = symmetric(6, values.tolist())
    op = SymmetricOperator.from_dense(a)
    g = torch.randn(6, dtype=F64, generator=torch.Generator().manual_seed(4))
    space = krylov_space(op, g, max_dim=6, rtol=0.0).ritz()
    assert op.n_matvecs == space.dim == 6
    torch.testing.assert_close(space.eigenvalues, values, rtol=0, atol=1e-12)
    eye = torch.eye(6, dtype=F64)
    vals, vecs = torch.linalg.eigh(a)
    abs_a = vecs @ torch.diag(vals.abs()) @ vecs.T
    for gamma in (0.0, 0.7):
        torch.testing.assert_close(space.to_full(space.shifted_solve(gamma)),
                                   -torch.linalg.solve(a + gamma * eye, g), rtol=0, atol=1e-10)
        absolute = space.absolute()
        torch.testing.assert_close(absolute.to_full(absolute.shifted_solve(gamma)),
                                   -torch.linalg.solve(abs_a + gamma * eye, g), rtol=0,
                                   atol=1e-10)
    dense = eigen_space(a, g)
    torch.testing.assert_close(dense.to_full(dense.shifted_solve(0.7)),
                               space.to_full(space.shifted_solve(0.7)), rtol=0, atol=1e-10)


# ---------------------------------------------------------------------------------- spectrum
EIGENVALUES = [-4.0, -2.5, -1.0, -0.2, 0.0, 0.0, 0.3, 0.9, 1.7, 2.2, 3.1, 5.0]


def test_full_spectrum_of_an_operator_is_eigvalsh():
    a = symmetric(12, EIGENVALUES)
    spec = full_spectrum(SymmetricOperator.from_dense(a), eigenvectors=True, tol=1e-10, atol=0.0)
    torch.testing.assert_close(spec.eigenvalues, torch.linalg.eigvalsh(a), rtol=0, atol=1e-12)
    torch.testing.assert_close(a @ spec.eigenvectors, spec.eigenvectors * spec.eigenvalues,
                               rtol=0, atol=1e-12)
    assert (spec.n_negative, spec.n_zero, spec.n_positive) == (4, 2, 6)


@pytest.mark.parametrize("which", ["largest", "smallest"])
def test_extreme_eigenpairs_of_an_operator(which):
    a = symmetric(60)
    exact = torch.linalg.eigvalsh(a)
    op = SymmetricOperator.from_dense(a)
    pairs = extreme_eigenpairs(op, k=3, which=which, tol=1e-10, seed=0)
    expected = exact.flip(0)[:3] if which == "largest" else exact[:3]
    torch.testing.assert_close(pairs.eigenvalues, expected, rtol=1e-9, atol=0)
    assert bool(pairs.converged.all())
    assert pairs.n_matvecs == op.n_matvecs  # the result reports what the operator counted


def test_index_of_an_operator_counts_the_negative_eigenvalues():
    op = SymmetricOperator.from_dense(symmetric(12, EIGENVALUES))
    est = estimate_index(op, tol=1e-10, atol=0.0, seed=0)
    assert est.complete and est.n_negative == 4 and est.index == pytest.approx(4 / 12)
    assert est.n_matvecs == op.n_matvecs


def test_trace_of_an_operator_closed_forms():
    low_rank = symmetric(50, [30.0, -7.0, 2.0] + [0.0] * 47)
    op = SymmetricOperator.from_dense(low_rank)
    est = estimate_trace(op, n_matvecs=15, seed=0)  # sketch of 5 ≥ rank 3: exact
    assert est.value == pytest.approx(25.0, abs=1e-10) and est.stderr < 1e-10
    assert est.n_matvecs == op.n_matvecs == 15
    diagonal = SymmetricOperator.from_dense(torch.diag(torch.arange(1.0, 51.0, dtype=F64)))
    est = estimate_trace(diagonal, n_matvecs=7, method="hutchinson", seed=0)
    assert est.value == 1275.0 and est.n_matvecs == diagonal.n_matvecs == 7  # zᵢ² = 1
    dense = symmetric(50)
    for seed in range(3):
        est = estimate_trace(SymmetricOperator.from_dense(dense), n_matvecs=30, seed=seed)
        assert abs(est.value - float(torch.trace(dense))) <= 4 * est.stderr


def test_spectral_density_of_an_operator_with_n_steps_is_exact():
    a = symmetric(12, EIGENVALUES)
    op = SymmetricOperator.from_dense(a)
    density = spectral_density(op, n_steps=12, n_probes=4, seed=0)
    assert op.n_matvecs == 12 * 4
    assert density.moment(0)[0] == pytest.approx(1.0, rel=1e-12)
    values = torch.tensor(EIGENVALUES, dtype=F64)
    for power in (1, 2):
        estimate, stderr = density.moment(power)
        assert abs(estimate - float((values**power).mean())) <= 4 * stderr
    assert float(density.nodes.min()) == pytest.approx(-4.0, rel=1e-10)
    assert float(density.nodes.max()) == pytest.approx(5.0, rel=1e-10)


def test_a_shifted_hessian_is_just_another_operator(data):
    """The operator API is what lets a GGN or a rescaled Hessian through: here H + 2I."""
    obj = Objective(mlp(nn.Tanh), nn.functional.cross_entropy, data)
    hessian = obj.hessian_op(obj.theta)
    shifted = SymmetricOperator(lambda V: hessian(V) + 2.0 * V, obj.num_params)
    expected = torch.linalg.eigvalsh(obj.hessian(obj.theta)) + 2.0
    torch.testing.assert_close(full_spectrum(shifted).eigenvalues, expected, rtol=1e-10,
                               atol=1e-12)
    top = extreme_eigenpairs(shifted, k=1, seed=0)
    assert float(top.eigenvalues[0]) == pytest.approx(float(expected[-1]), rel=1e-6)


def test_spectrum_functions_validate_the_target(data):
    obj = Objective(mlp(nn.Tanh), nn.functional.cross_entropy, data)
    op = obj.hessian_op(obj.theta)
    with pytest.raises(ValueError, match="theta is required with an Objective"):
        extreme_eigenpairs(obj)
    with pytest.raises(ValueError, match="theta is for an Objective only"):
        estimate_trace(op, obj.theta)
    with pytest.raises(TypeError, match="an Objective or a SymmetricOperator; got Tensor"):
        full_spectrum(torch.eye(3))


# ---------------------------------------------------------------------------------- Objective
def test_hessian_op_is_the_objectives_hessian(data):
    obj = Objective(mlp(nn.Tanh), nn.functional.cross_entropy, data)
    theta = obj.theta + 0.3 * torch.randn(obj.num_params, dtype=F64,
                                          generator=torch.Generator().manual_seed(2))
    op = obj.hessian_op(theta)
    assert (op.n, op.dtype, op.device) == (obj.num_params, obj.dtype, obj.device)
    dense = obj.hessian(theta)
    torch.testing.assert_close(op.dense(), dense, rtol=0, atol=0)
    assert op.n_matvecs == obj.num_params
    v = torch.randn(4, obj.num_params, dtype=F64, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(op(v), obj.hvp(theta, v), rtol=0, atol=0)
    torch.testing.assert_close(op(v), v @ dense, rtol=1e-10, atol=1e-12)
    theta.add_(1.0)  # the operator holds its own copy of θ
    torch.testing.assert_close(op(v), obj.hvp(theta - 1.0, v), rtol=1e-12, atol=1e-14)


def test_objective_and_its_operator_give_the_same_results(data):
    obj = Objective(mlp(nn.Tanh), nn.functional.cross_entropy, data)
    theta = obj.theta
    pairs = extreme_eigenpairs(obj, theta, k=2, seed=5)
    op = obj.hessian_op(theta)
    same = extreme_eigenpairs(op, k=2, seed=5)
    assert torch.equal(pairs.eigenvalues, same.eigenvalues)
    assert pairs.n_matvecs == same.n_matvecs == op.n_matvecs
    assert estimate_trace(obj, theta, 30, seed=1) == estimate_trace(obj.hessian_op(theta), None,
                                                                    30, seed=1)
    dense = full_spectrum(obj, theta)
    assert torch.equal(dense.eigenvalues, full_spectrum(obj.hessian_op(theta)).eigenvalues)
    assert dense.inertia == count_inertia(dense.eigenvalues)
