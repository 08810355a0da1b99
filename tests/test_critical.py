"""Critical-point searches on closed forms: saddles, quadratics, gradient-flat toys and the deep
linear autoencoder (Baldi & Hornik 1989)."""

from __future__ import annotations

import math

import pytest
import torch

from landscape.critical import (
    METHODS,
    Start,
    Thresholds,
    find_critical_point,
    find_critical_points,
    perturbed_starts,
)
from landscape.critical.linear_autoencoder import (
    analytic_critical_points,
    linear_autoencoder,
    representative,
)
from landscape.losses import autoencoder_loss
from landscape.objective import Objective
from landscape.spectrum import count_inertia
from tests.toys import frye_quartic, monkey_saddle, saddle, toy_objective

F64 = torch.float64


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_finds_the_saddle_of_x2_minus_y2(method):
    obj = toy_objective(saddle, 2)
    point = find_critical_point(obj, torch.tensor([0.7, -0.4], dtype=F64), method)
    assert point.status == "critical"
    assert point.grad_norm <= 1e-8
    torch.testing.assert_close(point.theta, torch.zeros(2, dtype=F64), atol=1e-8, rtol=0)


def test_saddle_index_is_one_half():
    obj = toy_objective(saddle, 2)
    [point] = find_critical_points(obj, [torch.tensor([0.3, 0.2], dtype=F64)], progress=False)
    assert (point.n_negative, point.n_positive) == (1, 1)
    assert point.index == 0.5
    assert point.certified and point.index_stable


def test_monkey_saddle_degenerate_critical_point():
    obj = toy_objective(monkey_saddle, 2)
    [point] = find_critical_points(obj, [torch.tensor([0.2, 0.1], dtype=F64)], progress=False)
    assert point.status == "critical"
    assert float(point.theta.norm()) < 1e-3  # g is quadratic in θ: ‖g‖ ≤ 1e-8 ⇔ ‖θ‖ ≲ 1e-4
    assert point.hessian_norm < 1e-5  # H → 0 at the monkey saddle


def test_quadratic_with_known_indefinite_hessian():
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(12, 12, generator=g, dtype=F64))
    values = torch.tensor([-3.0, -1.0, -0.5, 0.2, 0.5, 1, 2, 3, 4, 5, 6, 7], dtype=F64)
    a = q @ torch.diag(values) @ q.T
    center = torch.randn(12, generator=g, dtype=F64)
    obj = toy_objective(lambda t: 0.5 * (t - center) @ a @ (t - center), 12)
    starts = [center + torch.randn(12, generator=g, dtype=F64) for _ in range(3)]
    for point in find_critical_points(obj, starts, progress=False):
        assert point.status == "critical"
        torch.testing.assert_close(point.theta, center, atol=1e-10, rtol=0)
        assert point.n_negative == 3 and point.index == pytest.approx(3 / 12)
        assert point.iterations <= 20


@pytest.mark.parametrize("method", ["levenberg-marquardt", "newton-mr"])
def test_gradient_flat_point_is_labelled_and_never_critical(method):
    obj = toy_objective(frye_quartic, 2)
    point = find_critical_point(obj, torch.tensor([0.5, 0.3], dtype=F64), method)
    # LM converges onto the flat point; Newton-MR's near-kernel step stalls its line search
    # beside it (Frye et al.'s plateau): either way it is never critical
    expected = {"levenberg-marquardt": {"gradient-flat"},
                "newton-mr": {"gradient-flat", "max-iterations"}}[method]
    assert point.status in expected
    assert point.grad_norm**2 == pytest.approx((9 - 4 * math.sqrt(2)) ** 2, rel=5e-3)
    assert point.theta[0].item() == pytest.approx(math.sqrt(2), abs=1e-3)
    # from the other side of the flat point the true minimum at (−3, 0) is found
    other = find_critical_point(obj, torch.tensor([-2.0, 0.3], dtype=F64), method)
    assert other.status == "critical"
    torch.testing.assert_close(other.theta, torch.tensor([-3.0, 0.0], dtype=F64), atol=1e-8,
                               rtol=0)


