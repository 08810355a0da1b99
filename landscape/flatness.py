"""Flatness and sharpness of the loss at θ: spectral measures and one perturbation engine.

Owns the ``Measure`` result, the perturbation engine (``Perturbation`` and its three solvers
``mean_increase``, ``max_increase``, ``critical_radius``), the measures of the literature as
configurations of it, and their registry ``MEASURES``. Imports the Objective and the spectrum
functions, never storage, tracking or plotting.

Conventions (flatness reference §0)
-----------------------------------
* ``L`` is ``obj.loss``: the full-batch mean loss on the objective's fixed evaluation set, in its
  dtype (float64 by default), model in eval mode. The target ``"error"`` is ``obj.error``, the 0-1
  error on the same set (classifiers only). θ is every parameter the objective has (biases too).
* ``n_evals`` counts full-batch evaluations: loss, loss+gradient or error for the perturbation
  measures, Hessian-vector products for the spectral ones.
* Seeds are ints; same seed, same numbers. Sampling estimates carry a standard error; bounds
  (a maximum found by ascent) and deterministic values carry ``stderr=None``.

The perturbation engine (reference §10.1)
-----------------------------------------
A ``Perturbation`` is ``z = s ⊙ y`` with a unit variable ``y`` and a per-coordinate scale
``s = sqrt((radius · T)² + floor²)``. The *law* says what ``y`` is: ``"gaussian"`` (``y ~ N(0, I)``,
s is the std), ``"uniform"`` (``y ~ U[−1, 1]ⁿ``, s the half-width), ``"ball"`` (``‖y‖₂ ≤ 1``: the
ellipsoid ``‖z / s‖ ≤ 1``) or ``"box"`` (``|yᵢ| ≤ 1``). The *scaling* gives ``T``: ``"none"`` (1),
``"elementwise"`` (``|θᵢ| + eta``: ASAM's ``T_w``, Keskar's box with eta = 1, multiplicative noise
with eta = 0, since ``θ ⊙ (1 + σy)`` and ``θ + σ|θ| ⊙ y`` have the same law for symmetric y) or
``"filter"`` (the rms of θ over the coordinate's filter — the slice along a weight's first axis,
an output unit or channel — plus eta; one-dimensional parameters such as biases are their own
filters: Li et al.'s filter normalisation, in expectation). The *aggregation* is the solver:
``mean_increase`` (the mean, or a quantile, of ``target(θ + z) − target(θ)`` over draws),
``max_increase`` (its maximum over the ball or box, by ascent: a lower bound) and
``critical_radius`` (the radius at which the mean change reaches a threshold, by bisection).

Measures, kinds and names
-------------------------
``MEASURES`` maps a kind to its function ``(obj, theta, *, seed=0, **options) -> Measure``;
``evaluate(obj, theta, {"kind": ..., **options})`` runs one spec and refuses unknown kinds and
options. A measure's ``name`` is its kind, then a tag for each *defining* option that differs from
its default (in the order listed), then the radius as ``{key}{value}``; numbers are written
``format(v, ".12g")`` (``0.001``, ``1e-05``). Options that only set the precision or budget
(``n_samples``, ``n_matvecs``, ``n_steps``, ``max_steps``, ``seed``, …) are in ``settings`` only.

==================  ==================================================  ========================
kind                function and defining options (tags)                default name
==================  ==================================================  ========================
lambda_max          ``lambda_max``                                      ``lambda_max``
trace               ``trace``                                           ``trace``
frobenius_sq        ``frobenius_sq``                                    ``frobenius_sq``
near_zero_fraction  ``near_zero_fraction``: atol (``atol{v}``)          ``near_zero_fraction``
keskar              ``keskar_sharpness``: subspace_dim (``sub{p}``)     ``keskar_eps0.001``
average_sharpness   ``average_sharpness``: scaling (``mag``,            ``average_sharpness_
                    ``filter``), law (``uniform``), target (``error``), sigma0.01``
                    quantile (``q{v}``), mag_eps (``mageps{v}``)
worst_sharpness     ``worst_sharpness``                                 ``worst_sharpness_
                                                                        rho0.05``
asam                ``asam``: eta (``eta{v}``)                          ``asam_rho0.5``
pac_bayes           ``pac_bayes_sigma``: scaling, target (``loss``),    ``pac_bayes_sigma``
                    drop (``drop{v}``), mag_eps; ends in ``sigma``
local_energy        ``local_energy``: target (``error``)                ``local_energy_sigma0.1``
==================  ==================================================  ========================

Example (a 15-parameter softmax regression; at σ = 0.01 the average sharpness is ``σ² tr H / 2``
up to O(σ⁴), so the Monte-Carlo estimate lies within its error bars of the exact trace):

    >>> from torch import nn
    >>> from landscape.objective import Objective
    >>> g = torch.Generator().manual_seed(0)
    >>> obj = Objective(nn.Linear(4, 3), nn.functional.cross_entropy,
    ...                 (torch.randn(30, 4, generator=g), torch.randint(0, 3, (30,), generator=g)))
    >>> sharp = evaluate(obj, obj.theta, {"kind": "average_sharpness", "sigma": 0.01})
    >>> tr = evaluate(obj, obj.theta, {"kind": "trace"})  # n = 15 ≤ 99 HVPs: exact
    >>> sharp.name, sharp.n_evals, tr.stderr
    ('average_sharpness_sigma0.01', 201, None)
    >>> abs(sharp.value - 0.01**2 * tr.value / 2) < 4 * sharp.stderr
    True
"""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch
from scipy.optimize import Bounds, minimize
from torch import Tensor

