"""Model specs → ``nn.Module``.

A spec is a string, a mapping or a ``ModelSpec``; its dict form (``ModelSpec.to_dict``) is plain
JSON, so checkpoints store it. String grammar:

* ``"mlp:<widths>[:<activation>][:nobias]"``: fully connected layers (inputs are flattened first).
  ``"mlp:64-32-10:tanh"`` lists the widths from input to output; ``"mlp:32:tanh"`` (one width) is a
  single hidden layer whose input and output sizes come from the data; ``_`` leaves one end open,
  e.g. ``"mlp:_-32-32-_:relu"``. Activations: tanh (default), relu, linear, softplus, swish;
  ``nobias`` drops every bias.
* ``"lenet"`` / ``"lenet:c1=10,c2=20,h=50,act=relu"``: the CNN of the classic PyTorch MNIST example
  (defaults as shown; its dropout left out): twice conv 5×5 (padding 2) → max-pool 2×2 →
  activation, then linear → activation → linear. Padding 2 keeps 8×8 digits and 28×28 MNIST
  usable; the input shape and class count come from the data.
* ``"linear-ae:8-3"``: bias-free deep linear autoencoder d → p → d (weights W₁ [p, d], W₂ [d, p]);
  more widths mirror, ``"linear-ae:8-4-3"`` is 8 → 4 → 3 → 4 → 8; ``"linear-ae:_-3"`` takes d from
  the data; ``:bias`` adds biases. Inputs are flattened; outputs are ``[N, d]``.
* ``"package.module:function"`` or ``{"factory": "package.module:function", "kwargs": {...}}``: a
  user factory, imported with importlib and called with the (JSON-able) kwargs.

``build_model`` fills open sizes from ``input_shape`` / ``n_classes`` and attaches the resolved spec
(a dict that rebuilds the same architecture with no data) as ``module.spec``. Imports nothing from
storage, tracking or plotting.
"""

from __future__ import annotations

import copy
import importlib
import json
import math
from dataclasses import dataclass, field
from itertools import pairwise

import torch
from torch import nn

ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "linear": nn.Identity, "softplus": nn.Softplus,
               "swish": nn.SiLU}
KINDS = ("mlp", "lenet", "linear-ae", "factory")
LENET_DEFAULTS = {"c1": 10, "c2": 20, "h": 50, "act": "relu"}
OPEN = 0  # an open width (written ``_``), filled from the data


@dataclass(frozen=True)
class ModelSpec:
    """A parsed spec.

    ``kind``: mlp, lenet, linear-ae or factory; ``widths``: mlp widths from input to output, or the
    linear autoencoder's d and hidden widths (``OPEN`` = 0 where the data decide); ``activation``;
    ``bias``; ``options``: lenet's ``c1, c2, h`` (and, once resolved, ``input_shape``,
    ``n_classes``), or a factory's ``factory`` path and ``kwargs``.
    """

    kind: str
    widths: tuple[int, ...] = ()
    activation: str = "linear"
    bias: bool = True
    options: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown model kind {self.kind!r}; use one of {', '.join(KINDS)} "
                             "or a 'package.module:function' factory")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {self.activation!r}; "
                             f"choose from {', '.join(ACTIVATIONS)}")
        bad = [w for w in self.widths if not isinstance(w, int) or isinstance(w, bool) or w < 0]
        if bad:
            raise ValueError(f"widths must be positive integers (0 for open); got {bad[0]!r}")
        inner = self.widths[1:-1] if self.kind == "mlp" else self.widths[1:]
        if self.kind in ("mlp", "linear-ae") and (len(self.widths) < 2 or OPEN in inner):
            raise ValueError(f"{self.kind} widths {list(self.widths)}: need at least two, and "
                             f"only the {'ends' if self.kind == 'mlp' else 'input'} may be open")

    @property
    def resolved(self) -> bool:
        """True when the spec builds without data sizes."""
        if self.kind in ("mlp", "linear-ae"):
            return OPEN not in self.widths
        if self.kind == "lenet":
            return "input_shape" in self.options and "n_classes" in self.options
        return True

    def to_dict(self) -> dict:
        """Plain JSON-able dict; ``ModelSpec.from_dict`` inverts it."""
        return {"kind": self.kind, "widths": list(self.widths), "activation": self.activation,
                "bias": self.bias, "options": json.loads(json.dumps(self.options))}

    @classmethod
    def from_dict(cls, d: dict) -> ModelSpec:
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown model-spec keys {sorted(unknown)}; "
                             f"known: {sorted(cls.__dataclass_fields__)}")
        return cls(**{**d, "widths": tuple(d.get("widths", ())), "options": dict(
            d.get("options", {}))})