def test_linear_function_is_gradient_flat():
    obj = toy_objective(lambda t: t.sum(), 3)
    point = find_critical_point(obj, torch.ones(3, dtype=F64))
    assert point.status == "gradient-flat"
    assert point.gradient_flatness == 0.0


def test_no_finite_critical_point_is_not_certified():
    """exp(−x) has ‖g‖ → 0 only as x → ∞: a small gradient alone proves nothing."""
    obj = toy_objective(lambda t: torch.exp(-t[0]), 1)
    [point] = find_critical_points(obj, [torch.zeros(1, dtype=F64)], progress=False)
    assert not point.certified
    assert point.newton_step_norm == pytest.approx(1.0, rel=1e-6)


def test_non_finite_start_is_diverged_and_others_continue():
    obj = toy_objective(saddle, 2)
    starts = [torch.tensor([math.nan, 0.0], dtype=F64), torch.tensor([0.1, 0.2], dtype=F64)]
    bad, good = find_critical_points(obj, starts, progress=False)
    assert bad.status == "diverged" and bad.stop_reason == "non-finite"
    assert good.status == "critical"


def test_failed_line_search_never_moves_theta():
    """Gradient descent on ‖g‖² with a step floor above what is needed cannot progress."""
    obj = toy_objective(frye_quartic, 2)
    start = torch.tensor([math.sqrt(2), 0.0], dtype=F64)  # exactly gradient-flat: Hg = 0
    point = find_critical_point(obj, start, "newton-mr")
    torch.testing.assert_close(point.theta, start)
    assert point.stop_reason == "no-progress"
    assert point.status == "gradient-flat"


def test_history_and_thresholds_are_recorded():
    obj = toy_objective(saddle, 2)
    th = Thresholds(grad_tol=1e-9, max_iterations=50)
    point = find_critical_point(obj, torch.tensor([0.5, 0.5], dtype=F64), thresholds=th)
    assert point.thresholds == th
    assert point.history["grad_norm_sq"].shape == (point.iterations + 1,)
    assert point.history["grad_norm_sq"][0] == pytest.approx(4 * 0.5, rel=1e-12)
    assert point.n_grads >= point.iterations and point.n_hvps > 0


def test_unknown_method_is_refused():
    with pytest.raises(ValueError, match="unknown method"):
        find_critical_point(toy_objective(saddle, 2), torch.zeros(2, dtype=F64), "bisection")


def test_perturbed_starts_radius_and_reproducibility():
    theta = torch.arange(1.0, 101.0, dtype=F64)
    starts = perturbed_starts(theta, [0.0, 0.1], 5, seed=3)
    assert len(starts) == 6 and torch.equal(starts[0].theta, theta)
    ratios = [float((s.theta - theta).norm() / theta.norm()) for s in starts[1:]]
    assert all(0.07 < r < 0.13 for r in ratios)
    again = perturbed_starts(theta, [0.0, 0.1], 5, seed=3)
    assert all(torch.equal(a.theta, b.theta) for a, b in zip(starts, again))


# ---------------------------------------------------------------- deep linear autoencoder
D, P, N = 8, 3, 200


@pytest.fixture(scope="module")
def autoencoder():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, D, generator=g, dtype=F64) * torch.linspace(1, 3, D, dtype=F64)
    x = x - x.mean(dim=0)
    values, vectors = torch.linalg.eigh(x.T @ x / N)
    values, vectors = values.flip(0), vectors.flip(1)
    obj = Objective(linear_autoencoder(D, P), autoencoder_loss, (x, x))
    return obj, values, vectors


def test_closed_form_matches_dense_hessian_at_every_analytic_critical_point(autoencoder):
    obj, values, vectors = autoencoder
    analytic = analytic_critical_points(values, P)
    assert len(analytic) == sum(math.comb(D, i) for i in range(P + 1))
    for cp in analytic:
        theta = representative(cp.subset, vectors, P)
        assert float(obj.grad(theta).norm()) < 1e-12
        assert float(obj.loss(theta)) == pytest.approx(cp.loss, rel=1e-12)
        eigenvalues = torch.linalg.eigvalsh(obj.hessian(theta))
        assert count_inertia(eigenvalues, 1e-8).n_negative == cp.n_negative


