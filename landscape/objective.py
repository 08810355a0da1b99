"""The Objective: a model + loss + fixed dataset seen as a function of one flat θ.

Owns: the flat-parameter view of a model, the full-batch mean loss over a fixed evaluation set,
its gradient, batched Hessian-vector and generalised-Gauss-Newton-vector products (also as
``SymmetricOperator``s, ``hessian_op`` / ``ggn_op``) with the choice of how HVPs are taken
(``hvp_mode``: timed per model, or pinned), the dense Hessian and GGN in blocks sized from free
memory, and the memory check that refuses dense requests which cannot fit. Imports nothing from
storage, tracking or plotting.

Conventions
-----------
* θ is one flat vector of shape ``[n]`` in ``parameters_to_vector(model.parameters())`` order,
  restricted to parameters with ``requires_grad=True`` (the others are held fixed and listed in
  ``obj.fixed_names``).
* The loss is ``L(θ) = Σ_b (N_b / N) · loss_fn(f(x_b; θ), y_b)`` where ``loss_fn`` returns the mean
  over a chunk of ``N_b`` samples, so the value never depends on how the data are chunked.
  An optional L2 term ``(l2 / 2) ‖θ‖²`` is added (cross-entropy on separable data has no finite
  critical points without it).
* The generalised Gauss-Newton matrix (GGN) of that loss is
  ``G(θ) = Σ_b (N_b / N) · J_bᵀ H_b J_b + l2 · I``, with ``J_b`` the Jacobian of the chunk's model
  outputs in θ and ``H_b`` the Hessian of ``loss_fn`` in those outputs: the Hessian without the
  second derivatives of the model. It is positive semi-definite when ``loss_fn`` is convex in the
  outputs; for cross-entropy on logits it is the Fisher information of the model's predictive
  distribution, for squared error that of a Gaussian likelihood (up to its variance).
* The user's module is never mutated: the Objective works on a private deep copy, moved to
  ``device`` / ``dtype`` and put in ``eval()`` mode (dropout off, BatchNorm on its running
  statistics), and evaluates it with ``torch.func.functional_call``. BatchNorm in training mode is
  not supported (its batch statistics would make L depend on the chunking and break ``vmap``).
"""

from __future__ import annotations

import copy
import math
import os
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, jvp, vjp, vmap

from landscape.linalg.operator import SymmetricOperator

LossFn = Callable[[Tensor, Tensor], Tensor]
HVP_MODES = ("auto", "retained", "fwd-rev", "rev-rev")
CALIBRATION_BLOCK = 32  # vectors timed per candidate mode when hvp_mode="auto" chooses for blocks
RETAINED_MEMORY_SHARE = 0.5  # the retained graph may take at most this share of free memory
DENSE_BLOCK_CAP = {"cpu": 256, "cuda": 2048}  # identity rows per dense-build block, at most
DENSE_MEMORY_SHARE = 0.25  # one dense-build block may take at most this share of free memory


class NonFiniteLossError(FloatingPointError):
    """The loss (or its gradient) is NaN or infinite at the requested θ."""


