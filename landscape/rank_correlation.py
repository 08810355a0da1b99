"""Whether a measure predicts generalization: Kendall's τ with a bootstrap interval, and its
granulated form (Jiang et al. 2020, "Fantastic generalization measures", §4).

* ``tau``: Kendall's τ-b (``scipy.stats.kendalltau``, ties accounted for) between a measure's
  values and the generalization gap over the models; its two-sided p-value for τ = 0.
* ``low`` / ``high``: percentile bootstrap interval at ``confidence``: models resampled with
  replacement ``n_resamples`` times from a seeded generator, (value, gap) pairs kept together.
  Resamples whose τ is undefined (every value, or every gap, tied) are left out of the
  quantiles and counted (``n_degenerate``), where ``scipy.stats.bootstrap`` would return NaN.
* ``tau_within``: the mean τ over groups of models that share the ``group_by`` columns (each
  group needs ≥ 2 models with distinct values); grouping by the seed, only the training
  algorithm varies inside a group, which is Jiang et al.'s ψ for that hyperparameter axis.

Imports numpy, pandas and scipy only.

Example (a measure that orders five models as their gaps do, and one that reverses them):
    >>> frame = pd.DataFrame({"measure": ["a"] * 5 + ["b"] * 5, "value": [1, 2, 3, 4, 5] * 2,
    ...                       "gap": [0.1, 0.2, 0.3, 0.4, 0.5] + [0.5, 0.4, 0.3, 0.2, 0.1]})
    >>> table = kendall_table(frame, gap="gap", group_by=())
    >>> table["measure"].tolist(), table["tau"].round(12).tolist(), table["n"].tolist()
    (['a', 'b'], [1.0, -1.0], [5, 5])
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.stats import kendalltau

__all__ = ["COLUMNS", "bootstrap_tau", "kendall_table", "resampled_tau_b"]

COLUMNS = ("measure", "tau", "low", "high", "p_value", "n", "tau_within", "n_groups",
           "n_degenerate")


def bootstrap_tau(x: np.ndarray, y: np.ndarray, *, n_resamples: int = 2000,
                  confidence: float = 0.95, seed: int = 0) -> tuple[float, float, int]:
    """Percentile bootstrap interval ``(low, high, n_degenerate)`` of Kendall's τ of the pairs
    ``(x[i], y[i])`` (module docs); NaN bounds when fewer than 3 pairs or no resample defines τ."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"x and y must be 1-D of one length; got {x.shape} and {y.shape}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1); got {confidence}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be positive; got {n_resamples}")
    if len(x) < 3:
        return float("nan"), float("nan"), 0
    rng = np.random.default_rng(seed)
    taus = resampled_tau_b(x, y, rng.integers(0, len(x), size=(n_resamples, len(x))))
    defined = taus[np.isfinite(taus)]
    if not len(defined):
        return float("nan"), float("nan"), n_resamples
    tail = (1 - confidence) / 2
    low, high = np.quantile(defined, [tail, 1 - tail])
    return float(low), float(high), int(n_resamples - len(defined))


def resampled_tau_b(x: np.ndarray, y: np.ndarray, idx: np.ndarray,
                    chunk: int = 256) -> np.ndarray:
    """Kendall's τ-b of ``(x[r], y[r])`` for every row ``r`` of ``idx`` ``[R, m]``, as ``[R]``
    (NaN where every x or every y of a row is tied): ``Σ sᵢⱼ tᵢⱼ / √(Σ sᵢⱼ² Σ tᵢⱼ²)`` with
    ``s``, ``t`` the pairwise signs, summed over all pairs at once ([chunk, m, m] at a time)."""
    out = np.empty(len(idx))
    for start in range(0, len(idx), chunk):
        xs, ys = x[idx[start:start + chunk]], y[idx[start:start + chunk]]
        s = np.sign(xs[:, :, None] - xs[:, None, :])
        t = np.sign(ys[:, :, None] - ys[:, None, :])
        with np.errstate(invalid="ignore", divide="ignore"):
            out[start:start + chunk] = (s * t).sum((1, 2)) / np.sqrt(
                (s * s).sum((1, 2)) * (t * t).sum((1, 2)))
    return out


def _tau(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    if len(x) < 2:
        return float("nan"), float("nan")
    result = kendalltau(x, y)
    return float(result.statistic), float(result.pvalue)


def kendall_table(frame: pd.DataFrame, *, gap: str = "gap_error",
                  group_by: Sequence[str] = ("seed",), n_resamples: int = 2000,
                  confidence: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """One row per ``measure`` of ``frame`` (columns ``measure``, ``value``, the ``gap`` column
    and the ``group_by`` columns; one row per model): ``COLUMNS`` (module docs). Rows whose value
    or gap is not finite are left out."""
    missing = [c for c in ("measure", "value", gap, *group_by) if c not in frame.columns]
    if missing:
        raise ValueError(f"kendall_table needs columns {missing}; got {list(frame.columns)}")
    rows = []
    for measure, part in frame.groupby("measure", sort=True):
        part = part[np.isfinite(part["value"].astype(float)) & np.isfinite(part[gap].astype(float))]
        x, y = part["value"].to_numpy(float), part[gap].to_numpy(float)
        tau, p_value = _tau(x, y)
        low, high, degenerate = bootstrap_tau(x, y, n_resamples=n_resamples,
                                              confidence=confidence, seed=seed)
        within = []
        if group_by:
            for _, group in part.groupby(list(group_by), dropna=False):
                t, _ = _tau(group["value"].to_numpy(float), group[gap].to_numpy(float))
                if np.isfinite(t):
                    within.append(t)
        rows.append({"measure": measure, "tau": tau, "low": low, "high": high,
                     "p_value": p_value, "n": len(part),
                     "tau_within": float(np.mean(within)) if within else float("nan"),
                     "n_groups": len(within), "n_degenerate": degenerate})
    return pd.DataFrame(rows, columns=list(COLUMNS))
