"""Datasets: the embedded defaults (scikit-learn's digits, procedurally generated MNIST-1D).

Owns loading, the deterministic train/test split and the standardisation (statistics of the
training split, recorded in the ``Dataset``). Real MNIST / CIFAR-10 from local files are not
implemented yet. Imports nothing from storage, tracking or plotting.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import Tensor

DATASETS = ("digits", "mnist1d")


@dataclass(frozen=True)
class DataSpec:
    """Which data: ``name``, optional subset sizes, split seed, test fraction, standardisation."""

    name: str = "digits"
    n_train: int | None = None
    n_test: int | None = None
    seed: int = 0
    test_fraction: float = 0.25
    standardize: bool = True

    def __post_init__(self):
        if self.name not in DATASETS:
            raise ValueError(f"unknown dataset {self.name!r}; available: {', '.join(DATASETS)}")
        if not 0 < self.test_fraction < 1:
            raise ValueError(f"test_fraction must be in (0, 1); got {self.test_fraction}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> DataSpec:
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown data-spec keys {sorted(unknown)}")
        return cls(**d)


@dataclass(frozen=True)
class Dataset:
    """Tensors (float32 inputs ``[N, *input_shape]``, int64 labels ``[N]``) and their provenance.

    ``mean`` / ``std`` are the per-feature statistics of the training split that were subtracted /
    divided (None when ``spec.standardize`` is False).
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


def _digits() -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return x.reshape(-1, 1, 8, 8), y, (1, 8, 8)


@functools.lru_cache(maxsize=1)
def _mnist1d() -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    from mnist1d.data import get_dataset_args, make_dataset

    state = np.random.get_state()  # make_dataset reseeds numpy's global RNG
    try:
        d = make_dataset(get_dataset_args())
    finally:
        np.random.set_state(state)
    x = np.concatenate([d["x"], d["x_test"]]).reshape(-1, 1, 40)
    return x, np.concatenate([d["y"], d["y_test"]]), (1, 40)


def load_dataset(spec: DataSpec | dict | str = "digits") -> Dataset:
    """Load and split the dataset named by ``spec`` (a DataSpec, its dict, or a name)."""
    if isinstance(spec, str):
        spec = DataSpec(name=spec)
    elif isinstance(spec, dict):
        spec = DataSpec.from_dict(spec)
    x, y, shape = _digits() if spec.name == "digits" else _mnist1d()
    order = np.random.default_rng(spec.seed).permutation(len(y))
    n_test = round(spec.test_fraction * len(y))
    test, train = order[:n_test], order[n_test:]
    if spec.n_train is not None:
        train = train[:spec.n_train]
    if spec.n_test is not None:
        test = test[:spec.n_test]
    x_train = torch.tensor(x[train], dtype=torch.float32)
    x_test = torch.tensor(x[test], dtype=torch.float32)
    mean = std = None
    if spec.standardize:
        mean = x_train.mean(dim=0)
        std = x_train.std(dim=0).clamp_min(1e-6)
        x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    return Dataset(x_train, torch.tensor(y[train], dtype=torch.int64), x_test,
                   torch.tensor(y[test], dtype=torch.int64), int(y.max()) + 1, shape, mean, std,
                   spec)
