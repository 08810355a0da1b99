"""Eigenvector following to a saddle of a chosen index (Cerjan & Miller 1981; the per-mode step of
Wales 1992, 1994; Baker 1986's partitioned rational-function view).

In H's eigenbasis ``H = V diag(λ) Vᵀ`` with gradient coefficients ``c = Vᵀg``, the k lowest modes
are *maximised* and the rest *minimised*, each with the regularised Newton step::

    h_i = ±2 c_i / (|λ_i| + sqrt(λ_i² + 4‖g‖²))        (+ for maximised, − for minimised modes)

so ``h_i → −c_i/λ_i`` (the Newton step) once ``‖g‖ ≪ |λ_i|`` and λ_i has the designated sign —
convergence to a non-degenerate saddle of index k is quadratic — while a mode of the wrong sign,
or a flat one (λ_i ≈ 0), still moves downhill (uphill) by ``|c_i|/‖g‖ ≤ 1`` instead of
stalling. The merit is not ‖g‖²: gradient-flat points (g ∈ ker H), which are local minima of ‖g‖²
and trap Newton-MR, Levenberg–Marquardt and gradient-norm descent (Frye et al. 2021), are left
along their flat modes, where ``|c_i| ≈ ‖g‖``.

Why ‖g‖ and not Wales's |c_i| in the regulariser: with |c_i|, a flat mode gets a step of unit
length *whatever the size of c_i*, so near a non-isolated critical set (the zero modes of a
continuous symmetry: GL(p) in linear layers, rescalings) the rounding-level components of g along
the zero modes get unit steps; the trust radius then shrinks the whole step, the useful Newton
components with it, and the iterate drifts along the symmetry orbit into ill-conditioned
representatives (max |λ| growing by orders of magnitude). With ‖g‖ the zero-mode steps are
``O(|c_i|/‖g‖)``, second order near a critical set: on Frye et al.'s 16 → 4 → 16 linear
autoencoder all 100 searches of ``landscape bench critical`` end certified at a closed-form
critical point, median 23 iterations (``tests/test_critical.py`` holds the drift check).

The step is scaled to a trust radius r; a trial is accepted when the loss change agrees with the
quadratic model ``cᵀh + ½Σλ_i h_i²`` to a fraction of the model's magnitude
``Σ|c_i h_i| + ½Σ|λ_i| h_i²`` (a plain ratio test fails here: ascent and descent parts of the
model cancel). r doubles after a boundary step the model predicted well and shrinks to a quarter
of the step after a rejection.

The count k of maximised modes (``n_negative``; the index α is k/n): an int keeps k for the
whole search (index-targeted saddle searches); ``"start"`` keeps the start's count of negative
eigenvalues; ``"follow"`` (default) recounts at every iterate, so every mode of clearly negative
curvature is climbed and every other one descended — a regularised Newton iteration, attracted by
the nearest critical point of any index (a fixed k fails honestly, at the iteration cap, when no
critical point with k negative eigenvalues is near). Counts use the index tolerance of
``spectrum.count_inertia`` (``index_tol``, ``index_atol``), the numbers the analysis reports with.

Needs the dense Hessian at every iterate (n HVPs in blocks and one ``eigh``): for small nets only
(``steps.DENSE_MAX_PARAMS`` parameters by default; ``max_params`` raises the limit).
"""

from __future__ import annotations

import math

import torch

from landscape.critical.steps import DENSE_MAX_PARAMS, CountingObjective, State, Step
from landscape.spectrum import DEFAULT_INDEX_ATOL, DEFAULT_INDEX_TOL, count_inertia

INDEX_MODES = ("follow", "start")


class EigenvectorFollowing:
    """Eigenvector-following stepper (stateful: keeps the count k and the trust radius r).

    Args:
        n_negative: number of modes to maximise (the target count of negative eigenvalues), or
            ``"follow"`` / ``"start"`` (module docstring).
        index_tol, index_atol: relative tolerance and absolute floor of the negative count.
        radius: initial trust radius r (in θ units); ``max_radius`` caps it.
        model_tol: largest accepted ``|ΔL − model| / model magnitude``.
        max_trials: radius reductions tried before giving up on this iterate.
        max_params: largest n for which the dense Hessian is built.
    """

    def __init__(self, n_negative: int | str = "follow", index_tol: float = DEFAULT_INDEX_TOL,
                 index_atol: float = DEFAULT_INDEX_ATOL, radius: float = 0.1,
                 max_radius: float = 10.0, model_tol: float = 0.25, max_trials: int = 12,
                 max_params: int = DENSE_MAX_PARAMS):
        if isinstance(n_negative, str):
            if n_negative not in INDEX_MODES:
                raise ValueError(f"n_negative must be an int >= 0 or one of {INDEX_MODES}; "
                                 f"got {n_negative!r}")
        elif n_negative < 0:
            raise ValueError(f"n_negative must be >= 0; got {n_negative}")
        if not radius > 0 or not max_radius >= radius:
            raise ValueError(f"need 0 < radius <= max_radius; got {radius}, {max_radius}")
        self.mode = n_negative if isinstance(n_negative, str) else "fixed"
        self.n_negative = None if isinstance(n_negative, str) else int(n_negative)
        self.index_tol, self.index_atol = index_tol, index_atol
        self.radius, self.max_radius = radius, max_radius
        self.model_tol, self.max_trials, self.max_params = model_tol, max_trials, max_params

    def step(self, obj: CountingObjective, state: State) -> Step | None:
        if obj.num_params > self.max_params:
            raise ValueError(
                f"eigenvector-following builds the dense Hessian at every iterate; n = "
                f"{obj.num_params:,} exceeds max_params = {self.max_params:,}. Raise max_params "
                f"or use method='levenberg-marquardt' (matrix-free).")
        if self.n_negative is not None and self.n_negative > obj.num_params:
            raise ValueError(f"n_negative {self.n_negative} exceeds the number of parameters "
                             f"{obj.num_params}")
        lam, vecs = torch.linalg.eigh(obj.hessian(state.theta))
        if self.n_negative is None or self.mode == "follow":
            self.n_negative = count_inertia(lam, self.index_tol, atol=self.index_atol).n_negative
        c = vecs.T @ state.grad
        denom = lam.abs() + torch.sqrt(lam**2 + 4 * state.grad_norm_sq)
        h = torch.where(denom > 0, -2 * c / torch.where(denom > 0, denom, 1.0), 0.0)
        h[: self.n_negative] = -h[: self.n_negative]
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
                                {"n_negative": self.n_negative, "model_error": mismatch / max(magnitude,
                                                                                   floor)})
            self.radius = 0.25 * min(self.radius, float(hs.norm()))
            if self.radius == 0 or not math.isfinite(self.radius):
                break
        return None
