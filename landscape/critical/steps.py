"""Shared plumbing of the critical-point methods: the step record and counted evaluations.

A method is an object with ``step(obj, state) -> Step | None``: given the current iterate it
proposes and (by its own acceptance rule) accepts a new one, or returns None when it cannot find an
acceptable step; it never moves θ on failure.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor

from landscape.linalg.regularised_ls import EigenSpace, KrylovSpace, eigen_space, krylov_space
from landscape.objective import NonFiniteLossError, Objective

SOLVERS = ("auto", "dense", "krylov")
DENSE_MAX_PARAMS = 2000


@dataclass(frozen=True)
class State:
    """An iterate: θ ``[n]``, L(θ), g = ∇L(θ) ``[n]``, Hg ``[n]`` and ‖g‖²."""

    theta: Tensor
    loss: float
    grad: Tensor
    hg: Tensor

    @property
    def grad_norm_sq(self) -> float:
        return float(self.grad.dot(self.grad))


@dataclass(frozen=True)
class Step:
    """An accepted step: the new θ with its loss and gradient, and what the method used.

    ``step_size``: line-search α (Newton-MR, GNM), damping μ (LM), γ (damped Newton) or the
    step length ‖Δθ‖ (eigenvector following).
    ``inner``: inner iterations (Krylov dimension or MINRES-QLP iterations).
    """

    theta: Tensor
    loss: float
    grad: Tensor
    step_size: float
    inner: int = 0
    info: dict = field(default_factory=dict)


class CountingObjective:
    """Proxy of an Objective that counts gradient evaluations and Hessian-vector products."""

    def __init__(self, obj: Objective):
        self.obj = obj
        self.n_grads = 0
        self.n_hvps = 0
        self.num_params = obj.num_params

    def loss_and_grad(self, theta: Tensor) -> tuple[Tensor, Tensor]:
        self.n_grads += 1
        return self.obj.loss_and_grad(theta)

    def try_loss_and_grad(self, theta: Tensor) -> tuple[float, Tensor] | None:
        """(L, g) at a trial point, or None where they are not finite (a rejected trial)."""
        try:
            loss, grad = self.loss_and_grad(theta)
        except NonFiniteLossError:
            return None
        return float(loss), grad

    def hvp(self, theta: Tensor, vectors: Tensor) -> Tensor:
        self.n_hvps += 1 if vectors.ndim == 1 else vectors.shape[0]
        return self.obj.hvp(theta, vectors)

    def hessian(self, theta: Tensor) -> Tensor:
        self.n_hvps += self.num_params
        return self.obj.hessian(theta)


def newton_space(obj: CountingObjective | Objective, theta: Tensor, grad: Tensor, *,
                 solver: str = "auto", max_dim: int = 200,
                 rtol: float = 1e-10) -> EigenSpace | KrylovSpace:
    """Where the Newton-type systems ``H p ≈ −g`` at θ are solved.

    ``"dense"``: H's eigenbasis (n HVPs in blocks, exact solves); ``"krylov"``: ``K_k(H, g)`` with
    ``k ≤ max_dim`` (matrix-free); ``"auto"``: dense up to ``DENSE_MAX_PARAMS`` parameters, where
    one batched dense build costs less than a sequential Krylov run.
    """
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}; got {solver!r}")
    if solver == "dense" or (solver == "auto" and obj.num_params <= DENSE_MAX_PARAMS):
        return eigen_space(obj.hessian(theta), grad)
    return krylov_space(lambda V: obj.hvp(theta, V), grad, max_dim=max_dim, rtol=rtol)
