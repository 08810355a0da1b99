"""Checkpoint format, safe loading and discovery of a run's checkpoints.

Format (version 1): a ``torch.save``d dict of plain types (None, bool, int, float, str, lists —
tuples are stored as lists —, dicts with string keys) and tensors only, read with
``weights_only=True`` so that loading never unpickles an arbitrary object:

=====================  ==========================================================================
``format``             ``"landscape-checkpoint"``
``format_version``     ``1``
``model_spec``         resolved model spec dict (``landscape.models.ModelSpec.to_dict``), so that
                       ``build_model(model_spec)`` needs no data sizes
``data_spec``          ``landscape.data.DataSpec.to_dict()`` or None
``state_dict``         parameter / buffer name → tensor (CPU)
``step``               optimizer steps taken (int ≥ 0)
``epoch``              int or None
``optimizer``          ``{"name": …, <hyperparameters>}``, plain types
``seed``               int or None
``batch_size``         minibatch size of the training run, or None (full batch, or not recorded:
                       files written before the field existed read None)
``metrics``            name → float: ``train_loss``, ``train_error``, ``test_loss``, …
``created``            UTC time, ISO 8601
``landscape_version``  package version that wrote the file
=====================  ==========================================================================

Files are ``step-{step:08d}.pt`` inside a run directory, written atomically (a ``.tmp-*`` file in
the same folder, fsync, ``os.replace``) so a crash never leaves a truncated file under the final
name. ``.safetensors`` files hold the state dict as tensors and every other field as JSON under the
header-metadata key ``"landscape"``. A plain state dict (``.pt`` or ``.safetensors``) from
elsewhere loads when a ``model_spec`` is supplied. Imports nothing from storage, tracking or
plotting.
"""

from __future__ import annotations

import datetime
import json
import os
import pickle
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from landscape.data import DataSpec
from landscape.models import build_model, parse_model_spec

FORMAT, FORMAT_VERSION = "landscape-checkpoint", 1
SUFFIXES = (".pt", ".safetensors")
SAFETENSORS_KEY = "landscape"
_STEP_NAME = re.compile(r"^step-(\d+)\.(pt|safetensors)$")
_TEMP_PREFIX = ".tmp-"


class CheckpointError(Exception):
    """A checkpoint cannot be used; the message names the file."""


class CorruptCheckpointError(CheckpointError):
    """Truncated or unreadable file."""


class UnsafeCheckpointError(CheckpointError):
    """The file holds pickled objects other than tensors and plain types."""


class CheckpointMismatchError(CheckpointError):
    """The state dict does not fit the model spec (missing / unexpected keys, shapes)."""


@dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint (fields as in the module docstring; ``step`` is None for a plain state
    dict). ``model()`` builds the module and loads the state dict strictly."""

    path: Path
    model_spec: dict
    data_spec: dict | None
    state_dict: dict[str, Tensor] = field(repr=False)
    step: int | None = None
    epoch: int | None = None
    optimizer: dict = field(default_factory=dict)
    seed: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    created: str | None = None
    landscape_version: str | None = None
    batch_size: int | None = None

    def model(self) -> nn.Module:
        """The module of ``model_spec`` with the checkpoint's parameters, cast to their floating
        dtype when they share one (a float64 checkpoint gives a float64 module). Does not touch
        torch's global RNG."""
        try:
            module = build_model(self.model_spec, seed=0)
        except ValueError as exc:
            raise CheckpointError(f"{self.path}: cannot build the model: {exc}") from None
        problems = _mismatches(module.state_dict(), self.state_dict)
        if problems:
            raise CheckpointMismatchError(
                f"{self.path}: state dict does not fit the model spec {self.model_spec}: "
                + "; ".join(problems))
        dtypes = {v.dtype for v in self.state_dict.values() if v.is_floating_point()}
        if len(dtypes) == 1:
            module.to(dtypes.pop())
        module.load_state_dict(self.state_dict, strict=True)
        return module