@pytest.mark.parametrize("method", ["eigenvector-following", "levenberg-marquardt"])
def test_autoencoder_searches_recover_closed_form_critical_points(autoencoder, method):
    """Rates over 20 random starts with a margin, and invariants no rounding can flip: a point
    labelled critical lies on the closed-form set, and its index is the closed form's or is
    marked uncertain with a range that holds it."""
    obj, values, _ = autoencoder
    analytic = analytic_critical_points(values, P)
    g = torch.Generator().manual_seed(1)
    starts = [Start(0.5 * torch.randn(obj.num_params, generator=g, dtype=F64), f"r{i}", "random")
              for i in range(20)]
    points = find_critical_points(obj, starts, method, progress=False)
    critical = [p for p in points if p.status == "critical"]
    for p in critical:
        assert p.grad_norm <= 1e-8
        truth = {cp.n_negative for cp in analytic if abs(cp.loss - p.loss) <= 1e-6 * cp.loss}
        assert truth, f"{p.label}: loss {p.loss} is off the closed-form set"
        assert p.n_negative_min <= p.n_negative <= p.n_negative_max
        if p.index_stable:
            assert p.n_negative in truth
        else:
            assert any(p.n_negative_min <= k <= p.n_negative_max for k in truth)
        dense = count_inertia(torch.linalg.eigvalsh(obj.hessian(p.theta)), p.index_tol,
                              atol=p.index_atol)
        assert (p.n_negative, p.index_stable) == (dense.n_negative, dense.stable)
    assert len(critical) >= 0.9 * len(starts)
    assert sum(p.certified for p in points) >= 0.8 * len(starts)
    assert len({p.cluster for p in critical}) >= 5  # many distinct saddles, not one point


def test_ill_conditioned_representative_gets_its_index_or_an_honest_range(autoencoder):
    """Along a GL(p) orbit (W₁ → CW₁, W₂ → W₂C⁻¹) every point is critical with the same inertia
    (congruent Hessians), but max|λ| grows with the conditioning of C. A tolerance relative to
    max|λ| alone then counts true negative eigenvalues as zero: the old rule (1e-6·max|λ|)
    reported such an index as a single wrong number."""
    obj, values, vectors = autoencoder
    cp = next(c for c in analytic_critical_points(values, P) if c.subset == (0, 2, 4))
    theta = representative(cp.subset, vectors, P)
    w1, w2 = theta[:D * P].view(P, D), theta[D * P:].view(D, P)
    c = torch.diag(torch.tensor([40.0, 1.0, 1 / 40], dtype=F64))
    skewed = torch.cat([(c @ w1).reshape(-1), (w2 @ torch.linalg.inv(c)).reshape(-1)])
    assert float(obj.grad(skewed).norm()) < 1e-10
    eigenvalues = torch.linalg.eigvalsh(obj.hessian(skewed))
    assert count_inertia(eigenvalues, 1e-6, atol=0.0).n_negative != cp.n_negative  # old rule
    [point] = find_critical_points(obj, [skewed], progress=False)
    assert point.status == "critical"
    if point.index_stable:
        assert point.n_negative == cp.n_negative
    else:
        assert point.n_negative_min <= cp.n_negative <= point.n_negative_max


def test_krylov_newton_step_is_the_pseudo_inverse_solution_when_g_has_a_kernel_part():
    """Where scipy's minres returns huge non-pseudo-inverse steps, the Krylov step is −A⁺g."""
    from landscape.linalg.regularised_ls import krylov_space

    gen = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(200, 200, generator=gen, dtype=F64))
    values = torch.cat([torch.linspace(-3, -0.5, 50, dtype=F64), torch.linspace(0.5, 4, 100,
                                                                                dtype=F64),
                        torch.zeros(50, dtype=F64)])
    a = q @ torch.diag(values) @ q.T
    g = q[:, :150] @ torch.randn(150, generator=gen, dtype=F64)
    g = g / g.norm() + 0.3 * q[:, 150:] @ torch.randn(50, generator=gen, dtype=F64) / 50**0.5
    space = krylov_space(lambda V: V @ a, g, max_dim=200)
    step = space.to_full(space.levenberg_marquardt(0.0))
    expected = -torch.linalg.pinv(a, hermitian=True) @ g
    torch.testing.assert_close(step, expected, rtol=1e-8, atol=1e-10)


