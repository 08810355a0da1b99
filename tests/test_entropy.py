"""Local entropy Φ_γ: Laplace, TI, AIS and the sandwich bounds against exact answers.

Oracles: the flatness.md §2.6 separable quartic toy (exact Φ by 1-D quadrature per coordinate),
quadratics (Laplace is exact: Φ = (β/2) gᵀ(A+γI)⁻¹g − ½ log det(I + A/γ)), a flat loss (Φ = 0)
and a small digits MLP (bounded time, Laplace ≈ TI at narrow scope).
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from landscape.data import load_dataset
from landscape.entropy import (
    LocalEntropy,
    Subspace,
    local_entropy,
    local_entropy_curve,
    random_subspace,
    sandwich_bounds,
)
from landscape.objective import Objective
from landscape.problem import evaluation_data
from tests.toys import (
    entropy_toy_eigenvalues,
    separable_quartic,
    separable_quartic_entropy,
    toy_objective,
)

QUARTIC = 0.05
GAMMAS = (10.0, 1.0, 0.1)


@pytest.fixture(autouse=True)
def _one_thread():
    """The problems here are tiny batched evaluations: one thread is fastest, and it keeps the
    timings sane on a shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def toy():
    lam = entropy_toy_eigenvalues()
    exact = {g: separable_quartic_entropy(lam, QUARTIC, g) for g in GAMMAS}
    return toy_objective(separable_quartic(lam, QUARTIC), lam.numel()), lam, exact


def quadratic(eigenvalues, seed: int = 0):
    """Objective of ½ θᵀAθ with A = Q diag(λ) Qᵀ for a seeded random rotation Q; returns (obj, A)."""
    lam = torch.as_tensor(eigenvalues, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(lam.numel(), lam.numel(), dtype=torch.float64,
                                       generator=torch.Generator().manual_seed(seed)))
    a = q @ torch.diag(lam) @ q.T
    return toy_objective(lambda t: 0.5 * t @ a @ t, lam.numel()), a


def laplace_exact(a, theta, gamma, beta=1.0):
    """Φ of ½ θᵀAθ at θ, exact for a quadratic."""
    g = a @ theta
    shifted = a + gamma * torch.eye(a.shape[0], dtype=a.dtype)
    return float(0.5 * beta * g @ torch.linalg.solve(shifted, g)
                 - 0.5 * torch.logdet(torch.eye(a.shape[0], dtype=a.dtype) + a / gamma))


# --------------------------------------------------------------------------- the §2.6 toy


def test_toy_exact_values_and_laplace(toy):
    obj, lam, exact = toy
    # this instance's values (tests/toys.py); flatness.md's: −5.76 / −38.04 / −187.23
    assert [round(exact[g], 2) for g in GAMMAS] == [-5.72, -37.78, -186.82]
    narrow, mid, wide = local_entropy_curve(obj, obj.theta, GAMMAS, method="laplace")
    assert narrow.valid and narrow.stderr is None and narrow.dim == 200
    assert narrow.value == pytest.approx(float(-0.5 * torch.log1p(lam / 10).sum()), rel=1e-10)
    # close at narrow scope (flatness.md: −5.48 vs −5.76), missing the quartic confinement
    assert 0 < narrow.value - exact[10.0] < 0.35
    assert mid.valid and mid.value - exact[1.0] > 10  # Laplace is a narrow-scope approximation
    assert not wide.valid and math.isnan(wide.value)
    assert "λ_min + γ" in wide.reason and "≤ 0" in wide.reason
    assert narrow.settings == {"solver": "dense"} and narrow.n_evals == 1 + 200


@pytest.mark.parametrize("gamma, tol", [(10.0, 0.02), (1.0, 0.02), (0.1, 0.05)])
def test_ti_matches_quadrature(toy, gamma, tol):
    obj, _, exact = toy
    est = local_entropy(obj, obj.theta, gamma, method="ti", seed=0)
    assert est.valid and est.reason is None and est.stderr > 0
    assert abs(est.value - exact[gamma]) < tol * abs(exact[gamma])
    s = est.settings
    assert (s["sampler"], s["direction"], s["n_temperatures"], s["power"]) == ("mala", "both",
                                                                               60, 4.0)
    assert est.sigma == pytest.approx(gamma ** -0.5)
    n_keep = s["n_steps"] - s["burn_in"]
    assert est.n_evals == 1 + s["n_chains"] * (n_keep + 2 * s["n_temperatures"] * s["n_steps"])
    assert 0.45 < est.diagnostics["acceptance_mean"] < 0.7


@pytest.mark.parametrize("gamma, margin", [(10.0, 0.03), (1.0, 0.02), (0.1, 0.03)])
def test_ais_is_a_close_lower_bound(toy, gamma, margin):
    obj, _, exact = toy
    est = local_entropy(obj, obj.theta, gamma, method="ais", seed=0)
    assert est.valid and est.stderr > 0
    assert est.value <= exact[gamma] + 3 * est.stderr
    assert abs(est.value - exact[gamma]) < margin * abs(exact[gamma])
    assert "burn_in" not in est.settings and est.settings["pilot"]["n_chains"] == 4