def _mismatches(expected: dict[str, Tensor], found: dict[str, Tensor], limit: int = 3) -> list:
    """Human-readable differences (first ``limit`` of each kind) between two state dicts."""
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    shapes = [f"{k} {tuple(found[k].shape)} vs model {tuple(v.shape)}"
              for k, v in expected.items() if k in found and found[k].shape != v.shape]
    out = []
    for label, items in (("missing keys", missing), ("unexpected keys", unexpected),
                         ("shape mismatches", shapes)):
        if items:
            more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
            out.append(f"{label} {', '.join(items[:limit])}{more}")
    return out


def save_checkpoint(path_or_run_dir: str | Path, model: nn.Module, *, model_spec,
                    data_spec: DataSpec | dict | None, step: int, epoch: int | None = None,
                    optimizer: dict | None = None, seed: int | None = None,
                    metrics: dict[str, float] | None = None,
                    batch_size: int | None = None) -> Path:
    """Write ``model``'s state and the run's metadata atomically; return the path.

    ``path_or_run_dir``: a file ending in ``.pt`` or ``.safetensors``, or a run directory (created
    if needed) that receives ``step-{step:08d}.pt``. ``model_spec`` must be resolved (e.g.
    ``model.spec`` from ``build_model``) so the checkpoint rebuilds without data.
    """
    from landscape import __version__

    step = _check_step(step)
    target = Path(path_or_run_dir)
    if target.suffix not in SUFFIXES:
        target = target / f"step-{step:08d}.pt"
    spec = parse_model_spec(model_spec)
    if not spec.resolved:
        raise ValueError(f"model_spec {model_spec!r} leaves sizes open; save the resolved spec "
                         "(model.spec from build_model)")
    meta = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "model_spec": spec.to_dict(),
        "data_spec": _plain(data_spec.to_dict() if isinstance(data_spec, DataSpec) else data_spec,
                            "data_spec"),
        "step": step,
        "epoch": _optional_int(epoch, "epoch"), "optimizer": _plain(optimizer or {}, "optimizer"),
        "seed": _optional_int(seed, "seed"), "metrics": _metrics(metrics or {}),
        "batch_size": _optional_int(batch_size, "batch_size"),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "landscape_version": __version__,
    }
    state = {k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()}
    if target.suffix == ".safetensors":
        from safetensors.torch import save

        data = save(state, metadata={SAFETENSORS_KEY: json.dumps(meta)})
        _atomic_write(target, lambda f: f.write(data))
    else:
        _atomic_write(target, lambda f: torch.save({**meta, "state_dict": state}, f))
    return target


def _check_step(step) -> int:
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise ValueError(f"step must be a non-negative integer; got {step!r}")
    return step


def _optional_int(value, name: str) -> int | None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
        raise ValueError(f"{name} must be an integer or None; got {value!r}")
    return value


def _metrics(metrics: dict) -> dict[str, float]:
    out = {}
    for key, value in metrics.items():
        try:
            out[str(key)] = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"metric {key!r} must be a number; got {value!r}") from None
    return out


def _plain(value, where: str):
    """``value`` if it holds only plain types (what ``weights_only`` loading and JSON accept)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [_plain(v, where) for v in value]
    if isinstance(value, dict):
        bad = [k for k in value if not isinstance(k, str)]
        if bad:
            raise ValueError(f"{where}: keys must be strings; got {bad[0]!r}")
        return {k: _plain(v, f"{where}.{k}") for k, v in value.items()}
    raise ValueError(f"{where}: {type(value).__name__} value {value!r} is not a plain type "
                     "(None, bool, int, float, str, list, dict)")


def _atomic_write(path: Path, write) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, fsync, rename onto ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_TEMP_PREFIX, suffix=path.suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | Path, *, model_spec=None) -> Checkpoint:
    """Load a landscape checkpoint, or a plain state dict when ``model_spec`` (spec string, dict or
    factory spec) is given; ``model_spec`` also overrides a checkpoint's own spec.

    ``.pt`` files are read with ``torch.load(weights_only=True)``; ``.safetensors`` files with
    safetensors. Raises ``CorruptCheckpointError``, ``UnsafeCheckpointError`` or
    ``CheckpointError`` naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist or is not a file")
    if path.suffix == ".safetensors":
        meta, state = _read_safetensors(path)
    else:
        meta, state = _read_torch(path)
    spec = meta.get("model_spec") if model_spec is None else model_spec
    if spec is None:
        raise CheckpointError(f"{path}: a plain state dict with no model spec; pass model_spec "
                              "(e.g. 'mlp:64-32-10:tanh' or 'package.module:factory') to load it")
    try:
        spec = parse_model_spec(spec).to_dict()
    except ValueError as exc:
        raise CheckpointError(f"{path}: bad model spec: {exc}") from None
    return Checkpoint(path, spec, meta.get("data_spec"), state, meta.get("step"),
                      meta.get("epoch"), meta.get("optimizer", {}), meta.get("seed"),
                      meta.get("metrics", {}), meta.get("created"),
                      meta.get("landscape_version"), meta.get("batch_size"))


