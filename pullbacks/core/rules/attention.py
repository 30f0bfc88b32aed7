"""Softmax attention (docs/method.md, "Beyond ReLU"), family "attention".

Forward bit for bit. ``F.scaled_dot_product_attention(q, k, v, attn_mask, dropout_p,
is_causal, scale, enable_gqa)`` (rule ``sdpa``) has two variants:

    "soft"  the gradient of softmax((scale / T) q k^T + mask) v: the same call at ``scale / T``,
            so masks, ``is_causal`` and grouped-query attention are honoured as in the forward;
            at T = 1 the ordinary gradient (the seed recipe, T = 1.5)
    "held"  W = softmax((scale / T) q k^T + mask) held constant: ``out = W v``, the gradient
            flows through ``v`` alone (the follow-up's rule for PVT, T = 1.0)

``nn.MultiheadAttention`` runs ``F.multi_head_attention_forward``, which computes ``q`` and
``k`` inside (rule ``mha``):

    "soft"    the query projection (weight and bias) divided by T: the same softer attention
    "inputs"  the same call with the query and key *inputs* divided by T before the
              in-projection, the value unchanged (the follow-up's rule, T = 1.0); at T = 1
              the ordinary gradient, and unlike "soft" the projection biases are not divided

Attention dropout would make the backward differ from the forward: it is refused.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import Call, Context, SoftenedRule, soften


def _no_dropout(p: float) -> None:
    if p:
        raise ValueError(
            f"attention dropout is active (dropout_p={p}): the backward could not follow the "
            "forward's random mask; put the model in eval mode: model.eval()"
        )


def _sdpa(
    q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, *, scale: float | None, causal: bool, gqa: bool
) -> Tensor:
    return F.scaled_dot_product_attention(
        q, k, v, attn_mask=mask, dropout_p=0.0, is_causal=causal, scale=scale, enable_gqa=gqa
    )


def _sdpa_rule(softened_sdpa: Callable[..., Tensor]) -> Callable[[Call, Context], Tensor]:
    """The rule of ``F.scaled_dot_product_attention`` whose backward is that of
    ``softened_sdpa(q, k, v, mask, scale=scale / T, causal=..., gqa=...)``."""

    def run(call: Call, mode: Context) -> Tensor:
        q, k, v = call.input, call.arg(1, "key", None), call.arg(2, "value", None)
        mask, p = call.arg(3, "attn_mask", None), call.arg(4, "dropout_p", 0.0)
        causal, scale = call.arg(5, "is_causal", False), call.arg(6, "scale", None)
        gqa = call.arg(7, "enable_gqa", False)
        _no_dropout(p)
        t = mode.temperature_of("attention")
        s = 1.0 / math.sqrt(q.size(-1)) if scale is None else float(scale)
        ordinary = functools.partial(_sdpa, scale=scale, causal=causal, gqa=gqa)
        softened = functools.partial(softened_sdpa, scale=s / t, causal=causal, gqa=gqa)
        return soften(mode, ordinary, softened, q, k, v, mask)

    return run


def held_attention(
    q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, *, scale: float, causal: bool, gqa: bool
) -> Tensor:
    """``W v`` with ``W = softmax(scale q k^T + mask)`` computed from detached ``q``, ``k``:
    the attention weights held constant, so the gradient reaches ``v`` alone, ``Wᵀ grad``.

    It is the same SDPA kernel on ``q.detach()`` and ``k.detach()``: memory linear in the
    sequence wherever the kernel's is (no ``n × n`` weights are kept), grouped-query attention
    without copying K/V (``enable_gqa``), and the masks with SDPA's own meaning."""
    return F.scaled_dot_product_attention(
        q.detach(), k.detach(), v, attn_mask=mask, dropout_p=0.0, is_causal=causal, scale=scale, enable_gqa=gqa
    )


_attention = _sdpa_rule(_sdpa)
_attention_held = _sdpa_rule(held_attention)


# ----------------------------------------------------------------------------- nn.MultiheadAttention

_MHA = inspect.signature(F.multi_head_attention_forward)


def _mha(names: tuple, others: dict, temperature: float | None, *tensors: Tensor | None) -> Any:
    """``F.multi_head_attention_forward`` with the tensors ``names`` given positionally and
    the query projection divided by ``temperature`` (None: unchanged)."""
    kw = dict(zip(names, tensors), **others)
    if temperature is not None:
        e = kw["query"].shape[-1]
        if kw.get("use_separate_proj_weight"):
            kw["q_proj_weight"] = kw["q_proj_weight"] / temperature
        else:
            w = kw["in_proj_weight"]
            kw["in_proj_weight"] = torch.cat([w[:e] / temperature, w[e:]])
        b = kw.get("in_proj_bias")
        if b is not None:
            kw["in_proj_bias"] = torch.cat([b[:e] / temperature, b[e:]])
    return F.multi_head_attention_forward(**kw)


def _mha_inputs(names: tuple, others: dict, temperature: float, *tensors: Tensor | None) -> Any:
    """``F.multi_head_attention_forward`` with the query and key inputs divided by ``temperature``."""
    kw = dict(zip(names, tensors), **others)
    kw["query"], kw["key"] = kw["query"] / temperature, kw["key"] / temperature
    return F.multi_head_attention_forward(**kw)


def _multi_head(call: Call, mode: Context, softened: Callable[..., Any] = _mha) -> Any:
    bound = _MHA.bind(*call.args, **call.kwargs)
    bound.apply_defaults()
    kw = dict(bound.arguments)
    if kw.get("training", True):
        _no_dropout(kw.get("dropout_p", 0.0))
    names = tuple(k for k, v in kw.items() if isinstance(v, Tensor))
    others = {k: v for k, v in kw.items() if k not in names}
    tensors = [kw[k] for k in names]
    t = mode.temperature_of("attention")
    return soften(
        mode, functools.partial(_mha, names, others, None), functools.partial(softened, names, others, t), *tensors
    )


def _multi_head_inputs(call: Call, mode: Context) -> Any:
    return _multi_head(call, mode, _mha_inputs)


TEMPERATURE = 1.5  # the value the authors evaluated PVT with
RULES = (
    SoftenedRule(
        "attention",
        (F.scaled_dot_product_attention,),
        _attention,
        TEMPERATURE,
        doc="scaled_dot_product_attention (rule `sdpa`): backward of softmax((scale/T) q kᵀ + mask) v",
        name="sdpa",
        variants=(("held", _attention_held, "W = softmax((scale/T) q kᵀ + mask) held, gradient through v only"),),
        nodes=("ScaledDotProduct",),
    ),
    SoftenedRule(
        "attention",
        (F.multi_head_attention_forward,),
        _multi_head,
        TEMPERATURE,
        doc="nn.MultiheadAttention (rule `mha`): the query projection divided by T",
        name="mha",
        variants=(("inputs", _multi_head_inputs, "the query and key inputs divided by T, the value unchanged"),),
    ),
)
