"""Damped Newton, the second-order baseline Dauphin et al. (2014) compare saddle-free Newton with.

Update rule (Levenberg 1944; Nocedal & Wright, *Numerical Optimization*, §3.4):

    Δθ = −(H + mI)⁻¹ g,    θ ← θ + lr · Δθ,

from the eigendecomposition of the dense Hessian ``H = V Λ Vᵀ``: ``Δθ = −V (Λ + m)⁺ Vᵀ g``. The
solve is taken *as is*: when ``H + mI`` is indefinite the step climbs along the directions with
``λᵢ + m < 0``, and when it is singular the pseudo-inverse (minimum-norm solution) is used. This is
what makes Newton's method **attracted to saddle points** — at a non-degenerate saddle, m = 0
reaches the critical point in one step on a quadratic — and is the behaviour SFN
(``dauphin2014sfn``) is meant to fix. Adding mI does not bound the step for indefinite H and can
create new singularities (λᵢ = −m).

Damping. ``damping`` is one value m ≥ 0, or a grid searched for the lowest loss after the step
(one loss evaluation per value), default ``base.DEFAULT_DAMPINGS`` — the same rule, grid and
code as SFN (``base.hessian_space`` and ``base.best_damping``), for a like-for-like comparison.
A large m gives a short, gradient-like step, so with the grid the method usually still lowers the
loss; pass ``damping=0`` to see the plain Newton step.

Cost per step: n HVPs to build H (``Objective.hessian``), O(n³) for ``eigh``, n² memory, plus one
loss per grid value.

Example (f(x, y) = x² − y²: one undamped Newton step lands on the saddle at the origin):
    >>> from torch import nn
    >>> class Point(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.w = nn.Parameter(torch.tensor([0.5, 1e-3]))
    ...     def forward(self, x):
    ...         return self.w.expand(len(x), -1)
    >>> obj = Objective(Point(), lambda out, _: out[0, 0] ** 2 - out[0, 1] ** 2,
    ...                 (torch.zeros(1, 1), torch.zeros(1)))
    >>> damped_newton_step(obj, obj.theta, damping=0.0).theta.abs().max().item() < 1e-15
    True
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from landscape.objective import Objective
from landscape.optim.base import (
    DEFAULT_DAMPINGS,
    NewtonStep,
    ObjectiveFactory,
    SecondOrderOptimizer,
    best_damping,
    check_dampings,
    check_positive,
    hessian_space,
)


def damped_newton_step(obj: Objective, theta: Tensor, *, lr: float = 1.0,
                       damping: float | Sequence[float] = DEFAULT_DAMPINGS) -> NewtonStep:
    """One step ``θ − lr · (H + mI)⁺ g`` on ``obj`` at ``theta`` (dense; see the module docs)."""
    lr = check_positive("lr", lr)
    dampings = check_dampings(damping)
    loss, g = obj.loss_and_grad(theta)
    theta = theta.to(g.device, g.dtype)
    return best_damping(obj, theta, float(loss), lr, dampings, hessian_space(obj, theta, g))


class DampedNewton(SecondOrderOptimizer):
    """Damped Newton as a ``torch.optim`` optimizer over the minibatch of ``step(closure)``.

    Same protocol as ``SaddleFreeNewton``: ``step`` needs a ``landscape.optim.BatchClosure`` (or an
    ``objective_factory(batch)``), steps in ``dtype`` (float64 default) and writes θ back.
    Defaults: ``lr=1``, ``damping=DEFAULT_DAMPINGS`` (grid, lowest loss wins). ``seed`` is
    accepted for a uniform signature and unused (the method is deterministic).
    """

    flat_step = staticmethod(damped_newton_step)

    def __init__(self, params, lr: float = 1.0,
                 damping: float | Sequence[float] = DEFAULT_DAMPINGS, *,
                 objective_factory: ObjectiveFactory | None = None,
                 dtype: torch.dtype = torch.float64, seed: int = 0):
        check_positive("lr", lr)
        check_dampings(damping)
        super().__init__(params, {"lr": lr, "damping": damping},
                         objective_factory=objective_factory, dtype=dtype, seed=seed)
