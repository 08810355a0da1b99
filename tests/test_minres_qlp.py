"""MINRES-QLP against dense linear algebra: solves, pseudo-inverse solutions of singular
(compatible and incompatible) systems, shifts, flags, dtype/device handling and input checks."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import scipy.sparse.linalg as sla
import torch

from landscape.linalg.minres_qlp import FLAGS, MinresQLPResult, minres_qlp

F64 = torch.float64


@pytest.fixture(autouse=True)
def _single_thread():
    """The operators here are small (n ≤ 200): intra-op threading only adds overhead (and stalls
    badly on a loaded machine), so run single-threaded and restore the setting afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _orthogonal(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=F64))
    return q


def _symmetric(eigenvalues: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``A = Q diag(λ) Qᵀ`` (exactly symmetric) and Q."""
    q = _orthogonal(eigenvalues.numel(), seed)
    a = q @ torch.diag(eigenvalues.to(F64)) @ q.T
    return (a + a.T) / 2, q


def _rel(x: torch.Tensor, y: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(x - y) / torch.linalg.vector_norm(y))


def _singular_problem(kernel_fraction: float, seed: int = 0, n: int = 200, rank: int = 150):
    """Indefinite rank-150 A (|λ| ∈ [0.1, 1], both signs, 50 zero eigenvalues) and a unit b with
    ``kernel_fraction`` of ‖b‖² in ker A. Returns (A, b, Q, rank)."""
    g = torch.Generator().manual_seed(seed + 1000)
    lam = torch.zeros(n, dtype=F64)
    mags = 0.1 + 0.9 * torch.rand(rank, generator=g, dtype=F64)
    signs = torch.where(torch.rand(rank, generator=g, dtype=F64) < 0.5, -1.0, 1.0)
    lam[:rank] = mags * signs
    a, q = _symmetric(lam, seed)
    b_range = q[:, :rank] @ torch.randn(rank, generator=g, dtype=F64)
    b_kernel = q[:, rank:] @ torch.randn(n - rank, generator=g, dtype=F64)
    b = ((1 - kernel_fraction) ** 0.5 * b_range / b_range.norm()
         + kernel_fraction ** 0.5 * b_kernel / b_kernel.norm())
    return a, b, q, rank


def test_spd_system_matches_dense_solve():
    a, _ = _symmetric(torch.linspace(0.5, 5.0, 60), seed=1)
    b = torch.randn(60, generator=torch.Generator().manual_seed(2), dtype=F64)
    res = minres_qlp(lambda v: a @ v, b, rtol=1e-12)
    assert res.flag in (1, 3) and res.flag_name == FLAGS[res.flag][0]
    assert _rel(res.x, torch.linalg.solve(a, b)) < 1e-10
    assert res.relres <= 1e-12
    assert res.iterations <= 60 and res.x.dtype == F64
    assert torch.allclose(res.residual, b - a @ res.x, atol=1e-13)
    assert res.rnorm == pytest.approx(float(res.residual.norm()))
    assert res.xnorm == pytest.approx(float(res.x.norm()))
    assert 0.5 * 5.0 <= res.anorm <= 5.0 + 1e-12         # a lower bound on ‖A‖


@pytest.mark.parametrize("trancond", [1.0, 1e7, 1e15])
def test_indefinite_nonsingular_system_matches_dense_solve(trancond):
    mags = torch.linspace(0.3, 3.0, 80, dtype=F64)
    lam = torch.where(torch.arange(80) % 2 == 0, mags, -mags)
    a, _ = _symmetric(lam, seed=3)
    b = torch.randn(80, generator=torch.Generator().manual_seed(4), dtype=F64)
    res = minres_qlp(lambda v: a @ v, b, rtol=1e-12, trancond=trancond)
    assert res.flag in (1, 3)
    assert _rel(res.x, torch.linalg.solve(a, b)) < 1e-9
    if trancond == 1.0:
        assert res.qlp_iterations == res.iterations
    if trancond == 1e15:
        assert res.qlp_iterations == 0


def test_singular_compatible_system_gives_pseudo_inverse_solution():
    a, _, q, rank = _singular_problem(0.0, seed=5)
    y = torch.randn(rank, generator=torch.Generator().manual_seed(6), dtype=F64)
    b = q[:, :rank] @ y                       # b ∈ range(A)
    res = minres_qlp(lambda v: a @ v, b)
    x_pinv = torch.linalg.pinv(a) @ b
    assert res.flag in (1, 3)
    assert _rel(res.x, x_pinv) < 1e-8         # measured 2.7e-10
    kernel = q[:, rank:]
    assert float((kernel.T @ res.x).norm()) < 1e-10 * float(x_pinv.norm())


@pytest.mark.parametrize("kernel_fraction", [0.1, 0.9])
@pytest.mark.parametrize("trancond", [1.0, 1e7])
def test_singular_incompatible_system_gives_pseudo_inverse_solution(kernel_fraction, trancond):
    a, b, q, rank = _singular_problem(kernel_fraction)
    x_pinv = torch.linalg.pinv(a) @ b
    kernel = q[:, rank:]

    # rtol reachable: least-squares exit (flag 2), the null direction excluded from x.
    res = minres_qlp(lambda v: a @ v, b, rtol=1e-8, trancond=trancond)
    assert res.flag == 2 and res.flag_name == "least_squares"
    assert _rel(res.x, x_pinv) < 1e-6         # measured 2.4e-8 (10 %), 1.0e-7 (90 %)
    assert float((kernel.T @ res.x).norm()) < 1e-10
    assert res.relAres < 1e-6                 # of the returned x, after the null direction is
    assert res.relres > 0.05                  # removed; r ≈ the kernel part of b
    assert res.rnorm == pytest.approx(kernel_fraction ** 0.5, rel=1e-6)

    # Default rtol = 1e-10 is below the attainable ‖Ar‖/(‖A‖‖r‖) (≈ √eps for incompatible
    # systems): stop once the null direction is resolved to working precision (flag 9).
    res = minres_qlp(lambda v: a @ v, b, trancond=trancond)
    assert res.flag in (2, 9)
    assert _rel(res.x, x_pinv) < 1e-6         # measured 5.7e-9 (10 %), 6.8e-8 (90 %)
    assert float((kernel.T @ res.x).norm()) < 1e-10
    assert res.relAres < 1e-7 and res.relres > 0.05


@pytest.mark.parametrize("kernel_fraction", [0.1, 0.9])
def test_loose_tolerance_drops_the_kernel_component(kernel_fraction):
    """Frye's Newton-MR setting rtol = 5e-4: x is a crude pseudo-inverse solution but carries
    (almost) no kernel component; the MINRES iterate at that point has one of size ≈ ‖A⁺b‖."""
    a, b, q, rank = _singular_problem(kernel_fraction)
    x_pinv = torch.linalg.pinv(a) @ b
    res = minres_qlp(lambda v: a @ v, b, rtol=5e-4)
    assert res.flag == 2
    assert _rel(res.x, x_pinv) < 2e-2                       # measured 5e-4 (10 %), 8.5e-3 (90 %)
    kernel_part = float((q[:, rank:].T @ res.x).norm())
    assert kernel_part < 1e-3 * float(x_pinv.norm())        # measured 2e-6, 1.5e-5 relative


@pytest.mark.parametrize("kernel_fraction", [0.1, 0.9])
def test_scipy_minres_keeps_a_kernel_component_where_minres_qlp_does_not(kernel_fraction):
    """scipy reports success with a kernel component of O(‖A⁺b‖) (and often ‖x‖ ~ 1e9: when it
    stops depends on BLAS rounding, so only the kernel component is asserted)."""
    a, b, q, rank = _singular_problem(kernel_fraction)
    kernel = q[:, rank:]
    x_pinv_norm = float((torch.linalg.pinv(a) @ b).norm())
    x_scipy, info = sla.minres(a.numpy(), b.numpy(), rtol=1e-10)
    assert info == 0
    assert np.linalg.norm(kernel.T.numpy() @ x_scipy) > 0.1 * x_pinv_norm
    res = minres_qlp(lambda v: a @ v, b)
    assert float((kernel.T @ res.x).norm()) < 1e-10 * x_pinv_norm
    assert res.xnorm == pytest.approx(x_pinv_norm, rel=1e-6)


def test_shift_solves_shifted_system():
    lam = torch.linspace(1.0, 3.0, 70, dtype=F64)
    lam = lam[(lam - 2.0).abs() > 0.05]        # keep A − 2I well conditioned (indefinite)
    a, _ = _symmetric(lam, seed=7)
    n = lam.numel()
    b = torch.randn(n, generator=torch.Generator().manual_seed(8), dtype=F64)
    sigma = 2.0
    res = minres_qlp(lambda v: a @ v, b, shift=sigma, rtol=1e-12)
    expected = torch.linalg.solve(a - sigma * torch.eye(n, dtype=F64), b)
    assert res.flag in (1, 3)
    assert _rel(res.x, expected) < 1e-9
    assert torch.allclose(res.residual, b - (a @ res.x - sigma * res.x), atol=1e-12)


def test_shift_at_an_eigenvalue_gives_minimum_length_solution():
    lam = torch.tensor([-2.0, -1.0, 0.5, 1.0, 3.0], dtype=F64)
    a, _ = _symmetric(lam, seed=9)
    b = torch.randn(5, generator=torch.Generator().manual_seed(10), dtype=F64)
    shifted = a - torch.eye(5, dtype=F64)      # singular: σ = 1 is an eigenvalue
    res = minres_qlp(lambda v: a @ v, b, shift=1.0)
    assert res.flag in (2, 4, 9)
    assert _rel(res.x, torch.linalg.pinv(shifted) @ b) < 1e-8


def test_float32_input_gives_float32_output():
    a, _ = _symmetric(torch.linspace(1.0, 4.0, 40), seed=11)
    a32 = a.float()
    b = torch.randn(40, generator=torch.Generator().manual_seed(12))
    res = minres_qlp(lambda v: a32 @ v, b, rtol=1e-6)
    assert res.x.dtype == torch.float32 and res.residual.dtype == torch.float32
    assert res.x.device == b.device
    assert res.flag in (1, 3)
    assert _rel(res.x.double(), torch.linalg.solve(a, b.double())) < 1e-5


def test_float32_incompatible_system_reaches_single_precision_pseudo_inverse():
    a, b, _, _ = _singular_problem(0.1)
    a32, b32 = a.float(), b.float()
    res = minres_qlp(lambda v: a32 @ v, b32, rtol=1e-6)
    assert res.x.dtype == torch.float32
    assert res.flag in (2, 9)
    assert _rel(res.x.double(), torch.linalg.pinv(a) @ b) < 1e-2   # measured 2e-4 (√eps₃₂)


def test_maxit_flag_and_finite_iterate():
    a, b, _, _ = _singular_problem(0.5)
    res = minres_qlp(lambda v: a @ v, b, maxit=2)
    assert res.flag == 8 and res.flag_name == "maxit"
    assert res.iterations == 2
    assert torch.isfinite(res.x).all()


def test_zero_rhs_returns_zero():
    res = minres_qlp(lambda v: 2 * v, torch.zeros(5, dtype=F64))
    assert res.flag == 0 and res.flag_name == "b_zero"
    assert res.iterations == 0 and torch.equal(res.x, torch.zeros(5, dtype=F64))


def test_identity_operator_returning_its_input_is_not_modified():
    b = torch.randn(7, generator=torch.Generator().manual_seed(13), dtype=F64)
    b_copy = b.clone()
    res = minres_qlp(lambda v: v, b)
    assert res.flag in (1, 3) and torch.allclose(res.x, b_copy) and torch.equal(b, b_copy)


def test_zero_operator_gives_zero_solution():
    res = minres_qlp(lambda v: torch.zeros_like(v), torch.ones(4, dtype=F64))
    assert torch.equal(res.x, torch.zeros(4, dtype=F64))
    assert res.rnorm == pytest.approx(2.0)


def test_newton_step_on_gradient_flat_quadratic_via_autograd_hvp():
    """f(x, y, z) = x² − y² + 0.5 z: H = diag(2, −2, 0) and the gradient (2x, −2y, 0.5) has a
    component in ker H. Newton-MR's step −H⁺g is (−x, −y, 0) and the residual is (0, 0, −0.5)."""
    theta = torch.tensor([0.3, 0.7, 2.0], dtype=F64, requires_grad=True)

    def f(t):
        return t[0] ** 2 - t[1] ** 2 + 0.5 * t[2]

    (g,) = torch.autograd.grad(f(theta), theta, create_graph=True)

    def hvp(v):
        (hv,) = torch.autograd.grad(g, theta, grad_outputs=v, retain_graph=True)
        return hv

    res = minres_qlp(hvp, -g)
    assert not res.x.requires_grad
    assert res.flag in (2, 4, 9)
    assert torch.allclose(res.x, torch.tensor([-0.3, -0.7, 0.0], dtype=F64), atol=1e-12)
    assert torch.allclose(res.residual, torch.tensor([0.0, 0.0, -0.5], dtype=F64), atol=1e-12)
    assert res.relres > 0.1 and res.relAres < 1e-12


def test_result_is_frozen():
    res = minres_qlp(lambda v: 3 * v, torch.ones(2, dtype=F64))
    assert isinstance(res, MinresQLPResult)
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.flag = 5


def test_bad_inputs_raise_clear_errors():
    a = torch.eye(4, dtype=F64)
    with pytest.raises(ValueError, match="1-D"):
        minres_qlp(lambda v: a @ v, torch.ones(4, 1, dtype=F64))
    with pytest.raises(TypeError, match="floating"):
        minres_qlp(lambda v: v, torch.ones(4, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"shape \(3,\).*expected \(4,\)"):
        minres_qlp(lambda v: v[:3], torch.ones(4, dtype=F64))
    with pytest.raises(ValueError, match="dtype"):
        minres_qlp(lambda v: v.float(), torch.ones(4, dtype=F64))
    with pytest.raises(ValueError, match="rtol"):
        minres_qlp(lambda v: v, torch.ones(4, dtype=F64), rtol=0.0)
    with pytest.raises(ValueError, match="maxit"):
        minres_qlp(lambda v: v, torch.ones(4, dtype=F64), maxit=0)
    with pytest.raises(FloatingPointError):
        minres_qlp(lambda v: v * float("nan"), torch.ones(4, dtype=F64))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_incompatible_system_on_cuda_matches_cpu():
    a, b, _, _ = _singular_problem(0.1)
    cpu = minres_qlp(lambda v: a @ v, b)
    a_gpu, b_gpu = a.cuda(), b.cuda()
    gpu = minres_qlp(lambda v: a_gpu @ v, b_gpu)
    assert gpu.x.device.type == "cuda" and gpu.x.dtype == F64
    assert gpu.residual.device.type == "cuda"
    assert gpu.flag == cpu.flag
    x_pinv = torch.linalg.pinv(a) @ b
    assert _rel(gpu.x.cpu(), x_pinv) < 1e-6
    assert _rel(gpu.x.cpu(), cpu.x) < 1e-6
