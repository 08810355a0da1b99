"""Newton-MR for critical points (Roosta, Liu, Xu & Mahoney 2018, arXiv 1810.00303; used to locate
saddles by Frye et al. 2019, 2021).

Step direction: ``p ≈ −H⁺g``, the minimum-length least-squares solution of ``H p = −g`` from
MINRES-QLP (Choi, Paige & Saunders 2011; ``linalg.minres_qlp``) run to ``rtol`` or
``min(max_dim, n)`` iterations: an inexact Newton step at O(n) memory (without
reorthogonalisation, steps past n on small problems gain no accuracy). Unlike scipy's ``minres``
it never grows a kernel component when g has one (the gradient-flat case). Line search on the
merit ‖g‖² with Roosta's Armijo condition ``‖g(θ + αp)‖² ≤ ‖g‖² + 2ρα⟨p, Hg⟩``: α starts from
``min(1, α_prev/β)`` and is multiplied by β until accepted; below ``min_alpha`` the iterate is
left unchanged and the failure is
reported (never a silent move). ⟨p, Hg⟩ < 0 unless g lies (nearly) in ker H — the gradient-flat
failure mode, signalled by a relative least-squares residual ``‖g + Hp‖/‖g‖`` near 1.
Cost per iteration: k + 2 HVPs (k MINRES-QLP steps, two residual checks) plus one gradient per
trial α.
"""

from __future__ import annotations

import math

from landscape.critical.steps import CountingObjective, State, Step
from landscape.linalg.minres_qlp import minres_qlp


class NewtonMR:
    """Newton-MR stepper. Defaults: ρ = 1e-4, β = 0.5, MINRES-QLP ``rtol`` 1e-10 and at most
    ``max_dim`` = 200 iterations."""

    def __init__(self, rtol: float = 1e-10, max_dim: int = 200, armijo: float = 1e-4,
                 beta: float = 0.5, min_alpha: float = 1e-10):
        if not 0 < beta < 1:
            raise ValueError(f"beta must be in (0, 1); got {beta}")
        self.rtol, self.max_dim, self.armijo, self.beta = rtol, max_dim, armijo, beta
        self.min_alpha = min_alpha
        self.alpha = 1.0

    def step(self, obj: CountingObjective, state: State) -> Step | None:
        solve = minres_qlp(lambda v: obj.hvp(state.theta, v), -state.grad, rtol=self.rtol,
                           maxit=min(self.max_dim, obj.num_params))
        p = solve.x
        info = {"relres": solve.rnorm / math.sqrt(state.grad_norm_sq), "flag": solve.flag_name}
        slope = float(p.dot(state.hg))
        if not slope < 0:
            return None
        g2 = state.grad_norm_sq
        alpha = min(1.0, self.alpha / self.beta)
        while alpha >= self.min_alpha:
            trial = obj.try_loss_and_grad(state.theta + alpha * p)
            if trial is not None and float(trial[1].dot(trial[1])) <= (
                    g2 + 2 * self.armijo * alpha * slope):
                self.alpha = alpha
                return Step(state.theta + alpha * p, trial[0], trial[1], alpha, solve.iterations,
                            info)
            alpha *= self.beta
        return None