@pytest.mark.parametrize("gamma", GAMMAS)
def test_sandwich_bounds_bracket_the_exact_value(toy, gamma):
    obj, _, exact = toy
    bounds = sandwich_bounds(obj, obj.theta, gamma, seed=1, n_temperatures=30, n_steps=20,
                             burn_in=5)
    assert bounds.lower.method == "gaussian-bound" and bounds.upper.method == "gibbs-bound"
    assert bounds.brackets(exact[gamma], n_stderr=0.0)
    assert bounds.lower.value + 3 * bounds.lower.stderr < exact[gamma]
    assert exact[gamma] < bounds.upper.value - 3 * bounds.upper.stderr


def test_same_seed_same_numbers_other_seed_compatible(toy):
    obj, _, _ = toy
    cheap = {"method": "ti", "n_temperatures": 10, "n_chains": 8}
    a = local_entropy(obj, obj.theta, 1.0, seed=3, **cheap)
    b = local_entropy(obj, obj.theta, 1.0, seed=3, **cheap)
    c = local_entropy(obj, obj.theta, 1.0, seed=4, **cheap)
    assert (a.value, a.stderr, a.n_evals) == (b.value, b.stderr, b.n_evals) and a.seed == 3
    assert c.value != a.value
    assert abs(c.value - a.value) < 4 * math.hypot(a.stderr, c.stderr)
    from_generator = local_entropy(obj, obj.theta, 1.0, seed=torch.Generator().manual_seed(3),
                                   **cheap)
    assert from_generator.value == a.value and from_generator.seed is None


# --------------------------------------------------------------------------- quadratics


def test_laplace_is_exact_on_a_quadratic_and_ti_agrees():
    obj, a = quadratic([-0.3, 0.0, 0.5, 1.0, 2.0, 5.0])
    gamma, beta = 1.0, 2.0
    at_min = local_entropy(obj, obj.theta, gamma, beta=beta, method="laplace")
    assert at_min.value == pytest.approx(laplace_exact(a, obj.theta, gamma), abs=1e-12)
    theta = torch.linspace(-1, 1, 6, dtype=torch.float64)
    off = local_entropy(obj, theta, gamma, beta=beta, method="laplace")
    assert off.value == pytest.approx(laplace_exact(a, theta, gamma, beta), rel=1e-10)
    assert off.value > at_min.value + 0.5  # the gradient term matters here
    ti = local_entropy(obj, theta, gamma, beta=beta, method="ti", seed=0, n_temperatures=30)
    assert abs(ti.value - off.value) < 4 * ti.stderr
    ula = local_entropy(obj, theta, gamma, beta=beta, method="ti", seed=0, n_temperatures=30,
                        sampler="ula")
    assert (ula.settings["sampler"], ula.settings["target_accept"]) == ("ula", 0.98)
    # no Metropolis correction: an O(h) bias (measured 0.89 against the exact 1.16)
    assert ula.value != ti.value and abs(ula.value - off.value) < 0.35 * abs(off.value)


def test_slq_laplace_matches_dense():
    lam = torch.linspace(-0.5, 8.0, 40, dtype=torch.float64)
    diag = toy_objective(lambda t: 0.5 * (lam * t**2).sum(), 40)
    theta = torch.linspace(-1, 1, 40, dtype=torch.float64)
    dense = local_entropy(diag, theta, 1.0, method="laplace")
    # Rademacher probes are exact on a diagonal matrix, and full Lanczos on the gradient term
    full = local_entropy(diag, theta, 1.0, method="laplace", solver="slq", lanczos_steps=40,
                         n_probes=2)
    assert full.settings == {"solver": "slq", "lanczos_steps": 40, "n_probes": 2}
    assert full.value == pytest.approx(dense.value, rel=1e-9) and full.stderr < 1e-9
    obj, a = quadratic(lam.tolist(), seed=1)
    short = local_entropy(obj, theta, 1.0, method="laplace", solver="slq", lanczos_steps=20,
                          seed=0)
    assert abs(short.value - laplace_exact(a, theta, 1.0)) < 4 * short.stderr + 1e-6
    refused = local_entropy(obj, theta, 0.4, method="laplace", solver="slq", lanczos_steps=20)
    assert not refused.valid and refused.diagnostics["lambda_min"] < -0.4


