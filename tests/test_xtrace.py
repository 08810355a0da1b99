"""XTrace: its leave-one-out estimates against an explicit construction, unbiasedness over
seeds, exactness at low rank, and lower error than Hutch++ at equal matvecs on a decaying
spectrum."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from landscape.linalg.epperly2024xtrace import xtrace_trace
from landscape.linalg.meyer2020hutchpp import hutchpp_trace
from landscape.linalg.probes import rademacher
from landscape.spectrum import estimate_trace
from tests.toys import diagonal_quadratic


def symmetric(n: int, eigenvalues: torch.Tensor, seed: int) -> torch.Tensor:
    u = torch.linalg.qr(torch.randn(n, n, dtype=torch.float64,
                                    generator=torch.Generator().manual_seed(seed))).Q
    return u @ torch.diag(eigenvalues) @ u.T


def explicit_leave_one_out(a: torch.Tensor, omega: torch.Tensor) -> np.ndarray:
    """tᵢ built literally: the basis of A Ω without column i, its exact part, the deflated
    Hutchinson term of ωᵢ."""
    out = []
    for i in range(omega.shape[0]):
        others = torch.cat([omega[:i], omega[i + 1:]])
        q = torch.linalg.qr(a @ others.T).Q
        deflate = torch.eye(a.shape[0], dtype=a.dtype) - q @ q.T
        out.append(float((q.T @ a @ q).trace() + omega[i] @ deflate @ a @ deflate @ omega[i]))
    return np.array(out)


def test_leave_one_out_estimates_match_the_explicit_construction():
    a = symmetric(40, torch.linspace(-3, 5, 40, dtype=torch.float64), seed=0)
    est = xtrace_trace(lambda v: v @ a, 40, 16, torch.Generator().manual_seed(3),
                       dtype=torch.float64, device="cpu")
    omega = rademacher(8, 40, torch.Generator().manual_seed(3), dtype=torch.float64,
                       device="cpu")
    loo = explicit_leave_one_out(a, omega)
    assert est.value == pytest.approx(loo.mean(), rel=1e-10)
    assert est.stderr == pytest.approx(loo.std(ddof=1) / np.sqrt(8), rel=1e-8)
    assert est.n_matvecs == 16 and est.method == "xtrace"


def test_unbiased_over_seeds_and_more_accurate_than_hutchpp():
    eigenvalues = 10.0 / torch.arange(1, 101, dtype=torch.float64) ** 1.5
    eigenvalues[::7] *= -1  # indefinite, like a Hessian away from a minimum
    a = symmetric(100, eigenvalues, seed=1)
    exact = float(eigenvalues.sum())
    errors = {"xtrace": [], "hutch++": []}
    for seed in range(200):
        for name, estimator in (("xtrace", xtrace_trace), ("hutch++", hutchpp_trace)):
            est = estimator(lambda v: v @ a, 100, 24, torch.Generator().manual_seed(seed),
                            dtype=torch.float64, device="cpu")
            errors[name].append(est.value - exact)
    x, h = np.array(errors["xtrace"]), np.array(errors["hutch++"])
    assert abs(x.mean()) < 4 * x.std() / np.sqrt(len(x))  # unbiased
    assert np.sqrt((x**2).mean()) < 0.8 * np.sqrt((h**2).mean())


def test_exact_when_the_sketch_covers_the_range_or_the_space():
    a = symmetric(30, torch.cat([torch.tensor([4.0, -1.0], dtype=torch.float64),
                                 torch.zeros(28, dtype=torch.float64)]), seed=2)
    est = xtrace_trace(lambda v: v @ a, 30, 10, torch.Generator().manual_seed(0),
                       dtype=torch.float64, device="cpu")
    assert est.value == pytest.approx(3.0, abs=1e-10) and est.stderr == 0.0
    small = symmetric(6, torch.arange(1.0, 7.0, dtype=torch.float64), seed=3)
    est = xtrace_trace(lambda v: v @ small, 6, 40, torch.Generator().manual_seed(0),
                       dtype=torch.float64, device="cpu")
    assert est.value == pytest.approx(21.0, rel=1e-12) and est.n_matvecs == 12
    with pytest.raises(ValueError, match="n_matvecs >= 4"):
        xtrace_trace(lambda v: v @ small, 6, 3, torch.Generator(), dtype=torch.float64,
                     device="cpu")


def test_estimate_trace_offers_xtrace_on_an_objective():
    h = torch.linspace(0.1, 3.0, 50, dtype=torch.float64)
    obj = diagonal_quadratic(h)
    est = estimate_trace(obj, obj.theta, n_matvecs=30, method="xtrace", seed=0)
    assert est.method == "xtrace" and abs(est.value - float(h.sum())) < 5 * est.stderr


def test_trace_measure_accepts_xtrace():
    from landscape.flatness import MEASURES

    h = torch.linspace(-1.0, 4.0, 60, dtype=torch.float64)
    obj = diagonal_quadratic(h)
    m = MEASURES["trace"](obj, obj.theta, method="xtrace", n_matvecs=40, seed=1)
    assert abs(m.value - float(h.sum())) < 5 * m.stderr
    m2 = MEASURES["frobenius_sq"](obj, obj.theta, method="xtrace", n_matvecs=40, seed=1)
    assert abs(m2.value - float((h**2).sum())) < 5 * m2.stderr
