"""Spectra against dense eigendecomposition, exact traces and pyhessian."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from landscape.linalg.hutchinson import hutchinson_trace
from landscape.linalg.meyer2020hutchpp import hutchpp_trace
from landscape.linalg.slq import slq
from landscape.objective import Objective
from landscape.spectrum import (
    count_inertia,
    estimate_trace,
    extreme_eigenpairs,
    full_spectrum,
    smooth_density,
    spectral_density,
)
from tests.conftest import mlp, reference_loss

CE = nn.functional.cross_entropy


@pytest.fixture
def saddle_objective(data):
    """A tanh MLP at a perturbed point whose Hessian has both signs of eigenvalues."""
    obj = Objective(mlp(nn.Tanh), CE, data)
    theta = obj.theta + 0.5 * torch.randn(obj.num_params, dtype=torch.float64,
                                          generator=torch.Generator().manual_seed(4))
    return obj, theta, torch.linalg.eigvalsh(obj.hessian(theta))


def test_full_spectrum_equals_eigvalsh_of_dense_hessian(architecture, data):
    _, model = architecture
    obj = Objective(model, CE, data)
    hessian = torch.autograd.functional.hessian(reference_loss(model, *data), obj.theta)
    expected = torch.linalg.eigvalsh(hessian)
    spec = full_spectrum(obj, obj.theta, eigenvectors=True)
    torch.testing.assert_close(spec.eigenvalues, expected, rtol=1e-10, atol=1e-12)
    assert spec.eigenvalues.dtype == torch.float64
    assert bool((spec.eigenvalues[1:] >= spec.eigenvalues[:-1]).all())
    torch.testing.assert_close(hessian @ spec.eigenvectors,
                               spec.eigenvectors * spec.eigenvalues, rtol=1e-8, atol=1e-10)
    threshold = spec.tol * float(expected.abs().max())
    assert spec.n_negative == int((expected < -threshold).sum())
    assert spec.n_negative + spec.n_zero + spec.n_positive == obj.num_params
    assert spec.index == spec.n_negative / obj.num_params


def test_inertia_counts_and_tolerance():
    values = torch.tensor([-2.0, -1e-9, 0.0, 1e-7, 3.0, 4.0], dtype=torch.float64)
    inertia = count_inertia(values, tol=1e-6, atol=0.0)
    assert (inertia.n_negative, inertia.n_zero, inertia.n_positive) == (1, 3, 2)
    assert inertia.threshold == pytest.approx(4e-6)
    assert inertia.index == pytest.approx(1 / 6)
    assert inertia.stable and (inertia.n_negative_min, inertia.n_negative_max) == (1, 1)
    assert count_inertia(values, tol=0.0, atol=0.0).n_negative == 2
    # the absolute floor wins over a tiny relative part
    floored = count_inertia(values, tol=0.0, atol=1e-8)
    assert floored.threshold == 1e-8 and (floored.n_negative, floored.n_zero) == (1, 2)


def test_index_in_the_stability_band_is_uncertain_with_its_range():
    """An eigenvalue within ×/÷10 of the threshold makes the count depend on the tolerance."""
    values = torch.tensor([-5.0, -3e-8, -2e-10, 1e-12, 2.0, 10.0], dtype=torch.float64)
    inertia = count_inertia(values, tol=1e-9, atol=1e-9)  # threshold 1e-8
    assert inertia.threshold == pytest.approx(1e-8)
    assert inertia.n_negative == 2 and not inertia.stable
    assert (inertia.n_negative_min, inertia.n_negative_max) == (1, 2)
    clear = count_inertia(values, tol=1e-11, atol=1e-11)  # threshold 1e-10: -2e-10 in band
    assert not clear.stable and (clear.n_negative_min, clear.n_negative_max) == (2, 3)
    wide_gap = count_inertia(values, tol=0.0, atol=1e-6)  # everything small is zero
    assert wide_gap.stable and wide_gap.n_negative == 1 and wide_gap.n_zero == 3
    with pytest.raises(ValueError, match="non-negative"):
        count_inertia(values, tol=-1.0)


@pytest.mark.parametrize("which", ["largest", "smallest"])
def test_lanczos_extremes_match_dense_spectrum(saddle_objective, which):
    obj, theta, dense = saddle_objective
    assert dense[0] < -1e-3 < 1e-3 < dense[-1]
    k = 4
    pairs = extreme_eigenpairs(obj, theta, k=k, which=which, seed=0)
    expected = dense.flip(0)[:k] if which == "largest" else dense[:k]
    torch.testing.assert_close(pairs.eigenvalues, expected, rtol=1e-6, atol=0)
    assert bool(pairs.converged.all())
    assert float(pairs.residuals.max()) <= 1e-6 * float(pairs.eigenvalues.abs().max())
    overlaps = pairs.eigenvectors @ pairs.eigenvectors.T
    torch.testing.assert_close(overlaps, torch.eye(k, dtype=torch.float64), atol=1e-8, rtol=0)
    assert pairs.n_matvecs < obj.num_params  # cheaper than building the dense Hessian


def test_lanczos_is_reproducible_under_a_seed(saddle_objective):
    obj, theta, _ = saddle_objective
    a = extreme_eigenpairs(obj, theta, k=2, seed=7)
    b = extreme_eigenpairs(obj, theta, k=2, seed=torch.Generator().manual_seed(7))
    assert torch.equal(a.eigenvalues, b.eigenvalues)


def test_matrix_free_index_equals_the_dense_count(saddle_objective):
    from landscape.spectrum import estimate_index

    obj, theta, dense = saddle_objective
    tol = 1e-4
    inertia = count_inertia(dense, tol, atol=0.0)
    expected = inertia.n_negative
    assert 8 < expected < obj.num_params // 2  # needs at least one doubling of k
    est = estimate_index(obj, theta, tol=tol, atol=0.0, seed=0)
    assert est.complete and est.n_negative == expected
    assert (est.n_negative_min, est.n_negative_max, est.stable) == (
        inertia.n_negative_min, inertia.n_negative_max, inertia.stable)
    assert est.index == pytest.approx(expected / obj.num_params)
    assert est.scale == pytest.approx(float(dense.abs().max()), rel=1e-8)
    capped = estimate_index(obj, theta, tol=tol, atol=0.0, max_k=8, seed=0)
    assert not capped.complete and capped.n_negative == 8  # a lower bound, said so
    assert capped.n_negative_max is None and not capped.stable


def test_lanczos_restarts_after_breakdown_even_from_a_seed_zero_start():
    """A multiple of the identity breaks down after one step; the restart vector must not be the
    start again (both drawn from seed 0 before the fix: a NaN basis)."""
    from landscape.linalg.lanczos import lanczos
    from landscape.linalg.probes import as_generator, gaussian

    a = -4.0 * torch.eye(5, dtype=torch.float64)
    v0 = gaussian(1, 5, as_generator(0), dtype=torch.float64, device="cpu")
    res = lanczos(lambda V: V @ a, v0, 5)
    q = res.basis[0]
    assert torch.isfinite(q).all()
    torch.testing.assert_close(q @ q.T, torch.eye(5, dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close(res.ritz()[0][0], torch.full((5,), -4.0, dtype=torch.float64))


@pytest.mark.parametrize("method", ["hutchinson", "hutch++"])
def test_trace_estimate_within_four_standard_errors(saddle_objective, method):
    obj, theta, dense = saddle_objective
    exact = float(dense.sum())
    for seed in range(3):
        est = estimate_trace(obj, theta, n_matvecs=30, method=method, seed=seed)
        assert est.n_matvecs == 30
        assert est.stderr > 0
        assert abs(est.value - exact) <= 4 * est.stderr


def outlier_operator(n: int = 300):
    """Symmetric A with a few large outlying eigenvalues over a small bulk, like network Hessians."""
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    values = torch.randn(n, generator=g, dtype=torch.float64) * 0.1
    values[:5] = torch.tensor([200.0, 120.0, 80.0, 50.0, 30.0], dtype=torch.float64)
    a = q @ torch.diag(values) @ q.T
    return a, float(values.sum())


def test_hutchpp_beats_hutchinson_at_equal_matvecs_with_outliers():
    a, exact = outlier_operator()
    kwargs = {"dtype": torch.float64, "device": "cpu"}
    errors = {"hutchinson": [], "hutch++": []}
    for seed in range(20):
        errors["hutchinson"].append(hutchinson_trace(
            lambda V: V @ a, 300, 30, torch.Generator().manual_seed(seed), **kwargs).value - exact)
        errors["hutch++"].append(hutchpp_trace(
            lambda V: V @ a, 300, 30, torch.Generator().manual_seed(seed), **kwargs).value - exact)
    rms = {k: math.sqrt(sum(e * e for e in v) / len(v)) for k, v in errors.items()}
    assert rms["hutch++"] < 0.2 * rms["hutchinson"]


def test_slq_reproduces_spectral_moments(saddle_objective):
    obj, theta, dense = saddle_objective
    density = spectral_density(obj, theta, n_steps=30, n_probes=40, seed=0)
    assert density.nodes.shape == (40, 30)
    torch.testing.assert_close(density.weights.sum(dim=1), torch.ones(40, dtype=torch.float64))
    n = obj.num_params
    for power in (1, 2):
        exact = float((dense**power).sum()) / n
        estimate, stderr = density.moment(power)
        assert abs(estimate - exact) <= 4 * stderr
    assert density.moment(0)[0] == pytest.approx(1.0, rel=1e-12)
    assert density.nodes.min() >= dense[0] - 1e-8 and density.nodes.max() <= dense[-1] + 1e-8
    # the outermost nodes converge to the extreme eigenvalues with 30 steps
    assert float(density.nodes[:, 0].min()) == pytest.approx(float(dense[0]), rel=1e-6)
    assert float(density.nodes[:, -1].max()) == pytest.approx(float(dense[-1]), rel=1e-6)


def test_slq_probe_quadrature_equals_quadratic_form():
    a, _ = outlier_operator(60)
    gen = torch.Generator().manual_seed(3)
    nodes, weights = slq(lambda V: V @ a, 60, 12, 2, gen, dtype=torch.float64, device="cpu")
    probes = torch.randint(0, 2, (2, 60), generator=torch.Generator().manual_seed(3))
    probes = (probes.double() * 2 - 1) / math.sqrt(60)
    for power in (1, 2, 5):
        exact = ((probes @ torch.linalg.matrix_power(a, power)) * probes).sum(dim=1)
        torch.testing.assert_close((weights * nodes**power).sum(dim=1), exact, rtol=1e-9, atol=0)


def test_smoothed_density_integrates_to_one(saddle_objective):
    obj, theta, _ = saddle_objective
    grid, values = smooth_density(spectral_density(obj, theta, n_steps=20, n_probes=3, seed=1))
    assert float(torch.trapezoid(values, grid)) == pytest.approx(1.0, abs=1e-3)
    assert bool((values >= 0).all())


def test_argument_validation(saddle_objective):
    obj, theta, _ = saddle_objective
    with pytest.raises(ValueError, match="which"):
        extreme_eigenpairs(obj, theta, which="middle")
    with pytest.raises(ValueError, match="k must be"):
        extreme_eigenpairs(obj, theta, k=0)
    with pytest.raises(ValueError, match="method"):
        estimate_trace(obj, theta, method="exact")
    with pytest.raises(ValueError, match="n_matvecs >= 3"):
        estimate_trace(obj, theta, n_matvecs=2)
    with pytest.raises(TypeError, match="seed"):
        estimate_trace(obj, theta, seed="zero")


def pyhessian_of(obj_model: nn.Module, data):
    from pyhessian import hessian
    model = copy.deepcopy(obj_model).double()
    return hessian(model, CE, data=(data[0].double(), data[1]), cuda=False)


def test_top_eigenvalue_and_trace_agree_with_pyhessian(data):
    model = mlp(nn.Tanh)
    obj = Objective(model, CE, data)
    ours = extreme_eigenpairs(obj, obj.theta, k=1, seed=0)
    ph = pyhessian_of(model, data)
    torch.manual_seed(0)
    top, _ = ph.eigenvalues(maxIter=2000, tol=1e-10, top_n=1)
    assert top[0] == pytest.approx(float(ours.eigenvalues[0]), rel=1e-5)
    torch.manual_seed(0)
    samples = torch.tensor(ph.trace(maxIter=200, tol=0.0), dtype=torch.float64)
    ph_mean = float(samples.mean())
    ph_stderr = float(samples.std()) / math.sqrt(samples.numel())
    exact = float(torch.linalg.eigvalsh(obj.hessian(obj.theta)).sum())
    assert abs(ph_mean - exact) <= 4 * ph_stderr
    est = estimate_trace(obj, obj.theta, n_matvecs=60, seed=0)
    assert abs(est.value - ph_mean) <= 4 * math.hypot(est.stderr, ph_stderr)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_spectrum_matches_cpu(saddle_objective, data):
    _, theta, dense = saddle_objective
    gpu = Objective(mlp(nn.Tanh), CE, data, device="cuda")
    spec = full_spectrum(gpu, theta.cuda())
    torch.testing.assert_close(spec.eigenvalues.cpu(), dense, rtol=1e-9, atol=1e-11)
    pairs = extreme_eigenpairs(gpu, theta.cuda(), k=2, seed=0)
    torch.testing.assert_close(pairs.eigenvalues.cpu(), dense.flip(0)[:2], rtol=1e-6, atol=0)
