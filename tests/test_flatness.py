"""Flatness measures against closed forms on quadratics and logit tables, reparametrisation
invariance on a ReLU MLP rescaled by ``models.rescale``, reproducibility, and agreement with the
spectrum functions on a digits MLP."""

from __future__ import annotations

import itertools
import json
import math

import pytest
import torch
from scipy.stats import chi2, norm
from torch import nn

from landscape import flatness as F
from landscape.data import DataSpec, load_dataset
from landscape.models import build_model, rescale
from landscape.objective import Objective
from landscape.spectrum import extreme_eigenpairs
from tests.toys import diagonal_quadratic, logit_table, toy_objective

CE = nn.functional.cross_entropy
DEFAULT_NAMES = {
    "lambda_max": "lambda_max", "trace": "trace", "frobenius_sq": "frobenius_sq",
    "near_zero_fraction": "near_zero_fraction", "keskar": "keskar_eps0.001",
    "average_sharpness": "average_sharpness_sigma0.01", "worst_sharpness": "worst_sharpness_rho0.05",
    "asam": "asam_rho0.5", "pac_bayes": "pac_bayes_sigma", "local_energy": "local_energy_sigma0.1",
}
STOCHASTIC = {"average_sharpness", "local_energy"}  # the defaults that carry a standard error


