"""The loss-surface passes (``landscape.surface``): ``interpolation`` (study scope), ``slice``
(checkpoint scope) and ``trajectory`` (run scope).

* ``interpolation``: the line ``(1 − α) θ_a + α θ_b`` between the last chosen checkpoints of
  two runs, for every pair of runs that ``pairs`` names. A pair is two run-name patterns in which
  ``{key}`` placeholders stand for a part of the name, e.g. ``["sgd-seed{s}-batch32",
  "sgd-seed{s}-batch1024"]`` pairs the small- and large-batch runs of every seed. One item per
  pair, ``<run_a>~<run_b>``; record: ``alpha [alpha]`` and ``<split>_loss`` / ``<split>_error``
  ``[alpha]`` for each split; attrs run_a, run_b, checkpoint_a, checkpoint_b, distance
  ‖θ_b − θ_a‖, n_samples.
* ``slice``: the 2-D slice ``θ* + x d₁ + y d₂`` along two filter-normalised random directions
  (seeded) on an ``extent × extent`` grid of ``resolution²`` points (default: the last checkpoint
  of each run). Record: ``x [x]``, ``y [y]``, ``<split>_loss`` / ``<split>_error`` ``[y, x]``;
  attrs seed, normalisation ``filter``, ``zeroed`` (the parameters whose directions are zero:
  biases and BatchNorm's affine parameters), the directions' norms and their cosine.
* ``trajectory``: the PCA plane of the run's chosen checkpoints (default: all) through the last,
  with the loss on a grid covering the trajectory with a ``margin`` (a fraction of its extent on
  each side). Record: ``explained_variance_ratio [component]``, ``coords [checkpoint,
  component]``, ``steps [checkpoint]``, ``x [x]``, ``y [y]``, ``<split>_loss`` /
  ``<split>_error`` ``[y, x]``.

``splits`` (default train and test for the line, train for the planes) chooses the data the
values are computed on; ``n_samples`` takes the first N samples of each split. ``<split>_error``
is left out for tasks without classes.
"""

from __future__ import annotations

import re
from typing import Literal

import numpy as np
import torch
from pydantic import Field, PositiveFloat, field_validator, model_validator

from landscape.checkpoints import load_checkpoint
from landscape.objective import Objective
from landscape.passes.base import (
    CheckpointChoice,
    Item,
    PassSpec,
    ProblemConfig,
    Record,
    Target,
)
from landscape.problem import problem_from_checkpoint
from landscape.surface import (
    Values,
    interpolate,
    plane,
    random_direction,
    trajectory_plane,
)

__all__ = ["INTERPOLATION", "SLICE", "TRAJECTORY", "InterpolationConfig", "SliceConfig",
           "TrajectoryConfig", "match_pairs"]

Split = Literal["train", "test"]
_PLACEHOLDER = re.compile(r"\{(\w+)\}")


class _SurfaceConfig(ProblemConfig):
    splits: list[Split] = Field(default_factory=lambda: ["train"], min_length=1)

    @field_validator("splits")
    @classmethod
    def _distinct(cls, splits: list[str]) -> list[str]:
        if len(set(splits)) != len(splits):
            raise ValueError(f"splits listed twice: {splits}")
        return splits


class InterpolationConfig(_SurfaceConfig):
    """Linear interpolation between the last chosen checkpoints of pairs of runs, α from
    ``alpha_min`` to ``alpha_max`` in ``n_alphas`` points (Keskar et al.'s [−1, 2])."""

    checkpoints: CheckpointChoice = "last"
    pairs: list[tuple[str, str]] = Field(min_length=1)
    alpha_min: float = -1.0
    alpha_max: float = 2.0
    n_alphas: int = Field(default=31, ge=2)
    splits: list[Split] = Field(default_factory=lambda: ["train", "test"], min_length=1)

    @model_validator(mode="after")
    def _range(self) -> InterpolationConfig:
        if not self.alpha_min < self.alpha_max:
            raise ValueError(f"alpha_min must be below alpha_max; got {self.alpha_min} and "
                             f"{self.alpha_max}")
        return self


class SliceConfig(_SurfaceConfig):
    """2-D slice along two filter-normalised random directions at each chosen checkpoint."""

    checkpoints: CheckpointChoice = "last"
    extent: PositiveFloat = 1.0
    resolution: int = Field(default=21, ge=2)
    seed: int = 0


