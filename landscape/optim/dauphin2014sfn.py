"""Saddle-free Newton (SFN), Dauphin et al. 2014, "Identifying and attacking the saddle point
problem in high-dimensional non-convex optimization" (NeurIPS; arXiv 1406.2572).

Update rule. SFN rescales the gradient by the inverse of the Hessian's *absolute value*:

    Δθ = −(|H| + λI)⁻¹ g,    |H| = V |Λ| Vᵀ   for   H = V Λ Vᵀ,    θ ← θ + lr · Δθ.

It follows from minimising the first-order model of L under the trust region
``|½ΔᵀHΔ| ≤ ½Δᵀ|H|Δ ≤ Δ_max``. Along a negative-curvature direction the step goes *down* the
slope instead of up it (Newton's −H⁻¹g flips the sign there and is attracted to the saddle), so
saddles repel SFN; where H is positive definite SFN is Newton's method.

Two forms (``mode``):

* ``"exact"``: eigendecomposition of the dense Hessian (``Objective.hessian``). Cost: n HVPs to
  build H and O(n³) for ``eigh``; memory n². For the small nets of the paper's first experiments.
* ``"krylov"``: ``k = krylov_dim`` Lanczos vectors ``Q`` (rows, ``[k, n]``) started from g, the
  tridiagonal ``T = Q H Qᵀ``, ``|T|`` from T's eigendecomposition, and the step within span(Q):
  ``Δθ = −Qᵀ (|T| + λI)⁻¹ Q g``. Cost: k HVPs and O(k·n) memory. As in the paper, the damping λ
  is chosen by trying a small set of values and keeping the lowest loss. Unlike the paper's
  implementation, the Lanczos basis is fully reorthogonalised (``linalg.regularised_ls``'s
  Krylov space, the one the critical-point searches use), so ``k = n`` reproduces the exact form
  to rounding; the basis stops short of k only when it spans an invariant subspace (the step is
  then exact).

Both forms are eigenbases (``base.hessian_space``) and the step is their shifted solve with
``|λ_i|`` (``EigenSpace.absolute``), the damped-Newton step with |H| for H.

Damping. ``damping`` is one value (used as is) or a grid; with a grid each candidate
``θ + lr · Δθ(λ)`` costs one loss evaluation on the same objective and the lowest loss wins (both
modes). Default grid: ``base.DEFAULT_DAMPINGS``, shared with damped Newton; λ = 0 with exactly
zero eigenvalues uses the pseudo-inverse (zero step along ker H).

Fair-comparison note: one exact step costs n HVPs (+ the eigendecomposition) and one Krylov step
k HVPs, against one gradient for SGD; in Dauphin et al. SFN wins per *step*, not per flop.

Example (f(x, y) = x² − y² as an Objective over θ = (x, y); the saddle is at the origin):
    >>> from torch import nn
    >>> class Point(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.w = nn.Parameter(torch.tensor([0.5, 1e-3]))
    ...     def forward(self, x):
    ...         return self.w.expand(len(x), -1)
    >>> obj = Objective(Point(), lambda out, _: out[0, 0] ** 2 - out[0, 1] ** 2,
    ...                 (torch.zeros(1, 1), torch.zeros(1)))
    >>> step = saddle_free_newton_step(obj, obj.theta, damping=0.0)
    >>> [round(v, 6) for v in step.theta.tolist()]  # x jumps to 0, y doubles: away from (0, 0)
    [0.0, 0.002]
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from landscape.checks import check_choice, check_count
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

MODES = ("exact", "krylov")


def saddle_free_newton_step(obj: Objective, theta: Tensor, *, lr: float = 1.0,
                            damping: float | Sequence[float] = DEFAULT_DAMPINGS,
                            mode: str = "exact", krylov_dim: int = 20) -> NewtonStep:
    """One SFN step ``θ + lr · (−(|H| + λI)⁻¹ g)`` on ``obj`` at ``theta`` (see module docs).

    Args:
        obj: the objective (full batch or the current minibatch).
        theta: flat parameters ``[n]``.
        lr: step scale (1 is the plain SFN step).
        damping: λ ≥ 0, or a grid of them searched for the lowest loss after the step.
        mode: ``"exact"`` (dense Hessian) or ``"krylov"`` (``krylov_dim`` Lanczos vectors from g,
            capped at n).

    Returns:
        ``NewtonStep`` with the new θ, the loss before it and the damping used.
    """
    lr = check_positive("lr", lr)
    dampings = check_dampings(damping)
    check_choice("mode", mode, MODES)
    check_count("krylov_dim", krylov_dim)
    loss, g = obj.loss_and_grad(theta)
    theta = theta.to(g.device, g.dtype)
    if not bool(g.any()):  # a critical point: every form of the step is zero
        return NewtonStep(theta.clone(), float(loss), dampings[0], None)
    space = hessian_space(obj, theta, g, krylov_dim=krylov_dim if mode == "krylov" else None)
    return best_damping(obj, theta, float(loss), lr, dampings, space.absolute())


class SaddleFreeNewton(SecondOrderOptimizer):
    """Saddle-free Newton as a ``torch.optim`` optimizer over the minibatch of ``step(closure)``.

    ``step`` needs a ``landscape.optim.BatchClosure`` (or an ``objective_factory(batch)``
    returning the ``Objective`` to step on); it builds the objective, takes
    ``saddle_free_newton_step`` in ``dtype`` (float64 by default) and writes θ back into the
    parameters. Defaults: ``lr=1``, ``damping=DEFAULT_DAMPINGS`` (grid, lowest loss wins),
    ``mode="exact"``, ``krylov_dim=20``. ``seed`` is accepted for a uniform signature and unused
    (the method is deterministic).
    """

    flat_step = staticmethod(saddle_free_newton_step)

    def __init__(self, params, lr: float = 1.0,
                 damping: float | Sequence[float] = DEFAULT_DAMPINGS, mode: str = "exact",
                 krylov_dim: int = 20, *, objective_factory: ObjectiveFactory | None = None,
                 dtype: torch.dtype = torch.float64, seed: int = 0):
        check_positive("lr", lr)
        check_dampings(damping)
        check_choice("mode", mode, MODES)
        check_count("krylov_dim", krylov_dim)
        defaults = {"lr": lr, "damping": damping, "mode": mode, "krylov_dim": krylov_dim}
        super().__init__(params, defaults, objective_factory=objective_factory, dtype=dtype,
                         seed=seed)