class DenseTooLargeError(MemoryError):
    """A dense request (Hessian, full spectrum) would not fit in the device's memory."""


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"auto"`` / None → CUDA when present, else CPU; anything else is passed to torch."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def available_memory(device: torch.device) -> int:
    """Bytes currently free on ``device`` (CUDA: ``mem_get_info``; CPU: available RAM)."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):  # non-Linux: no cheap answer, do not refuse
        return 2**62


def check_dense_fits(n: int, dtype: torch.dtype, device: torch.device, *, copies: float,
                     what: str) -> None:
    """Refuse before running when ``copies`` dense ``[n, n]`` matrices do not fit on ``device``.

    ``copies`` counts the n×n buffers the request holds at once (e.g. 1 for the Hessian, 3 for
    Hessian + eigenvectors + LAPACK workspace).
    """
    need = copies * n * n * torch.empty((), dtype=dtype).element_size()
    have = available_memory(device)
    if need > have:
        raise DenseTooLargeError(
            f"{what} for n={n:,} parameters needs about {need / 2**30:.2f} GiB in {dtype} but only "
            f"{have / 2**30:.2f} GiB is free on {device}. Use the matrix-free estimators instead: "
            "landscape.spectrum.extreme_eigenpairs, estimate_trace or spectral_density."
        )


@dataclass(frozen=True)
class _Chunk:
    inputs: Tensor
    targets: Tensor
    weight: float  # N_b / N


def _as_batches(data) -> list[tuple[Tensor, Tensor]]:
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(
        isinstance(t, Tensor) for t in data
    ):
        return [(data[0], data[1])]
    if isinstance(data, Iterable):
        batches = []
        for i, batch in enumerate(data):
            if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
                raise TypeError(f"batch {i} must be an (inputs, targets) pair; got {type(batch)}")
            batches.append((batch[0], batch[1]))
        return batches
    raise TypeError(
        "data must be an (inputs, targets) pair of tensors or an iterable of such batches; "
        f"got {type(data).__name__}"
    )


class Objective:
    """Full-batch mean loss of ``model`` on fixed data as a function of flat parameters θ.

    Args:
        model: the network; a private copy is made, the argument is never changed.
        loss_fn: ``loss_fn(outputs, targets)`` → scalar mean over the batch.
        data: ``(inputs, targets)`` tensors, or an iterable of such batches (consumed once).
        dtype: floating dtype of θ, inputs and all computations (default float64).
        device: ``"cpu"``, ``"cuda"``, ``"auto"`` (CUDA when present) or a torch.device.
        chunk_size: samples per forward pass (bounds memory); None keeps the given batches.
        l2: coefficient of the added ``(l2 / 2) ‖θ‖²`` term.
        hvp_mode: how Hessian-vector products are taken; all give the same numbers up to
            rounding. ``"fwd-rev"``: forward-over-reverse (``jvp`` of ``grad``), vmapped over the
            vectors; ``"rev-rev"``: reverse-over-reverse (``vjp`` of ``grad``), vmapped;
            ``"retained"``: the first-order graph of ∇L at θ is built once (``create_graph``)
            and kept while θ stays the same, each product is one batched backward pass through
            it (``is_grads_batched``) — no forward pass per product, the fastest for the many
            products Lanczos, MINRES or a trace estimator take at one θ, at the memory of that
            graph (refused above ``RETAINED_MEMORY_SHARE`` of the free memory); ``"auto"``
            (default): on the first single-vector and the first block product, time each mode on
            that input and keep the fastest for that kind — the choice and the timings are in
            ``hvp_plan`` / ``hvp_timings`` (pin ``hvp_mode`` for bit-identical reruns). A loss
            whose forward-mode derivative torch cannot take (``nn.functional.mse_loss`` in torch
            2.13) switches ``"fwd-rev"`` to ``"rev-rev"`` with a warning.

    Example:
        >>> net = nn.Sequential(nn.Linear(3, 2))
        >>> obj = Objective(net, nn.functional.cross_entropy,
        ...                 (torch.randn(10, 3), torch.randint(0, 2, (10,))))
        >>> obj.hessian(obj.theta).shape
        torch.Size([8, 8])
    """

    def __init__(self, model: nn.Module, loss_fn: LossFn, data, *,
                 dtype: torch.dtype = torch.float64, device: str | torch.device | None = "cpu",
                 chunk_size: int | None = None, l2: float = 0.0, hvp_mode: str = "auto"):
        if not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating type; got {dtype}")
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive integer; got {chunk_size}")
        if l2 < 0:
            raise ValueError(f"l2 must be non-negative; got {l2}")
        if hvp_mode not in HVP_MODES:
            raise ValueError(f"hvp_mode must be one of {HVP_MODES}; got {hvp_mode!r}")
        self.device = resolve_device(device)
        self.dtype = dtype
        self.loss_fn = loss_fn
        self.l2 = float(l2)
        self.hvp_mode = hvp_mode
        self.hvp_plan: dict[str, str] = {}  # "single" / "block" → the mode in use for that kind
        self.hvp_timings: dict[str, dict[str, float]] = {}  # kind → mode → s per vector (auto)
        self._graph: _RetainedGraph | None = None
        self._activation_bytes: int | None = None

        self._module = copy.deepcopy(model).to(device=self.device, dtype=dtype).eval()
        named = list(self._module.named_parameters())
        self.param_names = tuple(name for name, p in named if p.requires_grad)
        if not self.param_names:
            raise ValueError("model has no parameters with requires_grad=True")
        self.fixed_names = tuple(name for name, p in named if not p.requires_grad)
        self._shapes = tuple(p.shape for name, p in named if p.requires_grad)
        self._numels = tuple(math.prod(s) for s in self._shapes)
        self._fixed = {name: p.detach() for name, p in named if not p.requires_grad}
        self._fixed.update({name: b for name, b in self._module.named_buffers()})
        self.num_params = sum(self._numels)
        self.theta = torch.cat(
            [p.detach().reshape(-1) for _, p in named if p.requires_grad]
        ).clone()

        self._chunks = self._make_chunks(_as_batches(data), chunk_size)
        self.num_samples = sum(c.targets.shape[0] for c in self._chunks)
        self.chunk_size = chunk_size

    # ------------------------------------------------------------------ construction helpers
    def _make_chunks(self, batches, chunk_size) -> list[_Chunk]:
        pieces = []
        for i, (x, y) in enumerate(batches):
            if x.shape[0] != y.shape[0]:
                raise ValueError(
                    f"batch {i}: inputs have {x.shape[0]} samples but targets {y.shape[0]}"
                )
            if x.shape[0] == 0:
                continue
            x = x.to(self.device, self.dtype if x.is_floating_point() else x.dtype)
            y = y.to(self.device, self.dtype if y.is_floating_point() else y.dtype)
            pieces.append((x, y))
        if not pieces:
            raise ValueError("data are empty: the objective needs at least one sample")
        if chunk_size is not None:
            x = torch.cat([p[0] for p in pieces])
            y = torch.cat([p[1] for p in pieces])
            pieces = list(zip(x.split(chunk_size), y.split(chunk_size)))
        total = sum(p[1].shape[0] for p in pieces)
        return [_Chunk(x, y, y.shape[0] / total) for x, y in pieces]

    # ------------------------------------------------------------------ θ handling
    def check_theta(self, theta: Tensor) -> Tensor:
        """``theta`` on the objective's device and dtype, if it is a tensor of shape ``[n]``."""
        if not isinstance(theta, Tensor):
            raise TypeError(f"theta must be a tensor; got {type(theta).__name__}")
        if theta.shape != (self.num_params,):
            raise ValueError(
                f"theta must have shape ({self.num_params},); got {tuple(theta.shape)}"
            )
        return theta.to(self.device, self.dtype)

    def _check_vectors(self, vectors: Tensor) -> Tensor:
        if vectors.ndim not in (1, 2) or vectors.shape[-1] != self.num_params:
            raise ValueError(
                f"V must have shape [n] or [k, n] with n={self.num_params}; "
                f"got {tuple(vectors.shape)}"
            )
        return vectors.to(self.device, self.dtype)

    def unflatten(self, theta: Tensor) -> dict[str, Tensor]:
        """θ ``[n]`` → {parameter name: view with the parameter's shape}."""
        parts = theta.split(self._numels)
        return {name: part.view(shape)
                for name, part, shape in zip(self.param_names, parts, self._shapes)}

    # ------------------------------------------------------------------ per-chunk pieces
    def _outputs(self, theta: Tensor, inputs: Tensor) -> Tensor:
        return functional_call(self._module, (self.unflatten(theta), self._fixed), (inputs,))

    def _chunk_loss(self, theta: Tensor, inputs: Tensor, targets: Tensor) -> Tensor:
        loss = self.loss_fn(self._outputs(theta, inputs), targets)
        if not isinstance(loss, Tensor) or loss.ndim != 0:
            shape = tuple(loss.shape) if isinstance(loss, Tensor) else type(loss).__name__
            raise ValueError(
                "loss_fn must return a scalar (the mean over the batch); got shape "
                f"{shape}. Use reduction='mean'."
            )
        return loss

    def _penalty(self, theta: Tensor) -> Tensor:
        return 0.5 * self.l2 * theta.dot(theta)

    def _chunk_ggn_vp(self, theta: Tensor, chunk: _Chunk, vectors: Tensor) -> Tensor:
        """``J_bᵀ H_b J_b v`` for every row v: J v by forward mode, H_b by reverse-over-reverse
        on the loss as a function of the outputs, Jᵀ by the outputs' pullback."""
        def outputs(t):
            return self._outputs(t, chunk.inputs)

        out, pullback = vjp(outputs, theta)
        _, loss_hvp = vjp(grad(lambda o: self.loss_fn(o, chunk.targets)), out)

        def one(v):
            return pullback(loss_hvp(jvp(outputs, (theta,), (v,))[1])[0])[0]
        if vectors.shape[0] == 1:
            return one(vectors[0]).unsqueeze(0)
        return vmap(one)(vectors)

    def _chunk_hvp(self, mode: str, theta: Tensor, chunk: _Chunk, vectors: Tensor) -> Tensor:
        grad_fn = grad(self._chunk_loss)
        args = (chunk.inputs, chunk.targets)
        if mode == "fwd-rev":
            def one(v):
                return jvp(lambda t: grad_fn(t, *args), (theta,), (v,))[1]
        else:
            _, pullback = vjp(lambda t: grad_fn(t, *args), theta)

            def one(v):
                return pullback(v)[0]
        if vectors.shape[0] == 1:  # vmap's tracing overhead dominates for a single vector
            return one(vectors[0]).unsqueeze(0)
        return vmap(one)(vectors)

    def _retained_graph(self, theta: Tensor) -> _RetainedGraph:
        """The retained first-order graph at θ, built unless the one held is at the same θ."""
        if self._graph is None or not torch.equal(self._graph.theta, theta):
            self._graph = None  # free the old graph before building the new one
            self._graph = _RetainedGraph(self, theta, RETAINED_MEMORY_SHARE
                                         * available_memory(self.device))
        return self._graph

    def _hvp_with(self, mode: str, theta: Tensor, batch: Tensor) -> Tensor:
        """``H(θ) V`` for ``V [k, n]`` by one mode (not ``"auto"``), detached."""
        if mode == "retained":
            return self.l2 * batch + self._retained_graph(theta).product(batch)
        return self._curvature_sum(lambda t, c, V: self._chunk_hvp(mode, t, c, V), theta, batch)

    def _hvp_mode_for(self, theta: Tensor, batch: Tensor) -> str:
        """The mode for this product: ``hvp_mode``, or under ``"auto"`` the mode measured
        fastest for this kind of product (one vector or a block), timed on first use."""
        kind = "single" if batch.shape[0] == 1 else "block"
        if self.hvp_mode != "auto":
            self.hvp_plan[kind] = self.hvp_mode
            return self.hvp_mode
        if kind not in self.hvp_plan:
            sample = batch[:CALIBRATION_BLOCK]
            timings, errors = {}, {}
            for mode in HVP_MODES[1:]:
                try:
                    if mode == "retained":
                        self._retained_graph(theta)  # built once per θ: not part of the timing
                    timings[mode] = _fastest_call(lambda m=mode: self._hvp_with(m, theta, sample))
                    timings[mode] /= sample.shape[0]
                except (RuntimeError, MemoryError) as exc:  # e.g. mse_loss in forward mode
                    errors[mode] = exc
            if not timings:
                raise next(iter(errors.values()))
            self.hvp_plan[kind] = min(timings, key=timings.get)
            self.hvp_timings[kind] = timings
            if self.hvp_plan.get("single", "retained") != "retained" and self.hvp_plan.get(
                    "block", "retained") != "retained":
                self._graph = None  # neither kind uses it
        return self.hvp_plan[kind]

    # ------------------------------------------------------------------ public surface
    def functional_loss(self, theta: Tensor) -> Tensor:
        """L(θ) as a pure differentiable function, for ``torch.func`` transforms and autograd.

        No input checks and no finiteness check (they would break tracing); prefer ``loss`` for
        values and ``grad`` / ``hvp`` / ``hessian`` for derivatives.
        """
        total = self._penalty(theta)
        for c in self._chunks:
            total = total + c.weight * self._chunk_loss(theta, c.inputs, c.targets)
        return total

    def loss(self, theta: Tensor) -> Tensor:
        """Full-batch mean loss (plus the L2 term) at θ; a 0-d tensor.

        Differentiable: under ``torch.func`` transforms (``grad``, ``hessian``, ``vmap``, …) and
        with autograd (θ with ``requires_grad``) it is ``functional_loss``; the finiteness check
        runs outside transforms only.
        """
        theta = self.check_theta(theta)
        total = self.functional_loss(theta)
        if not _transformed(theta):
            _check_finite(total, "loss")
        return total

    def loss_and_grad(self, theta: Tensor) -> tuple[Tensor, Tensor]:
        """(L(θ), ∇L(θ)) with ∇L of shape ``[n]``, from one forward+backward per chunk.

        Eager results are detached. Under a ``torch.func`` transform both are computed by
        ``torch.func.grad_and_value(functional_loss)`` and stay differentiable (e.g.
        ``torch.func.jacrev(obj.grad)`` is the Hessian).
        """
        theta = self.check_theta(theta)
        if _transformed(theta):
            g, value = torch.func.grad_and_value(self.functional_loss)(theta)
            return value, g
        value_and_grad = torch.func.grad_and_value(self._chunk_loss)
        total_loss = self._penalty(theta)
        total_grad = self.l2 * theta
        for c in self._chunks:
            g, value = value_and_grad(theta, c.inputs, c.targets)
            total_loss = total_loss + c.weight * value
            total_grad = total_grad + c.weight * g
        _check_finite(total_loss, "loss")
        _check_finite(total_grad, "gradient")
        return total_loss.detach(), total_grad.detach()

    def grad(self, theta: Tensor) -> Tensor:
        """∇L(θ), shape ``[n]``."""
        return self.loss_and_grad(theta)[1]

    def hvp(self, theta: Tensor, vectors: Tensor) -> Tensor:
        """Hessian-vector products H(θ)·v for ``vectors`` of shape ``[n]`` or ``[k, n]``.

        All k vectors go through one vmapped pass per data chunk, or one batched backward pass
        through the retained graph (``hvp_mode``); the output has the input's shape.
        Under a ``torch.func`` transform of θ or V the product is taken through
        ``functional_loss`` (forward-over-reverse) and stays differentiable.
        """
        theta = self.check_theta(theta)
        vectors = self._check_vectors(vectors)
        if _transformed(theta) or _transformed(vectors):
            grad_fn = grad(self.functional_loss)

            def one(v):
                return jvp(grad_fn, (theta,), (v,))[1]
            return one(vectors) if vectors.ndim == 1 else vmap(one)(vectors)
        batch = vectors if vectors.ndim == 2 else vectors.unsqueeze(0)
        mode = self._hvp_mode_for(theta, batch)
        try:
            out = self._hvp_with(mode, theta, batch)
        except RuntimeError as exc:  # torch's forward-mode formula of mse_loss (torch 2.13)
            if mode != "fwd-rev" or "ZeroTensors are immutable" not in str(exc):
                raise
            warnings.warn("forward-over-reverse HVPs fail for this loss function in this torch "
                          "version (e.g. nn.functional.mse_loss); using hvp_mode='rev-rev'",
                          RuntimeWarning, stacklevel=2)
            self.hvp_mode = "rev-rev"
            out = self._hvp_with(self._hvp_mode_for(theta, batch), theta, batch)
        _check_finite(out, "Hessian-vector product")
        return out if vectors.ndim == 2 else out.squeeze(0)

    def ggn_vp(self, theta: Tensor, vectors: Tensor) -> Tensor:
        """GGN-vector products G(θ)·v (see the module docs) for ``vectors`` ``[n]`` or ``[k, n]``.

        Per data chunk: one forward pass for the outputs and their pullback, then for all k
        vectors at once (vmapped) a Jacobian-vector product through the model, the loss's Hessian
        in the outputs and the pullback; weighted by chunk size, plus ``l2 · v``. The output has
        the input's shape. Not differentiable (refused under ``torch.func`` transforms).
        """
        theta = self.check_theta(theta)
        vectors = self._check_vectors(vectors)
        for value in (theta, vectors):
            _refuse_transform(value, "ggn_vp", "torch.func.jvp / vjp of the model outputs")
        batch = vectors if vectors.ndim == 2 else vectors.unsqueeze(0)
        out = self._curvature_sum(self._chunk_ggn_vp, theta, batch)
        _check_finite(out, "GGN-vector product")
        return out if vectors.ndim == 2 else out.squeeze(0)

    def _curvature_sum(self, chunk_product, theta: Tensor, batch: Tensor) -> Tensor:
        """``l2 · V + Σ_b (N_b / N) · chunk_product(θ, chunk_b, V)`` for ``V [k, n]``."""
        out = self.l2 * batch
        for c in self._chunks:
            out = out + c.weight * chunk_product(theta, c, batch)
        return out.detach()

    def _operator(self, product, theta: Tensor) -> SymmetricOperator:
        theta = self.check_theta(theta).clone()
        return SymmetricOperator(lambda V: product(theta, V), self.num_params, dtype=self.dtype,
                                 device=self.device, block_size=self.dense_block_size)

    def dense_block_size(self) -> int:
        """Identity rows per product in dense builds (``op.dense()``): as many as fit in
        ``DENSE_MEMORY_SHARE`` of the free memory, counting per vector four times the
        activations one chunk's forward pass saves (the tangents or cotangents of a
        second-order pass) and three rows of n; capped at ``DENSE_BLOCK_CAP`` for the device
        type (on the CPU the time per vector stops falling near 256) and at n."""
        if self._activation_bytes is None:
            chunk = max(self._chunks, key=lambda c: c.targets.shape[0])
            saved = _SavedBytes()
            with torch.enable_grad(), saved:
                self._chunk_loss(self.theta.clone().requires_grad_(True), chunk.inputs,
                                 chunk.targets)
            self._activation_bytes = saved.nbytes
        row = self.num_params * self.theta.element_size()
        fit = DENSE_MEMORY_SHARE * available_memory(self.device) / (4 * self._activation_bytes
                                                                   + 3 * row)
        cap = DENSE_BLOCK_CAP.get(self.device.type, DENSE_BLOCK_CAP["cpu"])
        return max(1, min(self.num_params, cap, int(fit)))

    def hessian_op(self, theta: Tensor) -> SymmetricOperator:
        """H(θ) as a ``SymmetricOperator``: its ``matmat`` is the batched ``hvp`` at (a copy of)
        θ, its ``n_matvecs`` counts the HVPs; ``op.dense()`` builds the matrix as ``hessian``
        does (without the memory check)."""
        return self._operator(self.hvp, theta)

    def ggn_op(self, theta: Tensor) -> SymmetricOperator:
        """G(θ) as a ``SymmetricOperator`` over ``ggn_vp`` at (a copy of) θ, like
        ``hessian_op``; ``op.dense()`` builds the matrix as ``ggn`` does (without the memory
        check)."""
        return self._operator(self.ggn_vp, theta)

    def hessian(self, theta: Tensor, *, block_size: int | None = None) -> Tensor:
        """Dense Hessian ``[n, n]`` built from blocks of ``block_size`` identity columns.

        Peak memory is the n×n result plus one block of HVPs, whose activations scale with
        ``block_size × chunk_size`` (default: ``dense_block_size()``, sized from the free
        memory; lower either to save memory).
        The result is symmetrised, ``(H + Hᵀ)/2``, which removes rounding asymmetry only.
        Not for use under ``torch.func`` transforms (use ``torch.func.hessian(obj.loss)``).
        """
        theta = self.check_theta(theta)
        _refuse_transform(theta, "hessian", "torch.func.hessian(obj.loss)")
        check_dense_fits(self.num_params, self.dtype, self.device, copies=1.25,
                         what="A dense Hessian")
        return self.hessian_op(theta).dense(block_size)

    def ggn(self, theta: Tensor, *, block_size: int | None = None) -> Tensor:
        """Dense GGN ``[n, n]``, built and memory-checked as ``hessian`` is (n GGN-vector
        products in blocks of ``block_size``; symmetrised)."""
        theta = self.check_theta(theta)
        check_dense_fits(self.num_params, self.dtype, self.device, copies=1.25,
                         what="A dense GGN")
        return self.ggn_op(theta).dense(block_size)

    def outputs(self, theta: Tensor) -> list[Tensor]:
        """Model outputs per chunk at θ (no gradient), in data order."""
        theta = self.check_theta(theta)
        _refuse_transform(theta, "outputs / error", "obj.functional_loss")
        with torch.no_grad():
            return [self._outputs(theta, c.inputs) for c in self._chunks]

    def error(self, theta: Tensor) -> float:
        """Classification error rate at θ: fraction of samples whose argmax output ≠ label.

        Needs integer class-label targets and outputs of shape ``[N_b, n_classes]``.
        """
        wrong = 0
        for c, out in zip(self._chunks, self.outputs(theta)):
            if c.targets.is_floating_point() or out.ndim != 2:
                raise ValueError(
                    "error() needs integer class labels and [batch, classes] outputs; got "
                    f"targets of dtype {c.targets.dtype} and outputs of shape {tuple(out.shape)}"
                )
            wrong += int((out.argmax(dim=1) != c.targets).sum())
        return wrong / self.num_samples

    def release(self) -> None:
        """Drop the retained first-order graph (``hvp_mode="retained"``) and its memory now;
        the next product at any θ rebuilds it."""
        self._graph = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_graph": None}  # a graph is neither picklable nor copyable

    def __repr__(self) -> str:
        return (f"Objective(n={self.num_params:,}, samples={self.num_samples}, "
                f"chunks={len(self._chunks)}, dtype={self.dtype}, device={self.device}, "
                f"l2={self.l2}, hvp_mode={self.hvp_mode!r})")


