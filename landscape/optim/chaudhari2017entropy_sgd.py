"""Entropy-SGD, Chaudhari, Choromanska, Soatto, LeCun, Baldassi, Borgs, Chayes, Sagun & Zecchina
2017, "Entropy-SGD: biasing gradient descent into wide valleys" (ICLR; arXiv 1611.01838),
Algorithm 1, with the corrections listed in the project's flatness reference (§2.2).

Entropy-SGD descends the negative *local entropy* ``−F(x, γ)``,
``F(x, γ) = log ∫ exp(−(f(x′) + γ/2 ‖x − x′‖²) / T) dx′``, whose gradient is ``−γ (x − ⟨x′⟩)``,
the mean taken under the local Gibbs measure around x. One outer step at x:

1. ``x′ ← x``, ``μ ← x``.
2. L times (inner Langevin loop on ``f(x′) + γ/2 ‖x − x′‖²``):
   ``x′ ← x′ − η′ (∇f̂(x′) − γ (x − x′)) + sqrt(2 η′ T) ξ``,  ``ξ ~ N(0, I)``,  ``T = ε²``;
   ``μ ← (1 − α) μ + α x′``.
3. ``x ← x − η γ (x − μ)``, then ``t ← t + 1``, with the scope ``γ = γ0 (1 + γ1)^t``.

Corrections relative to the public PyTorch port (``ucla-vision/entropy-sgd``):

* the outer gradient **includes γ** (the port copies ``x − μ`` into ``.grad``);
* the scoping counter t **advances** once per outer step (the port never increments it, so γ
  never grows); ``gamma`` exposes the current scope;
* the noise is ``sqrt(2 η′ T)·ξ`` with an explicit temperature ``T = ε²`` (what the reference
  code's ``ε / sqrt(0.5 η′)`` gradient noise amounts to; the paper's ``sqrt(η′) ε`` is T = ε²/2);
* the averaging weight follows the paper: ``μ ← (1 − α) μ + α x′`` with α = 0.75 (the code keeps
  0.75 on the *old* μ, i.e. α = 0.25 in this convention — pass ``alpha=0.25`` to reproduce it).

Omitted: Nesterov momentum on the outer step and momentum / weight decay inside the loop (put an
L2 term in the loss instead). L = 0 (the reference's "plain SGD" setting) is not accepted — use
``sgd`` / ``momentum``.

Minibatches. ``step(closure)`` needs a closure that recomputes the minibatch loss at the
*current* parameters and back-propagates (as for ``torch.optim.LBFGS``; a
``landscape.optim.BatchClosure`` does that). It is called L times per outer step, with the
parameters holding x′; gradients are cleared before each call. Through ``train_step`` all L inner
steps see the same minibatch (the paper draws a fresh one per inner step; a custom closure may do
so). ``step`` returns the loss of the first call, i.e. at x before the update.

Defaults: ``inner_steps L = 20``, ``inner_lr η′ = 0.1``, ``noise ε = 1e-4`` (T = 1e-8: the inner
loop is then close to L proximal gradient steps plus averaging), ``alpha = 0.75``,
``gamma0 = 1e-4``, ``gamma1 = 1e-3``. ``lr`` (η) defaults to ``1/gamma0``: then η γ0 = 1 and the
first outer step moves x exactly to μ — the move the reference code made with its γ-free gradient
and η = 1. With γ included, η γ is the fraction of the way to μ; it grows as (1 + γ1)^t (×2.7
after 1,000 outer steps), so decay ``lr`` on a schedule for long runs. Cost: L gradient
evaluations per outer step.

Randomness: a private ``torch.Generator`` seeded from ``seed``; the generator state and t are in
``state_dict()``.

Example (noise off, L = 1: the step is x − η γ α η′ ∇f(x)):
    >>> w = torch.nn.Parameter(torch.tensor([1.0], dtype=torch.float64))
    >>> def closure():  # f(w) = 3 w
    ...     w.grad = torch.tensor([3.0], dtype=torch.float64)
    ...     return 3 * w.detach().sum()
    >>> opt = EntropySGD([w], lr=1.0, gamma0=0.5, inner_steps=1, inner_lr=0.1, noise=0.0)
    >>> _ = opt.step(closure)
    >>> round(w.item(), 12)  # 1 − 1 · 0.5 · 0.75 · 0.1 · 3
    0.8875
    >>> opt.gamma == 0.5 * 1.001
    True
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from landscape.optim.base import SeededOptimizer, check_positive


class EntropySGD(SeededOptimizer):
    """Entropy-SGD with an inner Langevin loop and γ scoping (see the module docs)."""

    def __init__(self, params, lr: float | None = None, *, gamma0: float = 1e-4,
                 gamma1: float = 1e-3, inner_steps: int = 20, inner_lr: float = 0.1,
                 noise: float = 1e-4, alpha: float = 0.75, seed: int = 0):
        check_positive("gamma0", gamma0)
        check_positive("gamma1", gamma1, allow_zero=True)
        lr = 1.0 / gamma0 if lr is None else check_positive("lr", lr)
        check_positive("inner_lr", inner_lr)
        check_positive("noise", noise, allow_zero=True)
        if not isinstance(inner_steps, int) or inner_steps < 1:
            raise ValueError(f"inner_steps must be an integer >= 1; got {inner_steps!r}")
        if not 0 < alpha <= 1:
            raise ValueError(f"alpha must be in (0, 1]; got {alpha}")
        defaults = {"lr": lr, "gamma0": gamma0, "gamma1": gamma1, "inner_steps": inner_steps,
                    "inner_lr": inner_lr, "noise": noise, "alpha": alpha}
        super().__init__(params, defaults, seed)
        if len(self.param_groups) != 1:
            raise ValueError("EntropySGD runs one inner loop over all parameters; pass one "
                             f"parameter group, not {len(self.param_groups)}")
        self.outer_steps = 0

    @property
    def gamma(self) -> float:
        """The scope used by the next step: ``γ0 (1 + γ1)^t``, t = outer steps taken."""
        group = self.param_groups[0]
        return group["gamma0"] * (1.0 + group["gamma1"]) ** self.outer_steps

    @property
    def temperature(self) -> float:
        """T = ε² of the inner Langevin loop."""
        return self.param_groups[0]["noise"] ** 2

    def _extra_state(self) -> dict:
        return {"outer_steps": self.outer_steps}

    def _load_extra_state(self, extra: dict) -> None:
        self.outer_steps = int(extra.get("outer_steps", 0))

    @torch.no_grad()
    def step(self, closure=None) -> Tensor:
        if closure is None:
            raise TypeError("EntropySGD.step needs a closure that recomputes the minibatch loss "
                            "and its gradient (e.g. landscape.optim.BatchClosure)")
        group = self.param_groups[0]
        params = list(group["params"])
        gamma, inner_lr, alpha = self.gamma, group["inner_lr"], group["alpha"]
        std = math.sqrt(2.0 * inner_lr * self.temperature)
        x = [p.detach().clone() for p in params]  # the parameters hold x′ during the loop
        mu = [p.detach().clone() for p in params]
        first_loss = None
        for _ in range(group["inner_steps"]):
            self.zero_grad(set_to_none=True)
            with torch.enable_grad():
                loss = closure()
            if first_loss is None:
                first_loss = loss
            for p, x0, m in zip(params, x, mu):
                # gradient of f(x′) + γ/2 ‖x − x′‖² in x′: ∇f(x′) − γ (x − x′)
                d = torch.zeros_like(p) if p.grad is None else p.grad.clone()
                d.add_(x0 - p, alpha=-gamma)
                p.add_(d, alpha=-inner_lr)
                if std > 0:
                    p.add_(self._randn_like(p), alpha=std)
                m.mul_(1.0 - alpha).add_(p, alpha=alpha)
        step = group["lr"] * gamma
        for p, x0, m in zip(params, x, mu):
            p.copy_(x0 - step * (x0 - m))
        self.zero_grad(set_to_none=True)  # the gradients were taken at x′, not at the new x
        self.outer_steps += 1
        return first_loss