def test_newton_mr_step_is_minus_pinv_h_g_when_g_has_a_kernel_part():
    """One Newton-MR step (MINRES-QLP) on a singular indefinite quadratic is exactly −H⁺g: no
    component along ker H, which scipy's minres would grow."""
    from landscape.critical.newton_mr import NewtonMR
    from landscape.critical.steps import CountingObjective, State

    gen = torch.Generator().manual_seed(1)
    n = 60
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=F64))
    values = torch.cat([torch.linspace(-2, -0.5, 15, dtype=F64),
                        torch.linspace(0.5, 3, 30, dtype=F64), torch.zeros(15, dtype=F64)])
    a = q @ torch.diag(values) @ q.T
    b = q @ torch.randn(n, generator=gen, dtype=F64)  # 1/4 of it in ker H
    obj = CountingObjective(toy_objective(lambda t: 0.5 * t @ a @ t + b @ t, n))
    theta = torch.randn(n, generator=gen, dtype=F64)
    loss, grad = obj.loss_and_grad(theta)
    step = NewtonMR().step(obj, State(theta, float(loss), grad, obj.hvp(theta, grad)))
    expected = -torch.linalg.pinv(a, hermitian=True) @ grad
    assert step is not None and step.step_size == 1.0
    torch.testing.assert_close(step.theta - theta, expected, rtol=1e-6, atol=1e-8)
    kernel = q[:, 45:]
    assert float((kernel.T @ (step.theta - theta)).norm()) < 1e-8


# ---------------------------------------------------------------- eigenvector following
def double_well(t):
    """(x² − 1)² + (y² − 1)²: minima (±1, ±1), index-1 saddles (0, ±1) and (±1, 0), maximum 0."""
    return (t[0] ** 2 - 1) ** 2 + (t[1] ** 2 - 1) ** 2


@pytest.mark.parametrize("start, index, expected", [
    ((0.3, 0.8), 1, (0.0, 1.0)),
    ((0.8, -0.3), 1, (1.0, 0.0)),
    ((0.3, -0.2), 2, (0.0, 0.0)),
    ((0.3, 0.4), 0, (1.0, 1.0)),
])
def test_eigenvector_following_reaches_the_saddle_of_the_asked_index(start, index, expected):
    obj = toy_objective(double_well, 2)
    point = find_critical_point(obj, torch.tensor(start, dtype=F64), "eigenvector-following",
                                n_negative=index)
    assert point.status == "critical" and point.grad_norm <= 1e-12
    torch.testing.assert_close(point.theta, torch.tensor(expected, dtype=F64), atol=1e-10,
                               rtol=0)
    [analysed] = find_critical_points(obj, [point.theta], progress=False)
    assert analysed.n_negative == index


@pytest.mark.parametrize("index", ["start", "follow"])
def test_eigenvector_following_takes_the_start_index_on_an_indefinite_quadratic(index):
    gen = torch.Generator().manual_seed(2)
    q, _ = torch.linalg.qr(torch.randn(10, 10, generator=gen, dtype=F64))
    values = torch.tensor([-2.0, -0.3, 0.1, 0.4, 1, 2, 3, 4, 5, 9], dtype=F64)
    a = q @ torch.diag(values) @ q.T
    center = torch.randn(10, generator=gen, dtype=F64)
    obj = toy_objective(lambda t: 0.5 * (t - center) @ a @ (t - center), 10)
    [point] = find_critical_points(obj, [center + 3 * torch.randn(10, generator=gen, dtype=F64)],
                                   "eigenvector-following", progress=False, n_negative=index)
    assert point.status == "critical" and point.n_negative == 2
    torch.testing.assert_close(point.theta, center, atol=1e-10, rtol=0)