from landscape.checks import check_choice, check_count, check_number
from landscape.linalg.operator import SymmetricOperator
from landscape.linalg.probes import Seed, as_generator, gaussian
from landscape.objective import Objective
from landscape.spectrum import (
    DENSE_SPECTRUM_MAX_PARAMS,
    estimate_trace,
    extreme_eigenpairs,
    full_spectrum,
    spectral_density,
)

LAWS = ("gaussian", "uniform", "ball", "box")
SAMPLED_LAWS = ("gaussian", "uniform")
SCALINGS = ("none", "elementwise", "filter")
TARGETS = ("loss", "error")
MEASURE_SCALINGS = ("none", "magnitude", "filter")  # the scaling option of the measures
TRACE_METHODS = ("auto", "exact", "hutch++", "hutchinson", "xtrace", "xnystrace")
SPECTRUM_METHODS = ("auto", "dense", "slq")
MAG_EPS = 1e-3  # Jiang et al.'s ε of the magnitude-aware noise N(0, σ'²θᵢ² + ε²)
ASAM_ETA = 0.01  # Kwon et al.'s η of T_w = |w| + η
NEAR_ZERO_ATOL = 1e-4  # Chaudhari et al.'s |λ| threshold of a "near-zero" eigenvalue


@dataclass(frozen=True)
class Measure:
    """One flatness / sharpness value at θ.

    Attributes:
        name: stable identifier from the kind and its defining options (module docstring).
        value: the measure, in the units its function documents.
        stderr: standard error of a sampling estimate; None for deterministic values and bounds.
        settings: every option of the call, seed included (JSON-able).
        n_evals: full-batch evaluations spent (loss / gradient / error, or HVPs).
        wall_time: seconds.
        info: JSON-able diagnostics (loss at θ, solver status, bisection bracket, …).
    """

    name: str
    value: float
    stderr: float | None
    settings: dict
    n_evals: int
    wall_time: float
    info: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------- validation
def _seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int (it is stored in the settings); "
                         f"got {seed!r}")
    return seed


def _fmt(value) -> str:
    return format(value, ".12g")


def _name(kind: str, *tags: str | None, **radius) -> str:
    """``kind``, the non-empty tags, then ``{key}{value}`` for the radius (none for spectra)."""
    return "_".join([kind, *filter(None, tags), *(f"{k}{_fmt(v)}" for k, v in radius.items())])


# ---------------------------------------------------------------------------- the engine
@dataclass(frozen=True)
class Perturbation:
    """``z = s ⊙ y`` with ``s = sqrt((radius · T)² + floor²)`` (see the module docstring).

    ``law``: gaussian | uniform | ball | box; ``radius``: σ, ρ or ε (≥ 0); ``scaling``: none
    (T = 1) | elementwise (T = |θ| + eta) | filter (T = filter rms of θ + eta); ``eta``, ``floor``:
    ≥ 0 (``floor`` is Jiang's absolute std ε, combined in quadrature).
    """

    law: str
    radius: float
    scaling: str = "none"
    eta: float = 0.0
    floor: float = 0.0

    def __post_init__(self):
        check_choice("law", self.law, LAWS)
        check_choice("scaling", self.scaling, SCALINGS)
        for key in ("radius", "eta", "floor"):
            check_number(key, getattr(self, key), strict=False)

    def scale(self, theta: Tensor, obj: Objective | None = None) -> Tensor:
        """The per-coordinate scale ``s`` ``[n]`` at θ (``obj`` gives the filters' shapes)."""
        if self.scaling == "none":
            t = torch.ones_like(theta)
        elif self.scaling == "elementwise":
            t = theta.abs() + self.eta
        elif obj is None:
            raise ValueError("filter scaling needs the Objective (its parameter shapes); it "
                             "cannot be used in a random subspace")
        else:
            t = filter_magnitude(obj, theta) + self.eta
        s = self.radius * t
        return torch.sqrt(s**2 + self.floor**2) if self.floor else s


def filter_magnitude(obj: Objective, theta: Tensor) -> Tensor:
    """``[n]``: each coordinate's filter rms ``‖θ_f‖ / √|f|``, a filter being the slice of a
    parameter along its first axis (a Linear row, a Conv output channel); for one-dimensional
    parameters (biases) ``|θᵢ|``."""
    parts = []
    for part in obj.unflatten(theta).values():
        if part.ndim >= 2:
            rms = part.pow(2).mean(dim=tuple(range(1, part.ndim)), keepdim=True).sqrt()
            part = rms.expand_as(part)
        parts.append(part.abs().reshape(-1))
    return torch.cat(parts)


