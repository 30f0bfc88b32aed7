"""A slow reference for the rules beyond ReLU, by a different mechanism than the package.

The package intercepts calls with a TorchFunctionMode and writes each backward by hand
(or recomputes a softened forward). Here ``torch.nn.functional``'s functions are
*patched* for the duration of a block by straight-through surrogates,
``out = f(z) + (S(z) - S(z).detach())``, where ``S`` is written out from its formula
(explicit matmuls and softmax for attention, explicit means for the norms) and autograd
differentiates it. The forward value is ``f(z)``.
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from reference import antiderivative, ref_soft_pool, straight_through

_ORIGINAL = {
    name: getattr(F, name)
    for name in (
        "relu",
        "silu",
        "gelu",
        "hardswish",
        "mish",
        "layer_norm",
        "group_norm",
        "scaled_dot_product_attention",
        "multi_head_attention_forward",
        "max_pool2d",
    )
}


def _gated(value, z, gate):
    """Straight through: the value, with derivative ``gate`` (evaluated without a graph)."""
    return straight_through(value, z * gate.detach())


def _gate(name, u):
    if name == "silu":
        return torch.sigmoid(u)
    if name == "gelu":
        return 0.5 * (1 + torch.erf(u / math.sqrt(2)))
    if name == "gelu_tanh":
        return 0.5 * (1 + torch.tanh(math.sqrt(2 / math.pi) * (u + 0.044715 * u**3)))
    if name == "hardswish":
        return torch.clamp(u / 6 + 0.5, 0, 1)
    if name == "mish":
        return torch.tanh(torch.log1p(torch.exp(u)))
    raise KeyError(name)


def _layer_norm(x, shape, weight=None, bias=None, eps=1e-5):
    value = _ORIGINAL["layer_norm"](x, shape, weight, bias, eps)
    dims = tuple(range(-len(shape), 0))
    mean = x.mean(dim=dims, keepdim=True).detach()
    var = ((x - mean) ** 2).mean(dim=dims, keepdim=True).detach()
    s = (x - mean) / torch.sqrt(var + eps)
    s = s * (1 if weight is None else weight) + (0 if bias is None else bias)
    return straight_through(value, s)


def _group_norm(x, groups, weight=None, bias=None, eps=1e-5):
    value = _ORIGINAL["group_norm"](x, groups, weight, bias, eps)
    parts = []
    for g in x.chunk(groups, dim=1):  # one group at a time
        dims = tuple(range(1, x.dim()))
        mean = g.mean(dim=dims, keepdim=True).detach()
        var = ((g - mean) ** 2).mean(dim=dims, keepdim=True).detach()
        parts.append((g - mean) / torch.sqrt(var + eps))
    s = torch.cat(parts, dim=1)
    view = (1, -1) + (1,) * (x.dim() - 2)
    s = s * (1 if weight is None else weight.view(view)) + (0 if bias is None else bias.view(view))
    return straight_through(value, s)


def _attention(t, held=False):
    """Attention written out: the softer softmax at scale / t (``held``: its weights detached,
    the follow-up's rule: the gradient flows through v alone)."""

    def sdpa(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
        value = _ORIGINAL["scaled_dot_product_attention"](
            q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal, scale=scale, enable_gqa=enable_gqa
        )
        if enable_gqa and k.shape[-3] != q.shape[-3]:
            k = k.repeat_interleave(q.shape[-3] // k.shape[-3], dim=-3)
            v = v.repeat_interleave(q.shape[-3] // v.shape[-3], dim=-3)
        s = (1 / math.sqrt(q.shape[-1]) if scale is None else scale) / t
        scores = torch.matmul(q, k.transpose(-2, -1)) * s
        if is_causal:
            keep = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool).tril()
            scores = scores.masked_fill(~keep, float("-inf"))
        if attn_mask is not None:
            scores = (
                scores.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool else scores + attn_mask
            )
        weights = torch.softmax(scores, dim=-1)
        return straight_through(value, torch.matmul(weights.detach() if held else weights, v))

    return sdpa


def _mha_inputs(t):
    """The follow-up's rule for nn.MultiheadAttention: the same call with the query and key
    inputs divided by t (inside it, attention runs unpatched)."""

    def mha(query, key, value, *args, **kwargs):
        patched = F.scaled_dot_product_attention
        F.scaled_dot_product_attention = _ORIGINAL["scaled_dot_product_attention"]
        try:
            out, weights = _ORIGINAL["multi_head_attention_forward"](query, key, value, *args, **kwargs)
            soft, _ = _ORIGINAL["multi_head_attention_forward"](query / t, key / t, value, *args, **kwargs)
        finally:
            F.scaled_dot_product_attention = patched
        return straight_through(out, soft), weights

    return mha


def _max_pool(t, variant):
    def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
        patched, F.max_pool2d = F.max_pool2d, _ORIGINAL["max_pool2d"]  # ref_soft_pool calls it for the shape
        try:
            value = F.max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode)
            soft = ref_soft_pool(x, kernel_size, stride, padding, dilation, ceil_mode, t, variant)
        finally:
            F.max_pool2d = patched
        return straight_through(value, soft)

    return max_pool2d


@contextmanager
def patched_functional(
    temperature=0.3, temperatures=None, gate="sigmoid", pool="soft", pool_temperature=None, variants=None
):
    """Patch ``torch.nn.functional`` with the straight-through references (ReLU with
    ``temperature`` and ``gate``, max pooling with ``pool``, the other families with
    ``temperatures``; ``variants={"sdpa": "held", "mha": "inputs"}`` the follow-up's attention)."""
    ts = {"silu": 1.6, "gelu": 1.0, "hardswish": 1.0, "mish": 1.0, "attention": 1.5, **(temperatures or {})}

    def relu(z, inplace=False):
        return straight_through(_ORIGINAL["relu"](z), antiderivative(z, temperature, gate))

    def activation(name):
        def f(z, inplace=False):
            return _gated(_ORIGINAL[name](z), z, _gate(name, z / ts[name]))

        return f

    def gelu(z, approximate="none"):
        name = "gelu_tanh" if approximate == "tanh" else "gelu"
        return _gated(_ORIGINAL["gelu"](z, approximate=approximate), z, _gate(name, z / ts["gelu"]))

    patches = {
        "relu": relu,
        "silu": activation("silu"),
        "hardswish": activation("hardswish"),
        "mish": activation("mish"),
        "gelu": gelu,
        "layer_norm": _layer_norm,
        "group_norm": _group_norm,
        "scaled_dot_product_attention": _attention(ts["attention"], (variants or {}).get("sdpa") == "held"),
        "max_pool2d": _max_pool(pool_temperature or temperature, pool),
    }
    if (variants or {}).get("mha") == "inputs":
        patches["multi_head_attention_forward"] = _mha_inputs(ts["attention"])
    try:
        for name, f in patches.items():
            setattr(F, name, f)
        yield
    finally:
        for name, f in _ORIGINAL.items():
            setattr(F, name, f)


def reference_pullback(model, x, target, **options):
    """The input gradient of ``model(x)[:, target].sum()`` with the patched functional."""
    x = x.detach().clone().requires_grad_(True)
    with patched_functional(**options):
        out = model(x)
    (g,) = torch.autograd.grad(out[:, target].sum(), x)
    return g