class _RetainedGraph:
    """The first-order graph of ∇L at one θ (every chunk's ``create_graph`` gradient, summed),
    kept for many double-backward products. Refuses, while building, to hold more than
    ``budget`` bytes of saved activations (counted by a saved-tensors hook)."""

    def __init__(self, obj: Objective, theta: Tensor, budget: float):
        self.theta = theta.detach().clone()
        self.leaf = self.theta.clone().requires_grad_(True)
        saved = _SavedBytes()
        total = torch.zeros_like(self.theta)
        with torch.enable_grad(), saved:
            for c in obj._chunks:
                loss = c.weight * obj._chunk_loss(self.leaf, c.inputs, c.targets)
                (g,) = torch.autograd.grad(loss, self.leaf, create_graph=True)
                total = total + g
                if saved.nbytes > budget:
                    raise MemoryError(
                        f"the retained first-order graph needs more than {budget / 2**30:.2f} "
                        f"GiB ({RETAINED_MEMORY_SHARE:.0%} of the free memory); use "
                        "hvp_mode='fwd-rev' / 'rev-rev', or fewer samples")
        self.grad = total
        self.nbytes = saved.nbytes

    def product(self, batch: Tensor) -> Tensor:
        """``Σ_b (N_b/N) H_b V`` for ``V [k, n]``: one (batched) backward pass, graph kept."""
        if not self.grad.requires_grad:  # ∇L does not depend on θ: the loss is linear in θ
            return torch.zeros_like(batch)
        single = batch.shape[0] == 1
        (out,) = torch.autograd.grad(self.grad, self.leaf, batch[0] if single else batch,
                                     retain_graph=True, is_grads_batched=not single,
                                     allow_unused=True, materialize_grads=True)
        return (out.unsqueeze(0) if single else out).detach()


