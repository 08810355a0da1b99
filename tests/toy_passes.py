"""Toy passes for the pipeline tests, one per scope, with answers computable from the checkpoint
files alone; and a flaky one whose failures are controlled through marker files.

Kept in an importable module (``tests.toy_passes``) so that Ray workers can load the specs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from pydantic import Field

from landscape.checkpoints import load_checkpoint
from landscape.passes import Item, PassConfig, PassSpec, Record, Target


def checkpoint_theta(path: Path) -> np.ndarray:
    """θ of a checkpoint: its state dict's tensors flattened in order."""
    state = load_checkpoint(path).state_dict
    return torch.cat([t.reshape(-1) for t in state.values()]).double().numpy()


class ScaledConfig(PassConfig):
    scales: list[float] = Field(default_factory=lambda: [1.0, 2.0])


def _scaled_items(target: Target, config: ScaledConfig) -> list[Item]:
    return [Item(f"x{s:g}", {"scale": s}) for s in config.scales]


def _scaled(theta: np.ndarray, item: Item, config: ScaledConfig) -> Record:
    scaled = theta * item.args["scale"]
    return Record({"scaled": scaled}, {"scaled": ("param",)},
                  {"norm": float(np.linalg.norm(scaled))})


def _max_norm(rows: pd.DataFrame) -> dict[str, float]:
    return {"toy_max_norm": float(rows["norm"].max())}


SCALED = PassSpec("toy_scaled", "checkpoint", ScaledConfig, _scaled_items,
                  lambda target, config, device: checkpoint_theta(target.checkpoint), _scaled,
                  summarise=_max_norm, needs_device=False)


def _path_run(target: Target, item: Item, config: PassConfig) -> Record:
    thetas = [checkpoint_theta(p) for p in target.runs[target.run]]
    steps = np.linalg.norm(np.diff(np.stack(thetas), axis=0), axis=1)
    return Record({"step_lengths": steps}, {"step_lengths": ("segment",)},
                  {"n_checkpoints": len(thetas)})


PATH = PassSpec("toy_path", "run", PassConfig, lambda target, config: [Item(None)],
                lambda target, config, device: target, _path_run, needs_device=False)


def _count_run(target: Target, item: Item, config: PassConfig) -> Record:
    return Record({}, {}, {"n_runs": len(target.runs),
                           "n_checkpoints": sum(len(p) for p in target.runs.values())})


COUNT = PassSpec("toy_count", "study", PassConfig, lambda target, config: [Item(None)],
                 lambda target, config, device: target, _count_run, needs_device=False)


class FlakyConfig(PassConfig):
    """``fail_once``: fail on each target until a marker file exists in ``markers`` (created by
    the failing attempt); ``always``: the checkpoint stem that always fails."""

    markers: str
    fail_once: bool = False
    always: str | None = None


def _flaky_run(target: Target, item: Item, config: FlakyConfig) -> Record:
    stem = target.checkpoint.stem
    if stem == config.always:
        raise RuntimeError(f"toy failure at {stem}")
    marker = Path(config.markers) / f"{stem}.failed"
    if config.fail_once and not marker.exists():
        marker.touch()
        raise RuntimeError(f"transient toy failure at {stem}")
    return Record({}, {}, {"attempted_before": marker.exists()})


FLAKY = PassSpec("toy_flaky", "checkpoint", FlakyConfig, lambda target, config: [Item(None)],
                 lambda target, config, device: target, _flaky_run, needs_device=False)
