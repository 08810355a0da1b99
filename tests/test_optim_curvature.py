"""The GGN of ``Objective`` and the optimizers built on curvature, neighbours or the sharpness
ball: natural gradient (exact and CG), EASGD, SAM and ASAM — each against a closed-form or
independently computed oracle (dense Jacobians, the Fisher from log-softmax, scipy's CG,
torch's SGD, the update rules written out by hand)."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import scipy.sparse.linalg
import torch
from torch import nn
from torch.autograd.functional import hessian, jacobian
from torch.func import functional_call

from landscape.objective import Objective
from landscape.optim import (
    EASGD,
    SAM,
    BatchClosure,
    make_optimizer,
    natural_gradient_step,
    train_step,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_net(dtype=torch.float64) -> nn.Module:
    """3 → 4 → 2 tanh MLP, 26 parameters."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).to(dtype)


def data(kind: str, n: int = 10, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g, dtype=torch.float64)
    if kind == "cross-entropy":
        return x, torch.randint(0, 2, (n,), generator=g)
    return x, torch.randn(n, 2, generator=g, dtype=torch.float64)


LOSSES = {"cross-entropy": nn.functional.cross_entropy, "mse": nn.functional.mse_loss}


def flat(model: nn.Module) -> torch.Tensor:
    return nn.utils.parameters_to_vector(model.parameters()).detach().clone()


def output_fn(model: nn.Module, x: torch.Tensor):
    """θ ↦ model outputs on x, written independently of the Objective."""
    names = [name for name, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]

    def outputs(theta):
        parts = theta.split([math.prod(s) for s in shapes])
        params = {n: t.reshape(s) for n, t, s in zip(names, parts, shapes)}
        return functional_call(model, params, (x,))
    return outputs


def dense_ggn(model, loss_fn, x, y, l2=0.0) -> torch.Tensor:
    """Jᵀ H J + l2 I on the whole batch from dense autograd Jacobians and Hessians."""
    outputs, theta = output_fn(model, x), flat(model)
    out = outputs(theta)
    jac = jacobian(lambda t: outputs(t).reshape(-1), theta)  # [N·C, n]
    h_out = hessian(lambda o: loss_fn(o.reshape(out.shape), y), out.reshape(-1).detach())
    return jac.T @ h_out @ jac + l2 * torch.eye(theta.numel(), dtype=theta.dtype)


def true_fisher(model, x) -> torch.Tensor:
    """E_x Σ_c p_c ∇log p_c ∇log p_cᵀ: the Fisher of the categorical predictive distribution."""
    outputs, theta = output_fn(model, x), flat(model)
    log_p = torch.log_softmax(outputs(theta), dim=1).detach()
    jac = jacobian(lambda t: torch.log_softmax(outputs(t), dim=1), theta)  # [N, C, n]
    weighted = jac * log_p.exp().sqrt().unsqueeze(-1)
    return torch.einsum("ncp,ncq->pq", weighted, weighted) / x.shape[0]


def full_grad(model, loss_fn, x, y) -> torch.Tensor:
    model = copy.deepcopy(model)
    model.zero_grad()
    loss_fn(model(x), y).backward()
    return torch.cat([p.grad.reshape(-1) for p in model.parameters()])


# ---------------------------------------------------------------------------------- GGN
@pytest.mark.parametrize("kind", sorted(LOSSES))
def test_ggn_vp_matches_the_dense_jacobian_ggn_across_chunks_with_l2(kind):
    model, (x, y), loss_fn = tiny_net(), data(kind), LOSSES[kind]
    expected = dense_ggn(model, loss_fn, x, y, l2=0.1)
    obj = Objective(model, loss_fn, (x, y), chunk_size=4, l2=0.1,  # chunks of 4, 4, 2
                    hvp_mode="rev-rev")
    theta = obj.theta
    vectors = torch.randn(3, obj.num_params, generator=torch.Generator().manual_seed(2),
                          dtype=torch.float64)
    assert torch.allclose(obj.ggn_vp(theta, vectors), vectors @ expected, atol=1e-12, rtol=0)
    single = obj.ggn_vp(theta, vectors[0])
    assert single.shape == (obj.num_params,)
    assert torch.allclose(single, expected @ vectors[0], atol=1e-12, rtol=0)
    op = obj.ggn_op(theta)
    assert torch.allclose(op.dense(), expected, atol=1e-12, rtol=0)
    assert op.n_matvecs == obj.num_params
    assert torch.allclose(obj.ggn(theta), expected, atol=1e-12, rtol=0)
    assert torch.linalg.eigvalsh(expected).min() > 0.1 - 1e-10  # PSD GGN + l2 I
    # the tanh net's Hessian has the second-order model term: the oracle can tell them apart
    assert (obj.hessian(theta) - expected).abs().max() > 1e-3


