"""Noisy (perturbed) SGD, Ge, Huang, Jin & Yuan 2015, "Escaping from saddle points — online
stochastic gradient for tensor decomposition" (COLT; arXiv 1503.02101).

Update rule:

    w ← w − lr · (ĝ + n),    n uniform on the sphere of radius ``noise``,

where ĝ is the minibatch gradient and the sphere lives in the space of *all* parameters of the
group jointly (one draw ``ξ ~ N(0, I)`` over every parameter with a gradient, scaled to
``noise / ‖ξ‖``), so ‖n‖ = ``noise`` exactly at every step. The isotropic, fixed-magnitude noise is
what lets the iterates leave strict saddles in polynomially many steps (Ge et al.'s main theorem,
for strict-saddle functions).

Defaults: ``lr = 0.1``, ``noise = 0.1``. ``noise`` is in gradient units (the per-step displacement
is ``lr · noise``); 0.1 is about a tenth of a typical initial gradient norm of the small nets of
the studies, large enough to matter at a saddle (where ĝ → 0) and small next to the gradient
elsewhere. ``noise = 0`` is plain SGD. Each parameter group draws its own sphere.

Randomness: a private ``torch.Generator`` seeded from ``seed`` (never the global RNG).

Example:
    >>> w = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
    >>> opt = PerturbedSGD([w], lr=1.0, noise=0.5, seed=0)
    >>> w.grad = torch.zeros(3, dtype=torch.float64)  # at a critical point only noise moves w
    >>> _ = opt.step()
    >>> round(w.detach().norm().item(), 12)
    0.5
"""

from __future__ import annotations

import torch
from torch import Tensor

from landscape.optim.base import SeededOptimizer, check_positive


class PerturbedSGD(SeededOptimizer):
    """SGD plus noise drawn uniformly on a sphere of radius ``noise`` (see the module docs)."""

    def __init__(self, params, lr: float = 0.1, noise: float = 0.1, *, seed: int = 0):
        check_positive("lr", lr)
        check_positive("noise", noise, allow_zero=True)
        super().__init__(params, {"lr": lr, "noise": noise}, seed)

    @torch.no_grad()
    def step(self, closure=None) -> Tensor | None:
        loss = self._closure_loss(closure)
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            lr, radius = group["lr"], group["noise"]
            if radius > 0:
                xi = [self._randn_like(p) for p in params]
                norm = torch.sqrt(sum(x.double().pow(2).sum() for x in xi))
                scale = radius / float(norm)
            for i, p in enumerate(params):
                p.add_(p.grad, alpha=-lr)
                if radius > 0:
                    p.add_(xi[i], alpha=-lr * scale)
        return loss
