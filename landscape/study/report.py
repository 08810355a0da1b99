"""The report of a study, from the store: figures (ε–α, spectra by error band, training curves,
status counts), the headline numbers (searches per status, Spearman's ρ of ε against α) and the
study-level metrics of every pass (``PassSpec.summarise`` over all its rows).

Reads the store once, after the tasks; never computes a result.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from landscape import plots
from landscape.critical.search import cluster_ids
from landscape.passes import PASSES, PassSpec
from landscape.store import Store
from landscape.study.config import Study
from landscape.tracking import Tracker, ui_command

Log = Callable[[str], None]

__all__ = ["StudyOutcome", "draw_figures", "epsilon_alpha_rhos", "study_metrics"]


@dataclass(frozen=True)
class StudyOutcome:
    """What a study invocation left: where, what was computed, and the headline numbers.

    ``status_counts``: searches per status over the whole store; ``n_distinct_critical``:
    critical points after merging duplicates (``critical.search.cluster_ids``); ``rho``:
    Spearman ``(ρ, p, n)`` of (α, ε) over the points labelled critical with a stable index, for
    ε = ``"loss"`` and ``"error"``, and over one point per distinct critical point
    (``"loss_distinct"``, …); ``n_index_uncertain``: critical points left out of ρ because their
    index is uncertain; ``failures``: task name → error of the tasks that failed (every other
    result is in the store); ``metrics``: what was logged to the MLflow parent run.
    """

    store_path: Path
    figures: dict[str, Path]
    computed: int
    skipped: int
    status_counts: dict[str, int]
    n_distinct_critical: int
    rho: dict[str, tuple[float, float, int]]
    n_index_uncertain: int
    mlflow_run_id: str | None
    tracking_uri: str
    invocation: str
    failures: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)

    def report(self) -> str:
        counts = ", ".join(f"{s} {n}" for s, n in sorted(self.status_counts.items())) or "none"
        lines = [(f"critical-point searches by status: {counts} "
                  f"({self.n_distinct_critical} distinct critical points)"),
                 f"results computed now: {self.computed}, already complete: {self.skipped}"]
        for name in ("loss", "error"):
            parts = [_format_rho(*self.rho[f"{name}{suffix}"]) + f" over {what}"
                     for suffix, what in (("", "critical points"), ("_distinct", "distinct ones"))]
            lines.append(f"Spearman ρ(ε = {name}, α): " + "; ".join(parts))
        if self.n_index_uncertain:
            lines.append(f"left out of ρ and of the isotonic fit: {self.n_index_uncertain} "
                         f"critical points whose index is uncertain (see index_stable)")
        if self.failures:
            lines.append(f"FAILED tasks ({len(self.failures)}; their results are missing, "
                         f"every other result is stored; run the study again to retry them):")
            lines += [f"  {name}: {error}" for name, error in self.failures.items()]
        lines.append(f"store: {self.store_path}")
        if self.figures:
            lines.append(f"figures: {self.store_path.parent / 'figures'}")
        if self.mlflow_run_id is not None:
            lines.append(f"MLflow run {self.mlflow_run_id}; open the UI with: "
                         f"{ui_command(self.tracking_uri)}")
        else:
            lines.append("MLflow: tracking off for this invocation")
        return "\n".join(lines)


def _format_rho(rho: float, p: float, n: int) -> str:
    if n < 3 or not math.isfinite(rho):
        return f"undefined (n = {n}: needs ≥ 3 points and two distinct values)"
    return f"{rho:.3f} (p = {p:.2g}, n = {n})"


def epsilon_alpha_rhos(df: pd.DataFrame) -> tuple[dict[str, tuple[float, float, int]], int]:
    """Spearman ``(ρ, p, n)`` of (α, loss) and (α, error) over the rows labelled critical with a
    stable index (``plots.with_index_certainty``), and over one row per distinct such point
    (``*_distinct``); plus the number of distinct points."""
    df = plots.with_index_certainty(df)
    clusters = cluster_ids(df["status"], df.get("n_negative", [None] * len(df)),
                           df.get("n_zero", [None] * len(df)), df["loss"])
    distinct = df.assign(cluster=clusters).dropna(subset=["cluster"]).drop_duplicates("cluster")
    rho = {}
    for name in ("loss", "error"):
        has = name in df.columns and df[name].notna().any()
        for suffix, rows in (("", df), ("_distinct", distinct)):
            rho[name + suffix] = (plots.spearman_rho(rows, "index", name) if has
                                  else (math.nan, math.nan, 0))
    return rho, len(distinct)


def draw_figures(study: Study, store: Store, folder: Path, tracker: Tracker,
                 log: Log) -> dict[str, Path]:
    """Draw the study's figures from the store into ``folder`` and log them; returns paths."""
    df = store.critical_points()
    metrics = store.results_frame("metrics")
    critical = df[df["status"] == "critical"]
    drawers = {
        "epsilon_alpha": (lambda: plots.epsilon_alpha(df), len(df) > 0),
        "spectra_by_error_band": (lambda: _spectra_figure(store, critical), len(critical) > 0),
        "training_curves": (lambda: plots.training_curves(metrics.sort_values(["run", "step"])),
                            len(metrics) > 0 and "train_loss" in metrics),
        "status_counts": (lambda: plots.status_counts(df), len(df) > 0),
    }
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name in study.figures:
        draw, possible = drawers[name]
        if not possible:
            log(f"figure {name}: nothing to draw yet (no data in the store)")
            continue
        fig = draw()
        if fig is None:
            log(f"figure {name}: nothing to draw (no full spectra in the store)")
            continue
        out[name] = folder / f"{name}.png"
        fig.savefig(out[name], dpi=120)
        tracker.log_figure(fig, f"figures/{name}.png")
    return out


def _spectra_figure(store: Store, critical: pd.DataFrame):
    """Full spectra only: points analysed by Lanczos (large nets) have none and are left out."""
    eps_column = "error" if critical["error"].notna().all() else "loss"
    spectra, eps = [], []
    for row, value in zip(critical.itertuples(), critical[eps_column].to_numpy(float),
                          strict=True):
        arrays = store.read_result(Store.key(row.run, row.checkpoint, "critical", row.item)).arrays
        if "eigenvalues" in arrays:
            spectra.append(arrays["eigenvalues"])
            eps.append(value)
    return plots.spectra_by_error_band(spectra, np.asarray(eps)) if spectra else None



def study_metrics(store: Store, registry: Mapping[str, PassSpec] = PASSES) -> dict[str, float]:
    """Every pass's ``summarise`` over all of its rows in the store (passes with none omitted)."""
    metrics: dict[str, float] = {}
    for name, spec in registry.items():
        rows = store.results_frame(name, spec.columns)
        if len(rows):
            metrics |= spec.summarise(rows)
    return metrics
