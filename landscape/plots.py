"""Report figures (seaborn on matplotlib): ε–α plots, spectra by error band, training curves,
interpolation curves, surface contours, measure–gap scatters, Kendall forests, spectra overlays.

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

import os
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator
from scipy.stats import spearmanr
from sklearn.isotonic import IsotonicRegression

UNCERTAIN = "critical, index uncertain"
STATUS_PALETTE = {"critical": "#1f77b4", UNCERTAIN: "#17becf", "gradient-flat": "#ff7f0e",
                  "max-iterations": "#7f7f7f", "diverged": "#d62728"}
INDEX_LABEL = "index α (fraction of negative eigenvalues)"

__all__ = [
    "STATUS_PALETTE",
    "UNCERTAIN",
    "epsilon_alpha",
    "interpolation_curves",
    "kendall_forest",
    "measure_gap_scatter",
    "scaling_curves",
    "spearman_rho",
    "spectra_by_error_band",
    "spectra_overlay",
    "status_counts",
    "surface_contour",
    "training_curves",
    "with_index_certainty",
]


def _require(df: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{what} needs columns {missing}; got {list(df.columns)}")


def _figure(n_panels: int, width: float = 5.0, height: float = 4.0, *,
            max_cols: int | None = None, sharey: bool = False) -> tuple[Figure, list]:
    """A constrained-layout Figure with ``n_panels`` whitegrid axes of ``width × height`` inches,
    side by side, or wrapped into rows of ``max_cols`` (the unused cells of the last row left
    empty)."""
    n_cols = min(n_panels, max_cols or n_panels)
    n_rows = -(-n_panels // n_cols)
    with sns.axes_style("whitegrid"):
        fig = Figure(figsize=(width * n_cols, height * n_rows), layout="constrained")
        axes = list(fig.subplots(n_rows, n_cols, squeeze=False, sharey=sharey).ravel())
    for ax in axes[n_panels:]:
        fig.delaxes(ax)
    return fig, axes[:n_panels]


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


def training_curves(df: pd.DataFrame, *, max_runs: int = 10) -> Figure:
    """Loss (log y when all positive) and, if present, error against ``step``, one hue per run
    (per ``optimizer``, one line per run, when there are more than ``max_runs`` runs and the
    column is there); one legend, right of the last panel.

    ``df`` columns: ``run, step, train_loss, test_loss`` and optionally ``train_error,
    test_error``, ``optimizer``; train curves are solid, test curves dashed.
    """
    _require(df, ["run", "step", "train_loss", "test_loss"], "training_curves")
    metrics = ["loss"] + (["error"] if {"train_error", "test_error"} & set(df.columns) else [])
    by_run = df["run"].nunique() <= max_runs or "optimizer" not in df.columns
    hue, ids = ("run", ["run", "step"]) if by_run else ("optimizer", ["run", "optimizer", "step"])
    fig, axes = _figure(len(metrics))
    for ax, metric in zip(axes, metrics):
        columns = [c for c in (f"train_{metric}", f"test_{metric}") if c in df.columns]
        long = df.melt(id_vars=ids, value_vars=columns, var_name="split",
                       value_name=metric).dropna()
        long["split"] = long["split"].str.removesuffix(f"_{metric}")
        splits = [s for s in ("train", "test") if s in set(long["split"])]
        sns.lineplot(data=long, x="step", y=metric, hue=hue, style="split", style_order=splits,
                     errorbar=None, ax=ax, **({} if by_run else {"units": "run",
                                                                 "estimator": None}))
        if metric == "loss" and (long[metric] > 0).all():
            ax.set_yscale("log")
        ax.set(xlabel="step", ylabel=metric)
        if ax is not axes[-1]:
            ax.get_legend().remove()
    sns.move_legend(axes[-1], "upper left", bbox_to_anchor=(1.02, 1), fontsize="small")
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


FEW_PAIRS = 4  # interpolation_curves gives each pair a line style (and a legend entry) up to this


def _common_name(names: pd.Series) -> str | None:
    """The one name of ``names``, or their common prefix and suffix around ``*``
    (``sgd-seed*-batch32``); None when they share neither."""
    unique = list(dict.fromkeys(names))
    if len(unique) == 1:
        return unique[0]
    prefix = os.path.commonprefix(unique)
    suffix = os.path.commonprefix([n[len(prefix):][::-1] for n in unique])[::-1]
    return f"{prefix}*{suffix}" if prefix or suffix else None


def interpolation_curves(df: pd.DataFrame) -> Figure:
    """Keskar et al. (2017) Fig. 3: loss and error along the line ``(1 − α) θ_A + α θ_B``.

    ``df`` is long, one row per pair × α × split: ``pair`` (``"<run_A>~<run_B>"``), ``alpha``,
    ``split`` (``"train"`` / ``"test"``), ``loss`` and optionally ``error`` (absent or all NaN for
    tasks without classes: the loss panel only). Colour is the split; each pair is one line, with
    its own line style up to ``FEW_PAIRS`` pairs. The loss axis is logarithmic when every loss is
    positive; non-finite values (diverged points) are left out. Dashed lines at α = 0 and α = 1
    are labelled with the endpoints' run names (``*`` where the pairs' names differ).
    """
    _require(df, ["pair", "alpha", "split", "loss"], "interpolation_curves")
    if df.empty:
        raise ValueError("interpolation_curves needs at least one row")
    ends = df["pair"].astype(str).str.partition("~")
    unnamed = sorted(set(df["pair"][ends[1] != "~"]))
    if unnamed:
        raise ValueError(f"pair labels must read '<run_A>~<run_B>'; got {unnamed}")
    names = [end if name is None else f"{end}: {name}"
             for end, name in (("A", _common_name(ends[0])), ("B", _common_name(ends[2])))]
    pairs = list(dict.fromkeys(df["pair"]))
    present = set(df["split"])
    splits = [s for s in ("train", "test") if s in present] + sorted(present - {"train", "test"})
    few = len(pairs) <= FEW_PAIRS
    lines = {"style": "pair", "style_order": pairs} if few else {"units": "pair"}
    panels = [("loss", "loss")]
    if "error" in df.columns and df["error"].notna().any():
        panels.append(("error", "classification error"))
    fig, axes = _figure(len(panels), width=5.5)
    for ax, (column, label) in zip(axes, panels):
        data = df[["pair", "alpha", "split", column]].dropna()  # seaborn drops ±inf itself
        sns.lineplot(data=data, x="alpha", y=column, hue="split", hue_order=splits,
                     estimator=None, legend="auto" if ax is axes[-1] else False, ax=ax, **lines)
        if column == "loss" and (data[column] > 0).all():
            ax.set_yscale("log")
        for alpha, name in zip((0.0, 1.0), names):
            ax.axvline(alpha, color="0.3", ls="--", lw=1.0)
            ax.text(alpha, 0.98, name, transform=ax.get_xaxis_transform(), rotation=90,
                    ha="right", va="top", fontsize="small", color="0.3",
                    bbox={"fc": "white", "ec": "none", "alpha": 0.7, "pad": 1})
        ax.set(xlabel="α   (θ = (1 − α) θ_A + α θ_B)", ylabel=label)
    sns.move_legend(axes[-1], "upper left", bbox_to_anchor=(1.02, 1.0), fontsize="small")
    return fig


def surface_contour(x: np.ndarray, y: np.ndarray, losses: np.ndarray, *,
                    trajectory: np.ndarray | None = None,
                    explained_variance_ratio: np.ndarray | None = None, title: str = "") -> Figure:
    """Filled contours of a loss surface (Li et al. 2018) on log-spaced levels, with a colourbar.

    ``x`` ``[nx]``, ``y`` ``[ny]``, ``losses`` ``[ny, nx]`` (rows are y), as a ``slice`` or
    ``trajectory`` result holds them. Losses ≤ 0 are drawn in the lowest band; non-finite ones
    (diverged points) are masked and show grey. ``trajectory`` ``[T, 2]`` (the checkpoints'
    ``coords``) is drawn as a line with markers, its final point as a star. Axes read
    ``PC1 (xx.x %)`` / ``PC2 (yy.y %)`` when ``explained_variance_ratio`` (length ≥ 2) is given,
    else δ / η, the two filter-normalised directions.
    """
    x, y, losses = (np.asarray(a, dtype=float) for a in (x, y, losses))
    if x.ndim != 1 or y.ndim != 1 or len(x) < 2 or len(y) < 2:
        raise ValueError(f"x and y must be 1-D with at least 2 points; got shapes {x.shape} "
                         f"and {y.shape}")
    if losses.shape != (len(y), len(x)):
        raise ValueError(f"losses must have shape [ny, nx] = {(len(y), len(x))} (rows are y); "
                         f"got {losses.shape}")
    if trajectory is not None:
        trajectory = np.asarray(trajectory, dtype=float)
        if trajectory.ndim != 2 or trajectory.shape[1] != 2 or not len(trajectory):
            raise ValueError(f"trajectory must have shape [T, 2] with T ≥ 1; got "
                             f"{trajectory.shape}")
    if explained_variance_ratio is None:
        labels = ("δ (filter-normalised direction)", "η (filter-normalised direction)")
    else:
        ratio = np.asarray(explained_variance_ratio, dtype=float)
        if ratio.ndim != 1 or len(ratio) < 2:
            raise ValueError(f"explained_variance_ratio needs at least 2 components; got shape "
                             f"{ratio.shape}")
        labels = tuple(f"PC{i + 1} ({100 * r:.1f} %)" for i, r in enumerate(ratio[:2]))
    finite = np.isfinite(losses)
    positive = losses[finite & (losses > 0)]
    if not positive.size:
        raise ValueError("losses has no finite positive value to draw")
    low, high = positive.min(), losses[finite].max()
    if high <= low * (1 + 1e-9):  # a flat surface: one band around its value
        low, high = low / 2, low * 2
    levels = np.geomspace(low, high, 21)
    surface = np.ma.masked_invalid(np.clip(losses, low, None))
    fig, (ax,) = _figure(1, width=6.0, height=4.8)
    ax.grid(False)
    ax.set_facecolor("0.8")
    filled = ax.contourf(x, y, surface, levels=levels, norm=LogNorm(low, high), cmap="viridis")
    ax.contour(x, y, surface, levels=levels, colors="white", linewidths=0.4, alpha=0.5)
    fig.colorbar(filled, ax=ax, ticks=levels[::4], format="%.3g", label="loss (log scale)")
    handles = [Patch(color="0.8", label="not finite (diverged)")] if not finite.all() else []
    if trajectory is not None:
        handles += ax.plot(trajectory[:, 0], trajectory[:, 1], "-o", color="white", mec="black",
                           ms=4, lw=1.2, label="trajectory")
        handles += ax.plot(*trajectory[-1], ls="", marker="*", color="#d62728", mec="black",
                           ms=14, label="final checkpoint")
    if handles:
        fig.legend(handles=handles, fontsize="small", loc="outside lower center",
                   ncols=len(handles))
    ax.set(xlabel=labels[0], ylabel=labels[1], title=title)
    return fig


def _tau_text(tau: float, low: float, high: float) -> str:
    """``τ = 0.42 [0.18, 0.61]``; without the interval when it is undefined, ``τ = n/a`` when τ
    is."""
    if not np.isfinite(tau):
        return "τ = n/a"
    if not (np.isfinite(low) and np.isfinite(high)):
        return f"τ = {tau:.2f}"
    return f"τ = {tau:.2f} [{low:.2f}, {high:.2f}]"


def _tau_table(table: pd.DataFrame, what: str) -> pd.DataFrame:
    """``table`` checked for ``measure, tau, low, high`` and one row per measure, τ and bounds
    as floats."""
    _require(table, ["measure", "tau", "low", "high"], what)
    repeated = sorted(set(table["measure"][table["measure"].duplicated()]))
    if repeated:
        raise ValueError(f"{what} needs one row per measure; repeated: {repeated}")
    return table.astype({"tau": float, "low": float, "high": float})


def measure_gap_scatter(df: pd.DataFrame, *, taus: pd.DataFrame | None = None,
                        gap_label: str = "generalization gap") -> Figure:
    """One scatter panel per measure (Jiang et al. 2020): the measure's value against the gap.

    ``df`` has one row per run × measure: ``measure``, ``value``, ``gap``, ``optimizer``. Panels
    follow the measures' first appearance, four to a row, sharing the gap axis; colour is the
    optimizer, the same in every panel, with one legend for the figure. A panel's value axis is
    logarithmic when its values are positive and span two decades or more; non-finite rows are
    left out. ``taus`` (columns ``measure, tau, low, high``, e.g. ``kendall_table``) puts
    ``τ = 0.42 [0.18, 0.61]`` into each panel's title (``τ = n/a`` for a measure it lacks).
    """
    _require(df, ["measure", "value", "gap", "optimizer"], "measure_gap_scatter")
    if df.empty:
        raise ValueError("measure_gap_scatter needs at least one row")
    if taus is not None:
        taus = _tau_table(taus, "measure_gap_scatter taus").set_index("measure")
    measures = list(dict.fromkeys(df["measure"]))
    optimizers = sorted(set(df["optimizer"].astype(str)))
    colours = sns.color_palette("tab10" if len(optimizers) <= 10 else "husl", len(optimizers))
    palette = dict(zip(optimizers, colours))
    data = df.astype({"value": float, "gap": float, "optimizer": str})
    data = data[np.isfinite(data["value"]) & np.isfinite(data["gap"])]
    fig, axes = _figure(len(measures), width=3.4, height=3.0, max_cols=4, sharey=True)
    for i, (ax, measure) in enumerate(zip(axes, measures)):
        part = data[data["measure"] == measure]
        if part.empty:
            ax.text(0.5, 0.5, "no finite values", transform=ax.transAxes, ha="center")
        else:
            sns.scatterplot(data=part, x="value", y="gap", hue="optimizer",
                            hue_order=optimizers, palette=palette, legend=False, ax=ax,
                            alpha=0.8, edgecolor="none")
            if (part["value"] > 0).all() and part["value"].max() >= 100 * part["value"].min():
                ax.set_xscale("log")
        title = str(measure)
        if taus is not None:
            row = taus.loc[measure] if measure in taus.index else None
            title += "\n" + ("τ = n/a" if row is None else
                             _tau_text(row["tau"], row["low"], row["high"]))
        ax.set_title(title, fontsize="medium")
        ax.set(xlabel="value", ylabel=gap_label if i % 4 == 0 else "")
    handles = [Line2D([], [], ls="", marker="o", color=palette[o], label=o) for o in optimizers]
    fig.legend(handles=handles, title="optimizer", loc="outside right upper", fontsize="small")
    return fig


SIGNIFICANT, NOT_SIGNIFICANT = "#d62728", "#7f7f7f"


def kendall_forest(table: pd.DataFrame) -> Figure:
    """Forest plot of Kendall's τ per measure with its bootstrap interval (``kendall_table``).

    ``table`` columns: ``measure``, ``tau``, ``low``, ``high`` and optionally ``n`` (shown with
    the name) and ``p_value`` (shown with τ). One row per measure, the largest τ at the top; a
    point at τ and a bar from low to high, in ``SIGNIFICANT`` when the interval excludes 0, else
    ``NOT_SIGNIFICANT``; the numbers are written right of the axes. Rows whose τ is NaN read
    "n/a" and have no point; x runs over [−1, 1] with a line at 0.
    """
    table = _tau_table(table, "kendall_forest")
    if table.empty:
        raise ValueError("kendall_forest needs at least one row")
    optional = {c: float for c in ("n", "p_value") if c in table.columns}
    rows = table.astype(optional).sort_values("tau", na_position="first").reset_index(drop=True)
    significant = (rows["low"] > 0) | (rows["high"] < 0)
    colours = np.where(significant, SIGNIFICANT, NOT_SIGNIFICANT)
    fig, (ax,) = _figure(1, width=7.0, height=1.2 + 0.35 * len(rows))
    bars = rows[["low", "high"]].notna().all(axis=1) & rows["tau"].notna()
    ax.hlines(rows.index[bars], rows["low"][bars], rows["high"][bars], colors=colours[bars], lw=2)
    points = rows["tau"].notna()
    ax.scatter(rows["tau"][points], rows.index[points], c=colours[points], s=30, zorder=3)
    ax.axvline(0.0, color="black", lw=0.8)
    for y, row in rows.iterrows():
        text = _tau_text(row["tau"], row["low"], row["high"])
        if "p_value" in rows.columns and np.isfinite(row["p_value"]) and np.isfinite(row["tau"]):
            text += f", p = {row['p_value']:.2g}"
        ax.text(1.02, y, text, transform=ax.get_yaxis_transform(), va="center",
                fontsize="small")
    names = rows["measure"].astype(str)
    if "n" in rows.columns:
        names = [f"{m} (n = {n:.0f})" if np.isfinite(n) else m
                 for m, n in zip(names, rows["n"])]
    ax.set_yticks(rows.index, names)
    ax.set(xlim=(-1.0, 1.0), ylim=(-0.6, len(rows) - 0.4),
           xlabel="Kendall's τ (measure vs. generalization gap)")
    fig.legend(handles=[Line2D([], [], marker="o", color=SIGNIFICANT, label="interval excludes 0"),
                        Line2D([], [], marker="o", color=NOT_SIGNIFICANT,
                               label="interval includes 0")],
               fontsize="small", loc="outside upper center", ncols=2)
    return fig


def spectra_overlay(spectra: Mapping[str, np.ndarray], *, bins: int = 80,
                    top_k: int = 20) -> Figure:
    """Hessian spectra overlaid as log-density histograms (Ghorbani et al. 2019, PyHessian), and
    their ``top_k`` largest eigenvalues.

    ``spectra`` maps a label (``"sharp (batch 1024, seed 0)"``) to its eigenvalues ``[n]``. Panel
    1: one density histogram per label (step lines, bin edges common to all spectra) on a log
    density axis. Panel 2 (left out when ``top_k`` is 0): each spectrum's ``top_k`` eigenvalues
    against their rank, on a log axis when they are all positive. The second panel is the one
    that tells sharp from flat: the bulk near 0 looks alike in both, and the difference lives in a
    few outliers whose density (1/n a bin) sits at the floor of the histogram, while ranked on a
    log axis each outlier shows, and the ratio of λ_max is read off directly.
    """
    if not spectra:
        raise ValueError("spectra_overlay needs at least one spectrum")
    if bins < 1 or top_k < 0:
        raise ValueError(f"bins must be ≥ 1 and top_k ≥ 0; got bins={bins}, top_k={top_k}")
    arrays = {}
    for label, eigenvalues in spectra.items():
        eigenvalues = np.asarray(eigenvalues, dtype=float)
        if eigenvalues.ndim != 1 or not eigenvalues.size or not np.isfinite(eigenvalues).all():
            raise ValueError(f"spectrum {label!r} must be a non-empty 1-D array of finite "
                             f"eigenvalues; got shape {eigenvalues.shape}")
        arrays[str(label)] = eigenvalues
    labels = list(arrays)
    palette = dict(zip(labels, sns.color_palette("tab10" if len(labels) <= 10 else "husl",
                                                 len(labels))))
    long = pd.DataFrame({"eigenvalue": np.concatenate(list(arrays.values())),
                         "spectrum": np.repeat(labels, [len(a) for a in arrays.values()])})
    fig, axes = _figure(2 if top_k else 1, width=5.5)
    sns.histplot(data=long, x="eigenvalue", hue="spectrum", hue_order=labels, palette=palette,
                 stat="density", common_bins=True, common_norm=False, element="step", fill=False,
                 bins=bins, ax=axes[0])
    axes[0].set_yscale("log")
    axes[0].set(xlabel="Hessian eigenvalue λ", ylabel="density (log scale)")
    if top_k:
        tops = {label: np.sort(a)[::-1][:top_k] for label, a in arrays.items()}
        for label, top in tops.items():
            axes[1].plot(np.arange(1, len(top) + 1), top, "-o", ms=3, color=palette[label],
                         label=label)
        axes[1].xaxis.set_major_locator(MaxNLocator(integer=True))
        positive = all((top > 0).all() for top in tops.values())
        if positive:
            axes[1].set_yscale("log")
        axes[1].set(xlabel="rank k (1: λ_max)",
                    ylabel="eigenvalue λ_k" + (" (log scale)" if positive else ""),
                    title=f"top {top_k} eigenvalues")
    return fig


def scaling_curves(df: pd.DataFrame) -> Figure:
    """Log-log cost curves of the curvature benchmark (``landscape.bench_scaling``): seconds
    per operation against parameters and against samples, and the extra peak memory against
    parameters. ``df``: rows with ``axis`` ("parameters" / "samples"), ``operation``,
    ``n_params``, ``n_samples``, ``seconds``, ``peak_bytes``."""
    _require(df, ["axis", "operation", "n_params", "n_samples", "seconds", "peak_bytes"],
             "scaling_curves")
    fig, axes = _figure(3, 5.0, 4.0)
    order = list(dict.fromkeys(df.operation))
    panels = [("parameters", "n_params", "seconds", "seconds"),
              ("samples", "n_samples", "seconds", "seconds"),
              ("parameters", "n_params", "peak_mib", "extra peak memory (MiB)")]
    data = df.assign(peak_mib=df.peak_bytes.clip(lower=2**10) / 2**20)
    for ax, (axis, x, y, label) in zip(axes, panels):
        rows = data[data.axis == axis]
        sns.lineplot(rows, x=x, y=y, hue="operation", hue_order=order, style="operation",
                     markers=True, dashes=False, ax=ax, legend=ax is axes[0])
        ax.set(xscale="log", yscale="log", ylabel=label,
               xlabel="parameters" if x == "n_params" else "samples")
    axes[0].legend(fontsize="small")
    fig.suptitle("cost of the curvature operations (" + ", ".join(sorted(set(df.device)))
                 + ")" if "device" in df.columns else "cost of the curvature operations")
    return fig