def parse_model_spec(spec: str | dict | ModelSpec) -> ModelSpec:
    """Parse a spec string, a mapping (``to_dict`` form or ``{"factory", "kwargs"}``) or a
    ModelSpec (see the module docstring)."""
    if isinstance(spec, ModelSpec):
        return spec
    if isinstance(spec, dict):
        if "factory" in spec:
            extra = set(spec) - {"factory", "kwargs"}
            if extra:
                raise ValueError(f"factory spec has unknown keys {sorted(extra)}; "
                                 "expected 'factory' and 'kwargs'")
            return _factory_spec(spec["factory"], spec.get("kwargs", {}))
        return ModelSpec.from_dict(spec)
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"a model spec must be a non-empty string or mapping; got {spec!r}")
    kind, _, rest = spec.partition(":")
    parse = {"mlp": _parse_mlp, "lenet": _parse_lenet, "linear-ae": _parse_linear_ae}.get(kind)
    if parse is not None:
        return parse(rest, spec)
    if rest and all(part.isidentifier() for part in (*kind.split("."), *rest.split("."))):
        return _factory_spec(spec, {})
    raise ValueError(f"model spec {spec!r}: unknown model kind {kind!r}; use mlp, lenet, "
                     "linear-ae or package.module:function")


def _widths(text: str, spec: str) -> tuple[int, ...]:
    """``"64-32-10"`` → (64, 32, 10); ``_`` → OPEN."""
    out = []
    for token in text.split("-"):
        if token == "_":
            out.append(OPEN)
        elif token.isdecimal() and int(token) > 0:
            out.append(int(token))
        else:
            raise ValueError(f"model spec {spec!r}: width {token!r} in {text!r} is not a positive "
                             "integer (or '_' for a size taken from the data)")
    return tuple(out)


def _parse_mlp(rest: str, spec: str) -> ModelSpec:
    parts = rest.split(":")
    if not parts[0]:
        raise ValueError(f"model spec {spec!r}: expected mlp:<widths>[:activation][:nobias]")
    widths = _widths(parts[0], spec)
    if len(widths) == 1:
        widths = (OPEN, *widths, OPEN)
    elif OPEN in widths[1:-1]:
        raise ValueError(f"model spec {spec!r}: only the first and last width may be '_'; "
                         f"got {parts[0]!r}")
    flags = parts[1:]
    bias = "nobias" not in flags
    flags = [f for f in flags if f != "nobias"]
    if len(flags) > 1:
        raise ValueError(f"model spec {spec!r}: unexpected part {flags[1]!r}; "
                         "expected mlp:<widths>[:activation][:nobias]")
    activation = flags[0] if flags else "tanh"
    if activation not in ACTIVATIONS:
        raise ValueError(f"model spec {spec!r}: unknown activation {activation!r}; "
                         f"choose from {', '.join(ACTIVATIONS)}")
    return ModelSpec("mlp", widths, activation, bias)


def _parse_lenet(rest: str, spec: str) -> ModelSpec:
    opts = dict(LENET_DEFAULTS)
    for item in filter(None, rest.split(",")):
        key, sep, value = item.partition("=")
        if key not in opts or not sep:
            raise ValueError(f"model spec {spec!r}: unknown lenet option {item!r}; "
                             f"options: {', '.join(f'{k}=…' for k in LENET_DEFAULTS)}")
        if key != "act" and not (value.isdecimal() and int(value) > 0):
            raise ValueError(f"model spec {spec!r}: lenet option {item!r} needs a positive "
                             "integer")
        opts[key] = value if key == "act" else int(value)
    if opts["act"] not in ACTIVATIONS:
        raise ValueError(f"model spec {spec!r}: unknown activation {opts['act']!r}; "
                         f"choose from {', '.join(ACTIVATIONS)}")
    act = opts.pop("act")
    return ModelSpec("lenet", (), act, True, opts)


