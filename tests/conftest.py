"""Shared fixtures: small networks and data on which exact answers can be computed densely."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.func import functional_call


def mlp(activation: type[nn.Module]) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 6), activation(), nn.Linear(6, 3))


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=1), nn.Tanh(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(2 * 2 * 2, 3),
    )


ARCHITECTURES = {"mlp-tanh": lambda: mlp(nn.Tanh), "mlp-relu": lambda: mlp(nn.ReLU),
                 "cnn": small_cnn}


@pytest.fixture(params=sorted(ARCHITECTURES))
def architecture(request) -> tuple[str, nn.Module]:
    return request.param, ARCHITECTURES[request.param]()


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module of tiny models (thread start-up dominates their backward
    passes on a loaded machine); use with ``pytest.mark.usefixtures("one_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def data() -> tuple[torch.Tensor, torch.Tensor]:
    """40 samples of 1×4×4 inputs with 3 classes."""
    g = torch.Generator().manual_seed(1)
    return torch.randn(40, 1, 4, 4, generator=g), torch.randint(0, 3, (40,), generator=g)


def reference_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
    """Full-batch loss as a function of flat θ, written independently of the Objective."""
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    module = model.double().eval()

    def loss(theta):
        params, offset = {}, 0
        for name, shape in zip(names, shapes):
            size = math.prod(shape)
            params[name] = theta[offset:offset + size].reshape(shape)
            offset += size
        return nn.functional.cross_entropy(functional_call(module, params, (x.double(),)), y)

    return loss
