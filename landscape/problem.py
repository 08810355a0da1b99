"""From a checkpoint (or a model spec and a dataset) to the Objective the analysis passes use.

Owns the choice of loss for a model (cross-entropy for classifiers, ½‖x − x̂‖² for autoencoders) and
of the fixed evaluation set (the first ``n_samples`` of the training split, or of the test
split for generalization). Imports nothing from storage, tracking or plotting.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from landscape.checkpoints import Checkpoint, load_checkpoint
from landscape.data import Dataset, load_dataset
from landscape.losses import autoencoder_loss
from landscape.models import parse_model_spec
from landscape.objective import Objective

LossFn = Callable[[Tensor, Tensor], Tensor]


def is_autoencoder(model_spec) -> bool:
    """True for specs whose targets are the inputs (the linear autoencoder)."""
    return parse_model_spec(model_spec).kind == "linear-ae"


def loss_for(model_spec) -> LossFn:
    """Mean loss matching the model's task."""
    return autoencoder_loss if is_autoencoder(model_spec) else nn.functional.cross_entropy


def evaluation_data(dataset: Dataset, model_spec, *, split: str = "train",
                    n_samples: int | None = None) -> tuple[Tensor, Tensor]:
    """``(inputs, targets)`` of the fixed evaluation set; autoencoders get flattened inputs as
    targets."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test'; got {split!r}")
    x = dataset.x_train if split == "train" else dataset.x_test
    y = dataset.y_train if split == "train" else dataset.y_test
    if n_samples is not None:
        if n_samples < 1:
            raise ValueError(f"n_samples must be positive; got {n_samples}")
        x, y = x[:n_samples], y[:n_samples]
    if is_autoencoder(model_spec):
        x = x.reshape(x.shape[0], -1)
        y = x
    return x, y


@dataclass(frozen=True)
class Problem:
    """A model at a checkpoint with its evaluation objective."""

    objective: Objective
    model_spec: dict
    data_spec: dict | None
    checkpoint: Checkpoint | None
    n_samples: int


def problem_from_checkpoint(path, *, n_samples: int | None = None, l2: float = 0.0,
                            device: str = "cpu", dtype: torch.dtype = torch.float64,
                            chunk_size: int | None = None, model_spec=None,
                            split: str = "train", hvp_mode: str = "auto") -> Problem:
    """Load ``path`` and build the float64 full-batch Objective on its training data (``split``
    ``"test"``: on its test data; ``n_samples`` then takes the first N test samples);
    ``hvp_mode`` as in ``Objective``."""
    ckpt = load_checkpoint(path, model_spec=model_spec)
    if ckpt.data_spec is None:
        raise ValueError(f"{path}: the checkpoint names no dataset; pass one explicitly")
    dataset = load_dataset(ckpt.data_spec)
    data = evaluation_data(dataset, ckpt.model_spec, split=split, n_samples=n_samples)
    obj = Objective(ckpt.model(), loss_for(ckpt.model_spec), data, dtype=dtype, device=device,
                    chunk_size=chunk_size, l2=l2, hvp_mode=hvp_mode)
    return Problem(obj, ckpt.model_spec, ckpt.data_spec, ckpt, obj.num_samples)
