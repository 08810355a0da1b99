"""The training-step protocol shared by every optimizer in ``landscape.optim``, and its plumbing.

Owns: ``BatchClosure`` (the one thing a training loop hands to ``optimizer.step``), the seeded
base class of the stochastic optimizers (an explicit ``torch.Generator``, saved in the state
dict), and the base class of the second-order optimizers, which turn the closure's minibatch into
an ``Objective``, take a step on the flat θ and write it back into the model's parameters — with
what those steps share: the damping grid ``DEFAULT_DAMPINGS``, the space the Newton systems are
solved in (``hessian_space``) and the grid search (``best_damping``). Imports the numerics
(``landscape.objective``, ``landscape.linalg``) and nothing from storage, tracking or plotting.

The protocol
------------
Every optimizer is called as ``loss = optimizer.step(closure)`` with ``closure`` a
``BatchClosure(model, loss_fn, inputs, targets)``:

* ``closure()`` clears the parameters' gradients, computes the minibatch loss in the model's
  current mode, back-propagates and returns the loss. First-order optimizers (torch's, perturbed
  SGD, SGLD) call it once; Entropy-SGD calls it once per inner Langevin step.
* ``closure.model``, ``closure.loss_fn`` and ``closure.batch`` give the second-order optimizers
  what they need to build an ``Objective`` on the minibatch (they never call ``closure()``).

``step`` returns the minibatch loss at the parameters *before* the update.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from landscape.linalg.regularised_ls import EigenSpace, eigen_space, krylov_space
from landscape.objective import NonFiniteLossError, Objective

LossFn = Callable[[Tensor, Tensor], Tensor]
ObjectiveFactory = Callable[[tuple[Tensor, Tensor]], Objective]
# The second-order optimizers' damping grid (SFN and damped Newton alike, for a like-for-like
# comparison): each value is tried and the lowest loss after the step wins.
DEFAULT_DAMPINGS = (1e-3, 1e-2, 1e-1, 1.0, 10.0)


@dataclass(frozen=True)
class BatchClosure:
    """The minibatch closure every ``landscape.optim`` optimizer accepts (see the module docs).

    Example:
        >>> net = nn.Linear(2, 1)
        >>> closure = BatchClosure(net, nn.functional.mse_loss, torch.ones(4, 2), torch.zeros(4, 1))
        >>> loss = closure()  # fills net.weight.grad
        >>> net.weight.grad.shape, closure.batch[0].shape
        (torch.Size([1, 2]), torch.Size([4, 2]))
    """

    model: nn.Module
    loss_fn: LossFn
    inputs: Tensor
    targets: Tensor

    @property
    def batch(self) -> tuple[Tensor, Tensor]:
        return self.inputs, self.targets

    def __call__(self) -> Tensor:
        self.model.zero_grad(set_to_none=True)
        with torch.enable_grad():
            loss = self.loss_fn(self.model(self.inputs), self.targets)
            loss.backward()
        return loss.detach()


class SeededOptimizer(torch.optim.Optimizer):
    """``torch.optim.Optimizer`` with a private CPU ``torch.Generator`` seeded from ``seed``.

    The global RNG is never touched. The generator's state (and whatever ``_extra_state``
    returns) is part of ``state_dict()``, so a resumed run draws the same noise as an unbroken one.
    Noise is drawn on the CPU and moved to the parameter's device, so a seed gives the same numbers
    on every device.
    """

    def __init__(self, params, defaults: dict, seed: int):
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise TypeError(f"seed must be an int; got {seed!r}")
        super().__init__(params, defaults)
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)

    @staticmethod
    def _closure_loss(closure) -> Tensor | None:
        """The closure's loss with gradients enabled (``step`` runs under ``no_grad``)."""
        if closure is None:
            return None
        with torch.enable_grad():
            return closure()

    def _randn_like(self, p: Tensor) -> Tensor:
        return torch.randn(p.shape, generator=self.generator, dtype=p.dtype).to(p.device)

    def _extra_state(self) -> dict:
        return {}

    def _load_extra_state(self, extra: dict) -> None:
        del extra

    def state_dict(self) -> dict:
        out = super().state_dict()
        out["landscape"] = {"generator": self.generator.get_state(), **self._extra_state()}
        return out

    def load_state_dict(self, state_dict: dict) -> None:
        state_dict = dict(state_dict)
        extra = dict(state_dict.pop("landscape", {}))
        super().load_state_dict(state_dict)
        if "generator" in extra:
            self.generator.set_state(extra.pop("generator"))
        self._load_extra_state(extra)


