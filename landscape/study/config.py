"""Study files: the YAML schema, its validation, and ``--quick`` / ``--set`` overrides.

A study file is one YAML mapping (see ``studies/*.yaml`` and the README)::

    name: dauphin2014                 # also the MLflow experiment unless tracking.experiment is set
    output: outputs/dauphin2014       # store.zarr, runs/, figures/ go here
    data: {name: digits, n_train: 300}
    model: mlp:8:tanh
    training:                         # a sweep: optimizers × seeds × batch sizes ...
      optimizers: [{name: sgd, hparams: {lr: 0.1}}]
      seeds: [0]
      epochs: 30
    checkpoints: [path/to/run_dir]    # ... or existing run directories / checkpoint files
    passes:
      critical: {method: levenberg-marquardt, radii: [0, 0.5], per_radius: 2, l2: 0.01}
      spectrum: {}
    figures: [epsilon_alpha, spectra_by_error_band, training_curves, status_counts]
    tracking: {uri: null, experiment: null, enabled: true}
    quick: {training.epochs: 3}       # dotted overrides applied by ``--quick``

Unknown keys and wrong types are errors naming the key (dotted) and the file. Relative paths
(``output``, ``checkpoints``, ``data.root``) are relative to the current directory. Overrides are
``dotted.key=value`` with the value parsed as YAML (``--set passes.critical.l2=1e-2``); ``--quick``
applies the file's ``quick`` overrides first, ``--set`` after. Imports no storage,
tracking or plotting; the numerics packages are imported only for the names validated against
(optimizers, search methods, dataset and model specs).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    field_validator,
    model_validator,
)

from landscape.critical.eigenvector_following import INDEX_MODES
from landscape.critical.search import AUTO, DEFAULT_METHOD, METHODS, Thresholds
from landscape.data import DataSpec
from landscape.models import parse_model_spec
from landscape.optim import OPTIMIZER_HELP
from landscape.spectrum import DEFAULT_INDEX_ATOL, DEFAULT_INDEX_TOL

FIGURES = ("epsilon_alpha", "spectra_by_error_band", "training_curves", "status_counts")
CheckpointChoice = Literal["all", "last"] | PositiveInt

__all__ = ["FIGURES", "CriticalPass", "OptimizerSpec", "Passes", "SpectrumPass", "Study",
           "StudyError", "Tracking", "Training", "apply_overrides", "load_study", "parse_override"]


class StudyError(ValueError):
    """A study file that cannot be read or does not validate; the message names file and key."""


def _one_of(value: str, choices, what: str) -> str:
    if value not in choices:
        raise ValueError(f"unknown {what} {value!r}; choose one of {sorted(choices)}")
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OptimizerSpec(_Strict):
    """One optimizer of the sweep: a name from ``landscape.optim`` and its hyperparameters.
    ``label`` names the runs (default: the optimizer name)."""

    name: str
    hparams: dict[str, Any] = Field(default_factory=dict)
    label: str | None = None

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        return _one_of(name, OPTIMIZER_HELP, "optimizer")


class Training(_Strict):
    """The training sweep: one run per optimizer × seed × batch size (``null``: full batch)."""

    optimizers: list[OptimizerSpec] = Field(min_length=1)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    batch_sizes: list[PositiveInt | None] = Field(default_factory=lambda: [None], min_length=1)
    epochs: PositiveInt = 10
    checkpoint_every: PositiveInt = 1
    early_checkpoints: NonNegativeInt = 4
    n_train: PositiveInt | None = None


class _Pass(_Strict):
    """Options every pass shares. ``checkpoints``: ``all``, ``last``, or an int k for every k-th
    checkpoint of a run (the last always included); ``n_samples``: evaluation set = first N
    training samples (all if null); ``l2``: coefficient of (l2/2)‖θ‖² added to the loss;
    ``index_tol`` / ``index_atol``: relative tolerance and absolute floor of the index count
    (``spectrum.count_inertia``; the critical pass's searches use the same numbers)."""

    checkpoints: CheckpointChoice = "all"
    n_samples: PositiveInt | None = None
    l2: NonNegativeFloat = 0.0
    index_tol: NonNegativeFloat = DEFAULT_INDEX_TOL
    index_atol: NonNegativeFloat = DEFAULT_INDEX_ATOL


class CriticalPass(_Pass):
    """Critical-point searches from each checkpoint and ``per_radius`` perturbations of it per
    non-zero radius (relative: ‖δ‖ ≈ r‖θ‖); thresholds as in ``critical.Thresholds``.
    ``indices``: with eigenvector following, search from every start once per target index k;
    without them ``index_mode`` says how eigenvector following picks its index: ``follow``
    recounts at every iterate (the nearest critical point of any index), ``start`` keeps the
    start's count (``critical.EigenvectorFollowing``)."""

    method: str = DEFAULT_METHOD
    radii: list[NonNegativeFloat] = Field(default_factory=lambda: [0.0], min_length=1)
    per_radius: PositiveInt = 1
    indices: list[NonNegativeInt] | None = Field(default=None, min_length=1)
    index_mode: Literal[INDEX_MODES] = "follow"
    l2: NonNegativeFloat = 1e-3
    max_iterations: PositiveInt = Thresholds.max_iterations
    grad_tol: PositiveFloat = 1e-8
    seed: int = 0

    @field_validator("method")
    @classmethod
    def _known(cls, method: str) -> str:
        return _one_of(method, [AUTO, *METHODS], "method")

    @model_validator(mode="after")
    def _indices_need_eigenvector_following(self) -> CriticalPass:
        if self.indices is not None and self.method != "eigenvector-following":
            raise ValueError("'indices' (target indices) needs method: eigenvector-following; "
                             f"got method {self.method!r}")
        return self


class SpectrumPass(_Pass):
    """Dense Hessian spectrum (eigenvalues, inertia) at each chosen checkpoint."""


class Passes(_Strict):
    critical: CriticalPass | None = None
    spectrum: SpectrumPass | None = None


class Tracking(_Strict):
    """MLflow: ``uri`` (default ``$MLFLOW_TRACKING_URI``, else ``./mlruns``), ``experiment``
    (default the study name); ``enabled: false`` turns tracking off."""

    uri: str | None = None
    experiment: str | None = None
    enabled: bool = True


class Study(_Strict):
    """A validated study (see the module docstring for the file format)."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str = ""
    output: Path
    data: dict[str, Any] | None = None
    model: str | dict[str, Any] | None = None
    training: Training | None = None
    checkpoints: list[Path] | None = None
    passes: Passes = Field(default_factory=Passes)
    figures: list[Literal[FIGURES]] = Field(default_factory=lambda: list(FIGURES))
    tracking: Tracking = Field(default_factory=Tracking)
    device: str = "cpu"
    quick: dict[str, Any] = Field(default_factory=dict)

    @field_validator("data")
    @classmethod
    def _data_spec(cls, data: dict | None) -> dict | None:
        return None if data is None else DataSpec.from_dict(data).to_dict()

    @field_validator("model")
    @classmethod
    def _model_spec(cls, model: str | dict | None) -> str | dict | None:
        if model is not None:
            parse_model_spec(model)
        return model

    @field_validator("device")
    @classmethod
    def _device(cls, device: str) -> str:
        if device not in ("cpu", "cuda", "auto") and not device.startswith("cuda:"):
            raise ValueError(f"device must be cpu, cuda, cuda:N or auto; got {device!r}")
        return device

    @model_validator(mode="after")
    def _source(self) -> Study:
        if (self.training is None) == (self.checkpoints is None):
            raise ValueError("give exactly one of 'training' (a sweep to train) and "
                             "'checkpoints' (existing run directories or checkpoint files)")
        if self.training is not None and (self.data is None or self.model is None):
            raise ValueError("'training' needs 'data' and 'model'")
        if self.checkpoints is not None and (self.data is not None or self.model is not None):
            raise ValueError("with 'checkpoints', data and model come from the checkpoints; "
                             "remove 'data' and 'model'")
        if self.passes.critical is None and self.passes.spectrum is None and self.checkpoints:
            raise ValueError("'passes' is empty: nothing to do with the given checkpoints")
        return self


def parse_override(text: str) -> tuple[str, Any]:
    """``"a.b=value"`` → ``("a.b", yaml-parsed value)``."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise StudyError(f"override {text!r} is not of the form dotted.key=value")
    try:
        return key.strip(), yaml.safe_load(value)
    except yaml.YAMLError as exc:
        raise StudyError(f"override {text!r}: the value is not valid YAML ({exc})") from exc


def apply_overrides(raw: dict, overrides: Mapping[str, Any], source: str) -> dict:
    """A copy of ``raw`` with each dotted key set (intermediate mappings created as needed)."""
    out = yaml.safe_load(yaml.safe_dump(raw))
    for dotted, value in overrides.items():
        node = out
        parts = dotted.split(".")
        for depth, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise StudyError(f"{source}: cannot set {dotted!r}: "
                                 f"{'.'.join(parts[:depth + 1])!r} is not a mapping")
            node = child
        node[parts[-1]] = value
    return out


def _format_errors(path: Path, exc: ValidationError) -> str:
    n = exc.error_count()
    lines = [f"{path}: invalid study ({n} error{'s' if n > 1 else ''}):"]
    for err in exc.errors():
        key = ".".join(str(part) for part in err["loc"]) or "(top level)"
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown key"
        lines.append(f"  {key}: {message}")
    return "\n".join(lines)


def load_study(path: str | Path, *, quick: bool = False,
               overrides: Sequence[str] = ()) -> Study:
    """Read, override and validate a study file; ``StudyError`` names the file and the keys."""
    path = Path(path)
    if not path.is_file():
        raise StudyError(f"no study file at {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise StudyError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise StudyError(f"{path}: a study file is a YAML mapping; got {type(raw).__name__}")
    if quick:
        quick_overrides = raw.get("quick") or {}
        if not isinstance(quick_overrides, dict):
            raise StudyError(f"{path}: quick: must be a mapping of dotted keys to values")
        raw = apply_overrides(raw, quick_overrides, str(path))
    raw = apply_overrides(raw, dict(parse_override(o) for o in overrides), str(path))
    try:
        return Study.model_validate(raw)
    except ValidationError as exc:
        raise StudyError(_format_errors(path, exc)) from None
