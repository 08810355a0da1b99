"""Datasets: the embedded defaults and real MNIST / CIFAR-10 read from local files.

Owns loading, the deterministic train/test split, the optional downsampling to small grey images
(as in Dauphin et al. 2014) and the standardisation, whose statistics (training split only) are
recorded in the returned ``Dataset``. Imports nothing from storage, tracking or plotting.

* ``digits``: scikit-learn's bundled 8×8 digits (1,797 samples), inputs ``[N, 1, 8, 8]``, a
  stratified split with ``test_fraction`` and ``seed``.
* ``mnist1d``: generated procedurally and offline by ``mnist1d.data.make_dataset`` (4000 train /
  1000 test, inputs ``[N, 1, 40]``).
* ``mnist``: IDX files (``train-images-idx3-ubyte`` …, optionally ``.gz``) in ``<root>/mnist`` or
  ``<root>``.
* ``cifar10``: the python pickle batches (``data_batch_1`` … ``data_batch_5``, ``test_batch``) in
  ``<root>/cifar10/cifar-10-batches-py``, ``<root>/cifar-10-batches-py``, ``<root>/cifar10`` or
  ``<root>``, unpickled with a loader that only reconstructs numpy arrays.

``<root>`` is ``DataSpec.root``, else the ``LANDSCAPE_DATA`` environment variable, else
``~/.landscape/data``. Datasets with a fixed split (all but digits) are permuted with ``seed``
within each split, so ``n_train`` / ``n_test`` take seeded subsets.

Conventions: pixel values are scaled to [0, 1] (digits by 1/16, MNIST / CIFAR by 1/255; MNIST-1D
as generated) before standardisation, which subtracts the per-channel mean and divides by the
per-channel standard deviation (correction 0) of the training split.
"""

from __future__ import annotations

import codecs
import functools
import gzip
import importlib
import os
import pickle
import random
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

DATASETS = ("digits", "mnist1d", "mnist", "cifar10")
N_CLASSES = 10  # every dataset above has ten classes
GREY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R BT.601 luminance
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_MNIST_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
_CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))


@dataclass(frozen=True)
class DataSpec:
    """Which data and how to prepare it; serialisable with ``to_dict`` / ``from_dict``.

    ``n_train`` / ``n_test``: subset sizes (None: the whole split); ``seed``: split / subset seed;
    ``test_fraction``: test share of the digits split; ``downsample``: side of the square grey
    images MNIST / CIFAR-10 are reduced to (None: native size and colour); ``root``: folder of the
    real datasets; ``standardize``: per-channel standardisation with training statistics.
    """

    name: str = "digits"
    n_train: int | None = None
    n_test: int | None = None
    seed: int = 0
    downsample: int | None = None
    root: str | None = None
    standardize: bool = True
    test_fraction: float = 0.25

    def __post_init__(self):
        if self.name not in DATASETS:
            raise ValueError(f"unknown dataset {self.name!r}; available: {', '.join(DATASETS)}")
        for key in ("n_train", "n_test", "downsample"):
            value = getattr(self, key)
            if value is not None and (not _is_int(value) or value < 1):
                raise ValueError(f"{key} must be a positive integer or None; got {value!r}")
        if not _is_int(self.seed):
            raise ValueError(f"seed must be an integer; got {self.seed!r}")
        if self.downsample is not None and self.name not in ("mnist", "cifar10"):
            raise ValueError(f"downsample applies to mnist and cifar10, not {self.name!r}")
        if not 0 < self.test_fraction < 1:
            raise ValueError(f"test_fraction must be in (0, 1); got {self.test_fraction!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> DataSpec:
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown data-spec keys {sorted(unknown)}; "
                             f"known: {sorted(cls.__dataclass_fields__)}")
        return cls(**d)


@dataclass(frozen=True)
class Dataset:
    """Tensors (float32 inputs ``[N, *input_shape]``, int64 labels ``[N]``) and their provenance.

    ``mean`` / ``std`` (float64, shape ``[C, 1, …]``, broadcastable to ``input_shape``) are the
    per-channel training-split statistics that were subtracted / divided (before the cast to
    float32); None when ``spec.standardize`` is False.
    """

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    n_classes: int
    input_shape: tuple[int, ...]
    mean: Tensor | None
    std: Tensor | None
    spec: DataSpec


