"""Levenberg–Marquardt on the system ∇L(θ) = 0 (Levenberg 1944, Marquardt 1963; damping update of
Nielsen 1999 / Madsen, Nielsen & Tingleff 2004).

The residual is g(θ) with Jacobian H, so the step minimises ``‖g + Hp‖² + μ‖p‖²``:
``p = −(H² + μI)⁻¹ H g``. It is solved in H's eigenbasis (small n) or in the Krylov space
``K_k(H, g)`` (``linalg.regularised_ls``); either way every trial damping is free once the space is
built. The gain ratio
``ρ = (‖g‖² − ‖g(θ+p)‖²) / (‖g‖² − ‖g + Hp‖²)`` accepts the step when ρ > 0 and updates
``μ ← μ·max(1/3, 1 − (2ρ − 1)³)``; a rejection multiplies μ by ν (doubling each time). As ‖g‖ → 0
the damping vanishes and the step becomes the minimum-length least-squares Newton step, so
convergence to a non-degenerate critical point is quadratic; far away it is a scaled gradient step
on ½‖g‖². Cost per iteration: k HVPs plus one gradient per trial.
"""

from __future__ import annotations

from landscape.critical.steps import CountingObjective, State, Step, newton_space


class LevenbergMarquardt:
    """Stateful LM stepper (keeps μ between iterations).

    Args:
        solver: ``"auto"``, ``"dense"`` or ``"krylov"`` (see ``steps.newton_space``).
        max_dim: largest Krylov dimension per step.
        rtol: relative accuracy of the inner least-squares solve.
        tau: initial damping ``μ₀ = tau · ‖T̄‖²`` (T̄: the first step's Hessian or its projection).
        max_trials: damping increases tried before giving up on this iterate.
    """

    def __init__(self, solver: str = "auto", max_dim: int = 200, rtol: float = 1e-10,
                 tau: float = 1e-3, max_trials: int = 12):
        self.solver, self.max_dim, self.rtol = solver, max_dim, rtol
        self.tau, self.max_trials = tau, max_trials
        self.mu: float | None = None

    def step(self, obj: CountingObjective, state: State) -> Step | None:
        space = newton_space(obj, state.theta, state.grad, solver=self.solver,
                             max_dim=self.max_dim, rtol=self.rtol)
        if self.mu is None:
            self.mu = self.tau * space.norm**2
        g2 = state.grad_norm_sq
        nu = 2.0
        for _ in range(self.max_trials):
            y = space.levenberg_marquardt(self.mu)
            predicted = g2 - space.predicted_residual(y) ** 2
            trial = obj.try_loss_and_grad(state.theta + space.to_full(y))
            if trial is not None and predicted > 0:
                rho = (g2 - float(trial[1].dot(trial[1]))) / predicted
                if rho > 0:
                    used = self.mu
                    self.mu *= max(1 / 3, 1 - (2 * rho - 1) ** 3)
                    return Step(state.theta + space.to_full(y), trial[0], trial[1], used,
                                space.dim, {"gain_ratio": rho})
            self.mu *= nu
            nu *= 2
        return None
