"""Layer, group and RMS norms: the statistics held constant in the backward pass
(docs/method.md, "Beyond ReLU").

Forward bit for bit. The backward is the gradient of the same norm with its statistics
treated as constants (family "norm", no temperature):

    layer norm   grad_in = grad_out * weight / sqrt(var + eps)     per normalised slice
    group norm   grad_in = grad_out * weight[c] / sqrt(var_g + eps) per (sample, group)
    RMS norm     grad_in = grad_out * weight / sqrt(mean(z^2) + eps)

The weight and bias get their ordinary gradients (they do not depend on the statistics).
Channels-first "LayerNorm2d" variants permute and call ``F.layer_norm``, so they are covered.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import Call, Context, SoftenedRule, flush_subnormals_, soften


def _stats_dtype(z: Tensor) -> torch.dtype:
    return torch.float32 if z.dtype in (torch.float16, torch.bfloat16) else z.dtype


def _affine(y: Tensor, weight: Tensor | None, bias: Tensor | None, dtype: torch.dtype) -> Tensor:
    y = y.to(dtype)
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y


def held_group_norm(z: Tensor, weight: Tensor | None, bias: Tensor | None, *, groups: int, eps: float) -> Tensor:
    """``group_norm`` with the per-group mean and variance detached."""
    n, c = z.shape[:2]
    zs = z.to(_stats_dtype(z)).reshape(n, groups, -1)
    var, mean = torch.var_mean(zs.detach(), dim=-1, keepdim=True, correction=0)
    y = ((zs - mean) * (var + eps).rsqrt()).reshape(z.shape)
    view = (1, c) + (1,) * (z.dim() - 2)
    return _affine(
        y, None if weight is None else weight.reshape(view), None if bias is None else bias.reshape(view), z.dtype
    )


def held_rms_norm(z: Tensor, weight: Tensor | None, *, shape: Sequence[int], eps: float | None) -> Tensor:
    """``rms_norm`` with the root mean square detached."""
    dims = tuple(range(-len(shape), 0))
    zs = z.to(_stats_dtype(z))
    eps = torch.finfo(z.dtype).eps if eps is None else eps
    rstd = (zs.detach().pow(2).mean(dim=dims, keepdim=True) + eps).rsqrt()
    return _affine(zs * rstd, weight, None, z.dtype)


# ----------------------------------------------------------------------------- the rules


class HeldLayerNorm(torch.autograd.Function):
    """``layer_norm`` forward; backward ``grad * weight * rstd`` per normalised slice, with
    the forward's own ``rstd = 1 / sqrt(var + eps)`` (``torch.native_layer_norm`` returns it
    with the output, which is ``F.layer_norm``'s bit for bit; in float16/bfloat16 it comes
    rounded to the dtype, which moves the pullback by no more than the dtype's own rounding).
    The input is kept only when the weight's gradient may be asked for."""

    @staticmethod
    def forward(
        ctx: Any, z: Tensor, weight: Tensor | None, bias: Tensor | None, shape: tuple, eps: float, keep: tuple
    ) -> Tensor:
        ctx.shape, ctx.eps, ctx.keep = shape, eps, keep
        out, mean, rstd = torch.native_layer_norm(z, shape, weight, bias, eps)
        ctx.save_for_backward(z if keep[1] else None, weight, mean, rstd)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        z, weight, mean, rstd = ctx.saved_tensors
        need = [bool(n) and k for n, k in zip(ctx.needs_input_grad[:3], ctx.keep)]
        g_z = g_w = g_b = None
        if need[0]:
            g_z = (grad * weight if weight is not None else grad.to(rstd.dtype, copy=True)).mul_(rstd).to(grad.dtype)
        lead = tuple(range(grad.dim() - len(ctx.shape)))
        if need[1]:
            g_w = (grad * (z.to(rstd.dtype) - mean).mul_(rstd)).sum(lead).to(weight.dtype)
        if need[2]:
            g_b = grad.sum(lead)
        return flush_subnormals_(g_z), g_w, g_b, None, None, None


def _layer_norm(call: Call, mode: Context) -> Tensor:
    shape = _shape(call.arg(1, "normalized_shape", None))
    weight, bias, eps = call.arg(2, "weight", None), call.arg(3, "bias", None), float(call.arg(4, "eps", 1e-5))
    return HeldLayerNorm.apply(call.input, weight, bias, shape, eps, mode.wanted((call.input, weight, bias)))


def _group_norm(call: Call, mode: Context) -> Tensor:
    groups = int(call.arg(1, "num_groups", None))
    weight, bias, eps = call.arg(2, "weight", None), call.arg(3, "bias", None), float(call.arg(4, "eps", 1e-5))
    return soften(
        mode,
        functools.partial(_ordinary_group_norm, groups=groups, eps=eps),
        functools.partial(held_group_norm, groups=groups, eps=eps),
        call.input,
        weight,
        bias,
    )


def _ordinary_group_norm(z: Tensor, weight: Tensor | None, bias: Tensor | None, *, groups: int, eps: float) -> Tensor:
    return F.group_norm(z, groups, weight, bias, eps)


def _rms_norm(call: Call, mode: Context) -> Tensor:
    shape = _shape(call.arg(1, "normalized_shape", None))
    weight, eps = call.arg(2, "weight", None), call.arg(3, "eps", None)
    eps = None if eps is None else float(eps)
    return soften(
        mode,
        functools.partial(_ordinary_rms_norm, shape=shape, eps=eps),
        functools.partial(held_rms_norm, shape=shape, eps=eps),
        call.input,
        weight,
    )


def _ordinary_rms_norm(z: Tensor, weight: Tensor | None, *, shape: tuple, eps: float | None) -> Tensor:
    return F.rms_norm(z, shape, weight, eps)


def _shape(v: int | Sequence[int]) -> tuple:
    return (v,) if isinstance(v, int) else tuple(v)


RULES = (
    SoftenedRule(
        "norm",
        (F.layer_norm, torch.layer_norm),
        _layer_norm,
        doc="layer norm: statistics held, grad·weight/sqrt(var+eps)",
        autograd=(HeldLayerNorm,),
        nodes=("NativeLayerNormBackward",),
    ),
    SoftenedRule(
        "norm",
        (F.group_norm, torch.group_norm),
        _group_norm,
        doc="group norm: per-group statistics held",
        nodes=("NativeGroupNormBackward",),
    ),
    SoftenedRule("norm", (F.rms_norm, torch.rms_norm), _rms_norm, doc="RMS norm: the root mean square held"),
)
