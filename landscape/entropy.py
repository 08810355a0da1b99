"""Local entropy of an Objective at θ: the normalised log-partition function of its neighbourhood.

Owns the value of the normalised local entropy (flatness.md §2.1)

    Φ_γ(θ) = log E_{δ ~ N(0, σ² I)} exp(−β (L(θ+δ) − L(θ))),    σ = (βγ)^(-1/2),

and its estimators: Laplace (dense spectrum or stochastic Lanczos quadrature), thermodynamic
integration (TI) and annealed importance sampling (AIS) with Metropolis-adjusted Langevin
chains, and the certified bounds between them; γ sweeps; random or top-Hessian subspaces.
Imports nothing from storage, tracking or plotting.

Conventions
-----------
* Φ is 0 for a flat loss and ≤ 0 around a minimum (it is a log-mean-exp of −βΔf). Chaudhari et
  al.'s local entropy ``F(θ, γ) = log ∫ exp(−βL(θ') − (βγ/2)‖θ' − θ‖²) dθ'`` is
  ``F = Φ − βL(θ) + (dim/2) log(2π/(βγ))``.
* Φ is a sum over directions: compare values at equal ``dim`` (the dimension integrated over:
  all parameters, or the subspace's k), or per dimension (``LocalEntropy.per_dim``).
* The samplers work in standardised coordinates ``z = δ/σ`` (coefficients on the subspace's
  orthonormal basis when there is one), where the tempered measure is
  ``π_t(z) ∝ exp(−tβΔf(σz) − ‖z‖²/2)``: t = 0 is the prior N(0, I), t = 1 the local Gibbs measure.
* Every stochastic estimate carries a standard error over independent chains (or samples), takes
  a ``seed`` (int or ``torch.Generator``) and counts ``n_evals``: loss(+gradient) evaluations at
  single points plus Hessian-vector products.

Methods (``local_entropy(..., method=...)``), with their cost in evaluations:

* ``"laplace"``: ``(β/2) gᵀ(H+γI)⁻¹g − ½ Σ log(1 + λᵢ/γ)`` (quadratic model of L). Dense
  eigendecomposition for ``dim ≤ DENSE_SPECTRUM_MAX_PARAMS`` (dim HVPs), otherwise SLQ for the
  log-determinant and a Lanczos (Gauss-quadrature, i.e. CG) solve for the gradient term
  (``(n_probes + 1) · lanczos_steps`` HVPs). Invalid (NaN) when some λᵢ + γ ≤ 0. Accurate at
  narrow scope (large γ) only.
* ``"ti"``: ``Φ = −β ∫₀¹ ⟨Δf⟩_t dt`` on the schedule ``t_k = (k/K)^power`` (trapezoid rule).
  ``n_chains`` chains start from exact prior draws (⟨Δf⟩₀ from exact draws), sweep up to t = 1
  warm-starting each temperature from the last, then back down (``direction="both"``); ⟨Δf⟩_t is
  each chain's post-burn-in average, the two sweeps' averages are combined per chain, and the
  error bar is the spread of the per-chain integrals. A warm-started chain lags behind the
  schedule (upwards it is too hot, downwards too cold), so the sweeps err in opposite directions
  and their mean cancels most of the lag bias; the two one-way values are in ``diagnostics``
  (their gap is the hysteresis), with a Richardson estimate of the quadrature error. Cost
  ``2 · n_chains · K · n_steps``.
* ``"ais"``: the same path as annealed importance sampling (Neal 2001):
  ``log w = −β Σ_k (t_k − t_{k−1}) Δf(z_{k−1})``, ``Φ̂ = log mean exp(log w)``. Unbiased for e^Φ,
  hence a stochastic lower bound of Φ; stderr by the delta method. Step sizes are fixed
  beforehand by a short adapting pilot run, so that every transition is an exact π_t-invariant
  Metropolis kernel.
* ``"gaussian-bound"`` / ``"gibbs-bound"``: the certified bounds (convexity of log Z(t))
  ``−β⟨Δf⟩_{t=0} ≤ Φ ≤ −β⟨Δf⟩_{t=1}``; see ``sandwich_bounds``. The lower one is the negated
  average-case sharpness (``n_samples`` exact draws); the upper one needs chains annealed to t = 1
  (the upward sweep of TI, ``n_chains · K · n_steps``).

Sampler: MALA (Metropolis-adjusted Langevin) with one step size for all chains, tuned during
each temperature's burn-in on their mean acceptance towards ``target_accept`` (0.574, optimal
for MALA in high dimension) and frozen for the measured steps. (Per-chain tuning on each chain's
own noisy acceptance couples its step to its state and biased TI by ~1.3 stderr on a 2-d
quadratic; the shared step removed it.) ``sampler="ula"`` moves without the
Metropolis correction (same cost; its steps are tuned to a would-be MALA acceptance of 0.98;
biased by O(h); kept for comparison with Entropy-SGD's inner loop). With full-batch gradients the correction costs nothing extra, hence
MALA by default.

Example:
    >>> from torch import nn
    >>> net = nn.Linear(2, 1, bias=False)
    >>> _ = nn.init.zeros_(net.weight)
    >>> x = torch.tensor([[1.0, 0.0], [0.0, 2.0]])   # L(w) = (w₁² + 4 w₂²) / 2, H = diag(1, 4)
    >>> obj = Objective(net, lambda out, y: 0.5 * (out - y).pow(2).sum(), (x, torch.zeros(2, 1)))
    >>> lap = local_entropy(obj, obj.theta, 1.0, method="laplace")   # −½ log((1 + 1)(1 + 4))
    >>> round(lap.value, 6), lap.stderr, lap.valid
    (-1.151293, None, True)
    >>> ti = local_entropy(obj, obj.theta, 1.0, method="ti", seed=0)
    >>> abs(ti.value - lap.value) < 4 * ti.stderr, ti.settings["sampler"], ti.n_evals
    (True, 'mala', 38641)
"""

