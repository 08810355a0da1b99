"""Model specs → ``nn.Module``.

A spec is a string or a mapping (serialisable, stored in checkpoints):

* ``"mlp:64-32-10:tanh"``: widths including input and output; ``"mlp:32:tanh"`` gives the hidden
  widths only and takes input/output sizes from the data; activations ``tanh``, ``relu``,
  ``softplus``, ``linear``; append ``:nobias`` for bias-free layers.
* ``"lenet"`` / ``"lenet:c1=6,c2=16,h=32,act=tanh"``: LeNet-style CNN (conv 5×5 (padding 2) →
  activation → max-pool 2×2, twice; then two linear layers).
* ``"linear-ae:64-8"``: bias-free deep linear autoencoder d → p (→ more widths) → d.
* ``"package.module:function"`` or ``{"factory": "package.module:function", "kwargs": {...}}``: a
  user factory returning an ``nn.Module``.

``build_model`` resolves open sizes from the data and returns the module with its resolved spec as
``module.spec`` (a dict); initialisation is seeded without touching the global RNG.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import asdict, dataclass, field
from itertools import pairwise

import torch
from torch import nn

ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "softplus": nn.Softplus, "linear": nn.Identity}


@dataclass(frozen=True)
class ModelSpec:
    """Parsed spec: ``kind`` (mlp, lenet, linear-ae, factory) and its options."""

    kind: str
    widths: tuple[int, ...] = ()
    activation: str = "tanh"
    bias: bool = True
    options: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["widths"] = list(self.widths)
        return d


def _widths(text: str, spec: str) -> tuple[int, ...]:
    try:
        return tuple(int(w) for w in text.split("-"))
    except ValueError:
        raise ValueError(f"model spec {spec!r}: widths {text!r} must be integers joined by '-'") \
            from None


def parse_model_spec(spec) -> ModelSpec:
    """Parse a string, mapping or ModelSpec (see the module docstring)."""
    if isinstance(spec, ModelSpec):
        return spec
    if isinstance(spec, dict):
        if "factory" in spec and "kind" not in spec:
            return ModelSpec("factory", options={"factory": spec["factory"],
                                                 "kwargs": dict(spec.get("kwargs", {}))})
        d = dict(spec)
        d["widths"] = tuple(d.get("widths", ()))
        return ModelSpec(**d)
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"a model spec must be a non-empty string or mapping; got {spec!r}")
    parts = spec.split(":")
    kind = parts[0]
    if kind == "mlp":
        if len(parts) < 2:
            raise ValueError(f"model spec {spec!r}: expected mlp:<widths>[:activation][:nobias]")
        act = parts[2] if len(parts) > 2 else "tanh"
        if act not in ACTIVATIONS:
            raise ValueError(f"model spec {spec!r}: unknown activation {act!r}; "
                             f"choose from {sorted(ACTIVATIONS)}")
        return ModelSpec("mlp", _widths(parts[1], spec), act, "nobias" not in parts[3:])
    if kind == "lenet":
        opts = {"c1": 6, "c2": 16, "h": 32, "act": "tanh"}
        for item in filter(None, (parts[1] if len(parts) > 1 else "").split(",")):
            key, _, value = item.partition("=")
            if key not in opts:
                raise ValueError(f"model spec {spec!r}: unknown lenet option {key!r}")
            opts[key] = value if key == "act" else int(value)
        if opts["act"] not in ACTIVATIONS:
            raise ValueError(f"model spec {spec!r}: unknown activation {opts['act']!r}")
        return ModelSpec("lenet", (opts["c1"], opts["c2"], opts["h"]), opts["act"])
    if kind == "linear-ae":
        if len(parts) != 2:
            raise ValueError(f"model spec {spec!r}: expected linear-ae:<d>-<p>[-...]")
        return ModelSpec("linear-ae", _widths(parts[1], spec), "linear", False)
    if len(parts) == 2 and parts[1].isidentifier():
        return ModelSpec("factory", options={"factory": spec, "kwargs": {}})
    raise ValueError(f"unknown model kind {kind!r} in spec {spec!r}; use mlp, lenet, linear-ae "
                     "or package.module:function")


def _mlp(widths, activation, bias) -> nn.Module:
    layers: list[nn.Module] = [nn.Flatten()]
    for i, (a, b) in enumerate(pairwise(widths)):
        layers.append(nn.Linear(a, b, bias=bias))
        if i < len(widths) - 2:
            layers.append(ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


def _lenet(spec: ModelSpec, input_shape, n_classes) -> nn.Module:
    c1, c2, h = spec.widths
    act = ACTIVATIONS[spec.activation]
    channels, height, width = input_shape
    flat = c2 * (height // 4) * (width // 4)
    return nn.Sequential(
        nn.Conv2d(channels, c1, 5, padding=2), act(), nn.MaxPool2d(2),
        nn.Conv2d(c1, c2, 5, padding=2), act(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(flat, h), act(), nn.Linear(h, n_classes))


def build_model(spec, input_shape: tuple[int, ...] | None = None, n_classes: int | None = None,
                seed: int | None = None) -> nn.Module:
    """Build the module for ``spec``; ``input_shape`` (per sample) and ``n_classes`` fill open sizes."""
    parsed = parse_model_spec(spec)
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        if parsed.kind == "mlp":
            widths = parsed.widths
            if input_shape is not None and n_classes is not None and len(widths) >= 1 and (
                    widths[0] != math.prod(input_shape) or len(widths) == 1):
                widths = (math.prod(input_shape), *widths, n_classes)
            if len(widths) < 2:
                raise ValueError(f"model spec {spec!r}: needs input and output widths "
                                 "(or input_shape and n_classes)")
            parsed = ModelSpec("mlp", widths, parsed.activation, parsed.bias)
            module = _mlp(widths, parsed.activation, parsed.bias)
        elif parsed.kind == "lenet":
            if parsed.options:  # a resolved spec read back from a checkpoint
                input_shape = input_shape or tuple(parsed.options["input_shape"])
                n_classes = n_classes or parsed.options["n_classes"]
            if input_shape is None or n_classes is None or len(input_shape) != 3:
                raise ValueError("lenet needs input_shape (channels, height, width) and n_classes")
            parsed = ModelSpec("lenet", parsed.widths, parsed.activation, True,
                               {"input_shape": list(input_shape), "n_classes": n_classes})
            module = _lenet(parsed, input_shape, n_classes)
        elif parsed.kind == "linear-ae":
            w = parsed.widths
            dims = (*w, *reversed(w[:-1]))
            module = nn.Sequential(*[nn.Linear(a, b, bias=False) for a, b in pairwise(dims)])
        else:
            module = _factory(parsed.options["factory"])(**parsed.options.get("kwargs", {}))
    module.spec = parsed.to_dict()
    return module


def _factory(path: str):
    module_name, _, attr = path.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"model factory {path!r} cannot be imported: {exc}") from None
