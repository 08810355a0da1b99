"""Optimizers the studies compare, behind one training-step protocol.

Owns the registry (``OPTIMIZERS``, ``OPTIMIZER_HELP``, ``make_optimizer``) and the uniform
training step ``train_step``. One algorithm per module, named after its source:
``ge2015perturbed_sgd`` (noisy SGD), ``welling2011sgld`` (SGLD), ``chaudhari2017entropy_sgd``
(Entropy-SGD), ``zhang2015easgd`` (elastic averaging SGD), ``foret2021sam`` (SAM and ASAM),
``dauphin2014sfn`` (saddle-free Newton, exact and Krylov), ``damped_newton`` (the Newton
baseline), ``amari1998natural_gradient`` (natural gradient with the GGN as Fisher, exact and CG);
``base`` holds the protocol's plumbing. The first-order baselines are torch's own. Imports the
numerics (``Objective``, Lanczos) and nothing from storage, tracking or plotting.

The step protocol
-----------------
A training loop calls, for every registry optimizer alike::

    loss = train_step(optimizer, model, loss_fn, inputs, targets)   # float, loss before update

which is ``optimizer.zero_grad(); optimizer.step(BatchClosure(model, loss_fn, inputs, targets))``.
``BatchClosure()`` clears the gradients, recomputes the minibatch loss and back-propagates
(first-order optimizers call it once, SAM / ASAM twice, Entropy-SGD L times); its ``model`` /
``loss_fn`` / ``batch`` attributes let EASGD split the minibatch among its workers and the
second-order optimizers (``sfn``, ``sfn-krylov``, ``damped-newton``, ``natural-gradient``,
``natural-gradient-cg``) build an ``Objective`` on the minibatch (float64, model copy in
``eval()`` mode), step on the flat θ and write θ back into the parameters in place. Those accept an
``objective_factory(batch) -> Objective`` instead, e.g. to step on the full training set or to add
an L2 term. Every optimizer in the registry therefore needs the parameters in
``model.parameters()`` order (``make_optimizer(name, model.parameters())``).

Defaults (override any through ``**hparams``):

===================  ========================  ============================================
name                 class                     defaults
===================  ========================  ============================================
sgd                  torch.optim.SGD           lr 0.1, momentum 0
momentum             torch.optim.SGD           lr 0.05, momentum 0.9
adam                 torch.optim.Adam          lr 1e-3 (torch's betas and eps)
rmsprop              torch.optim.RMSprop       lr 1e-3
adagrad              torch.optim.Adagrad       lr 1e-2
perturbed-sgd        PerturbedSGD              lr 0.1, noise radius 0.1
sgld                 SGLD                      lr 0.1, temperature 1e-4
entropy-sgd          EntropySGD                lr 1/gamma0, gamma0 1e-4, gamma1 1e-3, L 20,
                                               inner_lr 0.1, noise ε 1e-4, alpha 0.75
easgd                EASGD                     lr 0.1, workers 4, rho 0.9/(workers·lr)
                                               (β = 0.9; rho 2.25 at these defaults)
sam                  SAM                       lr 0.1, rho 0.05, momentum 0
asam                 SAM                       lr 0.1, rho 0.5, eta 0.01, momentum 0,
                                               adaptive
sfn                  SaddleFreeNewton          lr 1, dampings ``DEFAULT_DAMPINGS``, mode exact
sfn-krylov           SaddleFreeNewton          lr 1, dampings ``DEFAULT_DAMPINGS``,
                                               krylov_dim 20
damped-newton        DampedNewton              lr 1, dampings ``DEFAULT_DAMPINGS``
natural-gradient     NaturalGradient           lr 1, dampings ``DEFAULT_DAMPINGS``, mode exact
natural-gradient-cg  NaturalGradient           lr 1, dampings ``DEFAULT_DAMPINGS``, mode cg,
                                               cg_iterations 20
===================  ========================  ============================================

The second-order optimizers share one damping grid, tried at every step (lowest loss wins):

    >>> DEFAULT_DAMPINGS
    (0.001, 0.01, 0.1, 1.0, 10.0)

Example:
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
    >>> x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    >>> for name in ("sgd", "sgld", "sfn"):
    ...     opt = make_optimizer(name, net.parameters(), seed=0)
    ...     loss = train_step(opt, net, nn.functional.cross_entropy, x, y)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from landscape.optim.amari1998natural_gradient import NaturalGradient, natural_gradient_step
from landscape.optim.base import (
    DEFAULT_DAMPINGS,
    BatchClosure,
    NewtonStep,
    ObjectiveFactory,
    grid_label,
)
from landscape.optim.chaudhari2017entropy_sgd import EntropySGD
from landscape.optim.damped_newton import DampedNewton, damped_newton_step
from landscape.optim.dauphin2014sfn import SaddleFreeNewton, saddle_free_newton_step
from landscape.optim.foret2021sam import SAM
from landscape.optim.ge2015perturbed_sgd import PerturbedSGD
from landscape.optim.welling2011sgld import SGLD
from landscape.optim.zhang2015easgd import EASGD

__all__ = [
    "DEFAULT_DAMPINGS",
    "EASGD",
    "OPTIMIZERS",
    "OPTIMIZER_HELP",
    "SAM",
    "SGLD",
    "BatchClosure",
    "DampedNewton",
    "EntropySGD",
    "NaturalGradient",
    "NewtonStep",
    "OptimizerSpec",
    "PerturbedSGD",
    "SaddleFreeNewton",
    "damped_newton_step",
    "make_optimizer",
    "natural_gradient_step",
    "saddle_free_newton_step",
    "train_step",
]


@dataclass(frozen=True)
class OptimizerSpec:
    """A registry entry: the class, its default hyperparameters and a one-line description.

    ``seeded``: the class takes ``seed``; ``second_order``: it takes ``objective_factory``.
    """

    cls: Callable[..., torch.optim.Optimizer]
    defaults: dict = field(default_factory=dict)
    help: str = ""
    seeded: bool = False
    second_order: bool = False


OPTIMIZERS: dict[str, OptimizerSpec] = {
    "sgd": OptimizerSpec(torch.optim.SGD, {"lr": 0.1}, "plain SGD (lr 0.1)"),
    "momentum": OptimizerSpec(torch.optim.SGD, {"lr": 0.05, "momentum": 0.9},
                              "SGD with heavy-ball momentum (lr 0.05, momentum 0.9)"),
    "adam": OptimizerSpec(torch.optim.Adam, {"lr": 1e-3}, "Adam (lr 1e-3)"),
    "rmsprop": OptimizerSpec(torch.optim.RMSprop, {"lr": 1e-3}, "RMSprop (lr 1e-3)"),
    "adagrad": OptimizerSpec(torch.optim.Adagrad, {"lr": 1e-2}, "Adagrad (lr 1e-2)"),
    "perturbed-sgd": OptimizerSpec(
        PerturbedSGD, {"lr": 0.1, "noise": 0.1},
        "SGD + noise uniform on a sphere, Ge et al. 2015 (lr 0.1, noise radius 0.1)", seeded=True),
    "sgld": OptimizerSpec(
        SGLD, {"lr": 0.1, "temperature": 1e-4},
        "Langevin dynamics, Welling & Teh 2011 (lr 0.1, temperature 1e-4; 1/N = posterior)",
        seeded=True),
    "entropy-sgd": OptimizerSpec(
        EntropySGD, {"gamma0": 1e-4, "gamma1": 1e-3, "inner_steps": 20, "inner_lr": 0.1,
                     "noise": 1e-4, "alpha": 0.75},
        "Entropy-SGD, Chaudhari et al. 2017 (L 20 inner steps at 0.1, gamma 1e-4·1.001^t, "
        "lr 1/gamma0)", seeded=True),
    "easgd": OptimizerSpec(
        EASGD, {"lr": 0.1, "workers": 4},
        "elastic averaging SGD, Zhang et al. 2015, 4 vectorised workers on minibatch shards, "
        "the model is the centre (lr 0.1, beta 0.9)"),
    "sam": OptimizerSpec(
        SAM, {"lr": 0.1, "rho": 0.05},
        "sharpness-aware minimisation, Foret et al. 2021 (lr 0.1, rho 0.05)"),
    "asam": OptimizerSpec(
        SAM, {"lr": 0.1, "rho": 0.5, "adaptive": True, "eta": 0.01},
        "adaptive SAM, Kwon et al. 2021, ball scaled by |w| + eta (lr 0.1, rho 0.5, eta 0.01)"),
    "sfn": OptimizerSpec(
        SaddleFreeNewton, {"lr": 1.0, "mode": "exact"},
        "saddle-free Newton -|H|^-1 g, Dauphin et al. 2014, dense Hessian (damping grid "
        f"{grid_label(DEFAULT_DAMPINGS)})", seeded=True, second_order=True),
    "sfn-krylov": OptimizerSpec(
        SaddleFreeNewton, {"lr": 1.0, "mode": "krylov", "krylov_dim": 20},
        "saddle-free Newton in a 20-vector Lanczos space (damping grid "
        f"{grid_label(DEFAULT_DAMPINGS)})", seeded=True, second_order=True),
    "damped-newton": OptimizerSpec(
        DampedNewton, {"lr": 1.0},
        "damped Newton -(H + mI)^-1 g, dense, attracted to saddles (damping grid "
        f"{grid_label(DEFAULT_DAMPINGS)})", seeded=True, second_order=True),
    "natural-gradient": OptimizerSpec(
        NaturalGradient, {"lr": 1.0, "mode": "exact"},
        "natural gradient -(F + mI)^-1 g, Amari 1998, dense GGN as Fisher (damping grid "
        f"{grid_label(DEFAULT_DAMPINGS)})", seeded=True, second_order=True),
    "natural-gradient-cg": OptimizerSpec(
        NaturalGradient, {"lr": 1.0, "mode": "cg", "cg_iterations": 20},
        "natural gradient by 20 conjugate-gradient steps on GGN-vector products (damping grid "
        f"{grid_label(DEFAULT_DAMPINGS)})", seeded=True, second_order=True),
}
OPTIMIZER_HELP: dict[str, str] = {name: spec.help for name, spec in OPTIMIZERS.items()}


def make_optimizer(name: str, params: Iterable[nn.Parameter], *,
                   objective_factory: ObjectiveFactory | None = None, seed: int = 0,
                   **hparams) -> torch.optim.Optimizer:
    """Optimizer ``name`` from ``OPTIMIZERS`` with its defaults overridden by ``hparams``.

    Args:
        name: a key of ``OPTIMIZERS``.
        params: the model's parameters, in ``model.parameters()`` order.
        objective_factory: second-order optimizers only: ``factory(batch) -> Objective`` to step
            on instead of the minibatch objective built from the closure.
        seed: seeds the private generator of the stochastic optimizers (unused by the others).
        **hparams: keyword arguments of the optimizer's class.
    """
    spec = OPTIMIZERS.get(name)
    if spec is None:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")
    kwargs = {**spec.defaults, **hparams}
    if spec.seeded:
        kwargs["seed"] = seed
    if objective_factory is not None:
        if not spec.second_order:
            second = [n for n, s in OPTIMIZERS.items() if s.second_order]
            raise ValueError(f"objective_factory is used only by the second-order optimizers "
                             f"({', '.join(second)}); got it for {name!r}")
        kwargs["objective_factory"] = objective_factory
    try:
        return spec.cls(params, **kwargs)
    except TypeError as err:
        raise TypeError(f"bad hyperparameters for optimizer {name!r} ({kwargs}): {err}") from err


def train_step(optimizer: torch.optim.Optimizer, model: nn.Module,
               loss_fn: Callable[[Tensor, Tensor], Tensor], inputs: Tensor,
               targets: Tensor) -> float:
    """One update of any registry optimizer on a minibatch; returns the minibatch loss before it.

    The second-order optimizers report the loss of their ``Objective`` (float64, model in
    ``eval()`` mode), the others the loss the closure computed in the model's current mode.
    """
    optimizer.zero_grad(set_to_none=True)
    loss = optimizer.step(BatchClosure(model, loss_fn, inputs, targets))
    return float(loss)
