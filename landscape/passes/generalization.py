"""The ``generalization`` pass (study scope): does each stored measure predict the
generalization gap? Kendall's τ over the models with a bootstrap interval and its granulated
form (``landscape.rank_correlation``).

It reads ``Store.measures()`` (every ``flatness`` / ``entropy`` result beside its checkpoint's
training metrics), keeps one row per run and measure — the run's last checkpoint that has the
measure, valid estimates only, optionally only runs that reached ``max_train_loss`` — and
correlates the value with ``gap`` (default ``gap_error``, test − train error; ``gap_loss``; or
``test_error``). Recomputed at every invocation, since its inputs are other results. Record:
arrays ``tau, low, high, p_value, tau_within [measure]``, ``n, n_groups, n_degenerate
[measure]``; attrs ``measures`` (names, in the arrays' order), gap, group_by, confidence,
n_resamples, seed, n_models, max_train_loss and, per measure, ``kendall_tau_<measure>`` with
``_low`` / ``_high`` (the study's MLflow metrics).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
from pydantic import Field, PositiveFloat, PositiveInt

from landscape.passes.base import Item, PassConfig, PassSpec, Record, Target
from landscape.rank_correlation import COLUMNS, kendall_table

__all__ = ["SPEC", "GeneralizationConfig", "final_measures"]


class GeneralizationConfig(PassConfig):
    """Kendall τ of every stored measure against the generalization gap; ``max_train_loss``
    leaves out the models whose final training loss is above it (runs that stopped at the
    epoch cap short of the sweep's ``target_train_loss``)."""

    gap: Literal["gap_error", "gap_loss", "test_error"] = "gap_error"
    max_train_loss: PositiveFloat | None = None
    group_by: list[str] = Field(default_factory=lambda: ["seed"])
    n_resamples: PositiveInt = 2000
    confidence: float = Field(default=0.95, gt=0, lt=1)
    seed: int = 0


def final_measures(measures: pd.DataFrame) -> pd.DataFrame:
    """Per (run, measure) the row of the run's last checkpoint (by step) with a valid value."""
    valid = measures[measures["valid"].fillna(True).astype(bool) & measures["value"].notna()]
    return (valid.sort_values(["run", "measure", "step"])
            .drop_duplicates(["run", "measure"], keep="last").reset_index(drop=True))


def _load(target: Target, config: GeneralizationConfig, device: str) -> pd.DataFrame:
    if target.frame is None:
        raise ValueError("the generalization pass reads the stored measures; none were given")
    models = final_measures(target.frame)
    if config.max_train_loss is not None:
        models = models[models["train_loss"] <= config.max_train_loss]
    return models


def _run(models: pd.DataFrame, item: Item, config: GeneralizationConfig) -> Record:
    table = kendall_table(models, gap=config.gap, group_by=config.group_by,
                          n_resamples=config.n_resamples, confidence=config.confidence,
                          seed=config.seed)
    arrays = {c: table[c].to_numpy(float if c not in ("n", "n_groups", "n_degenerate")
                                   else np.int64)
              for c in COLUMNS if c != "measure"}
    return Record(arrays, {name: ("measure",) for name in arrays},
                  {"measures": table["measure"].tolist(), "gap": config.gap,
                   "group_by": list(config.group_by), "confidence": config.confidence,
                   "n_resamples": config.n_resamples, "seed": config.seed,
                   "n_models": int(models["run"].nunique()) if len(models) else 0,
                   "max_train_loss": config.max_train_loss,
                   **{f"kendall_tau_{row.measure}{suffix}": getattr(row, column)
                      for row in table.itertuples()
                      for suffix, column in (("", "tau"), ("_low", "low"), ("_high", "high"))}})


def summarise(rows: pd.DataFrame) -> dict[str, float]:
    """The ``kendall_tau_<measure>`` attributes (and their ``_low`` / ``_high`` bounds)."""
    if rows.empty:
        return {}
    return {c: rows[c].iloc[-1] for c in rows.columns if c.startswith("kendall_tau_")}


SPEC = PassSpec(
    name="generalization", scope="study", config=GeneralizationConfig,
    items=lambda target, config: [Item(None)], load=_load, run=_run, summarise=summarise,
    columns=("run", "checkpoint", "item", "gap", "n_models"), needs_device=False,
    reads="measures",
    description="Kendall τ (bootstrap interval) of each measure against the generalization gap")