def f64(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def randn(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def relu_mlp():
    """A 10 → 8 → 3 ReLU MLP fitted for 25 L-BFGS iterations to 200 noisy teacher labels (loss
    ≈ 7e-4, training error 0), as an nn.Module and its data."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 10, generator=g, dtype=torch.float64)
    teacher = torch.randn(10, 3, generator=g, dtype=torch.float64)
    y = (x @ teacher + 0.5 * torch.randn(200, 3, generator=g, dtype=torch.float64)).argmax(1)
    net = build_model("mlp:10-8-3:relu", seed=0).double()
    opt = torch.optim.LBFGS(net.parameters(), max_iter=25, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = CE(net(x), y)
        loss.backward()
        return loss
    opt.step(closure)
    return net, (x, y)


@pytest.fixture(scope="module")
def rescaled(relu_mlp):
    """{c: Objective of the MLP with its first layer ×c and second ÷c}, c = 1, 5, 25."""
    net, data = relu_mlp
    return {c: Objective(net if c == 1 else rescale(net, 0, float(c)), CE, data)
            for c in (1, 5, 25)}


# ---------------------------------------------------------------------------- API
def test_default_names_settings_and_registry(rescaled):
    obj = rescaled[1]
    assert set(F.MEASURES) == set(DEFAULT_NAMES)
    for kind, name in DEFAULT_NAMES.items():
        m = F.evaluate(obj, obj.theta, {"kind": kind})
        assert m.name == name
        assert m.settings == F.measure_options(kind)  # every option, defaults included
        json.dumps([m.settings, m.info])
        assert m.n_evals > 0 and m.wall_time > 0 and math.isfinite(m.value)
        assert (m.stderr is not None) == (kind in STOCHASTIC or m.info.get("method") == "hutch++")


@pytest.mark.parametrize("kind, options, name", [
    ("average_sharpness", {"scaling": "magnitude"}, "average_sharpness_mag_sigma0.01"),
    ("average_sharpness", {"scaling": "filter", "law": "uniform", "target": "error",
                           "quantile": 0.9, "sigma": 0.05},
     "average_sharpness_filter_uniform_error_q0.9_sigma0.05"),
    ("average_sharpness", {"scaling": "magnitude", "mag_eps": 0.0},
     "average_sharpness_mag_mageps0_sigma0.01"),
    ("keskar", {"subspace_dim": 20, "eps": 5e-4}, "keskar_sub20_eps0.0005"),
    ("asam", {"eta": 0.0, "rho": 1.0}, "asam_eta0_rho1"),
    ("pac_bayes", {"scaling": "magnitude"}, "pac_bayes_mag_sigma"),
    ("pac_bayes", {"target": "loss", "drop": 0.05}, "pac_bayes_loss_drop0.05_sigma"),
    ("near_zero_fraction", {"atol": 1e-5}, "near_zero_fraction_atol1e-05"),
    ("local_energy", {"sigma": 0.2, "n_samples": 5}, "local_energy_sigma0.2"),
])
def test_names_follow_the_rule(rescaled, kind, options, name):
    obj = rescaled[1]
    assert F.evaluate(obj, obj.theta, {"kind": kind, **options}).name == name


@pytest.mark.parametrize("spec, message", [
    ({"kind": "sharpness"}, "kind must be one of"),
    ({"kind": "asam", "radius": 0.1}, r"unknown option\(s\) \['radius'\]"),
    ({"kind": "average_sharpness", "sigma": -0.1}, "sigma must be"),
    ({"kind": "average_sharpness", "scaling": "adaptive"}, "scaling must be one of"),
    ({"kind": "average_sharpness", "n_samples": 1}, "n_samples must be"),
    ({"kind": "average_sharpness", "quantile": 1.0}, "quantile must be"),
    ({"kind": "local_energy", "target": "kl"}, "target must be one of"),
    ({"kind": "keskar", "subspace_dim": 0}, "subspace_dim must be"),
    ({"kind": "keskar", "max_steps": 2.5}, "max_steps must be"),
    ({"kind": "worst_sharpness", "seed": 1.5}, "seed must be"),
    ({"kind": "trace", "method": "exact-ish"}, "method must be one of"),
    ({"kind": "frobenius_sq", "n_matvecs": 4}, "n_matvecs must be"),
    ({"kind": "pac_bayes", "drop": 0}, "drop must be"),
])
def test_bad_specs_raise_value_errors_naming_the_option(rescaled, spec, message):
    obj = rescaled[1]
    with pytest.raises(ValueError, match=message):
        F.evaluate(obj, obj.theta, spec)


def test_filter_magnitude_is_the_row_rms_and_biases_are_their_own_filters():
    obj = Objective(nn.Linear(3, 2), CE, (torch.zeros(1, 3), torch.zeros(1, dtype=torch.long)))
    theta = f64([3.0, 0.0, 4.0, 1.0, 1.0, 1.0, -2.0, 0.5])  # W = [[3, 0, 4], [1, 1, 1]], b
    rms = [5 / math.sqrt(3)] * 3 + [1.0] * 3 + [2.0, 0.5]
    torch.testing.assert_close(F.filter_magnitude(obj, theta), f64(rms))


# ---------------------------------------------------------------------------- closed forms
H_DIAG = f64([0.0, 0.0, 1e-6, 0.1, 0.5, 0.5, 1.0, 2.0, 3.0, 8.0])


def test_spectral_measures_of_a_diagonal_quadratic_are_exact():
    obj = diagonal_quadratic(H_DIAG, constant=1.5)
    theta = randn(10, 0)
    assert F.lambda_max(obj, theta).value == pytest.approx(8.0, rel=1e-8)
    for fn, exact in ((F.trace, H_DIAG.sum()), (F.frobenius_sq, (H_DIAG**2).sum())):
        m = fn(obj, theta)  # n = 10 ≤ 99 HVPs: exact
        assert m.value == pytest.approx(float(exact), rel=1e-12)
        assert m.stderr is None and m.n_evals == 10
    assert F.near_zero_fraction(obj, theta).value == pytest.approx(0.3)  # |λ| ≤ 1e-4
    assert F.near_zero_fraction(obj, theta, atol=1e-7).value == pytest.approx(0.2)


def test_stochastic_traces_of_a_rotated_quadratic_within_their_error_bars():
    h = torch.cat([torch.zeros(120), torch.full((90,), 0.5), torch.full((60,), 2.0),
                   torch.full((30,), 40.0)]).double()
    q = torch.linalg.qr(torch.randn(300, 300, dtype=torch.float64,
                                    generator=torch.Generator().manual_seed(0))).Q
    a = q @ torch.diag(h) @ q.T
    obj = toy_objective(lambda t: 0.5 * t @ a @ t, 300)
    for fn, exact in ((F.trace, h.sum()), (F.frobenius_sq, (h**2).sum())):
        for method in ("hutch++", "hutchinson"):
            m = fn(obj, randn(300, 1), method=method)
            assert m.stderr > 0 and abs(m.value - float(exact)) <= 4 * m.stderr
            assert m.n_evals <= 99 and m.info["method"] == method


def test_slq_near_zero_fraction_of_a_diagonal_quadratic_is_exact():
    """Rademacher probes put mass exactly 1/n on each coordinate of a diagonal H, and 10 Lanczos
    steps resolve its 4 distinct eigenvalues: the SLQ weight on 0 is exactly 120/300."""
    h = torch.cat([torch.zeros(120), torch.full((90,), 0.5), torch.full((60,), 2.0),
                   torch.full((30,), 40.0)]).double()
    slq = F.near_zero_fraction(diagonal_quadratic(h), randn(300, 1), method="slq", n_steps=10,
                               n_probes=3)
    assert slq.value == pytest.approx(0.4, abs=1e-8) and slq.stderr < 1e-8
    assert slq.n_evals == 30


def test_keskar_box_maximum_of_a_quadratic_is_the_separable_corner():
    """max over |zᵢ| ≤ εᵢ of Σ hᵢ (θᵢ zᵢ + zᵢ²/2) is at zᵢ = εᵢ sign θᵢ: Σ hᵢ (|θᵢ| εᵢ + εᵢ²/2)."""
    h, constant, eps = f64([0.5, 1.0, 2.0, 4.0, 8.0]), 0.7, 1e-2
    obj = diagonal_quadratic(h, constant=constant)
    theta = f64([0.3, -1.2, 0.05, -0.4, 2.0])
    e = eps * (theta.abs() + 1)
    loss = float(0.5 * (h * theta**2).sum()) + constant
    exact = float((h * (theta.abs() * e + e**2 / 2)).sum())
    m = F.keskar_sharpness(obj, theta, eps=eps)
    assert m.info["raw"] == pytest.approx(exact, rel=1e-10)
    assert m.value == pytest.approx(100 * exact / (1 + loss), rel=1e-10)
    # At the minimum the gradient vanishes: L-BFGS-B from 0 cannot move; a restart reaches a
    # corner, and every corner gives ½ Σ hᵢ ε².
    at_min = F.keskar_sharpness(obj, torch.zeros(5, dtype=torch.float64), eps=eps)
    assert at_min.value == 0.0
    restarted = F.keskar_sharpness(obj, torch.zeros(5, dtype=torch.float64), eps=eps,
                                   n_restarts=1)
    assert restarted.value == pytest.approx(100 * 0.5 * float(h.sum()) * eps**2 / (1 + constant),
                                            rel=1e-10)


def test_keskar_subspace_maximum_is_a_vertex_of_the_subspace_box():
    """A convex quadratic has its local maxima over a box at vertices: the subspace ascent must
    end at one, with A = subspace_basis(n, p, seed) and half-widths ε(|Aᵀθ| + 1)."""
    h = f64([0.5, 1.0, 2.0, 4.0, 8.0, 1.0])
    obj = diagonal_quadratic(h)
    theta = randn(6, 2)
    m = F.keskar_sharpness(obj, theta, eps=0.05, subspace_dim=3, seed=3)
    basis = F.subspace_basis(6, 3, 3)
    assert torch.allclose(basis.T @ basis, torch.eye(3, dtype=torch.float64), atol=1e-12)
    half = 0.05 * ((basis.T @ theta).abs() + 1)
    vertices = [float(obj.loss(theta + basis @ (half * f64(signs)))) - float(obj.loss(theta))
                for signs in itertools.product((-1, 1), repeat=3)]
    assert min(abs(m.info["raw"] - v) for v in vertices) < 1e-10 * max(vertices)


@pytest.mark.parametrize("options, expected", [
    ({}, lambda h, t: 1e-4 * h.sum() / 2),  # σ² tr H / 2, at any θ
    ({"law": "uniform"}, lambda h, t: 1e-4 * h.sum() / 6),  # Var U[−1, 1] = 1/3
    ({"scaling": "magnitude"}, lambda h, t: (h * (1e-4 * t**2 + 1e-6)).sum() / 2),
    ({"scaling": "filter"}, lambda h, t: 1e-4 * (h * t**2).sum() / 2),  # 1-D θ: |θᵢ|
])
def test_average_sharpness_of_a_quadratic_within_its_error_bar(options, expected):
    h, center = H_DIAG + 0.2, 3 * randn(10, 4)  # |θᵢ| far from 1: the scalings differ
    obj = diagonal_quadratic(h, center=center)
    for theta in (center, 3 * randn(10, 5)):  # at the minimum and away from it
        m = F.average_sharpness(obj, theta, sigma=0.01, **options)
        exact = float(expected(h, theta))
        assert m.stderr > 0 and abs(m.value - exact) <= 4 * m.stderr
        assert m.n_evals == 201


def test_average_sharpness_quantile_of_a_quadratic_is_a_chi_square_quantile():
    """At the minimum of ½ h ‖θ‖², L(σu) = ½ h σ² χ²ₙ."""
    n, h, sigma = 20, 3.0, 0.1
    obj = diagonal_quadratic(torch.full((n,), h, dtype=torch.float64))
    m = F.average_sharpness(obj, obj.theta, sigma=sigma, quantile=0.9, n_samples=400)
    exact = 0.5 * h * sigma**2 * chi2.ppf(0.9, n)
    assert abs(m.value - exact) <= 4 * m.stderr and m.stderr < 0.05 * exact
    assert m.n_evals == 401


def test_worst_case_l2_sharpness_at_a_minimum_is_rho_squared_lambda_max_over_two():
    h = torch.cat([torch.linspace(0.1, 1.0, 9, dtype=torch.float64), f64([3.0])])
    center = randn(10, 6)
    obj = diagonal_quadratic(h, center=center)
    m = F.worst_sharpness(obj, center, rho=0.05)
    exact = 0.05**2 * 3.0 / 2
    assert exact * (1 - 1e-6) <= m.value <= exact * (1 + 1e-12)
    assert m.stderr is None and m.n_evals == 22  # L(θ), the start, 20 steps


def test_asam_at_a_minimum_is_rho_squared_max_h_t_squared_over_two():
    """max over ‖T⁻¹ε‖ ≤ ρ of ½ εᵀHε = ρ²/2 · λ_max(THT) = ρ²/2 · maxᵢ hᵢ (|mᵢ| + η)²."""
    h = torch.linspace(0.5, 2.0, 10, dtype=torch.float64)
    center = torch.linspace(-1.0, 1.0, 10, dtype=torch.float64)
    obj = diagonal_quadratic(h, center=center)
    for eta in (0.01, 0.0):
        m = F.asam(obj, center, eta=eta)
        exact = 0.5**2 * float((h * (center.abs() + eta) ** 2).max()) / 2
        assert exact * (1 - 1e-6) <= m.value <= exact * (1 + 1e-12)


def test_local_energy_of_a_quadratic_within_its_error_bar():
    h = H_DIAG + 0.2
    obj = diagonal_quadratic(h, center=randn(10, 7))
    theta = randn(10, 8)
    m = F.local_energy(obj, theta, sigma=0.1)
    exact = 0.1**2 / 2 * float((h * theta**2).sum())
    assert abs(m.value - exact) <= 4 * m.stderr


@pytest.mark.parametrize("scaling", ["none", "magnitude"])
def test_pac_bayes_sigma_on_a_logit_table_matches_the_gaussian_closed_form(scaling):
    """Rows (a, b), label 0: row i is wrong iff u_b − u_a > a − b, so the mean error under noise
    of std (s_a, s_b) is Φ(−(a − b) / √(s_a² + s_b²)); σ* must make it ``drop`` within the
    tolerance plus the Monte-Carlo error of 10 draws × 1000 rows."""
    a, b, n_rows, eps = 1.0, 0.8 if scaling == "none" else 0.5, 1000, 1e-3
    obj = logit_table(f64([[a, b]] * n_rows))
    m = F.pac_bayes_sigma(obj, obj.theta, scaling=scaling)
    s = m.value
    spread = s * math.sqrt(2) if scaling == "none" else math.sqrt(s**2 * (a**2 + b**2) + 2 * eps**2)
    error = norm.cdf(-(a - b) / spread)
    assert abs(error - 0.1) <= 0.01 + 4 * math.sqrt(0.1 * 0.9 / (10 * n_rows))
    # Bisection invariants; the same seed gives the same σ*, and σ is the std (a σ² bug would
    # put σ* ≈ 0.33 for the plain table, whose root is ≈ 0.110).
    assert m.info["converged"] and abs(m.info["displacement"] - 0.1) < 0.01
    assert m.info["lower"] <= s <= m.info["upper"] and m.n_evals == 1 + 10 * m.info["steps"]
    if scaling == "none":
        assert 0.09 < s < 0.13
    assert F.pac_bayes_sigma(obj, obj.theta, scaling=scaling).value == s


# ---------------------------------------------------------------------------- rescale
def test_rescale_keeps_the_function_and_scales_the_two_layers(relu_mlp):
    net, (x, _) = relu_mlp
    for c in (5.0, 25.0):
        other = rescale(net, 0, c)
        assert (other(x) - net(x)).abs().max() < 1e-10
        torch.testing.assert_close(other[1].weight, c * net[1].weight)
        torch.testing.assert_close(other[1].bias, c * net[1].bias)
        torch.testing.assert_close(other[3].weight, net[3].weight / c)
        torch.testing.assert_close(other[3].bias, net[3].bias)
    lenet = build_model("lenet:c1=2,c2=3,h=4", (1, 8, 8), 3, seed=0).double()
    images = torch.randn(5, 1, 8, 8, dtype=torch.float64,
                         generator=torch.Generator().manual_seed(0))
    for layer in (0, 1, 2):  # conv → pool → relu → conv, conv → … → flatten → linear, linear
        assert (rescale(lenet, layer, 7.0)(images) - lenet(images)).abs().max() < 1e-10


@pytest.mark.parametrize("model, layer, c, message", [
    (lambda: build_model("mlp:4-3-2:tanh"), 0, 2.0, r"module 2 \(Tanh\)"),
    (lambda: build_model("mlp:4-3-2:relu"), 1, 2.0, r"layer must be an integer in \[0, 0\]"),
    (lambda: build_model("mlp:4-3-2:relu"), 0, 0.0, "c must be a finite positive"),
    (lambda: build_model("mlp:4-3-2:relu"), 0, math.inf, "c must be a finite positive"),
])
def test_rescale_refuses_what_would_change_the_function(model, layer, c, message):
    with pytest.raises(ValueError, match=message):
        rescale(model(), layer, c)


# ---------------------------------------------------------------------------- invariance
FEW = {"n_samples": 20}  # exact invariance holds for any number of (common) draws
ZERO_OFFSETS = [  # adaptive measures with their offsets η / ε set to 0: exactly invariant
    {"kind": "asam", "eta": 0.0},
    {"kind": "average_sharpness", "scaling": "magnitude", "mag_eps": 0.0, **FEW},
    {"kind": "average_sharpness", "scaling": "filter", **FEW},
    {"kind": "pac_bayes", "scaling": "magnitude", "mag_eps": 0.0},
    {"kind": "local_energy", **FEW},
]
PLAIN = [{"kind": "lambda_max"}, {"kind": "trace"}, {"kind": "average_sharpness", **FEW},
         {"kind": "worst_sharpness"}, {"kind": "pac_bayes"}, {"kind": "keskar"}]


def _factors(theta: torch.Tensor, c: float) -> torch.Tensor:
    """R with θ' = R θ for the 10 → 8 → 3 MLP: first weight and bias × c, second weight ÷ c."""
    r = torch.ones_like(theta)
    r[:88], r[88:112] = c, 1 / c
    return r


@pytest.mark.parametrize("c", [5, 25])
def test_adaptive_measures_are_invariant_and_plain_ones_are_not(rescaled, c):
    base, other = rescaled[1], rescaled[c]
    torch.testing.assert_close(other.theta, _factors(base.theta, c) * base.theta)
    for spec in ZERO_OFFSETS:
        before = F.evaluate(base, base.theta, spec).value
        after = F.evaluate(other, other.theta, spec).value
        assert abs(after / before - 1) < 1e-8, spec
    # Keskar's box ε(|θᵢ| + 1) is ≈ ε|θᵢ| (adaptive) where |θᵢ| ≫ 1, as in most of this net's
    # weights: only the ÷25 layer, pushed below 1, changes it by a large factor.
    for spec in PLAIN if c == 25 else PLAIN[:-1]:
        ratio = F.evaluate(other, other.theta, spec).value / F.evaluate(
            base, base.theta, spec).value
        assert max(ratio, 1 / ratio) > (1.5 if c == 5 else 3.0), (spec, ratio)


@pytest.mark.parametrize("c", [5, 25])
def test_adaptive_measures_at_default_offsets_change_within_what_the_offsets_allow(rescaled, c):
    """With offsets the rescaled net's scale is s' = D R s instead of the equivariant R s.

    ASAM (η = 0.01): D = (R|θ| + η) / (R(|θ| + η)) ∈ [a, b], so the rescaled ellipsoid lies
    between the original ones of radius aρ and bρ and V(aρ) ≤ V' ≤ V(bρ). Magnitude-aware mean
    (ε = 1e-3): to second order the change is ε² Σ Hᵢᵢ (Rᵢ⁻² − 1) / Σ Hᵢᵢ sᵢ² (0.1 % at c = 5,
    4.5 % at c = 25 for σ' = 0.01 here); the tolerance is twice that (the loss is not quadratic
    over these radii) + 0.5 % for the Monte-Carlo error. PAC-Bayes σ* (magnitude-aware) moves
    by less than its final bisection bracket."""
    base, other = rescaled[1], rescaled[c]
    theta = base.theta
    r = _factors(theta, c)
    d = (r * theta.abs() + F.ASAM_ETA) / (r * (theta.abs() + F.ASAM_ETA))
    rho = 0.5
    after = F.asam(other, other.theta, rho=rho).value
    assert F.asam(base, theta, rho=float(d.min()) * rho).value <= after
    assert after <= F.asam(base, theta, rho=float(d.max()) * rho).value
    h = base.hessian(theta).diagonal()
    for sigma in (0.01, 0.1):
        spec = {"kind": "average_sharpness", "scaling": "magnitude", "sigma": sigma}
        change = F.evaluate(other, other.theta, spec).value / F.evaluate(
            base, theta, spec).value - 1
        second_order = float(F.MAG_EPS**2 * (h * (r**-2 - 1)).sum()
                             / (h * (sigma**2 * theta**2 + F.MAG_EPS**2)).sum())
        assert abs(change) <= 2 * abs(second_order) + 0.005, (sigma, change, second_order)
    spec = {"kind": "pac_bayes", "scaling": "magnitude"}
    before, after = (F.evaluate(o, o.theta, spec) for o in (base, other))
    assert abs(after.value - before.value) <= before.info["upper"] - before.info["lower"]


# ---------------------------------------------------------------------------- reproducibility
def test_same_seed_same_numbers_other_seed_other_draws(rescaled):
    obj = rescaled[1]

    def run(kind, seed):
        return F.evaluate(obj, obj.theta, {"kind": kind, "seed": seed,
                                           **(FEW if kind in STOCHASTIC else {})})
    for kind in F.MEASURES:
        first, again = run(kind, 3), run(kind, 3)
        assert (first.value, first.stderr, first.n_evals) == (again.value, again.stderr,
                                                              again.n_evals), kind
    for kind in STOCHASTIC | {"worst_sharpness"}:
        assert run(kind, 0).value != run(kind, 1).value, kind
    # σ* lies on the bisection's dyadic grid; the draws show in the displacement reached
    displaced = {F.evaluate(obj, obj.theta, {"kind": "pac_bayes", "seed": s}).info[
        "displacement"] for s in (0, 1)}
    assert len(displaced) == 2


def test_digits_mlp_measures_in_bounded_evaluations_and_spectra_agree():
    ds = load_dataset(DataSpec("digits", n_train=300))
    model = build_model("mlp:8:relu", ds.input_shape, ds.n_classes, seed=0)
    obj = Objective(model, CE, (ds.x_train, ds.y_train))
    theta = obj.theta
    eigenvalues = torch.linalg.eigvalsh(obj.hessian(theta))
    n = obj.num_params  # 64·8 + 8 + 8·10 + 10 = 610
    bounds = {"lambda_max": 320, "trace": 99, "frobenius_sq": 98, "near_zero_fraction": n,
              "keskar": 2 + 21 * 10, "average_sharpness": 201, "worst_sharpness": 22,
              "asam": 22, "pac_bayes": 151, "local_energy": 201}
    measures = {kind: F.evaluate(obj, theta, {"kind": kind}) for kind in F.MEASURES}
    for kind, m in measures.items():
        assert 0 < m.n_evals <= bounds[kind], (kind, m.n_evals)
    top = extreme_eigenpairs(obj, theta, k=1, seed=0)
    assert measures["lambda_max"].value == float(top.eigenvalues[0])
    assert measures["lambda_max"].value == pytest.approx(float(eigenvalues[-1]), rel=1e-6)
    tr = measures["trace"]
    assert abs(tr.value - float(eigenvalues.sum())) <= 4 * tr.stderr
    frob = measures["frobenius_sq"]
    assert abs(frob.value - float((eigenvalues**2).sum())) <= 4 * frob.stderr
    assert measures["near_zero_fraction"].value == float(
        (eigenvalues.abs() <= 1e-4).double().mean())