def subspace_basis(n: int, dim: int, seed: Seed) -> Tensor:
    """``[n, dim]`` float64 with orthonormal columns (QR of a seeded Gaussian), Keskar's random
    ``A``; orthonormal so that ``A⁺ = Aᵀ`` and ``‖A y‖ = ‖y‖``. Memory ``8 · n · dim`` bytes."""
    check_count("subspace_dim", dim)
    if dim > n:
        raise ValueError(f"subspace_dim must be at most n={n}; got {dim}")
    return torch.linalg.qr(gaussian(n, dim, as_generator(seed), dtype=torch.float64,
                                    device="cpu")).Q


class _Target:
    """Counted full-batch evaluations of the loss or the 0-1 error."""

    def __init__(self, obj: Objective, target: str):
        self.obj, self.target, self.n_evals = obj, check_choice("target", target, TARGETS), 0

    def __call__(self, theta: Tensor) -> float:
        self.n_evals += 1
        return float(self.obj.loss(theta)) if self.target == "loss" else self.obj.error(theta)

    def with_grad(self, theta: Tensor) -> tuple[float, Tensor]:
        self.n_evals += 1
        value, gradient = self.obj.loss_and_grad(theta)
        return float(value), gradient


def _draw(law: str, n: int, generator: torch.Generator, like: Tensor) -> Tensor:
    """One unit draw ``[n]``: N(0, I) or U[−1, 1]ⁿ (on the CPU, then moved, as the probes)."""
    if law == "gaussian":
        return gaussian(1, n, generator, dtype=like.dtype, device=like.device)[0]
    return (torch.rand(n, generator=generator, dtype=like.dtype) * 2 - 1).to(like.device)


def _mean_and_stderr(samples: Tensor) -> tuple[float, float]:
    return float(samples.mean()), float(samples.std(correction=1)) / math.sqrt(samples.numel())


def _quantile_and_stderr(samples: Tensor, q: float) -> tuple[float, float]:
    """The q-quantile (linear interpolation) and half the spread of the order statistics
    ``±√(n q (1 − q))`` ranks around it (a distribution-free ≈68 % interval)."""
    n = samples.numel()
    ordered = samples.sort().values
    centre, half = q * (n - 1), math.sqrt(n * q * (1 - q))
    lo, hi = max(0, math.floor(centre - half)), min(n - 1, math.ceil(centre + half))
    return float(torch.quantile(samples, q)), float(ordered[hi] - ordered[lo]) / 2


def _result(name: str, settings: dict, start: float, value: float, stderr: float | None,
            n_evals: int, info: dict) -> Measure:
    return Measure(name, float(value), stderr, settings, n_evals, time.perf_counter() - start,
                   info)


def mean_increase(obj: Objective, theta: Tensor, perturbation: Perturbation, *,
                  target: str = "loss", n_samples: int = 100, quantile: float | None = None,
                  seed: int = 0) -> Measure:
    """Mean (or q-quantile) of ``target(θ + z) − target(θ)`` over ``n_samples`` draws of a
    gaussian or uniform ``perturbation``.

    The mean uses antithetic pairs, ``(f(θ + z) + f(θ − z)) / 2 − f(θ)`` per draw (unbiased for a
    symmetric law; the odd Taylor terms, the gradient's above all, cancel exactly), so it costs
    ``2 n_samples + 1`` evaluations, and its standard error is over the draws. A quantile is over
    ``n_samples`` independent increases (``n_samples + 1`` evaluations), with the order-statistic
    error of ``_quantile_and_stderr``.
    """
    start = time.perf_counter()
    theta = obj.check_theta(theta).detach()
    check_choice("law", perturbation.law, SAMPLED_LAWS)
    check_count("n_samples", n_samples, 2)
    if quantile is not None:
        check_number("quantile", quantile, high=1.0)
    settings = {"perturbation": asdict(perturbation), "target": target, "n_samples": n_samples,
                "quantile": quantile, "seed": _seed(seed)}
    f = _Target(obj, target)
    base = f(theta)
    scale = perturbation.scale(theta, obj)
    generator = as_generator(seed)
    increases = []
    for _ in range(n_samples):
        z = scale * _draw(perturbation.law, theta.numel(), generator, theta)
        if quantile is None:
            increases.append(0.5 * (f(theta + z) + f(theta - z)) - base)
        else:
            increases.append(f(theta + z) - base)
    samples = torch.tensor(increases, dtype=torch.float64)
    value, stderr = (_mean_and_stderr(samples) if quantile is None
                     else _quantile_and_stderr(samples, quantile))
    return _result("mean_increase", settings, start, value, stderr, f.n_evals,
                   {target: base})


