"""XTrace, the exchangeable trace estimator (Epperly, Tropp & Webber, SIMAX 2024,
arXiv 2301.07825), for a symmetric operator.

Hutch++ splits its budget between a sketch and independent residual probes; XTrace uses every
test vector for both. With s Rademacher test vectors ω₁ … ω_s (``n_matvecs = 2s``), for each i
the sketch of the *other* vectors, ``Q₍ᵢ₎ = orth(A Ω₋ᵢ)``, gives the unbiased estimate

    tᵢ = tr(Q₍ᵢ₎ᵀ A Q₍ᵢ₎) + ωᵢᵀ (I − Q₍ᵢ₎Q₍ᵢ₎ᵀ) A (I − Q₍ᵢ₎Q₍ᵢ₎ᵀ) ωᵢ

(ωᵢ is independent of Q₍ᵢ₎), and XTrace is their mean. No extra products are needed for the
leave-one-out bases: with ``A Ω = Q R`` and ``Z = A Q`` (s + s products), ``range Q₍ᵢ₎`` is
``range Q`` minus the direction ``Q vᵢ``, ``vᵢ ∝ R⁻ᵀ eᵢ``, and every term of tᵢ is an s × s
expression in ``R``, ``H = Qᵀ A Q``, ``W = Qᵀ Ω`` and ``ωᵢᵀ A ωᵢ`` (derivation in
``xtrace_trace``). The reported standard error is the spread of the tᵢ over √s — the paper's
error estimate; the tᵢ share data, so it is a heuristic, not an independent-sample error, and
it runs low: on the dense Hessian of a 64-16-10 digits MLP (n = 1,210; 100 seeds) XTrace's
root-mean-square error was 0.67, 0.83 and 0.69 × Hutch++'s at 30, 99 and 300 products, but
its mean reported standard error was only 0.82, 0.77 and 0.67 × its own observed error, where
Hutch++'s is within 10 % of its own.

When the sketch has rank below s (A itself has rank < s: then ``range A ⊆ range Q``) or s
reaches n, the trace is ``tr H`` exactly.
"""

from __future__ import annotations

import torch

from landscape.linalg.hutchinson import MatMat, TraceEstimate, mean_and_stderr
from landscape.linalg.probes import rademacher

RANK_RTOL = 1e-10  # |R_jj| below this times max |R_jj|: the sketch is rank deficient


def _apply(matmat: MatMat, rows: torch.Tensor, block_size: int) -> torch.Tensor:
    return torch.cat([matmat(block) for block in rows.split(block_size)])


def xtrace_trace(matmat: MatMat, n: int, n_matvecs: int, generator: torch.Generator, *,
                 dtype: torch.dtype, device: torch.device | str,
                 block_size: int = 32) -> TraceEstimate:
    """XTrace estimate of tr(A) for a symmetric ``n×n`` operator with ``n_matvecs ≥ 4``
    applications (``s = n_matvecs // 2`` test vectors, capped at n).

    Derivation of tᵢ (module docs; one i, ``ω = Q w + r`` with ``r ⊥ range Q``, ``c = vᵀw``):
    ``(I − P₍ᵢ₎) ω = r + c Q v`` and ``A r = A ω − Z w``, so with ``Re = Qᵀ A ω`` (column i of
    R) and ``q = Qᵀ A r = Re − H w``,
    ``tᵢ = tr H − vᵀHv + (ωᵀAω − wᵀRe) − qᵀw + c qᵀv + c vᵀRe − c vᵀHw + c² vᵀHv``.

    Example (decaying spectrum: XTrace lands within a few standard errors; rank 3: exact):
        >>> A = torch.diag(1.0 / torch.arange(1, 201, dtype=torch.float64) ** 2)
        >>> est = xtrace_trace(lambda V: V @ A, 200, 40, torch.Generator().manual_seed(0),
        ...                    dtype=torch.float64, device="cpu")
        >>> abs(est.value - float(A.trace())) < 4 * est.stderr, est.n_matvecs
        (True, 40)
        >>> u = torch.linalg.qr(torch.randn(50, 3, dtype=torch.float64,
        ...                                 generator=torch.Generator().manual_seed(1))).Q
        >>> low = u @ torch.diag(torch.tensor([5.0, -2.0, 1.0], dtype=torch.float64)) @ u.T
        >>> est = xtrace_trace(lambda V: V @ low, 50, 12, torch.Generator().manual_seed(0),
        ...                    dtype=torch.float64, device="cpu")
        >>> round(est.value, 10), est.stderr
        (4.0, 0.0)
    """
    if n_matvecs < 4:
        raise ValueError(f"XTrace needs n_matvecs >= 4 (two test vectors); got {n_matvecs}")
    s = min(n_matvecs // 2, n)
    omega = rademacher(s, n, generator, dtype=dtype, device=device)  # rows ωᵢ
    images = _apply(matmat, omega, block_size)                       # rows A ωᵢ
    q, r = torch.linalg.qr(images.T)                                 # A Ω = Q R, Q [n, s]
    z = _apply(matmat, q.T.contiguous(), block_size)                 # rows (A Q)ᵀ
    h = z @ q
    h = 0.5 * (h + h.T)
    trace_h = float(h.trace())
    diag = r.diagonal().abs()
    if s == n or bool(diag.min() <= RANK_RTOL * diag.max()):
        return TraceEstimate(trace_h, 0.0, 2 * s, "xtrace")
    w = q.T @ omega.T                                                # columns wᵢ = Qᵀ ωᵢ
    v = torch.linalg.inv(r).T
    v = v / v.norm(dim=0)                                            # columns vᵢ ∝ R⁻ᵀ eᵢ
    hv, hw = h @ v, h @ w
    qres = r - hw                                                    # columns Qᵀ A rᵢ
    c = (v * w).sum(0)
    vhv = (v * hv).sum(0)
    estimates = (trace_h - vhv + (omega * images).sum(1) - (w * r).sum(0) - (qres * w).sum(0)
                 + c * (qres * v).sum(0) + c * (v * r).sum(0) - c * (v * hw).sum(0)
                 + c**2 * vhv)
    value, stderr = mean_and_stderr(estimates)
    return TraceEstimate(value, stderr, 2 * s, "xtrace")
