"""The ``spectrum`` pass: the dense Hessian spectrum (eigenvalues, inertia, index α) at a
checkpoint.

Record: ``eigenvalues [eigenvalue]`` (ascending); attrs loss, error (None for tasks without
classes), index, ``n_negative / n_zero / n_positive``, the index band ``n_negative_min/max`` and
``index_stable``, the counting tolerances, l2 and n_samples.
"""

from __future__ import annotations

import pandas as pd
from pydantic import NonNegativeFloat

from landscape.objective import Objective
from landscape.passes.base import Item, PassSpec, ProblemConfig, Record, Target
from landscape.problem import problem_from_checkpoint
from landscape.spectrum import DEFAULT_INDEX_ATOL, DEFAULT_INDEX_TOL, full_spectrum


class IndexConfig(ProblemConfig):
    """``index_tol`` / ``index_atol``: relative tolerance and absolute floor of the negative count
    (``spectrum.count_inertia``)."""

    index_tol: NonNegativeFloat = DEFAULT_INDEX_TOL
    index_atol: NonNegativeFloat = DEFAULT_INDEX_ATOL


class SpectrumConfig(IndexConfig):
    """Dense Hessian spectrum (eigenvalues, inertia) at each chosen checkpoint."""


def load_objective(target: Target, config: ProblemConfig, device: str) -> Objective:
    """The float64 full-batch training objective at the target checkpoint, on ``device``."""
    return problem_from_checkpoint(target.checkpoint, n_samples=config.n_samples, l2=config.l2,
                                   hvp_mode=config.hvp_mode,
                                   device=device).objective


def _run(obj: Objective, item: Item, config: SpectrumConfig) -> Record:
    theta = obj.theta
    spec = full_spectrum(obj, theta, tol=config.index_tol, atol=config.index_atol)
    inertia = spec.inertia
    try:
        error = obj.error(theta)
    except ValueError:
        error = None
    return Record(
        {"eigenvalues": spec.eigenvalues.cpu().numpy()}, {"eigenvalues": ("eigenvalue",)},
        {"loss": float(obj.loss(theta)), "error": error, "index": inertia.index,
         "n_negative": inertia.n_negative, "n_zero": inertia.n_zero,
         "n_positive": inertia.n_positive, "index_tol": config.index_tol,
         "index_atol": config.index_atol, "n_negative_min": inertia.n_negative_min,
         "n_negative_max": inertia.n_negative_max, "index_stable": inertia.stable,
         "l2": config.l2, "n_samples": obj.num_samples})


def summarise(rows: pd.DataFrame) -> dict[str, float]:
    """Largest index and lowest loss over the rows' checkpoints."""
    if rows.empty:
        return {}
    return {"max_spectrum_index": float(rows["index"].max()),
            "min_spectrum_loss": float(rows["loss"].min())}


SPEC = PassSpec(name="spectrum", scope="checkpoint", config=SpectrumConfig,
                items=lambda target, config: [Item(None)], load=load_objective, run=_run,
                summarise=summarise,
                columns=("run", "checkpoint", "item", "loss", "error", "index", "index_stable"),
                description="dense Hessian spectrum at a checkpoint")