def test_ggn_is_the_fisher_for_cross_entropy():
    model, (x, y) = tiny_net(), data("cross-entropy", n=12)
    obj = Objective(model, nn.functional.cross_entropy, (x, y))
    assert torch.allclose(obj.ggn(obj.theta), true_fisher(model, x), atol=1e-12, rtol=0)


def test_ggn_equals_the_hessian_for_a_linear_model_with_squared_error():
    torch.manual_seed(0)
    model = nn.Linear(3, 2).double()
    x, y = data("mse")
    obj = Objective(model, nn.functional.mse_loss, (x, y), chunk_size=3, l2=0.05,
                    hvp_mode="rev-rev")
    assert torch.allclose(obj.ggn(obj.theta), obj.hessian(obj.theta), atol=1e-13, rtol=0)


def test_ggn_vp_refuses_bad_vectors():
    obj = Objective(tiny_net(), nn.functional.cross_entropy, data("cross-entropy"))
    with pytest.raises(ValueError, match="n=26"):
        obj.ggn_vp(obj.theta, torch.zeros(3, 5))


# ---------------------------------------------------------------------------------- natural gradient
def test_natural_gradient_step_is_minus_lr_damped_fisher_inverse_gradient():
    model, (x, y) = tiny_net(), data("cross-entropy", n=12)
    loss_fn = nn.functional.cross_entropy
    theta, g = flat(model), full_grad(model, loss_fn, x, y)
    fisher = true_fisher(model, x)
    eye = torch.eye(theta.numel(), dtype=torch.float64)
    expected = theta - 0.5 * torch.linalg.solve(fisher + 0.1 * eye, g)
    for name in ("natural-gradient", "natural-gradient-cg"):
        net = copy.deepcopy(model)
        opt = make_optimizer(name, net.parameters(), lr=0.5, damping=0.1, cg_iterations=26)
        loss = train_step(opt, net, loss_fn, x, y)
        assert loss == pytest.approx(float(loss_fn(model(x), y).detach()), rel=1e-6)  # float32 report
        assert torch.allclose(flat(net), expected, atol=1e-10, rtol=0), name
        assert opt.last_step.damping == 0.1
    assert (expected - (theta - 0.5 * g)).abs().max() > 1e-2  # not a gradient step


def test_cg_iterates_match_scipy_cg_for_every_damping_of_the_grid():
    model, (x, y) = tiny_net(), data("cross-entropy", n=12)
    obj = Objective(model, nn.functional.cross_entropy, (x, y))
    theta, fisher = obj.theta, obj.ggn(obj.theta).numpy()
    g = obj.grad(theta).numpy()
    eye = np.eye(obj.num_params)
    for lam in (0.03, 0.1):  # condition numbers 26 and 8.5; one Krylov basis serves both
        step = natural_gradient_step(obj, theta, damping=lam, mode="cg", cg_iterations=3)
        reference, info = scipy.sparse.linalg.cg(fisher + lam * eye, g, x0=np.zeros_like(g),
                                                 rtol=0.0, atol=0.0, maxiter=3)
        assert info == 3  # three iterations, not converged: the iterate itself is compared
        assert np.allclose((theta - step.theta).numpy(), reference, atol=1e-12, rtol=0)
        exact = np.linalg.solve(fisher + lam * eye, g)
        assert not np.allclose(reference, exact, atol=1e-6)
        full = natural_gradient_step(obj, theta, damping=lam, mode="cg", cg_iterations=100)
        assert np.allclose((theta - full.theta).numpy(), exact, atol=1e-10, rtol=0)


def test_natural_gradient_validates_its_arguments():
    params = [nn.Parameter(torch.zeros(2))]
    with pytest.raises(ValueError, match="mode"):
        make_optimizer("natural-gradient", params, mode="kfac")
    with pytest.raises(ValueError, match="cg_iterations"):
        make_optimizer("natural-gradient-cg", params, cg_iterations=0)
    assert make_optimizer("natural-gradient-cg", params).defaults["cg_iterations"] == 20


# ---------------------------------------------------------------------------------- EASGD
def minibatches(count, size, seed=3):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(size, 3, generator=g, dtype=torch.float64),
             torch.randint(0, 2, (size,), generator=g)) for _ in range(count)]


def test_easgd_with_one_decoupled_worker_is_sgd():
    model, loss_fn = tiny_net(), nn.functional.cross_entropy
    centre0 = flat(model)
    reference = copy.deepcopy(model)
    easgd = EASGD(model.parameters(), lr=0.3, workers=1, rho=0.0)
    sgd = torch.optim.SGD(reference.parameters(), lr=0.3)
    for x, y in minibatches(4, 8):
        loss = train_step(easgd, model, loss_fn, x, y)
        assert loss == pytest.approx(train_step(sgd, reference, loss_fn, x, y), rel=1e-14)
    worker = torch.cat([easgd.state[p]["workers"][0].reshape(-1) for p in model.parameters()])
    assert torch.allclose(worker, flat(reference), atol=1e-14, rtol=0)
    assert torch.equal(flat(model), centre0)  # ρ = 0: the centre never moves


