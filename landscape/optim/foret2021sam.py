"""Sharpness-aware minimisation (SAM), Foret, Kleiner, Mobahi & Neyshabur 2021,
"Sharpness-Aware Minimization for Efficiently Improving Generalization" (ICLR; arXiv
2010.01412), and its adaptive form ASAM, Kwon, Kim, Park & Choi 2021, "ASAM: Adaptive
Sharpness-Aware Minimization for Scale-Invariant Learning of Deep Neural Networks" (ICML; arXiv
2102.11600).

Update rule. SAM minimises ``max_{‖ε‖ ≤ ρ} L(θ + ε)``; the inner maximum is taken to first order,
one normalised gradient-ascent step, and the outer step is SGD with the gradient there:

    ε = ρ g / ‖g‖,    g = ∇L(θ);        θ ← θ − lr · ∇L(θ + ε)

(with heavy-ball ``momentum`` μ > 0 the last step is torch's SGD momentum, ``b ← μ b + ∇L(θ + ε)``,
``θ ← θ − lr · b``). ASAM (``adaptive=True``) makes the neighbourhood scale-invariant by measuring
it through the normalisation operator T_θ, ``‖T_θ⁻¹ ε‖ ≤ ρ``, whose first-order maximiser is

    ε = ρ T² g / ‖T g‖,    T = |w| + η elementwise on weights,  T = 1 on biases,

the element-wise operator with the offset η of the paper's experiments. Weights are the
parameters with two or more dimensions (linear and convolution kernels), biases the others —
the authors' released code selects parameters by the name ``weight`` instead, so it also
rescales 1-D normalisation-layer weights, which this class treats as biases. Norms run over all
parameters jointly. ``last_ascent_norm`` is the size of the last ascent step in its own metric, ‖ε‖ for
SAM and ‖T⁻¹ε‖ for ASAM — ρ, or 0 where the gradient vanishes (then ε = 0).

Defaults: ``lr`` 0.1, ``momentum`` 0; SAM ``rho`` 0.05 (the radius the SAM paper uses most), ASAM
``rho`` 0.5 and ``eta`` 0.01 (the ASAM paper's CIFAR settings; ASAM's ρ is in relative units, so
it is larger). ``rho = 0`` is plain SGD (with two gradient evaluations).

Minibatches. ``step(closure)`` needs a closure that recomputes the minibatch loss and its
gradient at the current parameters (``landscape.optim.BatchClosure`` does): it is called at θ,
then at θ + ε; the parameters are then restored exactly and take the step, and the gradients
(taken at θ + ε) are cleared. Through ``train_step`` both calls see the same minibatch, as in the
paper. With the model in training mode, both calls use it: dropout draws two masks and BatchNorm
updates its running statistics twice per step. ``step`` returns the loss of the first call, at θ.

Fair-comparison note: two gradient evaluations per step, against one for SGD.

Example (f(w) = ½‖w‖²: g = w, so ε = ρ w/‖w‖ and the step is w − lr (w + ε)):
    >>> w = torch.nn.Parameter(torch.tensor([3.0, 4.0], dtype=torch.float64))
    >>> def closure():
    ...     w.grad = w.detach().clone()
    ...     return 0.5 * (w.detach() ** 2).sum()
    >>> opt = SAM([w], lr=0.1, rho=0.5)
    >>> _ = opt.step(closure)
    >>> [round(v, 12) for v in w.tolist()], opt.last_ascent_norm
    ([2.67, 3.56], 0.5)
"""

from __future__ import annotations

import torch
from torch import Tensor

from landscape.optim.base import check_positive


class SAM(torch.optim.Optimizer):
    """SAM, or ASAM with ``adaptive=True``, over SGD with optional momentum (see the module docs)."""

    def __init__(self, params, lr: float = 0.1, rho: float = 0.05, momentum: float = 0.0, *,
                 adaptive: bool = False, eta: float = 0.01):
        check_positive("lr", lr)
        check_positive("rho", rho, allow_zero=True)
        check_positive("eta", eta)  # keeps T invertible at w = 0
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1); got {momentum}")
        defaults = {"lr": lr, "rho": rho, "momentum": momentum, "adaptive": bool(adaptive),
                    "eta": eta}
        super().__init__(params, defaults)
        if len(self.param_groups) != 1:
            raise ValueError("SAM's ascent step is one ball over all parameters; pass one "
                             f"parameter group, not {len(self.param_groups)}")
        self.last_ascent_norm: float | None = None

    def _scales(self, params: list[Tensor]) -> list[Tensor | float]:
        """The diagonal of T per parameter: ``|w| + η`` on ASAM's weights, else 1."""
        group = self.param_groups[0]
        return [p.abs() + group["eta"] if group["adaptive"] and p.ndim >= 2 else 1.0
                for p in params]

    @staticmethod
    def _grads(params: list[Tensor]) -> list[Tensor]:
        return [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in params]

    @torch.no_grad()
    def step(self, closure=None) -> Tensor:
        if closure is None:
            raise TypeError("SAM.step needs a closure that recomputes the minibatch loss and its "
                            "gradient (e.g. landscape.optim.BatchClosure)")
        group = self.param_groups[0]
        params = list(group["params"])
        with torch.enable_grad():
            loss = closure()
        scales = self._scales(params)
        scaled = [t * g for t, g in zip(scales, self._grads(params))]  # T g
        norm = torch.sqrt(sum((s * s).sum() for s in scaled))
        factor = group["rho"] / norm if norm > 0 else 0.0
        eps = [factor * t * s for t, s in zip(scales, scaled)]  # ρ T² g / ‖T g‖
        self.last_ascent_norm = float(torch.sqrt(sum(((e / t) ** 2).sum()
                                                     for e, t in zip(eps, scales))))
        theta = [p.detach().clone() for p in params]
        for p, e in zip(params, eps):
            p.add_(e)
        with torch.enable_grad():
            closure()
        for p, t0, d in zip(params, theta, self._grads(params)):
            p.copy_(t0)
            if group["momentum"] > 0:
                buf = self.state[p].setdefault("momentum_buffer", torch.zeros_like(p))
                d = buf.mul_(group["momentum"]).add_(d)
            p.add_(d, alpha=-group["lr"])
        self.zero_grad(set_to_none=True)  # the gradients were taken at θ + ε
        return loss