def _read_torch(path: Path) -> tuple[dict, dict[str, Tensor]]:
    """``(metadata, state_dict)`` of a ``.pt`` file; metadata is empty for a plain state dict."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only load failed" in str(exc).lower():
            raise UnsafeCheckpointError(
                f"{path}: holds objects other than tensors and plain types; refusing to unpickle "
                f"them ({str(exc).splitlines()[0]})") from None
        raise CorruptCheckpointError(f"{path}: unreadable checkpoint: {exc}") from None
    except (RuntimeError, EOFError, ValueError, OSError) as exc:
        raise CorruptCheckpointError(f"{path}: truncated or unreadable checkpoint: {exc}") \
            from None
    if isinstance(payload, dict) and payload.get("format") == FORMAT:
        if payload.get("format_version") != FORMAT_VERSION:
            raise CheckpointError(f"{path}: unsupported format version "
                                  f"{payload.get('format_version')!r} (this reader: "
                                  f"{FORMAT_VERSION})")
        return {k: v for k, v in payload.items() if k != "state_dict"}, payload["state_dict"]
    if isinstance(payload, dict) and payload and all(
            isinstance(k, str) and isinstance(v, Tensor) for k, v in payload.items()):
        return {}, payload
    raise CorruptCheckpointError(f"{path}: neither a landscape checkpoint nor a state dict "
                                 f"(a {type(payload).__name__})")


def _read_safetensors(path: Path) -> tuple[dict, dict[str, Tensor]]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(path, framework="pt", device="cpu") as f:
            header = f.metadata() or {}
            names = f.keys()
            state = {k: f.get_tensor(k) for k in names}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CorruptCheckpointError(f"{path}: truncated or unreadable safetensors file: "
                                     f"{exc}") from None
    if SAFETENSORS_KEY not in header:
        return {}, state
    try:
        meta = json.loads(header[SAFETENSORS_KEY])
    except json.JSONDecodeError as exc:
        raise CorruptCheckpointError(f"{path}: metadata {SAFETENSORS_KEY!r} is not JSON: "
                                     f"{exc}") from None
    if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: metadata is not {FORMAT} version {FORMAT_VERSION}")
    return meta, state


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Checkpoint files (``*.pt``, ``*.safetensors``) of a run directory, ordered by step.

    The step comes from the name ``step-<n>``, else from the file's metadata; files whose step
    cannot be read (plain state dicts, unreadable files) come last, by name, so a loading loop
    reports them itself. Temporary ``.tmp-*`` files are ignored.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory {run_dir} does not exist or is not a folder")
    found = [p for p in run_dir.iterdir()
             if p.is_file() and p.suffix in SUFFIXES and not p.name.startswith(_TEMP_PREFIX)]
    known, unknown = [], []
    for p in found:
        step = _step_of(p)
        (unknown if step is None else known).append((step, p.name, p))
    return [p for *_, p in sorted(known)] + [p for *_, p in sorted(unknown, key=lambda t: t[1])]


def _step_of(path: Path) -> int | None:
    match = _STEP_NAME.match(path.name)
    if match:
        return int(match.group(1))
    try:
        return load_checkpoint(path).step
    except (CheckpointError, OSError):
        return None
