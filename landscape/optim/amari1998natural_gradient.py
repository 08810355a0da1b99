"""Natural gradient, Amari 1998, "Natural gradient works efficiently in learning" (Neural
Computation 10(2)), with the Fisher taken as the generalised Gauss-Newton matrix (GGN).

Update rule. The natural gradient is steepest descent in the metric of the model's predictive
distribution, the Fisher information F:

    Δθ = −(F + λI)⁻¹ g,    θ ← θ + lr · Δθ,

with F the GGN of the step's objective, ``Σ_b (N_b / N) J_bᵀ H_b J_b (+ l2 I)``
(``Objective.ggn_vp``: J the Jacobian of the model outputs, H the loss's Hessian in them). For
cross-entropy on logits and for squared error — negative log-likelihoods of an exponential family
in the outputs — the GGN *is* the Fisher of the predictive distribution (Martens 2020, "New
insights and perspectives on the natural gradient method", JMLR): the "true" Fisher, an
expectation over the model's own labels, not the empirical Fisher of the observed ones. F is
positive semi-definite, so unlike damped Newton (``damped_newton``) the step is never an
ascent direction; unlike saddle-free Newton (``dauphin2014sfn``) it ignores the model's own
curvature, so it does not see negative curvature at all. With lr = 1 it is the damped
Gauss-Newton (Levenberg-Marquardt) step.

Two forms (``mode``):

* ``"exact"``: the dense GGN (``Objective.ggn``: n GGN-vector products, n² memory) and its
  eigendecomposition (O(n³)); the step is the shifted solve in that eigenbasis
  (``linalg.regularised_ls.eigen_space``). For small nets.
* ``"cg"``: matrix-free, ``k = cg_iterations`` steps of conjugate gradient on
  ``(F + λI) x = g`` from x₀ = 0. CG's k-th iterate is the Galerkin solution in the Krylov space
  ``K_k(F, g)`` — the same space for every λ — so it is computed as ``−Qᵀ (T + λI)⁻¹ Q g`` from
  one fully reorthogonalised Lanczos basis Q ``[k, n]`` of F (``linalg.regularised_ls.
  krylov_space``, the Lanczos form of CG). Cost: k GGN-vector products for the whole damping grid
  (textbook CG would need k per damping), k·n memory for the basis (CG needs O(n)); the
  reorthogonalisation keeps the iterate accurate where plain CG loses orthogonality in floating
  point. k is capped at n and stops early only when the space is invariant (then the solve is
  exact).

Damping. ``damping`` is one value (used as is) or a grid searched for the lowest loss after the
step (one loss evaluation per value), default ``base.DEFAULT_DAMPINGS`` — the grid and rule of
SFN and damped Newton, in both forms, so the three differ only in their matrix (|H|, H, F).
λ = 0 on a singular F uses the pseudo-inverse (no step along ker F).

Fair-comparison note: a GGN-vector product costs about one HVP (a JVP, a loss-Hessian product in
output space and a VJP), so one exact step costs as much as an exact SFN step and one CG step as
a Krylov SFN step with ``krylov_dim = cg_iterations``.

Example (squared error on a linear model: F = H, so the undamped step solves least squares):
    >>> from torch import nn
    >>> net = nn.Linear(3, 1, bias=False)
    >>> data = (torch.eye(3), torch.tensor([[1.0], [2.0], [3.0]]))
    >>> obj = Objective(net, nn.functional.mse_loss, data)
    >>> for mode in MODES:
    ...     step = natural_gradient_step(obj, obj.theta, damping=0.0, mode=mode, cg_iterations=3)
    ...     print(mode, [round(v, 9) for v in step.theta.tolist()])
    exact [1.0, 2.0, 3.0]
    cg [1.0, 2.0, 3.0]
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from landscape.checks import check_choice, check_count
from landscape.linalg.regularised_ls import eigen_space, krylov_space
from landscape.objective import Objective
from landscape.optim.base import (
    DEFAULT_DAMPINGS,
    NewtonStep,
    ObjectiveFactory,
    SecondOrderOptimizer,
    best_damping,
    check_dampings,
    check_positive,
)

MODES = ("exact", "cg")


def natural_gradient_step(obj: Objective, theta: Tensor, *, lr: float = 1.0,
                          damping: float | Sequence[float] = DEFAULT_DAMPINGS,
                          mode: str = "exact", cg_iterations: int = 20) -> NewtonStep:
    """One natural-gradient step ``θ − lr · (F + λI)⁻¹ g`` on ``obj`` at ``theta`` ``[n]``.

    Args:
        obj: the objective (full batch or the current minibatch); F is its GGN.
        theta: flat parameters ``[n]``.
        lr: step scale.
        damping: λ ≥ 0, or a grid of them searched for the lowest loss after the step.
        mode: ``"exact"`` (dense GGN) or ``"cg"`` (``cg_iterations`` CG steps, capped at n).

    Returns:
        ``NewtonStep`` with the new θ, the loss before it and the damping used.
    """
    lr = check_positive("lr", lr)
    dampings = check_dampings(damping)
    check_choice("mode", mode, MODES)
    check_count("cg_iterations", cg_iterations)
    loss, g = obj.loss_and_grad(theta)
    theta = theta.to(g.device, g.dtype)
    if not bool(g.any()):  # a critical point: the step is zero
        return NewtonStep(theta.clone(), float(loss), dampings[0], None)
    if mode == "exact":
        space = eigen_space(obj.ggn(theta), g)
    else:  # the Ritz basis of K_k(F, g): its shifted solves are CG's k-th iterates
        space = krylov_space(obj.ggn_op(theta), g, max_dim=cg_iterations, rtol=0.0).ritz()
    return best_damping(obj, theta, float(loss), lr, dampings, space)


class NaturalGradient(SecondOrderOptimizer):
    """The natural gradient as a ``torch.optim`` optimizer over the minibatch of ``step(closure)``.

    Same protocol as ``SaddleFreeNewton``: ``step`` needs a ``landscape.optim.BatchClosure`` (or
    an ``objective_factory(batch)``), takes ``natural_gradient_step`` in ``dtype`` (float64
    default) and writes θ back. Defaults: ``lr=1``, ``damping=DEFAULT_DAMPINGS`` (grid, lowest
    loss wins), ``mode="exact"``, ``cg_iterations=20``. ``seed`` is accepted for a uniform
    signature and unused (the method is deterministic).
    """

    flat_step = staticmethod(natural_gradient_step)

    def __init__(self, params, lr: float = 1.0,
                 damping: float | Sequence[float] = DEFAULT_DAMPINGS, mode: str = "exact",
                 cg_iterations: int = 20, *, objective_factory: ObjectiveFactory | None = None,
                 dtype: torch.dtype = torch.float64, seed: int = 0):
        check_positive("lr", lr)
        check_dampings(damping)
        check_choice("mode", mode, MODES)
        check_count("cg_iterations", cg_iterations)
        defaults = {"lr": lr, "damping": damping, "mode": mode, "cg_iterations": cg_iterations}
        super().__init__(params, defaults, objective_factory=objective_factory, dtype=dtype,
                         seed=seed)
