"""Optimizers the studies compare, behind one training-step protocol.

``make_optimizer(name, params, seed=0, **hparams)`` builds an optimizer from ``OPTIMIZERS``;
``train_step(optimizer, model, loss_fn, inputs, targets)`` performs one update on a minibatch and
returns its loss. So far the registry holds torch's first-order optimizers; the noise-injection and
second-order optimizers of the studies are still to come.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn

OPTIMIZERS: dict[str, tuple[Callable, dict]] = {
    "sgd": (torch.optim.SGD, {"lr": 0.1}),
    "momentum": (torch.optim.SGD, {"lr": 0.05, "momentum": 0.9}),
    "adam": (torch.optim.Adam, {"lr": 1e-3}),
    "rmsprop": (torch.optim.RMSprop, {"lr": 1e-3}),
    "adagrad": (torch.optim.Adagrad, {"lr": 1e-2}),
}
OPTIMIZER_HELP = {
    "sgd": "plain SGD (lr 0.1)",
    "momentum": "SGD with heavy-ball momentum (lr 0.05, momentum 0.9)",
    "adam": "Adam (lr 1e-3)",
    "rmsprop": "RMSprop (lr 1e-3)",
    "adagrad": "Adagrad (lr 1e-2)",
}


def make_optimizer(name: str, params: Iterable[nn.Parameter], *, seed: int = 0,
                   **hparams) -> torch.optim.Optimizer:
    """Optimizer ``name`` with its defaults overridden by ``hparams``; ``seed`` is for the
    stochastic ones (unused by the deterministic optimizers)."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")
    cls, defaults = OPTIMIZERS[name]
    return cls(params, **{**defaults, **hparams})


def train_step(optimizer: torch.optim.Optimizer, model: nn.Module,
               loss_fn: Callable[[Tensor, Tensor], Tensor], inputs: Tensor,
               targets: Tensor) -> float:
    """One update on a minibatch; returns the minibatch loss before the update."""
    optimizer.zero_grad()
    loss = loss_fn(model(inputs), targets)
    loss.backward()
    optimizer.step()
    return float(loss)
