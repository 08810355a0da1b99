"""The ``flatness`` pass: sharpness / flatness measures at a checkpoint (``landscape.flatness``).

Options: ``measures``, a list of ``{kind: <a landscape.flatness.MEASURES kind>, <its options>}``
(default: every kind with its defaults), and ``seed`` (every stochastic measure's). One item per
measure, its store key named by ``measure_name`` (the kind, then each option given in the study
as ``_<name><value>``); record: no arrays; attrs ``measure`` (the measure's own name,
``flatness.Measure.name``: e.g. ``keskar_eps0.001`` for the default Keskar item ``keskar``),
``kind, value, stderr`` (None for a deterministic value or a bound), ``settings`` (every option
the measure used), ``n_evals``, ``wall_time``, ``info`` (the measure's diagnostics), l2,
n_samples. Each measure is an MLflow metric of its checkpoint's child run.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
from pydantic import ConfigDict, Field, field_validator, model_validator

from landscape.flatness import MEASURES, measure_options
from landscape.objective import Objective
from landscape.passes.base import (
    CheckpointChoice,
    Item,
    PassSpec,
    ProblemConfig,
    Record,
    Strict,
    one_of,
)
from landscape.passes.spectrum import load_objective

__all__ = ["SPEC", "FlatnessConfig", "MeasureChoice", "measure_name", "per_checkpoint_metrics"]


def _format(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float | int) and not isinstance(value, bool) else (
        str(value))


def measure_name(prefix: str, options: dict[str, Any]) -> str:
    """``prefix`` then ``_<option><value>`` per option in the order given (numbers as ``:g``)."""
    return prefix + "".join(f"_{key}{_format(value)}" for key, value in options.items())


class MeasureChoice(Strict):
    """One measure: its ``kind`` and the options given to it (the rest take their defaults)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    kind: str

    @field_validator("kind")
    @classmethod
    def _known(cls, kind: str) -> str:
        return one_of(kind, MEASURES, "measure kind")

    @model_validator(mode="after")
    def _options_exist(self) -> MeasureChoice:
        allowed = set(measure_options(self.kind)) - {"seed"}
        unknown = set(self.options) - allowed
        if unknown:
            raise ValueError(f"measure {self.kind!r} has no option {sorted(unknown)}; its "
                             f"options: {sorted(allowed)}")
        return self

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    @property
    def name(self) -> str:
        return measure_name(self.kind, self.options)


class FlatnessConfig(ProblemConfig):
    """Flatness / sharpness measures at each chosen checkpoint (default: the last of each run)."""

    checkpoints: CheckpointChoice = "last"
    measures: list[MeasureChoice] = Field(
        default_factory=lambda: [MeasureChoice(kind=kind) for kind in MEASURES], min_length=1)
    seed: int = 0

    @field_validator("measures")
    @classmethod
    def _distinct(cls, measures: list[MeasureChoice]) -> list[MeasureChoice]:
        names = [m.name for m in measures]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"measures listed twice: {twice}")
        return measures


def _run(obj: Objective, item: Item, config: FlatnessConfig) -> Record:
    kind = item.args["kind"]
    m = MEASURES[kind](obj, obj.theta, seed=config.seed, **item.args["options"])
    return Record({}, {}, {"measure": m.name, "kind": kind, "value": m.value,
                           "stderr": m.stderr, "settings": m.settings, "n_evals": m.n_evals,
                           "wall_time": m.wall_time, "info": m.info, "l2": config.l2,
                           "n_samples": obj.num_samples})


def per_checkpoint_metrics(rows: pd.DataFrame) -> dict[str, float]:
    """``{measure: value}`` (and ``<measure>_stderr``) of one checkpoint's rows; nothing for rows
    of several checkpoints (those values live in the checkpoints' own child runs)."""
    if rows.empty or rows[["run", "checkpoint"]].drop_duplicates().shape[0] > 1:
        return {}
    out = {}
    for row in rows.itertuples():
        out[row.measure] = row.value
        if isinstance(row.stderr, float) and row.stderr == row.stderr:
            out[f"{row.measure}_stderr"] = row.stderr
    return out


SPEC = PassSpec(
    name="flatness", scope="checkpoint", config=FlatnessConfig,
    items=lambda target, config: [Item(m.name, {"kind": m.kind, "options": m.options})
                                  for m in config.measures],
    load=load_objective, run=_run, summarise=per_checkpoint_metrics,
    columns=("run", "checkpoint", "item", "measure", "value", "stderr"),
    description="sharpness / flatness measures at a checkpoint")