def test_subspaces():
    lam = torch.linspace(0.1, 4.0, 20, dtype=torch.float64)
    obj, a = quadratic(lam.tolist(), seed=2)
    top = local_entropy(obj, obj.theta, 1.0, method="laplace", subspace="hessian-top",
                        subspace_dim=3)
    assert top.dim == 3 and top.num_params == 20 and top.subspace.startswith("hessian-top(k=3")
    assert top.value == pytest.approx(float(-0.5 * torch.log1p(lam[-3:]).sum()), rel=1e-8)
    assert top.n_evals > 1 + 3  # the Lanczos run is counted
    space = random_subspace(20, 5, seed=7)
    rand = local_entropy(obj, obj.theta, 1.0, method="laplace", subspace="random",
                         subspace_dim=5, seed=7)
    projected = space.basis @ a @ space.basis.T
    assert rand.subspace == "random(k=5, seed=7)" and rand.dim == 5
    assert rand.value == pytest.approx(float(-0.5 * torch.logdet(torch.eye(5) + projected)),
                                       rel=1e-10)
    ti = local_entropy(obj, obj.theta, 1.0, method="ti", subspace=space, seed=0,
                       n_temperatures=30)
    assert ti.subspace == space.description and abs(ti.value - rand.value) < 4 * ti.stderr
    with pytest.raises(ValueError, match="orthonormal"):
        Subspace(2 * space.basis, "scaled")


def test_flat_loss_has_zero_entropy():
    obj = toy_objective(lambda t: 0.0 * t.sum() + 1.5, 10)
    for method in ("laplace", "ti", "ais", "gaussian-bound", "gibbs-bound"):
        est = local_entropy(obj, obj.theta, 0.5, method=method, n_temperatures=4, n_chains=2)
        assert est.valid and est.value == 0.0 and est.stderr in (None, 0.0), method


def test_curve_shares_work_and_matches_single_calls(toy):
    obj, _, _ = toy
    curve = local_entropy_curve(obj, obj.theta, [1.0, 10.0], method="laplace")
    single = local_entropy(obj, obj.theta, 10.0, method="laplace")
    assert curve[1].value == single.value and curve[0].n_evals == single.n_evals
    cheap = {"method": "ais", "n_temperatures": 40, "n_chains": 4, "seed": 5}
    sweep = local_entropy_curve(obj, obj.theta, [10.0, 1.0], **cheap)
    assert [e.gamma for e in sweep] == [10.0, 1.0]
    assert sweep[1].value == local_entropy(obj, obj.theta, 1.0, **cheap).value
    json.dumps([e.to_dict() for e in sweep])  # JSON-able for the store
    assert isinstance(sweep[0], LocalEntropy) and sweep[0].per_dim == sweep[0].value / 200


# --------------------------------------------------------------------------- a digits MLP


def test_digits_mlp_bounded_time_and_laplace_agrees_at_narrow_scope():
    dataset = load_dataset({"name": "digits"})
    x, y = evaluation_data(dataset, "mlp:64-8-10", n_samples=200)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.Tanh(), nn.Linear(8, 10))
    obj = Objective(net, nn.functional.cross_entropy, (x, y), l2=1e-3)
    theta = obj.theta.clone().requires_grad_()
    opt = torch.optim.LBFGS([theta], max_iter=100, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = obj.loss(theta)
        loss.backward()
        return loss

    opt.step(closure)
    theta = theta.detach()
    beta = float(obj.num_samples)  # the posterior temperature: L summed over the samples
    laplace = local_entropy(obj, theta, 100.0, beta=beta, method="laplace")
    ti = local_entropy(obj, theta, 100.0, beta=beta, method="ti", seed=0, n_chains=8)
    assert obj.num_params == 610 and laplace.valid and ti.valid
    assert math.isfinite(ti.value) and ti.seconds < 60
    assert abs(ti.value - laplace.value) < 0.05 * abs(laplace.value) + 3 * ti.stderr


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize("kwargs, match", [
    ({"gamma": 0.0}, "gamma must be a finite number > 0; got 0.0"),
    ({"gamma": math.nan}, "gamma .* got nan"),
    ({"beta": -1.0}, "beta .* got -1.0"),
    ({"method": "naive"}, "method must be one of .* got 'naive'"),
    ({"sampler": "hmc"}, "sampler .* got 'hmc'"),
    ({"n_steps": 5, "burn_in": 5}, r"burn_in must be an integer in \[0, n_steps=5\); got 5"),
    ({"n_chains": 1}, "n_chains must be an integer >= 2; got 1"),
    ({"subspace_dim": 3}, "subspace_dim=3 needs subspace"),
    ({"subspace": "pca", "subspace_dim": 3}, "subspace must be .* got 'pca'"),
    ({"method": "laplace", "solver": "qr"}, "solver .* got 'qr'"),
    ({"direction": "up"}, "direction .* got 'up'"),
])
def test_arguments_are_validated(kwargs, match):
    obj = toy_objective(lambda t: (t**2).sum(), 3)
    kwargs = {"gamma": 1.0, **kwargs}
    with pytest.raises(ValueError, match=match):
        local_entropy(obj, obj.theta, **kwargs)


def test_bad_theta_and_unknown_options():
    obj = toy_objective(lambda t: (t**2).sum(), 3)
    with pytest.raises(ValueError, match=r"theta must have shape \(3,\); got \(4,\)"):
        local_entropy(obj, torch.zeros(4, dtype=torch.float64), 1.0)
    with pytest.raises(TypeError, match="unknown options \\['chains'\\]"):
        local_entropy_curve(obj, obj.theta, [1.0], chains=4)
