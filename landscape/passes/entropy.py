"""The ``entropy`` pass: the normalised local entropy Φ_γ at a checkpoint
(``landscape.entropy.local_entropy``), once per method × γ.

Options: ``gammas`` (scopes γ, default 10, 1, 0.1), ``methods`` (default Laplace and
thermodynamic integration), ``beta``, ``seed`` and ``options`` (further keyword arguments of
``local_entropy``). Items ``local_entropy_gamma<γ>`` (method ``ti``) or
``local_entropy_<method>_gamma<γ>``; record: no arrays; attrs ``measure, method, gamma, beta,
sigma, value, stderr, valid, reason, dim, subspace, n_evals, settings``, l2, n_samples. An
invalid estimate (e.g. Laplace with λ + γ ≤ 0) is stored with ``valid = false`` and its reason.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Literal

from pydantic import Field, PositiveFloat, field_validator

from landscape.entropy import METHODS, local_entropy
from landscape.objective import Objective
from landscape.passes.base import CheckpointChoice, Item, PassSpec, ProblemConfig, Record
from landscape.passes.flatness import per_checkpoint_metrics
from landscape.passes.spectrum import load_objective

__all__ = ["SPEC", "EntropyConfig"]


class EntropyConfig(ProblemConfig):
    """Local entropy at each chosen checkpoint (default: the last of each run)."""

    checkpoints: CheckpointChoice = "last"
    gammas: list[PositiveFloat] = Field(default_factory=lambda: [10.0, 1.0, 0.1], min_length=1)
    methods: list[Literal[METHODS]] = Field(default_factory=lambda: ["laplace", "ti"],
                                            min_length=1)
    beta: PositiveFloat = 1.0
    seed: int = 0
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("options")
    @classmethod
    def _known_options(cls, options: dict[str, Any]) -> dict[str, Any]:
        params = set(inspect.signature(local_entropy).parameters) - {
            "obj", "theta", "gamma", "beta", "method", "seed"}
        unknown = set(options) - params
        if unknown:
            raise ValueError(f"local_entropy has no option {sorted(unknown)}; its options: "
                             f"{sorted(params)}")
        return options


def _name(method: str, gamma: float) -> str:
    return f"local_entropy{'' if method == 'ti' else '_' + method}_gamma{gamma:g}"


def _run(obj: Objective, item: Item, config: EntropyConfig) -> Record:
    est = local_entropy(obj, obj.theta, item.args["gamma"], beta=config.beta,
                        method=item.args["method"], seed=config.seed, **config.options)
    return Record({}, {}, {"measure": item.name, **dataclasses.asdict(est), "l2": config.l2,
                           "n_samples": obj.num_samples})


SPEC = PassSpec(
    name="entropy", scope="checkpoint", config=EntropyConfig,
    items=lambda target, config: [Item(_name(m, g), {"method": m, "gamma": g})
                                  for m in config.methods for g in config.gammas],
    load=load_objective, run=_run, summarise=per_checkpoint_metrics,
    columns=("run", "checkpoint", "item", "measure", "value", "stderr", "valid"),
    description="local entropy Φ_γ at a checkpoint")
