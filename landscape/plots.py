"""Report figures (seaborn on matplotlib): ε–α plots, spectra by error band, training curves.

Every function takes plain numpy arrays or pandas DataFrames (e.g. ``Store.critical_points()``) and
returns a ``matplotlib.figure.Figure`` built without pyplot: no global figure state, no display
backend needed, nothing to close; save it with ``fig.savefig`` or log it with
``Tracker.log_figure``. Imports nothing from the numerics, the store or tracking.

Conventions: ``index`` is α, the fraction of negative Hessian eigenvalues; ε is the training
``loss`` and, where the task has classes, the classification ``error``. Search statuses have fixed
colours (``STATUS_PALETTE``) so that figures agree with each other. A critical point whose index is
uncertain (``index_stable`` false: the negative count changes inside the stability band) is shown
as ``UNCERTAIN`` — drawn with its index range, never fitted nor counted in a rank correlation.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from scipy.stats import spearmanr
from sklearn.isotonic import IsotonicRegression

UNCERTAIN = "critical, index uncertain"
STATUS_PALETTE = {"critical": "#1f77b4", UNCERTAIN: "#17becf", "gradient-flat": "#ff7f0e",
                  "max-iterations": "#7f7f7f", "diverged": "#d62728"}
INDEX_LABEL = "index α (fraction of negative eigenvalues)"

__all__ = ["STATUS_PALETTE", "UNCERTAIN", "epsilon_alpha", "spearman_rho",
           "spectra_by_error_band", "status_counts", "training_curves", "with_index_certainty"]


def _require(df: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{what} needs columns {missing}; got {list(df.columns)}")


def _figure(n_panels: int, width: float = 5.0, height: float = 4.0) -> tuple[Figure, list]:
    """A constrained-layout Figure with ``n_panels`` side-by-side whitegrid axes."""
    with sns.axes_style("whitegrid"):
        fig = Figure(figsize=(width * n_panels, height), layout="constrained")
        return fig, list(fig.subplots(1, n_panels, squeeze=False)[0])


def _status_palette(statuses: pd.Series) -> dict[str, str]:
    """Colours for the statuses present: known ones in ``STATUS_PALETTE`` order, others after."""
    present = set(statuses.dropna())
    order = [s for s in STATUS_PALETTE if s in present] + sorted(present - set(STATUS_PALETTE))
    extra = iter(sns.color_palette("tab10").as_hex()[4:])
    return {s: STATUS_PALETTE.get(s) or next(extra) for s in order}


def with_index_certainty(df: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``df`` whose critical rows with ``index_stable`` false have status ``UNCERTAIN``
    (unchanged when the column is absent)."""
    if "index_stable" not in df.columns or "status" not in df.columns:
        return df.copy()
    uncertain = df["status"].eq("critical") & df["index_stable"].eq(False)  # None: unknown
    return df.assign(status=df["status"].where(~uncertain, UNCERTAIN))


def spearman_rho(df: pd.DataFrame, x: str = "index", y: str = "loss",
                 status: str | None = "critical") -> tuple[float, float, int]:
    """Spearman's ρ between columns ``x`` and ``y`` over rows with ``status`` (all if None).

    Rows with NaN in ``x`` or ``y`` are dropped. Returns ``(rho, pvalue, n)``; ρ and p are NaN when
    ``n < 3`` or either column is constant.
    """
    _require(df, [x, y] + ([] if status is None else ["status"]), "spearman_rho")
    rows = df if status is None else df[df["status"] == status]
    rows = rows[[x, y]].astype(float).dropna()
    n = len(rows)
    if n < 3 or rows[x].nunique() < 2 or rows[y].nunique() < 2:
        return float("nan"), float("nan"), n
    result = spearmanr(rows[x], rows[y])
    return float(result.statistic), float(result.pvalue), n