def _parse_linear_ae(rest: str, spec: str) -> ModelSpec:
    parts = rest.split(":")
    if not parts[0] or parts[1:] not in ([], ["bias"]):
        raise ValueError(f"model spec {spec!r}: expected linear-ae:<d>-<p>[-…][:bias]")
    widths = _widths(parts[0], spec)
    if len(widths) < 2 or OPEN in widths[1:]:
        raise ValueError(f"model spec {spec!r}: linear-ae needs the input width (or '_') and "
                         f"hidden widths, e.g. linear-ae:64-8 or linear-ae:_-8; got {parts[0]!r}")
    return ModelSpec("linear-ae", widths, "linear", parts[1:] == ["bias"])


def _factory_spec(path, kwargs) -> ModelSpec:
    if not isinstance(path, str) or path.count(":") != 1:
        raise ValueError(f"factory must be 'package.module:function'; got {path!r}")
    if not isinstance(kwargs, dict):
        raise TypeError(f"factory {path!r}: kwargs must be a mapping; got {kwargs!r}")
    try:
        plain = json.loads(json.dumps(kwargs))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"factory {path!r}: kwargs must be JSON-able to be stored with "
                         f"checkpoints: {exc}") from None
    return ModelSpec("factory", options={"factory": path, "kwargs": plain})


def resolve_model_spec(spec, input_shape: tuple[int, ...] | None = None,
                       n_classes: int | None = None) -> ModelSpec:
    """The spec with open sizes filled: input width ``prod(input_shape)``, output ``n_classes``
    (the autoencoder's output is its input). Explicit sizes must agree with the data."""
    parsed = parse_model_spec(spec)
    if parsed.kind == "mlp":
        widths = (*_fill(parsed.widths[:1], _flat(input_shape), "input", spec),
                  *parsed.widths[1:-1], *_fill(parsed.widths[-1:], n_classes, "output", spec))
        return ModelSpec("mlp", widths, parsed.activation, parsed.bias)
    if parsed.kind == "linear-ae":
        widths = (*_fill(parsed.widths[:1], _flat(input_shape), "input", spec),
                  *parsed.widths[1:])
        return ModelSpec("linear-ae", widths, "linear", parsed.bias)
    if parsed.kind == "lenet":
        return ModelSpec("lenet", (), parsed.activation, True, _lenet_sizes(
            parsed.options, input_shape, n_classes, spec))
    return parsed


def _flat(input_shape) -> int | None:
    return None if input_shape is None else math.prod(input_shape)


def _fill(width: tuple[int, ...], size: int | None, which: str, spec) -> tuple[int, ...]:
    """One end of the widths: the data's ``size`` where open; checked against it otherwise."""
    (w,) = width
    if w == OPEN and size is None:
        raise ValueError(f"model spec {spec!r} leaves the {which} width open; pass "
                         f"{'input_shape' if which == 'input' else 'n_classes'} or write it out")
    if w != OPEN and size is not None and w != size:
        raise ValueError(f"model spec {spec!r}: {which} width {w} does not match the data's "
                         f"{size}; write '_' to take it from the data")
    return (size if w == OPEN else w,)


def _lenet_sizes(options: dict, input_shape, n_classes, spec) -> dict:
    shape = input_shape if input_shape is not None else options.get("input_shape")
    classes = n_classes if n_classes is not None else options.get("n_classes")
    if shape is None or classes is None:
        raise ValueError(f"model spec {spec!r}: lenet needs input_shape and n_classes")
    if len(shape) != 3 or min(shape[1:]) < 4:
        raise ValueError(f"model spec {spec!r}: lenet needs images (channels, height, width) of "
                         f"at least 4×4; got input_shape {tuple(shape)}")
    channels = {k: v for k, v in LENET_DEFAULTS.items() if k != "act"}
    return {**channels, **options, "input_shape": [int(s) for s in shape],
            "n_classes": int(classes)}