def test_eigenvector_following_leaves_the_gradient_flat_point_that_traps_lm():
    """From x > −√2 Levenberg–Marquardt ends on Frye's flat point (√2, 0); minimising every mode
    walks through it to the only critical point, the minimum (−3, 0)."""
    obj = toy_objective(frye_quartic, 2)
    start = torch.tensor([0.5, 0.3], dtype=F64)
    assert find_critical_point(obj, start, "levenberg-marquardt").status == "gradient-flat"
    point = find_critical_point(obj, start, "eigenvector-following", n_negative=0)
    assert point.status == "critical"
    torch.testing.assert_close(point.theta, torch.tensor([-3.0, 0.0], dtype=F64), atol=1e-10,
                               rtol=0)


def test_eigenvector_following_refuses_nets_too_large_for_dense_hessians():
    obj = toy_objective(saddle, 2)
    with pytest.raises(ValueError, match="max_params"):
        find_critical_point(obj, torch.ones(2, dtype=F64), "eigenvector-following", max_params=1)
    with pytest.raises(ValueError, match="n_negative must be"):
        find_critical_point(obj, torch.ones(2, dtype=F64), "eigenvector-following", n_negative=-1)
    with pytest.raises(ValueError, match="exceeds the number of parameters"):
        find_critical_point(obj, torch.ones(2, dtype=F64), "eigenvector-following", n_negative=3)
    with pytest.raises(ValueError, match="one of"):
        find_critical_point(obj, torch.ones(2, dtype=F64), "eigenvector-following",
                            n_negative="nearest")


def test_eigenvector_following_does_not_step_along_an_exact_kernel():
    """A quadratic whose minima form a 4-dimensional affine set (a non-isolated critical set, as
    every symmetry makes): the rounding-level gradient components along the kernel must not get
    steps (Wales's regulariser |c_i| gave them unit length), so the search converges at once onto
    the set and does not drift along it."""
    gen = torch.Generator().manual_seed(5)
    q, _ = torch.linalg.qr(torch.randn(12, 12, generator=gen, dtype=F64))
    values = torch.cat([torch.tensor([-2.0, -0.5, 0.3, 1, 2, 4, 7, 9], dtype=F64),
                        torch.zeros(4, dtype=F64)])
    a = q @ torch.diag(values) @ q.T
    center = torch.randn(12, generator=gen, dtype=F64)
    obj = toy_objective(lambda t: 0.5 * (t - center) @ a @ (t - center), 12)
    start = center + q[:, :8] @ torch.randn(8, generator=gen, dtype=F64)
    point = find_critical_point(obj, start, "eigenvector-following")
    assert point.status == "critical" and point.iterations <= 30
    kernel = q[:, 8:]
    assert float((kernel.T @ (point.theta - start)).norm()) < 1e-8
    [analysed] = find_critical_points(obj, [point.theta], progress=False)
    assert (analysed.n_negative, analysed.n_zero) == (2, 4) and analysed.index_stable


def test_large_net_analysis_takes_the_index_from_lanczos():
    """Past ``dense_max_params`` the index comes matrix-free and agrees with the dense count."""
    from landscape.critical.search import analyse

    gen = torch.Generator().manual_seed(3)
    q, _ = torch.linalg.qr(torch.randn(40, 40, generator=gen, dtype=F64))
    values = torch.cat([-torch.linspace(1, 3, 11, dtype=F64), torch.linspace(0.5, 9, 29,
                                                                            dtype=F64)])
    a = q @ torch.diag(values) @ q.T
    obj = toy_objective(lambda t: 0.5 * t @ a @ t, 40)
    point = find_critical_point(obj, torch.randn(40, generator=gen, dtype=F64))
    dense, lanczos = analyse(obj, point), analyse(obj, point, dense_max_params=10)
    assert (dense.index_method, lanczos.index_method) == ("dense", "lanczos")
    assert dense.n_negative == lanczos.n_negative == 11
    assert lanczos.index_stable and lanczos.certified
    assert lanczos.eigenvalues is None and lanczos.n_zero is None