def epsilon_alpha(df: pd.DataFrame, *, fit_status: str = "critical") -> Figure:
    """Dauphin et al. (2014) Fig. 1a/c: ε against the index α at the located critical points.

    ``df`` has one row per search with columns ``index``, ``loss``, ``status`` and optionally
    ``error`` (classification error; a second panel when it has values), and optionally
    ``index_stable``, ``n_negative_min``, ``n_negative_max`` and ``n_params``. Points are coloured
    by status; rows with ``status == fit_status`` and a stable index get a monotone increasing
    isotonic fit, and the legend reports their Spearman ρ and n. Critical points with an uncertain
    index are drawn with their index range as a horizontal bar and left out of the fit (the legend
    says how many); gradient-flat and unfinished searches are shown as such, never fitted.
    """
    _require(df, ["index", "loss", "status"], "epsilon_alpha")
    df = with_index_certainty(df)
    panels = [("loss", "ε: training loss")]
    if "error" in df.columns and df["error"].notna().any():
        panels.append(("error", "ε: classification error"))
    palette = _status_palette(df["status"])
    fig, axes = _figure(len(panels))
    for ax, (column, label) in zip(axes, panels):
        data = df[["index", column, "status"]].dropna()
        shown = [s for s in palette if s in set(data["status"])]
        sns.scatterplot(data=data, x="index", y=column, hue="status", hue_order=shown,
                        palette=palette, ax=ax, alpha=0.8, edgecolor="none")
        _index_ranges(ax, df[df["status"] == UNCERTAIN], column)
        _isotonic_fit(ax, data[data["status"] == fit_status], column, fit_status,
                      int((data["status"] == UNCERTAIN).sum()))
        ax.set(xlabel=INDEX_LABEL, ylabel=label)
        ax.legend(title="status", fontsize="small")
    return fig


def _index_ranges(ax, rows: pd.DataFrame, column: str) -> None:
    """Horizontal bars over the index range of points whose index is uncertain."""
    needed = {"n_negative_min", "n_negative_max", "n_params", column}
    if rows.empty or not needed <= set(rows.columns):
        return
    rows = rows.dropna(subset=list(needed))
    n = rows["n_params"].to_numpy(float)
    ax.hlines(rows[column].to_numpy(float), rows["n_negative_min"].to_numpy(float) / n,
              rows["n_negative_max"].to_numpy(float) / n, color=STATUS_PALETTE[UNCERTAIN],
              lw=1.0, alpha=0.8)


def _isotonic_fit(ax, rows: pd.DataFrame, column: str, fit_status: str,
                  n_left_out: int = 0) -> None:
    """Draw the increasing isotonic fit of ``column`` on ``index`` and label it with ρ and n."""
    rho, _, n = spearman_rho(rows, "index", column, status=None)
    if n == 0:
        return
    x, y = rows["index"].to_numpy(float), rows[column].to_numpy(float)
    grid = np.unique(x)
    fitted = IsotonicRegression().fit(x, y).predict(grid) if n >= 2 else np.full(grid.shape, y)
    left_out = f"; {n_left_out} with uncertain index left out" if n_left_out else ""
    ax.plot(grid, fitted, color="black", lw=1.5,
            label=f"isotonic fit ({fit_status}): ρ = {rho:.2f}, n = {n}{left_out}")


def _error_bands(errors: np.ndarray, n_bands: int) -> tuple[np.ndarray, np.ndarray]:
    """Quantile band of each error (``[m]`` ints) and the band edges; tied quantiles merge bands."""
    edges = np.unique(np.quantile(errors, np.linspace(0, 1, n_bands + 1)))
    if len(edges) == 1:
        return np.zeros(len(errors), dtype=int), np.repeat(edges, 2)
    band = np.searchsorted(edges, errors, side="right") - 1
    return np.clip(band, 0, len(edges) - 2), edges


