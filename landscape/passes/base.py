"""What a pass is: a plain ``PassSpec`` (no class hierarchy) and the values it passes around.

A pass runs on a ``Target`` of its scope (one checkpoint, one run, or the whole study), splits
into ``Item``s (one stored result each), builds its problem once per target (``load``: reading a
checkpoint, building an ``Objective`` on the device the executing process resolved) and computes
each item with a pure ``run(problem, item, config) -> Record``. The pipeline (``landscape.study``)
decides where records go; a pass never opens the store, a tracker or a figure.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, NonNegativeFloat, PositiveInt

from landscape.objective import HVP_MODES

Scope = Literal["checkpoint", "run", "study"]
SCOPES: tuple[Scope, ...] = ("checkpoint", "run", "study")
CheckpointChoice = Literal["all", "last"] | PositiveInt

__all__ = ["SCOPES", "CheckpointChoice", "Item", "PassConfig", "PassSpec", "ProblemConfig",
           "Record", "Scope", "Strict", "Target", "no_metrics", "one_of", "options_of"]


def one_of(value: str, choices, what: str) -> str:
    """``value`` if it is in ``choices``; else the ``ValueError`` a config validator raises."""
    if value not in choices:
        raise ValueError(f"unknown {what} {value!r}; choose one of {sorted(choices)}")
    return value


class Strict(BaseModel):
    """Base of every validated config: unknown keys are errors, instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class PassConfig(Strict):
    """Options every pass has. ``checkpoints`` (checkpoint-scope passes): ``all``, ``last``, or an
    int k for every k-th checkpoint of a run (the last always included)."""

    checkpoints: CheckpointChoice = "all"


class ProblemConfig(PassConfig):
    """Options of a pass on the training objective at a checkpoint: ``n_samples``: evaluation set
    = first N training samples (all if null); ``l2``: coefficient of (l2/2)‖θ‖² added to the
    loss; ``hvp_mode``: how its HVPs are taken (``Objective``; ``auto`` times the modes and
    records its pick in each result's ``hvp_modes``; pin one for bit-identical reruns — the
    modes differ at rounding level only, so it is not compared on resume)."""

    n_samples: PositiveInt | None = None
    l2: NonNegativeFloat = 0.0
    hvp_mode: Literal[HVP_MODES] = "auto"


def options_of(config: PassConfig) -> dict:
    """The options that determine a pass's results (its config but the checkpoint selection),
    as JSON values; stored with every result and compared on resume."""
    return config.model_dump(mode="json", exclude={"checkpoints", "hvp_mode"})


@dataclass(frozen=True)
class Target:
    """What one task of a pass runs on.

    ``scope == "checkpoint"``: ``run`` and ``checkpoint`` (the file) are set; ``"run"``: ``run``
    and ``runs = {run: its checkpoint files}``; ``"study"``: ``runs`` holds every run.
    ``frame``: for a pass that ``reads`` stored results, the store's frame the executing task
    read before ``load`` (None otherwise).
    """

    scope: Scope
    run: str | None = None
    checkpoint: Path | None = None
    runs: Mapping[str, tuple[Path, ...]] = field(default_factory=dict)
    frame: pd.DataFrame | None = None

    @property
    def label(self) -> str:
        """``run/checkpoint``, ``run`` or ``study``: names the target in progress and errors."""
        if self.scope == "checkpoint":
            return f"{self.run}/{self.checkpoint.stem}"
        return self.run if self.scope == "run" else "study"


@dataclass(frozen=True)
class Item:
    """One result of a pass on a target: its ``name`` under the pass (None: the pass writes one
    result per target) and the JSON-able arguments ``run`` needs (start number, seed, …)."""

    name: str | None
    args: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Record:
    """What ``run`` returns: numpy ``arrays``, their dimension names ``dims`` and scalar / JSON
    ``attrs`` (the pipeline adds ``invocation`` and ``options``)."""

    arrays: dict[str, np.ndarray]
    dims: dict[str, tuple[str, ...]]
    attrs: dict[str, Any]


def no_metrics(rows: pd.DataFrame) -> dict[str, float]:
    """A pass whose rows log nothing to MLflow."""
    return {}


@dataclass(frozen=True)
class PassSpec:
    """One analysis pass.

    Attributes:
        name: the key in study files (``passes.<name>``) and in the store.
        scope: ``"checkpoint"``, ``"run"`` or ``"study"`` (``landscape.store`` keys).
        config: its pydantic options model (a ``PassConfig``).
        items: ``(target, config) -> [Item]``: the results one target splits into, in order.
        load: ``(target, config, device) -> problem``: built once per target by the process that
            runs it, with ``device`` resolved there.
        run: ``(problem, item, config) -> Record``: pure; one stored result.
        summarise: ``(rows) -> metrics``: the stored rows of one target (``Store.results_frame``
            restricted to it) → MLflow metrics of that target, and of all rows for the study.
        columns: attributes that come first in ``Store.results_frame`` of this pass.
        implicit: run on every checkpoint with the default config, not named in study files.
        needs_device: whether ``load`` builds on a device (GPUs are requested for it on Ray).
        reads: the name of a ``Store`` method returning a frame of other passes' results (e.g.
            ``"measures"``) that the task hands ``load`` as ``target.frame``. Such a pass
            derives its results from others, so it is recomputed at every invocation (its
            stored result is replaced) instead of being skipped when complete.
    """

    name: str
    scope: Scope
    config: type[PassConfig]
    items: Callable[[Target, PassConfig], list[Item]]
    load: Callable[[Target, PassConfig, str], Any]
    run: Callable[[Any, Item, PassConfig], Record]
    summarise: Callable[[pd.DataFrame], dict[str, float]] = no_metrics
    columns: tuple[str, ...] = ("run", "checkpoint", "item")
    implicit: bool = False
    needs_device: bool = True
    reads: str | None = None
    description: str = ""

    def __post_init__(self):
        if self.scope not in SCOPES:
            raise ValueError(f"pass {self.name!r}: scope must be one of {SCOPES}; "
                             f"got {self.scope!r}")
        if not issubclass(self.config, PassConfig):
            raise TypeError(f"pass {self.name!r}: config must subclass PassConfig; "
                            f"got {self.config!r}")