class TrajectoryConfig(_SurfaceConfig):
    """The PCA plane of each run's chosen checkpoints (≥ 3), with the loss on it."""

    resolution: int = Field(default=21, ge=2)
    margin: float = Field(default=0.25, ge=0)


def _pattern(template: str) -> re.Pattern:
    """A regex of a run-name template: ``{key}`` matches a non-empty part, the rest literally."""
    parts, last = [], 0
    for m in _PLACEHOLDER.finditer(template):
        parts += [re.escape(template[last:m.start()]), f"(?P<{m.group(1)}>.+?)"]
        last = m.end()
    return re.compile("".join(parts) + re.escape(template[last:]) + "$")


def match_pairs(runs, pairs) -> list[tuple[str, str]]:
    """The ``(run_a, run_b)`` of ``runs`` (names) that each ``(template_a, template_b)`` of
    ``pairs`` names: every run matching template_a, with template_b filled in from its
    placeholders; ValueError if a template pair matches nothing.

    >>> match_pairs(["sb-seed0", "lb-seed0", "sb-seed1", "lb-seed1"], [("sb-seed{s}", "lb-seed{s}")])
    [('sb-seed0', 'lb-seed0'), ('sb-seed1', 'lb-seed1')]
    """
    names, out = list(runs), []
    for template_a, template_b in pairs:
        if set(_PLACEHOLDER.findall(template_b)) - set(_PLACEHOLDER.findall(template_a)):
            raise ValueError(f"pair {[template_a, template_b]}: the second template uses "
                             f"placeholders the first does not define")
        found, pattern = [], _pattern(template_a)
        for name in names:
            m = pattern.match(name)
            if m is not None and template_b.format(**m.groupdict()) in names:
                found.append((name, template_b.format(**m.groupdict())))
        if not found:
            raise ValueError(f"pair {[template_a, template_b]} matches no two runs of "
                             f"{sorted(names)}")
        out += [p for p in found if p not in out]
    return out


def _split_objectives(path, config: _SurfaceConfig, device: str) -> dict[str, Objective]:
    return {split: problem_from_checkpoint(path, n_samples=config.n_samples, l2=config.l2,
                                           hvp_mode=config.hvp_mode,
                                           device=device, split=split).objective
            for split in config.splits}


def _values(values: dict[str, Values], dims: tuple[str, ...]) -> tuple[dict, dict]:
    arrays = {}
    for split, v in values.items():
        arrays[f"{split}_loss"] = v.loss
        if v.error is not None:
            arrays[f"{split}_error"] = v.error
    return arrays, {name: dims for name in arrays}


# ---------------------------------------------------------------------------- interpolation
def _pair_items(target: Target, config: InterpolationConfig) -> list[Item]:
    return [Item(f"{a}~{b}", {"run_a": a, "run_b": b})
            for a, b in match_pairs(target.runs, config.pairs)]


def _load_runs(target: Target, config: InterpolationConfig, device: str):
    return target, device


def _interpolation(problem, item: Item, config: InterpolationConfig) -> Record:
    target, device = problem
    path_a, path_b = (target.runs[item.args[k]][-1] for k in ("run_a", "run_b"))
    objectives = _split_objectives(path_a, config, device)
    first = next(iter(objectives.values()))
    theta_b = _theta_like(first, path_b)
    alphas = np.linspace(config.alpha_min, config.alpha_max, config.n_alphas)
    values = {split: interpolate(obj, obj.theta, theta_b, alphas)
              for split, obj in objectives.items()}
    arrays, dims = _values(values, ("alpha",))
    return Record({"alpha": alphas, **arrays}, {"alpha": ("alpha",), **dims},
                  {"run_a": item.args["run_a"], "run_b": item.args["run_b"],
                   "checkpoint_a": path_a.stem, "checkpoint_b": path_b.stem,
                   "distance": float((theta_b - first.theta).norm()),
                   "n_samples": first.num_samples, "l2": config.l2})


def _theta_like(obj: Objective, path) -> torch.Tensor:
    """θ of the checkpoint at ``path`` in ``obj``'s parameter order; ValueError unless it is
    the same architecture with the same buffers (only θ is interpolated)."""
    model = load_checkpoint(path).model()
    names = tuple(n for n, p in model.named_parameters() if p.requires_grad)
    if names != obj.param_names:
        raise ValueError(f"{path} is another architecture (parameters {names[:3]}…, expected "
                         f"{obj.param_names[:3]}…); interpolation needs two solutions of one model")
    if any(True for _ in model.buffers()):
        raise ValueError(f"{path}: models with buffers (BatchNorm running statistics) are not "
                         f"interpolated: only θ would move and the statistics would be wrong")
    params = dict(model.named_parameters())
    return obj.check_theta(torch.cat([params[n].detach().reshape(-1) for n in names]))


