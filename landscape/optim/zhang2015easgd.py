"""Elastic averaging SGD (EASGD), Zhang, Choromanska & LeCun 2015, "Deep learning with Elastic
Averaging SGD" (NeurIPS; arXiv 1412.6651), in its synchronous form, with the p workers
simulated in one process.

Update rule. p local variables x_i (the workers) are tied to a centre variable x̃ by an elastic
force of strength ρ; with η the learning rate and g_i the minibatch gradient of worker i at x_i,
both updates use the values of step t:

    x_i ← x_i − η (g_i(x_i) + ρ (x_i − x̃)),        i = 1 … p,
    x̃  ← x̃ + η ρ Σ_i (x_i − x̃)  =  (1 − β) x̃ + β · mean_i x_i,    β = p η ρ.

The workers explore (the elastic term lets them drift from the centre, more so for small ρ);
the centre is a moving average of them in space and time. The model's parameters *are* the
centre x̃ — what a training loop evaluates and a checkpoint holds. The workers live in the
optimizer state (``state[param]["workers"]``, shape ``[p, *param.shape]``, saved and restored by
``state_dict``) and start at the centre on the first step, so that step leaves the centre in
place and moves every worker by −η g_i.

Defaults: ``lr`` η = 0.1, ``workers`` p = 4 and ``rho=None``, meaning ρ = β / (p η) with
β = 0.9 — the paper's choice for its experiments (β = 0.9, α = η ρ = β / p); at the defaults
ρ = 2.25. ``rho=0`` decouples the workers (each runs plain SGD on its shard, the centre stays).

Minibatches. ``step(closure)`` needs a ``landscape.optim.BatchClosure``: its minibatch is split
into p equal consecutive shards, one per worker (the ``B mod p`` trailing samples are left out
of this step); a minibatch smaller than p (an epoch's short last one) goes whole to every
worker. The p gradients are one vmapped
``torch.func.grad`` of ``functional_call`` over the workers' parameters (the closure itself is
not called), with the model in its current mode; under ``vmap`` each worker draws its own
dropout masks from the global RNG. Models with buffers (BatchNorm running statistics) are
refused: p workers cannot share one set of them. ``step`` returns the mean of the workers' shard
losses before the update (at the first step the minibatch loss at the centre).

Fair-comparison note: a step costs one minibatch gradient in all (p shards of B/p samples), as
SGD on the same minibatch, plus p copies of the parameters in memory; the paper's speed-up comes
from running the workers in parallel on separate data, which this simulation does not model.

Example (one worker, ρ = 0: the worker is SGD, the centre stays):
    >>> from torch import nn
    >>> from landscape.optim import BatchClosure
    >>> net = nn.Linear(2, 1)
    >>> opt = EASGD(net.parameters(), lr=0.1, workers=1, rho=0.0)
    >>> closure = BatchClosure(net, nn.functional.mse_loss, torch.ones(4, 2), torch.zeros(4, 1))
    >>> centre = net.weight.detach().clone()
    >>> _ = opt.step(closure)
    >>> torch.equal(net.weight, centre), opt.state[net.weight]["workers"].shape
    (True, torch.Size([1, 1, 2]))
    >>> opt.beta
    0.0
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.func import functional_call, grad_and_value, vmap

from landscape.optim.base import check_positive

DEFAULT_BETA = 0.9  # the paper's moving-average rate β = p η ρ of the centre


class EASGD(torch.optim.Optimizer):
    """Synchronous EASGD with ``workers`` vectorised workers (see the module docs)."""

    def __init__(self, params, lr: float = 0.1, workers: int = 4, rho: float | None = None):
        lr = check_positive("lr", lr)
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers must be an integer >= 1; got {workers!r}")
        rho = DEFAULT_BETA / (workers * lr) if rho is None else check_positive(
            "rho", rho, allow_zero=True)
        super().__init__(params, {"lr": lr, "workers": workers, "rho": rho})
        if len(self.param_groups) != 1:
            raise ValueError("EASGD's workers hold all parameters jointly; pass one parameter "
                             f"group, not {len(self.param_groups)}")

    @property
    def beta(self) -> float:
        """β = p η ρ: the fraction of the way the centre moves to the workers' mean per step."""
        group = self.param_groups[0]
        return group["workers"] * group["lr"] * group["rho"]

    def _centre(self, model: torch.nn.Module) -> dict[str, Tensor]:
        """The model's trainable parameters by name (the centre x̃), checked against ours."""
        buffers = [name for name, _ in model.named_buffers()]
        if buffers:
            raise ValueError(f"EASGD cannot train a model with buffers ({', '.join(buffers)}): "
                             "its workers would share one set of (e.g. BatchNorm) statistics")
        named = {name: p for name, p in model.named_parameters() if p.requires_grad}
        params = self.param_groups[0]["params"]
        if len(named) != len(params) or any(a is not b for a, b in zip(named.values(), params)):
            raise ValueError("EASGD must hold exactly the model's trainable parameters, in "
                             "model.parameters() order")
        return named

    def _workers(self, param: Tensor, count: int) -> Tensor:
        state = self.state[param]
        if "workers" not in state:
            state["workers"] = param.detach().expand(count, *param.shape).clone()
        if state["workers"].shape[0] != count:
            raise ValueError(f"the optimizer state holds {state['workers'].shape[0]} workers but "
                             f"workers={count}")
        return state["workers"]

    @torch.no_grad()
    def step(self, closure=None) -> Tensor:
        missing = [a for a in ("model", "loss_fn", "batch") if not hasattr(closure, a)]
        if missing:
            raise TypeError("EASGD.step needs the minibatch to split among the workers: pass a "
                            "landscape.optim.BatchClosure(model, loss_fn, inputs, targets); the "
                            f"closure given lacks {missing}")
        group = self.param_groups[0]
        lr, rho, count = group["lr"], group["rho"], group["workers"]
        centre = self._centre(closure.model)
        inputs, targets = closure.batch
        n = inputs.shape[0]
        if n == 0:
            raise ValueError("EASGD got an empty minibatch")

        def shards(t: Tensor) -> Tensor:
            if n < count:  # a short last minibatch of an epoch: every worker takes all of it
                return t.expand(count, *t.shape)
            size = n // count
            return t[:size * count].reshape(count, size, *t.shape[1:])

        def shard_loss(theta: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
            return closure.loss_fn(functional_call(closure.model, theta, (x,)), y)

        workers = {name: self._workers(p, count) for name, p in centre.items()}
        with torch.enable_grad():
            grads, losses = vmap(grad_and_value(shard_loss), randomness="different")(
                workers, shards(inputs), shards(targets))
        for name, x_tilde in centre.items():
            x = workers[name]
            pull = x - x_tilde  # x_i − x̃, [p, *shape], both at step t
            x.sub_(grads[name] + rho * pull, alpha=lr)
            x_tilde.add_(pull.sum(0), alpha=lr * rho)
        return losses.mean()