from __future__ import annotations

import inspect
import math
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.func import grad_and_value, vmap

from landscape.checks import check_choice, check_count, check_number
from landscape.linalg.lanczos import lanczos
from landscape.linalg.operator import SymmetricOperator
from landscape.linalg.probes import Seed, as_generator, gaussian
from landscape.linalg.slq import slq
from landscape.objective import Objective, check_dense_fits
from landscape.spectrum import DENSE_SPECTRUM_MAX_PARAMS, extreme_eigenpairs

METHODS = ("laplace", "ti", "ais", "gaussian-bound", "gibbs-bound")
SAMPLERS = ("mala", "ula")
SUBSPACES = ("random", "hessian-top")
LAPLACE_SOLVERS = ("auto", "dense", "slq")
TI_DIRECTIONS = ("both", "forward")
# Step-size targets: the (would-be) MALA acceptance the burn-in tunes towards. 0.574 is MALA's
# optimum as dim → ∞ (Roberts & Rosenthal 1998). ULA never rejects, so its steps must stay well
# inside the stable region (in few dimensions a 0.574 step is near 2/curvature and ULA diverges);
# at 0.98 its O(h) bias was still ~20 % on a 6-d quadratic (tests/test_entropy.py), which is why
# MALA is the default.
TARGET_ACCEPT = {"mala": 0.574, "ula": 0.98}
ADAPT_RATE = 0.5  # log-step change per unit of (acceptance − target) during burn-in
ORTHONORMAL_TOL = 1e-8

# Defaults per annealing method: (n_temperatures K, n_steps per temperature, burn_in steps).
# TI wants equilibrated averages at fewer temperatures (and sweeps both ways, hence half the
# steps per sweep); AIS many temperatures with few transitions each (its variance falls with
# the number of temperatures). All three cost about 2,500 batched evaluations; measured on the
# flatness.md §2.6 toy (tests/test_entropy.py) and the digits MLP.
ANNEAL_DEFAULTS = {"ti": (60, 20, 5), "gibbs-bound": (60, 40, 10), "ais": (400, 5, 0)}
# AIS's step sizes come from a short adapting pilot on the TI-like schedule (K, steps, chains),
# interpolated in k/K onto the AIS schedule.
AIS_PILOT = (60, 10, 4)
GAUSSIAN_BATCH = 256  # exact prior draws per batched evaluation for "gaussian-bound"

__all__ = [
    "ANNEAL_DEFAULTS", "LAPLACE_SOLVERS", "METHODS", "SAMPLERS", "SUBSPACES", "LocalEntropy",
    "SandwichBounds", "Subspace", "hessian_subspace", "local_entropy", "local_entropy_curve",
    "random_subspace", "sandwich_bounds",
]


