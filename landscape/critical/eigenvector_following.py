"""Eigenvector following to a saddle of a chosen index (Cerjan & Miller 1981; the per-mode step of
Wales 1992, 1994; Baker 1986's partitioned rational-function view).

In H's eigenbasis ``H = V diag(λ) Vᵀ`` with gradient coefficients ``c = Vᵀg``, the k lowest modes
are *maximised* and the rest *minimised*, each with the regularised Newton step::

    h_i = ±2 c_i / (|λ_i| + sqrt(λ_i² + 4 c_i²))        (+ for maximised, − for minimised modes)

so ``h_i → −c_i/λ_i`` (the Newton step) once ``|c_i| ≪ |λ_i|`` and λ_i has the designated sign —
convergence to a non-degenerate saddle of index k is quadratic — while a mode of the wrong sign,
or a flat one (λ_i ≈ 0), still moves downhill (uphill) by a bounded amount instead of stalling.
The merit is not ‖g‖²: gradient-flat points (g ∈ ker H), which are local minima of ‖g‖² and trap
Newton-MR, Levenberg–Marquardt and gradient-norm descent (Frye et al. 2021), are left along
their flat modes. The step is scaled to a trust radius r; a trial is accepted when the loss change
agrees with the quadratic model ``cᵀh + ½Σλ_i h_i²`` to a fraction of the model's magnitude
``Σ|c_i h_i| + ½Σ|λ_i| h_i²`` (a plain ratio test fails here: ascent and descent parts of the
model cancel). r doubles after a boundary step the model predicted well and shrinks to a quarter
of the step after a rejection.

The index k is ``index`` if given, else the number of eigenvalues below ``−index_tol·max|λ|``
at the start, kept for the whole search: Dauphin et al.'s picture asks which error a critical
point of a given index has, and the start's index is the natural guess. A search whose start has
no critical point of that index nearby ends ``max-iterations`` (honestly), not at another index.

Needs the dense Hessian at every iterate (n HVPs in blocks and one ``eigh``): for small nets only
(``steps.DENSE_MAX_PARAMS`` parameters by default; ``max_params`` raises the limit).
"""

from __future__ import annotations

import math

import torch

from landscape.critical.steps import DENSE_MAX_PARAMS, CountingObjective, State, Step


class EigenvectorFollowing:
    """Eigenvector-following stepper (stateful: keeps the index k and the trust radius r).

    Args:
        index: number of modes to maximise; None takes the start's count of eigenvalues below
            ``−index_tol·max|λ|``.
        index_tol: relative tolerance of that count.
        radius: initial trust radius r (in θ units); ``max_radius`` caps it.
        model_tol: largest accepted ``|ΔL − model| / model magnitude``.
        max_trials: radius reductions tried before giving up on this iterate.
        max_params: largest n for which the dense Hessian is built.
    """

    def __init__(self, index: int | None = None, index_tol: float = 1e-3, radius: float = 0.1,
                 max_radius: float = 10.0, model_tol: float = 0.25, max_trials: int = 12,
                 max_params: int = DENSE_MAX_PARAMS):
        if index is not None and index < 0:
            raise ValueError(f"index must be >= 0; got {index}")
        if not radius > 0 or not max_radius >= radius:
            raise ValueError(f"need 0 < radius <= max_radius; got {radius}, {max_radius}")
        self.index, self.index_tol = index, index_tol
        self.radius, self.max_radius = radius, max_radius
        self.model_tol, self.max_trials, self.max_params = model_tol, max_trials, max_params

    def step(self, obj: CountingObjective, state: State) -> Step | None:
        if obj.num_params > self.max_params:
            raise ValueError(
                f"eigenvector-following builds the dense Hessian at every iterate; n = "
                f"{obj.num_params:,} exceeds max_params = {self.max_params:,}. Raise max_params "
                f"or use method='levenberg-marquardt' (matrix-free).")
        if self.index is not None and self.index > obj.num_params:
            raise ValueError(f"index {self.index} exceeds the number of parameters "
                             f"{obj.num_params}")
        lam, vecs = torch.linalg.eigh(obj.hessian(state.theta))
        if self.index is None:
            self.index = int((lam < -self.index_tol * lam.abs().max()).sum())
        c = vecs.T @ state.grad
        denom = lam.abs() + torch.sqrt(lam**2 + 4 * c**2)
        h = torch.where(denom > 0, -2 * c / torch.where(denom > 0, denom, 1.0), 0.0)
        h[: self.index] = -h[: self.index]
        full_norm = float(h.norm())
        floor = 64 * torch.finfo(lam.dtype).eps * max(1.0, abs(state.loss))
        for _ in range(self.max_trials):
            hs = h * min(1.0, self.radius / full_norm) if full_norm > 0 else h
            model = float(c @ hs + 0.5 * (lam * hs * hs).sum())
            magnitude = float((c * hs).abs().sum() + 0.5 * (lam.abs() * hs * hs).sum())
            theta = state.theta + vecs @ hs
            trial = obj.try_loss_and_grad(theta)
            if trial is not None:
                mismatch = abs(trial[0] - state.loss - model)
                if mismatch <= self.model_tol * magnitude + floor:
                    size = float(hs.norm())
                    if mismatch <= 0.4 * self.model_tol * magnitude and size >= 0.9 * self.radius:
                        self.radius = min(2 * self.radius, self.max_radius)
                    return Step(theta, trial[0], trial[1], size, obj.num_params,
                                {"index": self.index, "model_error": mismatch / max(magnitude,
                                                                                   floor)})
            self.radius = 0.25 * min(self.radius, float(hs.norm()))
            if self.radius == 0 or not math.isfinite(self.radius):
                break
        return None
