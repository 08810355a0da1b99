"""Damped Newton over a grid of dampings, the critical-point search attributed to Dauphin et al.
(2014) in Frye et al.'s reconstruction.

For every γ in the grid the candidate is ``p_γ = −(H + γI)⁻¹ g`` (minimum-norm least-squares, in H's
eigenbasis or the Krylov space ``K_k(H, g)``); each candidate uses its own γ, the candidate with the smallest
``‖g(θ + p_γ)‖`` wins, with step size 1, and it is taken only if it lowers ‖g‖. (The public reference
code captured γ late, so every candidate used the last one, and kept the last improving candidate
rather than the best; both are avoided here.) Adding γI to an indefinite H neither bounds the step nor
avoids new singularities (λᵢ = −γ), which is why this method is kept for reproduction only.
Cost per iteration: k HVPs plus one gradient per grid value.
"""

from __future__ import annotations

from landscape.critical.steps import CountingObjective, State, Step, newton_space

DEFAULT_DAMPINGS = tuple(10.0**e for e in range(2, -8, -1))  # 1e2 … 1e-7


class DampedNewton:
    """Grid-damped Newton stepper; ``dampings`` are the γ values tried at every iteration."""

    def __init__(self, dampings: tuple[float, ...] = DEFAULT_DAMPINGS, solver: str = "auto",
                 max_dim: int = 200, rtol: float = 1e-10):
        if not dampings or any(g < 0 for g in dampings):
            raise ValueError(f"dampings must be a non-empty tuple of values >= 0; got {dampings}")
        self.dampings, self.solver = tuple(dampings), solver
        self.max_dim, self.rtol = max_dim, rtol

    def step(self, obj: CountingObjective, state: State) -> Step | None:
        space = newton_space(obj, state.theta, state.grad, solver=self.solver,
                             max_dim=self.max_dim, rtol=self.rtol)
        best = None
        for gamma in self.dampings:
            theta = state.theta + space.to_full(space.shifted_solve(gamma))
            trial = obj.try_loss_and_grad(theta)
            if trial is None:
                continue
            g2 = float(trial[1].dot(trial[1]))
            if best is None or g2 < best[0]:
                best = (g2, gamma, theta, trial)
        if best is None or best[0] >= state.grad_norm_sq:
            return None
        g2, gamma, theta, (loss, grad) = best
        return Step(theta, loss, grad, gamma, space.dim)