def spectra_by_error_band(eigenvalues: Sequence[np.ndarray], errors: Sequence[float],
                          n_bands: int = 3, bins: int = 60) -> Figure:
    """Dauphin et al. (2014) Fig. 1b/d: Hessian spectra of critical points, grouped by ε.

    ``eigenvalues[i]`` ``[n_i]`` is the spectrum of critical point i and ``errors[i]`` its ε (loss
    or error). Points are split into ``n_bands`` quantile bands of ε; each band's eigenvalues are
    pooled into one density histogram (log density axis, common bins). The legend gives each band's
    ε range and number of critical points.
    """
    errors = np.asarray(errors, dtype=float)
    if len(eigenvalues) != len(errors) or len(errors) == 0:
        raise ValueError(f"need one error per spectrum and at least one; got {len(eigenvalues)} "
                         f"spectra and {len(errors)} errors")
    if n_bands < 1:
        raise ValueError(f"n_bands must be ≥ 1; got {n_bands}")
    if not np.isfinite(errors).all():
        raise ValueError(f"errors must be finite; got {errors[~np.isfinite(errors)]}")
    band, edges = _error_bands(errors, n_bands)
    counts = np.bincount(band, minlength=len(edges) - 1)
    labels = [f"ε ∈ [{edges[b]:.3g}, {edges[b + 1]:.3g}], {counts[b]} points"
              for b in range(len(edges) - 1)]
    long = pd.DataFrame({
        "eigenvalue": np.concatenate([np.ravel(v) for v in eigenvalues]).astype(float),
        "band": np.repeat([labels[b] for b in band], [np.size(v) for v in eigenvalues]),
    })
    present = [label for label in labels if label in set(long["band"])]
    fig, (ax,) = _figure(1, width=6.0)
    sns.histplot(data=long, x="eigenvalue", hue="band", hue_order=present, stat="density",
                 common_norm=False, element="step", fill=False, bins=bins, ax=ax,
                 palette="viridis")
    ax.set_yscale("log")
    ax.set(xlabel="Hessian eigenvalue λ", ylabel="density (log scale)")
    ax.get_legend().set_title("ε band")
    return fig


def training_curves(df: pd.DataFrame) -> Figure:
    """Loss (log y when all positive) and, if present, error against ``step``, one hue per run.

    ``df`` columns: ``run, step, train_loss, test_loss`` and optionally ``train_error,
    test_error``; train curves are solid, test curves dashed.
    """
    _require(df, ["run", "step", "train_loss", "test_loss"], "training_curves")
    metrics = ["loss"] + (["error"] if {"train_error", "test_error"} & set(df.columns) else [])
    fig, axes = _figure(len(metrics))
    for ax, metric in zip(axes, metrics):
        columns = [c for c in (f"train_{metric}", f"test_{metric}") if c in df.columns]
        long = df.melt(id_vars=["run", "step"], value_vars=columns, var_name="split",
                       value_name=metric).dropna()
        long["split"] = long["split"].str.removesuffix(f"_{metric}")
        splits = [s for s in ("train", "test") if s in set(long["split"])]
        sns.lineplot(data=long, x="step", y=metric, hue="run", style="split", style_order=splits,
                     errorbar=None, ax=ax)
        if metric == "loss" and (long[metric] > 0).all():
            ax.set_yscale("log")
        ax.set(xlabel="step", ylabel=metric)
    return fig


def status_counts(df: pd.DataFrame, *, hue: str | None = None) -> Figure:
    """Bar chart of the number of searches per ``status`` (split by ``hue``, e.g. ``"method"``)."""
    _require(df, ["status"] + ([hue] if hue else []), "status_counts")
    fig, (ax,) = _figure(1)
    palette = _status_palette(df["status"])
    order = list(palette)
    if hue is None:
        sns.countplot(data=df, x="status", order=order, hue="status", hue_order=order,
                      palette=palette, legend=False, ax=ax)
    else:
        sns.countplot(data=df, x="status", order=order, hue=hue, ax=ax)
    for container in ax.containers:
        ax.bar_label(container, fontsize="small")
    ax.set(xlabel="search status", ylabel="searches")
    return fig
