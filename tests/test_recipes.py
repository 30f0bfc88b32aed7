"""The two recipes ("excitation", "semantic"), the follow-up's attention rules, and the
models' recommended settings per recipe."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from helpers import assert_unchanged, convnext_tiny, snapshot, timm_model, tv, vit_b_16
from reference_beyond import reference_pullback
from torch import nn

import pullbacks
from pullbacks.core.policy import PartialPullbackWarning
from pullbacks.core.rules.attention import held_attention

D = torch.float64
# the follow-up recipe (docs/method.md, "Recipes"), written out here so that the test does not read
# the package's own table
SEMANTIC = dict(
    temperature=0.6,
    gate="normal_cdf",
    pool="detached",
    pool_temperature=0.3,
    temperatures={"attention": 1.0},
    variants={"sdpa": "held", "mha": "inputs"},
)


# --------------------------------------------------------------------------- options


def test_recipes_set_every_value_and_an_explicit_value_wins():
    e, s = pullbacks.AscentOptions(), pullbacks.AscentOptions(recipe="semantic")
    assert (e.temperature, e.pool_t, e.gate, e.pool, e.eps, e.temperatures["attention"]) == (
        0.3,
        0.3,
        "sigmoid",
        "soft",
        100.0,
        1.5,
    )
    assert (s.temperature, s.pool_t, s.gate, s.pool, s.eps, s.temperatures["attention"]) == (
        0.6,
        0.3,
        "normal_cdf",
        "detached",
        None,
        1.0,
    )
    assert dict(s.variants) == {"sdpa": "held", "mha": "inputs"} and dict(e.variants) == {"sdpa": "soft", "mha": "soft"}
    o = pullbacks.AscentOptions(recipe="semantic", temperature=0.5, temperatures={"gelu": 2.0}, eps=50)
    assert (o.temperature, o.pool_t, o.temperatures["gelu"], o.temperatures["attention"], o.eps) == (
        0.5,
        0.3,
        2.0,
        1.0,
        50.0,
    )
    back = o.replace(recipe="excitation")  # what was given stays; the rest follows the recipe
    assert (
        back.temperature,
        back.pool_t,
        back.gate,
        back.eps,
        back.temperatures["gelu"],
        back.temperatures["attention"],
    ) == (0.5, 0.5, "sigmoid", 50.0, 2.0, 1.5)
    assert back.given == {"temperature": 0.5, "eps": 50, "temperatures": {"gelu": 2.0}}
    assert pullbacks.GateOptions(recipe="semantic", variants={"sdpa": "soft"}).variants["mha"] == "inputs"
    assert o.gates.recipe == "semantic" and o.gates.temperature == 0.5
    assert o.gates.given == {k: v for k, v in o.given.items() if k != "eps"}  # the gate options alone


def test_unknown_recipe_or_variant_names_the_known_ones():
    with pytest.raises(ValueError, match="unknown recipe 'semantics'; known: 'excitation', 'semantic'"):
        pullbacks.GateOptions(recipe="semantics")
    with pytest.raises(ValueError, match="unknown rule 'attention' in variants; rules with variants: sdpa: soft, held"):
        pullbacks.GateOptions(variants={"attention": "held"})
    with pytest.raises(ValueError, match=r"variants\['sdpa'\] must be one of 'soft', 'held'"):
        pullbacks.GateOptions(variants={"sdpa": "inputs"})
    x = torch.randn(2, 4, requires_grad=True)
    with pytest.raises(ValueError, match="unknown recipe"):
        with pullbacks.soft_gates(recipe="seed"):
            torch.relu(x)


def test_the_recipe_is_visible_in_the_mode():
    x = torch.randn(2, 4, requires_grad=True)
    with pullbacks.soft_gates(recipe="semantic") as mode:
        torch.relu(x)
    assert mode.options.recipe == "semantic" and mode.coverage.recipe == "semantic"


def test_semantic_relu_and_pool_are_normal_cdf_and_detached():
    torch.manual_seed(0)
    model = (
        nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2, 1), nn.Flatten(), nn.Linear(64, 3))
        .to(D)
        .eval()
    )
    x = torch.randn(2, 3, 8, 8, dtype=D)
    got = pullbacks.excitation_pullback(model, x, 1, recipe="semantic")
    want = reference_pullback(model, x, 1, **SEMANTIC)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-13)
    assert not torch.allclose(got, pullbacks.excitation_pullback(model, x, 1))


# --------------------------------------------------------------------------- held attention


def _qkv(b=2, h=4, hk=None, n=5, m=6, d=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, h, n, d, dtype=D, generator=g)
    k = torch.randn(b, hk or h, m, d, dtype=D, generator=g)
    v = torch.randn(b, hk or h, m, d, dtype=D, generator=g)
    return q, k, v


ATTENTION_CASES = {
    "plain": ({}, {}),
    "float mask": ({"attn_mask": torch.randn(5, 6, dtype=D)}, {}),
    "bool mask": ({"attn_mask": torch.rand(5, 6, generator=torch.Generator().manual_seed(2)) > 0.3}, {}),
    "causal": ({"is_causal": True}, {"m": 5}),
    "scale": ({"scale": 0.7}, {}),
    "gqa": ({"enable_gqa": True}, {"hk": 2}),
}


def _weights(q, k, mask=None, scale=None, causal=False, gqa=False):
    """softmax(scale q kᵀ + mask), by hand."""
    if gqa:
        k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
    s = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = q @ k.transpose(-1, -2) * s
    if causal:
        scores = scores.masked_fill(~torch.ones(scores.shape[-2:], dtype=torch.bool).tril(), -math.inf)
    if mask is not None:
        scores = scores.masked_fill(~mask, -math.inf) if mask.dtype == torch.bool else scores + mask
    return scores.softmax(-1)


@pytest.mark.parametrize("case", list(ATTENTION_CASES))
@pytest.mark.parametrize("t", [1.0, 0.5])
def test_held_attention_closed_form(case, t):
    """Gradient through v alone: grad_v = Wᵀ grad with W = softmax((scale/T) q kᵀ + mask); q, k get none."""
    kw, shape = ATTENTION_CASES[case]
    q, k, v = (a.requires_grad_() for a in _qkv(**shape))
    with pullbacks.soft_gates(variants={"sdpa": "held"}, temperatures={"attention": t}):
        out = F.scaled_dot_product_attention(q, k, v, **kw)
    assert torch.equal(out, F.scaled_dot_product_attention(q, k, v, **kw))  # forward bit for bit
    grad = torch.randn_like(out)
    gq, gk, gv = torch.autograd.grad(out, (q, k, v), grad, allow_unused=True, materialize_grads=True)
    scale = kw.get("scale", 1 / math.sqrt(q.shape[-1])) / t
    w = _weights(
        q.detach(), k.detach(), kw.get("attn_mask"), scale, kw.get("is_causal", False), kw.get("enable_gqa", False)
    )
    want_v = w.transpose(-1, -2) @ grad
    if kw.get("enable_gqa"):
        want_v = want_v.unflatten(1, (v.shape[1], -1)).sum(2)
    torch.testing.assert_close(gv, want_v, rtol=1e-12, atol=1e-12)
    assert not gq.any() and not gk.any()
    torch.testing.assert_close(
        held_attention(
            q,
            k,
            v,
            kw.get("attn_mask"),
            scale=scale,
            causal=kw.get("is_causal", False),
            gqa=kw.get("enable_gqa", False),
        ),
        F.scaled_dot_product_attention(
            q,
            k,
            v,
            kw.get("attn_mask"),
            scale=scale,
            is_causal=kw.get("is_causal", False),
            enable_gqa=kw.get("enable_gqa", False),
        ),
    )


def test_held_attention_differs_from_the_ordinary_gradient_even_at_t1():
    q, k, v = (a.requires_grad_() for a in _qkv())
    with pullbacks.soft_gates(variants={"sdpa": "held"}, temperatures={"attention": 1.0}):
        held = torch.autograd.grad(F.scaled_dot_product_attention(q, k, v).sum(), q, materialize_grads=True)[0]
    ordinary = torch.autograd.grad(F.scaled_dot_product_attention(q, k, v).sum() + (q * 0).sum(), q)[0]
    with pullbacks.soft_gates(temperatures={"attention": 1.0}):  # the seed's rule at T = 1: ordinary
        soft = torch.autograd.grad(F.scaled_dot_product_attention(q, k, v).sum(), q)[0]
    torch.testing.assert_close(soft, ordinary)
    assert ordinary.abs().max() > 1e-3 and not held.any()


# --------------------------------------------------------------------------- the follow-up's MHA rule


def _mha_case(bias=True, seed=0):
    torch.manual_seed(seed)
    mha = nn.MultiheadAttention(8, 2, bias=bias).to(D).eval()
    if bias:
        with torch.no_grad():
            mha.in_proj_bias.normal_()
    x = torch.randn(5, 2, 8, dtype=D, requires_grad=True)
    return mha, x


def _by_hand(mha, x, t):
    """Self-attention with the query and key inputs divided by t, the value not: written out."""
    e, h = 8, 2
    w, b = mha.in_proj_weight, mha.in_proj_bias
    bq, bk, bv = (None, None, None) if b is None else b.chunk(3)
    q = F.linear(x / t, w[:e], bq)
    k = F.linear(x / t, w[e : 2 * e], bk)
    v = F.linear(x, w[2 * e :], bv)
    split = lambda a: a.reshape(5, 2 * h, e // h).transpose(0, 1)  # noqa: E731
    att = torch.softmax(split(q) @ split(k).transpose(1, 2) / math.sqrt(e // h), -1) @ split(v)
    return mha.out_proj(att.transpose(0, 1).reshape(5, 2, e))


@pytest.mark.parametrize("t", [1.0, 0.4, 2.5])
def test_mha_inputs_rule_is_the_gradient_of_scaled_inputs(t):
    mha, x = _mha_case()
    before = snapshot(mha)
    with pullbacks.soft_gates(variants={"mha": "inputs"}, temperatures={"attention": t}):
        out, _ = mha(x, x, x, need_weights=False)
    ordinary, _ = mha(x, x, x, need_weights=False)
    assert torch.equal(out, ordinary)
    grad = torch.randn_like(out)
    (got,) = torch.autograd.grad(out, x, grad)
    (want,) = torch.autograd.grad(_by_hand(mha, x, t), x, grad)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    (plain,) = torch.autograd.grad(ordinary, x, grad)
    if t == 1.0:
        torch.testing.assert_close(got, plain, rtol=1e-10, atol=1e-12)  # at T = 1 the ordinary gradient
    else:
        assert (got - plain).abs().max() > 1e-3 * plain.abs().max()
        with pullbacks.soft_gates(temperatures={"attention": t}):  # the seed's rule divides the biases too
            soft, _ = mha(x, x, x, need_weights=False)
        (seed_rule,) = torch.autograd.grad(soft, x, grad)
        assert (got - seed_rule).abs().max() > 1e-3 * plain.abs().max()
    assert_unchanged(mha, before)


def test_mha_rules_agree_without_biases():
    """Without in-projection biases the scores are (x Wq / T)(x Wk / T)ᵀ = q kᵀ / T² under the
    inputs rule and q kᵀ / T under the seed's: the inputs rule at T is the seed's at T²."""
    mha, x = _mha_case(bias=False)
    grads = []
    for variant, t in (("inputs", 0.5), ("soft", 0.25)):  # inputs at T scale the scores by 1/T², soft by 1/T
        with pullbacks.soft_gates(variants={"mha": variant}, temperatures={"attention": t}):
            out, _ = mha(x, x, x, need_weights=False)
        grads.append(torch.autograd.grad(out.sum(), x)[0])
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-9, atol=1e-11)


# --------------------------------------------------------------------------- models


def test_registry_recommends_the_authors_semantic_settings():
    from pullbacks.models import get_model_spec

    assert get_model_spec("resnet50").settings("semantic") == {
        "temperature": 0.5,
        "pool_temperature": 0.5,
        "steps": 2,
        "alpha": 5.0,
    }
    assert get_model_spec("timm/pvt_v2_b1").settings("semantic") == {
        "temperatures": {"attention": 1.0, "gelu": 1.0},
        "steps": 5,
        "alpha": 40.0,
    }
    assert get_model_spec("efficientnet_lite0").settings("semantic") == {"temperature": 1.7}  # ours
    assert get_model_spec("vgg11_bn").settings("semantic") == {}  # no recommendation: the recipe's own values
    assert get_model_spec("efficientnet_lite0").settings("excitation")["temperature"] == 1.0
    with pytest.raises(ValueError, match="unknown recipe"):
        get_model_spec("resnet50").settings("seed")


@pytest.mark.slow
def test_loaded_model_options_follow_the_recipe():
    from pullbacks.models import load_model

    net = load_model("resnet50", weights="random")
    o = net.options(recipe="semantic")
    assert (o.temperature, o.pool_t, o.steps, o.alpha, o.eps, o.gate) == (0.5, 0.5, 2, 5.0, None, "normal_cdf")
    o = net.options(recipe="semantic", temperature=0.8, steps=3)
    assert (o.temperature, o.pool_t, o.steps) == (0.8, 0.3, 3)  # a given T drops the model's pool value
    assert net.options().recipe == "excitation" and net.options().eps == 100.0


# --------------------------------------------------------------------------- real architectures


ARCHITECTURES = {  # name: (builder, input size)
    "resnet50": (tv("resnet50"), 64),
    "vgg11_bn": (tv("vgg11_bn"), 64),
    "convnext_tiny": (convnext_tiny, 64),
    "vit_b_16": (vit_b_16, 32),
    "timm/pvt_v2_b0": (timm_model("pvt_v2_b0"), 64),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_semantic_recipe_equals_the_slow_reference_in_float64(name):
    build, size = ARCHITECTURES[name]
    torch.manual_seed(0)
    model = build().to(D).eval()
    x = torch.rand(2, 3, size, size, dtype=D) * 2 - 1
    before = snapshot(model)
    results = []
    for extra in ({}, {"temperatures": {"attention": 2.5}}):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PartialPullbackWarning)
            got = pullbacks.excitation_pullback(model, x, 3, recipe="semantic", **extra)
            excitation = pullbacks.excitation_pullback(model, x, 3)
            explicit = pullbacks.excitation_pullback(
                model, x, 3, recipe="excitation", temperature=0.3, gate="sigmoid", pool="soft"
            )
        assert torch.equal(excitation, explicit)  # the default is the seed recipe
        want = reference_pullback(
            model, x, 3, **{**SEMANTIC, "temperatures": {**SEMANTIC["temperatures"], **extra.get("temperatures", {})}}
        )
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12 * want.abs().max().item())
        if name == "convnext_tiny":  # GELU and layer norms only: the two recipes have the same rules there
            assert torch.equal(got, excitation)
        else:
            assert (got - excitation).abs().max() > 1e-3 * excitation.abs().max()  # the recipes differ
        results.append(got)
    if name in ("vit_b_16", "timm/pvt_v2_b0", "convnext_tiny"):
        changed = (results[0] - results[1]).abs().max() > 1e-6 * results[0].abs().max()
        assert changed == (name != "convnext_tiny")  # the attention temperature reaches attention
    assert_unchanged(model, before)


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["excitation", "semantic"])
@pytest.mark.parametrize("name, op", [("efficientnet_b0", "sigmoid"), ("swin_t", "softmax")])
def test_partial_coverage_warns_under_both_recipes(recipe, name, op):
    torch.manual_seed(0)
    model = tv(name)().eval()
    with pytest.warns(PartialPullbackWarning, match=f"calls to {op}"):
        pullbacks.excitation_pullback(model, torch.rand(1, 3, 64, 64) * 2 - 1, 1, recipe=recipe)


def test_not_given_has_one_marker_and_none_only_where_it_means_nothing_else():
    from pullbacks.core.options import FIELDS, FROM_RECIPE, given

    values = {
        "temperature": None,
        "steps": FROM_RECIPE,
        "eps": None,
        "clip": None,
        "alpha": 3.0,
        "temperatures": None,
        "gate": FROM_RECIPE,
    }
    assert given(values) == {"eps": None, "clip": None, "alpha": 3.0}  # no projection, no clamping: values
    assert {k for k, f in FIELDS.items() if f.none} == {"eps", "clip"}
