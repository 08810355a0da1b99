"""The ``metrics`` pass: a checkpoint's step, epoch and the train / test loss and error saved with
it (no arrays). Implicit: recorded for every checkpoint of every run, chosen or not, so that the
training curves need no other pass."""

from __future__ import annotations

from landscape.checkpoints import Checkpoint, load_checkpoint
from landscape.passes.base import Item, PassConfig, PassSpec, Record, Target


def _load(target: Target, config: PassConfig, device: str) -> Checkpoint:
    return load_checkpoint(target.checkpoint)


def _run(ckpt: Checkpoint, item: Item, config: PassConfig) -> Record:
    return Record({}, {}, {"step": ckpt.step, "epoch": ckpt.epoch, "path": str(ckpt.path),
                           **ckpt.metrics})


SPEC = PassSpec(name="metrics", scope="checkpoint", config=PassConfig,
                items=lambda target, config: [Item(None)], load=_load, run=_run,
                columns=("run", "checkpoint", "item", "step", "epoch"), implicit=True,
                needs_device=False, description="step, epoch and saved metrics of a checkpoint")