def _is_int(value) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def load_dataset(spec: DataSpec | dict | str = "digits") -> Dataset:
    """Load, split, subset, downsample and standardise the dataset named by ``spec`` (a DataSpec,
    its dict, or a dataset name)."""
    if isinstance(spec, str):
        spec = DataSpec(name=spec)
    elif isinstance(spec, dict):
        spec = DataSpec.from_dict(spec)
    elif not isinstance(spec, DataSpec):
        raise TypeError(f"spec must be a DataSpec, dict or name; got {type(spec).__name__}")
    if spec.name == "digits":
        x_train, y_train, x_test, y_test = _digits_split(spec.seed, spec.test_fraction)
    else:
        x_train, y_train, x_test, y_test = _fixed_split(spec)
    x_train, y_train = _subset(x_train, y_train, spec.n_train, "n_train")
    x_test, y_test = _subset(x_test, y_test, spec.n_test, "n_test")
    x_train = torch.as_tensor(x_train, dtype=torch.float64)
    x_test = torch.as_tensor(x_test, dtype=torch.float64)
    if spec.downsample is not None:
        x_train, x_test = downsample(x_train, spec.downsample), downsample(x_test, spec.downsample)
    mean = std = None
    if spec.standardize:
        mean, std = channel_statistics(x_train)
        x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    return Dataset(x_train.float().contiguous(), torch.as_tensor(y_train, dtype=torch.int64),
                   x_test.float().contiguous(), torch.as_tensor(y_test, dtype=torch.int64),
                   N_CLASSES, tuple(x_train.shape[1:]), mean, std, spec)


def _subset(x: np.ndarray, y: np.ndarray, n: int | None, name: str):
    if n is None:
        return x, y
    if n > len(y):
        raise ValueError(f"{name}={n} exceeds the {len(y)} samples of the split")
    return x[:n], y[:n]


