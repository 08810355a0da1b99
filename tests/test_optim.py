"""Optimizers of ``landscape.optim``: the registry and step protocol, closed-form checks of the
update rules (saddle-free Newton, damped Newton, Entropy-SGD, SGLD, perturbed SGD), saddle escape
on toys, and seeded reproducibility."""

from __future__ import annotations

import doctest
import importlib
import itertools

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn

from landscape.optim import (
    OPTIMIZER_HELP,
    OPTIMIZERS,
    SGLD,
    BatchClosure,
    EntropySGD,
    PerturbedSGD,
    damped_newton_step,
    make_optimizer,
    saddle_free_newton_step,
    train_step,
)
from tests.toys import saddle, toy_objective

STOCHASTIC = ("perturbed-sgd", "sgld", "entropy-sgd")
MODULES = ("landscape.optim", "landscape.optim.base", "landscape.optim.dauphin2014sfn",
           "landscape.optim.damped_newton", "landscape.optim.ge2015perturbed_sgd",
           "landscape.optim.welling2011sgld", "landscape.optim.chaudhari2017entropy_sgd",
           "landscape.optim.amari1998natural_gradient", "landscape.optim.zhang2015easgd",
           "landscape.optim.foret2021sam")


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_problem():
    """A 5→8→3 tanh MLP (75 parameters) and 64 samples of random data with 3 classes."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 5, generator=g), torch.randint(0, 3, (64,), generator=g)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))
    return model, nn.functional.cross_entropy, x, y


class Point(nn.Module):
    """θ itself as the model output, so ``loss_fn = f(out[0])`` makes the loss f(θ)."""

    def __init__(self, theta0):
        super().__init__()
        self.w = nn.Parameter(torch.as_tensor(theta0, dtype=torch.float64).clone())

    def forward(self, x):
        return self.w.expand(x.shape[0], -1)


def run_toy(f, theta0, name, steps, **hparams) -> list[torch.Tensor]:
    """Trajectory of optimizer ``name`` on f, called through ``train_step`` like a training loop."""
    model = Point(theta0)
    opt = make_optimizer(name, model.parameters(), **hparams)
    path = [model.w.detach().clone()]
    for _ in range(steps):
        train_step(opt, model, lambda out, _: f(out[0]), torch.zeros(1, 1), torch.zeros(1))
        path.append(model.w.detach().clone())
    return path


def trajectory(name, steps, seed=0, **hparams) -> list[torch.Tensor]:
    model, loss_fn, x, y = tiny_problem()
    opt = make_optimizer(name, model.parameters(), seed=seed, **hparams)
    out = []
    for _ in range(steps):
        train_step(opt, model, loss_fn, x, y)
        out.append(nn.utils.parameters_to_vector(model.parameters()).detach().clone())
    return out


# ---------------------------------------------------------------------------------- registry
def test_registry_names_help_and_errors():
    expected = {"sgd", "momentum", "adam", "rmsprop", "adagrad", "perturbed-sgd", "sgld",
                "entropy-sgd", "sfn", "sfn-krylov", "damped-newton", "natural-gradient",
                "natural-gradient-cg", "easgd", "sam", "asam"}
    assert set(OPTIMIZERS) == expected and set(OPTIMIZER_HELP) == expected
    assert all(OPTIMIZER_HELP[name] for name in expected)
    with pytest.raises(ValueError, match="unknown optimizer 'lbfgs'.*sfn-krylov"):
        make_optimizer("lbfgs", [nn.Parameter(torch.zeros(2))])
    with pytest.raises(ValueError, match="objective_factory"):
        make_optimizer("sgd", [nn.Parameter(torch.zeros(2))], objective_factory=lambda b: None)
    with pytest.raises(TypeError, match="'sgld'"):
        make_optimizer("sgld", [nn.Parameter(torch.zeros(2))], temprature=1.0)
    with pytest.raises(ValueError, match="temperature"):
        make_optimizer("sgld", [nn.Parameter(torch.zeros(2))], temperature=-1.0)
    with pytest.raises(ValueError, match="mode"):
        make_optimizer("sfn", [nn.Parameter(torch.zeros(2))], mode="approximate")


def test_registry_defaults_are_used():
    p = [nn.Parameter(torch.zeros(2))]
    assert make_optimizer("sgd", p).defaults["momentum"] == 0
    assert make_optimizer("momentum", p).defaults["momentum"] == 0.9
    assert make_optimizer("sfn-krylov", p).defaults["mode"] == "krylov"
    opt = make_optimizer("entropy-sgd", p, seed=3)
    assert opt.defaults["lr"] == pytest.approx(1e4) and opt.gamma == pytest.approx(1e-4)
    assert opt.defaults["inner_steps"] == 20 and opt.seed == 3


def test_second_order_needs_the_batch():
    model, loss_fn, x, y = tiny_problem()
    opt = make_optimizer("sfn", model.parameters())
    with pytest.raises(TypeError, match="BatchClosure"):
        opt.step()
    with pytest.raises(TypeError, match="BatchClosure"):
        opt.step(lambda: loss_fn(model(x), y))
    other = nn.Linear(5, 3)
    with pytest.raises(ValueError, match="trainable parameters"):
        opt.step(BatchClosure(other, loss_fn, x, y))


def test_documentation_examples_run():
    for name in MODULES:
        result = doctest.testmod(importlib.import_module(name))
        assert result.failed == 0 and result.attempted > 0, name


# ---------------------------------------------------------------------------------- training
TRAIN_HPARAMS = {  # learning rates suited to 60 full-batch steps on the tiny problem
    "sgd": {"lr": 1.0}, "momentum": {"lr": 0.2}, "adam": {"lr": 0.03},
    "rmsprop": {"lr": 0.01}, "adagrad": {"lr": 0.2}, "perturbed-sgd": {"lr": 1.0},
    "sgld": {"lr": 1.0}, "entropy-sgd": {"inner_steps": 5, "inner_lr": 0.5},
    "sfn": {}, "sfn-krylov": {}, "damped-newton": {}, "natural-gradient": {},
    "natural-gradient-cg": {}, "easgd": {"lr": 1.0}, "sam": {"lr": 1.0}, "asam": {"lr": 1.0},
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_every_optimizer_lowers_the_training_loss(name):
    model, loss_fn, x, y = tiny_problem()
    opt = make_optimizer(name, model.parameters(), seed=0, **TRAIN_HPARAMS[name])
    steps = 10 if OPTIMIZERS[name].second_order else 60
    losses = [train_step(opt, model, loss_fn, x, y) for _ in range(steps)]
    with torch.no_grad():
        final = float(loss_fn(model(x), y))
    assert losses[0] == pytest.approx(1.1351, abs=1e-3)  # the loss before the first update
    assert final < 0.9 * losses[0], (name, losses[0], final)
    assert all(p.dtype == torch.float32 for p in model.parameters())


# ---------------------------------------------------------------------------------- saddles
def test_newton_converges_to_the_saddle_sfn_escapes_sgd_is_slow():
    theta0 = [0.5, 1e-3]  # f = x² − y², saddle at the origin
    newton = run_toy(saddle, theta0, "damped-newton", 10, damping=0.0)
    sfn = run_toy(saddle, theta0, "sfn", 10, damping=0.0)
    sgd = run_toy(saddle, theta0, "sgd", 10, lr=0.1)
    assert newton[-1].abs().max() < 1e-12  # Newton lands on the saddle and stays there
    assert sfn[-1][0].abs() < 1e-12 and sfn[-1][1] == pytest.approx(1e-3 * 2**10, rel=1e-9)
    assert saddle(sfn[-1]) < saddle(sfn[0]) - 1.0  # f decreases along y
    assert all(saddle(b) < saddle(a) for a, b in itertools.pairwise(sfn))
    assert abs(sgd[-1][1]) < 0.01 * abs(sfn[-1][1])  # y grows by 1.2 per step only
    assert sgd[-1][1] == pytest.approx(1e-3 * 1.2**10, rel=1e-9)


@pytest.mark.parametrize("name", ["sfn", "sfn-krylov"])
def test_seed_example_sfn_reaches_the_minimum_newton_the_saddle(name):
    def f(t):  # (1 − w₁w₂)²: saddle at the origin, minima on w₁w₂ = 1
        return (1 - t[0] * t[1]) ** 2

    theta0 = [1e-3, 2e-3]
    newton = run_toy(f, theta0, "damped-newton", 20, damping=0.0)
    sfn = run_toy(f, theta0, name, 20, damping=0.0)
    assert newton[-1].abs().max() < 1e-12 and f(newton[-1]) == pytest.approx(1.0)
    assert f(sfn[-1]) < 1e-12


def test_sfn_step_equals_minus_abs_a_inverse_g_on_an_indefinite_quadratic():
    g = torch.Generator().manual_seed(3)
    n = 6
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    a = q @ torch.diag(torch.tensor([-3.0, -1.0, -0.5, 0.7, 2.0, 4.0], dtype=torch.float64)) @ q.T
    a = 0.5 * (a + a.T)
    b = torch.randn(n, generator=g, dtype=torch.float64)
    obj = toy_objective(lambda t: 0.5 * t @ a @ t - b @ t, n)
    theta = torch.randn(n, generator=g, dtype=torch.float64)
    grad = a @ theta - b
    abs_a = torch.from_numpy(np.real(scipy.linalg.sqrtm(a.numpy() @ a.numpy())))  # |A| = √(A²)
    expected = theta - torch.linalg.solve(abs_a, grad)

    exact = saddle_free_newton_step(obj, theta, damping=0.0, mode="exact")
    krylov = saddle_free_newton_step(obj, theta, damping=0.0, mode="krylov", krylov_dim=n)
    assert torch.allclose(exact.theta, expected, atol=1e-10, rtol=0)
    assert torch.allclose(krylov.theta, exact.theta, atol=1e-10, rtol=0)
    assert exact.loss == pytest.approx(float(0.5 * theta @ a @ theta - b @ theta))

    damped = saddle_free_newton_step(obj, theta, damping=0.3, lr=0.5)
    eye = torch.eye(n, dtype=torch.float64)
    assert torch.allclose(damped.theta, theta - 0.5 * torch.linalg.solve(abs_a + 0.3 * eye, grad),
                          atol=1e-10, rtol=0)
    newton = damped_newton_step(obj, theta, damping=0.0)  # lands on the critical point A⁻¹b
    assert torch.allclose(newton.theta, torch.linalg.solve(a, b), atol=1e-10, rtol=0)


def test_damping_grid_keeps_the_lowest_loss():
    obj = toy_objective(lambda t: t[0] ** 2 - t[1] ** 2 + t[1] ** 4, 2)
    theta = torch.tensor([0.5, 0.1], dtype=torch.float64)
    grid = (1e-3, 1e-1, 1.0, 10.0)
    for mode in ("exact", "krylov"):
        best = saddle_free_newton_step(obj, theta, damping=grid, mode=mode)
        losses = {lam: float(obj.loss(saddle_free_newton_step(obj, theta, damping=lam,
                                                              mode=mode).theta))
                  for lam in grid}
        assert best.damping == min(losses, key=losses.get)
        assert best.new_loss == pytest.approx(min(losses.values()), rel=1e-12)


def test_objective_factory_replaces_the_minibatch_objective():
    obj = toy_objective(saddle, 2)  # same loss as the Point model, built independently
    model = Point([0.5, 1e-3])
    opt = make_optimizer("sfn", model.parameters(), objective_factory=lambda batch: obj,
                         damping=0.0)
    loss = train_step(opt, model, None, torch.zeros(1, 1), torch.zeros(1))  # loss_fn unused
    assert loss == pytest.approx(0.25 - 1e-6)
    assert model.w.detach().tolist() == pytest.approx([0.0, 2e-3], abs=1e-15)
    assert opt.last_step.damping == 0.0


# ---------------------------------------------------------------------------------- Entropy-SGD
def quadratic_closure(w, d):
    """Closure for f(w) = ½ wᵀ diag(d) w."""
    def closure():
        w.grad = None
        with torch.enable_grad():
            loss = 0.5 * (d * w * w).sum()
            loss.backward()
        return loss.detach()
    return closure


def entropy_reference(x, d, *, lr, gamma0, gamma1, inner_steps, inner_lr, alpha, outer):
    """Algorithm 1 without noise, written out in numpy."""
    x = x.copy()
    for t in range(outer):
        gamma = gamma0 * (1 + gamma1) ** t
        xp, mu = x.copy(), x.copy()
        for _ in range(inner_steps):
            xp = xp - inner_lr * (d * xp + gamma * (xp - x))  # ∇[f(x′) + γ/2‖x − x′‖²]
            mu = (1 - alpha) * mu + alpha * xp
        x = x - lr * gamma * (x - mu)
    return x


def test_entropy_sgd_scope_advances_and_outer_step_includes_gamma():
    d = torch.tensor([1.0, 3.0, 0.5], dtype=torch.float64)
    w = nn.Parameter(torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64))
    hp = {"lr": 3.0, "gamma0": 0.2, "gamma1": 0.5, "inner_steps": 1, "inner_lr": 0.1,
          "alpha": 0.75}
    opt = EntropySGD([w], noise=0.0, **hp)
    closure = quadratic_closure(w, d)
    x0 = w.detach().numpy().copy()
    for t in range(4):
        assert opt.gamma == pytest.approx(0.2 * 1.5**t, rel=1e-14)
        before = w.detach().numpy().copy()
        opt.step(closure)
        # L = 1, no noise: x − η γ_t α η′ ∇f(x), by hand
        hand = before - 3.0 * (0.2 * 1.5**t) * 0.75 * 0.1 * (d.numpy() * before)
        assert np.allclose(w.detach().numpy(), hand, rtol=0, atol=1e-14)
    assert opt.gamma == pytest.approx(0.2 * 1.5**4) and opt.outer_steps == 4
    assert np.allclose(w.detach().numpy(), entropy_reference(x0, d.numpy(), outer=4, **hp),
                       atol=1e-14)


def test_entropy_sgd_inner_loop_sign_of_the_proximal_term():
    d = np.array([2.0, 0.3])
    hp = {"lr": 1.0, "gamma0": 4.0, "gamma1": 0.1, "inner_steps": 3, "inner_lr": 0.1,
          "alpha": 0.6}
    w = nn.Parameter(torch.tensor([1.0, -1.0], dtype=torch.float64))
    opt = EntropySGD([w], noise=0.0, **hp)
    closure = quadratic_closure(w, torch.from_numpy(d))
    for _ in range(2):
        opt.step(closure)
    expected = entropy_reference(np.array([1.0, -1.0]), d, outer=2, **hp)
    flipped = entropy_reference(np.array([1.0, -1.0]), d, outer=2, **{**hp, "gamma0": -4.0})
    assert np.allclose(w.detach().numpy(), expected, atol=1e-14)
    assert not np.allclose(expected, flipped, atol=1e-3)  # the check can tell the signs apart


def test_entropy_sgd_noise_has_temperature_eps_squared():
    w = nn.Parameter(torch.zeros(20000, dtype=torch.float64))
    opt = EntropySGD([w], lr=1.0, gamma0=1.0, inner_steps=1, inner_lr=0.5, noise=0.1, alpha=1.0)
    opt.step(quadratic_closure(w, torch.zeros(20000, dtype=torch.float64)))
    # f = 0, L = 1, α = 1: x_new = x − η γ (x − x′) = x′ = sqrt(2 η′ ε²) ξ
    assert float(w.detach().std()) == pytest.approx(np.sqrt(2 * 0.5 * 0.01), rel=0.03)
    assert opt.temperature == pytest.approx(0.01)


# ---------------------------------------------------------------------------------- SGLD, noisy SGD
def test_sgld_samples_the_gibbs_variance_on_a_quadratic():
    x = nn.Parameter(torch.zeros(1, dtype=torch.float64))
    temperature, lr = 0.01, 0.05
    opt = SGLD([x], lr=lr, temperature=temperature, seed=0)
    samples = []
    for i in range(21000):
        x.grad = x.detach().clone()  # ∇ ½x²
        opt.step()
        if i >= 1000:
            samples.append(x.item())
    variance = np.var(samples)
    assert variance == pytest.approx(temperature, rel=0.2)
    assert variance == pytest.approx(temperature / (1 - lr / 2), rel=0.1)  # ULA's exact law


def test_sgld_without_temperature_is_sgd_bit_for_bit():
    sgld = trajectory("sgld", 15, lr=0.5, temperature=0.0)
    sgd = trajectory("sgd", 15, lr=0.5)
    assert all(torch.equal(a, b) for a, b in zip(sgld, sgd))


def test_perturbed_sgd_noise_lies_on_the_sphere_of_all_parameters():
    g = torch.Generator().manual_seed(0)
    params = [nn.Parameter(torch.randn(3, generator=g, dtype=torch.float64)),
              nn.Parameter(torch.randn(2, 2, generator=g, dtype=torch.float64))]
    lr, radius = 0.3, 0.7
    opt = PerturbedSGD(params, lr=lr, noise=radius, seed=5)
    noises = []
    for _ in range(5):
        before = [p.detach().clone() for p in params]
        grads = [torch.randn(p.shape, generator=g, dtype=torch.float64) for p in params]
        for p, gr in zip(params, grads):
            p.grad = gr.clone()
        opt.step()
        n = torch.cat([((b - p.detach()) / lr - gr).reshape(-1)
                       for b, p, gr in zip(before, params, grads)])
        assert float(n.norm()) == pytest.approx(radius, rel=1e-12)
        assert float(n[:3].norm()) < radius  # one sphere over both tensors, not one each
        noises.append(n)
    assert not torch.allclose(noises[0], noises[1])


# ---------------------------------------------------------------------------------- randomness
@pytest.mark.parametrize("name", STOCHASTIC)
def test_same_seed_same_trajectory_other_seed_differs(name):
    hp = {"inner_steps": 3} if name == "entropy-sgd" else {}
    a = trajectory(name, 4, seed=0, **hp)
    b = trajectory(name, 4, seed=0, **hp)
    c = trajectory(name, 4, seed=1, **hp)
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert not torch.equal(a[-1], c[-1])


def test_global_rng_is_untouched():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    trajectory("sgld", 2)
    trajectory("perturbed-sgd", 2)
    model, loss_fn, x, y = tiny_problem()  # re-seeds; measure from here instead
    torch.manual_seed(123)
    opt = make_optimizer("entropy-sgd", model.parameters(), inner_steps=2)
    train_step(opt, model, loss_fn, x, y)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("name", ["sgld", "entropy-sgd"])
def test_state_dict_resumes_the_noise_and_the_scope(name):
    hp = {"inner_steps": 2} if name == "entropy-sgd" else {}
    model, loss_fn, x, y = tiny_problem()
    opt = make_optimizer(name, model.parameters(), seed=0, **hp)
    for _ in range(3):
        train_step(opt, model, loss_fn, x, y)
    state = opt.state_dict()
    snapshot = nn.utils.parameters_to_vector(model.parameters()).detach().clone()
    for _ in range(3):
        train_step(opt, model, loss_fn, x, y)
    unbroken = nn.utils.parameters_to_vector(model.parameters()).detach().clone()

    resumed_model, *_ = tiny_problem()
    nn.utils.vector_to_parameters(snapshot, resumed_model.parameters())
    resumed = make_optimizer(name, resumed_model.parameters(), seed=99, **hp)
    resumed.load_state_dict(state)
    for _ in range(3):
        train_step(resumed, resumed_model, loss_fn, x, y)
    assert torch.equal(nn.utils.parameters_to_vector(resumed_model.parameters()), unbroken)
    if name == "entropy-sgd":
        assert resumed.gamma == opt.gamma
