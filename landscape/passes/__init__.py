"""Analysis passes and their registry: ``PASSES`` maps a name to a plain ``PassSpec``.

A pass is one numerics module (what it computes), one pass module here (its config, items,
problem, record and metrics) and one entry in ``PASSES``; the study config, plan, executors and
store need no edit (``passes.base`` says what a spec holds). Pass modules import the numerics,
never the store, tracking or plotting.
"""

from landscape.passes import critical, entropy, flatness, generalization, metrics, spectrum, surface
from landscape.passes.base import (
    SCOPES,
    CheckpointChoice,
    Item,
    PassConfig,
    PassSpec,
    ProblemConfig,
    Record,
    Scope,
    Target,
    options_of,
)

PASSES: dict[str, PassSpec] = {spec.name: spec for spec in (
    metrics.SPEC, spectrum.SPEC, critical.SPEC, flatness.SPEC, entropy.SPEC, surface.SLICE,
    surface.TRAJECTORY, surface.INTERPOLATION, generalization.SPEC)}

__all__ = ["PASSES", "SCOPES", "CheckpointChoice", "Item", "PassConfig", "PassSpec",
           "ProblemConfig", "Record", "Scope", "Target", "options_of"]
