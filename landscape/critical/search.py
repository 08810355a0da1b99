"""Critical-point searches with honest outcome labels, single and many starts.

Statuses (thresholds stored with every result):

* ``"critical"``: the final ‖g‖ ≤ ``grad_tol`` (default 1e-8, i.e. ‖g‖² ≤ 1e-16; Frye et al. used
  ‖g‖² < 1e-10 as a filter, and successful float64 runs reach ‖g‖² ≈ 1e-30). Searches run past the
  threshold to ``stop_tol`` (or until no step is acceptable) and are filtered at the end.
* ``"gradient-flat"``: not critical and ``‖Hg‖ ≤ flat_tol · ‖H‖ · ‖g‖`` at the end (g lies in the
  near-kernel of H, so Newton-type steps and gradient-norm descent stall although ‖g‖ does not
  vanish; Frye et al. 2021). ‖H‖ is the largest |eigenvalue|, estimated by 20 Lanczos steps at the
  start and end of the search. Such points are never counted as critical.
  ``passed_gradient_flat`` records whether any iterate met the same test on the way.
* ``"max-iterations"``: neither, when the iteration cap was hit or no acceptable step was found
  (``stop_reason`` says which).
* ``"diverged"``: the loss or gradient became non-finite, or θ moved further than
  ``diverge_factor · max(1, ‖θ₀‖)`` from the start.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor
from tqdm.auto import tqdm

from landscape.critical.damped_newton import DampedNewton
from landscape.critical.eigenvector_following import EigenvectorFollowing
from landscape.critical.gnm import GradientNormDescent
from landscape.critical.levenberg_marquardt import LevenbergMarquardt
from landscape.critical.newton_mr import NewtonMR
from landscape.critical.starts import Start
from landscape.critical.steps import DENSE_MAX_PARAMS, CountingObjective, State, newton_space
from landscape.linalg.lanczos import lanczos
from landscape.linalg.probes import Seed, as_generator, gaussian
from landscape.objective import NonFiniteLossError, Objective
from landscape.spectrum import (
    DEFAULT_INDEX_ATOL,
    DEFAULT_INDEX_TOL,
    DENSE_SPECTRUM_MAX_PARAMS,
    estimate_index,
    full_spectrum,
)

METHODS = {
    "levenberg-marquardt": LevenbergMarquardt,
    "newton-mr": NewtonMR,
    "damped-newton": DampedNewton,
    "gnm": GradientNormDescent,
    "eigenvector-following": EigenvectorFollowing,
}
AUTO = "auto"
DEFAULT_METHOD = AUTO
STATUSES = ("critical", "gradient-flat", "max-iterations", "diverged")
HISTORY_FIELDS = ("loss", "grad_norm_sq", "hg_norm", "gradient_flatness", "step_size", "inner")


@dataclass(frozen=True)
class Thresholds:
    """The numbers that decide a search's status and its index (stored with every result).

    ``index_tol`` / ``index_atol``: relative tolerance and absolute floor of the negative count
    (``spectrum.count_inertia``), used both by searches that pick their target index from the
    spectrum (eigenvector following) and by ``analyse``.
    """

    grad_tol: float = 1e-8
    stop_tol: float = 1e-13
    flat_tol: float = 5e-4
    diverge_factor: float = 1e3
    max_iterations: int = 300
    max_failures: int = 3
    index_tol: float = DEFAULT_INDEX_TOL
    index_atol: float = DEFAULT_INDEX_ATOL


@dataclass(frozen=True)
class CriticalPoint:
    """Outcome of one search (fields after ``history`` are filled by ``find_critical_points``).

    Attributes:
        theta: final iterate ``[n]``.
        status: one of ``STATUSES``; ``stop_reason``: ``"converged"`` (‖g‖ ≤ stop_tol),
            ``"no-progress"``, ``"iteration-cap"``, ``"non-finite"`` or ``"escaped"``.
        loss, grad_norm: L and ‖g‖ at ``theta``; ``hg_norm``: ‖Hg‖; ``gradient_flatness``:
            ‖Hg‖/(‖H‖‖g‖), the search diagnostic (0: g in ker H; not a sharpness measure).
        history: per-iteration tensors ``loss, grad_norm_sq, hg_norm, gradient_flatness,
            step_size, inner`` (index 0 is the start; ``step_size`` / ``inner`` of index 0 are
            NaN / 0).
        index: fraction of negative Hessian eigenvalues below ``−max(index_tol·max|λ|,
            index_atol)``, from the dense spectrum or Lanczos (``index_method``, see ``analyse``);
            ``n_negative_min`` / ``n_negative_max``: the counts at that threshold ×10 and ÷10;
            ``index_stable``: they agree. An unstable index is *uncertain*: only the range is
            known, and figures and rank correlations leave such points out.
        newton_step_norm: length of the minimum-norm Newton step from ``theta`` (the distance to
            the exact critical point to first order); ``certified``: critical, index stable and
            that step ≤ 1e-6 · max(1, ‖θ‖).
        cluster: critical points with equal loss (to 1e-8 relative) and inertia share an id.
    """

    theta: Tensor
    status: str
    stop_reason: str
    method: str
    loss: float
    grad_norm: float
    hg_norm: float
    gradient_flatness: float
    hessian_norm: float
    passed_gradient_flat: bool
    iterations: int
    n_grads: int
    n_hvps: int
    wall_time: float
    thresholds: Thresholds
    history: dict[str, Tensor] = field(repr=False)
    label: str = ""
    error: float | None = None
    index: float | None = None
    n_negative: int | None = None
    n_zero: int | None = None
    n_positive: int | None = None
    index_tol: float | None = None
    index_atol: float | None = None
    n_negative_min: int | None = None
    n_negative_max: int | None = None
    index_method: str | None = None
    index_stable: bool | None = None
    eigenvalues: Tensor | None = field(default=None, repr=False)
    newton_step_norm: float | None = None
    certified: bool = False
    cluster: int | None = None


def hessian_norm(obj: Objective | CountingObjective, theta: Tensor, steps: int = 20,
                 seed: Seed = 0) -> float:
    """Estimate of ‖H‖₂ = max |λ| from a short Lanczos run (a lower bound, accurate for outliers)."""
    v0 = gaussian(1, obj.num_params, as_generator(seed), dtype=theta.dtype, device=theta.device)
    values = lanczos(lambda V: obj.hvp(theta, V), v0, min(steps, obj.num_params)).ritz()[0]
    return float(values.abs().max())


def resolve_method(method: str, num_params: int) -> str:
    """``"auto"`` → ``"eigenvector-following"`` up to ``DENSE_MAX_PARAMS`` parameters (it needs
    the dense Hessian; best on the benchmark, see the README), else ``"levenberg-marquardt"``
    (matrix-free). Other names are checked and returned unchanged."""
    if method == AUTO:
        return ("eigenvector-following" if num_params <= DENSE_MAX_PARAMS
                else "levenberg-marquardt")
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {[AUTO, *sorted(METHODS)]}")
    return method


def find_critical_point(obj: Objective, theta0: Tensor, method: str = DEFAULT_METHOD, *,
                        thresholds: Thresholds | None = None, label: str = "",
                        **options) -> CriticalPoint:
    """Search for a critical point (minimum or saddle) of ``obj`` near ``theta0``.

    ``method``: a name of ``METHODS`` or ``"auto"`` (``resolve_method``; the result records the
    method used). ``options`` go to the method's constructor; eigenvector following counts
    negative eigenvalues with the thresholds' index tolerance (its ``n_negative`` option: the
    number of modes to climb, or ``"follow"`` / ``"start"``). Float64 objectives are strongly
    advised: the default ``grad_tol`` is below float32's noise floor.
    """
    th = thresholds or Thresholds()
    method = resolve_method(method, obj.num_params)
    if method == "eigenvector-following":
        options = {"index_tol": th.index_tol, "index_atol": th.index_atol, **options}
    stepper = METHODS[method](**options)
    counted = CountingObjective(obj)
    start_time = time.perf_counter()
    theta = theta0.to(obj.device, obj.dtype).clone()
    limit = th.diverge_factor * max(1.0, float(theta.norm()))
    history: dict[str, list[float]] = {k: [] for k in HISTORY_FIELDS}
    state, hnorm, stop_reason, failures = None, math.nan, "iteration-cap", 0
    passed_flat = False
    try:
        loss, grad = counted.loss_and_grad(theta)
        hnorm = hessian_norm(counted, theta)
        state = State(theta, float(loss), grad, counted.hvp(theta, grad))
        _record(history, state, hnorm, math.nan, 0)
        for _ in range(th.max_iterations):
            if math.sqrt(state.grad_norm_sq) <= th.stop_tol:
                stop_reason = "converged"
                break
            step = stepper.step(counted, state)
            if step is None:
                failures += 1
                if failures >= th.max_failures:
                    stop_reason = "no-progress"
                    break
                continue
            failures = 0
            if float((step.theta - theta0.to(step.theta)).norm()) > limit:
                stop_reason = "escaped"
                state = replace(state, theta=step.theta, loss=step.loss, grad=step.grad)
                break
            state = State(step.theta, step.loss, step.grad, counted.hvp(step.theta, step.grad))
            flat = _record(history, state, hnorm, step.step_size, step.inner)
            passed_flat |= flat <= th.flat_tol and math.sqrt(state.grad_norm_sq) > th.grad_tol
        if stop_reason != "escaped":
            hnorm = hessian_norm(counted, state.theta)
    except NonFiniteLossError:
        stop_reason = "non-finite"
    return _conclude(obj, state, theta, stop_reason, method, hnorm, passed_flat, counted,
                     time.perf_counter() - start_time, th, history, label)


def gradient_flatness(hg_norm: float, hessian_norm: float, grad_norm: float) -> float:
    """‖Hg‖ / (‖H‖ ‖g‖) ∈ [0, 1]: 0 when g lies in ker H (H = 0 included); NaN when g = 0."""
    if grad_norm == 0:
        return math.nan
    if hg_norm == 0:
        return 0.0
    return hg_norm / (hessian_norm * grad_norm)


def _record(history, state: State, hnorm: float, step_size: float, inner: int) -> float:
    gnorm = math.sqrt(state.grad_norm_sq)
    hg = float(state.hg.norm())
    flat = gradient_flatness(hg, hnorm, gnorm)
    for key, value in zip(HISTORY_FIELDS,
                          (state.loss, state.grad_norm_sq, hg, flat, step_size, inner)):
        history[key].append(float(value))
    return flat


def _conclude(obj, state, theta0, stop_reason, method, hnorm, passed_flat, counted, wall, th,
              history, label) -> CriticalPoint:
    if state is None or stop_reason in ("non-finite", "escaped"):
        theta = theta0 if state is None else state.theta
        status, loss, gnorm, hg, flat = "diverged", math.nan, math.nan, math.nan, math.nan
        if state is not None:
            loss, gnorm = state.loss, math.sqrt(state.grad_norm_sq)
    else:
        theta, loss = state.theta, state.loss
        gnorm, hg = math.sqrt(state.grad_norm_sq), float(state.hg.norm())
        flat = gradient_flatness(hg, hnorm, gnorm)
        if gnorm <= th.grad_tol:
            status = "critical"
        elif flat <= th.flat_tol:
            status = "gradient-flat"
        else:
            status = "max-iterations"
    tensors = {k: torch.tensor(v, dtype=torch.float64) for k, v in history.items()}
    return CriticalPoint(
        theta=theta.detach(), status=status, stop_reason=stop_reason, method=method, loss=loss,
        grad_norm=gnorm, hg_norm=hg, gradient_flatness=flat, hessian_norm=hnorm,
        passed_gradient_flat=passed_flat, iterations=len(history["loss"]) - 1 if history["loss"]
        else 0, n_grads=counted.n_grads, n_hvps=counted.n_hvps, wall_time=wall, thresholds=th,
        history=tensors, label=label)


def analyse(obj: Objective, point: CriticalPoint, *, keep_eigenvalues: bool = True,
            max_dim: int = 300, dense_max_params: int = DENSE_SPECTRUM_MAX_PARAMS,
            seed: Seed = 0) -> CriticalPoint:
    """Add error, index (with its stability band) and certification.

    The index is counted with the point's ``thresholds.index_tol`` / ``index_atol`` — the numbers
    the search used — from the dense spectrum up to ``dense_max_params`` parameters
    (``index_method = "dense"``), else from Lanczos extremes (``spectrum.estimate_index``:
    ``"lanczos"``, or ``"lanczos-lower-bound"`` when the negative part was not reached; the
    near-zero and positive counts and the eigenvalues are then not known and left None).
    """
    if point.status == "diverged":
        return point
    theta, th = point.theta, point.thresholds
    try:
        error = obj.error(theta)
    except ValueError:
        error = None
    if obj.num_params <= dense_max_params:
        spec = full_spectrum(obj, theta, tol=th.index_tol, atol=th.index_atol)
        inertia, eigenvalues, method = spec.inertia, spec.eigenvalues.cpu(), "dense"
        n_negative, n_zero, n_positive = inertia.n_negative, inertia.n_zero, inertia.n_positive
        low, high, stable = inertia.n_negative_min, inertia.n_negative_max, inertia.stable
    else:
        est = estimate_index(obj, theta, tol=th.index_tol, atol=th.index_atol, seed=seed)
        n_negative, n_zero, n_positive, eigenvalues = est.n_negative, None, None, None
        method = "lanczos" if est.complete else "lanczos-lower-bound"
        low, high, stable = est.n_negative_min, est.n_negative_max, est.stable
    step_norm = math.nan
    if point.grad_norm > 0:
        space = newton_space(obj, theta, obj.grad(theta), max_dim=max_dim)
        step_norm = float(space.to_full(space.levenberg_marquardt(0.0)).norm())
    elif point.grad_norm == 0:
        step_norm = 0.0
    certified = (point.status == "critical" and stable
                 and step_norm <= 1e-6 * max(1.0, float(theta.norm())))
    return replace(point, error=error, index=n_negative / obj.num_params, n_negative=n_negative,
                   n_zero=n_zero, n_positive=n_positive, index_tol=th.index_tol,
                   index_atol=th.index_atol, n_negative_min=low, n_negative_max=high,
                   index_method=method, index_stable=stable,
                   eigenvalues=eigenvalues if keep_eigenvalues else None,
                   newton_step_norm=step_norm, certified=certified)


def cluster_ids(statuses: Sequence[str], n_negative: Sequence[int | None],
                n_zero: Sequence[int | None], losses: Sequence[float],
                rtol: float = 1e-8) -> list[int | None]:
    """Duplicate ids of critical points: equal inertia and loss (to ``rtol`` relative) share an
    id (numbered by first appearance); non-critical or unanalysed points get None.

    Spectra are not compared: reparametrisation symmetries (e.g. GL(p) in linear layers) move
    Hessian eigenvalues along a set of equivalent critical points.
    """
    reps: list[tuple[int, int, float]] = []
    out: list[int | None] = []
    for status, neg, zero, loss in zip(statuses, n_negative, n_zero, losses, strict=True):
        if status != "critical" or neg is None:
            out.append(None)
            continue
        for cid, (r_neg, r_zero, r_loss) in enumerate(reps):
            if (r_neg, r_zero) == (neg, zero) and abs(r_loss - loss) <= rtol * max(1.0,
                                                                                   abs(r_loss)):
                out.append(cid)
                break
        else:
            reps.append((neg, zero, loss))
            out.append(len(reps) - 1)
    return out


def assign_clusters(points: list[CriticalPoint], rtol: float = 1e-8) -> list[CriticalPoint]:
    """``points`` with ``cluster`` set by ``cluster_ids``."""
    ids = cluster_ids([p.status for p in points], [p.n_negative for p in points],
                      [p.n_zero for p in points], [p.loss for p in points], rtol)
    return [replace(p, cluster=cid) for p, cid in zip(points, ids, strict=True)]


def find_critical_points(obj: Objective, starts: Sequence[Start | Tensor],
                         method: str = DEFAULT_METHOD, *, thresholds: Thresholds | None = None,
                         progress: bool = True, **options) -> list[CriticalPoint]:
    """Run one search per start (θ tensors or ``Start``s) and analyse every non-diverged end point.

    A diverging search is labelled ``"diverged"`` and does not stop the others. Each end point gets
    its classification error, index (dense or Lanczos, see ``analyse``), stability and
    certification; duplicates among critical points share a ``cluster`` id.
    """
    items = [s if isinstance(s, Start) else Start(s, f"start-{i}") for i, s in enumerate(starts)]
    results = []
    bar = tqdm(items, desc=f"critical points ({resolve_method(method, obj.num_params)})",
               disable=not progress, unit="start")
    for item in bar:
        point = find_critical_point(obj, item.theta, method, thresholds=thresholds,
                                    label=item.label, **options)
        results.append(analyse(obj, point))
        bar.set_postfix(status=point.status, grad_norm=f"{point.grad_norm:.1e}")
    return assign_clusters(results)