def _ascend_ball(value_and_grad: Callable, y: Tensor, n_steps: int) -> tuple[float, str]:
    """Projected normalised-gradient ascent on ``‖y‖ ≤ 1``; returns the best value reached and
    a note on the steps accepted.

    A step that does not increase the value is refused and its length halved; an accepted one
    doubles it (from 1, capped at the diameter 2), so near a quadratic maximum the iteration
    becomes the power method on the ball.
    """
    value, gradient = value_and_grad(y)
    step, accepted = 1.0, 0
    for _ in range(n_steps):
        norm = float(gradient.norm())
        if norm == 0.0:
            break
        candidate = y + (step / norm) * gradient
        candidate = candidate / max(1.0, float(candidate.norm()))
        new_value, new_gradient = value_and_grad(candidate)
        if new_value > value:
            y, value, gradient, step = candidate, new_value, new_gradient, min(2 * step, 2.0)
            accepted += 1
        else:
            step /= 2
    return value, f"{accepted} of {n_steps} steps accepted"


def _ascend_box(value_and_grad: Callable, y: Tensor, max_steps: int) -> tuple[float, str]:
    """SciPy L-BFGS-B on ``−value`` over ``|yᵢ| ≤ 1`` from y for ``max_steps`` iterations (its
    convergence tests switched off: the scaled gradients are tiny); returns the best value of any
    point it evaluated (all lie in the box) and SciPy's iteration count and message."""
    best = -math.inf

    def negated(point: np.ndarray) -> tuple[float, np.ndarray]:
        nonlocal best
        value, gradient = value_and_grad(torch.tensor(point).to(y))
        best = max(best, value)
        return -value, -gradient.detach().cpu().numpy().astype(np.float64)

    ones = np.ones(y.numel())
    result = minimize(negated, y.detach().cpu().numpy().astype(np.float64), jac=True,
                      method="L-BFGS-B", bounds=Bounds(-ones, ones),
                      options={"maxiter": max_steps, "ftol": 0.0, "gtol": 0.0})
    return best, f"{result.nit} iterations: {result.message}"


def max_increase(obj: Objective, theta: Tensor, perturbation: Perturbation, *,
                 n_steps: int = 20, n_restarts: int = 0, subspace_dim: int | None = None,
                 seed: int = 0) -> Measure:
    """A lower bound of ``max L(θ + z) − L(θ)`` over a ball or box ``perturbation``.

    ``"ball"``: projected gradient ascent (``_ascend_ball``) from a seeded random point at half
    the radius, ``n_steps`` loss+gradient evaluations after the first. ``"box"``: L-BFGS-B
    (``_ascend_box``) from 0, ``n_steps`` iterations (each one or more evaluations). Each of the
    ``n_restarts`` extra starts is a seeded random point (ball: half the radius; box: uniform).
    With ``subspace_dim`` p the variable is ``y ∈ Rᵖ``, ``z = A (s ⊙ y)`` with ``A =
    subspace_basis(n, p, seed)`` and ``s`` computed from ``A⁺θ`` (Keskar's subspace form).
    The best value over the starts is reported; every evaluated point is feasible.
    """
    start = time.perf_counter()
    theta = obj.check_theta(theta).detach()
    check_choice("law", perturbation.law, ("ball", "box"))
    settings = {"perturbation": asdict(perturbation), "n_steps": check_count("n_steps", n_steps),
                "n_restarts": check_count("n_restarts", n_restarts, 0), "subspace_dim": subspace_dim,
                "seed": _seed(seed)}
    generator = as_generator(seed)
    f = _Target(obj, "loss")
    base = f(theta)
    if subspace_dim is None:
        basis, coords = None, theta
    else:
        basis = subspace_basis(theta.numel(), subspace_dim, generator).to(theta)
        coords = basis.T @ theta
    scale = perturbation.scale(coords, obj if basis is None else None)

    def value_and_grad(y: Tensor) -> tuple[float, Tensor]:
        z = scale * y
        value, gradient = f.with_grad(theta + (z if basis is None else basis @ z))
        return value, scale * (gradient if basis is None else basis.T @ gradient)

    p = coords.numel()
    if perturbation.law == "ball":
        starts = [0.5 * d / d.norm() for d in (_draw("gaussian", p, generator, theta)
                                               for _ in range(1 + n_restarts))]
        ascend = _ascend_ball
    else:
        starts = [torch.zeros_like(coords)] + [_draw("uniform", p, generator, theta)
                                               for _ in range(n_restarts)]
        ascend = _ascend_box
    runs = [ascend(value_and_grad, y, n_steps) for y in starts]
    best = [value - base for value, _ in runs]
    return _result("max_increase", settings, start, max(best), None, f.n_evals,
                   {"loss": base, "increase_per_start": best,
                    "solver": [note for _, note in runs]})


