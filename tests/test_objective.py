"""Objective: values, gradients, HVPs and dense Hessians against independent autograd oracles."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import parameters_to_vector

from landscape import objective as objective_module
from landscape.objective import DenseTooLargeError, NonFiniteLossError, Objective, resolve_device
from tests.conftest import mlp, reference_loss

CE = nn.functional.cross_entropy


@pytest.mark.parametrize("mode", objective_module.HVP_MODES)
def test_hessian_and_hvp_match_autograd(architecture, data, mode):
    _, model = architecture
    obj = Objective(model, CE, data, hvp_mode=mode, chunk_size=13)
    theta = obj.theta + 0.1 * torch.randn(obj.num_params, generator=torch.Generator().manual_seed(2),
                                           dtype=torch.float64)
    expected = torch.autograd.functional.hessian(reference_loss(model, *data), theta)
    torch.testing.assert_close(obj.hessian(theta), expected, rtol=1e-10, atol=1e-12)
    vectors = torch.randn(5, obj.num_params, dtype=torch.float64)
    torch.testing.assert_close(obj.hvp(theta, vectors), vectors @ expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(obj.hvp(theta, vectors[0]), expected @ vectors[0],
                               rtol=1e-10, atol=1e-12)


def test_hvp_matches_finite_differences_of_gradient(data):
    obj = Objective(mlp(nn.Tanh), CE, data)
    theta = obj.theta
    v = torch.randn(obj.num_params, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    v /= v.norm()
    h = 1e-4
    fd = (obj.grad(theta + h * v) - obj.grad(theta - h * v)) / (2 * h)
    torch.testing.assert_close(obj.hvp(theta, v), fd, rtol=1e-6, atol=1e-8)


def test_gradient_matches_finite_differences_of_loss(data):
    obj = Objective(mlp(nn.Tanh), CE, data)
    g = obj.grad(obj.theta)
    h = 1e-6
    for i in (0, 17, obj.num_params - 1):
        e = torch.zeros(obj.num_params, dtype=torch.float64)
        e[i] = h
        fd = (obj.loss(obj.theta + e) - obj.loss(obj.theta - e)) / (2 * h)
        assert float(fd) == pytest.approx(float(g[i]), rel=1e-6, abs=1e-9)


def test_chunking_does_not_change_results(data):
    x, y = data
    model = mlp(nn.Tanh)
    whole = Objective(model, CE, data)
    chunked = Objective(model, CE, data, chunk_size=7)
    uneven = Objective(model, CE, [(x[:3], y[:3]), (x[3:30], y[3:30]), (x[30:], y[30:])])
    theta = whole.theta
    v = torch.randn(3, whole.num_params, dtype=torch.float64)
    for other in (chunked, uneven):
        torch.testing.assert_close(other.loss(theta), whole.loss(theta), rtol=1e-13, atol=0)
        torch.testing.assert_close(other.grad(theta), whole.grad(theta), rtol=1e-12, atol=1e-15)
        torch.testing.assert_close(other.hvp(theta, v), whole.hvp(theta, v), rtol=1e-11,
                                   atol=1e-14)
    # the mean is weighted by chunk size, not an average of chunk means
    unweighted = sum(CE(model.double()(xb.double()), yb) for xb, yb in
                     [(x[:3], y[:3]), (x[3:], y[3:])]) / 2
    assert abs(float(unweighted) - float(whole.loss(theta))) > 1e-3


def test_loss_error_and_theta_order(data):
    x, y = data
    model = mlp(nn.Tanh)
    obj = Objective(model, CE, data, dtype=torch.float64)
    torch.testing.assert_close(obj.theta, parameters_to_vector(model.parameters()).double())
    with torch.no_grad():
        out = model.double()(x.double())
    assert float(obj.loss(obj.theta)) == pytest.approx(float(CE(out, y)), rel=1e-14)
    assert obj.error(obj.theta) == pytest.approx(float((out.argmax(1) != y).double().mean()))


def test_module_is_never_mutated(data):
    model = mlp(nn.Tanh).train()
    before = [p.detach().clone() for p in model.parameters()]
    obj = Objective(model, CE, data)
    obj.hessian(obj.theta + 1.0)
    obj.loss_and_grad(obj.theta - 1.0)
    assert model.training
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_l2_term_adds_to_loss_gradient_and_hessian(data):
    model = mlp(nn.Tanh)
    plain, reg = Objective(model, CE, data), Objective(model, CE, data, l2=0.3)
    theta = plain.theta
    assert float(reg.loss(theta) - plain.loss(theta)) == pytest.approx(
        0.15 * float(theta @ theta), rel=1e-12)
    torch.testing.assert_close(reg.grad(theta) - plain.grad(theta), 0.3 * theta)
    torch.testing.assert_close(reg.hessian(theta) - plain.hessian(theta),
                               0.3 * torch.eye(plain.num_params, dtype=torch.float64))


def test_batchnorm_and_dropout_use_eval_mode(data):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 5), nn.BatchNorm1d(5), nn.Tanh(),
                          nn.Dropout(0.5), nn.Linear(5, 3))
    model.train()
    model(data[0])  # give BatchNorm non-trivial running statistics
    obj = Objective(model, CE, data, chunk_size=9)
    reference = Objective(model, CE, data)
    model.eval()
    with torch.no_grad():
        expected = CE(model.double()(data[0].double()), data[1])
    assert float(obj.loss(obj.theta)) == pytest.approx(float(expected), rel=1e-13)
    torch.testing.assert_close(obj.hessian(obj.theta), reference.hessian(obj.theta))


def test_frozen_parameters_are_not_part_of_theta(data):
    model = mlp(nn.Tanh)
    model[1].weight.requires_grad_(False)
    obj = Objective(model, CE, data)
    assert obj.num_params == 6 + 6 * 3 + 3
    assert obj.fixed_names == ("1.weight",)


def test_bad_inputs_get_clear_errors(data):
    x, y = data
    model = mlp(nn.Tanh)
    with pytest.raises(ValueError, match="empty"):
        Objective(model, CE, (x[:0], y[:0]))
    with pytest.raises(ValueError, match="samples"):
        Objective(model, CE, (x, y[:5]))
    obj = Objective(model, CE, data)
    with pytest.raises(ValueError, match=r"shape \(123,\)"):
        obj.loss(torch.zeros(5, dtype=torch.float64))
    with pytest.raises(NonFiniteLossError):
        obj.loss(torch.full((obj.num_params,), float("nan"), dtype=torch.float64))
    not_scalar = Objective(model, lambda out, t: CE(out, t, reduction="none"), data)
    with pytest.raises(ValueError, match="scalar"):
        not_scalar.loss(not_scalar.theta)
    regression = Objective(model, nn.functional.mse_loss, (x, torch.randn(40, 3)))
    with pytest.raises(ValueError, match="class labels"):
        regression.error(regression.theta)
    with pytest.raises(TypeError, match="pair"):
        Objective(model, CE, 42)


def test_dense_request_too_large_is_refused_before_running(data, monkeypatch):
    obj = Objective(mlp(nn.Tanh), CE, data)
    monkeypatch.setattr(objective_module, "available_memory", lambda device: 1000)
    with pytest.raises(DenseTooLargeError, match="n=123.*extreme_eigenpairs"):
        obj.hessian(obj.theta)


def test_auto_device():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_hessian_equals_cpu(data):
    model = mlp(nn.Tanh)
    cpu = Objective(model, CE, data)
    gpu = Objective(model, CE, data, device="cuda")
    torch.testing.assert_close(gpu.hessian(gpu.theta.cuda()).cpu(), cpu.hessian(cpu.theta),
                               rtol=1e-10, atol=1e-12)


def test_functional_loss_works_under_torch_func_transforms(data):
    obj = Objective(mlp(nn.Tanh), CE, data, chunk_size=11, l2=0.1)
    theta = obj.theta
    torch.testing.assert_close(torch.func.grad(obj.functional_loss)(theta), obj.grad(theta))
    torch.testing.assert_close(torch.func.hessian(obj.functional_loss)(theta), obj.hessian(theta))


def test_loss_and_grad_under_torch_func_transforms_are_not_silent_zeros(architecture, data):
    """``torch.func.hessian(obj.loss)`` once returned zeros (loss ran under no_grad)."""
    _, model = architecture
    obj = Objective(model, CE, data)
    theta = obj.theta
    dense = obj.hessian(theta)
    assert float(dense.abs().max()) > 1e-3
    torch.testing.assert_close(torch.func.hessian(obj.loss)(theta), dense, rtol=1e-10,
                               atol=1e-12)
    torch.testing.assert_close(torch.func.jacrev(obj.grad)(theta), dense, rtol=1e-10,
                               atol=1e-12)
    v = torch.randn(obj.num_params, dtype=torch.float64,
                    generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(torch.func.vmap(obj.hvp, in_dims=(None, 0))(theta, dense[:3]),
                               dense[:3] @ dense, rtol=1e-9, atol=1e-11)
    batch = torch.stack([theta, theta + 0.1 * v])
    torch.testing.assert_close(torch.func.vmap(obj.loss)(batch),
                               torch.stack([obj.loss(t) for t in batch]))
    leaf = theta.clone().requires_grad_()
    obj.loss(leaf).backward()
    torch.testing.assert_close(leaf.grad, obj.grad(theta))


def test_dense_requests_under_a_transform_name_the_alternative(data):
    obj = Objective(mlp(nn.Tanh), CE, data)
    with pytest.raises(TypeError, match="functional_loss"):
        torch.func.grad(lambda t: obj.hessian(t).sum())(obj.theta)
    with pytest.raises(TypeError, match="functional_loss"):
        torch.func.grad(lambda t: torch.tensor(obj.error(t)))(obj.theta)


def test_mse_loss_falls_back_to_reverse_over_reverse():
    """torch 2.13 cannot take mse_loss's forward-mode derivative inside grad ("ZeroTensors are
    immutable"); the objective switches mode, says so, and gives the right Hessian."""
    x = torch.randn(30, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    obj = Objective(nn.Linear(4, 4), nn.functional.mse_loss, (x, x), hvp_mode="fwd-rev")
    with pytest.warns(RuntimeWarning, match="rev-rev"):
        dense = obj.hessian(obj.theta)
    assert obj.hvp_mode == "rev-rev"
    torch.testing.assert_close(dense, torch.func.hessian(obj.functional_loss)(obj.theta),
                               rtol=1e-10, atol=1e-12)
