"""Softmax attention: backward through a softer attention (docs/method.md, "Beyond ReLU").

Forward bit for bit. For ``F.scaled_dot_product_attention(q, k, v, attn_mask, dropout_p,
is_causal, scale, enable_gqa)`` the backward is the gradient of

    softmax((scale / T) q k^T + mask) v

(family "attention", T = 1.5): the same call with ``scale / T``, so boolean and float
masks, ``is_causal`` and grouped-query attention are honoured exactly as in the forward.
At ``T = 1`` it is the ordinary gradient. ``nn.MultiheadAttention`` runs
``F.multi_head_attention_forward``, which computes ``q`` inside; its rule divides the
query projection (weight and bias) by ``T``, which is the same softer attention.
Attention dropout would make the backward differ from the forward: it is refused.
"""

from __future__ import annotations

import functools
import inspect
import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import Call, SoftenedRule, soften


def _no_dropout(p) -> None:
    if p:
        raise ValueError(f"attention dropout is active (dropout_p={p}): the backward could not follow the "
                         "forward's random mask; put the model in eval mode: model.eval()")


def _sdpa(q, k, v, mask, *, scale, causal, gqa):
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=0.0, is_causal=causal, scale=scale,
                                          enable_gqa=gqa)


def _attention(call: Call, mode) -> Tensor:
    q, k, v = call.input, call.arg(1, "key", None), call.arg(2, "value", None)
    mask, p = call.arg(3, "attn_mask", None), call.arg(4, "dropout_p", 0.0)
    causal, scale, gqa = call.arg(5, "is_causal", False), call.arg(6, "scale", None), call.arg(7, "enable_gqa", False)
    _no_dropout(p)
    t = mode.temperature_of("attention")
    s = 1.0 / math.sqrt(q.size(-1)) if scale is None else float(scale)
    ordinary = functools.partial(_sdpa, scale=scale, causal=causal, gqa=gqa)
    softened = functools.partial(_sdpa, scale=s / t, causal=causal, gqa=gqa)
    return soften(mode, ordinary, softened, q, k, v, mask)


# ----------------------------------------------------------------------------- nn.MultiheadAttention

_MHA = inspect.signature(F.multi_head_attention_forward)


def _mha(names: tuple, others: dict, temperature: float | None, *tensors):
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


def _multi_head(call: Call, mode):
    bound = _MHA.bind(*call.args, **call.kwargs)
    bound.apply_defaults()
    kw = dict(bound.arguments)
    if kw.get("training", True):
        _no_dropout(kw.get("dropout_p", 0.0))
    names = tuple(k for k, v in kw.items() if isinstance(v, Tensor))
    others = {k: v for k, v in kw.items() if k not in names}
    tensors = [kw[k] for k in names]
    t = mode.temperature_of("attention")
    return soften(mode, functools.partial(_mha, names, others, None),
                          functools.partial(_mha, names, others, t), *tensors)


TEMPERATURE = 1.5  # the value the authors evaluated PVT with
RULES = (
    SoftenedRule("attention", (F.scaled_dot_product_attention,), _attention, TEMPERATURE,
                 doc="scaled_dot_product_attention: backward of softmax((scale/T) q kᵀ + mask) v"),
    SoftenedRule("attention", (F.multi_head_attention_forward,), _multi_head, TEMPERATURE,
                 doc="nn.MultiheadAttention: the query projection divided by T"),
)
