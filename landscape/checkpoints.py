"""Checkpoint format, safe loading and discovery of a run's checkpoints.

Format (version 1): a ``torch.save``d dict of plain types and tensors only, loaded with
``weights_only=True`` so no arbitrary object is ever unpickled:

``format`` ("landscape-checkpoint"), ``format_version`` (1), ``model_spec`` (resolved dict, see
``landscape.models``), ``data_spec`` (dict or None), ``state_dict`` (name → tensor), ``step``,
``epoch``, ``optimizer`` (name and hyperparameters), ``seed``, ``metrics`` (train/test loss and
error at save time), ``created`` (UTC ISO time), ``landscape_version``.

Files are ``step-{step:08d}.pt`` inside a run directory, written atomically (temporary file in the
same folder, fsync, rename) so a crash never leaves a truncated file under the final name. A plain
state-dict file from elsewhere loads when a ``model_spec`` is supplied.
"""

from __future__ import annotations

import datetime
import os
import pickle
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from landscape.models import build_model

FORMAT, FORMAT_VERSION = "landscape-checkpoint", 1
_STEP = re.compile(r"^step-(\d+)\.pt$")


class CheckpointError(Exception):
    """A checkpoint cannot be used; the message names the file."""


class CorruptCheckpointError(CheckpointError):
    """Truncated or unreadable file."""


class UnsafeCheckpointError(CheckpointError):
    """The file holds objects other than tensors and plain types."""


class CheckpointMismatchError(CheckpointError):
    """The parameters do not fit the model spec."""


@dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint; ``model()`` builds the module with its parameters loaded."""

    path: Path
    model_spec: dict
    data_spec: dict | None
    state_dict: dict = field(repr=False)
    step: int = 0
    epoch: int | None = None
    optimizer: dict = field(default_factory=dict)
    seed: int | None = None
    metrics: dict = field(default_factory=dict)

    def model(self) -> nn.Module:
        module = build_model(self.model_spec)
        try:
            module.load_state_dict(self.state_dict, strict=True)
        except RuntimeError as exc:
            raise CheckpointMismatchError(
                f"{self.path}: parameters do not fit the model spec {self.model_spec}: {exc}"
            ) from None
        return module


def save_checkpoint(run_dir: str | Path, model: nn.Module, *, model_spec: dict,
                    data_spec: dict | None, step: int, epoch: int | None = None,
                    optimizer: dict | None = None, seed: int | None = None,
                    metrics: dict | None = None) -> Path:
    """Write ``run_dir/step-{step:08d}.pt`` atomically and return its path."""
    from landscape import __version__

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "model_spec": model_spec,
        "data_spec": data_spec,
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "step": int(step), "epoch": epoch, "optimizer": optimizer or {}, "seed": seed,
        "metrics": {k: float(v) for k, v in (metrics or {}).items()},
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "landscape_version": __version__,
    }
    path = run_dir / f"step-{step:08d}.pt"
    fd, tmp = tempfile.mkstemp(dir=run_dir, prefix=".tmp-", suffix=".pt")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | Path, *, model_spec=None) -> Checkpoint:
    """Load a checkpoint (or a plain state dict, given ``model_spec``) without unpickling objects."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Weights only load failed" in str(exc):
            raise UnsafeCheckpointError(f"{path}: refuses to unpickle objects other than tensors "
                                        f"and plain types ({str(exc).splitlines()[0]})") from None
        raise CorruptCheckpointError(f"{path}: unreadable checkpoint: {exc}") from None
    except (RuntimeError, EOFError, ValueError, OSError) as exc:
        raise CorruptCheckpointError(f"{path}: truncated or unreadable checkpoint: {exc}") \
            from None
    if isinstance(payload, dict) and payload.get("format") == FORMAT:
        if payload.get("format_version") != FORMAT_VERSION:
            raise CheckpointError(f"{path}: unsupported format version "
                                  f"{payload.get('format_version')}")
        spec = payload["model_spec"] if model_spec is None else model_spec
        return Checkpoint(path, spec, payload["data_spec"], payload["state_dict"],
                          payload["step"], payload["epoch"], payload["optimizer"],
                          payload["seed"], payload["metrics"])
    if isinstance(payload, dict) and all(isinstance(v, torch.Tensor) for v in payload.values()):
        if model_spec is None:
            raise CheckpointError(f"{path}: a plain state dict; pass model_spec (e.g. "
                                  "'mlp:64-32-10:tanh' or 'package.module:factory') to load it")
        return Checkpoint(path, model_spec, None, payload)
    raise CorruptCheckpointError(f"{path}: not a landscape checkpoint or a state dict")


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Checkpoint files ``step-*.pt`` of a run directory, ordered by step."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory {run_dir} does not exist")
    found = [(int(m.group(1)), p) for p in run_dir.iterdir() if (m := _STEP.match(p.name))]
    return [p for _, p in sorted(found)]