def test_easgd_updates_workers_and_centre_as_written_out_by_hand():
    torch.manual_seed(0)
    model = nn.Linear(3, 1).double()
    lr, rho, p = 0.1, 0.7, 2
    opt = EASGD(model.parameters(), lr=lr, workers=p, rho=rho)
    assert opt.beta == pytest.approx(p * lr * rho)
    g = torch.Generator().manual_seed(4)
    batches = [(torch.randn(n, 3, generator=g, dtype=torch.float64),
                torch.randn(n, 1, generator=g, dtype=torch.float64)) for n in (8, 9)]

    def shard_loss_and_grad(w, x, y):  # w = (weight [1, 3], bias [1]); mean squared error
        r = x @ w[0].T + w[1] - y
        return float((r**2).mean()), (2 * r.T @ x / len(x), 2 * r.sum(0) / len(x))

    centre = (model.weight.detach().clone(), model.bias.detach().clone())
    start = centre[0]
    workers = [centre] * p
    for x, y in batches:
        m = len(x) // p  # the 9th sample of the second minibatch is left out
        results = [shard_loss_and_grad(w, x[i * m:(i + 1) * m], y[i * m:(i + 1) * m])
                   for i, w in enumerate(workers)]
        new_workers = [tuple(wk - lr * (gk + rho * (wk - ck)) for wk, gk, ck in zip(w, gr, centre))
                       for w, (_, gr) in zip(workers, results)]
        centre = tuple(ck + lr * rho * sum(w[k] - ck for w in workers)
                       for k, ck in enumerate(centre))
        workers = new_workers
        loss = train_step(opt, model, nn.functional.mse_loss, x, y)
        assert loss == pytest.approx(np.mean([value for value, _ in results]), rel=1e-12)
        assert torch.allclose(model.weight, centre[0], atol=1e-14, rtol=0)
        assert torch.allclose(model.bias, centre[1], atol=1e-14, rtol=0)
        for k, param in enumerate(model.parameters()):
            assert torch.allclose(opt.state[param]["workers"], torch.stack([w[k] for w in workers]),
                                  atol=1e-14, rtol=0)
    assert (model.weight - start).abs().max() > 1e-3  # the second step moved the centre


def test_easgd_defaults_and_refusals():
    model = tiny_net()
    opt = make_optimizer("easgd", model.parameters())
    assert opt.defaults["workers"] == 4 and opt.defaults["rho"] == pytest.approx(2.25)
    assert opt.beta == pytest.approx(0.9)
    # A minibatch smaller than p goes whole to every worker: from the centre, each takes the
    # same SGD step on it (the centre stays: every pull is zero at the first step).
    x, y = minibatches(1, 3)[0]
    expected = [p.detach() - 0.1 * g for p, g in zip(model.parameters(), torch.autograd.grad(
        nn.functional.cross_entropy(model(x), y), list(model.parameters())), strict=True)]
    train_step(opt, model, nn.functional.cross_entropy, x, y)
    for param, after in zip(model.parameters(), expected, strict=True):
        torch.testing.assert_close(opt.state[param]["workers"],
                                   after.expand(4, *after.shape), rtol=0, atol=1e-14)
    opt = make_optimizer("easgd", model.parameters())
    with pytest.raises(TypeError, match="BatchClosure"):
        opt.step(lambda: 0.0)
    bn = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2)).double()
    with pytest.raises(ValueError, match="buffers.*running_mean"):
        train_step(make_optimizer("easgd", bn.parameters()), bn, nn.functional.cross_entropy,
                   *minibatches(1, 8)[0])
    other = tiny_net()
    with pytest.raises(ValueError, match="trainable parameters"):
        opt.step(BatchClosure(other, nn.functional.cross_entropy, *minibatches(1, 8)[0]))
    with pytest.raises(ValueError, match="workers"):
        EASGD(model.parameters(), workers=0)


def test_easgd_state_dict_resumes_the_workers():
    loss_fn, batches = nn.functional.cross_entropy, minibatches(6, 8)
    model = tiny_net()
    opt = make_optimizer("easgd", model.parameters(), lr=0.5)
    for x, y in batches[:3]:
        train_step(opt, model, loss_fn, x, y)
    state, snapshot = copy.deepcopy(opt.state_dict()), flat(model)
    for x, y in batches[3:]:
        train_step(opt, model, loss_fn, x, y)

    def resume(load: bool) -> torch.Tensor:
        net = tiny_net()
        nn.utils.vector_to_parameters(snapshot, net.parameters())
        resumed = make_optimizer("easgd", net.parameters(), lr=0.5)
        if load:
            resumed.load_state_dict(copy.deepcopy(state))
        for x, y in batches[3:]:
            train_step(resumed, net, loss_fn, x, y)
        return flat(net)

    assert torch.equal(resume(load=True), flat(model))
    assert not torch.allclose(resume(load=False), flat(model))  # the workers matter