def check_positive(name: str, value: float, *, allow_zero: bool = False) -> float:
    """``value`` as a float, or ValueError naming ``name`` when it is negative (or zero)."""
    value = float(value)
    if not (value >= 0 if allow_zero else value > 0) or not math.isfinite(value):
        bound = "finite and non-negative" if allow_zero else "finite and positive"
        raise ValueError(f"{name} must be {bound}; got {value}")
    return value


def grid_label(grid: Sequence[float]) -> str:
    """``"min..max"`` of a damping grid, for help strings."""
    return f"{min(grid):g}..{max(grid):g}"


def check_dampings(damping: float | Sequence[float]) -> tuple[float, ...]:
    """A damping value or grid → a non-empty tuple of non-negative floats."""
    grid = (damping,) if isinstance(damping, (int, float)) else tuple(damping)
    if not grid or any(not (math.isfinite(float(d)) and float(d) >= 0) for d in grid):
        raise ValueError(f"damping must be a value >= 0 or a non-empty sequence of them; "
                         f"got {damping!r}")
    return tuple(float(d) for d in grid)


@dataclass(frozen=True)
class NewtonStep:
    """One second-order step on a flat θ.

    Attributes:
        theta: the new θ ``[n]`` (``θ_old + lr · Δ``).
        loss: L(θ_old) on the step's objective.
        damping: the damping used (the best of the grid when a grid was given).
        new_loss: L(θ_new) when a grid was searched (it is evaluated anyway), else None.
    """

    theta: Tensor
    loss: float
    damping: float
    new_loss: float | None


def hessian_space(obj: Objective, theta: Tensor, g: Tensor, *,
                  krylov_dim: int | None = None) -> EigenSpace:
    """Where the second-order optimizers solve ``(A + λI) Δ = −g``: H(θ)'s eigenbasis
    (``krylov_dim=None``: n HVPs for the dense Hessian and one ``eigh``), or the Ritz basis of
    the Krylov space ``K_k(H, g)``, ``k = min(krylov_dim, n)`` fully reorthogonalised Lanczos
    steps from g (k HVPs; fewer only when the space becomes invariant; g must be non-zero).
    Pass ``.absolute()`` of it to solve with ``|H|``.
    """
    if krylov_dim is None:
        return eigen_space(obj.hessian(theta), g)
    return krylov_space(obj.hessian_op(theta), g, max_dim=krylov_dim, rtol=0.0).ritz()


def best_damping(obj: Objective, theta: Tensor, loss: float, lr: float,
                 dampings: tuple[float, ...], space: EigenSpace) -> NewtonStep:
    """Try ``θ + lr · Δ(λ)``, ``Δ(λ) = −(A + λI)⁺ g`` solved in ``space`` (A: its matrix), for
    every λ in ``dampings`` and keep the lowest loss.

    A single damping is taken without evaluating the loss. Candidates whose loss is not finite are
    skipped; when all of them are, ``NonFiniteLossError`` is raised (the step would ruin the run).
    """
    def candidate_at(lam: float) -> Tensor:
        return theta + lr * space.to_full(space.shifted_solve(lam))

    if len(dampings) == 1:
        return NewtonStep(candidate_at(dampings[0]), loss, dampings[0], None)
    best: NewtonStep | None = None
    for lam in dampings:
        candidate = candidate_at(lam)
        try:
            value = float(obj.loss(candidate))
        except NonFiniteLossError:
            continue
        if best is None or value < best.new_loss:
            best = NewtonStep(candidate, loss, lam, value)
    if best is None:
        raise NonFiniteLossError(f"the loss is not finite after the step for every damping in "
                                 f"{dampings}; lower lr or raise the dampings")
    return best