@dataclass(frozen=True)
class LocalEntropy:
    """An estimate of Φ_γ(θ) with everything needed to compare and reproduce it.

    Attributes:
        value: the estimate (NaN when not ``valid``); a bound for the ``*-bound`` methods.
        stderr: its Monte-Carlo standard error; None for a deterministic value (dense Laplace).
        valid: False when the method does not apply (``reason`` says why).
        reason: why the estimate is invalid, else None.
        method: one of ``METHODS``.
        gamma, beta: scope γ and inverse temperature β; ``sigma = (βγ)^(-1/2)`` is the prior's
            per-coordinate standard deviation (in the units of θ).
        dim: the dimension integrated over (``num_params``, or the subspace's k).
        num_params: the Objective's parameter count.
        subspace: None (all parameters) or a description of the subspace.
        n_evals: loss(+gradient) evaluations at single points plus HVPs spent.
        seed: the int seed used; None when a ``torch.Generator`` was passed.
        settings: the method's settings (JSON-able).
        diagnostics: what the run measured about itself (acceptance, step sizes, ESS, λ_min, …).
        seconds: wall-clock time.
    """

    value: float
    stderr: float | None
    valid: bool
    reason: str | None
    method: str
    gamma: float
    beta: float
    sigma: float
    dim: int
    num_params: int
    subspace: str | None
    n_evals: int
    seed: int | None
    settings: dict[str, Any]
    diagnostics: dict[str, Any]
    seconds: float

    @property
    def per_dim(self) -> float:
        """Φ / dim, for comparisons across sizes."""
        return self.value / self.dim

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of every field."""
        return asdict(self)


@dataclass(frozen=True)
class SandwichBounds:
    """The certified bracket ``lower.value ≤ Φ ≤ upper.value`` (each up to its stderr)."""

    lower: LocalEntropy
    upper: LocalEntropy

    def brackets(self, value: float, n_stderr: float = 3.0) -> bool:
        """Whether ``value`` lies within the bounds widened by ``n_stderr`` standard errors."""
        return (self.lower.value - n_stderr * self.lower.stderr <= value
                <= self.upper.value + n_stderr * self.upper.stderr)


@dataclass(frozen=True)
class Subspace:
    """Directions perturbed: ``δ = z @ basis`` for coefficients z ``[k]``.

    Attributes:
        basis: ``[k, n]`` with orthonormal rows (checked to ``ORTHONORMAL_TOL``).
        description: what the rows are, stored with every result (e.g. ``"random(k=50, seed=0)"``).
        n_evals: HVPs spent building it (added to the ``n_evals`` of every result using it).
    """

    basis: Tensor
    description: str
    n_evals: int = 0

    def __post_init__(self):
        b = self.basis
        if not isinstance(b, Tensor) or b.ndim != 2 or not 1 <= b.shape[0] <= b.shape[1]:
            shape = tuple(b.shape) if isinstance(b, Tensor) else type(b).__name__
            raise ValueError(f"basis must be a [k, n] tensor with 1 <= k <= n; got {shape}")
        gram = b @ b.T
        err = float((gram - torch.eye(b.shape[0], dtype=b.dtype, device=b.device)).abs().max())
        if err > ORTHONORMAL_TOL:
            raise ValueError(f"basis rows must be orthonormal; max |B Bᵀ − I| = {err:.2e}")

    @property
    def dim(self) -> int:
        return self.basis.shape[0]


def random_subspace(n: int, k: int, seed: Seed = 0, *, dtype: torch.dtype = torch.float64,
                    device: torch.device | str = "cpu") -> Subspace:
    """A uniformly random k-dimensional subspace of R^n (QR of a Gaussian ``[n, k]``)."""
    if not 1 <= k <= n:
        raise ValueError(f"subspace dimension k must be in [1, n={n}]; got {k}")
    q, _ = torch.linalg.qr(gaussian(k, n, as_generator(seed), dtype=dtype, device=device).T)
    return Subspace(q.T.contiguous(), f"random(k={k}, seed="
                                      f"{seed if isinstance(seed, int) else None})")


def hessian_subspace(obj: Objective, theta: Tensor, k: int, *, seed: Seed = 0,
                     tol: float = 1e-6) -> Subspace:
    """The span of the k algebraically largest Hessian eigenvectors at θ (Lanczos)."""
    pairs = extreme_eigenpairs(obj, theta, k, "largest", tol=tol, seed=seed)
    q, _ = torch.linalg.qr(pairs.eigenvectors.T)  # re-orthonormalise the Ritz vectors
    description = (f"hessian-top(k={k}, lambda_k={float(pairs.eigenvalues[-1]):.4g}, "
                   f"max_residual={float(pairs.residuals.max()):.1e})")
    return Subspace(q.T.contiguous(), description, pairs.n_matvecs)


# ---------------------------------------------------------------------------------------------
# the perturbed loss in standardised coordinates


class _Neighbourhood:
    """Δf(z) = L(θ + σ·z B) − L(θ) (B = I without a subspace) for batches ``Z [C, dim]``, with
    its z-gradient ``σ · ∇L · Bᵀ``; counts single-point evaluations."""

    def __init__(self, obj: Objective, theta: Tensor, sigma: float, basis: Tensor | None):
        self.theta = theta
        self.sigma = sigma
        self.basis = basis
        self.dim = obj.num_params if basis is None else basis.shape[0]
        self.dtype, self.device = obj.dtype, obj.device
        self._value_and_grad = vmap(grad_and_value(obj.functional_loss))
        self._value = vmap(obj.functional_loss)
        self.loss0 = float(obj.loss(theta))
        self.n_evals = 1

    def _points(self, z: Tensor) -> Tensor:
        return self.theta + self.sigma * (z if self.basis is None else z @ self.basis)

    def value_and_grad(self, z: Tensor) -> tuple[Tensor, Tensor]:
        grads, values = self._value_and_grad(self._points(z))
        self.n_evals += z.shape[0]
        grads = grads if self.basis is None else grads @ self.basis.T
        return values.detach() - self.loss0, self.sigma * grads.detach()

    def value(self, z: Tensor) -> Tensor:
        self.n_evals += z.shape[0]
        return self._value(self._points(z)).detach() - self.loss0

    def normal(self, k: int, generator: torch.Generator) -> Tensor:
        return gaussian(k, self.dim, generator, dtype=self.dtype, device=self.device)


# ---------------------------------------------------------------------------------------------
# Metropolis-adjusted Langevin chains on π_t


@dataclass
class _Chains:
    """State of C chains: positions z ``[C, d]``, Δf ``[C]``, ∇_zΔf ``[C, d]``, and their common
    step h (standardised units)."""

    z: Tensor
    df: Tensor
    grad: Tensor
    h: float


def _langevin_step(nb: _Neighbourhood, ch: _Chains, t: float, beta: float, metropolis: bool,
                   generator: torch.Generator) -> Tensor:
    """One Langevin move of every chain on π_t, in place; returns the acceptance probabilities
    ``[C]`` of the proposals (the MALA ratio, also computed for ULA as a step-size diagnostic)."""
    h = ch.h
    drift = t * beta * ch.grad + ch.z
    noise = nb.normal(ch.z.shape[0], generator)
    prop = ch.z - h * drift + math.sqrt(2 * h) * noise
    df_p, grad_p = nb.value_and_grad(prop)
    drift_p = t * beta * grad_p + prop
    energy = t * beta * ch.df + 0.5 * (ch.z ** 2).sum(1)
    energy_p = t * beta * df_p + 0.5 * (prop ** 2).sum(1)
    log_back = -((ch.z - prop + h * drift_p) ** 2).sum(1) / (4 * h)
    log_ratio = energy - energy_p + log_back + 0.5 * (noise ** 2).sum(1)
    finite = torch.isfinite(log_ratio)
    prob = torch.where(finite, log_ratio.clamp(max=0.0), -math.inf).exp()
    if metropolis:
        move = torch.rand(prob.shape, generator=generator, dtype=prob.dtype).to(prob.device) < prob
    else:
        move = finite
    ch.z = torch.where(move[:, None], prop, ch.z)
    ch.df = torch.where(move, df_p, ch.df)
    ch.grad = torch.where(move[:, None], grad_p, ch.grad)
    return prob


@dataclass(frozen=True)
class _Path:
    """One sweep of chains along ``t [K+1]`` (increasing or decreasing): per-chain averages
    ``means [K, C]`` of Δf at t[1:] (None when not measured), the AIS log weights ``[C]``
    accumulated along it, the step sizes used ``steps [K]`` and the mean acceptance
    probability per temperature ``acceptance [K]``."""

    t: Tensor
    means: Tensor | None
    log_weights: Tensor
    steps: Tensor
    acceptance: Tensor


def _prior_chains(nb: _Neighbourhood, n_chains: int, n_draws: int, initial_step: float,
                  generator: torch.Generator) -> tuple[_Chains, Tensor]:
    """Chains at exact prior draws (t = 0), and the per-chain mean of Δf over ``n_draws``
    fresh draws (the last one is the chains' state)."""
    total = None
    for _ in range(n_draws):
        z = nb.normal(n_chains, generator)
        df, grad = nb.value_and_grad(z)
        total = df.clone() if total is None else total + df
    return _Chains(z, df, grad, initial_step), total / n_draws


def _sweep(nb: _Neighbourhood, ch: _Chains, t: Tensor, beta: float, *, n_steps: int,
           burn_in: int, metropolis: bool, target_accept: float, generator: torch.Generator,
           fixed_steps: Tensor | None = None) -> _Path:
    """Move the chains ``ch`` (in place, starting equilibrated at t[0]) along ``t``.

    At each t_k (k ≥ 1): ``n_steps`` Langevin moves warm-started from t_{k−1}; the first
    ``burn_in`` adapt the chains' common step (unless ``fixed_steps [K+1]`` is given) and are not
    averaged. The AIS log weight accumulates ``−β (t_k − t_{k−1}) Δf`` at the state reached at
    t_{k−1}.
    """
    n_keep = n_steps - burn_in
    log_w = torch.zeros_like(ch.df)
    sums, steps, acceptance = [], [], []
    for k in range(1, t.numel()):
        tk = float(t[k])
        log_w -= beta * (tk - float(t[k - 1])) * ch.df
        if fixed_steps is not None:
            ch.h = float(fixed_steps[k])
        total, accepted = torch.zeros_like(ch.df), 0.0
        for s in range(n_steps):
            prob = _langevin_step(nb, ch, tk, beta, metropolis, generator)
            if s < burn_in and fixed_steps is None:
                ch.h *= math.exp(ADAPT_RATE * (float(prob.mean()) - target_accept))
            elif s >= burn_in:
                total += ch.df
                accepted += float(prob.mean())
        sums.append(total / max(n_keep, 1))
        steps.append(ch.h)
        acceptance.append(accepted / max(n_keep, 1))
    return _Path(t, torch.stack(sums) if n_keep else None, log_w, torch.tensor(steps),
                 torch.tensor(acceptance))


# ---------------------------------------------------------------------------------------------
# Laplace


@dataclass(frozen=True)
class _Quadrature:
    """Spectral data of the Laplace form, reusable for every γ.

    ``tr log(I + H/γ) ≈ scale · mean_p Σ_j weights[p, j] · log(1 + nodes[p, j]/γ)`` and
    ``gᵀ(H + γI)⁻¹g ≈ Σ_j g_weights[j] / (g_nodes[j] + γ)``. Dense: one "probe" with the exact
    eigenvalues, unit weights and ``g_weights = (Uᵀg)²``; SLQ: Rademacher probes (scale = dim) and
    the Gauss quadrature of the Lanczos run started from g.
    """

    nodes: Tensor
    weights: Tensor
    scale: float
    g_nodes: Tensor
    g_weights: Tensor

    @property
    def lambda_min(self) -> float:
        """Smallest eigenvalue (dense) or Ritz value (SLQ: an upper bound of λ_min)."""
        return min(float(self.nodes.min()), float(self.g_nodes.min()) if self.g_nodes.numel()
                   else math.inf)

    def evaluate(self, gamma: float, beta: float) -> tuple[float, float | None]:
        per_probe = self.scale * (self.weights * torch.log1p(self.nodes / gamma)).sum(1)
        g_term = float((self.g_weights / (self.g_nodes + gamma)).sum())
        value = 0.5 * beta * g_term - 0.5 * float(per_probe.mean())
        p = per_probe.numel()
        stderr = 0.5 * float(per_probe.std(correction=1)) / math.sqrt(p) if p > 1 else None
        return value, stderr


def _hessian_operator(obj: Objective, theta: Tensor, basis: Tensor | None) -> SymmetricOperator:
    if basis is None:
        return obj.hessian_op(theta)
    return SymmetricOperator(lambda V: obj.hvp(theta, V @ basis) @ basis.T, basis.shape[0],
                             dtype=obj.dtype, device=obj.device)


def _laplace_quadrature(obj: Objective, theta: Tensor, basis: Tensor | None, solver: str,
                        lanczos_steps: int, n_probes: int,
                        generator: torch.Generator) -> tuple[_Quadrature, int]:
    """The spectral data at θ and the evaluations spent (1 gradient + HVPs)."""
    op = _hessian_operator(obj, theta, basis)
    g = obj.grad(theta)
    g = g if basis is None else basis @ g
    if solver == "dense":
        check_dense_fits(op.n, torch.float64, op.device, copies=3, what="A dense Laplace spectrum")
        values, vectors = torch.linalg.eigh(op.dense().to(torch.float64))
        quad = _Quadrature(values[None], torch.ones_like(values)[None], 1.0, values,
                           (vectors.T @ g.to(torch.float64)) ** 2)
        return quad, 1 + op.n_matvecs
    steps = min(lanczos_steps, op.n)
    nodes, weights = slq(op, op.n, steps, n_probes, generator, dtype=op.dtype, device=op.device)
    gnorm = float(g.norm())
    if gnorm > 0:
        g_nodes, g_vectors, _ = lanczos(op, g[None] / gnorm, steps, generator).ritz()
        g_nodes, g_weights = g_nodes[0], gnorm ** 2 * g_vectors[0, 0] ** 2
    else:
        g_nodes = g_weights = g.new_zeros(0)
    return _Quadrature(nodes, weights, float(op.n), g_nodes, g_weights), 1 + op.n_matvecs


def _laplace_value(quad: _Quadrature, gamma: float, beta: float
                   ) -> tuple[float, float | None, str | None]:
    lam = quad.lambda_min
    if lam + gamma <= 0:
        return math.nan, None, (f"λ_min + γ = {lam:.4g} + {gamma:g} ≤ 0: the Gaussian integral "
                                "of the quadratic model diverges; use method='ti'")
    value, stderr = quad.evaluate(gamma, beta)
    return value, stderr, None


# ---------------------------------------------------------------------------------------------
# settings and validation


def _method_settings(method: str, dim: int, opts: dict[str, Any]) -> dict[str, Any]:
    """The validated, JSON-able settings ``method`` uses (defaults filled in)."""
    if method == "laplace":
        solver = check_choice("solver", opts["solver"], LAPLACE_SOLVERS)
        if solver == "auto":
            solver = "dense" if dim <= DENSE_SPECTRUM_MAX_PARAMS else "slq"
        if solver == "dense":
            return {"solver": "dense"}
        return {"solver": "slq", "lanczos_steps": min(check_count(
            "lanczos_steps", opts["lanczos_steps"]), dim), "n_probes": check_count(
            "n_probes", opts["n_probes"], 2)}
    if method == "gaussian-bound":
        return {"n_samples": check_count("n_samples", opts["n_samples"], 2)}
    k_def, s_def, b_def = ANNEAL_DEFAULTS[method]
    pick = {key: default if opts[key] is None else opts[key] for key, default in
            (("n_temperatures", k_def), ("n_steps", s_def), ("burn_in", b_def))}
    n_steps = check_count("n_steps", pick["n_steps"])
    burn_in = pick["burn_in"]
    if isinstance(burn_in, bool) or not isinstance(burn_in, int) or not 0 <= burn_in < n_steps:
        raise ValueError(f"burn_in must be an integer in [0, n_steps={n_steps}); got {burn_in!r}")
    check_choice("sampler", opts["sampler"], SAMPLERS)
    target = TARGET_ACCEPT[opts["sampler"]] if opts["target_accept"] is None else (
        opts["target_accept"])
    if isinstance(target, bool) or not isinstance(target, int | float) or not 0 < target < 1:
        raise ValueError(f"target_accept must be in (0, 1); got {target!r}")
    step = opts["initial_step"]
    settings = {
        "n_temperatures": check_count("n_temperatures", pick["n_temperatures"]),
        "power": check_number("power", opts["power"]),
        "schedule": "t_k = (k / n_temperatures) ** power, k = 0..n_temperatures",
        "n_chains": check_count("n_chains", opts["n_chains"], 2), "n_steps": n_steps,
        "burn_in": burn_in, "sampler": opts["sampler"], "target_accept": float(target),
        # MALA's optimal scaling for N(0, I_d) (Roberts & Rosenthal 1998): 2h = 1.65² d^(-1/3)
        "initial_step": 1.65 ** 2 / 2 * dim ** (-1 / 3) if step is None
        else check_number("initial_step", step),
    }
    if method == "ti":
        settings["direction"] = check_choice("direction", opts["direction"], TI_DIRECTIONS)
        settings["quadrature"] = "trapezoid on the schedule"
    if method == "ais":
        del settings["burn_in"]  # fixed steps from the pilot: every transition counts
        settings["pilot"] = dict(zip(("n_temperatures", "n_steps", "n_chains"), AIS_PILOT))
    return settings


def _resolve_subspace(obj: Objective, theta: Tensor, subspace, subspace_dim,
                      generator: torch.Generator, seed_label: int | None) -> Subspace | None:
    if subspace is None:
        if subspace_dim is not None:
            raise ValueError(f"subspace_dim={subspace_dim!r} needs subspace='random' or "
                             "'hessian-top'")
        return None
    if isinstance(subspace, Subspace):
        if subspace.basis.shape[1] != obj.num_params:
            raise ValueError(f"the subspace basis has {subspace.basis.shape[1]} columns; the "
                             f"objective has {obj.num_params} parameters")
        return Subspace(subspace.basis.to(obj.device, obj.dtype), subspace.description,
                        subspace.n_evals)
    if subspace not in SUBSPACES:
        raise ValueError(f"subspace must be None, a Subspace or one of {SUBSPACES}; got "
                         f"{subspace!r}")
    k = check_count("subspace_dim", subspace_dim)
    if subspace == "random":
        space = random_subspace(obj.num_params, k, generator, dtype=obj.dtype, device=obj.device)
        return Subspace(space.basis, f"random(k={k}, seed={seed_label})")
    return hessian_subspace(obj, theta, k, seed=generator)


# ---------------------------------------------------------------------------------------------
# the estimators behind each method


def _schedule(n_temperatures: int, power: float, dtype: torch.dtype) -> Tensor:
    return (torch.arange(n_temperatures + 1, dtype=dtype) / n_temperatures) ** power


def _mean_stderr(samples: Tensor) -> tuple[float, float]:
    return float(samples.mean()), float(samples.std(correction=1)) / math.sqrt(samples.numel())


def _sweep_options(settings: dict[str, Any], generator: torch.Generator) -> dict[str, Any]:
    return {"metropolis": settings["sampler"] == "mala", "generator": generator,
            "target_accept": settings["target_accept"]}


def _acceptance(*paths: _Path) -> dict[str, float]:
    rates = torch.cat([p.acceptance for p in paths])
    return {"acceptance_mean": float(rates.mean()), "acceptance_min": float(rates.min())}


def _gaussian_bound(nb: _Neighbourhood, beta: float, settings: dict[str, Any],
                    generator: torch.Generator) -> tuple[float, float, dict[str, Any]]:
    n = settings["n_samples"]
    draws = torch.cat([nb.value(nb.normal(min(GAUSSIAN_BATCH, n - i), generator))
                       for i in range(0, n, GAUSSIAN_BATCH)])
    value, stderr = _mean_stderr(-beta * draws)
    return value, stderr, {}


def _thermodynamic(nb: _Neighbourhood, beta: float, settings: dict[str, Any],
                   generator: torch.Generator, *, upper_bound: bool = False
                   ) -> tuple[float, float, dict[str, Any]]:
    """TI (or, with ``upper_bound``, the Gibbs average at t = 1 after the forward sweep)."""
    t = _schedule(settings["n_temperatures"], settings["power"], nb.dtype)
    n_keep = settings["n_steps"] - settings["burn_in"]
    ch, mean0 = _prior_chains(nb, settings["n_chains"], n_keep, settings["initial_step"],
                              generator)
    sweep = {"n_steps": settings["n_steps"], "burn_in": settings["burn_in"],
             **_sweep_options(settings, generator)}
    fwd = _sweep(nb, ch, t, beta, **sweep)
    diagnostics = {**_acceptance(fwd), "step_t1": float(fwd.steps[-1]),
                   "mean_delta_f_t0": float(mean0.mean()),
                   "mean_delta_f_t1": float(fwd.means[-1].mean())}
    if upper_bound:
        value, stderr = _mean_stderr(-beta * fwd.means[-1])
        return value, stderr, diagnostics
    def integral(means: Tensor, stride: int = 1) -> Tensor:
        """Trapezoid on t[::stride] of ``means [K+1, C]`` (ascending t) → per-chain Φ [C]."""
        tt, mm = t[::stride], means[::stride]
        return -beta * (0.5 * (tt[1:] - tt[:-1])[:, None] * (mm[1:] + mm[:-1])).sum(0)

    mean_fwd = torch.cat([mean0[None], fwd.means])
    if settings["direction"] == "both":
        bwd = _sweep(nb, ch, t.flip(0), beta, **sweep)
        mean_bwd = torch.cat([fwd.means[-1:], bwd.means]).flip(0)
        diagnostics.update(_acceptance(fwd, bwd), forward=float(integral(mean_fwd).mean()),
                           backward=float(integral(mean_bwd).mean()))
        means = 0.5 * (mean_fwd + mean_bwd)
    else:
        means = mean_fwd
    per_chain = integral(means)
    if settings["n_temperatures"] % 2 == 0:  # Richardson: the rule's error is O(Δ²)
        diagnostics["quadrature_error"] = float((per_chain - integral(means, 2)).mean()) / 3
    value, stderr = _mean_stderr(per_chain)
    return value, stderr, diagnostics


def _annealed_importance(nb: _Neighbourhood, beta: float, settings: dict[str, Any],
                         generator: torch.Generator) -> tuple[float, float, dict[str, Any]]:
    """AIS with step sizes fixed beforehand by an adapting pilot (interpolated in k/K)."""
    k, steps, chains = AIS_PILOT
    h0 = settings["initial_step"]
    options = _sweep_options(settings, generator)
    pilot_chains, _ = _prior_chains(nb, chains, 1, h0, generator)
    pilot = _sweep(nb, pilot_chains, _schedule(k, settings["power"], nb.dtype), beta,
                   n_steps=steps, burn_in=steps, **options)
    log_h = torch.cat([torch.tensor([math.log(h0)]), pilot.steps.log()])
    t = _schedule(settings["n_temperatures"], settings["power"], nb.dtype)
    fixed = np.exp(np.interp(np.linspace(0, 1, t.numel()), np.linspace(0, 1, k + 1),
                             log_h.numpy()))
    ch, _ = _prior_chains(nb, settings["n_chains"], 1, h0, generator)
    path = _sweep(nb, ch, t, beta, n_steps=settings["n_steps"], burn_in=0,
                  fixed_steps=torch.as_tensor(fixed), **options)
    lw = path.log_weights
    w = torch.exp(lw - lw.max())
    value = float(torch.logsumexp(lw, 0)) - math.log(lw.numel())
    stderr = float(w.std(correction=1) / w.mean()) / math.sqrt(lw.numel())
    return value, stderr, {**_acceptance(path), "step_t1": float(fixed[-1]),
                           "ess": float(w.sum() ** 2 / (w ** 2).sum())}


def _sampled(nb: _Neighbourhood, method: str, beta: float, settings: dict[str, Any],
             generator: torch.Generator) -> tuple[float, float, dict[str, Any]]:
    """(value, stderr, diagnostics) of a sampling method."""
    if method == "gaussian-bound":
        return _gaussian_bound(nb, beta, settings, generator)
    if method == "ais":
        return _annealed_importance(nb, beta, settings, generator)
    return _thermodynamic(nb, beta, settings, generator, upper_bound=method == "gibbs-bound")


# ---------------------------------------------------------------------------------------------
# the public functions


def local_entropy(obj: Objective, theta: Tensor, gamma: float, *, beta: float = 1.0,
                  method: str = "ti", seed: Seed = 0, subspace: str | Subspace | None = None,
                  subspace_dim: int | None = None, n_temperatures: int | None = None,
                  power: float = 4.0, n_chains: int = 16, n_steps: int | None = None,
                  burn_in: int | None = None, sampler: str = "mala",
                  target_accept: float | None = None, initial_step: float | None = None,
                  direction: str = "both", n_samples: int = 1024, solver: str = "auto", lanczos_steps: int = 90,
                  n_probes: int = 10) -> LocalEntropy:
    """Estimate the normalised local entropy Φ_γ(θ) (see the module docstring).

    Args:
        obj, theta: the loss and the point ``[n]``.
        gamma: scope γ > 0 (small γ: wide neighbourhood; σ = (βγ)^(-1/2)).
        beta: inverse temperature β > 0 of the loss.
        method: one of ``METHODS``.
        seed: int or ``torch.Generator``, for every random draw (subspace, probes, chains).
        subspace: None (all parameters), ``"random"`` or ``"hessian-top"`` (k =
            ``subspace_dim``, drawn / computed at θ from ``seed``), or a ``Subspace``.
        n_temperatures, power: the schedule ``t_k = (k/K)^power``, k = 0…K (K's default per
            method in ``ANNEAL_DEFAULTS``).
        n_chains: independent chains (≥ 2; the error bar is their spread).
        n_steps, burn_in: Langevin moves per temperature, and how many of them tune the step
            and are not averaged (defaults per method in ``ANNEAL_DEFAULTS``).
        sampler: ``"mala"`` or ``"ula"``; target_accept: the burn-in's (would-be) acceptance
            target (default ``TARGET_ACCEPT[sampler]``);
            initial_step: the step h at t = 0 in standardised units (default: MALA's optimal
            ``1.65²/2 · dim^(-1/3)`` for the prior N(0, I)).
        n_samples: exact prior draws of ``"gaussian-bound"``.
        solver: Laplace's ``"dense"``, ``"slq"`` or ``"auto"`` (dense up to
            ``DENSE_SPECTRUM_MAX_PARAMS`` dimensions); lanczos_steps, n_probes: SLQ's.

    Options that do not apply to ``method`` are ignored (one set of options can serve several
    methods) and left out of ``settings``.
    """
    options = {key: value for key, value in locals().items() if key not in ("obj", "theta",
                                                                             "gamma")}
    return _curve(obj, theta, [gamma], options)[0]


def local_entropy_curve(obj: Objective, theta: Tensor, gammas, **options) -> list[LocalEntropy]:
    """Φ_γ(θ) for each γ in ``gammas`` (same order); ``options`` are ``local_entropy``'s.

    The subspace is built once. Laplace computes the spectrum (or the SLQ quadrature) once and
    evaluates every γ on it, so a sweep costs one estimate (each point reports that shared
    ``n_evals`` and time). The sampling methods run one path per γ, each starting from the random
    stream a single ``local_entropy`` call would use, so every point equals that call (common
    random numbers also make the curve smooth); there is nothing to warm-start across γ since
    t = 0 is sampled exactly. A ``torch.Generator`` seed is instead consumed in order.
    """
    names = set(inspect.signature(local_entropy).parameters) - {"obj", "theta", "gamma"}
    unknown = set(options) - names
    if unknown:
        raise TypeError(f"unknown options {sorted(unknown)}; local_entropy takes "
                        f"{sorted(names)}")
    defaults = {name: p.default for name, p in inspect.signature(local_entropy).parameters.items()
                if name in names}
    return _curve(obj, theta, list(gammas), {**defaults, **options})


def sandwich_bounds(obj: Objective, theta: Tensor, gamma: float, **options) -> SandwichBounds:
    """The certified bracket ``−β⟨Δf⟩_{N(0,σ²I)} ≤ Φ_γ(θ) ≤ −β⟨Δf⟩_{Gibbs(t=1)}``.

    Both follow from the convexity of ``log Z(t) = log E_{N(0,σ²I)} exp(−tβΔf)`` with
    ``d/dt log Z = −β⟨Δf⟩_t``; each side carries its MC error (exact prior draws for the lower
    bound, annealed chains for the upper). ``options`` are ``local_entropy``'s (``method``
    excluded).
    """
    if "method" in options:
        raise TypeError("sandwich_bounds takes no method (it runs 'gaussian-bound' and "
                        "'gibbs-bound')")
    return SandwichBounds(local_entropy(obj, theta, gamma, method="gaussian-bound", **options),
                          local_entropy(obj, theta, gamma, method="gibbs-bound", **options))


def _curve(obj: Objective, theta: Tensor, gammas: list, opts: dict[str, Any]
           ) -> list[LocalEntropy]:
    if not isinstance(obj, Objective):
        raise TypeError(f"obj must be an Objective; got {type(obj).__name__}")
    theta = obj.check_theta(theta).detach()
    if not gammas:
        raise ValueError("gammas must contain at least one scope γ")
    gammas = [check_number("gamma", g) for g in gammas]
    beta = check_number("beta", opts["beta"])
    method = check_choice("method", opts["method"], METHODS)
    seed = opts["seed"]
    generator = as_generator(seed)
    start = time.perf_counter()
    seed_label = seed if isinstance(seed, int) else None
    space = _resolve_subspace(obj, theta, opts["subspace"], opts["subspace_dim"], generator,
                              seed_label)
    dim = obj.num_params if space is None else space.dim
    settings = _method_settings(method, dim, opts)
    basis = None if space is None else space.basis
    common = {"method": method, "beta": beta, "dim": dim, "num_params": obj.num_params,
              "subspace": None if space is None else space.description,
              "seed": seed_label, "settings": settings}
    setup_evals = 0 if space is None else space.n_evals

    if method == "laplace":
        quad, n_evals = _laplace_quadrature(obj, theta, basis, settings["solver"],
                                            settings.get("lanczos_steps", 0),
                                            settings.get("n_probes", 0), generator)
        seconds = time.perf_counter() - start
        results = []
        for gamma in gammas:
            value, stderr, reason = _laplace_value(quad, gamma, beta)
            results.append(LocalEntropy(
                value, stderr, reason is None, reason, gamma=gamma, sigma=(beta * gamma) ** -0.5,
                n_evals=setup_evals + n_evals, diagnostics={"lambda_min": quad.lambda_min},
                seconds=seconds, **common))
        return results

    state = generator.get_state()
    results = []
    for gamma in gammas:
        tick = time.perf_counter()
        if isinstance(seed, int):  # every γ from the stream a single call would use
            generator.set_state(state)
        sigma = (beta * gamma) ** -0.5
        nb = _Neighbourhood(obj, theta, sigma, basis)
        value, stderr, diagnostics = _sampled(nb, method, beta, settings, generator)
        valid = math.isfinite(value) and math.isfinite(stderr)
        reason = None if valid else (f"non-finite loss at the perturbed points (σ = {sigma:.3g}; "
                                     "is the scope too wide for this loss?)")
        results.append(LocalEntropy(
            value if valid else math.nan, stderr if valid else None, valid, reason, gamma=gamma,
            sigma=sigma, n_evals=setup_evals + nb.n_evals, diagnostics=diagnostics,
            seconds=time.perf_counter() - (tick if results else start),
            **common))
    return results
