"""The Zarr store of a study: where results are written, found again, and resumed.

Owns the on-disk schema below and the provenance record. Takes plain numpy arrays, Python scalars
and dicts; imports nothing from the numerics (objective, spectrum, critical, linalg), tracking or
plotting.

Schema version 2 (one Zarr v3 store per study, a directory on the local file system or on
storage every worker of a cluster sees)::

    <study>.zarr/                          root group; attrs: ``schema_version`` and the study's
    │                                      provenance (package version, git commit, config, …)
    ├── study/<pass>[/<item>]              study-scope results (e.g. an optimizer comparison)
    └── runs/<run>/
        ├── <pass>[/<item>]                run-scope results (e.g. a trajectory's PCA plane)
        └── checkpoints/<checkpoint>/
            ├── <pass>/                    a *result*: arrays + attrs (e.g. ``spectrum``)
            │   ├── eigenvalues  [n]
            │   └── …
            └── <pass>/<item>/             or one result per item (e.g. ``critical/000-r0``)

The store knows no pass by name: a pass is any name (``checkpoints`` is reserved at run scope).
Version 1 (before the study scopes, and without the attribute) had the checkpoint scope only;
such a store opens read-only (``SchemaVersionError`` when opened for writing: analyse into a new
output folder).

A result is one group holding arrays and attributes. Every array carries ``dimension_names``
(given by the writer, else ``<array>_dim_0, <array>_dim_1, …``, unique per array so that sizes never
clash), which is what xarray needs to open a result group as a Dataset. Attributes are strict JSON:
numpy scalars and arrays become Python numbers and lists, and non-finite floats (NaN, ±inf) become
``null`` (zarr-python would otherwise write the non-standard tokens ``NaN`` / ``Infinity``, which
other Zarr implementations reject); arrays keep their NaNs. Names (run, checkpoint, pass, item,
array) are non-empty, contain no ``/`` and do not start with ``__`` (reserved by Zarr v3).

The ``complete`` protocol. A result group is created with the attribute ``complete = false``; the
writer then writes every array, then the other attributes, and sets ``complete = true`` last. Zarr
writes each chunk and metadata file atomically, but a writer killed half-way leaves missing chunks,
and missing chunks silently read as the fill value: only ``complete == true`` says that the arrays
are whole. Readers therefore refuse incomplete results, and resuming a study means skipping complete
results and redoing the rest: ``write_result`` deletes an incomplete group and writes it anew.
Rewriting a complete result needs ``overwrite=True``.

Concurrency. Different processes (e.g. Ray tasks, one per checkpoint × pass) may write different
result groups of one store at the same time: parent groups are created only if missing, never
rewritten. Two writers of the same group, or of one shared attribute (the root's study attrs),
are not safe: set the study attrs from the driver only. No consolidated metadata is written (it
would go stale as soon as a later task adds a group); readers walk the hierarchy.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import math
import platform
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import zarr
from zarr.errors import ContainsGroupError

COMPLETE = "complete"
SCHEMA_VERSION = 2
SCHEMA_ATTR = "schema_version"
_RESERVED_RUN_PASS = "checkpoints"

__all__ = [
    "SCHEMA_VERSION", "IncompleteResultError", "Result", "SchemaVersionError", "Store",
    "diff_stores", "json_safe", "open_store", "parse_key", "provenance",
]


class IncompleteResultError(KeyError):
    """A result group exists but was never marked complete (its writer was interrupted)."""


class SchemaVersionError(RuntimeError):
    """The store was written with another schema version than this package writes."""


@dataclass(frozen=True)
class Result:
    """One stored result: its group path, arrays (loaded into memory) and attributes."""

    key: str
    arrays: dict[str, np.ndarray]
    attrs: dict[str, Any]


def _check_name(name: str, what: str) -> str:
    if not isinstance(name, str) or not name:
        raise ValueError(f"{what} must be a non-empty string; got {name!r}")
    if "/" in name or name.startswith("__") or name in (".", ".."):
        raise ValueError(f"{what} must not contain '/', start with '__' or be '.'/'..'; "
                         f"got {name!r}")
    return name


def parse_key(key: str) -> tuple[str | None, str | None, str, str | None]:
    """Split a result key into ``(run, checkpoint, pass, item)``, None where the scope has none:
    ``study/<pass>[/<item>]``, ``runs/<run>/<pass>[/<item>]`` or
    ``runs/<run>/checkpoints/<checkpoint>/<pass>[/<item>]``."""
    parts = key.split("/")
    if parts[0] == "study" and len(parts) in (2, 3):
        names = (None, None, *parts[1:])
    elif parts[0] == "runs" and len(parts) in (5, 6) and parts[2] == _RESERVED_RUN_PASS:
        names = (parts[1], parts[3], *parts[4:])
    elif parts[0] == "runs" and len(parts) in (3, 4) and parts[2] != _RESERVED_RUN_PASS:
        names = (parts[1], None, *parts[2:])
    else:
        raise ValueError(f"not a result key of the form 'study/<pass>[/<item>]', "
                         f"'runs/<run>/<pass>[/<item>]' or "
                         f"'runs/<run>/checkpoints/<checkpoint>/<pass>[/<item>]': {key!r}")
    names += (None,) * (4 - len(names))
    for name, what in zip(names, ("run", "checkpoint", "pass", "item")):
        if name is not None:
            _check_name(name, what)
    return names


def json_safe(value: Any) -> Any:
    """``value`` as strict JSON: numpy → Python, tuples → lists, dataclasses → dicts, NaN/±inf → None.

    Raises ``TypeError`` naming the type of anything else (e.g. a tensor: convert it first).
    """
    if isinstance(value, np.ndarray | np.generic):
        return json_safe(value.tolist())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, Path):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return json_safe(dataclasses.asdict(value))
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    raise TypeError(f"cannot store a {type(value).__name__} as a JSON attribute: {value!r:.80}")


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, bool | int | float | str)


class Store:
    """A study's Zarr store (see the module docstring for the schema). Open with ``open_store``."""

    def __init__(self, root: zarr.Group, path: Path, read_only: bool):
        self._root = root
        self.path = path
        self.read_only = read_only

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r}, read_only={self.read_only})"

    @staticmethod
    def key(run: str | None, checkpoint: str | None, pass_name: str,
            item: str | None = None) -> str:
        """Group path of one result: ``runs/<run>/checkpoints/<checkpoint>/<pass>[/<item>]``;
        ``runs/<run>/<pass>[/<item>]`` without a checkpoint; ``study/<pass>[/<item>]`` without
        a run either."""
        _check_name(pass_name, "pass_name")
        if run is None:
            if checkpoint is not None:
                raise ValueError(f"a checkpoint ({checkpoint!r}) needs its run")
            key = f"study/{pass_name}"
        elif checkpoint is None:
            if pass_name == _RESERVED_RUN_PASS:
                raise ValueError(f"{_RESERVED_RUN_PASS!r} is reserved; name the pass otherwise")
            key = f"runs/{_check_name(run, 'run')}/{pass_name}"
        else:
            key = (f"runs/{_check_name(run, 'run')}/{_RESERVED_RUN_PASS}/"
                   f"{_check_name(checkpoint, 'checkpoint')}/{pass_name}")
        return key if item is None else f"{key}/{_check_name(item, 'item')}"

    @property
    def schema_version(self) -> int:
        """The schema the store was written with (1: before the attribute existed)."""
        return int(self._root.attrs.get(SCHEMA_ATTR, 1))

    def _group(self, key: str) -> zarr.Group | None:
        parse_key(key)
        node = self._root.get(key)
        return node if isinstance(node, zarr.Group) else None

    def is_complete(self, key: str) -> bool:
        """Whether the result at ``key`` exists and was marked complete."""
        group = self._group(key)
        return group is not None and group.attrs.get(COMPLETE) is True

    def write_result(self, key: str, arrays: Mapping[str, np.ndarray], attrs: Mapping[str, Any],
                     dims: Mapping[str, tuple[str, ...]] | None = None, *,
                     overwrite: bool = False) -> None:
        """Write one result: arrays, then attrs (made JSON-safe), then ``complete = True``.

        An incomplete group at ``key`` (an interrupted earlier attempt) is deleted first; a complete
        one raises ``FileExistsError`` unless ``overwrite``. ``dims[name]`` names the dimensions of
        ``arrays[name]`` (default ``<name>_dim_0, …``).
        """
        self._check_writable()
        parse_key(key)
        if COMPLETE in attrs:
            raise ValueError(f"attribute {COMPLETE!r} is reserved for the store; got it in attrs "
                             f"of {key!r}")
        data = {_check_name(name, "array name"): np.asarray(a) for name, a in arrays.items()}
        dim_names = _dimension_names(data, dims or {})
        safe_attrs = json_safe(dict(attrs))
        self._check_layout(key)
        if self._group(key) is not None:
            if self.is_complete(key) and not overwrite:
                raise FileExistsError(f"result {key!r} is already complete in {self.path}; "
                                      f"pass overwrite=True to replace it")
            del self._root[key]
        group = self._root.create_group(key, attributes={COMPLETE: False})
        for name, a in data.items():
            group.create_array(name, data=a, dimension_names=dim_names[name])
        group.attrs.update(safe_attrs)
        group.attrs[COMPLETE] = True

    def _check_layout(self, key: str) -> None:
        """Refuse items under a pass that is itself a result, and a result over existing items."""
        parent = key.rpartition("/")[0]
        if parse_key(key)[3] is not None and _is_result(self._group(parent)):
            raise ValueError(f"cannot write item {key!r}: {parent!r} is a result itself")
        group = self._group(key)
        if group is not None and next(group.groups(), None) is not None:
            raise ValueError(f"cannot write result {key!r}: it holds item groups")

    def read_result(self, key: str) -> Result:
        """The complete result at ``key``; ``KeyError`` if missing, ``IncompleteResultError`` if
        its writer never finished."""
        group = self._group(key)
        if group is None:
            raise KeyError(f"no result {key!r} in {self.path}")
        attrs = dict(group.attrs)
        if attrs.pop(COMPLETE, None) is not True:
            raise IncompleteResultError(
                f"result {key!r} in {self.path} is incomplete (its writer was interrupted); "
                f"write it again to resume")
        arrays = {name: np.asarray(a[...]) for name, a in group.arrays()}
        return Result(key, arrays, attrs)

    def result_attrs(self, key: str) -> dict[str, Any]:
        """The attributes of the complete result at ``key`` without loading its arrays."""
        group = self._group(key)
        if group is None or group.attrs.get(COMPLETE) is not True:
            return self.read_result(key).attrs  # raises the KeyError / IncompleteResultError
        return {k: v for k, v in group.attrs.items() if k != COMPLETE}

    def iter_results(self, pass_name: str | None = None,
                     complete_only: bool = True) -> Iterator[str]:
        """Keys of the results (of one pass if given): study scope first, then per run its
        run-scope results and its checkpoints', each sorted by name (run, checkpoint, pass,
        item)."""
        scopes = [((None, None), self._root.get("study"))]
        for run, run_group in _subgroups(self._root.get("runs")):
            scopes.append(((run, None), run_group))
            scopes += [((run, checkpoint), group) for checkpoint, group
                       in _subgroups(run_group.get(_RESERVED_RUN_PASS))]
        for (run, checkpoint), scope_group in scopes:
            for name, pass_group in _subgroups(scope_group):
                if checkpoint is None and run is not None and name == _RESERVED_RUN_PASS:
                    continue
                if pass_name is not None and name != pass_name:
                    continue
                pairs = ([(self.key(run, checkpoint, name), pass_group)]
                         if _is_result(pass_group) else
                         [(self.key(run, checkpoint, name, item), group)
                          for item, group in _subgroups(pass_group)])
                for key, group in pairs:
                    if not complete_only or group.attrs.get(COMPLETE) is True:
                        yield key

    def set_study_attrs(self, attrs: Mapping[str, Any]) -> None:
        """Merge ``attrs`` (made JSON-safe) into the root's attributes. Call from one process."""
        self._check_writable()
        self._root.attrs.update(json_safe(dict(attrs)))

    def study_attrs(self) -> dict[str, Any]:
        """The root's attributes (the study's provenance)."""
        return dict(self._root.attrs)

    def results_frame(self, pass_name: str, columns: Sequence[str] = ("run", "checkpoint",
                                                                     "item"),
                      keys: Sequence[str] | None = None) -> pd.DataFrame:
        """One row per complete result of ``pass_name`` (or per key of ``keys``, which must be
        complete results): ``run, checkpoint, item`` (None where the scope has none) and every
        scalar attribute.

        ``columns`` come first (a missing attribute reads NaN), then the other attributes in order
        of appearance.
        """
        rows = []
        for key in self.iter_results(pass_name) if keys is None else keys:
            run, checkpoint, _, item = parse_key(key)
            attrs = {k: v for k, v in self.result_attrs(key).items() if _is_scalar(v)}
            rows.append({"run": run, "checkpoint": checkpoint, "item": item, **attrs})
        columns = list(columns)
        for row in rows:
            columns += [c for c in row if c not in columns]
        return pd.DataFrame(rows, columns=columns)

    def critical_points(self) -> pd.DataFrame:
        """``results_frame`` of the ``critical`` pass (a convenience for scripts and checks; the
        pass's own column order is ``landscape.passes.critical.COLUMNS``)."""
        return self.results_frame("critical", ("run", "checkpoint", "item", "status", "loss",
                                               "error", "index", "index_stable", "grad_norm"))

    def measures(self) -> pd.DataFrame:
        """One row per (run, checkpoint, measure): every complete checkpoint result with a
        ``measure`` and a ``value`` attribute (the ``flatness`` and ``entropy`` passes write
        them), beside what its checkpoint's ``metrics`` result says of the training.

        Columns: ``run, checkpoint, measure, value, stderr, pass, optimizer, batch_size, seed,
        train_loss, test_loss, train_error, test_error, gap_loss, gap_error`` (gap = test −
        train; NaN where a checkpoint has no such record), then ``step`` and ``valid``.
        """
        rows, metrics = [], {}
        for key in self.iter_results():
            run, checkpoint, pass_name, _ = parse_key(key)
            if checkpoint is None:
                continue
            attrs = self.result_attrs(key)
            if pass_name == "metrics":
                metrics[run, checkpoint] = attrs
            elif "measure" in attrs and "value" in attrs:
                rows.append({"run": run, "checkpoint": checkpoint, "measure": attrs["measure"],
                             "value": attrs["value"], "stderr": attrs.get("stderr"),
                             "pass": pass_name, "valid": attrs.get("valid", True)})
        training = ("optimizer", "batch_size", "seed", "train_loss", "test_loss", "train_error",
                    "test_error", "step")
        for row in rows:
            record = metrics.get((row["run"], row["checkpoint"]), {})
            row.update({name: record.get(name) for name in training})
        columns = ["run", "checkpoint", "measure", "value", "stderr", "pass", *training[:-1],
                   "gap_loss", "gap_error", "step", "valid"]
        frame = pd.DataFrame(rows, columns=[c for c in columns if not c.startswith("gap_")])
        for name in ("value", "stderr", "train_loss", "test_loss", "train_error", "test_error"):
            frame[name] = pd.to_numeric(frame[name], errors="coerce")
        frame["gap_loss"] = frame["test_loss"] - frame["train_loss"]
        frame["gap_error"] = frame["test_error"] - frame["train_error"]
        return frame[columns]

    def summary(self) -> str:
        """Counts of runs, checkpoints, results per pass (complete / incomplete) and, for passes
        whose results have a ``status``, results per status."""
        keys = list(self.iter_results(complete_only=False))
        parsed = [parse_key(k) for k in keys]
        done = {k: self.is_complete(k) for k in keys}
        n_done = sum(done.values())
        runs = {p[0] for p in parsed if p[0] is not None}
        checkpoints = {p[:2] for p in parsed if p[1] is not None}
        header = (f"store {self.path} (schema {self.schema_version}): {len(runs)} runs, "
                  f"{len(checkpoints)} checkpoints, {len(keys)} results "
                  f"({n_done} complete, {len(keys) - n_done} incomplete)")
        lines = [header]
        for pass_name in sorted({p[2] for p in parsed}):
            of_pass = [k for k, p in zip(keys, parsed) if p[2] == pass_name]
            n_done = sum(done[k] for k in of_pass)
            line = f"  {pass_name}: {n_done} complete, {len(of_pass) - n_done} incomplete"
            statuses = Counter(self.result_attrs(k).get("status") for k in of_pass if done[k])
            if set(statuses) - {None}:
                line += "; by status: " + ", ".join(
                    f"{s or 'unknown'} {n}" for s, n in sorted(statuses.items(),
                                                               key=lambda sn: str(sn[0])))
            lines.append(line)
        return "\n".join(lines)

    def _check_writable(self) -> None:
        if self.read_only:
            raise PermissionError(f"store {self.path} is open read-only (mode='r')")


