"""MINRES-QLP: minimum-length least-squares solutions of singular symmetric systems.

Solves ``min ‖(A − σI)x − b‖`` and, among the minimisers, returns (approximately) the one of minimum
length, ``x = (A − σI)⁺b``, for a symmetric, possibly indefinite and singular operator available
only as ``matvec(v) = A v`` (Choi, Paige & Saunders, "MINRES-QLP: a Krylov subspace method for
indefinite or singular symmetric systems", SIAM J. Sci. Comput. 33(4):1810–1836, 2011; S.-C. Choi,
PhD thesis, Stanford, 2006). Newton-MR uses it for the step ``p ≈ −H⁺g`` (b = −g). Written from the
mathematics below; flags and defaults follow the reference code.

Mathematics. Write ``A`` for ``A − σI``. Lanczos from ``v₁ = b/β₁`` gives ``A V_k = V_{k+1} T̲_k``
with the ``(k+1)×k`` tridiagonal ``T̲_k`` (diagonal α, off-diagonal β); the iterate is
``x_k = V_k y_k`` with ``y_k`` the minimum-length solution of ``min ‖T̲_k y − β₁e₁‖``. Left
reflections give ``Q_k T̲_k = [R_k; 0]`` and ``Q_k β₁e₁ = [t_k; φ_k]``, so ``‖r_k‖ = φ_k``; right
reflections give ``R_k = L_k P_k`` with L lower triangular. With ``W_k = V_k P_kᵀ`` (orthonormal
columns) and ``L_k u_k = t_k``: ``x_k = W_k u_k``, ``‖x_k‖ = ‖u_k‖``. Only the last two entries of
``u_k`` and the last two columns of ``W_k`` change from step to step, so a step costs one operator
application and ``O(n)`` vector work. The LQ factorisation is rank-revealing: the last diagonal
``μ̄_k`` of ``L_k`` equals ``‖A w̄_k‖`` for the unit last column ``w̄_k``, so a numerically singular
``T̲_k`` shows up as a tiny ``μ̄_k`` whose column can be dropped (the minimum-length choice). While
the condition estimate ``‖A‖/min|μ|`` is below ``trancond`` the cheaper MINRES update
``x_k = x_{k-1} + τ_k d_k`` (``D_k = V_k R_k⁻¹``) is used, and ``W`` is formed as ``D_k L_k`` at
the switch; in exact arithmetic both updates give the same iterate.

Null directions (b with a component in ker A — the gradient-flat case of Newton-MR). Lanczos
then finds a Ritz vector ``w̄_k`` with ``‖A w̄_k‖ = |μ̄_k| → 0``, and the least-squares iterate
carries a coefficient along it that grows without bound (this is scipy ``minres``'s huge
solution). The least-squares problem in the Krylov space has sensitivity ``κ²·eps·relres`` with
``κ = ‖A‖/|μ̄_k|``, so its solution has no correct digits along ``w̄_k`` once
``|μ̄_k| ≤ ‖A‖·√(eps·relres)``. This implementation therefore

* stops at that point (flag 9) and returns x without the ``w̄_k`` component: the minimum-length
  least-squares solution to the accuracy floating point allows (about √eps in ``relAres``; further
  iterations only make it worse);
* drops the ``w̄_k`` component on a least-squares exit (flags 2, 4) when ``|μ̄_k| ≤ √rtol·‖A‖``,
  and on flag 7/8 exits when moreover the residual looks incompatible
  (``‖Ar‖/(‖A‖‖r‖) < ‖r‖/‖b‖``; for flag 7 also when ``|μ̄_k| ≤ ‖A‖/acondlim``);
* never lets ‖x‖ exceed ``maxxnorm`` (the component that would is dropped, flag 6).

On an indefinite rank-150 test matrix (n = 200) with 10 % or 90 % of ‖b‖² in ker A this returns
``A⁺b`` to 1e-8…2e-7 relative error (kernel part < 1e-12) in 100–130 steps, where scipy's
``minres`` reports success with a kernel component of order ‖A⁺b‖ or larger (often ~1e9).

Cost: ``k`` operator applications for ``k`` iterations, plus two at the end: the true residual
``r = b − Ax`` and ``Ar`` are recomputed, so ``relres``/``relAres``/``rnorm``/``arnorm`` describe
the returned x (not recurrence estimates); a non-convergent stop (flags 6–9) whose recomputed
residuals pass a test is reported with that test's flag. Memory: about ten vectors of length n,
whatever k. No reorthogonalisation (as in the reference), so hard problems can need more than n
steps. All tensors get b's dtype and device; scalar recurrences are Python floats (double). The
solver is not differentiable: vector work runs under ``torch.no_grad()``, matvec is called in the
caller's grad mode and its output is detached. There is no ``x0``: to start from ``x0``, solve for
the correction with ``b − (A − σI)x0`` (minimum length then refers to the correction).

Example::

    >>> import torch
    >>> A = torch.diag(torch.tensor([2.0, -1.0, 0.0], dtype=torch.float64))
    >>> b = torch.tensor([2.0, 1.0, 1.0], dtype=torch.float64)  # b[2] lies in ker A
    >>> res = minres_qlp(lambda v: A @ v, b)
    >>> res.flag_name, [round(float(t), 10) + 0.0 for t in res.x], round(res.rnorm, 10)
    ('least_squares', [1.0, -1.0, 0.0], 1.0)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

MatVec = Callable[[Tensor], Tensor]

#: ``flag → (name, meaning)``; the numbering follows Choi, Paige & Saunders' MATLAB code.
FLAGS: dict[int, tuple[str, str]] = {
    0: ("b_zero", "b = 0, so x = 0 is the exact solution; no iterations were run"),
    1: ("solved", "x solves the system: relres = ‖r‖/(‖A‖‖x‖ + ‖b‖) ≤ rtol"),
    2: ("least_squares", (
        "x is a least-squares solution: relAres = ‖Ar‖/(‖A‖‖r‖) ≤ rtol while relres > rtol, "
        "i.e. the system is incompatible (b has a component in ker A); the null direction "
        "found in the Krylov space is then removed from x, which can leave the returned x "
        "with a somewhat larger relAres")),
    3: ("solved_eps", "as 1, at machine precision: relres ≤ eps"),
    4: ("least_squares_eps", "as 2, at machine precision: relAres ≤ eps"),
    5: ("eigenvector", (
        "‖x‖ ≥ ‖b‖/(eps‖A‖): shift is (close to) an eigenvalue and x/‖x‖ approximates its "
        "eigenvector")),
    6: ("xnorm_exceeded", (
        "‖x‖ would exceed maxxnorm; the component that would have made it so was dropped")),
    7: ("acond_exceeded", "the condition estimate ‖A‖/min|μ| exceeded acondlim"),
    8: ("maxit", "maxit iterations without passing a test"),
    9: ("singular", (
        "singular and incompatible: the Krylov space holds a null vector w of A "
        "(‖Aw‖ ≤ ‖A‖√(eps·relres)), so the least-squares solution cannot be improved in this "
        "precision; x is it without the w component (relAres says how close it got to rtol); "
        "also a Lanczos breakdown (β_{k+1} ≤ eps‖A‖) that passed no test")),
}


@dataclass(frozen=True)
class MinresQLPResult:
    """Output of ``minres_qlp``. The flag is decided on the recurrence estimates (for the iterate
    before a null direction is removed); the residual quantities are recomputed for the returned x.

    Attributes:
        x: ``[n]`` solution (b's dtype and device).
        flag: why the iteration stopped, see ``FLAGS``: 0 b = 0; 1 solved (relres ≤ rtol);
            2 least-squares solution of an incompatible system (relAres ≤ rtol); 3/4 as 1/2 at
            machine precision; 5 eigenvector; 6 ‖x‖ capped at maxxnorm; 7 cond > acondlim;
            8 maxit; 9 singular incompatible system solved as far as precision allows.
        flag_name: ``FLAGS[flag][0]``.
        iterations: Lanczos steps, i.e. operator applications excluding the two final checks.
        qlp_iterations: how many of them were QLP steps (the others were MINRES steps).
        relres: ``‖r‖/(anorm·‖x‖ + ‖b‖)``, r = b − (A − σI)x.
        relAres: ``‖(A − σI)r‖/(anorm·‖r‖)`` (0 when r = 0).
        anorm: estimate (a lower bound) of ‖A − σI‖ from the Lanczos coefficients.
        acond: estimate of the condition number of A − σI on the Krylov space.
        xnorm: ‖x‖.
        rnorm: ‖r‖.
        arnorm: ‖(A − σI)r‖.
        residual: ``[n]`` r itself, so that ``(A − σI)x = b − r`` costs no further matvec.
    """

    x: Tensor
    flag: int
    flag_name: str
    iterations: int
    qlp_iterations: int
    relres: float
    relAres: float
    anorm: float
    acond: float
    xnorm: float
    rnorm: float
    arnorm: float
    residual: Tensor


def _reflector(a: float, b: float) -> tuple[float, float, float]:
    """``(c, s, r)`` of the symmetric reflector ``[[c, s], [s, −c]]`` mapping ``(a, b)`` to
    ``(r, 0)``, ``r = √(a² + b²) ≥ 0``; ``(1, 0, 0)`` for ``a = b = 0``."""
    r = math.hypot(a, b)
    if r == 0.0:
        return 1.0, 0.0, 0.0
    return a / r, b / r, r


def _check_inputs(b: Tensor, rtol: float, maxit: int | None, maxxnorm: float, acondlim: float,
                  trancond: float) -> None:
    if not isinstance(b, Tensor):
        raise TypeError(f"b must be a torch.Tensor; got {type(b).__name__}")
    if b.dim() != 1:
        raise ValueError(f"b must be 1-D (shape [n]); got shape {tuple(b.shape)}")
    if not b.is_floating_point():
        raise TypeError(f"b must have a real floating dtype; got {b.dtype}")
    if b.numel() == 0:
        raise ValueError("b is empty")
    if not rtol > 0:
        raise ValueError(f"rtol must be > 0; got {rtol}")
    if maxit is not None and maxit < 1:
        raise ValueError(f"maxit must be >= 1; got {maxit}")
    for name, value in (("maxxnorm", maxxnorm), ("acondlim", acondlim), ("trancond", trancond)):
        if not value > 0:
            raise ValueError(f"{name} must be > 0; got {value}")


def minres_qlp(matvec: MatVec, b: Tensor, *, rtol: float = 1e-10, maxit: int | None = None,
               shift: float = 0.0, maxxnorm: float = 1e7, acondlim: float = 1e15,
               trancond: float = 1e7) -> MinresQLPResult:
    """Minimum-length solution of ``min ‖(A − shift·I)x − b‖`` for symmetric A (see module).

    Args:
        matvec: ``v ↦ A v`` for 1-D v of b's shape, dtype and device; A must be symmetric.
        b: ``[n]`` right-hand side, real floating dtype, any device.
        rtol: tolerance of the tests ``relres ≤ rtol`` (flag 1) and ``relAres ≤ rtol`` (flag 2).
            For incompatible systems, relAres below about √eps is out of reach (flag 9 instead).
        maxit: iteration limit; default ``min(4n, 10 000)`` (4n as in the reference code; without
            reorthogonalisation more than n steps can be needed). HVP users should set it.
        shift: σ; the operator is A − σI.
        maxxnorm: cap on ‖x‖ (flag 6); clipped to 1/eps.
        acondlim: cap on the condition estimate (flag 7); clipped to 0.1/eps.
        trancond: MINRES updates while the condition estimate is below it, QLP updates after
            (1 → QLP throughout; ≥ acondlim → MINRES unless a component must be dropped).

    Returns:
        ``MinresQLPResult``.
    """
    _check_inputs(b, rtol, maxit, maxxnorm, acondlim, trancond)
    grad_mode = torch.is_grad_enabled()
    with torch.no_grad():
        return _solve(matvec, b.detach(), grad_mode, rtol=rtol, maxit=maxit, shift=float(shift),
                      maxxnorm=maxxnorm, acondlim=acondlim, trancond=trancond)


def _solve(matvec: MatVec, b: Tensor, grad_mode: bool, *, rtol: float, maxit: int | None,
           shift: float, maxxnorm: float, acondlim: float, trancond: float) -> MinresQLPResult:
    n = b.shape[0]
    maxit = min(4 * n, 10_000) if maxit is None else int(maxit)
    eps = torch.finfo(b.dtype).eps
    maxxnorm = min(maxxnorm, 1.0 / eps)
    acondlim = min(acondlim, 0.1 / eps)
    trancond = min(trancond, acondlim)
    checked = False

    def op(v: Tensor) -> Tensor:
        """(A − σI) v, validating matvec's output on the first call."""
        nonlocal checked
        with torch.set_grad_enabled(grad_mode):
            out = matvec(v)
        if not checked:
            if not isinstance(out, Tensor):
                raise TypeError(f"matvec must return a torch.Tensor; got {type(out).__name__}")
            if out.shape != b.shape:
                raise ValueError(f"matvec returned shape {tuple(out.shape)} for an input of shape "
                                 f"{tuple(v.shape)}; expected {tuple(b.shape)}, the shape of b")
            if out.dtype != b.dtype or out.device != b.device:
                raise ValueError(f"matvec returned dtype {out.dtype} on {out.device}; expected "
                                 f"{b.dtype} on {b.device}, those of b")
            checked = True
        out = out.detach()
        return out - shift * v if shift != 0.0 else out

    beta1 = float(torch.linalg.vector_norm(b))
    if not math.isfinite(beta1):
        raise ValueError("b contains non-finite values")
    x = torch.zeros_like(b)
    if beta1 == 0.0:
        return MinresQLPResult(x=x, flag=0, flag_name=FLAGS[0][0], iterations=0, qlp_iterations=0,
                               relres=0.0, relAres=0.0, anorm=0.0, acond=1.0, xnorm=0.0,
                               rnorm=0.0, arnorm=0.0, residual=torch.zeros_like(b))

    v_prev = torch.zeros_like(b)
    v = b / beta1
    beta_next = beta1              # β_{k+1} after the Lanczos step of iteration k
    c1, s1, c2, s2 = -1.0, 0.0, -1.0, 0.0   # left reflections Q_{k-1,k}, Q_{k-2,k-1}
    phi = beta1                    # φ_{k-1} = ‖r_{k-1}‖
    # L: diagonal μ, sub-diagonal ψ, second sub-diagonal ρ (ρ_j in row j+2, column j); "bis" and
    # "bar" entries will still be changed by later right reflections.
    mu_bis_km2 = psi_bar_km2 = mu_bar_km1 = 0.0
    psi_km3 = rho_km4 = rho_km3 = 0.0
    tau_km2 = tau_km1 = 0.0        # entries of t
    u_km4 = u_km3 = 0.0            # final entries of u
    ubar_km2 = ubar_km1 = 0.0      # provisional u_{k-2}, u_{k-1} of the previous step
    xl2norm2 = 0.0                 # Σ_{j ≤ k-3} u_j²
    mu_min_final = math.inf
    anorm, acond = 0.0, 1.0
    # MINRES: d_{k-2}, d_{k-1} of D = V R⁻¹. QLP: wa = w_{k-2}, wb = w̄_{k-1} (columns of W still
    # to be rotated) and xl2 = Σ_{j ≤ k-3} u_j w_j.
    d_km2: Tensor | None = torch.zeros_like(b)
    d_km1: Tensor | None = torch.zeros_like(b)
    wa = wb = xl2 = None
    qlp = False
    qlp_iterations = 0
    last_vec, last_coef = x, 0.0   # x − last_coef·last_vec drops the u_k term of x
    k = 0
    while True:
        k += 1
        # Lanczos: β_{k+1} v_{k+1} = A v_k − α_k v_k − β_k v_{k-1}.
        beta = beta_next if k > 1 else 0.0
        p = op(v)
        p = p - beta * v_prev if k > 1 else p.clone()
        alpha = float(torch.dot(v, p))
        p.sub_(v, alpha=alpha)
        beta_next = float(torch.linalg.vector_norm(p))
        if not (math.isfinite(alpha) and math.isfinite(beta_next)):
            raise FloatingPointError(f"matvec produced non-finite values at iteration {k}")
        anorm = max(anorm, math.sqrt(beta * beta + alpha * alpha + beta_next * beta_next))
        tiny = eps * anorm         # a diagonal of L below this counts as zero

        # Left reflections: column k of R is (ε_k, δ_k, γ_k) in rows k-2, k-1, k.
        eps_k = s2 * beta
        dbar = -c2 * beta
        delta = c1 * dbar + s1 * alpha
        gbar = s1 * dbar - c1 * alpha
        # ‖A r_{k-1}‖/(‖A‖‖r_{k-1}‖): available one step late.
        rel_ares = math.hypot(gbar, c1 * beta_next) / anorm if anorm > 0 else 0.0
        c, s, gamma = _reflector(gbar, beta_next)
        tau = c * phi
        phi = s * phi

        # Right reflections (LQ of R): P_{k-2,k} zeroes ε_k, then P_{k-1,k} zeroes θ_k; for k ≤ 2
        # the missing entries are 0 and the formulas still apply.
        cp, sp, mu_km2 = _reflector(mu_bis_km2, eps_k)
        psi_km2 = cp * psi_bar_km2 + sp * delta
        theta = sp * psi_bar_km2 - cp * delta
        rho_km2 = sp * gamma
        eta = -cp * gamma
        cd, sd, mu_bis_km1 = _reflector(mu_bar_km1, theta)
        psi_bar_km1 = sd * eta
        mu_bar_k = -cd * eta

        # Forward substitution L u = t (u_{k-1}, u_k provisional); zero diagonals give u = 0.
        u_km2 = ((tau_km2 - rho_km4 * u_km4 - psi_km3 * u_km3) / mu_km2
                 if k >= 3 and mu_km2 > tiny else 0.0)
        ubar_km1_new = ((tau_km1 - rho_km3 * u_km3 - psi_km2 * u_km2) / mu_bis_km1
                        if k >= 2 and mu_bis_km1 > tiny else 0.0)
        num = tau - rho_km2 * u_km2 - psi_bar_km1 * ubar_km1_new   # = μ̄_k u_k
        full = abs(mu_bar_k) > tiny        # False: u_k is dropped
        ubar_k = num / mu_bar_k if full else 0.0
        xl2norm2_new = xl2norm2 + u_km2 * u_km2
        xnorm_trunc = math.sqrt(xl2norm2_new + ubar_km1_new * ubar_km1_new)
        xnorm = math.hypot(xnorm_trunc, ubar_k)
        too_long = xnorm > maxxnorm
        if too_long:
            ubar_k, full, xnorm = 0.0, False, xnorm_trunc

        # Condition estimate from the diagonal of L.
        if k >= 3:
            mu_min_final = min(mu_min_final, mu_km2)
        mu_min = min(mu_min_final, abs(mu_bar_k), mu_bis_km1 if k >= 2 else math.inf)
        acond = anorm / mu_min if mu_min > 0 else math.inf

        if not qlp and acond < trancond and full:
            # MINRES: v_k = ε_k d_{k-2} + δ_k d_{k-1} + γ_k d_k and x_k = x_{k-1} + τ_k d_k; the
            # u_k term of x_k is u_k w̄_k = u_k μ̄_k d_k = num·d_k.
            d_k = (v - eps_k * d_km2 - delta * d_km1) / gamma
            x.add_(d_k, alpha=tau)
            d_km2, d_km1 = d_km1, d_k
            last_vec, last_coef = d_k, num
        else:
            if not qlp:
                # Switch to QLP: W_{k-1} = D_{k-1} L_{k-1}, x_{k-1} = W_{k-1} u_{k-1}.
                qlp = True
                wa = mu_bis_km2 * d_km2 + psi_bar_km2 * d_km1
                wb = mu_bar_km1 * d_km1
                xl2 = x - ubar_km2 * wa - ubar_km1 * wb
                d_km2 = d_km1 = None
            qlp_iterations += 1
            w_km2 = cp * wa + sp * v       # column k-2, now final
            tmp = sp * wa - cp * v
            wa = cd * wb + sd * tmp        # column k-1
            wb = sd * wb - cd * tmp        # column k
            xl2.add_(w_km2, alpha=u_km2)
            x = xl2 + ubar_km1_new * wa + ubar_k * wb
            last_vec, last_coef = wb, ubar_k

        relres = (phi if full else math.hypot(phi, num)) / (anorm * xnorm + beta1)

        # Shift the window.
        xl2norm2 = xl2norm2_new
        u_km4, u_km3 = u_km3, u_km2
        rho_km4, rho_km3 = rho_km3, rho_km2
        psi_km3 = psi_km2
        mu_bis_km2, psi_bar_km2, mu_bar_km1 = mu_bis_km1, psi_bar_km1, mu_bar_k
        tau_km2, tau_km1 = tau_km1, tau
        ubar_km2, ubar_km1 = ubar_km1_new, ubar_k
        c2, s2, c1, s1 = c1, s1, c, s
        v_prev, v = v, (p.div_(beta_next) if beta_next > 0 else p)

        # Stopping tests, first match wins; `drop`: remove the u_k (near-null) term from x.
        null_last = abs(mu_bar_k) <= anorm * math.sqrt(max(rtol, eps))
        ls_like = rel_ares < phi / beta1
        drop = False
        if relres <= eps:
            flag = 3
        elif rel_ares <= eps:
            flag, drop = 4, null_last
        elif relres <= rtol:
            flag = 1
        elif rel_ares <= rtol:
            flag, drop = 2, null_last
        elif abs(mu_bar_k) <= anorm * math.sqrt(eps * relres):
            flag, drop = 9, True
        elif anorm * xnorm * eps >= beta1:
            flag = 5
        elif too_long or xnorm >= maxxnorm:
            flag = 6
        elif acond >= acondlim:
            flag, drop = 7, ls_like and (null_last or abs(mu_bar_k) * acondlim <= anorm)
        elif beta_next <= eps * anorm:
            flag = 9
        elif k >= maxit:
            flag, drop = 8, ls_like and null_last
        else:
            continue
        if drop and full and last_coef != 0.0:
            x = x - last_coef * last_vec
        break

    r = b - op(x)
    rnorm = float(torch.linalg.vector_norm(r))
    arnorm = float(torch.linalg.vector_norm(op(r)))
    xnorm = float(torch.linalg.vector_norm(x))
    relres = rnorm / (anorm * xnorm + beta1)
    rel_ares = arnorm / (anorm * rnorm) if rnorm > 0 and anorm > 0 else 0.0
    if flag >= 6:    # a non-convergent stop whose true residuals nevertheless pass a test
        for passed, better in ((relres <= eps, 3), (rel_ares <= eps, 4), (relres <= rtol, 1),
                               (rel_ares <= rtol, 2)):
            if passed:
                flag = better
                break
    return MinresQLPResult(x=x, flag=flag, flag_name=FLAGS[flag][0], iterations=k,
                           qlp_iterations=qlp_iterations, relres=relres, relAres=rel_ares,
                           anorm=anorm, acond=acond, xnorm=xnorm, rnorm=rnorm, arnorm=arnorm,
                           residual=r)