def channel_statistics(x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel mean and standard deviation (correction 0) of ``x [N, C, ...]``, each of shape
    ``[C, 1, …]``; a constant channel gets std 1 so it is only centred."""
    dims = [0, *range(2, x.dim())]
    mean = x.mean(dim=dims, keepdim=True)[0]
    std = x.std(dim=dims, keepdim=True, correction=0)[0]
    return mean, torch.where(std > 0, std, torch.ones_like(std))


def downsample(images: Tensor, side: int) -> Tensor:
    """``[N, C, H, W]`` images → ``[N, 1, side, side]`` grey images.

    RGB (C = 3) is converted to grey with the luminance weights 0.299, 0.587, 0.114, then each
    output pixel is the mean over its area of the input (``adaptive_avg_pool2d``: exact block
    means when ``side`` divides H and W, overlapping windows otherwise).
    """
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must have shape [N, 1 or 3, H, W]; got {tuple(images.shape)}")
    if not _is_int(side) or not 1 <= side <= min(images.shape[2:]):
        raise ValueError(f"downsample side must be an integer in [1, {min(images.shape[2:])}]; "
                         f"got {side!r}")
    x = images.double()
    if x.shape[1] == 3:
        x = torch.einsum("nchw,c->nhw", x, x.new_tensor(GREY_WEIGHTS)).unsqueeze(1)
    return torch.nn.functional.adaptive_avg_pool2d(x, side)


# --- digits and MNIST-1D (embedded) --------------------------------------------------------------


def _digits_split(seed: int, test_fraction: float):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).reshape(-1, 1, 8, 8)
    train, test = train_test_split(np.arange(len(y)), test_size=test_fraction, random_state=seed,
                                   stratify=y)
    return x[train], y[train], x[test], y[test]


@functools.lru_cache(maxsize=1)
def _mnist1d() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """MNIST-1D as ``make_dataset`` generates it, with numpy's and Python's global RNGs (which it
    reseeds) restored afterwards."""
    from mnist1d.data import get_dataset_args, make_dataset

    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        d = make_dataset(get_dataset_args())
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    return d["x"].reshape(-1, 1, 40), d["y"], d["x_test"].reshape(-1, 1, 40), d["y_test"]


def _fixed_split(spec: DataSpec):
    """The dataset's own train / test split, each permuted with ``spec.seed``."""
    if spec.name == "mnist1d":
        x_train, y_train, x_test, y_test = _mnist1d()
    elif spec.name == "mnist":
        x_train, y_train, x_test, y_test = _mnist_arrays(_data_root(spec))
    else:
        x_train, y_train, x_test, y_test = _cifar10_arrays(_data_root(spec))
    rng = np.random.default_rng(spec.seed)
    train, test = rng.permutation(len(y_train)), rng.permutation(len(y_test))
    return x_train[train], y_train[train], x_test[test], y_test[test]


# --- real datasets from local files --------------------------------------------------------------


def _data_root(spec: DataSpec) -> Path:
    if spec.root is not None:
        return Path(spec.root).expanduser()
    return Path(os.environ.get("LANDSCAPE_DATA", "~/.landscape/data")).expanduser()


def _find(name: str, folders: list[Path], dataset: str, *, gz: bool = False) -> Path:
    """The first of ``folder/name`` (or ``name.gz``) that exists; FileNotFoundError otherwise."""
    names = (name, name + ".gz") if gz else (name,)
    for folder in folders:
        for candidate in names:
            if (folder / candidate).is_file():
                return folder / candidate
    raise FileNotFoundError(
        f"{dataset}: file {' or '.join(names)} not found; looked in "
        f"{', '.join(str(f) for f in folders)}. Put the files there, or set the LANDSCAPE_DATA "
        f"environment variable or the data spec's 'root' to the folder that holds them.")


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (plain or gzip-compressed) into an array of its stored shape and type."""
    path = Path(path)
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path}: not an IDX file (magic number {raw[:4].hex() or 'missing'}; "
                         "expected 0000 followed by a type code and the number of dimensions)")
    dtype, ndim = np.dtype(_IDX_DTYPES[raw[2]]), raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: IDX header truncated ({len(raw)} bytes, {ndim} dimensions)")
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    expected = header + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        raise ValueError(f"{path}: IDX size mismatch: dimensions {dims} need {expected} bytes, "
                         f"the file has {len(raw)}")
    return np.frombuffer(raw, dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def _mnist_arrays(root: Path):
    folders = [root / "mnist", root]
    out = []
    for split, (images_name, labels_name) in _MNIST_FILES.items():
        images_path = _find(images_name, folders, "mnist", gz=True)
        labels_path = _find(labels_name, folders, "mnist", gz=True)
        images, labels = read_idx(images_path), read_idx(labels_path)
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise ValueError(f"mnist {split}: {images_path} holds shape {images.shape} and "
                             f"{labels_path} shape {labels.shape}; expected [N, H, W] and [N]")
        out += [images[:, None].astype(np.float32) / 255.0, labels.astype(np.int64)]
    return tuple(out)


@functools.cache
def _numpy_globals() -> dict[tuple[str, str], object]:
    """The globals a pickled numpy array needs, under numpy 1's (``core``) and 2's (``_core``)
    module names, and the one builtin that protocol-2 pickles of bytes call."""
    core = importlib.import_module("numpy._core" if hasattr(np, "_core") else "numpy.core")
    allowed: dict[tuple[str, str], object] = {
        ("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): codecs.encode,  # bytes in Python 3 pickles of protocol < 3
    }
    for prefix in ("numpy.core", "numpy._core"):
        allowed[(f"{prefix}.multiarray", "_reconstruct")] = core.multiarray._reconstruct
        allowed[(f"{prefix}.multiarray", "scalar")] = core.multiarray.scalar
        allowed[(f"{prefix}.numeric", "_frombuffer")] = core.numeric._frombuffer
    return allowed


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that reconstructs numpy arrays and plain containers, and refuses any other
    global (a pickle can call any importable function while loading)."""

    def find_class(self, module: str, name: str):
        try:
            return _numpy_globals()[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}") from None


def read_cifar_batch(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """A CIFAR-10 python batch → ``(images uint8 [N, 3, 32, 32], labels int64 [N])``.

    Only numpy arrays, lists, dicts and bytes are reconstructed; any other object in the pickle
    raises ``pickle.UnpicklingError`` naming the file.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            batch = _NumpyOnlyUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as exc:
        raise pickle.UnpicklingError(f"{path}: cannot load as a CIFAR-10 batch: {exc}") from None
    if not isinstance(batch, dict):
        raise TypeError(f"{path}: a CIFAR-10 batch is a dict; got {type(batch).__name__}")
    data, labels = _entry(batch, "data", path), _entry(batch, "labels", path)
    data, labels = np.asarray(data), np.asarray(labels)
    if (data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32
            or labels.shape != (len(data),)):
        raise ValueError(f"{path}: data {data.dtype} {data.shape} and labels {labels.shape}; "
                         "expected uint8 [N, 3072] and [N]")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def _entry(batch: dict, key: str, path: Path):
    for k in (key, key.encode()):
        if k in batch:
            return batch[k]
    raise ValueError(f"{path}: CIFAR-10 batch has no {key!r} entry (keys: {list(batch)})")


def _cifar10_arrays(root: Path):
    folders = [root / "cifar10" / "cifar-10-batches-py", root / "cifar-10-batches-py",
               root / "cifar10", root]
    train = [read_cifar_batch(_find(name, folders, "cifar10")) for name in _CIFAR_TRAIN]
    x_test, y_test = read_cifar_batch(_find("test_batch", folders, "cifar10"))
    x_train = np.concatenate([x for x, _ in train]).astype(np.float32) / 255.0
    y_train = np.concatenate([y for _, y in train])
    return x_train, y_train, x_test.astype(np.float32) / 255.0, y_test
