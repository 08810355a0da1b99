"""The ``critical`` pass: critical-point searches from a checkpoint and perturbations of it.

Items ``<NNN>-r<radius>[-k<k>]`` (NNN counts the checkpoint's searches; ``-k``: the number of
negative eigenvalues eigenvector following targets, when the pass lists ``target_n_negative``),
starts in ``critical.perturbed_starts`` order, each once per target. Record: arrays ``theta
[param]``, ``start [param]``, ``eigenvalues [eigenvalue]`` (dense spectrum at the end point;
absent past the dense limit) and the history ``loss, grad_norm_sq, hg_norm, gradient_flatness,
step_size, inner [iteration]``; attrs every scalar of ``critical.CriticalPoint`` (status, loss,
error, index, grad_norm, …), the thresholds, the start (label, kind, radius),
``target_n_negative``, the objective (n_params, l2, n_samples) and the device.
"""

from __future__ import annotations

import zlib
from collections import Counter
from dataclasses import dataclass, fields
from typing import Literal

import pandas as pd
from pydantic import (
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    field_validator,
    model_validator,
)

from landscape.critical import (
    AUTO,
    METHODS,
    CriticalPoint,
    Start,
    Thresholds,
    analyse,
    find_critical_point,
    perturbed_starts,
    resolve_method,
    start_radii,
)
from landscape.critical.eigenvector_following import INDEX_MODES
from landscape.critical.search import DEFAULT_METHOD, HISTORY_FIELDS
from landscape.objective import Objective
from landscape.passes.base import Item, PassSpec, Record, Target, one_of
from landscape.passes.spectrum import IndexConfig, load_objective

COLUMNS = ("run", "checkpoint", "item", "status", "loss", "error", "index", "index_stable",
           "grad_norm")


class CriticalConfig(IndexConfig):
    """Critical-point searches from each checkpoint and ``per_radius`` perturbations of it per
    non-zero radius (relative: ‖δ‖ ≈ r‖θ‖); thresholds as in ``critical.Thresholds``.
    ``target_n_negative``: with eigenvector following, search from every start once per target
    number of negative eigenvalues k; without it ``index_mode`` says how eigenvector following
    picks k: ``follow`` recounts at every iterate (the nearest critical point of any index),
    ``start`` keeps the start's count (``critical.EigenvectorFollowing``). ``seed`` seeds the
    perturbations (mixed with the run and checkpoint names)."""

    method: str = DEFAULT_METHOD
    radii: list[NonNegativeFloat] = Field(default_factory=lambda: [0.0], min_length=1)
    per_radius: PositiveInt = 1
    target_n_negative: list[NonNegativeInt] | None = Field(default=None, min_length=1)
    index_mode: Literal[INDEX_MODES] = "follow"
    l2: NonNegativeFloat = 1e-3
    max_iterations: PositiveInt = Thresholds.max_iterations
    grad_tol: PositiveFloat = 1e-8
    seed: int = 0

    @field_validator("method")
    @classmethod
    def _known(cls, method: str) -> str:
        return one_of(method, (AUTO, *METHODS), "method")

    @model_validator(mode="after")
    def _targets_need_eigenvector_following(self) -> CriticalConfig:
        if self.target_n_negative is not None and self.method != "eigenvector-following":
            raise ValueError("'target_n_negative' needs method: eigenvector-following; "
                             f"got method {self.method!r}")
        return self


@dataclass(frozen=True)
class Searches:
    """A checkpoint's objective and the starts of its searches."""

    objective: Objective
    starts: list[Start]


def items(target: Target, config: CriticalConfig) -> list[Item]:
    """One item per start × target count (``target_n_negative`` None: once per start)."""
    targets = [None] if config.target_n_negative is None else config.target_n_negative
    out = []
    for i, r in enumerate(start_radii(config.radii, config.per_radius)):
        for k in targets:
            name = f"{len(out):03d}-r{r:g}" + ("" if k is None else f"-k{k}")
            out.append(Item(name, {"start": i, "target_n_negative": k}))
    return out


def _load(target: Target, config: CriticalConfig, device: str) -> Searches:
    obj = load_objective(target, config, device)
    seed = zlib.crc32(f"{config.seed}/{target.run}/{target.checkpoint.stem}".encode())
    return Searches(obj, perturbed_starts(obj.theta, config.radii, config.per_radius, seed=seed,
                                          label=target.label))


def _run(problem: Searches, item: Item, config: CriticalConfig) -> Record:
    obj, start = problem.objective, problem.starts[item.args["start"]]
    k = item.args["target_n_negative"]
    thresholds = Thresholds(grad_tol=config.grad_tol, max_iterations=config.max_iterations,
                            index_tol=config.index_tol, index_atol=config.index_atol)
    following = resolve_method(config.method, obj.num_params) == "eigenvector-following"
    target = {"n_negative": config.index_mode if k is None else k} if following else {}
    point = analyse(obj, find_critical_point(obj, start.theta, config.method,
                                             thresholds=thresholds, label=start.label, **target))
    record = point_record(point)
    record.arrays["start"] = start.theta.cpu().numpy()
    record.dims["start"] = ("param",)
    record.attrs.update(start_kind=start.kind, radius=start.radius, target_n_negative=k,
                        n_params=obj.num_params, l2=config.l2, n_samples=obj.num_samples,
                        device=str(obj.device))
    return record


def point_record(point: CriticalPoint) -> Record:
    """Arrays, dims and scalar attrs of one analysed search."""
    arrays = {"theta": point.theta.cpu().numpy()}
    dims = {"theta": ("param",)}
    if point.eigenvalues is not None:
        arrays["eigenvalues"] = point.eigenvalues.cpu().numpy()
        dims["eigenvalues"] = ("eigenvalue",)
    for name in HISTORY_FIELDS:
        arrays[name] = point.history[name].cpu().numpy()
        dims[name] = ("iteration",)
    skip = {"theta", "history", "eigenvalues", "thresholds", "cluster"}  # cluster: store-wide
    attrs = {f.name: getattr(point, f.name) for f in fields(point) if f.name not in skip}
    attrs["thresholds"] = point.thresholds
    return Record(arrays, dims, attrs)


def summarise(rows: pd.DataFrame) -> dict[str, float]:
    """Searches per status (``n_critical``, ``n_max_iterations``, …) and, over the critical
    points, the lowest loss and the highest index."""
    if rows.empty:
        return {}
    counts = Counter(rows["status"].dropna())
    metrics = {f"n_{status.replace('-', '_')}": n for status, n in counts.items()}
    critical = rows[rows["status"] == "critical"]
    if len(critical):
        metrics |= {"min_critical_loss": float(critical["loss"].min()),
                    "max_critical_index": float(critical["index"].max())}
    return metrics


SPEC = PassSpec(name="critical", scope="checkpoint", config=CriticalConfig, items=items,
                load=_load, run=_run, summarise=summarise, columns=COLUMNS,
                description="critical-point searches from a checkpoint and perturbations of it")