class _SavedBytes(torch.autograd.graph.saved_tensors_hooks):
    """Inside ``with``: counts in ``nbytes`` the tensors autograd saves for backward (an upper
    bound on the graph's memory: a tensor saved by two nodes counts twice)."""

    def __init__(self):
        self.nbytes = 0
        super().__init__(self._count, lambda t: t)

    def _count(self, t: Tensor) -> Tensor:
        self.nbytes += t.numel() * t.element_size()
        return t


def _fastest_call(fn: Callable[[], object], min_seconds: float = 0.05, repeats: int = 3) -> float:
    """Shortest wall time of ``fn()`` over at least two calls (the first pays one-off start-up
    costs: lazy initialisation, thread pools), and up to ``repeats`` while they took under
    ``min_seconds`` in all."""
    times: list[float] = []
    while len(times) < 2 or (len(times) < repeats and sum(times) < min_seconds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def _transformed(value: Tensor) -> bool:
    """Whether ``value`` is being traced by a ``torch.func`` transform (grad, jvp, vmap, …)."""
    return torch._C._functorch.is_functorch_wrapped_tensor(value)


def _refuse_transform(theta: Tensor, what: str, instead: str) -> None:
    if _transformed(theta):
        raise TypeError(f"Objective.{what} is not differentiable and cannot run under a "
                        f"torch.func transform; use {instead} (or Objective.functional_loss)")


def _check_finite(value: Tensor, what: str) -> None:
    if not bool(torch.isfinite(value).all()):
        raise NonFiniteLossError(f"the {what} is not finite (NaN or inf) at this θ")
