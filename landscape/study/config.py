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
applies the file's ``quick`` overrides first, ``--set`` after. ``passes`` is validated through
the pass registry (``landscape.passes.PASSES``): each key is a pass name, its value that pass's
config. Imports no storage, tracking or plotting; the numerics are imported only for the names
validated against (optimizers, dataset and model specs, the passes' configs).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    Field,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from landscape.data import DataSpec
from landscape.models import parse_model_spec
from landscape.optim import OPTIMIZER_HELP
from landscape.passes import PASSES, PassConfig, PassSpec
from landscape.passes.base import Strict, one_of

FIGURES = ("epsilon_alpha", "spectra_by_error_band", "training_curves", "status_counts",
           "interpolation", "slice", "trajectory", "measure_gap", "kendall", "sharp_flat_spectra")
DEVICE_HELP = "cpu, cuda, cuda:N or auto (CUDA when present, else CPU)"

__all__ = ["DEVICE_HELP", "FIGURES", "Study", "StudyError", "SweepOptimizer", "Tracking",
           "Training", "apply_overrides", "check_device", "chosen_passes", "load_study",
           "parse_override", "passes_model", "validate_study"]


class StudyError(ValueError):
    """A study file that cannot be read or does not validate; the message names file and key."""


class SweepOptimizer(Strict):
    """One optimizer of the sweep: a name from ``landscape.optim`` and its hyperparameters.
    ``label`` names the runs (default: the optimizer name); ``batch_sizes`` replaces the
    sweep's for this optimizer (e.g. larger minibatches for the second-order methods)."""

    name: str
    hparams: dict[str, Any] = Field(default_factory=dict)
    label: str | None = None
    batch_sizes: list[PositiveInt | None] | None = Field(default=None, min_length=1)

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        return one_of(name, OPTIMIZER_HELP, "optimizer")


class Training(Strict):
    """The training sweep: one run per optimizer × seed × batch size (``null``: full batch);
    ``target_train_loss``: stop each run at the end of the first epoch whose full training loss
    is at most this (``epochs`` is then the cap)."""

    optimizers: list[SweepOptimizer] = Field(min_length=1)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    batch_sizes: list[PositiveInt | None] = Field(default_factory=lambda: [None], min_length=1)
    epochs: PositiveInt = 10
    checkpoint_every: PositiveInt = 1
    early_checkpoints: NonNegativeInt = 4
    n_train: PositiveInt | None = None
    target_train_loss: PositiveFloat | None = None


class Tracking(Strict):
    """MLflow: ``uri`` (default ``$MLFLOW_TRACKING_URI``, else ``./mlruns``), ``experiment``
    (default the study name); ``enabled: false`` turns tracking off."""

    uri: str | None = None
    experiment: str | None = None
    enabled: bool = True


class Study(Strict):
    """A validated study (see the module docstring for the file format)."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str = ""
    output: Path
    data: dict[str, Any] | None = None
    model: str | dict[str, Any] | None = None
    training: Training | None = None
    checkpoints: list[Path] | None = None
    passes: Strict = Field(default_factory=Strict)  # replaced by ``passes_model()``
    figures: list[Literal[FIGURES]] = Field(default_factory=lambda: list(FIGURES))
    tracking: Tracking = Field(default_factory=Tracking)
    device: str = "auto"
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
        return check_device(device)

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
        if self.checkpoints and all(v is None for v in dict(self.passes).values()):
            raise ValueError("'passes' is empty: nothing to do with the given checkpoints")
        return self


def check_device(device: str) -> str:
    """``device`` if it is one of ``DEVICE_HELP``, else ``ValueError``."""
    if device not in ("cpu", "cuda", "auto") and not device.startswith("cuda:"):
        raise ValueError(f"device must be {DEVICE_HELP}; got {device!r}")
    return device


def passes_model(registry: Mapping[str, PassSpec] = PASSES) -> type[Strict]:
    """The schema of a study's ``passes``: one optional field per pass of ``registry`` that study
    files name (``PassSpec.implicit`` ones run anyway), typed by the pass's config."""
    fields = {name: (spec.config | None, None) for name, spec in registry.items()
              if not spec.implicit}
    return create_model("Passes", __base__=Strict, **fields)


def _study_model(registry: Mapping[str, PassSpec]) -> type[Study]:
    passes = passes_model(registry)
    return create_model("Study", __base__=Study,
                        passes=(passes, Field(default_factory=passes)))


def validate_study(raw: Mapping[str, Any], registry: Mapping[str, PassSpec] = PASSES) -> Study:
    """A ``Study`` from a mapping, its ``passes`` validated through ``registry``
    (``pydantic.ValidationError`` on bad input; ``load_study`` formats it)."""
    return _study_model(registry).model_validate(raw)


def chosen_passes(study: Study, registry: Mapping[str, PassSpec] = PASSES
                  ) -> list[tuple[PassSpec, PassConfig]]:
    """``(spec, config)`` of every pass the study runs, in registry order: the implicit ones
    with their default config, the others where the study sets them."""
    out = []
    for name, spec in registry.items():
        config = spec.config() if spec.implicit else getattr(study.passes, name, None)
        if config is not None:
            out.append((spec, config))
    return out


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
        return validate_study(raw)
    except ValidationError as exc:
        raise StudyError(_format_errors(path, exc)) from None
