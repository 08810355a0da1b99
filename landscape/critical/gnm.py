"""Gradient-norm minimisation (McIver & Komornicki 1972; Pennington & Bahri 2017): gradient descent
on ``G(θ) = ½‖∇L(θ)‖²`` with a backtracking Armijo line search, the first-order baseline ("BTLS-GNM"
in Frye et al. 2019).

∇G = H g costs one HVP. Armijo: ``G(θ − α Hg) ≤ G(θ) − c α ‖Hg‖²``; α is halved until accepted and
divided by β after each accepted step (capped). It converges to minima of ‖g‖, which include
gradient-flat points (Hg = 0, g ≠ 0), and stalls near ill-conditioned critical points.
"""

from __future__ import annotations

from landscape.critical.steps import CountingObjective, State, Step


class GradientNormDescent:
    """Backtracking gradient descent on ½‖g‖² (α₀ = 0.1, β = 0.5, c = 1e-4 as in Frye et al.)."""

    def __init__(self, alpha: float = 0.1, beta: float = 0.5, armijo: float = 1e-4,
                 min_alpha: float = 1e-12, max_alpha: float = 1e6):
        if not 0 < beta < 1:
            raise ValueError(f"beta must be in (0, 1); got {beta}")
        self.alpha, self.beta, self.armijo = alpha, beta, armijo
        self.min_alpha, self.max_alpha = min_alpha, max_alpha

    def step(self, obj: CountingObjective, state: State) -> Step | None:
        g2 = state.grad_norm_sq
        slope = float(state.hg.dot(state.hg))
        alpha = self.alpha
        while alpha >= self.min_alpha:
            trial = obj.try_loss_and_grad(state.theta - alpha * state.hg)
            if trial is not None and float(trial[1].dot(trial[1])) <= g2 - 2 * self.armijo * alpha * slope:
                self.alpha = min(alpha / self.beta, self.max_alpha)
                return Step(state.theta - alpha * state.hg, trial[0], trial[1], alpha)
            alpha *= self.beta
        self.alpha = alpha / self.beta
        return None