class SecondOrderOptimizer(SeededOptimizer):
    """Base of the optimizers that step on a flat θ through an ``Objective`` of the minibatch.

    ``step(closure)`` builds the objective with ``objective_factory(closure.batch)`` when one was
    given, else ``Objective(closure.model, closure.loss_fn, closure.batch, dtype=dtype)`` on the
    parameters' device (that objective evaluates a copy of the model in ``eval()`` mode: dropout
    off, BatchNorm on running statistics). θ is read from the optimizer's parameters (one group,
    in ``model.parameters()`` order), the subclass's ``flat_step`` computes the new θ, and it is
    copied back into the parameters in place (``copy_`` under ``no_grad``, so the parameter
    objects and their dtype stay the same). The last ``NewtonStep`` is kept in ``last_step``.
    """

    def __init__(self, params, defaults: dict, *, objective_factory: ObjectiveFactory | None,
                 dtype: torch.dtype, seed: int):
        super().__init__(params, defaults, seed)
        if len(self.param_groups) != 1:
            raise ValueError("second-order optimizers act on all parameters jointly; pass one "
                             f"parameter group, not {len(self.param_groups)}")
        if objective_factory is not None and not callable(objective_factory):
            raise TypeError(f"objective_factory must be callable; got {objective_factory!r}")
        if not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating type; got {dtype}")
        self.objective_factory = objective_factory
        self.dtype = dtype
        self.last_step: NewtonStep | None = None

    def _params(self) -> list[Tensor]:
        return list(self.param_groups[0]["params"])

    def _objective(self, closure) -> Objective:
        if self.objective_factory is not None:
            batch = getattr(closure, "batch", None)
            return self.objective_factory(batch)
        missing = [a for a in ("model", "loss_fn", "batch") if not hasattr(closure, a)]
        if missing:
            raise TypeError(
                f"{type(self).__name__}.step needs the minibatch: pass a "
                "landscape.optim.BatchClosure(model, loss_fn, inputs, targets) (or build the "
                f"optimizer with an objective_factory); the closure given lacks {missing}"
            )
        params = self._params()
        trainable = [p for p in closure.model.parameters() if p.requires_grad]
        if len(trainable) != len(params) or any(a is not b for a, b in zip(trainable, params)):
            raise ValueError(
                f"{type(self).__name__} must hold exactly the model's trainable parameters, in "
                "model.parameters() order (θ is the flat vector of all of them)"
            )
        return Objective(closure.model, closure.loss_fn, closure.batch, dtype=self.dtype,
                         device=params[0].device)

    # The step on the flat θ, ``(obj, theta, **hyperparameters) -> NewtonStep``: each subclass
    # sets it (as a staticmethod); it is called with the group's values of ``defaults``' keys.
    flat_step: Callable[..., NewtonStep]

    def _flat_step(self, obj: Objective, theta: Tensor) -> NewtonStep:
        group = self.param_groups[0]
        return self.flat_step(obj, theta, **{name: group[name] for name in self.defaults})

    @torch.no_grad()
    def step(self, closure=None) -> Tensor:
        if closure is None:
            raise TypeError(f"{type(self).__name__}.step needs a BatchClosure; see "
                            "landscape.optim.train_step")
        obj = self._objective(closure)
        params = self._params()
        theta = torch.cat([p.detach().reshape(-1).to(obj.device, obj.dtype) for p in params])
        if theta.numel() != obj.num_params:
            raise ValueError(f"the objective has {obj.num_params} parameters but the optimizer "
                             f"holds {theta.numel()}")
        result = self._flat_step(obj, theta)
        offset = 0
        for p in params:
            p.copy_(result.theta[offset:offset + p.numel()].view_as(p))
            offset += p.numel()
        self.last_step = result
        return torch.tensor(result.loss)