# ---------------------------------------------------------------------------------- SAM / ASAM
def recording_closure(model, loss_fn, x, y, calls):
    """A BatchClosure that records the flat parameters at every call."""
    inner = BatchClosure(model, loss_fn, x, y)

    def closure():
        calls.append(flat(model))
        return inner()
    return closure


def grad_at(model, theta, loss_fn, x, y) -> torch.Tensor:
    net = copy.deepcopy(model)
    nn.utils.vector_to_parameters(theta, net.parameters())
    return full_grad(net, loss_fn, x, y)


def test_sam_ascends_rho_along_the_gradient_then_steps_with_the_gradient_there():
    model, loss_fn, (x, y) = tiny_net(), nn.functional.cross_entropy, data("cross-entropy")
    theta, g = flat(model), full_grad(model, loss_fn, x, y)
    opt = make_optimizer("sam", model.parameters(), lr=0.3, rho=0.05)
    calls = []
    loss = opt.step(recording_closure(model, loss_fn, x, y, calls))
    assert len(calls) == 2 and torch.equal(calls[0], theta)
    eps = calls[1] - theta
    assert float(eps.norm()) == pytest.approx(0.05, rel=1e-12)
    assert torch.allclose(eps, 0.05 * g / g.norm(), atol=1e-15, rtol=0)
    assert opt.last_ascent_norm == pytest.approx(0.05, rel=1e-12)
    sam_grad = grad_at(model, theta + eps, loss_fn, x, y)
    assert torch.allclose(flat(model), theta - 0.3 * sam_grad, atol=1e-15, rtol=0)
    assert not torch.allclose(sam_grad, g, atol=1e-6)  # the step differs from SGD's
    assert float(loss) == pytest.approx(float(loss_fn(tiny_net()(x), y).detach()), rel=1e-14)
    assert all(p.grad is None for p in model.parameters())


def test_asam_ball_is_rho_in_the_normalised_metric_and_leaves_biases_unscaled():
    model, loss_fn, (x, y) = tiny_net(), nn.functional.cross_entropy, data("cross-entropy")
    theta, g = flat(model), full_grad(model, loss_fn, x, y)
    scale = torch.cat([(p.detach().abs() + 0.01 if p.ndim >= 2 else torch.ones_like(p))
                       .reshape(-1) for p in model.parameters()])  # T: |w| + η, 1 on biases
    opt = make_optimizer("asam", model.parameters())
    assert opt.defaults["rho"] == 0.5 and opt.defaults["eta"] == 0.01
    calls = []
    opt.step(recording_closure(model, loss_fn, x, y, calls))
    eps = calls[1] - theta
    assert torch.allclose(eps, 0.5 * scale**2 * g / (scale * g).norm(), atol=1e-14, rtol=0)
    assert float((eps / scale).norm()) == pytest.approx(0.5, rel=1e-12)
    assert opt.last_ascent_norm == pytest.approx(0.5, rel=1e-12)
    assert abs(float(eps.norm()) - 0.5) > 1e-2  # not SAM's Euclidean ball
    assert torch.allclose(flat(model), theta - 0.1 * grad_at(model, theta + eps, loss_fn, x, y),
                          atol=1e-15, rtol=0)


def test_sam_without_radius_is_torch_sgd_with_momentum():
    model, loss_fn = tiny_net(), nn.functional.cross_entropy
    reference = copy.deepcopy(model)
    sam = SAM(model.parameters(), lr=0.2, rho=0.0, momentum=0.9)
    sgd = torch.optim.SGD(reference.parameters(), lr=0.2, momentum=0.9)
    for x, y in minibatches(4, 8):
        train_step(sam, model, loss_fn, x, y)
        train_step(sgd, reference, loss_fn, x, y)
    assert torch.allclose(flat(model), flat(reference), atol=1e-15, rtol=0)
    assert sam.last_ascent_norm == 0.0


def test_sam_at_a_critical_point_does_not_move():
    w = nn.Parameter(torch.ones(2, 2, dtype=torch.float64))

    def closure():
        w.grad = torch.zeros_like(w)
        return torch.tensor(0.0)
    opt = SAM([w], adaptive=True)
    opt.step(closure)
    assert torch.equal(w.detach(), torch.ones(2, 2, dtype=torch.float64))
    assert opt.last_ascent_norm == 0.0