def critical_radius(obj: Objective, theta: Tensor, perturbation: Perturbation, *,
                    target: str = "error", drop: float = 0.1, tol: float = 0.01,
                    max_steps: int = 15, n_samples: int = 10, seed: int = 0) -> Measure:
    """The radius r in ``[0, perturbation.radius]`` at which the mean change
    ``D(r) = |mean_k target(θ + s(r) ⊙ y_k) − target(θ)|`` reaches ``drop``, by bisection
    (Jiang et al.'s σ search).

    Each step probes the midpoint r: ``|D(r) − drop| < tol`` ends the search, ``D(r) > drop``
    moves the upper end down, otherwise the lower end up; after ``max_steps`` the last midpoint
    is returned. The ``n_samples`` draws ``y_k`` are the same at every r (common random
    numbers: D is then a fixed function of r and the search reproducible; Jiang's port redraws
    them per step). Cost: ``1 + steps · n_samples`` evaluations. ``stderr`` is None (a bisection
    root); ``info`` has the final bracket, ``D`` at the result and its standard error.
    """
    start = time.perf_counter()
    theta = obj.check_theta(theta).detach()
    check_choice("law", perturbation.law, SAMPLED_LAWS)
    settings = {"perturbation": asdict(perturbation), "target": target,
                "drop": check_number("drop", drop), "tol": check_number("tol", tol),
                "max_steps": check_count("max_steps", max_steps),
                "n_samples": check_count("n_samples", n_samples, 2), "seed": _seed(seed)}
    f = _Target(obj, target)
    base = f(theta)
    generator = as_generator(seed)
    state = generator.get_state()
    lower, upper = 0.0, perturbation.radius
    converged = False
    for step in range(1, max_steps + 1):
        radius = (lower + upper) / 2
        scale = replace(perturbation, radius=radius).scale(theta, obj)
        generator.set_state(state)
        values = torch.tensor([f(theta + scale * _draw(perturbation.law, theta.numel(),
                                                       generator, theta))
                               for _ in range(n_samples)], dtype=torch.float64)
        mean, stderr = _mean_and_stderr(values)
        displacement = abs(mean - base)
        if abs(displacement - drop) < tol:
            converged = True
            break
        if displacement > drop:
            upper = radius
        else:
            lower = radius
    info = {target: base, "lower": lower, "upper": upper, "displacement": displacement,
            "displacement_stderr": stderr, "steps": step, "converged": converged}
    return _result("critical_radius", settings, start, radius, None, f.n_evals, info)


# ---------------------------------------------------------------------------- spectral measures
def _spectral(obj: Objective, theta: Tensor, name: str, settings: dict,
              run: Callable[[SymmetricOperator], tuple]) -> Measure:
    """Run ``run(op) -> (value, stderr, info)`` on the Hessian operator at θ, timed and counted."""
    start = time.perf_counter()
    op = obj.hessian_op(obj.check_theta(theta).detach())
    value, stderr, info = run(op)
    return _result(name, settings, start, value, stderr, op.n_matvecs, info)


def _exact_moments(op: SymmetricOperator) -> tuple[float, float]:
    """``(tr A, ‖A‖_F²)`` from ``op.row_blocks`` (n matvecs), without holding the n×n matrix."""
    trace_sum = frob = 0.0
    for rows, block in op.row_blocks():
        trace_sum += float(block[:, rows].diagonal().sum())
        frob += float(block.pow(2).sum())
    return trace_sum, frob


def _trace_method(method: str, n_matvecs: int, n: int, minimum: int) -> str:
    """``"auto"`` → exact when n HVPs cost no more than the budget, else Hutch++."""
    check_choice("method", method, TRACE_METHODS)
    check_count("n_matvecs", n_matvecs, minimum)
    if method == "auto":
        return "exact" if n <= n_matvecs else "hutch++"
    return method


def lambda_max(obj: Objective, theta: Tensor, *, tol: float = 1e-6,
               max_steps: int | None = None, seed: int = 0) -> Measure:
    """Largest Hessian eigenvalue λ_max by Lanczos (``spectrum.extreme_eigenpairs``, relative
    residual ``tol``): a Ritz value, hence ≤ λ_max and within ``info["residual"]`` of an
    eigenvalue. Not reparametrisation-invariant (Dinh et al.)."""
    if max_steps is not None:
        check_count("max_steps", max_steps)
    settings = {"tol": check_number("tol", tol), "max_steps": max_steps, "seed": _seed(seed)}

    def run(op):
        pairs = extreme_eigenpairs(op, k=1, tol=tol, max_steps=max_steps, seed=seed)
        return float(pairs.eigenvalues[0]), None, {"residual": float(pairs.residuals[0]),
                                                   "converged": bool(pairs.converged[0])}
    return _spectral(obj, theta, "lambda_max", settings, run)


