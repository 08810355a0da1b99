"""Stochastic gradient Langevin dynamics (SGLD), Welling & Teh 2011, "Bayesian learning via
stochastic gradient Langevin dynamics" (ICML).

Update rule, in learning-rate form for a *mean* minibatch loss L̂ with an explicit temperature T:

    θ ← θ − lr · ∇L̂(θ) + sqrt(2 · lr · T) · ξ,    ξ ~ N(0, I).

For small lr the iterates sample ``p(θ) ∝ exp(−L(θ) / T)`` (the Euler–Maruyama discretisation of
the Langevin diffusion; no Metropolis correction, so the stationary law carries an O(lr) bias:
on ½x² the variance is ``T / (1 − lr/2)``). With L the mean negative log-likelihood over N
samples, **T = 1/N gives the Bayesian posterior** of Welling & Teh (their ``ε_t/2 · N ∇L``
parametrisation with ``ε_t = 2·lr/N``, prior folded into L). T = 0 is plain SGD, bit for bit.

Defaults: ``lr = 0.1``, ``temperature = 1e-4`` (a mild exploration noise; set T = 1/N for
posterior sampling). Welling & Teh decay the step as ``a (b + t)^(−γ)``, γ ∈ (0.5, 1]; use a
``torch.optim.lr_scheduler`` for that — the noise follows ``lr`` at every step.

Randomness: a private ``torch.Generator`` seeded from ``seed`` (never the global RNG).

Example:
    >>> w = torch.nn.Parameter(torch.ones(2, dtype=torch.float64))
    >>> opt = SGLD([w], lr=0.1, temperature=0.0)  # T = 0: exactly SGD
    >>> w.grad = torch.ones(2, dtype=torch.float64)
    >>> _ = opt.step()
    >>> w.detach().tolist()
    [0.9, 0.9]
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from landscape.optim.base import SeededOptimizer, check_positive


class SGLD(SeededOptimizer):
    """SGD plus Gaussian noise of variance ``2 · lr · temperature`` (see the module docs)."""

    def __init__(self, params, lr: float = 0.1, temperature: float = 1e-4, *, seed: int = 0):
        check_positive("lr", lr)
        check_positive("temperature", temperature, allow_zero=True)
        super().__init__(params, {"lr": lr, "temperature": temperature}, seed)

    @torch.no_grad()
    def step(self, closure=None) -> Tensor | None:
        loss = self._closure_loss(closure)
        for group in self.param_groups:
            lr = group["lr"]
            std = math.sqrt(2.0 * lr * group["temperature"])
            for p in group["params"]:
                if p.grad is None:
                    continue
                p.add_(p.grad, alpha=-lr)
                if std > 0:
                    p.add_(self._randn_like(p), alpha=std)
        return loss