def _is_result(group: zarr.Group | None) -> bool:
    """A result group carries the ``complete`` flag (or, if damaged by hand, at least an array)."""
    return group is not None and (COMPLETE in group.attrs or next(group.arrays(), None) is not None)


def _subgroups(group: zarr.Group | None) -> Iterator[tuple[str, zarr.Group]]:
    if isinstance(group, zarr.Group):
        yield from sorted(group.groups(), key=lambda pair: pair[0])


def _dimension_names(arrays: dict[str, np.ndarray],
                     dims: Mapping[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
    unknown = set(dims) - set(arrays)
    if unknown:
        raise ValueError(f"dims names arrays that are not given: {sorted(unknown)}")
    names = {}
    for name, a in arrays.items():
        if a.dtype.kind == "O":
            raise TypeError(f"array {name!r} has dtype object; store numeric or bool arrays")
        names[name] = tuple(dims.get(name, [f"{name}_dim_{i}" for i in range(a.ndim)]))
        if len(names[name]) != a.ndim:
            raise ValueError(f"dims[{name!r}] = {names[name]} does not match the array's "
                             f"shape {a.shape}")
    return names


def diff_stores(a: Store, b: Store, *, ignore: Sequence[str] = ("invocation", "wall_time"),
                renames: Mapping[str, str] | None = None) -> list[str]:
    """The differences between the results of two stores, one line each (empty: equal).

    Compares the set of complete result keys, then per result the array names, shapes, dtypes
    and values (exactly, NaN equal to NaN) and the attributes but ``ignore``. ``renames`` maps
    names (array, attribute, or key in a nested attribute) in ``a`` to their names in ``b``:
    e.g. a store written before a field was renamed. The root attributes (provenance: times,
    hosts) are not compared.
    """
    renames = dict(renames or {})

    def renamed(value: Any) -> Any:
        if isinstance(value, Mapping):
            return {renames.get(k, k): renamed(v) for k, v in value.items()}
        return [renamed(v) for v in value] if isinstance(value, list) else value

    keys_a, keys_b = set(a.iter_results()), set(b.iter_results())
    out = [f"only in {a.path}: {k}" for k in sorted(keys_a - keys_b)]
    out += [f"only in {b.path}: {k}" for k in sorted(keys_b - keys_a)]
    for key in sorted(keys_a & keys_b):
        ra, rb = a.read_result(key), b.read_result(key)
        arrays_a = {renames.get(n, n): v for n, v in ra.arrays.items()}
        if set(arrays_a) != set(rb.arrays):
            out.append(f"{key}: arrays {sorted(arrays_a)} vs {sorted(rb.arrays)}")
        for name in sorted(set(arrays_a) & set(rb.arrays)):
            x, y = arrays_a[name], rb.arrays[name]
            if x.shape != y.shape or x.dtype != y.dtype or not np.array_equal(
                    x, y, equal_nan=x.dtype.kind in "fc"):
                out.append(f"{key}/{name}: arrays differ")
        attrs_a = {k: v for k, v in renamed(ra.attrs).items() if k not in ignore}
        attrs_b = {k: v for k, v in rb.attrs.items() if k not in ignore}
        for name in sorted(set(attrs_a) | set(attrs_b)):
            if attrs_a.get(name, "<absent>") != attrs_b.get(name, "<absent>"):
                out.append(f"{key}: attribute {name}: {attrs_a.get(name, '<absent>')!r:.60} vs "
                           f"{attrs_b.get(name, '<absent>')!r:.60}")
    return out


def open_store(path: str | Path, mode: str = "a") -> Store:
    """Open the study store at ``path``: ``"a"`` creates it if missing (stamped with
    ``SCHEMA_VERSION``), ``"r"`` is read-only.

    Raises ``SchemaVersionError`` for a store of a newer schema, or of an older one opened for
    writing (it reads as before: open it with ``mode="r"``).
    """
    if mode not in ("a", "r"):
        raise ValueError(f"mode must be 'a' or 'r'; got {mode!r}")
    path = Path(path)
    if mode == "r" and not path.exists():
        raise FileNotFoundError(f"no store at {path}")
    try:
        root = zarr.open_group(path, mode=mode, zarr_format=3)
    except ContainsGroupError:  # another process created the root between our check and create
        root = zarr.open_group(path, mode="r+", zarr_format=3)
    fresh = SCHEMA_ATTR not in root.attrs and not dict(root.attrs) and next(root.groups(),
                                                                             None) is None
    if mode == "a" and fresh:
        root.attrs[SCHEMA_ATTR] = SCHEMA_VERSION
    store = Store(root, path, read_only=mode == "r")
    version = store.schema_version
    if version > SCHEMA_VERSION or (mode == "a" and version != SCHEMA_VERSION):
        raise SchemaVersionError(
            f"store {path} has schema version {version}; this landscape "
            f"({_version('landscape')}) writes version {SCHEMA_VERSION}"
            + (". Upgrade landscape to read it." if version > SCHEMA_VERSION else
               ". Its results stay readable (open_store(path, mode='r'), `landscape inspect`); "
               "analyse into a new output folder (--set output=…) to add results."))
    return store


def provenance(**extra: Any) -> dict[str, Any]:
    """Where and with what a study ran: versions, git commit of the cwd, host, UTC time, + extra.

    ``extra`` holds the study's own facts (config, seed, device, dtype, n_params, timings) and wins
    over the collected keys on a clash.
    """
    return {
        "landscape_version": _version("landscape"),
        "git_commit": _git_commit(),
        "python": sys.version.split()[0],
        "torch": _version("torch"),
        "numpy": np.__version__,
        "zarr": zarr.__version__,
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "time_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **extra,
    }


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None