def build_model(spec, input_shape: tuple[int, ...] | None = None, n_classes: int | None = None,
                seed: int | None = None) -> nn.Module:
    """Build the module for ``spec``; ``input_shape`` (per sample) and ``n_classes`` fill open
    sizes. With ``seed``, initialisation is seeded inside a forked RNG, leaving torch's global RNG
    as it was. The resolved spec's dict is attached as ``module.spec``."""
    resolved = resolve_model_spec(spec, input_shape, n_classes)
    with torch.random.fork_rng(devices=[], enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        module = _BUILDERS[resolved.kind](resolved)
    module.spec = resolved.to_dict()
    return module


def _mlp(spec: ModelSpec) -> nn.Module:
    layers: list[nn.Module] = [nn.Flatten()]
    for i, (a, b) in enumerate(pairwise(spec.widths)):
        if i:
            layers.append(ACTIVATIONS[spec.activation]())
        layers.append(nn.Linear(a, b, bias=spec.bias))
    return nn.Sequential(*layers)


def _lenet(spec: ModelSpec) -> nn.Module:
    o = spec.options
    channels, height, width = o["input_shape"]
    act = ACTIVATIONS[spec.activation]
    return nn.Sequential(
        nn.Conv2d(channels, o["c1"], 5, padding=2), nn.MaxPool2d(2), act(),
        nn.Conv2d(o["c1"], o["c2"], 5, padding=2), nn.MaxPool2d(2), act(),
        nn.Flatten(), nn.Linear(o["c2"] * (height // 4) * (width // 4), o["h"]), act(),
        nn.Linear(o["h"], o["n_classes"]))


def _linear_ae(spec: ModelSpec) -> nn.Module:
    dims = (*spec.widths, *reversed(spec.widths[:-1]))
    return nn.Sequential(nn.Flatten(),
                         *(nn.Linear(a, b, bias=spec.bias) for a, b in pairwise(dims)))


def _factory(spec: ModelSpec) -> nn.Module:
    path = spec.options["factory"]
    module_name, _, attr = path.partition(":")
    try:
        fn = importlib.import_module(module_name)
        for name in attr.split("."):
            fn = getattr(fn, name)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"model factory {path!r} cannot be imported: {exc}") from None
    module = fn(**spec.options["kwargs"])
    if not isinstance(module, nn.Module):
        raise TypeError(f"model factory {path!r} returned {type(module).__name__}, "
                         "not an nn.Module")
    return module


_BUILDERS = {"mlp": _mlp, "lenet": _lenet, "linear-ae": _linear_ae, "factory": _factory}


AFFINE_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
HOMOGENEOUS = (nn.ReLU, nn.LeakyReLU, nn.Identity, nn.Flatten, nn.Dropout, nn.MaxPool1d,
               nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
               nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool1d,
               nn.AdaptiveMaxPool2d)  # g(c·x) = c·g(x) for c > 0


def rescale(model: nn.Sequential, layer: int, c: float) -> nn.Sequential:
    """Dinh et al.'s (2017) reparametrisation: a copy of ``model`` computing the same function,
    with the weight and bias of its ``layer``-th affine layer (Linear / Conv, counted from 0 in
    module order) multiplied by ``c > 0`` and the next affine layer's weight divided by ``c``.

    Exact (up to rounding) because every module between the two layers must be positively
    homogeneous (ReLU, LeakyReLU, pooling, Flatten, Identity, Dropout); anything else (Tanh,
    BatchNorm, …) is refused. ``model`` is not changed.

    Example:
        >>> net = build_model("mlp:4-3-2:relu", seed=0)
        >>> x = torch.randn(5, 4, generator=torch.Generator().manual_seed(0))
        >>> torch.allclose(rescale(net, 0, 25.0)(x), net(x), atol=1e-5)
        True
    """
    if not isinstance(model, nn.Sequential):
        raise TypeError(f"rescale needs an nn.Sequential; got {type(model).__name__}")
    if isinstance(c, bool) or not isinstance(c, int | float) or not (0 < c < math.inf):
        raise ValueError(f"c must be a finite positive number; got {c!r}")
    affine = [i for i, m in enumerate(model) if isinstance(m, AFFINE_LAYERS)]
    if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < len(affine) - 1:
        raise ValueError(f"layer must be an integer in [0, {len(affine) - 2}] (an affine layer "
                         f"followed by another; the model has {len(affine)}); got {layer!r}")
    first, second = affine[layer], affine[layer + 1]
    between = [i for i in range(first + 1, second) if not isinstance(model[i], HOMOGENEOUS)]
    if between:
        i = between[0]
        raise ValueError(f"module {i} ({type(model[i]).__name__}) between affine layers {first} "
                         f"and {second} is not positively homogeneous: rescaling would change "
                         "the function")
    out = copy.deepcopy(model)
    with torch.no_grad():
        out[first].weight.mul_(c)
        if out[first].bias is not None:
            out[first].bias.mul_(c)
        out[second].weight.div_(c)
    return out