# ---------------------------------------------------------------------------- slice
def _load_checkpoint_objectives(target: Target, config: _SurfaceConfig, device: str):
    return _split_objectives(target.checkpoint, config, device)


def _slice(objectives: dict[str, Objective], item: Item, config: SliceConfig) -> Record:
    first = next(iter(objectives.values()))
    theta = first.theta
    generator = torch.Generator().manual_seed(config.seed)
    d1, d2 = random_direction(first, theta, generator), random_direction(first, theta, generator)
    axis = np.linspace(-config.extent, config.extent, config.resolution)
    values = {split: plane(obj, theta, d1.vector, d2.vector, axis, axis)
              for split, obj in objectives.items()}
    arrays, dims = _values(values, ("y", "x"))
    n1, n2 = float(d1.vector.norm()), float(d2.vector.norm())
    return Record({"x": axis, "y": axis, **arrays}, {"x": ("x",), "y": ("y",), **dims},
                  {"seed": config.seed, "normalisation": "filter", "zeroed": list(d1.zeroed),
                   "direction_norms": [n1, n2], "theta_norm": float(theta.norm()),
                   "cosine": float(d1.vector.dot(d2.vector)) / (n1 * n2) if n1 and n2 else None,
                   "n_samples": first.num_samples, "l2": config.l2})


# ---------------------------------------------------------------------------- trajectory
def _load_trajectory(target: Target, config: TrajectoryConfig, device: str):
    (paths,) = target.runs.values()
    if len(paths) < 3:
        raise ValueError(f"run {target.run}: a trajectory plane needs at least 3 checkpoints; "
                         f"got {len(paths)} (checkpoints: all, or save more)")
    objectives = _split_objectives(paths[-1], config, device)
    first = next(iter(objectives.values()))
    thetas = torch.stack([_theta_like(first, p) for p in paths])
    steps = [load_checkpoint(p).step for p in paths]
    return objectives, thetas, steps


def _trajectory(problem, item: Item, config: TrajectoryConfig) -> Record:
    objectives, thetas, steps = problem
    pca = trajectory_plane(thetas)
    low, high = pca.coords.min(axis=0), pca.coords.max(axis=0)
    pad = config.margin * np.maximum(high - low, 1e-12)
    x, y = (np.linspace(low[k] - pad[k], high[k] + pad[k], config.resolution) for k in (0, 1))
    values = {split: plane(obj, pca.origin, pca.components[0], pca.components[1], x, y)
              for split, obj in objectives.items()}
    arrays, dims = _values(values, ("y", "x"))
    first = next(iter(objectives.values()))
    return Record({"explained_variance_ratio": pca.explained_variance_ratio,
                   "coords": pca.coords, "steps": np.asarray(steps), "x": x, "y": y, **arrays},
                  {"explained_variance_ratio": ("component",),
                   "coords": ("checkpoint", "component"), "steps": ("checkpoint",),
                   "x": ("x",), "y": ("y",), **dims},
                  {"n_checkpoints": len(steps), "n_samples": first.num_samples,
                   "l2": config.l2, "origin": "last checkpoint",
                   "explained_variance_total": float(pca.explained_variance_ratio.sum())})


INTERPOLATION = PassSpec(
    name="interpolation", scope="study", config=InterpolationConfig, items=_pair_items,
    load=_load_runs, run=_interpolation,
    columns=("run", "checkpoint", "item", "run_a", "run_b", "distance"),
    description="loss and error on the line between two runs' solutions (Keskar et al.)")
SLICE = PassSpec(
    name="slice", scope="checkpoint", config=SliceConfig,
    items=lambda target, config: [Item(None)], load=_load_checkpoint_objectives, run=_slice,
    columns=("run", "checkpoint", "item", "seed", "theta_norm"),
    description="2-D slice along filter-normalised random directions (Li et al.)")
TRAJECTORY = PassSpec(
    name="trajectory", scope="run", config=TrajectoryConfig,
    items=lambda target, config: [Item(None)], load=_load_trajectory, run=_trajectory,
    columns=("run", "checkpoint", "item", "n_checkpoints", "explained_variance_total"),
    description="the PCA plane of a training trajectory with the loss on it (Li et al.)")