def _moment(obj: Objective, theta: Tensor, power: int, name: str, method: str,
            n_matvecs: int, seed: int) -> Measure:
    """``tr Hᵖ`` (p = 1 or 2): exact from ``_exact_moments``, or ``estimate_trace`` of the operator
    ``Hᵖ`` with ``n_matvecs // p`` of its applications (p HVPs each)."""
    settings = {"method": method, "n_matvecs": n_matvecs, "seed": _seed(seed)}
    chosen = _trace_method(method, n_matvecs, obj.num_params, 3 * power)
    if chosen == "xnystrace" and power % 2:
        raise ValueError("method 'xnystrace' needs a positive semi-definite operator: it is for "
                         "frobenius_sq (H²), not for the indefinite Hessian; use 'xtrace'")

    def run(op):
        if chosen == "exact":
            return _exact_moments(op)[power - 1], None, {"method": chosen}
        target = op if power == 1 else SymmetricOperator(lambda V: op(op(V)), op.n,
                                                         dtype=op.dtype, device=op.device)
        est = estimate_trace(target, n_matvecs=n_matvecs // power, method=chosen, seed=seed)
        return est.value, est.stderr, {"method": chosen}
    return _spectral(obj, theta, name, settings, run)


def trace(obj: Objective, theta: Tensor, *, method: str = "auto", n_matvecs: int = 99,
          seed: int = 0) -> Measure:
    """tr H. ``"exact"``: the diagonal from n HVPs (stderr None); ``"hutch++"`` /
    ``"hutchinson"`` / ``"xtrace"``: ``spectrum.estimate_trace`` with ``n_matvecs`` HVPs and its
    standard error; ``"auto"``: exact when n ≤ ``n_matvecs``, else Hutch++."""
    return _moment(obj, theta, 1, "trace", method, n_matvecs, seed)


def frobenius_sq(obj: Objective, theta: Tensor, *, method: str = "auto", n_matvecs: int = 99,
                 seed: int = 0) -> Measure:
    """``tr H² = ‖H‖_F² = Σ λᵢ²``. ``"exact"``: n HVPs; ``"hutch++"`` / ``"hutchinson"`` /
    ``"xtrace"`` / ``"xnystrace"`` (H² is PSD): ``estimate_trace`` of the operator ``V ↦ H(HV)``
    with ``n_matvecs // 2`` of its applications (two HVPs each; a Frobenius-specific estimator,
    ``‖Hz‖²`` per probe, would halve that); ``"auto"``: exact when n ≤ ``n_matvecs``, else
    Hutch++."""
    return _moment(obj, theta, 2, "frobenius_sq", method, n_matvecs, seed)


def near_zero_fraction(obj: Objective, theta: Tensor, *, atol: float = NEAR_ZERO_ATOL,
                       method: str = "auto", n_steps: int = 90, n_probes: int = 10,
                       seed: int = 0) -> Measure:
    """Fraction of Hessian eigenvalues with ``|λ| ≤ atol`` (absolute; Chaudhari et al.'s 1e-4).
    ``"dense"``: exact, from ``full_spectrum`` (n HVPs, memory checked); ``"slq"``:
    the SLQ quadrature weight on nodes in ``[−atol, atol]`` (``spectral_density`` with
    ``n_steps`` × ``n_probes`` HVPs), averaged over probes with its standard error; ``"auto"``:
    dense up to ``spectrum.DENSE_SPECTRUM_MAX_PARAMS`` parameters.

    SLQ resolves the spectrum only at the spacing of its ``n_steps`` nodes: when ``atol`` is
    below it, the near-zero cluster's node usually falls outside ``[−atol, atol]`` and the
    estimate is biased low (often 0, with a zero standard error that only reflects the probes).
    Past the dense limit, read it with a larger ``atol`` or from the smoothed density."""
    settings = {"atol": check_number("atol", atol, strict=False), "method": method,
                "n_steps": check_count("n_steps", n_steps),
                "n_probes": check_count("n_probes", n_probes, 2),
                "seed": _seed(seed)}
    chosen = check_choice("method", method, SPECTRUM_METHODS)
    if chosen == "auto":
        chosen = "dense" if obj.num_params <= DENSE_SPECTRUM_MAX_PARAMS else "slq"

    def run(op):
        if chosen == "dense":
            spectrum = full_spectrum(op, tol=0.0, atol=atol)
            return spectrum.n_zero / op.n, None, {"method": chosen}
        density = spectral_density(op, n_steps=n_steps, n_probes=n_probes, seed=seed)
        per_probe = (density.weights * (density.nodes.abs() <= atol)).sum(dim=1)
        value, stderr = _mean_and_stderr(per_probe)
        return value, stderr, {"method": chosen}
    name = _name("near_zero_fraction", None if atol == NEAR_ZERO_ATOL else f"atol{_fmt(atol)}")
    return _spectral(obj, theta, name, settings, run)


# ---------------------------------------------------------------------------- perturbation measures
def _scaled(kind: str, law: str, radius: float, mag_eps: float) -> Perturbation:
    """A measure's ``scaling`` option → the engine's: magnitude = Jiang's N(0, σ'²θᵢ² + ε²)."""
    if kind == "magnitude":
        return Perturbation(law, radius, "elementwise", floor=mag_eps)
    return Perturbation(law, radius, kind)


def _scaling_tags(scaling: str, mag_eps: float) -> tuple[str | None, str | None]:
    tag = {"none": None, "magnitude": "mag", "filter": "filter"}[scaling]
    eps_tag = f"mageps{_fmt(mag_eps)}" if scaling == "magnitude" and mag_eps != MAG_EPS else None
    return tag, eps_tag


def keskar_sharpness(obj: Objective, theta: Tensor, *, eps: float = 1e-3,
                     subspace_dim: int | None = None, max_steps: int = 10, n_restarts: int = 0,
                     seed: int = 0) -> Measure:
    """Keskar et al.'s ε-sharpness (Metric 2.1), in percent:
    ``100 · (max_{z ∈ C_ε} L(θ + z) − L(θ)) / (1 + L(θ))``, ``C_ε = {|zᵢ| ≤ ε (|θᵢ| + 1)}``.

    The maximum is taken by SciPy L-BFGS-B from z = 0 with ``max_steps`` iterations (Keskar:
    ≈10, inexact by design), plus ``n_restarts`` seeded uniform starts in the box; it is a lower
    bound of the true maximum (stderr None). At an exact critical point the ascent from 0 does
    not move: use restarts there. With ``subspace_dim`` p, ``z = A y`` over
    ``|yᵢ| ≤ ε (|(A⁺θ)ᵢ| + 1)`` with ``A = subspace_basis(n, p, seed)`` (orthonormal columns;
    Keskar's p = 100). ``info["raw"]`` is the maximum increase itself.
    """
    eps = check_number("eps", eps)
    if subspace_dim is not None:
        check_count("subspace_dim", subspace_dim)
    settings = {"eps": eps, "subspace_dim": subspace_dim,
                "max_steps": check_count("max_steps", max_steps),
                "n_restarts": check_count("n_restarts", n_restarts, 0), "seed": _seed(seed)}
    raw = max_increase(obj, theta, Perturbation("box", eps, "elementwise", eta=1.0),
                       n_steps=max_steps, n_restarts=n_restarts, subspace_dim=subspace_dim,
                       seed=seed)
    tag = None if subspace_dim is None else f"sub{subspace_dim}"
    return replace(raw, name=_name("keskar", tag, eps=eps), settings=settings,
                   value=100 * raw.value / (1 + raw.info["loss"]),
                   info={**raw.info, "raw": raw.value})


def average_sharpness(obj: Objective, theta: Tensor, *, sigma: float = 0.01,
                      scaling: str = "none", law: str = "gaussian", target: str = "loss",
                      n_samples: int = 100, quantile: float | None = None,
                      mag_eps: float = MAG_EPS, seed: int = 0) -> Measure:
    """Average-case sharpness ``E_z[target(θ + z)] − target(θ)`` (or its ``quantile``) with its
    standard error (``mean_increase``: antithetic pairs for the mean).

    ``z`` has per-coordinate std (gaussian) or half-width (uniform) ``sigma`` (``scaling="none"``),
    ``sqrt(sigma² θᵢ² + mag_eps²)`` (``"magnitude"``: Jiang et al.'s magnitude-aware noise,
    ε = 1e-3) or ``sigma`` times the filter rms (``"filter"``: Li et al.). For a quadratic the
    mean is ``sigma² tr(H) / 2`` (gaussian, no scaling) at any θ.
    """
    settings = {"sigma": check_number("sigma", sigma), "scaling": scaling, "law": law,
                "target": target, "n_samples": n_samples, "quantile": quantile,
                "mag_eps": check_number("mag_eps", mag_eps, strict=False), "seed": seed}
    check_choice("scaling", scaling, MEASURE_SCALINGS)
    raw = mean_increase(obj, theta, _scaled(scaling, law, sigma, mag_eps), target=target,
                        n_samples=n_samples, quantile=quantile, seed=seed)
    tag, eps_tag = _scaling_tags(scaling, mag_eps)
    name = _name("average_sharpness", tag, None if law == "gaussian" else law,
                 None if target == "loss" else target,
                 None if quantile is None else f"q{_fmt(quantile)}", eps_tag, sigma=sigma)
    return replace(raw, name=name, settings=settings)


def worst_sharpness(obj: Objective, theta: Tensor, *, rho: float = 0.05, n_steps: int = 20,
                    n_restarts: int = 0, seed: int = 0) -> Measure:
    """Worst-case ℓ2 sharpness ``max_{‖ε‖ ≤ rho} L(θ + ε) − L(θ)`` (SAM's ρ = 0.05) by
    multi-step projected gradient ascent (``max_increase``): a lower bound (stderr None). At a
    minimum of a quadratic it is ``rho² λ_max / 2``."""
    settings = {"rho": check_number("rho", rho), "n_steps": n_steps, "n_restarts": n_restarts,
                "seed": seed}
    raw = max_increase(obj, theta, Perturbation("ball", rho), n_steps=n_steps,
                       n_restarts=n_restarts, seed=seed)
    return replace(raw, name=_name("worst_sharpness", rho=rho), settings=settings)


def asam(obj: Objective, theta: Tensor, *, rho: float = 0.5, eta: float = ASAM_ETA,
         n_steps: int = 20, n_restarts: int = 0, seed: int = 0) -> Measure:
    """Adaptive sharpness (Kwon et al.'s ASAM) ``max_{‖T⁻¹ε‖ ≤ rho} L(θ + ε) − L(θ)``,
    ``T = diag(|θ|) + eta``, by projected gradient ascent (a lower bound, stderr None).

    Unlike ASAM's code, T scales every parameter, biases too (theirs leaves biases unscaled), so
    the measure is invariant to a ReLU layer rescaling θ → Rθ up to the eta terms: exactly when
    eta = 0. At a minimum ``m`` of a diagonal quadratic it is
    ``rho² maxᵢ hᵢ (|mᵢ| + eta)² / 2``.
    """
    settings = {"rho": check_number("rho", rho), "eta": check_number("eta", eta, strict=False),
                "n_steps": n_steps, "n_restarts": n_restarts, "seed": seed}
    raw = max_increase(obj, theta, Perturbation("ball", rho, "elementwise", eta=eta),
                       n_steps=n_steps, n_restarts=n_restarts, seed=seed)
    tag = None if eta == ASAM_ETA else f"eta{_fmt(eta)}"
    return replace(raw, name=_name("asam", tag, rho=rho), settings=settings)


def pac_bayes_sigma(obj: Objective, theta: Tensor, *, scaling: str = "none",
                    target: str = "error", drop: float = 0.1, tol: float = 0.01,
                    max_sigma: float = 2.0, max_steps: int = 15, n_samples: int = 10,
                    mag_eps: float = MAG_EPS, seed: int = 0) -> Measure:
    """Jiang et al.'s PAC-Bayes σ*: the largest noise std whose mean 0-1 training error rises by
    ``drop`` (0.1, within ``tol`` 0.01), by bisection on ``[0, max_sigma]`` (``critical_radius``:
    depth ``max_steps`` 15, ``n_samples`` 10 Monte-Carlo draws).

    The noise is ``N(0, σ²)`` per coordinate (``scaling="none"``; the std is σ — the port that
    passes σ² as the std is wrong) or ``N(0, σ'² θᵢ² + mag_eps²)`` (``"magnitude"``). The
    flatness measure is ``1 / σ*²`` (a larger σ* is flatter). stderr is None; ``info`` holds the
    bracket and the displacement reached.
    """
    settings = {"scaling": scaling, "target": target, "drop": check_number("drop", drop),
                "tol": tol, "max_sigma": check_number("max_sigma", max_sigma),
                "max_steps": max_steps, "n_samples": n_samples,
                "mag_eps": check_number("mag_eps", mag_eps, strict=False), "seed": seed}
    check_choice("scaling", scaling, MEASURE_SCALINGS)
    raw = critical_radius(obj, theta, _scaled(scaling, "gaussian", max_sigma, mag_eps),
                          target=target, drop=drop, tol=tol, max_steps=max_steps,
                          n_samples=n_samples, seed=seed)
    tag, eps_tag = _scaling_tags(scaling, mag_eps)
    name = _name("pac_bayes", tag, None if target == "error" else target,
                 None if drop == 0.1 else f"drop{_fmt(drop)}", eps_tag, "sigma")
    return replace(raw, name=name, settings=settings)


def local_energy(obj: Objective, theta: Tensor, *, sigma: float = 0.1, target: str = "loss",
                 n_samples: int = 100, seed: int = 0) -> Measure:
    """Pittorino et al.'s local energy ``δE = E_z[L(θ ⊙ (1 + sigma z))] − L(θ)``, z ~ N(0, I),
    with its standard error: multiplicative noise, i.e. std ``sigma |θᵢ|`` (``mean_increase``
    with elementwise scaling, eta = 0). Exactly invariant to positive rescalings θ → Rθ that
    leave the function unchanged. For a quadratic ``½ Σ hᵢ θᵢ²`` it is ``sigma²/2 Σ hᵢ θᵢ²``."""
    settings = {"sigma": check_number("sigma", sigma), "target": target, "n_samples": n_samples,
                "seed": seed}
    raw = mean_increase(obj, theta, Perturbation("gaussian", sigma, "elementwise"),
                        target=target, n_samples=n_samples, seed=seed)
    name = _name("local_energy", None if target == "loss" else target, sigma=sigma)
    return replace(raw, name=name, settings=settings)


MEASURES: dict[str, Callable[..., Measure]] = {
    "lambda_max": lambda_max, "trace": trace, "frobenius_sq": frobenius_sq,
    "near_zero_fraction": near_zero_fraction, "keskar": keskar_sharpness,
    "average_sharpness": average_sharpness, "worst_sharpness": worst_sharpness, "asam": asam,
    "pac_bayes": pac_bayes_sigma, "local_energy": local_energy,
}


def measure_options(kind: str) -> dict[str, object]:
    """The options of ``kind`` and their defaults."""
    check_choice("kind", kind, tuple(MEASURES))
    return {p.name: p.default for p in inspect.signature(MEASURES[kind]).parameters.values()
            if p.kind is inspect.Parameter.KEYWORD_ONLY}


def evaluate(obj: Objective, theta: Tensor, spec: Mapping) -> Measure:
    """Run one spec ``{"kind": ..., **options}`` (e.g. from a study file); unknown kinds and
    options raise ValueError naming them and listing the known ones."""
    if not isinstance(spec, Mapping) or "kind" not in spec:
        raise ValueError(f"a measure spec must be a mapping with a 'kind'; got {spec!r}")
    options = {k: v for k, v in spec.items() if k != "kind"}
    known = measure_options(spec["kind"])
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for measure {spec['kind']!r}; "
                         f"options: {', '.join(known)}")
    return MEASURES[spec["kind"]](obj, theta, **options)
