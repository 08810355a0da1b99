"""The sharp-vs-flat and generalization tables of a study, read from its store.

* ``sharpness_by_pair``: for every pair the ``interpolation`` pass joined (run a, run b: e.g. the
  small- and the large-batch run of one seed), each measure of both final checkpoints
  (``passes.generalization.final_measures``), whether b is the sharper one, and both test errors
  (the ``metrics`` of the interpolated checkpoints). "Sharper" is a larger value, except for the
  measures that grow with flatness (``FLATTER_WHEN_LARGER``: the near-zero eigenvalue fraction,
  the PAC-Bayes σ* and the local entropy Φ), where it is a smaller one; ties are not sharper.
* ``kendall_result``: the ``generalization`` pass's table (``rank_correlation.COLUMNS``) and its
  settings; ``kendall_lines`` says of each measure whether its interval puts "sharper" (as
  oriented above) with a larger gap, a smaller one, or covers τ = 0.

``short_of_target`` lists the runs whose last checkpoint is above the sweep's training-loss
target (stopped by the epoch cap: not comparable). ``sharpness_lines`` and ``kendall_lines`` turn
the tables into the report's text. ``StudyFrames`` reads each frame the report needs from the
store once, for the figures and the headline numbers alike. Reads the store only.
"""

from __future__ import annotations

import math
from functools import cached_property

import numpy as np
import pandas as pd

from landscape.passes.generalization import final_measures
from landscape.rank_correlation import COLUMNS
from landscape.store import Store

__all__ = ["FLATTER_WHEN_LARGER", "StudyFrames", "kendall_lines", "kendall_result", "sharper",
           "sharpness_by_pair", "sharpness_lines", "short_of_target"]

# Name prefixes of the measures whose value grows as the minimum gets flatter.
FLATTER_WHEN_LARGER = ("near_zero_fraction", "pac_bayes", "local_entropy")
PAIR_COLUMNS = ("pair", "run_a", "run_b", "measure", "value_a", "value_b", "b_sharper",
                "test_error_a", "test_error_b")


def sharper(measure: str, value_b: float, value_a: float) -> bool:
    """Whether ``value_b`` of ``measure`` marks a sharper minimum than ``value_a`` (module docs).

    >>> sharper("lambda_max", 5.0, 1.0), sharper("pac_bayes_sigma", 0.5, 0.1)
    (True, False)
    """
    if measure.startswith(FLATTER_WHEN_LARGER):
        return value_b < value_a
    return value_b > value_a


def sharpness_by_pair(pairs: pd.DataFrame, metrics: pd.DataFrame,
                      models: pd.DataFrame) -> pd.DataFrame:
    """One row per (interpolation pair, measure both runs have): ``PAIR_COLUMNS``, from the
    ``interpolation`` results' rows ``pairs`` (``StudyFrames.pairs``), the ``metrics`` rows and
    the runs' ``final_measures``; empty when there are no pairs."""
    if pairs.empty:
        return pd.DataFrame(columns=list(PAIR_COLUMNS))
    metrics = metrics.set_index(["run", "checkpoint"])
    measures = models.set_index(["run", "measure"])["value"]
    rows = []
    for pair in pairs.itertuples():
        errors = [metrics["test_error"].get((run, checkpoint), math.nan)
                  if "test_error" in metrics else math.nan
                  for run, checkpoint in ((pair.run_a, pair.checkpoint_a),
                                          (pair.run_b, pair.checkpoint_b))]
        names_a = set(measures.loc[pair.run_a].index) if pair.run_a in measures.index else set()
        names_b = set(measures.loc[pair.run_b].index) if pair.run_b in measures.index else set()
        for measure in sorted(names_a & names_b):
            a, b = measures[pair.run_a, measure], measures[pair.run_b, measure]
            rows.append({"pair": pair.item, "run_a": pair.run_a, "run_b": pair.run_b,
                         "measure": measure, "value_a": a, "value_b": b,
                         "b_sharper": sharper(measure, b, a), "test_error_a": errors[0],
                         "test_error_b": errors[1]})
    return pd.DataFrame(rows, columns=list(PAIR_COLUMNS))


