"""The ``metrics`` pass: what a checkpoint says of its training — step, epoch, the train / test
loss and error saved with it, the optimizer (``optimizer``: its name; ``optimizer_hparams``), the
run's ``seed`` and ``batch_size`` (None: full batch or not recorded) — no arrays. Implicit:
recorded for every checkpoint of every run, chosen or not, so that training curves and
measure-vs-generalization tables need no other pass."""

from __future__ import annotations

from landscape.checkpoints import Checkpoint, load_checkpoint
from landscape.passes.base import Item, PassConfig, PassSpec, Record, Target


def _load(target: Target, config: PassConfig, device: str) -> Checkpoint:
    return load_checkpoint(target.checkpoint)


def _run(ckpt: Checkpoint, item: Item, config: PassConfig) -> Record:
    optimizer = dict(ckpt.optimizer)
    return Record({}, {}, {"step": ckpt.step, "epoch": ckpt.epoch, "path": str(ckpt.path),
                           **ckpt.metrics, "optimizer": optimizer.pop("name", None),
                           "optimizer_hparams": optimizer, "seed": ckpt.seed,
                           "batch_size": ckpt.batch_size})


SPEC = PassSpec(name="metrics", scope="checkpoint", config=PassConfig,
                items=lambda target, config: [Item(None)], load=_load, run=_run,
                columns=("run", "checkpoint", "item", "step", "epoch"), implicit=True,
                needs_device=False, description="step, epoch and saved metrics of a checkpoint")
