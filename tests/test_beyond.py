"""The rules beyond ReLU: x*s(x) activations, norms, attention; per-family temperatures;
the coverage report; activation checkpointing (docs/method.md, "Beyond ReLU", "Coverage")."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from helpers import assert_unchanged, convnext_tiny, snapshot, timm_model, tiny_cnn, tv, vit_b_16
from reference_beyond import reference_pullback
from torch import nn

import pullbacks
from pullbacks import PartialPullbackError, PartialPullbackWarning, excitation_pullback, soft_gates
from pullbacks.core.options import GateOptions
from pullbacks.core.table import default_temperatures

D = torch.float64


def soft_grad(f, x, **options):
    """d/dx sum(f(x)) inside soft_gates."""
    x = x.detach().clone().requires_grad_(True)
    with soft_gates(**options):
        y = f(x)
    (g,) = torch.autograd.grad(y.sum(), x)
    return g


def plain_grad(f, x):
    x = x.detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(f(x).sum(), x)
    return g


# --------------------------------------------------------------------------- closed forms

X = torch.linspace(-6, 6, 97, dtype=D)
GATES = {
    "silu": torch.sigmoid,
    "gelu": lambda u: 0.5 * (1 + torch.erf(u / math.sqrt(2))),
    "hardswish": lambda u: torch.clamp(u / 6 + 0.5, 0, 1),
    "mish": lambda u: torch.tanh(torch.log1p(torch.exp(u))),
}
CALLS = {
    "silu": [nn.SiLU(), nn.SiLU(inplace=True), F.silu, torch._C._nn.silu],
    "gelu": [nn.GELU(), F.gelu],
    "hardswish": [nn.Hardswish(), nn.Hardswish(inplace=True), F.hardswish],
    "mish": [nn.Mish(), nn.Mish(inplace=True), F.mish],
}


@pytest.mark.parametrize("family", list(GATES))
@pytest.mark.parametrize("t", [0.5, 1.0, 2.5])
def test_activation_gradient_is_its_gate_at_z_over_t(family, t):
    for call in CALLS[family]:
        f = (lambda z: call(z.clone())) if getattr(call, "inplace", False) else call
        g = soft_grad(f, X, temperatures={family: t})
        torch.testing.assert_close(g, GATES[family](X / t), rtol=1e-12, atol=1e-14)


def test_gelu_tanh_gate():
    g = soft_grad(lambda z: F.gelu(z, approximate="tanh"), X, temperatures={"gelu": 0.7})
    u = X / 0.7
    torch.testing.assert_close(g, 0.5 * (1 + torch.tanh(math.sqrt(2 / math.pi) * (u + 0.044715 * u**3))))


def test_silu_at_t1_is_the_gate_without_its_derivative_term():
    g = soft_grad(F.silu, X, temperatures={"silu": 1.0})
    s = torch.sigmoid(X)
    torch.testing.assert_close(g, s, rtol=1e-12, atol=1e-14)
    ordinary = plain_grad(F.silu, X)
    torch.testing.assert_close(ordinary, s * (1 + X * (1 - s)))
    assert not torch.allclose(g, ordinary)


@pytest.mark.parametrize("call", [F.silu, F.gelu, F.hardswish, F.mish, nn.LayerNorm(5)])
def test_forward_is_bit_for_bit(call):
    x = torch.randn(4, 5, requires_grad=True)
    with soft_gates():
        y = call(x)
    assert torch.equal(y, call(x))


def test_layer_norm_closed_form():
    torch.manual_seed(0)
    ln = nn.LayerNorm((3, 4), eps=1e-3).to(D)
    nn.init.normal_(ln.weight)
    x = torch.randn(2, 5, 3, 4, dtype=D)
    grad_out = torch.randn(2, 5, 3, 4, dtype=D)
    xg = x.clone().requires_grad_(True)
    with soft_gates():
        y = ln(xg)
    g, gw, gb = torch.autograd.grad(y, (xg, ln.weight, ln.bias), grad_out)
    var = x.numpy().reshape(2, 5, 12).var(axis=-1).reshape(2, 5, 1, 1)
    expected = grad_out.numpy() * ln.weight.detach().numpy() / np.sqrt(var + 1e-3)
    np.testing.assert_allclose(g.numpy(), expected, rtol=1e-12)
    gw0, gb0 = torch.autograd.grad(ln(x), (ln.weight, ln.bias), grad_out)  # ordinary parameter gradients
    torch.testing.assert_close(gw, gw0)
    torch.testing.assert_close(gb, gb0)


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.float16, 4e-3), (torch.bfloat16, 3e-2)])
def test_layer_norm_held_statistics_in_every_dtype(dtype, tol):
    # the forward's own rstd is held, in every dtype (float16/bfloat16: within their rounding)
    torch.manual_seed(1)
    ln = nn.LayerNorm(16, eps=1e-5)
    nn.init.normal_(ln.weight)
    x, grad_out = torch.randn(4, 7, 16, dtype=D), torch.randn(4, 7, 16, dtype=D)
    expected = grad_out * ln.weight.detach().to(D) / torch.sqrt(x.var(-1, keepdim=True, correction=0) + 1e-5)
    xg = x.to(dtype).requires_grad_(True)
    ln = ln.to(dtype)
    with soft_gates():
        y = ln(xg)
    assert torch.equal(y, ln(x.to(dtype)))  # the forward bit for bit
    (g,) = torch.autograd.grad(y, xg, grad_out.to(dtype))
    assert g.dtype == dtype
    torch.testing.assert_close(g.to(D), expected, rtol=tol, atol=tol * float(expected.abs().max()))


def test_group_norm_closed_form_and_parameter_gradients():
    torch.manual_seed(0)
    gn = nn.GroupNorm(2, 6).to(D)
    nn.init.normal_(gn.weight)
    x = torch.randn(3, 6, 4, 4, dtype=D)
    grad_out = torch.randn_like(x)
    xg = x.clone().requires_grad_(True)
    with soft_gates():
        y = gn(xg)
    g, gw, gb = torch.autograd.grad(y, (xg, gn.weight, gn.bias), grad_out)
    var = x.numpy().reshape(3, 2, -1).var(axis=-1)  # per (sample, group)
    rstd = np.repeat(1 / np.sqrt(var + gn.eps), 3, axis=1).reshape(3, 6, 1, 1)
    np.testing.assert_allclose(
        g.numpy(), grad_out.numpy() * gn.weight.detach().numpy()[:, None, None] * rstd, rtol=1e-12
    )
    # the weight and bias get their ordinary gradients
    gw0, gb0 = torch.autograd.grad(gn(x), (gn.weight, gn.bias), grad_out)
    torch.testing.assert_close(gw, gw0)
    torch.testing.assert_close(gb, gb0)


def test_rms_norm_closed_form():
    torch.manual_seed(0)
    x = torch.randn(3, 7, dtype=D)
    w = torch.randn(7, dtype=D)
    grad_out = torch.randn_like(x)
    xg = x.clone().requires_grad_(True)
    with soft_gates():
        y = F.rms_norm(xg, (7,), w, 1e-4)
    (g,) = torch.autograd.grad(y, xg, grad_out)
    rms = np.sqrt((x.numpy() ** 2).mean(-1, keepdims=True) + 1e-4)
    np.testing.assert_allclose(g.numpy(), grad_out.numpy() * w.numpy() / rms, rtol=1e-12)


def test_norm_rule_is_ordinary_when_statistics_are_constant():
    # group norm over one channel per group: with a shift-invariant input, the ordinary gradient's
    # mean-and-variance terms vanish when grad_out sums to zero against 1 and x_hat
    torch.manual_seed(0)
    x = torch.randn(1, 1, 8, dtype=D)
    grad_out = torch.randn_like(x)
    grad_out -= grad_out.mean()
    xhat = (x - x.mean()) / x.std(correction=0)
    grad_out -= (grad_out * xhat).mean() * xhat
    xg = x.clone().requires_grad_(True)
    with soft_gates():
        (g,) = torch.autograd.grad(F.layer_norm(xg, (8,)), xg, grad_out)
    (g0,) = torch.autograd.grad(F.layer_norm(xg, (8,)), xg, grad_out)
    torch.testing.assert_close(g, g0)


ATTENTION_CASES = {
    "plain": {},
    "float mask": {"attn_mask": "float"},
    "bool mask": {"attn_mask": "bool"},
    "causal": {"is_causal": True},
    "scale": {"scale": 0.37},
    "gqa": {"enable_gqa": True},
}


def _attention_inputs(case):
    g = torch.Generator().manual_seed(1)
    q = torch.randn(2, 4, 5, 8, dtype=D, generator=g)
    kv_heads = 2 if case.get("enable_gqa") else 4
    k = torch.randn(2, kv_heads, 6 if "attn_mask" in case else 5, 8, dtype=D, generator=g)
    v = torch.randn_like(k)
    kw = dict(case)
    if case.get("attn_mask") == "float":
        kw["attn_mask"] = torch.randn(5, 6, dtype=D, generator=g)
    elif case.get("attn_mask") == "bool":
        kw["attn_mask"] = torch.rand(5, 6, generator=g) > 0.3
        kw["attn_mask"][:, 0] = True
    return q, k, v, kw


def _attention_grads(q, k, v, kw, temperatures=None):
    inputs = [t.clone().requires_grad_(True) for t in (q, k, v)]
    w = torch.randn(inputs[0].shape, dtype=D, generator=torch.Generator().manual_seed(2))
    if temperatures is None:
        out = F.scaled_dot_product_attention(*inputs, **kw)
    else:
        with soft_gates(temperatures=temperatures):
            out = F.scaled_dot_product_attention(*inputs, **kw)
    return torch.autograd.grad((out * w).sum(), inputs)


@pytest.mark.parametrize("case", list(ATTENTION_CASES))
def test_attention_at_t1_is_the_ordinary_gradient(case):
    q, k, v, kw = _attention_inputs(ATTENTION_CASES[case])
    for got, want in zip(_attention_grads(q, k, v, kw, {"attention": 1.0}), _attention_grads(q, k, v, kw)):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("case", list(ATTENTION_CASES))
def test_attention_is_the_softer_attention_of_the_reference(case):
    from reference_beyond import patched_functional

    q, k, v, kw = _attention_inputs(ATTENTION_CASES[case])
    with patched_functional(temperatures={"attention": 2.5}):
        want = _attention_grads(q, k, v, kw)
    got = _attention_grads(q, k, v, kw, {"attention": 2.5})
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)
    ordinary = _attention_grads(q, k, v, kw)
    assert not torch.allclose(got[0], ordinary[0])


@pytest.mark.parametrize("need_weights", [False, True])
def test_multihead_attention_is_the_softer_attention(need_weights):
    from reference_beyond import patched_functional

    torch.manual_seed(0)
    mha = nn.MultiheadAttention(8, 2, batch_first=True).to(D).eval()
    x = torch.randn(2, 5, 8, dtype=D)
    mask = torch.tensor([[False] * 4 + [True], [False] * 5])

    def f(z):
        return mha(z, z, z, key_padding_mask=mask, need_weights=need_weights)[0]

    with patched_functional(temperatures={"attention": 2.0}):  # reference: the fused path's SDPA
        want = plain_grad(lambda z: mha(z, z, z, key_padding_mask=mask, need_weights=False)[0], x)
    got = soft_grad(f, x, temperatures={"attention": 2.0})
    torch.testing.assert_close(got, want)
    with soft_gates() as mode:
        mha(x.requires_grad_(), x, x, need_weights=need_weights)
    assert mode.gated == {"attention": 1}


def test_attention_dropout_is_refused():
    q = torch.randn(1, 2, 3, 4, requires_grad=True)
    with pytest.raises(ValueError, match="dropout"), soft_gates():
        F.scaled_dot_product_attention(q, q, q, dropout_p=0.5)


# --------------------------------------------------------------------------- options


def test_temperatures_defaults_partial_and_unknown():
    assert (
        dict(GateOptions().temperatures)
        == default_temperatures()
        == {"silu": 1.6, "gelu": 1.0, "hardswish": 1.0, "mish": 1.0, "attention": 1.5}
    )
    o = GateOptions(temperatures={"gelu": np.float32(2.0)})
    assert o.temperatures["gelu"] == 2.0 and o.temperatures["silu"] == 1.6
    assert o.replace(temperatures={"silu": 0.5}).temperatures["gelu"] == 2.0  # merged, not reset
    with pytest.raises(ValueError, match="known: silu, gelu, hardswish, mish, attention"):
        GateOptions(temperatures={"relu": 1.0})
    with pytest.raises(ValueError, match=r"temperatures\['gelu'\]"):
        GateOptions(temperatures={"gelu": 0})
    with pytest.raises(TypeError, match="mapping"):
        GateOptions(temperatures=1.0)


def test_temperatures_reach_the_ascent():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 16), nn.GELU(), nn.Linear(16, 3)).eval()
    x = torch.rand(2, 3, 2, 2) * 2 - 1
    a = pullbacks.gradient_ascent(model, x, 1, steps=2, temperatures={"gelu": 0.2})
    b = pullbacks.gradient_ascent(model, x, 1, steps=2, temperatures={"gelu": 3.0})
    assert not torch.allclose(a, b)


# --------------------------------------------------------------------------- coverage


class SqueezeExcite(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        y = F.relu(self.conv(x))
        y = y * torch.sigmoid(y.mean((2, 3), keepdim=True))
        return self.fc(y.mean((2, 3)))


def test_partial_coverage_warns_once_and_strict_raises():
    model = SqueezeExcite().eval()
    x = torch.rand(2, 3, 8, 8) * 2 - 1
    before = snapshot(model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pullbacks.gradient_ascent(model, x, 0, steps=3)
    partial = [w for w in caught if issubclass(w.category, PartialPullbackWarning)]
    assert len(partial) == 1
    assert "1 call to sigmoid (squeeze-excitation?) kept their ordinary gradient" in str(partial[0].message)
    assert "partly a vanilla gradient" in str(partial[0].message)
    with pytest.raises(PartialPullbackError, match="sigmoid"):
        excitation_pullback(model, x, 0, strict=True)
    assert_unchanged(model, before)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.simplefilter("ignore", PartialPullbackWarning)  # the documented way to silence it
        excitation_pullback(model, x, 0)


def test_coverage_counts_gated_and_ordinary_calls():
    model = SqueezeExcite().eval()
    with soft_gates() as mode:
        model(torch.rand(1, 3, 8, 8, requires_grad=True))
    assert mode.coverage.gated == {"relu": 1} and mode.coverage.ordinary == {"sigmoid": 1}
    assert "gated: relu 1; ordinary: sigmoid 1; products: mul 1" == str(mode.coverage)
    with soft_gates() as mode, torch.no_grad():  # no backward pass: nothing to count
        model(torch.rand(1, 3, 8, 8, requires_grad=True))
    assert not mode.coverage.gated and not mode.coverage.ordinary


def test_no_gated_call_is_an_error_whose_fix_exists():
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3), nn.Tanh()).eval()
    x = torch.rand(1, 3, 2, 2)
    with pytest.raises(ValueError, match="method='gradient'") as e:
        excitation_pullback(model, x, 0)
    assert "1 call to tanh" in str(e.value)
    pullbacks.gradient_ascent(model, x * 2 - 1, 0, method="gradient", steps=1)  # the fix works


# --------------------------------------------------------------------------- checkpointing


class Checkpointed(nn.Module):
    def __init__(self, reentrant: bool):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.ReLU())
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(4, 3))
        self.reentrant = reentrant

    def forward(self, x):
        y = cp.checkpoint(self.body, x, use_reentrant=self.reentrant)
        return self.head(y.mean((2, 3)))


@pytest.mark.parametrize("hook_api", [True, False])  # False: a torch without _top_saved_tensors_default_hooks
@pytest.mark.parametrize("reentrant", [False, True])
def test_checkpointing_is_a_clear_error(reentrant, hook_api, monkeypatch):
    from pullbacks.core import graph as coverage

    if not hook_api:
        monkeypatch.setattr(coverage, "_TOP_HOOKS", None)
    elif coverage._TOP_HOOKS is None:
        pytest.skip("this torch has no _top_saved_tensors_default_hooks")
    model = Checkpointed(reentrant).eval()
    before = snapshot(model)
    with pytest.raises(RuntimeError, match="activation checkpointing.*set_grad_checkpointing\\(False\\)"):
        excitation_pullback(model, torch.rand(1, 3, 12, 12), 0)
    assert_unchanged(model, before)


@pytest.mark.slow
def test_checkpointing_in_densenet_and_timm_is_a_clear_error():
    import timm
    import torchvision

    dense = torchvision.models.densenet121(memory_efficient=True).eval()
    with pytest.raises(RuntimeError, match="memory_efficient=False"):
        excitation_pullback(dense, torch.rand(1, 3, 32, 32), 0)
    vit = timm.create_model("vit_tiny_patch16_224", img_size=32).eval()
    vit.set_grad_checkpointing()
    with pytest.raises(RuntimeError, match="activation checkpointing"):
        excitation_pullback(vit, torch.rand(1, 3, 32, 32), 0)
    vit.set_grad_checkpointing(False)  # the fix works
    assert excitation_pullback(vit, torch.rand(1, 3, 32, 32), 0).abs().sum() > 0


# --------------------------------------------------------------------------- real architectures


ARCHITECTURES = {  # name: (builder, input size)
    "convnext_tiny": (convnext_tiny, 64),
    "efficientnet_b0": (tv("efficientnet_b0"), 64),
    "mobilenet_v3_small": (tv("mobilenet_v3_small"), 64),
    "vit_b_16": (vit_b_16, 32),
    "timm/vit_tiny_patch16_224": (timm_model("vit_tiny_patch16_224", img_size=32), 32),
    "timm/pvt_v2_b0": (timm_model("pvt_v2_b0"), 64),
}
CUSTOM = dict(temperature=0.7, temperatures={"silu": 0.5, "gelu": 2.0, "hardswish": 0.6, "attention": 3.0})


@pytest.mark.slow
@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_pullback_equals_the_slow_reference_in_float64(name):
    build, size = ARCHITECTURES[name]
    torch.manual_seed(0)
    model = build().to(D).eval()
    x = torch.rand(2, 3, size, size, dtype=D) * 2 - 1
    before = snapshot(model)
    vanilla = plain_grad(lambda z: model(z)[:, 3], x)
    results = []
    for options in ({}, CUSTOM):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PartialPullbackWarning)
            got = excitation_pullback(model, x, 3, **options)
        want = reference_pullback(model, x, 3, **options)
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12 * want.abs().max().item())
        assert (got - vanilla).abs().max() > 1e-3 * vanilla.abs().max()  # the rules do something
        results.append(got)
    assert (results[0] - results[1]).abs().max() > 1e-3 * results[0].abs().max()  # and the temperatures matter
    assert_unchanged(model, before)


FORWARD = {**ARCHITECTURES, "swin_t": (tv("swin_t"), 64)}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(FORWARD))
def test_forward_is_bit_for_bit_on_real_architectures(name):
    build, size = FORWARD[name]
    torch.manual_seed(0)
    model = build().eval()
    x = torch.rand(2, 3, size, size, requires_grad=True)
    with soft_gates() as mode:
        y = model(x)
    assert mode.coverage.gated  # it did intercept something
    assert torch.equal(y, model(x))


WARNS = {
    "swin_t": ("softmax", tv("swin_t")),
    "efficientnet_b0": ("sigmoid", tv("efficientnet_b0")),
    "regnet_y_400mf": ("sigmoid", tv("regnet_y_400mf")),
    "mobilenet_v3_small": ("hardsigmoid", tv("mobilenet_v3_small")),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(WARNS))
def test_partial_models_warn(name):
    op, build = WARNS[name]
    model = build().eval()
    with pytest.warns(PartialPullbackWarning, match=f"calls to {op}"):
        excitation_pullback(model, torch.rand(1, 3, 64, 64), 0)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet50", "vgg11_bn", "densenet121", "efficientnet_lite0"])
def test_fully_covered_models_do_not_warn(name):
    from pullbacks.models import load_model

    model = load_model(name, weights="random" if name != "efficientnet_lite0" else "default").model
    with warnings.catch_warnings():
        warnings.simplefilter("error", PartialPullbackWarning)
        with soft_gates() as mode:
            model(torch.rand(1, 3, 64, 64, requires_grad=True))
        assert not mode.coverage.ordinary, mode.coverage
        excitation_pullback(model, torch.rand(1, 3, 64, 64), 0)


def test_tiny_cnn_is_fully_covered():
    with soft_gates() as mode:
        tiny_cnn()(torch.rand(1, 3, 16, 16, requires_grad=True))
    assert mode.coverage.complete


# --------------------------------------------------------------------------- command line


@pytest.mark.slow
def test_cli_warns_in_one_line_and_strict_fails_with_the_flag(tmp_path, capsys):
    from PIL import Image

    from pullbacks.apps.cli import main

    Image.new("RGB", (64, 64), (120, 80, 40)).save(tmp_path / "a.png")
    common = [
        "explain",
        str(tmp_path / "a.png"),
        "--target",
        "ostrich",
        "--model",
        "mobilenet_v3_small",
        "--weights",
        "random",
        "--steps",
        "1",
        "--no-progress",
        "--temperatures",
        "hardswish=0.5",
    ]
    import subprocess
    import sys

    run = subprocess.run(
        [sys.executable, "-m", "pullbacks", *common, "--out", str(tmp_path / "b")], capture_output=True, text=True
    )  # a process of its own: pytest records warnings
    assert run.returncode == 0, run.stderr
    err = run.stderr
    assert "pullbacks: warning: 9 calls to hardsigmoid (squeeze-excitation?)" in err
    assert err.strip().endswith("--strict makes this an error") and "strict=True" not in err
    assert main(common + ["--strict"]) == 2
    err = capsys.readouterr().err
    assert "drop --strict" in err and "strict=True" not in err and "Traceback" not in err
    with pytest.raises(SystemExit) as e:
        main(common[:-1] + ["bogus=1"])
    assert e.value.code == 2 and "unknown family 'bogus'" in capsys.readouterr().err