def sharpness_lines(frame: pd.DataFrame) -> list[str]:
    """Per measure, in how many pairs run b is sharper; per pair, b's test error minus a's."""
    if frame.empty:
        return []
    pairs = frame.drop_duplicates("pair")
    gaps = (pairs["test_error_b"] - pairs["test_error_a"]).to_numpy(float)
    lines = [(f"sharp vs flat over {len(pairs)} interpolation pairs a~b "
             f"(sharper: larger value; smaller for {', '.join(FLATTER_WHEN_LARGER)})")]
    if np.isfinite(gaps).any():
        each = ", ".join(f"{g:+.3f}" for g in gaps)
        lines.append(f"  test error b − a: mean {np.nanmean(gaps):+.3f} (per pair: {each})")
    width = max(len(m) for m in frame["measure"])
    for measure, rows in frame.groupby("measure", sort=True):
        ratio = rows["value_b"] / rows["value_a"]
        shown = (f", median b/a {ratio.median():.3g}"
                 if (rows[["value_a", "value_b"]] > 0).all(axis=None) else "")
        lines.append(f"  {measure:<{width}}  b sharper in {int(rows['b_sharper'].sum())} of "
                     f"{len(rows)}{shown}")
    return lines


def short_of_target(metrics: pd.DataFrame, target: float | None) -> dict[str, float]:
    """Run → final training loss, for the runs whose last checkpoint (by step) in the
    ``metrics`` rows is above ``target`` (empty when there is no target)."""
    if target is None or metrics.empty or "train_loss" not in metrics:
        return {}
    last = metrics.sort_values(["run", "step"]).drop_duplicates("run", keep="last")
    return {row.run: float(row.train_loss) for row in last.itertuples()
            if row.train_loss > target}


def kendall_result(store: Store) -> tuple[pd.DataFrame, dict] | None:
    """The ``generalization`` result's table (``COLUMNS``, one row per measure) and attrs, or
    None when the study has no such result."""
    key = Store.key(None, None, "generalization")
    if not store.is_complete(key):
        return None
    result = store.read_result(key)
    table = pd.DataFrame({"measure": result.attrs["measures"],
                          **{c: result.arrays[c] for c in COLUMNS if c != "measure"}})
    return table, result.attrs


def kendall_lines(table: pd.DataFrame, attrs: dict) -> list[str]:
    """The τ table: per measure τ, its bootstrap interval, p, the within-group τ and n."""
    if table.empty:
        return [f"Kendall τ against {attrs['gap']}: no measures stored"]
    width = max(len(m) for m in table["measure"])
    lines = [(f"Kendall τ of each measure against {attrs['gap']} over {attrs['n_models']} "
             f"models ({attrs['confidence']:.0%} bootstrap interval; τ within groups of "
             f"{', '.join(attrs['group_by']) or '-'}):")]
    for row in table.sort_values("tau", ascending=False, na_position="last").itertuples():
        if not math.isfinite(row.tau):
            lines.append(f"  {row.measure:<{width}}  τ undefined (n = {row.n})")
            continue
        sign = -1 if row.measure.startswith(FLATTER_WHEN_LARGER) else 1
        low, high = sorted((sign * row.low, sign * row.high))
        verdict = ("sharper ↔ larger gap" if low > 0 else "sharper ↔ smaller gap" if high < 0
                   else "interval covers 0")
        lines.append(f"  {row.measure:<{width}}  τ = {row.tau:+.2f} [{row.low:+.2f}, "
                     f"{row.high:+.2f}]  p = {row.p_value:.2g}  within {row.tau_within:+.2f}  "
                     f"n = {row.n}  ({verdict})")
    return lines


class StudyFrames:
    """The store's frames that the report reads, each read on first use and then kept: the
    figures and the headline numbers share one read of each."""

    def __init__(self, store: Store):
        self.store = store

    @cached_property
    def critical_points(self) -> pd.DataFrame:
        return self.store.critical_points()

    @cached_property
    def metrics(self) -> pd.DataFrame:
        return self.store.results_frame("metrics")

    @cached_property
    def final_measures(self) -> pd.DataFrame:
        return final_measures(self.store.measures())

    @cached_property
    def pairs(self) -> pd.DataFrame:
        return self.store.results_frame("interpolation", ("item", "run_a", "run_b",
                                                          "checkpoint_a", "checkpoint_b"))

    @cached_property
    def sharpness(self) -> pd.DataFrame:
        return sharpness_by_pair(self.pairs, self.metrics, self.final_measures)

    @cached_property
    def kendall(self) -> tuple[pd.DataFrame, dict] | None:
        return kendall_result(self.store)
