"""Training loop that writes checkpoints, deterministic under a seed.

Owns the checkpoint schedule (log-spaced early steps, every ``checkpoint_every`` epochs and the
final step), the stopping rule (``epochs``, or earlier at the end of the first epoch whose full
training loss is at most ``target_train_loss``: a common criterion for comparing optimizers, as
Jiang et al. 2020 train every model to a cross-entropy target), minibatch order (a seeded
``torch.Generator``), and the metrics saved with each checkpoint (full train/test loss and error,
model in eval mode). Optimizers come from
``landscape.optim``; MLflow logging is optional and goes through a callback so this module does not
import tracking.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from landscape.checkpoints import save_checkpoint
from landscape.data import DataSpec, load_dataset
from landscape.models import build_model
from landscape.optim import make_optimizer, train_step
from landscape.problem import evaluation_data, loss_for

MetricsCallback = Callable[[dict[str, float], int], None]


@dataclass(frozen=True)
class TrainConfig:
    """What to train. ``batch_size=None`` means full batch; ``hparams`` go to the optimizer;
    ``target_train_loss``: stop at the end of the first epoch whose full training loss (model in
    eval mode) is at most this (``epochs`` is then the cap)."""

    dataset: str | dict = "digits"
    model: str | dict = "mlp:32:tanh"
    optimizer: str = "sgd"
    hparams: dict = field(default_factory=dict)
    epochs: int = 10
    batch_size: int | None = None
    seed: int = 0
    checkpoint_every: int = 1
    early_checkpoints: int = 4
    n_train: int | None = None
    target_train_loss: float | None = None

    def __post_init__(self):
        if self.epochs < 1:
            raise ValueError(f"epochs must be at least 1; got {self.epochs}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch_size must be positive; got {self.batch_size}")
        if self.checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be at least 1; got {self.checkpoint_every}")
        if self.target_train_loss is not None and not self.target_train_loss > 0:
            raise ValueError(f"target_train_loss must be positive; got {self.target_train_loss}")


def checkpoint_steps(steps_per_epoch: int, epochs: int, every: int, early: int) -> set[int]:
    """Steps to save: ``early`` log-spaced steps before the first regular save (within the first
    ``every`` epochs, so full-batch runs get early saves too), the end of every ``every``-th
    epoch, and the last step."""
    total = steps_per_epoch * epochs
    steps = {steps_per_epoch * e for e in range(every, epochs + 1, every)} | {total}
    window = min(steps_per_epoch * every, total)
    if early > 0 and window > 1:
        steps |= {max(1, round(math.exp(v))) for v in
                  torch.linspace(0, math.log(window), early + 1)[:-1].tolist()}
    return steps


@torch.no_grad()
def evaluate(model: nn.Module, loss_fn, x: Tensor, y: Tensor, chunk: int = 4096) -> dict:
    """Full-data mean loss and (for integer labels) error rate, model in eval mode."""
    was_training = model.training
    model.eval()
    total, wrong = 0.0, 0
    for xb, yb in zip(x.split(chunk), y.split(chunk)):
        out = model(xb)
        total += float(loss_fn(out, yb)) * yb.shape[0]
        if not yb.is_floating_point():
            wrong += int((out.argmax(dim=1) != yb).sum())
    model.train(was_training)
    metrics = {"loss": total / y.shape[0]}
    if not y.is_floating_point():
        metrics["error"] = wrong / y.shape[0]
    return metrics


def train(config: TrainConfig, out_dir: str | Path, *, progress: bool = True,
          on_metrics: MetricsCallback | None = None) -> list[Path]:
    """Train per ``config`` and write checkpoints into ``out_dir``; returns their paths by step
    (the last one is where training stopped: after ``epochs``, or at the target loss)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data_spec = DataSpec.from_dict({"name": config.dataset} if isinstance(config.dataset, str)
                                   else dict(config.dataset))
    dataset = load_dataset(data_spec)
    model = build_model(config.model, input_shape=dataset.input_shape,
                        n_classes=dataset.n_classes, seed=config.seed)
    spec = model.spec
    loss_fn = loss_for(spec)
    x, y = evaluation_data(dataset, spec, n_samples=config.n_train)
    x_test, y_test = evaluation_data(dataset, spec, split="test")
    optimizer = make_optimizer(config.optimizer, model.parameters(), seed=config.seed,
                               **config.hparams)
    n = x.shape[0]
    batch = n if config.batch_size is None else min(config.batch_size, n)
    per_epoch = math.ceil(n / batch)
    save_at = checkpoint_steps(per_epoch, config.epochs, config.checkpoint_every,
                               config.early_checkpoints)
    order_gen = torch.Generator().manual_seed(config.seed)
    paths, step = [], 0
    opt_record = {"name": config.optimizer, **config.hparams}

    def save(epoch: int) -> None:
        train_m, test_m = evaluate(model, loss_fn, x, y), evaluate(model, loss_fn, x_test, y_test)
        metrics = {f"train_{k}": v for k, v in train_m.items()}
        metrics |= {f"test_{k}": v for k, v in test_m.items()}
        paths.append(save_checkpoint(out_dir, model, model_spec=spec, data_spec=data_spec.to_dict(),
                                     step=step, epoch=epoch, optimizer=opt_record,
                                     seed=config.seed, metrics=metrics,
                                     batch_size=config.batch_size))
        if on_metrics is not None:
            on_metrics(metrics, step)

    save(0)
    bar = tqdm(total=per_epoch * config.epochs, disable=not progress, unit="step",
               desc=f"train {config.optimizer}")
    model.train()
    for epoch in range(1, config.epochs + 1):
        order = torch.randperm(n, generator=order_gen) if batch < n else torch.arange(n)
        for idx in order.split(batch):
            loss = train_step(optimizer, model, loss_fn, x[idx], y[idx])
            step += 1
            bar.update()
            bar.set_postfix(loss=f"{loss:.4f}")
            if not math.isfinite(loss):
                bar.close()
                raise FloatingPointError(
                    f"training loss became {loss} at step {step} ({config.optimizer}, "
                    f"hparams {config.hparams}); lower the learning rate")
            if step in save_at:
                save(epoch)
        if config.target_train_loss is not None and (
                evaluate(model, loss_fn, x, y)["loss"] <= config.target_train_loss):
            if step not in save_at:
                save(epoch)
            break
    bar.close()
    return paths


def config_dict(config: TrainConfig) -> dict:
    """Plain-dict view of a config (for params and provenance)."""
    return asdict(config)
