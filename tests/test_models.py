"""Model specs: shapes, closed-form parameter counts, spec round trips, seeded initialisation,
user factories and error messages that name the offending part."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from landscape.models import ModelSpec, build_model, parse_model_spec, resolve_model_spec

DIGITS, MNIST = (1, 8, 8), (1, 28, 28)
FACTORIES = "landscape_test_factories"  # a module name no other test imports


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def lenet_count(c_in, c1, c2, h, side, n_classes) -> int:
    flat = c2 * (side // 4) ** 2
    convs = (c1 * c_in * 25 + c1) + (c2 * c1 * 25 + c2)
    return convs + (flat * h + h) + (h * n_classes + n_classes)


@pytest.mark.parametrize("spec, out_features, count", [
    ("mlp:64-32-10:tanh", 10, 64 * 32 + 32 + 32 * 10 + 10),
    ("mlp:32:relu", 10, 64 * 32 + 32 + 32 * 10 + 10),
    ("mlp:_-16-8-_:swish", 10, 64 * 16 + 16 + 16 * 8 + 8 + 8 * 10 + 10),
    ("mlp:64-32-10:softplus:nobias", 10, 64 * 32 + 32 * 10),
    ("lenet", 10, lenet_count(1, 10, 20, 50, 8, 10)),
    ("lenet:c1=6,c2=16,h=32,act=tanh", 10, lenet_count(1, 6, 16, 32, 8, 10)),
    ("linear-ae:_-3", 64, 2 * 64 * 3),
    ("linear-ae:64-4-3", 64, 2 * (64 * 4 + 4 * 3)),
])
def test_digits_shapes_and_closed_form_parameter_counts(spec, out_features, count):
    model = build_model(spec, DIGITS, 10, seed=0)
    assert model(torch.zeros(5, *DIGITS)).shape == (5, out_features)
    assert n_params(model) == count


def test_lenet_on_mnist_sized_inputs():
    model = build_model("lenet:c1=6,c2=16,h=32", MNIST, 10, seed=0)
    assert model(torch.zeros(3, *MNIST)).shape == (3, 10)
    assert n_params(model) == lenet_count(1, 6, 16, 32, 28, 10)
    assert model.spec["options"]["input_shape"] == [1, 28, 28]


def test_layer_structure_and_bias_free_variants():
    mlp = build_model("mlp:64-32-10:tanh:nobias")
    assert all("bias" not in name for name, _ in mlp.named_parameters())
    assert [type(m) for m in mlp] == [nn.Flatten, nn.Linear, nn.Tanh, nn.Linear]
    ae = build_model("linear-ae:8-3")
    assert [tuple(p.shape) for p in ae.parameters()] == [(3, 8), (8, 3)]
    x = torch.randn(4, 8)
    w1, w2 = (p.detach() for p in ae.parameters())
    torch.testing.assert_close(ae(x), x @ w1.T @ w2.T)
    assert n_params(build_model("linear-ae:8-3:bias")) == 2 * 8 * 3 + 3 + 8


def test_linear_activation_makes_the_mlp_affine():
    model = build_model("mlp:6-5-4-3:linear", seed=1)
    x, y = torch.randn(2, 6), torch.randn(2, 6)
    torch.testing.assert_close(model(x + y) - model(y), model(x) - model(torch.zeros(2, 6)))


@pytest.mark.parametrize("spec", ["mlp:64-32-10:tanh", "mlp:_-7-_:relu:nobias", "lenet:h=9",
                                  "linear-ae:_-5-2", "linear-ae:64-2:bias"])
def test_spec_round_trips(spec):
    parsed = parse_model_spec(spec)
    assert ModelSpec.from_dict(parsed.to_dict()) == parsed
    assert parse_model_spec(json.loads(json.dumps(parsed.to_dict()))) == parsed
    resolved = resolve_model_spec(spec, DIGITS, 10)
    assert resolved.resolved and ModelSpec.from_dict(resolved.to_dict()) == resolved
    rebuilt = build_model(build_model(spec, DIGITS, 10).spec)  # no data sizes needed
    assert rebuilt(torch.zeros(1, *DIGITS)).shape[0] == 1


def test_string_parsing():
    assert parse_model_spec("mlp:64-32-10") == ModelSpec("mlp", (64, 32, 10), "tanh", True)
    assert parse_model_spec("mlp:32:relu:nobias") == ModelSpec("mlp", (0, 32, 0), "relu", False)
    lenet = parse_model_spec("lenet:c2=7,act=softplus")
    assert lenet.options == {"c1": 10, "c2": 7, "h": 50} and lenet.activation == "softplus"
    assert parse_model_spec("linear-ae:8-4-3").widths == (8, 4, 3)
    factory = parse_model_spec("my_pkg.nets:make")
    assert factory.kind == "factory" and factory.options == {"factory": "my_pkg.nets:make",
                                                             "kwargs": {}}


def test_open_sizes_are_filled_and_explicit_ones_checked():
    assert build_model("mlp:32", MNIST, 10).spec["widths"] == [784, 32, 10]
    with pytest.raises(ValueError, match="input width 64 does not match the data's 784"):
        build_model("mlp:64-32-10", MNIST, 10)
    with pytest.raises(ValueError, match="n_classes"):
        build_model("mlp:32", DIGITS)
    with pytest.raises(ValueError, match="input_shape"):
        build_model("lenet")


def test_seeded_models_are_identical_and_leave_global_rng_alone():
    torch.manual_seed(5)
    before = torch.random.get_rng_state()
    a, b = (build_model("lenet:c1=2,c2=3,h=4", DIGITS, 10, seed=3) for _ in range(2))
    assert torch.equal(torch.random.get_rng_state(), before)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    c = build_model("lenet:c1=2,c2=3,h=4", DIGITS, 10, seed=4)
    assert not torch.equal(a[0].weight, c[0].weight)


def test_factory_specs(tmp_path, monkeypatch):
    (tmp_path / f"{FACTORIES}.py").write_text(
        "import torch\nfrom torch import nn\n\n"
        "def make(width=3):\n    return nn.Linear(2, width)\n\n"
        "def noisy():\n    return nn.Linear(2, 2, bias=False)\n\n"
        "def not_a_module():\n    return 42\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    make = f"{FACTORIES}:make"
    model = build_model({"factory": make, "kwargs": {"width": 5}})
    assert model.weight.shape == (5, 2)
    assert model.spec == {"kind": "factory", "widths": [], "activation": "linear", "bias": True,
                          "options": {"factory": make, "kwargs": {"width": 5}}}
    assert build_model(model.spec).weight.shape == (5, 2)
    assert build_model(make).weight.shape == (3, 2)
    torch.manual_seed(0)
    before = torch.random.get_rng_state()
    a, b = (build_model(f"{FACTORIES}:noisy", seed=1) for _ in range(2))
    assert torch.equal(a.weight, b.weight) and torch.equal(torch.random.get_rng_state(), before)
    with pytest.raises(TypeError, match=f"{FACTORIES}:not_a_module.*int"):
        build_model(f"{FACTORIES}:not_a_module")
    with pytest.raises(ValueError, match="JSON"):
        parse_model_spec({"factory": make, "kwargs": {"width": object()}})


@pytest.mark.parametrize("spec, token", [
    ("mlp:64-x-10:tanh", "'x'"),
    ("mlp:64-10:sigmoid", "'sigmoid'"),
    ("mlp:64-10:tanh:extra", "'extra'"),
    ("mlp:_-3-_-5", "_-3-_-5"),
    ("resnet", "'resnet'"),
    ("lenet:c1=six", "c1=six"),
    ("lenet:depth=3", "depth=3"),
    ("linear-ae:8", "'8'"),
    ("nopkg.nomod:make", "nopkg.nomod:make"),
    ({"kind": "mlp", "widths": [4, 2], "activation": "gelu"}, "'gelu'"),
    ({"kind": "transformer"}, "'transformer'"),
])
def test_bad_specs_name_the_offending_part(spec, token):
    with pytest.raises(ValueError) as err:
        build_model(spec, DIGITS, 10)
    assert token in str(err.value)
