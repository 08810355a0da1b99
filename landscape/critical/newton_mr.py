"""Newton-MR for critical points (Roosta, Liu, Xu & Mahoney 2018, arXiv 1810.00303; used to locate
saddles by Frye et al. 2019, 2021).

Step direction: the minimum-length least-squares solution of ``H p = −g`` from MINRES-QLP (Choi,
Paige & Saunders 2011), i.e. an inexact ``−H⁺g``. Line search on the merit ‖g‖² with Roosta's
Armijo condition ``‖g(θ + αp)‖² ≤ ‖g‖² + 2ρα⟨p, Hg⟩``: α starts from ``min(1, α_prev/β)`` and is
multiplied by β until accepted; below ``min_alpha`` the iterate is left unchanged and the failure is
reported (never a silent move). ⟨p, Hg⟩ < 0 unless g lies (nearly) in ker H — the gradient-flat
failure mode, signalled by MINRES-QLP's least-squares exit (its ``relres`` near 1).
Cost per iteration: MINRES-QLP iterations (one HVP each) plus one gradient per trial α.
"""

from __future__ import annotations

from landscape.critical.steps import CountingObjective, State, Step
from landscape.linalg.minres_qlp import minres_qlp


class NewtonMR:
    """Newton-MR stepper. Defaults: ρ = 1e-4, β = 0.5, MINRES-QLP ``rtol`` 1e-10, ``maxit`` 200."""

    def __init__(self, rtol: float = 1e-10, maxit: int = 200, armijo: float = 1e-4,
                 beta: float = 0.5, min_alpha: float = 1e-10, maxxnorm: float = 1e4):
        if not 0 < beta < 1:
            raise ValueError(f"beta must be in (0, 1); got {beta}")
        self.rtol, self.maxit, self.armijo, self.beta = rtol, maxit, armijo, beta
        self.min_alpha, self.maxxnorm = min_alpha, maxxnorm
        self.alpha = 1.0

    def step(self, obj: CountingObjective, state: State) -> Step | None:
        solve = minres_qlp(lambda v: obj.hvp(state.theta, v), -state.grad, rtol=self.rtol,
                           maxit=min(self.maxit, obj.num_params), maxxnorm=self.maxxnorm)
        p = solve.x
        info = {"minres_flag": solve.flag, "relres": solve.relres}
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
                return Step(state.theta + alpha * p, trial[0], trial[1], alpha,
                            solve.iterations, info)
            alpha *= self.beta
        return None
